#pragma once

// BlobSource: random access to one blob's bytes (a layer, a config), wherever it lives:
// a registry (HTTP Range), a local file, an OCI layout, a docker-archive member.
//
// Thread safety: every method may be called concurrently from many threads.
// Buffers: the caller owns every buffer; implementations write into it and keep no
// reference after returning.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "util/status.h"

namespace imagefs::fetch {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t end() const { return offset + length; }
};

class BlobSource {
 public:
  BlobSource() = default;
  virtual ~BlobSource() = default;
  BlobSource(const BlobSource&) = delete;
  BlobSource& operator=(const BlobSource&) = delete;

  // Total size of the blob in bytes.
  virtual uint64_t Size() const = 0;
  // Reads up to out.size() bytes at offset. Returns the count read, which is less than
  // out.size() only at the end of the blob. Reading at or past the end returns 0.
  virtual Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) = 0;
  // Reads several ranges, each into its own buffer (outs[i].size() == ranges[i].length).
  // Implementations may coalesce neighbours and issue requests in parallel; the default
  // calls ReadAt for each. Fails as a whole if any range cannot be read fully.
  virtual Status ReadRanges(std::span<const ByteRange> ranges,
                            std::span<const std::span<uint8_t>> outs);
  // Human-readable name for error messages ("registry blob sha256:...").
  virtual std::string Describe() const = 0;
};

// A blob held in a local file (read with pread).
Result<std::unique_ptr<BlobSource>> OpenFileBlobSource(const std::string& path);
// A window [offset, offset+size) of a local file (a docker-archive member).
Result<std::unique_ptr<BlobSource>> OpenFileSliceBlobSource(const std::string& path,
                                                            uint64_t offset, uint64_t size);
// Bytes held in memory.
std::unique_ptr<BlobSource> MakeMemoryBlobSource(std::string data, std::string name);

// Reads a whole blob (small ones: manifests, configs) into memory.
Result<std::string> ReadAll(BlobSource& source);

}  // namespace imagefs::fetch
