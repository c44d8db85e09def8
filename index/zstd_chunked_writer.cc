// zstd:chunked writer: rewrites a tar as containers/storage's zstd:chunked layer (current
// layout: per-file zstd frames, zstd TOC and tar-split in skippable frames, 64-byte
// footer). Layout and the choices made here: docs/formats.md ("zstd:chunked").

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "fetch/auth.h"
#include "fetch/blob_source.h"
#include "index/coding.h"
#include "index/layer_index.h"
#include "index/layer_writer.h"
#include "index/tar_scanner.h"
#include "index/toc_util.h"
#include "index/zstd_chunked.h"
#include "util/digest.h"

namespace imagefs::index {
namespace {

namespace zc = zstd_chunked;

constexpr int kDefaultLevel = 3;  // containers/storage's default
constexpr int kPrefetchLevel = 19;  // the prefetch set's chunks
constexpr size_t kReadPiece = 1 << 20;
constexpr size_t kScanPiece = 64 << 10;
constexpr size_t kTarSplitPiece = 1 << 20;  // trailing padding segments, as tar-split
constexpr std::string_view kMediaType = "application/vnd.oci.image.layer.v1.tar+zstd";

uint64_t RoundUp512(uint64_t v) { return (v + 511) / 512 * 512; }

// ---------------------------------------------------------------------------------------
// What Go's archive/tar (and so containers/storage's TOC check) reports for an entry's raw
// header blocks: the names as written (not normalized), the raw mode, atime and ctime.

struct RawHeader {
  std::string name;
  std::string linkname;
  int64_t mode = 0;
  int64_t size = 0;
  std::optional<std::pair<int64_t, uint32_t>> atime;
  std::optional<std::pair<int64_t, uint32_t>> ctime;
};

std::string CString(std::string_view field) {
  size_t nul = field.find('\0');
  return std::string(field.substr(0, nul));
}

int64_t ParseNumeric(std::string_view b) {
  if (!b.empty() && (static_cast<uint8_t>(b[0]) & 0x80)) {
    // base-256, big endian, two's complement with the marker bit dropped
    uint64_t v = static_cast<uint8_t>(b[0]) & 0x7f;
    bool neg = (v & 0x40) != 0;
    if (neg) v |= ~uint64_t{0x7f};
    for (size_t i = 1; i < b.size(); ++i) v = v << 8 | static_cast<uint8_t>(b[i]);
    return static_cast<int64_t>(v);
  }
  size_t start = 0, end = b.size();
  while (start < end && (b[start] == ' ' || b[start] == '\0')) ++start;
  while (end > start && (b[end - 1] == ' ' || b[end - 1] == '\0')) --end;
  int64_t v = 0;
  for (size_t i = start; i < end; ++i) {
    if (b[i] < '0' || b[i] > '7') return v;
    v = v * 8 + (b[i] - '0');
  }
  return v;
}

std::optional<std::pair<int64_t, uint32_t>> ParsePaxTime(std::string_view s) {
  bool neg = !s.empty() && s[0] == '-';
  if (neg || (!s.empty() && s[0] == '+')) s.remove_prefix(1);
  size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  if (whole.empty()) return std::nullopt;
  int64_t sec = 0;
  for (char c : whole) {
    if (c < '0' || c > '9') return std::nullopt;
    sec = sec * 10 + (c - '0');
  }
  uint32_t nsec = 0;
  if (dot != std::string_view::npos) {
    std::string_view frac = s.substr(dot + 1);
    for (size_t i = 0; i < 9; ++i) {
      char c = i < frac.size() ? frac[i] : '0';
      if (c < '0' || c > '9') return std::nullopt;
      nsec = nsec * 10 + static_cast<uint32_t>(c - '0');
    }
  }
  if (neg) {
    sec = -sec;
    if (nsec > 0) {
      sec -= 1;
      nsec = 1000000000 - nsec;
    }
  }
  return std::make_pair(sec, nsec);
}

Result<RawHeader> ParseRawHeaders(std::string_view raw) {
  RawHeader h;
  std::optional<std::string> long_name, long_link, pax_path, pax_link;
  std::optional<int64_t> pax_size;
  size_t pos = 0;
  while (true) {
    if (raw.size() < 512 || pos > raw.size() - 512) {
      return Status::Corruption("truncated tar header");
    }
    std::string_view blk = raw.substr(pos, 512);
    char type = blk[156];
    int64_t size = ParseNumeric(blk.substr(124, 12));
    if (type == 'x' || type == 'L' || type == 'K' || type == 'g') {
      if (type == 'g') {
        return Status::Unsupported(
            "global PAX header: zstd:chunked (containers/storage) cannot represent it");
      }
      size_t start = pos + 512;
      if (size < 0 || static_cast<uint64_t>(size) > raw.size() - start) {
        return Status::Corruption("tar extension header larger than the entry");
      }
      std::string_view content = raw.substr(start, static_cast<size_t>(size));
      if (type == 'L') {
        long_name = CString(content);
      } else if (type == 'K') {
        long_link = CString(content);
      } else {
        while (!content.empty()) {
          size_t sp = content.find(' ');
          if (sp == std::string_view::npos) break;
          size_t len = 0;
          for (size_t i = 0; i < sp; ++i) {
            if (content[i] < '0' || content[i] > '9') return Status::Corruption("bad PAX record");
            len = len * 10 + static_cast<size_t>(content[i] - '0');
            if (len > content.size()) return Status::Corruption("bad PAX record");
          }
          if (len <= sp + 1 || content[len - 1] != '\n') {
            return Status::Corruption("bad PAX record");
          }
          std::string_view rec = content.substr(sp + 1, len - sp - 2);
          content.remove_prefix(len);
          size_t eq = rec.find('=');
          if (eq == std::string_view::npos) return Status::Corruption("bad PAX record");
          std::string_view key = rec.substr(0, eq), value = rec.substr(eq + 1);
          if (key == "path") pax_path = std::string(value);
          else if (key == "linkpath") pax_link = std::string(value);
          else if (key == "atime") h.atime = ParsePaxTime(value);
          else if (key == "ctime") h.ctime = ParsePaxTime(value);
          else if (key == "size") {
            int64_t v = 0;
            for (char c : value) v = v * 10 + (c >= '0' && c <= '9' ? c - '0' : 0);
            pax_size = v;
          }
        }
      }
      pos = start + static_cast<size_t>(RoundUp512(static_cast<uint64_t>(size)));
      continue;
    }
    std::string_view magic = blk.substr(257, 8);
    bool ustar = magic.substr(0, 6) == std::string_view("ustar\0", 6);
    bool gnu = magic == std::string_view("ustar  \0", 8);
    h.name = CString(blk.substr(0, 100));
    if (ustar) {
      std::string prefix = CString(blk.substr(345, 155));
      if (!prefix.empty()) h.name = prefix + "/" + h.name;
    }
    h.linkname = CString(blk.substr(157, 100));
    h.mode = ParseNumeric(blk.substr(100, 8));
    h.size = size;
    if (gnu) {
      if (blk[345] != '\0') h.atime = std::make_pair(ParseNumeric(blk.substr(345, 12)), 0u);
      if (blk[357] != '\0') h.ctime = std::make_pair(ParseNumeric(blk.substr(357, 12)), 0u);
    }
    if (pax_path) h.name = *pax_path;
    if (pax_link) h.linkname = *pax_link;
    if (pax_size) h.size = *pax_size;
    if (long_name) h.name = *long_name;
    if (long_link) h.linkname = *long_link;
    return h;
  }
}

// ---------------------------------------------------------------------------------------
// Output plumbing

struct CCtxFree {
  void operator()(ZSTD_CCtx* p) const { ZSTD_freeCCtx(p); }
};
using CCtxPtr = std::unique_ptr<ZSTD_CCtx, CCtxFree>;

Result<CCtxPtr> NewCCtx(int level) {
  CCtxPtr cctx(ZSTD_createCCtx());
  if (!cctx) return Status::Internal("ZSTD_createCCtx failed");
  for (auto [param, value] : {std::pair{ZSTD_c_compressionLevel, level},
                              std::pair{ZSTD_c_checksumFlag, 1},
                              std::pair{ZSTD_c_contentSizeFlag, 1}}) {
    size_t r = ZSTD_CCtx_setParameter(cctx.get(), param, value);
    if (ZSTD_isError(r)) {
      return Status::InvalidArgument(std::string("zstd parameter: ") + ZSTD_getErrorName(r));
    }
  }
  return cctx;
}

// Counts and hashes what goes to the sink.
class Output {
 public:
  explicit Output(const ByteSink& sink) : sink_(sink) {}
  Status Write(std::string_view data) {
    if (data.empty()) return Status::Ok();
    std::span<const uint8_t> s(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    hash_.Update(s);
    offset_ += data.size();
    return sink_(s);
  }
  Status SkippableFrame(std::string_view payload) {
    std::string head(zc::kSkippableMagic.begin(), zc::kSkippableMagic.end());
    PutU32(head, static_cast<uint32_t>(payload.size()));
    RETURN_IF_ERROR(Write(head));
    return Write(payload);
  }
  uint64_t offset() const { return offset_; }
  Digest Finish() { return hash_.Finish(); }

 private:
  const ByteSink& sink_;
  Sha256 hash_;
  uint64_t offset_ = 0;
};

// Streams bytes into zstd frames, one frame between Begin/End; appends the compressed
// bytes to a callback. Hashes the uncompressed bytes (the diff_id).
class FrameWriter {
 public:
  using Emit = std::function<Status(std::string_view)>;
  FrameWriter(CCtxPtr cctx, Emit emit) : cctx_(std::move(cctx)), emit_(std::move(emit)) {
    buf_.resize(ZSTD_CStreamOutSize());
  }
  bool open() const { return open_; }
  // Starts a frame; pledged < 0 when the size is not known in advance.
  // The level of the frames begun from now on.
  Status SetLevel(int level) {
    size_t r = ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_compressionLevel, level);
    if (ZSTD_isError(r)) return Status::Internal(ZSTD_getErrorName(r));
    return Status::Ok();
  }
  Status Begin(int64_t pledged) {
    ZSTD_CCtx_reset(cctx_.get(), ZSTD_reset_session_only);
    if (pledged >= 0) {
      size_t r = ZSTD_CCtx_setPledgedSrcSize(cctx_.get(), static_cast<uint64_t>(pledged));
      if (ZSTD_isError(r)) return Status::Internal(ZSTD_getErrorName(r));
    }
    open_ = true;
    return Status::Ok();
  }
  Status Add(std::string_view data) {
    if (!open_) RETURN_IF_ERROR(Begin(-1));
    if (hash_) hash_->Update(data);
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (in.pos < in.size) {
      ZSTD_outBuffer out{buf_.data(), buf_.size(), 0};
      size_t r = ZSTD_compressStream2(cctx_.get(), &out, &in, ZSTD_e_continue);
      if (ZSTD_isError(r)) return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(r));
      RETURN_IF_ERROR(emit_(std::string_view(buf_.data(), out.pos)));
    }
    return Status::Ok();
  }
  Status End() {
    if (!open_) return Status::Ok();
    ZSTD_inBuffer in{nullptr, 0, 0};
    size_t left;
    do {
      ZSTD_outBuffer out{buf_.data(), buf_.size(), 0};
      left = ZSTD_compressStream2(cctx_.get(), &out, &in, ZSTD_e_end);
      if (ZSTD_isError(left)) {
        return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(left));
      }
      RETURN_IF_ERROR(emit_(std::string_view(buf_.data(), out.pos)));
    } while (left != 0);
    open_ = false;
    return Status::Ok();
  }
  void HashInto(Sha256* hash) { hash_ = hash; }

 private:
  CCtxPtr cctx_;
  Emit emit_;
  std::string buf_;
  bool open_ = false;
  Sha256* hash_ = nullptr;
};

// ---------------------------------------------------------------------------------------

struct Entry {
  TarEntry tar;
  RawHeader raw;
  std::string headers;   // raw header blocks [header_offset, data_offset)
  std::string padding;   // bytes after the data up to the 512 boundary
  uint64_t data_size = 0;
};

struct ChunkInfo {
  uint64_t offset = 0;       // blob offset of the chunk's frame
  uint64_t file_offset = 0;  // where it starts in the file
  uint64_t size = 0;
  std::string digest;        // "sha256:..."
};

void AppendKey(std::string& out, std::string_view key) {
  out.push_back(',');
  zc::AppendJsonString(out, key);
  out.push_back(':');
}
void AppendInt(std::string& out, std::string_view key, int64_t v) {
  if (v == 0) return;  // omitempty, as containers/storage writes it
  AppendKey(out, key);
  out += std::to_string(v);
}
void AppendStr(std::string& out, std::string_view key, std::string_view v) {
  if (v.empty()) return;
  AppendKey(out, key);
  zc::AppendJsonString(out, v);
}

class Writer {
 public:
  Writer(const std::string& tar_path, const ByteSink& sink, const LayerWriteOptions& options)
      : tar_path_(tar_path), options_(options), out_(sink) {}
  Result<WrittenLayer> Run();

 private:
  Status Scan();
  // Reads exactly out.size() (or n) bytes of the input tar; fewer is kCorruption.
  Status ReadAt(uint64_t offset, std::span<uint8_t> out);
  Status ReadAt(uint64_t offset, size_t n, std::string& out);
  Status WriteEntry(const Entry& e);
  Status TarSplitSegment(std::string_view bytes);
  Status TarSplitFile(const Entry& e, uint64_t crc);
  Status TarSplitLine(const std::string& line);
  void TocEntry(const Entry& e, const std::vector<ChunkInfo>& chunks, uint64_t end_offset,
                const std::string& file_digest);

  const std::string& tar_path_;
  const LayerWriteOptions& options_;
  Output out_;
  std::unique_ptr<fetch::BlobSource> in_;
  std::vector<Entry> entries_;
  std::string tail_;  // end-of-archive blocks and anything after them
  int level_ = kDefaultLevel;

  std::unique_ptr<FrameWriter> frames_;
  Sha256 diff_hash_;
  std::string pending_padding_;  // padding of the previous entry, not yet written

  std::unique_ptr<FrameWriter> tarsplit_z_;
  std::string tarsplit_compressed_;
  uint64_t tarsplit_uncompressed_ = 0;
  int tarsplit_position_ = 0;

  std::string toc_entries_;
};

Status Writer::ReadAt(uint64_t offset, std::span<uint8_t> out) {
  if (out.empty()) return Status::Ok();
  ASSIGN_OR_RETURN(size_t got, in_->ReadAt(offset, out));
  if (got != out.size()) {
    return Status::Corruption("tar ends early (at offset " + std::to_string(offset + got) + ")");
  }
  return Status::Ok();
}

Status Writer::ReadAt(uint64_t offset, size_t n, std::string& out) {
  out.resize(n);
  return ReadAt(offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), n));
}

Status Writer::Scan() {
  std::vector<TarEntry> scanned;
  TarScanner scanner([&](const TarEntry& e) {
    scanned.push_back(e);
    return Status::Ok();
  });
  const uint64_t size = in_->Size();
  auto read = [&](uint64_t pos, std::span<uint8_t> buf) -> Result<size_t> {
    RETURN_IF_ERROR(ReadAt(pos, buf));  // all of it, or an error
    return buf.size();
  };
  RETURN_IF_ERROR(internal::ScanTarHeaders(scanner, size, {kScanPiece, kScanPiece}, read));

  std::set<std::string> seen;
  uint64_t expect = 0;
  for (TarEntry& t : scanned) {
    if (t.header_offset != expect || t.data_offset < t.header_offset) {
      return Status::Unsupported("bytes between tar entries before \"" + t.path +
                                 "\" (a global PAX header?)");
    }
    if (!seen.insert(t.path).second) {
      return Status::Unsupported("\"" + t.path +
                                 "\" appears twice; zstd:chunked (tar-split) cannot hold "
                                 "duplicate paths");
    }
    Entry e;
    RETURN_IF_ERROR(ReadAt(t.header_offset, t.data_offset - t.header_offset, e.headers));
    auto raw = ParseRawHeaders(e.headers);
    if (!raw.ok()) return raw.status().WithContext("tar entry \"" + t.path + "\"");
    e.raw = std::move(*raw);
    if (!internal::IsValidUtf8(e.raw.name) || !internal::IsValidUtf8(e.raw.linkname)) {
      return Status::Unsupported("tar entry \"" + t.path +
                                 "\": name is not UTF-8 (the zstd:chunked TOC is JSON)");
    }
    e.data_size = t.type == TarType::kRegular ? t.size : 0;
    uint64_t data_end = t.data_offset + e.data_size;
    expect = RoundUp512(data_end);
    if (expect > size) return Status::Corruption("tar ends inside \"" + t.path + "\"");
    RETURN_IF_ERROR(ReadAt(data_end, expect - data_end, e.padding));
    e.tar = std::move(t);
    entries_.push_back(std::move(e));
  }
  if (expect > size) return Status::Corruption("tar ends early");
  return ReadAt(expect, size - expect, tail_);
}

Status Writer::TarSplitLine(const std::string& line) {
  tarsplit_uncompressed_ += line.size();
  return tarsplit_z_->Add(line);
}

Status Writer::TarSplitSegment(std::string_view bytes) {
  if (bytes.empty()) return Status::Ok();
  std::string line = "{\"type\":2,\"payload\":\"" + fetch::Base64Encode(bytes) +
                     "\",\"position\":" + std::to_string(tarsplit_position_++) + "}\n";
  return TarSplitLine(line);
}

Status Writer::TarSplitFile(const Entry& e, uint64_t crc) {
  std::string line = "{\"type\":1";
  AppendStr(line, "name", e.raw.name);
  AppendInt(line, "size", e.raw.size);
  AppendKey(line, "payload");
  if (e.raw.size > 0) {
    std::string sum;
    for (int i = 7; i >= 0; --i) sum.push_back(static_cast<char>(crc >> (8 * i)));
    zc::AppendJsonString(line, fetch::Base64Encode(sum));
  } else {
    line += "null";
  }
  line += ",\"position\":" + std::to_string(tarsplit_position_++) + "}\n";
  return TarSplitLine(line);
}

void Writer::TocEntry(const Entry& e, const std::vector<ChunkInfo>& chunks,
                      uint64_t end_offset, const std::string& file_digest) {
  std::string& o = toc_entries_;
  if (!o.empty()) o.push_back(',');
  o += "{\"type\":";
  zc::AppendJsonString(o, internal::TocTypeName(e.tar.type));
  AppendStr(o, "name", e.raw.name);
  AppendStr(o, "linkName", e.raw.linkname);
  AppendInt(o, "mode", e.raw.mode);
  AppendInt(o, "size", e.raw.size);
  AppendInt(o, "uid", e.tar.uid);
  AppendInt(o, "gid", e.tar.gid);
  AppendStr(o, "modtime", internal::FormatRfc3339(e.tar.mtime_sec, e.tar.mtime_nsec));
  if (e.raw.atime) {
    AppendStr(o, "accesstime", internal::FormatRfc3339(e.raw.atime->first, e.raw.atime->second));
  }
  if (e.raw.ctime) {
    AppendStr(o, "changetime", internal::FormatRfc3339(e.raw.ctime->first, e.raw.ctime->second));
  }
  bool dev = e.tar.type == TarType::kCharDevice || e.tar.type == TarType::kBlockDevice;
  AppendInt(o, "devMajor", dev ? e.tar.dev_major : 0);
  AppendInt(o, "devMinor", dev ? e.tar.dev_minor : 0);
  if (!e.tar.xattrs.empty()) {
    std::map<std::string, std::string> sorted(e.tar.xattrs.begin(), e.tar.xattrs.end());
    AppendKey(o, "xattrs");
    o.push_back('{');
    bool first = true;
    for (const auto& [k, v] : sorted) {
      if (!first) o.push_back(',');
      first = false;
      zc::AppendJsonString(o, k);
      o.push_back(':');
      zc::AppendJsonString(o, fetch::Base64Encode(v));
    }
    o.push_back('}');
  }
  AppendStr(o, "digest", file_digest);
  if (!chunks.empty()) {
    AppendInt(o, "offset", static_cast<int64_t>(chunks[0].offset));
    AppendInt(o, "endOffset", static_cast<int64_t>(end_offset));
  }
  if (chunks.size() > 1) {
    AppendInt(o, "chunkSize", static_cast<int64_t>(chunks[0].size));
    AppendStr(o, "chunkDigest", chunks[0].digest);
  }
  o.push_back('}');
  for (size_t i = 1; i < chunks.size(); ++i) {
    o += ",{\"type\":\"chunk\"";
    AppendStr(o, "name", e.raw.name);
    AppendInt(o, "offset", static_cast<int64_t>(chunks[i].offset));
    AppendInt(o, "chunkSize", static_cast<int64_t>(chunks[i].size));
    AppendInt(o, "chunkOffset", static_cast<int64_t>(chunks[i].file_offset));
    AppendStr(o, "chunkDigest", chunks[i].digest);
    o.push_back('}');
  }
}

Status Writer::WriteEntry(const Entry& e) {
  // The previous entry's padding and this entry's headers: one tar-split segment, and the
  // bytes of the header frame in progress.
  std::string segment = std::move(pending_padding_);
  segment += e.headers;
  pending_padding_.clear();
  RETURN_IF_ERROR(TarSplitSegment(segment));
  RETURN_IF_ERROR(frames_->Add(segment));

  std::vector<ChunkInfo> chunks;
  std::string file_digest;
  uint64_t crc = 0;
  uint64_t end_offset = 0;
  if (e.data_size > 0) {
    RETURN_IF_ERROR(frames_->End());
    const uint64_t chunk_size = options_.chunk_size;
    // A file of one chunk: its chunk digest is the file digest, hashed once.
    const bool one_chunk = e.data_size <= chunk_size;
    Sha256 whole;
    std::string buf;
    for (uint64_t pos = 0; pos < e.data_size;) {
      uint64_t len = std::min(chunk_size, e.data_size - pos);
      ChunkInfo c;
      c.offset = out_.offset();
      c.file_offset = pos;
      c.size = len;
      Sha256 chunk_hash;
      RETURN_IF_ERROR(frames_->Begin(static_cast<int64_t>(len)));
      for (uint64_t done = 0; done < len;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(kReadPiece, len - done));
        RETURN_IF_ERROR(ReadAt(e.tar.data_offset + pos + done, n, buf));
        whole.Update(buf);
        if (!one_chunk) chunk_hash.Update(buf);
        crc = zc::Crc64Iso(crc, buf);
        RETURN_IF_ERROR(frames_->Add(buf));
        done += n;
      }
      RETURN_IF_ERROR(frames_->End());
      if (!one_chunk) c.digest = chunk_hash.Finish().String();
      chunks.push_back(std::move(c));
      pos += len;
    }
    file_digest = whole.Finish().String();
    if (one_chunk) chunks.front().digest = file_digest;
    end_offset = out_.offset();
  } else if (e.raw.size > 0) {
    crc = zc::Crc64Iso(0, "");
  }
  RETURN_IF_ERROR(TarSplitFile(e, crc));
  TocEntry(e, chunks, end_offset, file_digest);
  pending_padding_ = e.padding;
  return Status::Ok();
}

Result<WrittenLayer> Writer::Run() {
  if (options_.chunk_size == 0) return Status::InvalidArgument("chunk size must not be 0");
  level_ = options_.level == 0 ? kDefaultLevel : options_.level;
  if (level_ < 1 || level_ > 19) {
    return Status::InvalidArgument("zstd level " + std::to_string(level_) + " is not in 1-19");
  }
  ASSIGN_OR_RETURN(in_, fetch::OpenFileBlobSource(tar_path_));
  RETURN_IF_ERROR(Scan());

  // Output order: the prefetch profile's regular files first (in profile order), then
  // everything else in archive order.
  std::vector<size_t> order;
  std::vector<bool> taken(entries_.size(), false);
  size_t prefetch_entries = 0;
  if (!options_.prefetch_paths.empty()) {
    std::unordered_map<std::string, size_t> by_path;
    for (size_t i = 0; i < entries_.size(); ++i) by_path.emplace(entries_[i].tar.path, i);
    // Moves an entry to the front after its parent directories.
    auto take_dir = [&](const std::string& dir) {
      auto it = by_path.find(dir);
      if (it != by_path.end() && !taken[it->second] &&
          entries_[it->second].tar.type == TarType::kDirectory) {
        taken[it->second] = true;
        order.push_back(it->second);
      }
    };
    auto take = [&](size_t i) {
      const std::string& path = entries_[i].tar.path;
      take_dir("");
      for (size_t slash = path.find('/'); slash != std::string::npos;
           slash = path.find('/', slash + 1)) {
        take_dir(path.substr(0, slash));
      }
      if (!taken[i]) {
        taken[i] = true;
        order.push_back(i);
      }
    };
    for (const std::string& p : options_.prefetch_paths) {
      auto norm = NormalizeTarPath(p);
      if (!norm.ok()) continue;
      auto it = by_path.find(*norm);
      if (it == by_path.end()) continue;
      const Entry& e = entries_[it->second];
      if (e.tar.type == TarType::kHardLink) {
        // A hard link's bytes are its target's: the target goes first.
        auto target = by_path.find(e.tar.linkname);
        if (target == by_path.end() || entries_[target->second].tar.type != TarType::kRegular) {
          continue;
        }
        take(target->second);
      } else if (e.tar.type != TarType::kRegular) {
        continue;
      }
      take(it->second);
    }
    prefetch_entries = order.size();
  }
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!taken[i]) order.push_back(i);
  }

  ASSIGN_OR_RETURN(CCtxPtr data_cctx, NewCCtx(level_));
  frames_ = std::make_unique<FrameWriter>(std::move(data_cctx), [this](std::string_view b) {
    return out_.Write(b);
  });
  frames_->HashInto(&diff_hash_);
  ASSIGN_OR_RETURN(CCtxPtr ts_cctx, NewCCtx(level_));
  tarsplit_z_ = std::make_unique<FrameWriter>(std::move(ts_cctx), [this](std::string_view b) {
    tarsplit_compressed_.append(b);
    return Status::Ok();
  });

  // The prefetch set is what a cold start waits for, fetched whole before the workload
  // runs: its chunks get the highest level (nginx's startup files: 4.25 -> 3.59 MB, each
  // chunk compressed alone; ~0.4 s of convert CPU per MB, once).
  if (prefetch_entries > 0) RETURN_IF_ERROR(frames_->SetLevel(std::max(level_, kPrefetchLevel)));
  uint64_t prefetch_end = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    RETURN_IF_ERROR(WriteEntry(entries_[order[k]]));
    if (prefetch_entries > 0 && k + 1 == prefetch_entries) {
      RETURN_IF_ERROR(frames_->End());
      RETURN_IF_ERROR(frames_->SetLevel(level_));
      prefetch_end = out_.offset();
    }
  }
  // End of archive: the last padding, then the zero blocks (one tar-split segment, as Go's
  // tar reader consumes them), then whatever follows in 1 MiB segments.
  std::string last = std::move(pending_padding_);
  size_t marker = std::min<size_t>(tail_.size(), 1024);
  last.append(tail_, 0, marker);
  RETURN_IF_ERROR(TarSplitSegment(last));
  for (size_t off = marker; off < tail_.size(); off += kTarSplitPiece) {
    RETURN_IF_ERROR(TarSplitSegment(std::string_view(tail_).substr(off, kTarSplitPiece)));
  }
  RETURN_IF_ERROR(frames_->Add(last));
  RETURN_IF_ERROR(frames_->Add(std::string_view(tail_).substr(marker)));
  RETURN_IF_ERROR(frames_->End());
  RETURN_IF_ERROR(tarsplit_z_->End());

  // TOC.
  const Digest tarsplit_digest = Digest::Sha256Of(tarsplit_compressed_);
  std::string toc = "{\"version\":1,\"entries\":[" + toc_entries_ + "]";
  toc += ",\"tarSplitDigest\":\"" + tarsplit_digest.String() + "\"";
  if (!options_.prefetch_paths.empty()) {
    toc += ",\"" + std::string(zc::kPrefetchCountKey) + "\":" + std::to_string(prefetch_entries);
    toc += ",\"" + std::string(zc::kPrefetchEndKey) + "\":" + std::to_string(prefetch_end);
  }
  toc += "}";
  ASSIGN_OR_RETURN(CCtxPtr toc_cctx, NewCCtx(level_));
  std::string toc_z(ZSTD_compressBound(toc.size()), '\0');
  size_t zn = ZSTD_compress2(toc_cctx.get(), toc_z.data(), toc_z.size(), toc.data(), toc.size());
  if (ZSTD_isError(zn)) return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(zn));
  toc_z.resize(zn);
  if (toc_z.size() > UINT32_MAX || tarsplit_compressed_.size() > UINT32_MAX) {
    return Status::Unsupported("TOC or tar-split larger than a skippable frame holds");
  }

  zc::Footer footer;
  footer.manifest_type = zc::kManifestTypeCrfs;
  footer.manifest_offset = out_.offset() + zc::kSkippableHeader;
  footer.manifest_length = toc_z.size();
  footer.manifest_uncompressed = toc.size();
  RETURN_IF_ERROR(out_.SkippableFrame(toc_z));
  footer.tarsplit_offset = out_.offset() + zc::kSkippableHeader;
  footer.tarsplit_length = tarsplit_compressed_.size();
  footer.tarsplit_uncompressed = tarsplit_uncompressed_;
  RETURN_IF_ERROR(out_.SkippableFrame(tarsplit_compressed_));
  RETURN_IF_ERROR(out_.SkippableFrame(zc::EncodeFooter64(footer)));

  WrittenLayer layer;
  layer.size = out_.offset();
  layer.digest = out_.Finish().String();
  layer.diff_id = diff_hash_.Finish().String();
  layer.media_type = std::string(kMediaType);
  layer.annotations[std::string(zc::kManifestChecksumKey)] = Digest::Sha256Of(toc_z).String();
  if (prefetch_end > 0) layer.annotations[std::string(kPrefetchEndAnnotation)] = std::to_string(prefetch_end);
  layer.annotations[std::string(zc::kManifestPositionKey)] =
      std::to_string(footer.manifest_offset) + ":" + std::to_string(footer.manifest_length) +
      ":" + std::to_string(footer.manifest_uncompressed) + ":1";
  layer.annotations[std::string(zc::kTarSplitPositionKey)] =
      std::to_string(footer.tarsplit_offset) + ":" + std::to_string(footer.tarsplit_length) +
      ":" + std::to_string(footer.tarsplit_uncompressed);
  return layer;
}

}  // namespace

Result<WrittenLayer> WriteZstdChunkedLayer(const std::string& tar_path, const ByteSink& sink,
                                           const LayerWriteOptions& options) {
  Writer writer(tar_path, sink, options);
  auto r = writer.Run();
  if (!r.ok()) return r.status().WithContext("writing zstd:chunked layer from " + tar_path);
  return r;
}

}  // namespace imagefs::index
