#include "tools/upper_target.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "fs/session.h"
#include "tools/mount_table.h"
#include "util/file.h"

namespace imagefs::tools {
namespace {

// The absolute, resolved form of path (as the mount table records mountpoints), or path
// made absolute when it cannot be resolved.
std::string Absolute(const std::string& path) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) != nullptr) return resolved;
  if (!path.empty() && path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

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

}  // namespace

Result<UpperTarget> ResolveUpperTarget(const GlobalOptions& global, const std::string& command,
                                       const std::string& target, const std::string& image_flag) {
  // A live mount (checked before stat: a dead FUSE mountpoint cannot be stat'ed).
  const std::string abs = Absolute(target);
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
  if (!image_flag.empty()) return UpperTarget{target, image_flag, "", ""};
  return ReadOrigin(command, target);
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
