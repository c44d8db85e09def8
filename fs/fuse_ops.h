#pragma once

// Internal to fs/: the libfuse low-level operation table over a Filesystem. Only
// fs/session.cc, fs/fuse_ops.cc and fs/kernel_shim.cc include it (it pulls in libfuse's
// header).

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>

#include "fs/filesystem.h"

namespace imagefs::fs {

class KernelShim;

// What every callback finds in fuse_req_userdata().
struct FuseContext {
  Filesystem* filesystem = nullptr;
  double entry_timeout_sec = 0;
  double attr_timeout_sec = 0;
  unsigned max_read = 0;
  bool writeback_cache = true;  // ask for the write-back cache on writable mounts
  bool writeback = false;       // the kernel granted it (set in init, before any open)
  bool stateless_dirs_wanted = true;  // FUSE_NO_OPENDIR_SUPPORT when the kernel has it
  bool stateless_dirs = false;        // in use (set in init)
  KernelShim* shim = nullptr;   // the /dev/fuse hooks (fs/kernel_shim.h); their userdata
  fuse_session* session = nullptr;  // for notifications from a callback
  std::atomic<uint64_t> getxattrs{0};  // GETXATTR requests served (kGetxattrCountXattr)
};

// The one place the operation table is filled.
fuse_lowlevel_ops MakeFuseOps();

}  // namespace imagefs::fs
