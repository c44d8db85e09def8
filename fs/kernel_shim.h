#pragma once

// KernelShim: a thin layer between libfuse 3.14 and /dev/fuse, for one kernel feature that
// libfuse 3.14 has no capability for: FUSE_HANDLE_KILLPRIV_V2 (docs/architecture.md,
// "The /dev/fuse shim").
//
// Why: without it the kernel sets no SB_NOSEC on the FUSE superblock, so every write(2)
// asks the daemon for the file's `security.capability` (file_remove_privs) — one GETXATTR
// round trip per write, the largest share of an untar's requests. With it the kernel
// marks an inode S_NOSEC after one check, and in exchange the daemon clears set-uid and
// set-gid itself when the kernel says so:
//   - WRITE:   FUSE_WRITE_KILL_SUIDGID in fuse_write_in.write_flags
//   - OPEN:    FUSE_OPEN_KILL_SUIDGID in fuse_open_in.open_flags (O_TRUNC)
//   - SETATTR: FATTR_KILL_SUIDGID in fuse_setattr_in.valid — libfuse 3.14 passes that bit
//              on as FUSE_SET_ATTR_KILL_SUID, so it needs no shim.
// libfuse 3.14 drops the first two, so the shim's read hook notes them for the worker
// thread that read the request (libfuse's loop processes a request on the thread that
// read it) and CurrentRequestKillsSuidSgid() tells the callback.
//
// How: fuse_session_custom_io on the session's own /dev/fuse fd, after fuse_session_mount
// and before the loop. The read hook looks at each request's header; the writev hook adds
// FUSE_HANDLE_KILLPRIV_V2 to the INIT reply when the kernel offered it. No splice (libfuse
// then uses plain read/writev, which imagefs did anyway: it has no write_buf).
//
// Thread safety: Install runs once per session, before the loop; the hooks run on
// libfuse's worker threads.

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <atomic>
#include <cstdint>
#include <span>
#include <string_view>

#include "util/status.h"

struct fuse_session;

namespace imagefs::fs {

// Debug: the number of GETXATTR requests the mount has served so far, as the root's
// extended attribute of this name (never listed; tests/e2e/upper_test checks that writes
// stop asking for security.capability).
inline constexpr std::string_view kGetxattrCountXattr = "user.imagefs.debug.getxattrs";

// What the shim reads out of one request from the kernel (a whole message: header and
// arguments). Pure, for tests.
struct KernelRequestInfo {
  uint32_t opcode = 0;
  uint64_t unique = 0;
  bool kill_suidgid = false;        // WRITE or OPEN asks the daemon to clear set-uid/gid
  bool offers_killpriv_v2 = false;  // INIT: the kernel offers FUSE_HANDLE_KILLPRIV_V2
};
KernelRequestInfo InspectKernelRequest(std::span<const uint8_t> message);

// Adds `flags` to the flags word of an INIT reply (fuse_init_out, the bytes after the
// fuse_out_header) in place. False when the payload is too short to hold it.
bool AddInitReplyFlags(std::span<uint8_t> init_out, uint32_t flags);

// The FUSE_HANDLE_KILLPRIV_V2 bit (include/uapi/linux/fuse.h).
uint32_t HandleKillprivV2Flag();

// set-uid and set-gid cleared as the kernel asks with the flags above, by the VFS's rule
// (setattr_should_drop_sgid): set-uid always; set-gid with group-execute, and without it
// (the bit then marks mandatory locking) only when the caller is outside the file's group
// and lacks CAP_FSETID (`outsider`; a WRITE, OPEN or truncate flag implies the latter).
mode_t KillSuidSgid(mode_t mode, bool outsider);

// True when the request this thread is serving (a WRITE or OPEN read through the shim)
// carries the kernel's kill-suid/sgid flag.
bool CurrentRequestKillsSuidSgid();

class KernelShim {
 public:
  // Wraps the mounted session's /dev/fuse reads and writes. With handle_killpriv_v2 the
  // INIT reply asks for FUSE_HANDLE_KILLPRIV_V2 when the kernel offers it. `se` must be
  // mounted and its loop not started; the shim must outlive the loop.
  Status Install(fuse_session* se, bool handle_killpriv_v2);

  // Whether the kernel was told (the INIT reply went out with the flag).
  bool killpriv_v2_granted() const { return granted_.load(); }

  // The hooks (fuse_custom_io), public for the C callbacks.
  ssize_t Read(int fd, void* buf, size_t len);
  ssize_t Writev(int fd, struct iovec* iov, int count);

 private:
  bool want_killpriv_v2_ = false;
  // INIT comes first and alone (the kernel sends nothing else before its reply): the read
  // hook notes it, the writev hook of its reply patches it; after that the hooks only
  // read init_pending_ (false).
  std::atomic<bool> init_pending_{false};
  std::atomic<uint64_t> init_unique_{0};
  std::atomic<bool> init_offers_{false};
  std::atomic<bool> granted_{false};
};

}  // namespace imagefs::fs
