#pragma once

// Containers made by `imagefs run`: one directory per container under
// --root/containers/<64 hex id>/ holding container.json (this record), upper/ and
// upper.work/ (the writable layer), rootfs/ (the mountpoint), config.json (the OCI bundle)
// and the files bind-mounted at /etc/resolv.conf, /etc/hosts and /etc/hostname.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace imagefs::tools {

struct ContainerRecord {
  std::string id;    // 64 hex
  std::string name;  // unique among the containers
  std::string image;
  std::string manifest_digest;
  int64_t created = 0;  // unix seconds
  std::vector<std::string> args;  // the process's argv
  std::string status = "created";  // created | running | exited
  int exit_code = 0;
  int64_t started = 0;
  int64_t finished = 0;
  pid_t monitor_pid = 0;  // the imagefs process waiting for the container
  std::string runtime;    // "runc" or "chroot"
  std::string upper;      // absolute
  std::string mountpoint; // absolute (the bundle's rootfs)
  // Paths imagefs created in the rootfs for the runtime (mount points), hidden from diff.
  std::vector<std::string> init_paths;
};

std::string ContainersDir(const std::string& root);
std::string ContainerDir(const std::string& root, const std::string& id);
Status WriteContainer(const std::string& root, const ContainerRecord& record);
Result<ContainerRecord> ReadContainer(const std::string& root, const std::string& id);
// Every readable container record, newest first.
std::vector<ContainerRecord> ListContainers(const std::string& root);
// A container by name, full id or unique id prefix; kNotFound when none matches.
Result<ContainerRecord> FindContainer(const std::string& root, const std::string& name_or_id);
// The status as ps shows it: a "running" record whose monitor is gone counts as exited.
bool ContainerRunning(const ContainerRecord& record);
// docker's COMMAND column text before truncation: the argv joined by spaces.
std::string ContainerCommand(const ContainerRecord& record);

}  // namespace imagefs::tools
