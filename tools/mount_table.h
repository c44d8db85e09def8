#pragma once

// Live mounts, recorded under --root/mounts/<pid>.json by the process serving each one, so
// that `imagefs mounts` can list them and rmi/prune/df know which images are in use.
// A record is trusted only while its process lives and its mountpoint is still an imagefs
// mount; stale records (a killed server) are removed when read.

#include <string>
#include <sys/types.h>
#include <vector>

#include "util/status.h"

namespace imagefs::tools {

struct MountRecord {
  pid_t pid = 0;
  std::string image;            // as the user named it
  std::string manifest_digest;  // of the mounted image
  std::string mountpoint;       // absolute
  std::string upper;            // the writable upper dir ("" while mounts are read-only)
  int64_t started = 0;          // unix seconds
  uint64_t fetched_bytes = 0;   // read from the registry so far (refreshed while serving)
};

// Written atomically (temp file + rename).
Status RecordMount(const std::string& root, const MountRecord& record);
void ForgetMount(const std::string& root, pid_t pid);
// Live mounts, oldest first.
Result<std::vector<MountRecord>> LiveMounts(const std::string& root);

}  // namespace imagefs::tools
