#pragma once

// Internal to fs/: the libfuse low-level operation table over a Filesystem. Only
// fs/session.cc, fs/fuse_ops.cc and fs/kernel_shim.cc include it (it pulls in libfuse's
// header).

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "fs/filesystem.h"

namespace imagefs::fs {

class KernelShim;

// Stateless directories (the kernel opens them without OPENDIR; fs/fuse_ops.cc
// ReadDirStateless): the snapshot one listing pass pages through. A pass starts at offset 0
// with a fresh snapshot; later READDIRs of the directory continue in it; it is let go at
// its end, or when pushed out by newer ones (kMax). A READDIR that finds none takes a new
// snapshot, which the name-hash offsets make safe. Thread-safe.
class DirListings {
 public:
  struct Listing {
    Listing(Filesystem& fs, Ino ino, std::unique_ptr<DirHandle> dir);
    ~Listing();  // hands the snapshot back (Filesystem::ReleaseDir)
    Listing(const Listing&) = delete;
    Listing& operator=(const Listing&) = delete;
    Filesystem& fs;
    const Ino ino;
    std::unique_ptr<DirHandle> dir;
    std::vector<std::pair<uint64_t, const DirHandle::Item*>> order;  // by offset cookie
  };
  static constexpr size_t kMax = 16;
  std::shared_ptr<Listing> Find(Ino ino);
  void Put(std::shared_ptr<Listing> listing);  // replaces the directory's older one
  void Drop(const Listing* listing);

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<Listing>> recent_;  // oldest first; guarded by mu_
};

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
  DirListings listings;               // their snapshots between READDIRs
  KernelShim* shim = nullptr;   // the /dev/fuse hooks (fs/kernel_shim.h); their userdata
  fuse_session* session = nullptr;  // for notifications from a callback
  std::atomic<uint64_t> getxattrs{0};  // GETXATTR requests served (kGetxattrCountXattr)
};

// The one place the operation table is filled.
fuse_lowlevel_ops MakeFuseOps();

}  // namespace imagefs::fs
