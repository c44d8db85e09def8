#include "fs/kernel_shim.h"

#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "fs/fuse_ops.h"

namespace imagefs::fs {
namespace {

// The kill flag of the request the current worker thread read last (libfuse 3.14's loop
// reads a request and serves it on the same thread).
thread_local bool t_kill_suidgid = false;

template <typename T>
bool ReadStruct(std::span<const uint8_t> bytes, size_t at, T* out) {
  if (bytes.size() < at + sizeof(T)) return false;
  std::memcpy(out, bytes.data() + at, sizeof(T));
  return true;
}

KernelShim& ShimOf(void* userdata) { return *static_cast<FuseContext*>(userdata)->shim; }

ssize_t ShimRead(int fd, void* buf, size_t len, void* userdata) {
  return ShimOf(userdata).Read(fd, buf, len);
}
ssize_t ShimWritev(int fd, struct iovec* iov, int count, void* userdata) {
  return ShimOf(userdata).Writev(fd, iov, count);
}

}  // namespace

KernelRequestInfo InspectKernelRequest(std::span<const uint8_t> message) {
  KernelRequestInfo info;
  fuse_in_header header;
  if (!ReadStruct(message, 0, &header)) return info;
  info.opcode = header.opcode;
  info.unique = header.unique;
  const size_t args = sizeof(fuse_in_header);
  switch (header.opcode) {
    case FUSE_WRITE: {
      fuse_write_in in;
      if (ReadStruct(message, args, &in)) {
        info.kill_suidgid = in.write_flags & FUSE_WRITE_KILL_SUIDGID;
      }
      break;
    }
    case FUSE_OPEN: {
      fuse_open_in in;
      if (ReadStruct(message, args, &in)) {
        info.kill_suidgid = in.open_flags & FUSE_OPEN_KILL_SUIDGID;
      }
      break;
    }
    case FUSE_INIT: {
      // major, minor, max_readahead, flags: the first 16 bytes exist in every version.
      uint32_t words[4];
      if (ReadStruct(message, args, &words)) {
        info.offers_killpriv_v2 = words[3] & FUSE_HANDLE_KILLPRIV_V2;
      }
      break;
    }
    default:
      break;
  }
  return info;
}

bool AddInitReplyFlags(std::span<uint8_t> init_out, uint32_t flags) {
  constexpr size_t kFlagsAt = offsetof(fuse_init_out, flags);
  uint32_t word;
  if (init_out.size() < kFlagsAt + sizeof word) return false;
  std::memcpy(&word, init_out.data() + kFlagsAt, sizeof word);
  word |= flags;
  std::memcpy(init_out.data() + kFlagsAt, &word, sizeof word);
  return true;
}

uint32_t HandleKillprivV2Flag() { return FUSE_HANDLE_KILLPRIV_V2; }

mode_t KillSuidSgid(mode_t mode, bool outsider) {
  mode &= ~S_ISUID;
  if ((mode & S_IXGRP) || outsider) mode &= ~S_ISGID;
  return mode;
}

bool CurrentRequestKillsSuidSgid() { return t_kill_suidgid; }

Status KernelShim::Install(fuse_session* se, bool handle_killpriv_v2) {
  want_killpriv_v2_ = handle_killpriv_v2;
  fuse_custom_io io;
  std::memset(&io, 0, sizeof io);
  io.read = ShimRead;
  io.writev = ShimWritev;
  const int rc = fuse_session_custom_io(se, &io, fuse_session_fd(se));
  if (rc != 0) return Status::FromErrno(-rc, "fuse_session_custom_io");
  return Status::Ok();
}

ssize_t KernelShim::Read(int fd, void* buf, size_t len) {
  const ssize_t n = ::read(fd, buf, len);
  const int saved = errno;
  t_kill_suidgid = false;
  if (n > 0) {
    const KernelRequestInfo info =
        InspectKernelRequest(std::span<const uint8_t>(static_cast<const uint8_t*>(buf), n));
    t_kill_suidgid = info.kill_suidgid;
    if (info.opcode == FUSE_INIT) {
      init_unique_ = info.unique;
      init_offers_ = info.offers_killpriv_v2;
      init_pending_ = true;
    }
  }
  errno = saved;
  return n;
}

ssize_t KernelShim::Writev(int fd, struct iovec* iov, int count) {
  if (init_pending_.load(std::memory_order_relaxed) && count >= 2 &&
      iov[0].iov_len >= sizeof(fuse_out_header)) {
    fuse_out_header header;
    std::memcpy(&header, iov[0].iov_base, sizeof header);
    if (header.unique == init_unique_) {
      init_pending_ = false;
      if (header.error == 0 && want_killpriv_v2_ && init_offers_) {
        // libfuse's reply lives on its stack: patch a copy.
        std::vector<uint8_t> out(static_cast<const uint8_t*>(iov[1].iov_base),
                                 static_cast<const uint8_t*>(iov[1].iov_base) + iov[1].iov_len);
        if (AddInitReplyFlags(out, FUSE_HANDLE_KILLPRIV_V2)) {
          std::vector<struct iovec> patched(iov, iov + count);
          patched[1].iov_base = out.data();
          const ssize_t n = ::writev(fd, patched.data(), count);
          if (n >= 0) granted_ = true;
          return n;
        }
      }
    }
  }
  return ::writev(fd, iov, count);
}

}  // namespace imagefs::fs
