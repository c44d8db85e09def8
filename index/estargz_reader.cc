// eStargz reader: footer -> TOC member -> stargz.index.json -> FlatLayerIndex.
//
// Every regular file's payload chunk starts a gzip member (or, with innerOffset, sits
// inside one shared with other small chunks). A chunk's compressed extent runs from its
// `offset` to the next distinct data offset of the TOC (or the TOC itself); decoding it
// from the member header, skipping `innerOffset` bytes, gives the chunk, checked against
// its chunkDigest. Everything the TOC says is checked against the blob before it is used.
//
// Also holds the footer codec shared with the writer (index/estargz.h); the TOC field
// codecs are index/toc_util.h.

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "index/coding.h"
#include "index/estargz.h"
#include "index/readers.h"
#include "index/toc_json.h"
#include "index/toc_util.h"

namespace imagefs::index {
namespace estargz {
namespace {

bool ParseHex16(std::span<const uint8_t> hex, uint64_t& out) {
  if (hex.size() != 16) return false;
  out = 0;
  for (uint8_t c : hex) {
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      v = c - 'A' + 10;
    } else {
      return false;
    }
    out = out << 4 | static_cast<uint64_t>(v);
  }
  return true;
}

}  // namespace

std::string FooterBytes(uint64_t toc_offset) {
  std::string out;
  // Member header: magic, CM=deflate, FLG=FEXTRA, MTIME=0, XFL=0, OS=255 (unknown).
  const uint8_t header[] = {0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff};
  out.append(reinterpret_cast<const char*>(header), sizeof header);
  out.push_back(26);  // XLEN, little-endian
  out.push_back(0);
  out += "SG";
  out.push_back(22);  // subfield length, little-endian
  out.push_back(0);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(toc_offset));
  out.append(hex, 16);
  out += "STARGZ";
  // An empty final stored block, then CRC32 = 0 and ISIZE = 0 of the empty content.
  const uint8_t tail[] = {0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0};
  out.append(reinterpret_cast<const char*>(tail), sizeof tail);
  return out;
}

ParsedFooter ParseFooter(std::span<const uint8_t> p) {
  ParsedFooter f;
  const bool legacy = p.size() == kLegacyFooterSize;
  if (p.size() != kFooterSize && !legacy) return f;
  if (p[0] != 0x1f || p[1] != 0x8b || p[2] != 0x08 || (p[3] & 0x04) == 0) return f;
  const size_t xlen = p[10] | size_t{p[11]} << 8;
  const size_t magic_at = legacy ? 28 : 32;
  if (std::memcmp(p.data() + magic_at, "STARGZ", 6) != 0) return f;
  f.kind = FooterKind::kDamaged;
  if (xlen != (legacy ? 22u : 26u)) {
    f.problem = "footer extra field has length " + std::to_string(xlen);
    return f;
  }
  if (!legacy && (p[12] != 'S' || p[13] != 'G' || (p[14] | p[15] << 8) != 22)) {
    f.problem = "footer extra field is not an \"SG\" subfield of 22 bytes";
    return f;
  }
  if (!ParseHex16(p.subspan(magic_at - 16, 16), f.toc_offset)) {
    f.problem = "footer TOC offset is not 16 hex digits";
    return f;
  }
  f.kind = FooterKind::kFooter;
  return f;
}

}  // namespace estargz

namespace internal {
namespace {


// Bounds on what a TOC may make us allocate.
constexpr uint64_t kMaxTocCompressed = 256ull << 20;
// A layer annotated as eStargz is read from its end this far in one request, which holds
// the footer and, for most layers, the whole TOC: one round trip instead of two (the
// footer, then the TOC). A layer without the annotation may be plain gzip: only its footer.
constexpr uint64_t kEstargzTailGuess = 512 << 10;
constexpr uint64_t kMaxTocDecompressed = 1ull << 30;
// Deflate expands at most about 1032:1; a chunk claiming more than that of its compressed
// range is a lie told to make the reader allocate.
constexpr uint64_t kMaxDeflateRatio = 1032;

Result<std::string> Gunzip(std::span<const uint8_t> in, uint64_t limit) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return Status::Internal("inflateInit2 failed");
  std::string out;
  std::vector<uint8_t> buf(256 << 10);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  Status st;
  for (;;) {
    zs.next_out = buf.data();
    zs.avail_out = static_cast<uInt>(buf.size());
    int ret = inflate(&zs, Z_NO_FLUSH);
    out.append(reinterpret_cast<const char*>(buf.data()), buf.size() - zs.avail_out);
    if (out.size() > limit) {
      st = Status::Corruption("TOC decompresses to more than " + std::to_string(limit) + " bytes");
      break;
    }
    if (ret == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      if (inflateReset(&zs) != Z_OK) {
        st = Status::Internal("inflateReset failed");
        break;
      }
      continue;
    }
    if (ret == Z_BUF_ERROR || (ret == Z_OK && zs.avail_in == 0 && zs.avail_out != 0)) {
      st = Status::Corruption("TOC member is truncated");
      break;
    }
    if (ret != Z_OK) {
      st = Status::Corruption(std::string("TOC member: ") + (zs.msg ? zs.msg : "inflate error"));
      break;
    }
  }
  inflateEnd(&zs);
  if (!st.ok()) return st;
  return out;
}

// Typed access to optional TOC fields; a field of the wrong type is an error.
class Fields {
 public:
  explicit Fields(const TocObject& obj) : obj_(obj) {}
  bool String(const char* key, std::string& out) {
    const TocValue* it = obj_.Find(key);
    if (it == nullptr || it->is_null()) return true;
    if (!it->is_string()) return Bad(key);
    out = it->s;
    return true;
  }
  bool Unsigned(const char* key, uint64_t& out) {
    const TocValue* it = obj_.Find(key);
    if (it == nullptr || it->is_null()) return true;
    if (!it->is_unsigned()) return Bad(key);
    out = it->u;
    return true;
  }
  bool Unsigned32(const char* key, uint32_t& out) {
    uint64_t v = out;
    if (!Unsigned(key, v)) return false;
    if (v > UINT32_MAX) return Bad(key);
    out = static_cast<uint32_t>(v);
    return true;
  }
  const std::string& bad() const { return bad_; }

 private:
  bool Bad(const char* key) {
    bad_ = key;
    return false;
  }
  const TocObject& obj_;
  std::string bad_;
};

struct TocChunk {
  uint64_t offset = 0;
  uint64_t chunk_offset = 0;
  uint64_t chunk_size = 0;  // 0: the rest of the file
  uint64_t inner_offset = 0;
  bool has_digest = false;
  std::array<uint8_t, 32> sha256{};
};

struct TocFile {
  std::string path;
  uint64_t size = 0;
  bool has_digest = false;
  std::array<uint8_t, 32> sha256{};
  bool hidden = false;
  std::vector<TocChunk> chunks;
  std::vector<ChunkRef> refs;  // computed from chunks
};

class TocParser {
 public:
  TocParser(uint64_t toc_offset) : toc_offset_(toc_offset) {}

  Status Parse(const TocDocument& toc, TreeBuilder& builder);
  // Turns the TOC chunks of every file into ChunkRefs.
  Status MapChunks();
  const std::vector<TocFile>& files() const { return files_; }

 private:
  Status AddEntry(size_t index, const TocObject& entry, TreeBuilder& builder);
  Status AddChunk(TocFile& file, Fields& fields, const std::string& where);

  const uint64_t toc_offset_;
  std::vector<TocFile> files_;
  // The regular file later "chunk" entries extend (index into files_), or none.
  size_t current_file_ = SIZE_MAX;
};

Status TocParser::Parse(const TocDocument& toc, TreeBuilder& builder) {
  if (!toc.is_object) return Status::Corruption("TOC is not a JSON object");
  const TocValue* version = toc.top.Find("version");
  if (version == nullptr || !version->is_unsigned() || version->u != 1) {
    return Status::Corruption("TOC version is not 1");
  }
  if (!toc.has_entries || !toc.entries_is_array) {
    return Status::Corruption("TOC has no entries array");
  }
  for (size_t i = 0; i < toc.entries.size(); ++i) {
    RETURN_IF_ERROR(AddEntry(i, toc.entries[i], builder));
  }
  return Status::Ok();
}

Status TocParser::AddChunk(TocFile& file, Fields& fields, const std::string& where) {
  TocChunk c;
  std::string digest;
  if (!fields.Unsigned("offset", c.offset) || !fields.Unsigned("chunkOffset", c.chunk_offset) ||
      !fields.Unsigned("chunkSize", c.chunk_size) ||
      !fields.Unsigned("innerOffset", c.inner_offset) ||
      !fields.String("chunkDigest", digest)) {
    return Status::Corruption(where + ": bad field \"" + fields.bad() + "\"");
  }
  if (!digest.empty()) {
    auto sha = ParseSha256Digest(digest);
    if (!sha) return Status::Corruption(where + ": bad chunkDigest \"" + digest + "\"");
    c.sha256 = *sha;
    c.has_digest = true;
  }
  if (c.offset >= toc_offset_) {
    return Status::Corruption(where + ": data offset " + std::to_string(c.offset) +
                              " is outside the blob's data (TOC at " +
                              std::to_string(toc_offset_) + ")");
  }
  file.chunks.push_back(c);
  return Status::Ok();
}

Status TocParser::AddEntry(size_t index, const TocObject& j, TreeBuilder& builder) {
  std::string where = "TOC entry " + std::to_string(index);
  if (!j.is_object) return Status::Corruption(where + " is not an object");
  Fields fields(j);
  std::string name, type, modtime;
  if (!fields.String("name", name) || !fields.String("type", type)) {
    return Status::Corruption(where + ": bad field \"" + fields.bad() + "\"");
  }
  where += " \"" + name + "\"";
  auto path = NormalizeTarPath(name);
  if (!path.ok()) return Status::Corruption(where + ": " + path.status().message());

  if (type == "chunk") {
    if (current_file_ == SIZE_MAX || files_[current_file_].path != *path) {
      return Status::Corruption(where + ": chunk does not follow its regular file");
    }
    return AddChunk(files_[current_file_], fields, where);
  }
  current_file_ = SIZE_MAX;
  const std::optional<TarType> typed = TarTypeFromToc(type);
  if (!typed) {
    return Status::Corruption("unknown entry type \"" + type + "\"").WithContext(where);
  }
  const TarType tar_type = *typed;
  TarEntry e;
  e.path = *path;
  e.type = tar_type;
  uint64_t mode = 0, size = 0;
  std::string digest;
  if (!fields.Unsigned("mode", mode) || !fields.Unsigned("size", size) ||
      !fields.Unsigned32("uid", e.uid) || !fields.Unsigned32("gid", e.gid) ||
      !fields.String("userName", e.uname) || !fields.String("groupName", e.gname) ||
      !fields.String("modtime", modtime) || !fields.String("linkName", e.linkname) ||
      !fields.Unsigned32("devMajor", e.dev_major) || !fields.Unsigned32("devMinor", e.dev_minor) ||
      !fields.String("digest", digest)) {
    return Status::Corruption(where + ": bad field \"" + fields.bad() + "\"");
  }
  e.mode = static_cast<uint32_t>(mode & 07777);
  if (!modtime.empty()) {
    const std::optional<Rfc3339Time> t = ParseRfc3339(modtime);
    if (!t) return Status::Corruption(where + ": bad modtime \"" + modtime + "\"");
    e.mtime_sec = t->sec;
    e.mtime_nsec = t->nsec;
  }
  if (tar_type == TarType::kHardLink) {
    auto target = NormalizeTarPath(e.linkname);
    if (!target.ok() || target->empty()) {
      return Status::Corruption(where + ": bad hard link target \"" + e.linkname + "\"");
    }
    e.linkname = *target;
  }
  const TocValue* xattrs = j.Find("xattrs");
  if (xattrs != nullptr && !xattrs->is_null()) {
    if (!xattrs->is_object()) return Status::Corruption(where + ": xattrs is not an object");
    if (xattrs->object->has_bad_member) {
      return Status::Corruption(where + ": xattr \"" + xattrs->object->bad_member +
                                "\" is not base64");
    }
    for (const auto& [key, text] : xattrs->object->members) {
      Result<std::string> value = Base64DecodeStrict(text);
      if (!value.ok()) {
        return Status::Corruption(where + ": xattr \"" + key + "\" is not base64");
      }
      e.xattrs.emplace_back(key, std::move(*value));
    }
    // In name order, as a JSON object's members always came before.
    std::sort(e.xattrs.begin(), e.xattrs.end());
  }
  const bool hidden = estargz::IsFormatEntry(e.path);
  if (tar_type == TarType::kRegular) {
    if (size > (uint64_t{1} << 52)) return Status::Corruption(where + ": absurd size");
    TocFile file;
    file.path = e.path;
    file.size = size;
    file.hidden = hidden;
    if (!digest.empty()) {
      auto sha = ParseSha256Digest(digest);
      if (!sha) return Status::Corruption(where + ": bad digest \"" + digest + "\"");
      file.sha256 = *sha;
      file.has_digest = true;
    }
    if (size > 0) RETURN_IF_ERROR(AddChunk(file, fields, where));
    e.size = size;
    e.data_offset = files_.size();  // the key the chunk mapper gets back
    files_.push_back(std::move(file));
    current_file_ = files_.size() - 1;
  }
  if (hidden) return Status::Ok();
  Status st = builder.Add(e);
  if (!st.ok()) return st.WithContext(where);
  return Status::Ok();
}

Status TocParser::MapChunks() {
  // Every distinct data offset, and the TOC's: a chunk's member ends at the next one.
  std::vector<uint64_t> offsets{toc_offset_};
  struct Placed {
    uint64_t offset, inner, length;
    const std::string* path;
  };
  std::vector<Placed> placed;
  for (const TocFile& f : files_) {
    for (const TocChunk& c : f.chunks) offsets.push_back(c.offset);
  }
  std::sort(offsets.begin(), offsets.end());
  offsets.erase(std::unique(offsets.begin(), offsets.end()), offsets.end());

  for (TocFile& f : files_) {
    const std::string where = "TOC file \"" + f.path + "\"";
    uint64_t covered = 0;
    bool all_digests = true;
    for (size_t i = 0; i < f.chunks.size(); ++i) {
      const TocChunk& c = f.chunks[i];
      if (c.chunk_offset != covered) {
        return Status::Corruption(where + ": chunk at file offset " +
                                  std::to_string(c.chunk_offset) + " does not follow the bytes before it (" +
                                  std::to_string(covered) + ")");
      }
      if (c.chunk_size == 0 && i + 1 != f.chunks.size()) {
        return Status::Corruption(where + ": chunk without chunkSize before the last one");
      }
      const std::optional<uint64_t> chunk_length = ChunkLength(c.chunk_size, covered, f.size);
      if (!chunk_length) {
        return Status::Corruption(where + ": chunks do not add up to the file size " +
                                  std::to_string(f.size));
      }
      const uint64_t length = *chunk_length;
      auto next = std::upper_bound(offsets.begin(), offsets.end(), c.offset);
      // c.offset < toc_offset_, which is in offsets: next exists.
      const uint64_t blob_length = *next - c.offset;
      const uint64_t limit = blob_length > (UINT64_MAX - 1024) / kMaxDeflateRatio
                                 ? UINT64_MAX
                                 : blob_length * kMaxDeflateRatio + 1024;
      if (c.inner_offset > limit || length > limit - c.inner_offset) {
        return Status::Corruption(where + ": chunk of " + std::to_string(length) +
                                  " bytes cannot come from " + std::to_string(blob_length) +
                                  " compressed bytes at " + std::to_string(c.offset));
      }
      ChunkRef r;
      r.codec = Codec::kGzip;
      r.blob_offset = c.offset;
      r.blob_length = blob_length;
      r.skip = c.inner_offset;
      r.span_length = length;
      r.inner_offset = 0;
      r.file_offset = covered;
      r.length = length;
      r.has_digest = c.has_digest;
      r.chunk_digest = true;
      r.sha256 = c.sha256;
      f.refs.push_back(r);
      placed.push_back({c.offset, c.inner_offset, length, &f.path});
      all_digests = all_digests && c.has_digest;
      covered += length;
    }
    if (covered != f.size) {
      return Status::Corruption(where + ": chunks cover " + std::to_string(covered) + " of " +
                                std::to_string(f.size) + " bytes");
    }
    if (!all_digests && !f.refs.empty()) {
      // Older stargz: no chunkDigest. The file's digest still verifies it when its chunks
      // are back-to-back members (as such writers lay them out): read them as one span.
      bool contiguous = f.has_digest;
      for (size_t i = 0; contiguous && i < f.refs.size(); ++i) {
        contiguous = f.refs[i].skip == 0 &&
                     (i == 0 || f.refs[i - 1].blob_offset + f.refs[i - 1].blob_length ==
                                    f.refs[i].blob_offset);
      }
      if (!contiguous) {
        return Status::Corruption(where + ": chunk without chunkDigest and no file digest to verify it");
      }
      ChunkRef whole = f.refs.front();
      whole.blob_length = f.refs.back().blob_offset + f.refs.back().blob_length - whole.blob_offset;
      whole.span_length = f.size;
      whole.length = f.size;
      whole.has_digest = true;
      whole.chunk_digest = false;
      whole.sha256 = f.sha256;
      f.refs.assign(1, whole);
    }
  }
  // Chunks sharing a member must not overlap in its decompressed bytes.
  std::sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.inner < b.inner;
  });
  for (size_t i = 1; i < placed.size(); ++i) {
    const Placed& a = placed[i - 1];
    const Placed& b = placed[i];
    if (a.offset == b.offset && b.inner - a.inner < a.length) {
      return Status::Corruption("TOC files \"" + *a.path + "\" and \"" + *b.path +
                                "\" overlap in the member at " + std::to_string(a.offset));
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<FlatLayerIndex>> TryOpenEstargz(
    fetch::BlobSource& source, const std::map<std::string, std::string>& annotations,
    const std::string& layer_digest) {
  const std::string name = layer_digest.empty() ? source.Describe() : layer_digest;
  auto corrupt = [&](const std::string& why) {
    return Status::Corruption("layer " + name + ": eStargz: " + why);
  };
  auto want_digest = annotations.find(std::string(estargz::kTocDigestAnnotation));
  const bool annotated = want_digest != annotations.end();
  const uint64_t size = source.Size();
  if (size < estargz::kLegacyFooterSize) {
    if (annotated) return corrupt("blob of " + std::to_string(size) + " bytes has no footer");
    return std::unique_ptr<FlatLayerIndex>();
  }
  const size_t tail_size = static_cast<size_t>(std::min<uint64_t>(
      size, annotated ? std::max<uint64_t>(kEstargzTailGuess, estargz::kFooterSize)
                      : estargz::kFooterSize));
  const uint64_t tail_start = size - tail_size;
  std::vector<uint8_t> tail(tail_size);
  {
    auto n = source.ReadAt(tail_start, tail);
    if (!n.ok()) return n.status().WithContext("layer " + name + ": reading the eStargz footer");
    if (*n != tail_size) return corrupt("short read of the footer");
  }
  const std::span<const uint8_t> last =
      std::span<const uint8_t>(tail).last(std::min<size_t>(tail_size, estargz::kFooterSize));
  estargz::ParsedFooter footer;
  size_t footer_size = 0;
  if (last.size() == estargz::kFooterSize) {
    footer = estargz::ParseFooter(last);
    footer_size = estargz::kFooterSize;
  }
  if (footer.kind == estargz::FooterKind::kNone) {
    footer = estargz::ParseFooter(last.subspan(last.size() - estargz::kLegacyFooterSize));
    footer_size = estargz::kLegacyFooterSize;
  }
  if (footer.kind == estargz::FooterKind::kNone) {
    if (annotated) return corrupt("no footer, but the layer has a TOC digest annotation");
    return std::unique_ptr<FlatLayerIndex>();
  }
  if (footer.kind == estargz::FooterKind::kDamaged) return corrupt(footer.problem);
  const uint64_t toc_end = size - footer_size;
  if (footer.toc_offset >= toc_end) {
    return corrupt("TOC offset " + std::to_string(footer.toc_offset) +
                   " is beyond the blob's data (" + std::to_string(toc_end) + " bytes)");
  }
  const uint64_t toc_len = toc_end - footer.toc_offset;
  if (toc_len > kMaxTocCompressed) {
    return corrupt("TOC of " + std::to_string(toc_len) + " compressed bytes is too large");
  }
  std::vector<uint8_t> compressed(static_cast<size_t>(toc_len));
  {
    // What the tail read holds already is copied; only the rest is read.
    const uint64_t have_from = std::max(footer.toc_offset, tail_start);
    const size_t missing = static_cast<size_t>(have_from - footer.toc_offset);
    std::copy(tail.begin() + static_cast<ptrdiff_t>(have_from - tail_start),
              tail.begin() + static_cast<ptrdiff_t>(toc_end - tail_start),
              compressed.begin() + static_cast<ptrdiff_t>(missing));
    if (missing > 0) {
      auto n = source.ReadAt(footer.toc_offset, std::span<uint8_t>(compressed).first(missing));
      if (!n.ok()) return n.status().WithContext("layer " + name + ": reading the eStargz TOC");
      if (*n != missing) return corrupt("short read of the TOC");
    }
  }
  auto toc_tar = Gunzip(compressed, kMaxTocDecompressed);
  if (!toc_tar.ok()) return corrupt(toc_tar.status().message());

  // The TOC member is a tar holding stargz.index.json.
  std::string_view toc_json;
  bool found = false;
  TarScanner scanner([&](const TarEntry& e) {
    if (!found && e.type == TarType::kRegular && e.path == estargz::kTocTarName) {
      if (e.data_offset > toc_tar->size() || e.size > toc_tar->size() - e.data_offset) {
        return Status::Corruption("stargz.index.json runs past the TOC member");
      }
      toc_json = std::string_view(*toc_tar).substr(e.data_offset, e.size);
      found = true;
    }
    return Status::Ok();
  });
  Status st = scanner.Feed(std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(toc_tar->data()), toc_tar->size()));
  if (st.ok()) st = scanner.Finish();
  if (!st.ok() && !found) return corrupt("TOC member: " + st.message());
  if (!found) return corrupt("TOC member holds no stargz.index.json");

  if (annotated) {
    const std::string got = Digest::Sha256Of(toc_json).String();
    if (got != want_digest->second) {
      return corrupt("TOC digest " + got + " does not match the annotation " + want_digest->second);
    }
  }
  auto toc = ParseTocJson(toc_json);
  if (!toc.ok()) return corrupt("stargz.index.json is " + toc.status().message());

  TreeBuilder builder;
  TocParser parser(footer.toc_offset);
  st = parser.Parse(*toc, builder);
  if (st.ok()) st = parser.MapChunks();
  if (!st.ok()) return corrupt(st.message());
  const std::vector<TocFile>& files = parser.files();
  auto map = [&](uint64_t key, uint64_t len, std::vector<ChunkRef>& out) -> Status {
    if (key >= files.size() || files[key].size != len) {
      return Status::Internal("eStargz: unknown file key");
    }
    out.insert(out.end(), files[key].refs.begin(), files[key].refs.end());
    return Status::Ok();
  };
  auto index = builder.Finish(map, LayerFormat::kEstargz, size, layer_digest, nullptr);
  if (!index.ok()) return corrupt(index.status().message());
  // Files before ".prefetch.landmark" are the prefetch set (stargz-snapshotter's rule).
  for (const TocFile& f : files) {
    if (f.path == estargz::kPrefetchLandmark && !f.chunks.empty()) {
      (*index)->set_prefetch_end(f.chunks.front().offset);
    }
  }
  return std::move(*index);
}

}  // namespace internal
}  // namespace imagefs::index
