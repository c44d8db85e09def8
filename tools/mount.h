#pragma once

// Starting an imagefs mount, shared by `imagefs mount` (tools/cmd_mount.cc) and
// `imagefs run` (tools/cmd_run.cc).

#include <sys/types.h>

#include <string>
#include <vector>

#include "tools/command.h"
#include "tools/image_view.h"

namespace imagefs::tools {

struct MountRequest {
  std::string image;
  std::string mountpoint;  // absolute
  std::string upper;       // absolute; "" for a read-only mount
  std::string platform;
  bool debug = false;
  bool new_upper = false;  // the upper dir was made for this mount: print it
  PullPolicy pull = PullPolicy::kMissing;
  std::string prefetch = "auto";  // auto | none | all
  std::string record_profile;     // absolute; "" for none
  // Set by imagefs run: the container's command line as given (empty: the image's Cmd)
  // and its -e variables, so that `--prefetch auto` on an image without a prefetch set
  // fetches what the command needs to start (store/startup_prefetch.h).
  bool run = false;
  std::vector<std::string> run_command;
  std::vector<std::string> run_env;
};

// Forks the serving daemon (its own session, logging to --root/logs/mount-<pid>.log),
// which opens the image and mounts it; returns the daemon's pid (a child of the caller)
// once a stat of the mountpoint is answered by the new mount. On failure nothing is left
// mounted and the daemon's one-line reason is the status.
Result<pid_t> StartMount(const GlobalOptions& global, const MountRequest& req);

// 64 random hex digits, as a docker container id.
Result<std::string> NewContainerId();

// An absolute form of path without touching the filesystem beyond realpath/getcwd (a dead
// FUSE mountpoint cannot be stat'ed).
std::string AbsolutePath(const std::string& path);

}  // namespace imagefs::tools
