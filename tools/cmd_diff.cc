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

#include "fs/changes.h"
#include "tools/image_view.h"
#include "tools/upper_target.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::tools {
namespace {

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

// Prints the changes of target's upper dir against its base image.
Status DiffUpper(const GlobalOptions& global, const UpperTarget& target,
                 const std::string& platform) {
  if (target.upper.empty()) return Status::Ok();  // read-only mount: nothing can have changed
  UniqueFd fd(::open(target.upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Status::FromErrno(errno, "diff: " + target.upper);
  ASSIGN_OR_RETURN(ImageView image, OpenUpperBase(global, "diff", target, platform));
  fs::UpperOptions options;
  options.display_path = target.upper;
  options.ignore = target.ignore;
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

  auto resolved = ResolveUpperTarget(global, "diff", target, image);
  if (!resolved.ok()) return Fail(resolved.status());
  Status diffed = DiffUpper(global, *resolved, platform);
  return diffed.ok() ? 0 : Fail(diffed);
}

}  // namespace imagefs::tools
