#pragma once

// Positional file I/O behind one small interface, so the chunk store can use io_uring
// (liburing) where the kernel allows it and plain pread/pwrite elsewhere, chosen at run time.
// Thread safety: both engines may be used from many threads at once.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "util/status.h"

namespace imagefs::store {

class FileIo {
 public:
  virtual ~FileIo() = default;
  FileIo(const FileIo&) = delete;
  FileIo& operator=(const FileIo&) = delete;
  // Reads until out is full or end of file; returns the count read.
  virtual Result<size_t> ReadAt(int fd, uint64_t offset, std::span<uint8_t> out) = 0;
  // Writes all of data at offset.
  virtual Status WriteAt(int fd, uint64_t offset, std::span<const uint8_t> data) = 0;
  virtual const char* name() const = 0;

 protected:
  FileIo() = default;
};

enum class IoEngine { kAuto, kIoUring, kPread };

// kAuto: io_uring when a ring can be set up (and IMAGEFS_NO_IO_URING is unset), else pread.
// kIoUring fails with kUnsupported when the kernel refuses.
Result<std::unique_ptr<FileIo>> MakeFileIo(IoEngine engine);

}  // namespace imagefs::store
