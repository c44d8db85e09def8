#include "tools/upper_target.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "fs/session.h"
#include "tools/containers.h"
#include "tools/mount.h"
#include "tools/mount_table.h"
#include "util/file.h"

namespace imagefs::tools {
namespace {

// The image an upper dir was made over, from <upper>.work/origin.json.
Result<UpperTarget> ReadOrigin(const std::string& command, const std::string& upper) {
  std::string dir = upper;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string path = dir + ".work/origin.json";
  if (!PathExists(path)) {
    return Status::InvalidArgument(command + ": cannot tell which image " + upper +
                                   " is an upper dir of (give --image IMAGE)");
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("image") || !json["image"].is_string() ||
      json["image"].get<std::string>().empty()) {
    return Status::Corruption(command + ": " + path + ": no \"image\" string");
  }
  UpperTarget out;
  out.upper = upper;
  out.image = json["image"].get<std::string>();
  if (json.contains("manifest_digest") && json["manifest_digest"].is_string()) {
    out.manifest_digest = json["manifest_digest"].get<std::string>();
  }
  return out;
}

// The init paths of a container whose upper dir is `upper` (<dir>/upper beside
// <dir>/container.json); empty for any other upper dir.
std::set<std::string> InitPathsBeside(const std::string& upper) {
  std::string dir = upper;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.size() < 6 || dir.compare(dir.size() - 6, 6, "/upper") != 0) return {};
  dir.resize(dir.size() - 6);
  auto text = ReadFile(dir + "/container.json");
  if (!text.ok()) return {};
  const auto json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  std::set<std::string> out;
  if (!json.is_object() || !json.contains("init_paths") || !json["init_paths"].is_array()) {
    return out;
  }
  for (const auto& p : json["init_paths"]) {
    if (p.is_string()) out.insert(p.get<std::string>());
  }
  return out;
}

Result<UpperTarget> Resolve(const GlobalOptions& global, const std::string& command,
                            const std::string& target, const std::string& image_flag) {
  // A container by name or id (full or a unique prefix).
  if (target.find('/') == std::string::npos) {
    auto container = FindContainer(global.root, target);
    if (container.ok()) {
      UpperTarget out;
      out.upper = container->upper;
      out.image = image_flag.empty() ? container->image : image_flag;
      out.manifest_digest = image_flag.empty() ? container->manifest_digest : "";
      out.ignore.insert(container->init_paths.begin(), container->init_paths.end());
      return out;
    }
    if (!container.status().IsNotFound()) return container.status().WithContext(command);
  }
  // A live mount (checked before stat: a dead FUSE mountpoint cannot be stat'ed).
  const std::string abs = AbsolutePath(target);
  ASSIGN_OR_RETURN(auto mounts, LiveMounts(global.root));
  for (const MountRecord& m : mounts) {
    if (m.mountpoint != abs) continue;
    UpperTarget out;
    out.upper = m.upper;
    out.image = image_flag.empty() ? m.image : image_flag;
    out.manifest_digest = image_flag.empty() ? m.manifest_digest : "";
    out.mountpoint = m.mountpoint;
    return out;
  }
  if (fs::IsImagefsMount(abs)) {  // its tree is not an upper dir: never walk it as one
    return Status::NotFound(command + ": " + target + ": an imagefs mount that " + global.root +
                            "/mounts does not list (give the --root it was mounted with)");
  }
  struct stat st;
  if (::stat(target.c_str(), &st) != 0) return Status::FromErrno(errno, command + ": " + target);
  if (!S_ISDIR(st.st_mode)) return Status::FromErrno(ENOTDIR, command + ": " + target);
  if (!image_flag.empty()) return UpperTarget{target, image_flag, "", "", {}};
  return ReadOrigin(command, target);
}

}  // namespace

Result<UpperTarget> ResolveUpperTarget(const GlobalOptions& global, const std::string& command,
                                       const std::string& target, const std::string& image_flag) {
  ASSIGN_OR_RETURN(UpperTarget out, Resolve(global, command, target, image_flag));
  if (out.ignore.empty() && !out.upper.empty()) out.ignore = InitPathsBeside(out.upper);
  return out;
}

Result<ImageView> OpenUpperBase(const GlobalOptions& global, const std::string& command,
                                const UpperTarget& target, const std::string& platform) {
  ASSIGN_OR_RETURN(ImageView image, OpenImageView(global, target.image, platform));
  if (!target.manifest_digest.empty() &&
      image.opened.image.manifest.digest != target.manifest_digest) {
    return Status::InvalidArgument(
        command + ": " + (target.upper.empty() ? target.image : target.upper) + " was made over " +
        target.image + "@" + target.manifest_digest + ", but " + target.image + " now names " +
        image.opened.image.manifest.digest + " (give --image IMAGE@DIGEST)");
  }
  return image;
}

}  // namespace imagefs::tools
