// eStargz writer: an uncompressed tar in, an eStargz layer out (docs/formats.md).
//
// Layout of the output, in gzip members:
//   ... tar headers ... | one member per payload chunk (the chunk, then the tar padding and
//   the headers of the entries up to the next payload) | ... | TOC member (a tar with
//   stargz.index.json and the end-of-archive blocks) | 51-byte footer
// The headers are copied from the input tar byte for byte (PAX and GNU extensions
// included), so `gzip -dc | tar -x` sees the input's entries. The input is read twice:
// once to list the entries, once to copy them in output order.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "util/base64.h"
#include "index/coding.h"
#include "index/estargz.h"
#include "index/layer_index.h"
#include "index/layer_writer.h"
#include "index/tar_scanner.h"
#include "index/toc_util.h"
#include "util/digest.h"
#include "util/unique_fd.h"

namespace imagefs::index {
namespace {

using ordered_json = nlohmann::ordered_json;

constexpr size_t kIoSize = 1 << 20;
constexpr int kDefaultLevel = 9;  // what the reference converter uses (BestCompression)

uint64_t Padded512(uint64_t n) { return (n + 511) / 512 * 512; }

// Writes gzip members to the sink, counting and hashing both sides.
class MemberWriter {
 public:
  MemberWriter(const ByteSink& sink, int level) : sink_(sink), level_(level) {}
  ~MemberWriter() {
    if (live_) deflateEnd(&zs_);
  }
  MemberWriter(const MemberWriter&) = delete;
  MemberWriter& operator=(const MemberWriter&) = delete;

  Status Init() {
    // windowBits 31: a gzip wrapper with MTIME 0, no name, OS and XFL fixed by zlib.
    if (deflateInit2(&zs_, level_, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
      return Status::Internal("deflateInit2 failed");
    }
    live_ = true;
    out_.resize(kIoSize);
    return Status::Ok();
  }
  // Appends uncompressed bytes to the open member (opening one if none is).
  Status Write(std::string_view data) {
    open_ = true;
    uncompressed_size_ += data.size();
    diff_hash_.Update(data);
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    zs_.avail_in = static_cast<uInt>(data.size());
    while (zs_.avail_in > 0) RETURN_IF_ERROR(Deflate(Z_NO_FLUSH));
    return Status::Ok();
  }
  // Ends the open member, if any; the next Write starts a new one.
  Status CloseMember() {
    if (!open_) return Status::Ok();
    zs_.next_in = nullptr;
    zs_.avail_in = 0;
    int ret;
    do {
      zs_.next_out = out_.data();
      zs_.avail_out = static_cast<uInt>(out_.size());
      ret = deflate(&zs_, Z_FINISH);
      if (ret != Z_OK && ret != Z_STREAM_END) return Status::Internal("deflate failed");
      RETURN_IF_ERROR(Emit(out_.size() - zs_.avail_out));
    } while (ret != Z_STREAM_END);
    if (deflateReset(&zs_) != Z_OK) return Status::Internal("deflateReset failed");
    open_ = false;
    return Status::Ok();
  }
  // Raw bytes after the last member (the footer).
  Status WriteRaw(std::string_view data) {
    std::memcpy(out_.data(), data.data(), data.size());
    return Emit(data.size());
  }

  uint64_t compressed_size() const { return compressed_size_; }
  uint64_t uncompressed_size() const { return uncompressed_size_; }
  Digest FinishBlobDigest() { return blob_hash_.Finish(); }
  Digest FinishDiffId() { return diff_hash_.Finish(); }

 private:
  Status Deflate(int flush) {
    zs_.next_out = out_.data();
    zs_.avail_out = static_cast<uInt>(out_.size());
    if (deflate(&zs_, flush) == Z_STREAM_ERROR) return Status::Internal("deflate failed");
    return Emit(out_.size() - zs_.avail_out);
  }
  Status Emit(size_t n) {
    if (n == 0) return Status::Ok();
    std::span<const uint8_t> bytes(out_.data(), n);
    blob_hash_.Update(bytes);
    compressed_size_ += n;
    return sink_(bytes);
  }

  const ByteSink& sink_;
  const int level_;
  z_stream zs_{};
  bool live_ = false;
  bool open_ = false;
  std::vector<uint8_t> out_;
  uint64_t compressed_size_ = 0;
  uint64_t uncompressed_size_ = 0;
  Sha256 blob_hash_;
  Sha256 diff_hash_;
};

// A plain ustar header for the entries the writer adds (landmark, TOC).
std::string UstarHeader(std::string_view name, uint64_t size) {
  std::string b(512, '\0');
  auto octal = [&](size_t off, size_t len, uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%0*llo", static_cast<int>(len - 1),
                  static_cast<unsigned long long>(v));
    std::memcpy(b.data() + off, buf, len - 1);
  };
  std::memcpy(b.data(), name.data(), std::min<size_t>(name.size(), 100));
  octal(100, 8, 0644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 0);
  b[156] = '0';
  std::memcpy(b.data() + 257, "ustar\0" "00", 8);
  std::memset(b.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : b) sum += c;
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06o", sum);
  std::memcpy(b.data() + 148, buf, 7);
  return b;
}

struct InputEntry {
  TarEntry entry;
  uint64_t region_start = 0;  // where this entry's header blocks begin in the input
};

class Writer {
 public:
  Writer(const std::string& tar_path, const ByteSink& sink, const LayerWriteOptions& options)
      : tar_path_(tar_path), options_(options),
        out_(sink, options.level == 0 ? kDefaultLevel : options.level) {}

  Result<WrittenLayer> Run();

 private:
  Status Scan();
  std::vector<size_t> Order(size_t& landmark_at) const;
  Status CopyHeaders(const InputEntry& in);
  Status WriteEntry(const InputEntry& in);
  Status WriteLandmark(std::string_view name);
  // Writes `size` bytes of file payload read by `read(offset, buf)` in chunks, adding the
  // TOC entries (the "reg" one from `base`, then "chunk" ones).
  Status WritePayload(ordered_json base, uint64_t size,
                      const std::function<Status(uint64_t, std::span<uint8_t>)>& read);
  Status PRead(uint64_t offset, std::span<uint8_t> buf) const;
  Status CheckUtf8(std::string_view what, std::string_view s, const TarEntry& e) const;

  const std::string& tar_path_;
  const LayerWriteOptions& options_;
  MemberWriter out_;
  UniqueFd fd_;
  std::vector<InputEntry> entries_;
  ordered_json toc_entries_ = ordered_json::array();
};

Status Writer::PRead(uint64_t offset, std::span<uint8_t> buf) const {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd_.get(), buf.data() + done, buf.size() - done,
                        static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading " + tar_path_);
    if (n == 0) return Status::Corruption(tar_path_ + ": ends early");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status Writer::Scan() {
  uint64_t region_end = 0;
  TarScanner scanner([&](const TarEntry& e) {
    InputEntry in;
    in.entry = e;
    in.region_start = region_end;
    region_end = e.data_offset + (e.type == TarType::kRegular ? Padded512(e.size) : 0);
    entries_.push_back(std::move(in));
    return Status::Ok();
  });
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return Status::FromErrno(errno, "stat " + tar_path_);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  auto read = [&](uint64_t pos, std::span<uint8_t> buf) -> Result<size_t> {
    RETURN_IF_ERROR(PRead(pos, buf));  // all of it, or an error
    return buf.size();
  };
  return internal::ScanTarHeaders(scanner, size, {kIoSize, kIoSize}, read);
}

// Output order: the prefetch files (each after its parent directories and, for a hard
// link, its target), then the landmark, then everything else in input order. All entries
// of one path move together, so later duplicates still win.
std::vector<size_t> Writer::Order(size_t& landmark_at) const {
  std::unordered_map<std::string_view, std::vector<size_t>> by_path;
  for (size_t i = 0; i < entries_.size(); ++i) by_path[entries_[i].entry.path].push_back(i);
  std::vector<bool> taken(entries_.size(), false);
  std::vector<size_t> order;
  std::function<void(std::string_view, int)> take = [&](std::string_view path, int depth) {
    if (depth > 64) return;
    for (size_t slash = path.find('/'); slash != std::string_view::npos;
         slash = path.find('/', slash + 1)) {
      auto parent = by_path.find(path.substr(0, slash));
      if (parent == by_path.end()) continue;
      for (size_t i : parent->second) {
        if (!taken[i] && entries_[i].entry.type == TarType::kDirectory) {
          taken[i] = true;
          order.push_back(i);
        }
      }
    }
    auto it = by_path.find(path);
    if (it == by_path.end()) return;
    for (size_t i : it->second) {
      if (taken[i]) continue;
      if (entries_[i].entry.type == TarType::kHardLink) take(entries_[i].entry.linkname, depth + 1);
      taken[i] = true;
      order.push_back(i);
    }
  };
  for (const std::string& p : options_.prefetch_paths) {
    auto path = NormalizeTarPath(p);
    if (path.ok() && !path->empty()) take(*path, 0);
  }
  landmark_at = order.size();
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!taken[i]) order.push_back(i);
  }
  return order;
}

Status Writer::CheckUtf8(std::string_view what, std::string_view s, const TarEntry& e) const {
  if (internal::IsValidUtf8(s)) return Status::Ok();
  return Status::Unsupported(tar_path_ + ": entry \"" + e.path + "\": " + std::string(what) +
                             " is not UTF-8, which an eStargz TOC cannot hold");
}

Status Writer::CopyHeaders(const InputEntry& in) {
  uint64_t pos = in.region_start;
  const uint64_t end = in.entry.data_offset;
  if (end < pos) return Status::Internal("tar entry regions out of order");
  std::string buf;
  while (pos < end) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kIoSize, end - pos));
    buf.resize(n);
    RETURN_IF_ERROR(PRead(pos, std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), n)));
    RETURN_IF_ERROR(out_.Write(buf));
    pos += n;
  }
  return Status::Ok();
}

Status Writer::WritePayload(ordered_json base, uint64_t size,
                            const std::function<Status(uint64_t, std::span<uint8_t>)>& read) {
  const uint64_t chunk_size = options_.chunk_size;
  Sha256 file_hash;
  std::vector<ordered_json> chunks;
  std::vector<uint8_t> buf(kIoSize);
  for (uint64_t written = 0; written < size;) {
    RETURN_IF_ERROR(out_.CloseMember());
    const uint64_t n = std::min(chunk_size, size - written);
    ordered_json c;
    c["offset"] = out_.compressed_size();
    if (written > 0) c["chunkOffset"] = written;
    if (n == chunk_size) c["chunkSize"] = n;
    Sha256 chunk_hash;
    for (uint64_t done = 0; done < n;) {
      size_t piece = static_cast<size_t>(std::min<uint64_t>(buf.size(), n - done));
      std::span<uint8_t> bytes(buf.data(), piece);
      RETURN_IF_ERROR(read(written + done, bytes));
      std::string_view view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      chunk_hash.Update(view);
      file_hash.Update(view);
      RETURN_IF_ERROR(out_.Write(view));
      done += piece;
    }
    c["chunkDigest"] = chunk_hash.Finish().String();
    chunks.push_back(std::move(c));
    written += n;
  }
  const uint64_t pad = Padded512(size) - size;
  if (pad > 0) RETURN_IF_ERROR(out_.Write(std::string(pad, '\0')));
  // Field order as the reference writer's: the file's own fields, digest, then its first
  // chunk's fields; later chunks are "chunk" entries.
  base["digest"] = file_hash.Finish().String();
  const std::string name = base["name"].get<std::string>();
  for (size_t i = 0; i < chunks.size(); ++i) {
    ordered_json e;
    if (i == 0) {
      e = std::move(base);
    } else {
      e["name"] = name;
      e["type"] = "chunk";
    }
    for (auto& [key, value] : chunks[i].items()) e[key] = value;
    toc_entries_.push_back(std::move(e));
  }
  if (chunks.empty()) toc_entries_.push_back(std::move(base));
  return Status::Ok();
}

Status Writer::WriteEntry(const InputEntry& in) {
  const TarEntry& e = in.entry;
  RETURN_IF_ERROR(CheckUtf8("the name", e.path, e));
  RETURN_IF_ERROR(CheckUtf8("the link target", e.linkname, e));
  RETURN_IF_ERROR(CheckUtf8("the user name", e.uname, e));
  RETURN_IF_ERROR(CheckUtf8("the group name", e.gname, e));
  ordered_json j;
  j["name"] = e.path.empty() ? std::string("./") : e.path;
  j["type"] = std::string(internal::TocTypeName(e.type));
  if (e.type == TarType::kRegular && e.size > 0) j["size"] = e.size;
  j["modtime"] = internal::FormatRfc3339(e.mtime_sec, e.mtime_nsec);
  if (!e.linkname.empty() && (e.type == TarType::kSymlink || e.type == TarType::kHardLink)) {
    j["linkName"] = e.linkname;
  }
  if (e.mode != 0) j["mode"] = e.mode;
  if (e.uid != 0) j["uid"] = e.uid;
  if (e.gid != 0) j["gid"] = e.gid;
  if (!e.uname.empty()) j["userName"] = e.uname;
  if (!e.gname.empty()) j["groupName"] = e.gname;
  if (e.type == TarType::kCharDevice || e.type == TarType::kBlockDevice) {
    if (e.dev_major != 0) j["devMajor"] = e.dev_major;
    if (e.dev_minor != 0) j["devMinor"] = e.dev_minor;
  }
  if (!e.xattrs.empty()) {
    // Sorted by name (a JSON object has no order); a repeated name keeps its last value.
    std::vector<std::pair<std::string, std::string>> xattrs = e.xattrs;
    std::stable_sort(xattrs.begin(), xattrs.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    ordered_json x = ordered_json::object();
    for (const auto& [name, value] : xattrs) {
      RETURN_IF_ERROR(CheckUtf8("an xattr name", name, e));
      x[name] = Base64Encode(value);
    }
    j["xattrs"] = std::move(x);
  }
  RETURN_IF_ERROR(CopyHeaders(in));
  if (e.type != TarType::kRegular) {
    toc_entries_.push_back(std::move(j));
    return Status::Ok();
  }
  return WritePayload(std::move(j), e.size, [&](uint64_t off, std::span<uint8_t> buf) {
    return PRead(e.data_offset + off, buf);
  });
}

Status Writer::WriteLandmark(std::string_view name) {
  RETURN_IF_ERROR(out_.Write(UstarHeader(name, 1)));
  ordered_json j;
  j["name"] = std::string(name);
  j["type"] = "reg";
  j["size"] = 1;
  j["modtime"] = internal::FormatRfc3339(0, 0);
  j["mode"] = 0644;
  return WritePayload(std::move(j), 1, [](uint64_t, std::span<uint8_t> buf) {
    std::fill(buf.begin(), buf.end(), estargz::kLandmarkContents);
    return Status::Ok();
  });
}

Result<WrittenLayer> Writer::Run() {
  if (options_.chunk_size == 0) return Status::InvalidArgument("eStargz chunk size must not be 0");
  if (options_.level < 0 || options_.level > 9) {
    return Status::InvalidArgument("gzip level " + std::to_string(options_.level) +
                                   " is not in 1-9");
  }
  int fd = ::open(tar_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "opening " + tar_path_);
  fd_.Reset(fd);
  RETURN_IF_ERROR(out_.Init());
  {
    Status st = Scan();
    if (!st.ok()) return st.message().find(tar_path_) == std::string::npos ? st.WithContext(tar_path_) : st;
  }
  // The format's own entries of an input that was eStargz already are made afresh.
  std::erase_if(entries_, [](const InputEntry& in) { return estargz::IsFormatEntry(in.entry.path); });
  size_t landmark_at = 0;
  std::vector<size_t> order = Order(landmark_at);
  const bool profile = landmark_at > 0;
  if (!profile) RETURN_IF_ERROR(WriteLandmark(estargz::kNoPrefetchLandmark));
  for (size_t k = 0; k < order.size(); ++k) {
    if (profile && k == landmark_at) RETURN_IF_ERROR(WriteLandmark(estargz::kPrefetchLandmark));
    RETURN_IF_ERROR(WriteEntry(entries_[order[k]]));
  }
  if (profile && landmark_at == order.size()) {
    RETURN_IF_ERROR(WriteLandmark(estargz::kPrefetchLandmark));
  }

  // Where the prefetch set ends: the landmark's chunk (what the reader takes it to be).
  uint64_t prefetch_end = 0;
  if (profile) {
    for (const ordered_json& e : toc_entries_) {
      if (e.value("name", "") == estargz::kPrefetchLandmark && e.contains("offset")) {
        prefetch_end = e["offset"].get<uint64_t>();
      }
    }
  }
  // The TOC member: stargz.index.json and the end of the archive.
  RETURN_IF_ERROR(out_.CloseMember());
  const uint64_t toc_offset = out_.compressed_size();
  ordered_json toc;
  toc["version"] = 1;
  toc["entries"] = std::move(toc_entries_);
  const std::string toc_json =
      toc.dump(1, '\t', false, nlohmann::ordered_json::error_handler_t::replace);
  RETURN_IF_ERROR(out_.Write(UstarHeader(estargz::kTocTarName, toc_json.size())));
  RETURN_IF_ERROR(out_.Write(toc_json));
  RETURN_IF_ERROR(out_.Write(std::string(Padded512(toc_json.size()) - toc_json.size() + 1024, '\0')));
  RETURN_IF_ERROR(out_.CloseMember());
  RETURN_IF_ERROR(out_.WriteRaw(estargz::FooterBytes(toc_offset)));

  WrittenLayer layer;
  layer.size = out_.compressed_size();
  layer.digest = out_.FinishBlobDigest().String();
  layer.diff_id = out_.FinishDiffId().String();
  layer.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  layer.annotations[std::string(estargz::kTocDigestAnnotation)] = Digest::Sha256Of(toc_json).String();
  layer.annotations[std::string(estargz::kUncompressedSizeAnnotation)] =
      std::to_string(out_.uncompressed_size());
  if (prefetch_end > 0) layer.annotations[std::string(kPrefetchEndAnnotation)] = std::to_string(prefetch_end);
  return layer;
}

}  // namespace

Result<WrittenLayer> WriteEstargzLayer(const std::string& tar_path, const ByteSink& sink,
                                       const LayerWriteOptions& options) {
  Writer writer(tar_path, sink, options);
  return writer.Run();
}

}  // namespace imagefs::index
