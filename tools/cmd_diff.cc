// imagefs diff [--image IMAGE] [--platform P] TARGET [IMAGE2]: the changes of a container's
// filesystem as `docker diff` prints them ("A PATH", "C PATH", "D PATH", sorted by path).
//
//   TARGET a live imagefs mount   its upper dir against its image (a read-only mount has
//                                 no upper dir: nothing to print; an imagefs mount the
//                                 table does not list is refused)
//   TARGET a directory            an upper dir (kernel overlayfs markers) against --image,
//                                 else against the image named in <TARGET>.work/origin.json
//                                 ({"image": ..., "manifest_digest": ...}, written by mount)
//   TARGET a container            (imagefs run: a name, id or unique id prefix) its upper
//                                 dir against its image
//   TARGET IMAGE2                 the changes that turn image TARGET into image IMAGE2
//
// A container's upper dir (one beside a container.json) is diffed without the paths its
// runtime created (container.json's init_paths: mount points such as /proc,
// /etc/resolv.conf), as docker's init layer hides them.
// The rules are fs/changes.h's. Images are read without pulling them (tools/image_view.h);
// comparing two images fetches no file whose chunk digests already tell.

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "fs/changes.h"
#include "fs/session.h"
#include "tools/containers.h"
#include "tools/image_view.h"
#include "tools/mount_table.h"
#include "util/file.h"
#include "util/unique_fd.h"

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

struct Origin {
  std::string image;
  std::string manifest_digest;  // may be empty
};

// The image an upper dir was made over, from <upper>.work/origin.json.
Result<Origin> ReadOrigin(const std::string& upper) {
  std::string dir = upper;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string path = dir + ".work/origin.json";
  if (!PathExists(path)) {
    return Status::InvalidArgument("diff: cannot tell which image " + upper +
                                   " is an upper dir of (give --image IMAGE)");
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("image") || !json["image"].is_string() ||
      json["image"].get<std::string>().empty()) {
    return Status::Corruption("diff: " + path + ": no \"image\" string");
  }
  Origin out;
  out.image = json["image"].get<std::string>();
  if (json.contains("manifest_digest") && json["manifest_digest"].is_string()) {
    out.manifest_digest = json["manifest_digest"].get<std::string>();
  }
  return out;
}

Status Print(const std::vector<fs::Change>& changes) {
  const std::string out = fs::FormatChanges(changes);
  if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0) {
    return Status::FromErrno(errno, "writing to standard output");
  }
  return Status::Ok();
}

Status DiffImages(const GlobalOptions& global, const std::string& from, const std::string& to,
                  const std::string& platform) {
  ASSIGN_OR_RETURN(ImageView a, OpenImageView(global, from, platform));
  ASSIGN_OR_RETURN(ImageView b, OpenImageView(global, to, platform));
  ASSIGN_OR_RETURN(auto changes, fs::ComputeImageChanges(*a.view, *b.view));
  return Print(changes);
}

// upper: as the user (or the mount table) names it, for messages.
// The paths a container's runtime created (tools/containers.h's init_paths) when upper is
// a container's upper dir (<dir>/upper beside <dir>/container.json).
std::set<std::string> InitPaths(const std::string& upper) {
  std::set<std::string> out;
  std::string dir = upper;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.size() < 6 || dir.compare(dir.size() - 6, 6, "/upper") != 0) return out;
  dir.resize(dir.size() - 6);
  auto text = ReadFile(dir + "/container.json");
  if (!text.ok()) return out;
  const auto json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("init_paths") || !json["init_paths"].is_array()) {
    return out;
  }
  for (const auto& p : json["init_paths"]) {
    if (p.is_string()) out.insert(p.get<std::string>());
  }
  return out;
}

Status DiffUpper(const GlobalOptions& global, const std::string& upper, const Origin& origin,
                 const std::string& platform) {
  UniqueFd fd(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Status::FromErrno(errno, "diff: " + upper);
  ASSIGN_OR_RETURN(ImageView image, OpenImageView(global, origin.image, platform));
  if (!origin.manifest_digest.empty() &&
      image.opened.image.manifest.digest != origin.manifest_digest) {
    return Status::InvalidArgument("diff: " + upper + " was made over " + origin.image + "@" +
                                   origin.manifest_digest + ", but " + origin.image +
                                   " now names " + image.opened.image.manifest.digest +
                                   " (give --image IMAGE@DIGEST)");
  }
  fs::UpperOptions options;
  options.display_path = upper;
  options.ignore = InitPaths(upper);
  ASSIGN_OR_RETURN(auto changes, fs::ComputeUpperChanges(fd.get(), *image.view, options));
  return Print(changes);
}

}  // namespace

int RunDiff(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Show the changes of a container's filesystem, as docker diff: A (added),\n"
               "C (changed) and D (deleted) lines sorted by path. TARGET is a live imagefs\n"
               "mount, an upper dir (its image from --image or TARGET.work/origin.json), or,\n"
               "with IMAGE2, an image compared with IMAGE2.",
               "imagefs diff");
  std::string image, platform, target, image2;
  app.add_option("--image", image, "The image an upper dir was made over");
  app.add_option("--platform", platform, "os/arch[/variant] to pick from a multi-arch image");
  app.add_option("TARGET", target, "A mountpoint, an upper dir, or the first image")->required();
  app.add_option("IMAGE2", image2, "The second image (TARGET is then an image)");
  if (int rc = ParseCommandLine(app, "diff", args); rc >= 0) return rc;

  if (!image2.empty()) {
    if (!image.empty()) {
      return Fail(Status::InvalidArgument("diff: --image is for a mount or an upper dir, not "
                                          "for two images"));
    }
    Status st = DiffImages(global, target, image2, platform);
    return st.ok() ? 0 : Fail(st);
  }

  // A container by name or id (full or a unique prefix): its upper dir.
  if (target.find('/') == std::string::npos) {
    auto container = FindContainer(global.root, target);
    if (container.ok()) {
      Origin origin{image.empty() ? container->image : image,
                    image.empty() ? container->manifest_digest : ""};
      Status st = DiffUpper(global, container->upper, origin, platform);
      return st.ok() ? 0 : Fail(st);
    }
    if (!container.status().IsNotFound()) return Fail(container.status().WithContext("diff"));
  }

  // A live mount (checked before stat: a dead FUSE mountpoint cannot be stat'ed).
  const std::string abs = Absolute(target);
  auto mounts = LiveMounts(global.root);
  if (!mounts.ok()) return Fail(mounts.status());
  for (const MountRecord& m : *mounts) {
    if (m.mountpoint != abs) continue;
    if (m.upper.empty()) return 0;  // read-only: nothing can have changed
    Origin origin{image.empty() ? m.image : image, image.empty() ? m.manifest_digest : ""};
    Status st = DiffUpper(global, m.upper, origin, platform);
    return st.ok() ? 0 : Fail(st);
  }

  if (fs::IsImagefsMount(abs)) {  // its tree is not an upper dir: never walk it as one
    return Fail(Status::NotFound("diff: " + target + ": an imagefs mount that " + global.root +
                                 "/mounts does not list (give the --root it was mounted with)"));
  }
  struct stat st;
  if (::stat(target.c_str(), &st) != 0) return Fail(Status::FromErrno(errno, "diff: " + target));
  if (!S_ISDIR(st.st_mode)) return Fail(Status::FromErrno(ENOTDIR, "diff: " + target));
  Origin origin{image, ""};
  if (origin.image.empty()) {
    auto read = ReadOrigin(target);
    if (!read.ok()) return Fail(read.status());
    origin = *read;
  }
  Status diffed = DiffUpper(global, target, origin, platform);
  return diffed.ok() ? 0 : Fail(diffed);
}

}  // namespace imagefs::tools
