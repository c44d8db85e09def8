#include "tools/mount_table.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "fs/session.h"
#include "util/file.h"

namespace imagefs::tools {
namespace {

std::string PathOf(const std::string& root, pid_t pid) {
  return root + "/mounts/" + std::to_string(pid) + ".json";
}

bool Alive(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace

Status RecordMount(const std::string& root, const MountRecord& r) {
  RETURN_IF_ERROR(MakeDirs(root + "/mounts", 0700));
  nlohmann::ordered_json j;
  j["pid"] = r.pid;
  j["image"] = r.image;
  j["manifest_digest"] = r.manifest_digest;
  j["mountpoint"] = r.mountpoint;
  j["upper"] = r.upper;
  j["started"] = r.started;
  j["fetched_bytes"] = r.fetched_bytes;
  return WriteFileAtomic(PathOf(root, r.pid), j.dump() + "\n");
}

void ForgetMount(const std::string& root, pid_t pid) { (void)RemoveAll(PathOf(root, pid)); }

Result<std::vector<MountRecord>> LiveMounts(const std::string& root) {
  std::vector<MountRecord> out;
  std::error_code ec;
  const std::string dir = root + "/mounts";
  if (!std::filesystem::is_directory(dir, ec)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string path = e.path().string();
    if (!path.ends_with(".json")) continue;
    auto text = ReadFile(path);
    if (!text.ok()) continue;
    nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
    MountRecord r;
    if (j.is_object() && j["pid"].is_number_integer() && j["mountpoint"].is_string() &&
        j["image"].is_string() && j["manifest_digest"].is_string()) {
      r.pid = j["pid"].get<pid_t>();
      r.image = j["image"].get<std::string>();
      r.manifest_digest = j["manifest_digest"].get<std::string>();
      r.mountpoint = j["mountpoint"].get<std::string>();
      if (j["upper"].is_string()) r.upper = j["upper"].get<std::string>();
      if (j["started"].is_number_integer()) r.started = j["started"].get<int64_t>();
      if (j["fetched_bytes"].is_number_unsigned()) r.fetched_bytes = j["fetched_bytes"].get<uint64_t>();
    }
    if (!Alive(r.pid) || !fs::IsImagefsMount(r.mountpoint)) {
      (void)RemoveAll(path);  // the server is gone or no longer serves there
      continue;
    }
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const MountRecord& a, const MountRecord& b) {
    return a.started != b.started ? a.started < b.started : a.pid < b.pid;
  });
  return out;
}

}  // namespace imagefs::tools
