#pragma once

// Internal to fs/: the libfuse low-level operation table over a Filesystem. Only
// fs/session.cc and fs/fuse_ops.cc include it (it pulls in libfuse's header).

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "fs/filesystem.h"

namespace imagefs::fs {

// What every callback finds in fuse_req_userdata().
struct FuseContext {
  Filesystem* filesystem = nullptr;
  double entry_timeout_sec = 0;
  double attr_timeout_sec = 0;
  unsigned max_read = 0;
  bool writeback_cache = true;  // ask for the write-back cache on writable mounts
  bool writeback = false;       // the kernel granted it (set in init, before any open)
};

// The one place the operation table is filled.
fuse_lowlevel_ops MakeFuseOps();

}  // namespace imagefs::fs
