#include "tools/containers.h"

#include <dirent.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "util/file.h"

namespace imagefs::tools {

std::string ContainersDir(const std::string& root) { return root + "/containers"; }

std::string ContainerDir(const std::string& root, const std::string& id) {
  return ContainersDir(root) + "/" + id;
}

Status WriteContainer(const std::string& root, const ContainerRecord& r) {
  nlohmann::ordered_json j;
  j["id"] = r.id;
  j["name"] = r.name;
  j["image"] = r.image;
  j["manifest_digest"] = r.manifest_digest;
  j["created"] = r.created;
  j["args"] = r.args;
  j["status"] = r.status;
  j["exit_code"] = r.exit_code;
  j["started"] = r.started;
  j["finished"] = r.finished;
  j["monitor_pid"] = r.monitor_pid;
  j["runtime"] = r.runtime;
  j["upper"] = r.upper;
  j["mountpoint"] = r.mountpoint;
  j["init_paths"] = r.init_paths;
  return WriteFileAtomic(ContainerDir(root, r.id) + "/container.json", j.dump(2) + "\n");
}

Result<ContainerRecord> ReadContainer(const std::string& root, const std::string& id) {
  const std::string path = ContainerDir(root, id) + "/container.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Corruption(path + ": not a JSON object");
  ContainerRecord r;
  try {
    r.id = j.value("id", id);
    r.name = j.value("name", "");
    r.image = j.value("image", "");
    r.manifest_digest = j.value("manifest_digest", "");
    r.created = j.value("created", int64_t{0});
    r.args = j.value("args", std::vector<std::string>{});
    r.status = j.value("status", "created");
    r.exit_code = j.value("exit_code", 0);
    r.started = j.value("started", int64_t{0});
    r.finished = j.value("finished", int64_t{0});
    r.monitor_pid = j.value("monitor_pid", 0);
    r.runtime = j.value("runtime", "");
    r.upper = j.value("upper", "");
    r.mountpoint = j.value("mountpoint", "");
    r.init_paths = j.value("init_paths", std::vector<std::string>{});
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(path + ": " + e.what());
  }
  return r;
}

std::vector<ContainerRecord> ListContainers(const std::string& root) {
  std::vector<ContainerRecord> out;
  DIR* d = ::opendir(ContainersDir(root).c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() != 64) continue;
    auto r = ReadContainer(root, name);
    if (r.ok()) out.push_back(std::move(*r));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const ContainerRecord& a, const ContainerRecord& b) {
    return a.created != b.created ? a.created > b.created : a.id < b.id;
  });
  return out;
}

Result<ContainerRecord> FindContainer(const std::string& root, const std::string& name_or_id) {
  if (name_or_id.empty()) return Status::NotFound("No such container: ");
  std::string name = name_or_id;
  if (name[0] == '/') name = name.substr(1);
  const std::vector<ContainerRecord> all = ListContainers(root);
  for (const ContainerRecord& r : all) {
    if (r.id == name || r.name == name) return r;
  }
  const ContainerRecord* match = nullptr;
  for (const ContainerRecord& r : all) {
    if (r.id.rfind(name, 0) != 0) continue;
    if (match != nullptr) {
      return Status::InvalidArgument("multiple IDs found with provided prefix: " + name);
    }
    match = &r;
  }
  if (match == nullptr) return Status::NotFound("No such container: " + name_or_id);
  return *match;
}

bool ContainerRunning(const ContainerRecord& r) {
  if (r.status != "running" && r.status != "created") return false;
  if (r.monitor_pid <= 0) return false;
  if (::kill(r.monitor_pid, 0) != 0 && errno != EPERM) return false;
  // A zombie (killed, not yet reaped by whoever inherited it) is not running.
  auto stat = ReadFile("/proc/" + std::to_string(r.monitor_pid) + "/stat");
  if (!stat.ok()) return true;
  const size_t paren = stat->rfind(')');
  return paren == std::string::npos || paren + 2 >= stat->size() || (*stat)[paren + 2] != 'Z';
}

std::string ContainerCommand(const ContainerRecord& r) {
  std::string out;
  for (const std::string& a : r.args) {
    if (!out.empty()) out += ' ';
    out += a;
  }
  return out;
}

}  // namespace imagefs::tools
