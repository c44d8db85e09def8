#pragma once

// TarScanner: walks tar headers in a byte stream pushed in pieces and reports every entry
// with the offset of its data in that (uncompressed) stream.
//
// The stream is pushed, not pulled, so the scanner can sit behind a streaming decompressor
// (the gzip and zstd indexers feed it the output of their one decoding pass). A reader of
// an uncompressed tar may instead jump over file data: SkippableBytes() says how many of
// the next bytes are data the scanner does not need, and Skip(n) passes over them.
//
// Formats: ustar, GNU (long names/links 'L'/'K', base-256 numbers), PAX ('x' per entry
// and 'g' global: path, linkpath, size, mtime with fractions, uid, gid, uname, gname,
// SCHILY.xattr.*). GNU sparse files ('S', PAX GNU.sparse.*) are kUnsupported. Paths are
// normalized; a path that escapes the root with ".." is kCorruption naming the entry, as
// is a bad header checksum. The archive ends at two zero blocks (or one, or a clean end
// of stream at a header boundary, as GNU tar accepts).
//
// Not thread-safe.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/status.h"

namespace imagefs::index {

enum class TarType : char {
  kRegular = '0',
  kHardLink = '1',
  kSymlink = '2',
  kCharDevice = '3',
  kBlockDevice = '4',
  kDirectory = '5',
  kFifo = '6',
};

struct TarEntry {
  std::string path;  // normalized: no leading "/" or "./", no "//", "" is the root
  TarType type = TarType::kRegular;
  uint32_t mode = 0;  // permission bits (07777) only; the type is `type`
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string uname;
  std::string gname;
  uint64_t size = 0;  // bytes of data (regular files; 0 for the other types)
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  // Symlinks: the target as written. Hard links: the target path, normalized.
  std::string linkname;
  std::vector<std::pair<std::string, std::string>> xattrs;  // SCHILY.xattr.NAME = value
  uint64_t header_offset = 0;  // stream offset of the entry's first header (incl. L/K/x)
  uint64_t data_offset = 0;    // stream offset of the entry's data
};

// Normalizes a tar path: strips leading "/" and "./", collapses "//" and ".", resolves
// "..". Fails (kCorruption) when ".." climbs above the root or the path holds a NUL.
Result<std::string> NormalizeTarPath(std::string_view path);

class TarScanner {
 public:
  // Called once per entry, in archive order. An error stops the scan and is returned by
  // the Feed/Skip/Finish call that reached it.
  using EntryFn = std::function<Status(const TarEntry&)>;

  explicit TarScanner(EntryFn on_entry);
  TarScanner(const TarScanner&) = delete;
  TarScanner& operator=(const TarScanner&) = delete;

  // Pushes the next bytes of the stream.
  Status Feed(std::span<const uint8_t> data);
  // How many of the next stream bytes are file data (or padding) the scanner ignores.
  uint64_t SkippableBytes() const;
  // Passes over n <= SkippableBytes() bytes without their content.
  Status Skip(uint64_t n);
  // End of stream. Fails when it ends inside a header or an entry's data.
  Status Finish();

  // Stream bytes consumed so far (fed or skipped).
  uint64_t offset() const { return offset_; }
  // True once the end-of-archive marker was read; later bytes are ignored.
  bool at_end() const { return state_ == State::kEnd; }
  uint64_t entry_count() const { return entry_count_; }

 private:
  enum class State { kHeader, kData, kMeta, kEnd, kFailed };
  Status ParseHeader();
  Status FinishMeta();
  Status Fail(Status st);

  EntryFn on_entry_;
  State state_ = State::kHeader;
  uint64_t offset_ = 0;
  uint64_t entry_count_ = 0;
  Status error_;

  // kHeader: the 512-byte block being collected.
  uint8_t block_[512];
  size_t block_fill_ = 0;
  int zero_blocks_ = 0;

  // kData / kMeta: bytes left in the current entry's data plus padding.
  uint64_t remaining_ = 0;
  // kMeta: content of a GNU long name/link or PAX header, and its declared size.
  char meta_type_ = 0;
  uint64_t meta_size_ = 0;
  std::string meta_;

  // Extensions gathered for the next real entry.
  bool have_long_name_ = false;
  std::string long_name_;
  bool have_long_link_ = false;
  std::string long_link_;
  std::vector<std::pair<std::string, std::string>> pax_;         // 'x', next entry only
  std::vector<std::pair<std::string, std::string>> pax_global_;  // 'g', all later entries
  uint64_t pending_header_offset_ = 0;
  bool pending_has_header_offset_ = false;
};

}  // namespace imagefs::index
