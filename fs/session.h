#pragma once

// Session: a Filesystem mounted through libfuse's low-level API and served by its
// multi-threaded loop. This header includes no libfuse header.
//
//   auto session = fs::Session::Mount(filesystem, options);   // the kernel mount exists
//   ... tell whoever waits that the mount is there ...
//   Status st = (*session)->Run();   // until unmounted (umount, fusermount3 -u) or a signal
//   session.reset();                 // unmounts if still mounted
//
// Signals: Run() installs libfuse's handlers for SIGINT, SIGTERM and SIGHUP (they end the
// loop) and removes them when it returns; the destructor then unmounts cleanly.
// Thread safety: one thread calls Mount, Run and the destructor.

#include <memory>
#include <string>

#include "fs/filesystem.h"
#include "util/status.h"

struct fuse_session;

namespace imagefs::fs {

struct SessionOptions {
  std::string mountpoint;
  std::string fsname = "imagefs";  // the mount's source in /proc/mounts
  std::string subtype;             // "fuse.<subtype>" in /proc/mounts: the image name
  // allow_other + default_permissions: every user sees the mount, the kernel checks
  // permissions from the image's modes. On by default when running as root.
  bool allow_other = false;
  bool read_only = true;
  // The lower tree is immutable, so the kernel may cache entries and attributes long.
  double entry_timeout_sec = 86400;
  double attr_timeout_sec = 86400;
  unsigned max_read = 1 << 20;  // bytes per FUSE read request
  unsigned max_threads = 16;
  // Writable mounts: the kernel's write-back cache (fs/fuse_ops.cc OnInit says what it
  // changes).
  bool writeback_cache = true;
  bool debug = false;  // libfuse's request trace, to the log
};

class Session {
 public:
  // Mounts `filesystem` (borrowed; it must outlive the Session) at options.mountpoint.
  // Fails with one line naming the mountpoint when it is missing, no directory, or the
  // kernel refuses; nothing is mounted then.
  static Result<std::unique_ptr<Session>> Mount(Filesystem& filesystem,
                                                const SessionOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Serves requests until the filesystem is unmounted or a signal ends the loop.
  Status Run();

 private:
  Session() = default;

  struct Context;
  std::unique_ptr<Context> context_;
  fuse_session* session_ = nullptr;
  bool mounted_ = false;
  SessionOptions options_;
};

// True when /proc/self/mountinfo lists an imagefs FUSE mount (source "imagefs", type
// fuse or fuse.*) at `mountpoint` (an absolute path, as mountinfo shows it).
bool IsImagefsMount(const std::string& mountpoint);

// The errno a FUSE reply carries for a failed call: Status::ToErrno(), never 0.
int ReplyErrno(const Status& status);

}  // namespace imagefs::fs
