// zstd:chunked reader: finds the TOC (by annotation, else by one of the three footers),
// checks it, and turns it into a FlatLayerIndex whose chunks are the per-file zstd frames,
// each verified against its chunkDigest / digest. Format: docs/formats.md ("zstd:chunked").

#include <zstd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <memory>
#include <vector>

#include "index/coding.h"
#include "index/readers.h"
#include "index/toc_json.h"
#include "index/toc_util.h"
#include "index/zstd_chunked.h"
#include "util/ascii.h"

namespace imagefs::index {
namespace zstd_chunked {

// ---------------------------------------------------------------------------------------
// Shared helpers (declared in index/zstd_chunked.h)

std::string EncodeFooter64(const Footer& f) {
  std::string out;
  for (uint64_t v : {f.manifest_offset, f.manifest_length, f.manifest_uncompressed,
                     f.manifest_type, f.tarsplit_offset, f.tarsplit_length,
                     f.tarsplit_uncompressed}) {
    PutU64(out, v);
  }
  out.append(kMagic);
  return out;
}

void AppendJsonString(std::string& out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '<': case '>': case '&':  // as Go's encoding/json (HTML-safe)
        out += "\\u00";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else if (c == 0xe2 && i + 2 < s.size() && static_cast<uint8_t>(s[i + 1]) == 0x80 &&
                   (static_cast<uint8_t>(s[i + 2]) == 0xa8 ||
                    static_cast<uint8_t>(s[i + 2]) == 0xa9)) {
          out += static_cast<uint8_t>(s[i + 2]) == 0xa8 ? "\\u2028" : "\\u2029";
          i += 2;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

// Slicing-by-8 (eight 256-entry tables, 8 bytes per step): the byte-at-a-time loop was a
// fifth of a zstd:chunked commit's CPU time. table[0] is the classic reflected table;
// table[k][i] is table[0] applied to table[k-1][i] shifted by one more byte.
uint64_t Crc64Iso(uint64_t crc, std::string_view data) {
  using Tables = std::array<std::array<uint64_t, 256>, 8>;
  static const Tables tables = [] {
    Tables t{};
    constexpr uint64_t kPoly = 0xD800000000000000ULL;  // crc64.ISO, reversed
    for (uint64_t i = 0; i < 256; ++i) {
      uint64_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[0][i] = c;
    }
    for (size_t k = 1; k < 8; ++k) {
      for (size_t i = 0; i < 256; ++i) {
        t[k][i] = t[0][t[k - 1][i] & 0xff] ^ (t[k - 1][i] >> 8);
      }
    }
    return t;
  }();
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size();
  crc = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    // The next 8 bytes as a little-endian word, whatever the host's byte order.
    uint64_t word = 0;
    for (int b = 7; b >= 0; --b) word = (word << 8) | p[b];
    crc ^= word;
    crc = tables[7][crc & 0xff] ^ tables[6][(crc >> 8) & 0xff] ^ tables[5][(crc >> 16) & 0xff] ^
          tables[4][(crc >> 24) & 0xff] ^ tables[3][(crc >> 32) & 0xff] ^
          tables[2][(crc >> 40) & 0xff] ^ tables[1][(crc >> 48) & 0xff] ^ tables[0][crc >> 56];
  }
  for (; n > 0; ++p, --n) crc = tables[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return ~crc;
}

}  // namespace zstd_chunked

namespace internal {
namespace {

namespace zc = zstd_chunked;

// zstd's largest expansion: a 4-byte RLE block yields a 128 KiB block. A chunk claiming
// more output per compressed byte than this cannot be real.
constexpr uint64_t kMaxZstdRatio = 32768;
constexpr uint64_t kMaxFileSize = uint64_t{1} << 48;

struct Located {
  zc::Footer footer;
  std::string checksum;  // "sha256:..." from the annotation; empty on the footer path
};

bool ParseU64(std::string_view s, uint64_t& v) {
  auto n = ParseAsciiU64(s);
  if (n) v = *n;
  return n.has_value();
}

uint64_t GetLe64(std::string_view b, size_t off) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(b[off + i])} << (8 * i);
  return v;
}

uint32_t GetLe32(std::string_view b, size_t off) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v |= uint32_t{static_cast<uint8_t>(b[off + i])} << (8 * i);
  return v;
}

class Reader {
 public:
  Reader(fetch::BlobSource& source, const std::map<std::string, std::string>& annotations,
         const std::string& layer_digest)
      : source_(source),
        annotations_(annotations),
        layer_digest_(layer_digest),
        name_(layer_digest.empty() ? source.Describe() : layer_digest),
        size_(source.Size()) {}

  Result<std::unique_ptr<FlatLayerIndex>> Open();

 private:
  Status Bad(const std::string& why) const {
    return Status::Corruption("layer " + name_ + ": zstd:chunked " + why);
  }
  Result<std::optional<Located>> FromAnnotations() const;
  Result<std::optional<Located>> FromFooter();
  Result<std::string> ReadToc(const Located& loc);
  Result<std::unique_ptr<FlatLayerIndex>> Build(const TocDocument& toc, uint64_t toc_start);
  Result<int64_t> Int(const TocObject& e, const char* key, int64_t min, int64_t max) const;
  Result<std::string> Str(const TocObject& e, const char* key) const;
  Result<std::array<uint8_t, 32>> Sha(const std::string& text, const std::string& what) const;

  fetch::BlobSource& source_;
  const std::map<std::string, std::string>& annotations_;
  const std::string& layer_digest_;
  const std::string name_;
  const uint64_t size_;
};

Result<std::optional<Located>> Reader::FromAnnotations() const {
  for (auto [pos_key, sum_key] :
       {std::pair{zc::kManifestPositionKey, zc::kManifestChecksumKey},
        std::pair{zc::kOldManifestPositionKey, zc::kOldManifestChecksumKey}}) {
    auto it = annotations_.find(std::string(pos_key));
    if (it == annotations_.end()) continue;
    const std::string& v = it->second;
    uint64_t f[4];
    size_t start = 0;
    for (int i = 0; i < 4; ++i) {
      size_t colon = i < 3 ? v.find(':', start) : v.size();
      if (colon == std::string::npos ||
          !ParseU64(std::string_view(v).substr(start, colon - start), f[i])) {
        return Bad("annotation " + std::string(pos_key) + " is malformed (\"" + v + "\")");
      }
      start = colon + 1;
    }
    auto sum = annotations_.find(std::string(sum_key));
    if (sum == annotations_.end()) {
      return Bad("annotation " + std::string(pos_key) + " comes without " + std::string(sum_key));
    }
    Located loc;
    loc.footer.manifest_offset = f[0];
    loc.footer.manifest_length = f[1];
    loc.footer.manifest_uncompressed = f[2];
    loc.footer.manifest_type = f[3];
    loc.checksum = sum->second;
    return std::optional<Located>(loc);
  }
  return std::optional<Located>();
}

Result<std::optional<Located>> Reader::FromFooter() {
  const uint64_t tail_len = std::min<uint64_t>(size_, 64 + zc::kSkippableHeader);
  std::string tail(tail_len, '\0');
  if (tail_len > 0) {
    std::span<uint8_t> out(reinterpret_cast<uint8_t*>(tail.data()), tail_len);
    ASSIGN_OR_RETURN(size_t n, source_.ReadAt(size_ - tail_len, out));
    if (n != tail_len) return Bad("footer: short read");
  }
  auto is_magic = [](std::string_view b) { return b == zc::kMagic || b == zc::kMagicOld; };
  for (size_t n : {size_t{64}, size_t{56}, size_t{40}}) {
    if (tail.size() < n + zc::kSkippableHeader) continue;
    std::string_view frame = std::string_view(tail).substr(tail.size() - n - zc::kSkippableHeader);
    if (std::memcmp(frame.data(), zc::kSkippableMagic.data(), 4) != 0 ||
        GetLe32(frame, 4) != n) {
      continue;
    }
    std::string_view f = frame.substr(zc::kSkippableHeader);
    Located loc;
    loc.footer.manifest_offset = GetLe64(f, 0);
    loc.footer.manifest_length = GetLe64(f, 8);
    loc.footer.manifest_uncompressed = GetLe64(f, 16);
    loc.footer.manifest_type = GetLe64(f, 24);
    bool ok = false;
    if (n == 64) {
      ok = is_magic(f.substr(56, 8));
      loc.footer.tarsplit_offset = GetLe64(f, 32);
      loc.footer.tarsplit_length = GetLe64(f, 40);
      loc.footer.tarsplit_uncompressed = GetLe64(f, 48);
    } else if (n == 56) {
      // containers/storage 1.47-1.49 wrote the magic at 32 (16 zero bytes follow); their
      // reader looked for it at 48. Accept both.
      ok = (is_magic(f.substr(32, 8)) && f.substr(40) == std::string(16, '\0')) ||
           is_magic(f.substr(48, 8));
    } else {
      ok = is_magic(f.substr(32, 8));
    }
    if (!ok) return Bad("footer (" + std::to_string(n) + " bytes) has no GNUlInUx magic");
    return std::optional<Located>(loc);
  }
  // No footer frame. A magic where a footer would put one means a damaged footer.
  if (tail.size() >= 8 && is_magic(std::string_view(tail).substr(tail.size() - 8))) {
    return Bad("footer is damaged (magic without its skippable frame)");
  }
  if (tail.size() >= 24 && is_magic(std::string_view(tail).substr(tail.size() - 24, 8))) {
    return Bad("footer is damaged (magic without its skippable frame)");
  }
  return std::optional<Located>();
}

Result<std::string> Reader::ReadToc(const Located& loc) {
  const zc::Footer& f = loc.footer;
  if (f.manifest_type != zc::kManifestTypeCrfs) {
    return Bad("manifest type " + std::to_string(f.manifest_type) + " is not 1 (CRFS)");
  }
  if (f.manifest_length == 0 || f.manifest_offset > size_ ||
      f.manifest_length > size_ - f.manifest_offset) {
    return Bad("TOC range " + std::to_string(f.manifest_offset) + "+" +
               std::to_string(f.manifest_length) + " is outside the blob (" +
               std::to_string(size_) + " bytes)");
  }
  if (f.manifest_length > zc::kMaxTocBytes || f.manifest_uncompressed > zc::kMaxTocBytes ||
      f.manifest_uncompressed == 0) {
    return Bad("TOC size " + std::to_string(f.manifest_uncompressed) + " is out of bounds");
  }
  std::string compressed(f.manifest_length, '\0');
  fetch::ByteRange range{f.manifest_offset, f.manifest_length};
  std::span<uint8_t> out(reinterpret_cast<uint8_t*>(compressed.data()), compressed.size());
  RETURN_IF_ERROR(source_.ReadRanges(std::span<const fetch::ByteRange>(&range, 1),
                                     std::span<const std::span<uint8_t>>(&out, 1)));
  if (!loc.checksum.empty()) {
    auto want = Digest::Parse(loc.checksum);
    if (!want.ok() || want->algorithm() != "sha256") {
      return Bad("manifest-checksum annotation \"" + loc.checksum + "\" is not a sha256 digest");
    }
    Digest got = Digest::Sha256Of(compressed);
    if (got != *want) {
      return Bad("TOC checksum mismatch (annotation " + want->String() + ", blob " +
                 got.String() + ")");
    }
  }
  std::string toc(f.manifest_uncompressed, '\0');
  size_t r = ZSTD_decompress(toc.data(), toc.size(), compressed.data(), compressed.size());
  if (ZSTD_isError(r)) {
    return Bad(std::string("TOC does not decompress: ") + ZSTD_getErrorName(r));
  }
  if (r != toc.size()) {
    return Bad("TOC decompresses to " + std::to_string(r) + " bytes, not " +
               std::to_string(toc.size()));
  }
  return toc;
}

Result<int64_t> Reader::Int(const TocObject& e, const char* key, int64_t min, int64_t max) const {
  const TocValue* it = e.Find(key);
  if (it == nullptr || it->is_null()) return int64_t{0};
  int64_t v;
  if (it->is_unsigned()) {
    if (it->u > static_cast<uint64_t>(max)) {
      return Bad(std::string("TOC field ") + key + " out of range");
    }
    v = static_cast<int64_t>(it->u);
  } else if (it->is_integer()) {
    v = it->as_int64();
  } else {
    return Bad(std::string("TOC field ") + key + " is not an integer");
  }
  if (v < min || v > max) return Bad(std::string("TOC field ") + key + " out of range");
  return v;
}

Result<std::string> Reader::Str(const TocObject& e, const char* key) const {
  const TocValue* it = e.Find(key);
  if (it == nullptr || it->is_null()) return std::string();
  if (!it->is_string()) return Bad(std::string("TOC field ") + key + " is not a string");
  return it->s;
}

Result<std::array<uint8_t, 32>> Reader::Sha(const std::string& text,
                                            const std::string& what) const {
  auto sha = ParseSha256Digest(text);
  if (!sha) return Bad(what + ": digest \"" + text + "\" is missing or not sha256");
  return *sha;
}

Result<std::unique_ptr<FlatLayerIndex>> Reader::Build(const TocDocument& toc, uint64_t toc_start) {
  if (!toc.is_object) return Bad("TOC is not a JSON object");
  const TocValue* ver = toc.top.Find("version");
  if (ver != nullptr && !(ver->is_integer() && ver->as_int64() == 1)) {
    return Bad("TOC version is not 1");
  }
  if (!toc.has_entries || !toc.entries_is_array) return Bad("TOC has no entries array");
  const std::vector<TocObject>& entries = toc.entries;
  const size_t n = entries.size();
  for (const TocObject& e : entries) {
    if (!e.is_object) return Bad("TOC entry is not an object");
  }

  // Where the compressed data after entry i ends when the TOC gives no endOffset: the
  // next entry with an offset, else the TOC's skippable frame.
  std::vector<uint64_t> next_offset(n + 1, toc_start);
  for (size_t i = n; i-- > 0;) {
    ASSIGN_OR_RETURN(int64_t off, Int(entries[i], "offset", 0, INT64_MAX));
    next_offset[i] = off > 0 ? static_cast<uint64_t>(off) : next_offset[i + 1];
  }

  TreeBuilder builder;
  std::vector<std::vector<ChunkRef>> files;
  auto add_chunk = [&](std::vector<ChunkRef>& out, uint64_t off, uint64_t end,
                       uint64_t file_offset, uint64_t length, const std::array<uint8_t, 32>& sha,
                       const std::string& path) -> Status {
    if (off == 0 || end <= off || end > size_) {
      return Bad("entry \"" + path + "\": chunk range " + std::to_string(off) + "-" +
                 std::to_string(end) + " is outside the blob (" + std::to_string(size_) +
                 " bytes)");
    }
    if (length / kMaxZstdRatio > end - off) {
      return Bad("entry \"" + path + "\": chunk of " + std::to_string(length) +
                 " bytes cannot come from " + std::to_string(end - off) + " compressed bytes");
    }
    ChunkRef c;
    c.codec = Codec::kZstd;
    c.blob_offset = off;
    c.blob_length = end - off;
    c.file_offset = file_offset;
    c.length = length;
    c.span_length = length;
    c.inner_offset = 0;
    c.has_digest = true;
    c.chunk_digest = true;
    c.sha256 = sha;
    out.push_back(c);
    return Status::Ok();
  };

  for (size_t i = 0; i < n; ++i) {
    const TocObject& e = entries[i];
    ASSIGN_OR_RETURN(std::string type, Str(e, "type"));
    ASSIGN_OR_RETURN(std::string raw_name, Str(e, "name"));
    if (type == "chunk") return Bad("entry \"" + raw_name + "\": chunk without a regular file");
    auto path = NormalizeTarPath(raw_name);
    if (!path.ok()) return Bad("entry \"" + raw_name + "\": " + path.status().message());
    TarEntry te;
    te.path = std::move(*path);
    ASSIGN_OR_RETURN(int64_t mode, Int(e, "mode", 0, INT64_MAX));
    te.mode = static_cast<uint32_t>(mode & 07777);
    ASSIGN_OR_RETURN(int64_t uid, Int(e, "uid", 0, UINT32_MAX));
    ASSIGN_OR_RETURN(int64_t gid, Int(e, "gid", 0, UINT32_MAX));
    te.uid = static_cast<uint32_t>(uid);
    te.gid = static_cast<uint32_t>(gid);
    ASSIGN_OR_RETURN(std::string modtime, Str(e, "modtime"));
    if (!modtime.empty()) {
      const std::optional<Rfc3339Time> t = ParseRfc3339(modtime);
      if (!t) return Bad("entry \"" + raw_name + "\": bad time \"" + modtime + "\"");
      // Go's zero time.Time, as written for an unset one, leaves the mtime at 0.
      if (!(t->sec == kGoZeroTimeSec && t->nsec == 0 && t->offset == 0)) {
        te.mtime_sec = t->sec;
        te.mtime_nsec = t->nsec;
      }
    }
    ASSIGN_OR_RETURN(int64_t dev_major, Int(e, "devMajor", 0, UINT32_MAX));
    ASSIGN_OR_RETURN(int64_t dev_minor, Int(e, "devMinor", 0, UINT32_MAX));
    te.dev_major = static_cast<uint32_t>(dev_major);
    te.dev_minor = static_cast<uint32_t>(dev_minor);
    const TocValue* xattrs = e.Find("xattrs");
    if (xattrs != nullptr && !xattrs->is_null()) {
      if (!xattrs->is_object()) return Bad("entry \"" + raw_name + "\": xattrs is not an object");
      if (xattrs->object->has_bad_member) {
        return Bad("entry \"" + raw_name + "\": xattr " + xattrs->object->bad_member +
                   " is not a string");
      }
      for (const auto& [key, text] : xattrs->object->members) {
        auto value = Base64DecodeStrict(text);
        if (!value.ok()) {
          return Bad("entry \"" + raw_name + "\": xattr " + key + " is not base64");
        }
        te.xattrs.emplace_back(key, std::move(*value));
      }
      // In name order, as a JSON object's members always came before.
      std::sort(te.xattrs.begin(), te.xattrs.end());
    }
    ASSIGN_OR_RETURN(std::string link, Str(e, "linkName"));
    ASSIGN_OR_RETURN(int64_t size, Int(e, "size", 0, static_cast<int64_t>(kMaxFileSize)));

    const std::optional<TarType> typed = TarTypeFromToc(type);
    if (!typed) return Bad("entry \"" + raw_name + "\": unknown type \"" + type + "\"");
    te.type = *typed;
    if (te.type == TarType::kRegular) {
      te.size = static_cast<uint64_t>(size);
      te.data_offset = files.size();
      std::vector<ChunkRef>& chunks = files.emplace_back();
      size_t last = i;
      while (last + 1 < n && entries[last + 1].StringOr("type") == "chunk") ++last;
      if (size > 0 && last == i) {
        ASSIGN_OR_RETURN(int64_t off, Int(e, "offset", 0, INT64_MAX));
        ASSIGN_OR_RETURN(int64_t end, Int(e, "endOffset", 0, INT64_MAX));
        ASSIGN_OR_RETURN(std::string digest, Str(e, "digest"));
        ASSIGN_OR_RETURN(auto sha, Sha(digest, "entry \"" + raw_name + "\""));
        if (end != 0 && end <= off) {
          return Bad("entry \"" + raw_name + "\": endOffset " + std::to_string(end) +
                     " is not after offset " + std::to_string(off));
        }
        uint64_t stop = end != 0 ? static_cast<uint64_t>(end) : next_offset[i + 1];
        RETURN_IF_ERROR(add_chunk(chunks, static_cast<uint64_t>(off), stop, 0, te.size, sha,
                                  raw_name));
      } else if (size > 0) {
        ASSIGN_OR_RETURN(int64_t main_end, Int(e, "endOffset", 0, INT64_MAX));
        uint64_t pos = 0;
        for (size_t k = i; k <= last; ++k) {
          const TocObject& c = entries[k];
          ASSIGN_OR_RETURN(int64_t off, Int(c, "offset", 0, INT64_MAX));
          constexpr auto kMax = static_cast<int64_t>(kMaxFileSize);
          ASSIGN_OR_RETURN(int64_t csize, Int(c, "chunkSize", 0, kMax));
          ASSIGN_OR_RETURN(int64_t coff, Int(c, "chunkOffset", 0, kMax));
          ASSIGN_OR_RETURN(std::string digest, Str(c, "chunkDigest"));
          if (static_cast<uint64_t>(coff) != pos) {
            return Bad("entry \"" + raw_name + "\": chunk at file offset " +
                       std::to_string(coff) + " where " + std::to_string(pos) + " was expected");
          }
          const std::optional<uint64_t> chunk_length =
              ChunkLength(static_cast<uint64_t>(csize), pos, te.size);
          if (!chunk_length) {
            return Bad("entry \"" + raw_name + "\": chunk sizes do not add up to its size");
          }
          const uint64_t length = *chunk_length;
          ASSIGN_OR_RETURN(auto sha, Sha(digest, "entry \"" + raw_name + "\" chunk"));
          uint64_t stop;
          if (k < last) {
            ASSIGN_OR_RETURN(int64_t next, Int(entries[k + 1], "offset", 0, INT64_MAX));
            stop = static_cast<uint64_t>(next);
          } else {
            ASSIGN_OR_RETURN(int64_t own_end, Int(c, "endOffset", 0, INT64_MAX));
            if (main_end != 0 && main_end <= off) {
              return Bad("entry \"" + raw_name + "\": endOffset " + std::to_string(main_end) +
                         " is not after its last chunk");
            }
            stop = main_end > off   ? static_cast<uint64_t>(main_end)
                   : own_end > off  ? static_cast<uint64_t>(own_end)
                                    : next_offset[last + 1];
          }
          RETURN_IF_ERROR(add_chunk(chunks, static_cast<uint64_t>(off), stop, pos, length, sha,
                                    raw_name));
          pos += length;
        }
        if (pos != te.size) {
          return Bad("entry \"" + raw_name + "\": chunk sizes do not add up to its size");
        }
      } else if (last != i) {
        return Bad("entry \"" + raw_name + "\": empty file with chunks");
      }
      i = last;
    } else if (te.type == TarType::kSymlink) {
      te.linkname = link;
    } else if (te.type == TarType::kHardLink) {
      auto target = NormalizeTarPath(link);
      if (!target.ok() || target->empty()) {
        return Bad("entry \"" + raw_name + "\": bad hard link target \"" + link + "\"");
      }
      te.linkname = std::move(*target);
    }
    Status st = builder.Add(te);
    if (!st.ok()) return st.WithContext("layer " + name_ + ": zstd:chunked TOC");
  }

  auto map = [&files](uint64_t key, uint64_t, std::vector<ChunkRef>& out) -> Status {
    if (key >= files.size()) return Status::Internal("zstd:chunked: bad file key");
    out.insert(out.end(), files[key].begin(), files[key].end());
    return Status::Ok();
  };
  auto index = builder.Finish(map, LayerFormat::kZstdChunked, size_, layer_digest_, nullptr);
  if (!index.ok()) return index.status().WithContext("layer " + name_ + ": zstd:chunked TOC");
  // imagefs convert's prefetch boundary (docs/formats.md); other writers have none.
  const TocValue* end = toc.top.Find(zc::kPrefetchEndKey);
  if (end != nullptr && end->is_unsigned() && end->u <= size_) {
    (*index)->set_prefetch_end(end->u);
  }
  return std::move(*index);
}

Result<std::unique_ptr<FlatLayerIndex>> Reader::Open() {
  ASSIGN_OR_RETURN(std::optional<Located> loc, FromAnnotations());
  if (!loc) {
    ASSIGN_OR_RETURN(loc, FromFooter());
  }
  if (!loc) return std::unique_ptr<FlatLayerIndex>();
  ASSIGN_OR_RETURN(std::string text, ReadToc(*loc));
  auto toc = ParseTocJson(text);
  if (!toc.ok()) return Bad("TOC is " + toc.status().message());
  const uint64_t toc_start = loc->footer.manifest_offset >= zc::kSkippableHeader
                                 ? loc->footer.manifest_offset - zc::kSkippableHeader
                                 : loc->footer.manifest_offset;
  try {
    return Build(*toc, toc_start);
  } catch (const std::exception& e) {
    return Bad(std::string("TOC: ") + e.what());
  }
}

}  // namespace

Result<std::unique_ptr<FlatLayerIndex>> TryOpenZstdChunked(
    fetch::BlobSource& source, const std::map<std::string, std::string>& annotations,
    const std::string& layer_digest) {
  Reader reader(source, annotations, layer_digest);
  return reader.Open();
}

}  // namespace internal
}  // namespace imagefs::index
