#include "store/file_io.h"

#include <liburing.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "util/file.h"

namespace imagefs::store {
namespace {

class PreadIo final : public FileIo {
 public:
  Result<size_t> ReadAt(int fd, uint64_t offset, std::span<uint8_t> out) override {
    return PreadFull(fd, out, offset, "a chunk file");
  }
  Status WriteAt(int fd, uint64_t offset, std::span<const uint8_t> data) override {
    return PwriteAll(fd, data, offset, "a chunk file");
  }
  const char* name() const override { return "pread"; }
};

// One ring per thread (rings are not thread-safe); each call submits one SQE and waits for
// its completion. The win over pread is small for single requests; the engine exists so
// batched submissions can come later without touching callers.
class UringIo final : public FileIo {
 public:
  Result<size_t> ReadAt(int fd, uint64_t offset, std::span<uint8_t> out) override {
    size_t done = 0;
    while (done < out.size()) {
      ASSIGN_OR_RETURN(int n, Submit(fd, offset + done, out.data() + done, out.size() - done, true));
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }
  Status WriteAt(int fd, uint64_t offset, std::span<const uint8_t> data) override {
    size_t done = 0;
    while (done < data.size()) {
      ASSIGN_OR_RETURN(int n, Submit(fd, offset + done, const_cast<uint8_t*>(data.data()) + done,
                                     data.size() - done, false));
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }
  const char* name() const override { return "io_uring"; }

  static bool Available() {
    io_uring ring;
    if (io_uring_queue_init(2, &ring, 0) != 0) return false;
    io_uring_queue_exit(&ring);
    return true;
  }

 private:
  // A ring's queues are shared memory: after fork() the child would share its parent's
  // ring, and the two would consume each other's completions (a write "done" before its
  // data landed). So a ring belongs to the process that made it; a forked child makes its
  // own (tearing down its copy only unmaps the child's view and closes the child's fd).
  struct Ring {
    io_uring ring{};
    bool ok = false;
    pid_t owner = ::getpid();
    Ring() { ok = io_uring_queue_init(8, &ring, 0) == 0; }
    ~Ring() {
      if (ok) io_uring_queue_exit(&ring);
    }
  };

  static Result<int> Submit(int fd, uint64_t offset, uint8_t* buf, size_t len, bool read) {
    thread_local std::unique_ptr<Ring> owned;
    if (!owned || owned->owner != ::getpid()) owned = std::make_unique<Ring>();
    Ring& ring = *owned;
    if (!ring.ok) return Status::Unsupported("io_uring: cannot set up a ring");
    for (;;) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring.ring);
      if (sqe == nullptr) return Status::Internal("io_uring: submission queue full");
      unsigned n = static_cast<unsigned>(std::min<size_t>(len, 1u << 30));
      if (read) {
        io_uring_prep_read(sqe, fd, buf, n, offset);
      } else {
        io_uring_prep_write(sqe, fd, buf, n, offset);
      }
      int rc = io_uring_submit(&ring.ring);
      if (rc < 0) return Status::FromErrno(-rc, "io_uring_submit");
      io_uring_cqe* cqe = nullptr;
      rc = io_uring_wait_cqe(&ring.ring, &cqe);
      if (rc < 0) return Status::FromErrno(-rc, "io_uring_wait_cqe");
      int res = cqe->res;
      io_uring_cqe_seen(&ring.ring, cqe);
      if (res == -EINTR || res == -EAGAIN) continue;
      if (res < 0) return Status::FromErrno(-res, read ? "io_uring read" : "io_uring write");
      return res;
    }
  }
};

}  // namespace

Result<std::unique_ptr<FileIo>> MakeFileIo(IoEngine engine) {
  if (engine == IoEngine::kPread) return std::unique_ptr<FileIo>(std::make_unique<PreadIo>());
  bool allowed = std::getenv("IMAGEFS_NO_IO_URING") == nullptr;
  if (allowed && UringIo::Available()) return std::unique_ptr<FileIo>(std::make_unique<UringIo>());
  if (engine == IoEngine::kIoUring) {
    return Status::Unsupported("io_uring is not available on this kernel");
  }
  return std::unique_ptr<FileIo>(std::make_unique<PreadIo>());
}

}  // namespace imagefs::store
