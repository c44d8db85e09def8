// imagefs commit [-a AUTHOR] [-m MESSAGE] [-c INSTR]... [--format zstd-chunked|estargz]
// [--image IMAGE] [--platform P] TARGET DEST: a container's changes as a new image, as
// docker commit. TARGET is a live imagefs mount or an upper dir (tools/upper_target.h).
//
//   layer     the upper dir's changes (fs/changes.h ComputeUpperChanges) written as one tar
//             (WriteChangesTar), then as a seekable layer (--format, default zstd:chunked).
//             No changes: no layer, a history entry with empty_layer.
//   config    the base config with the new diff_id, `created` now, `author` (-a), a history
//             entry {created, author, created_by "imagefs commit", comment (-m)}, and the
//             -c instructions (CMD ENTRYPOINT ENV EXPOSE LABEL USER VOLUME WORKDIR) applied.
//   manifest  the base's family (OCI or Docker schema 2); base layers keep their
//             descriptors and are copied from the base image's source when DEST lacks them;
//             the new layer, then the config, then the manifest (last) are put to DEST.
// Prints the manifest digest. The upper dir is read while the mount runs (see
// docs/architecture.md, "commit": writes racing with the commit may or may not be in it).

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "fetch/image_dest.h"
#include "fs/changes.h"
#include "tools/command.h"
#include "tools/config_change.h"
#include "tools/image_write.h"
#include "tools/upper_target.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::tools {

using OrderedJson = nlohmann::ordered_json;

int RunCommit(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app(
      "Create a new image from a container's changes, as docker commit: the upper dir of a\n"
      "live writable mount (or an upper dir, its image from --image or TARGET.work/\n"
      "origin.json) becomes one seekable layer over the base image's layers. DEST is\n"
      "docker://REF (default), oci:DIR[:TAG] or docker-archive:FILE[:REF]. Prints the new\n"
      "manifest's digest.",
      "imagefs commit");
  std::string author, message, format = "zstd-chunked", image, platform, target, dst;
  std::vector<std::string> changes_text;
  app.add_option("-a,--author", author, "Author (e.g. \"Jane <jane@example.com>\")");
  app.add_option("-m,--message", message, "Commit message (the history entry's comment)");
  app.add_option("-c,--change", changes_text,
                 "Dockerfile instruction to apply: CMD ENTRYPOINT ENV EXPOSE LABEL USER "
                 "VOLUME WORKDIR");
  app.add_option("--format", format, "Layer format: zstd-chunked (default) or estargz");
  app.add_option("--image", image, "The image an upper dir was made over");
  app.add_option("--platform", platform, "os/arch[/variant] to pick from a multi-arch image");
  app.add_option("TARGET", target, "A writable imagefs mountpoint or an upper dir")->required();
  app.add_option("DEST", dst, "Where to write the new image")->required();
  if (int rc = ParseCommandLine(app, "commit", args); rc >= 0) return rc;

  auto seekable = ParseSeekableFormat(format);
  if (!seekable.ok()) return Fail(seekable.status());
  auto dst_ref = fetch::ParseImageRef(dst);
  if (!dst_ref.ok()) return Fail(dst_ref.status());

  auto resolved = ResolveUpperTarget(global, "commit", target, image);
  if (!resolved.ok()) return Fail(resolved.status());
  auto base = OpenUpperBase(global, "commit", *resolved, platform);
  if (!base.ok()) return Fail(base.status());
  const fetch::ResolvedImage& base_image = base->opened.image;

  // The config first: a bad --change fails before any work.
  OrderedJson config = OrderedJson::parse(base_image.config_bytes, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return Fail(Status::Corruption(resolved->image + ": the config is not a JSON object"));
  }
  for (const std::string& c : changes_text) {
    if (Status st = ApplyChange(config, c); !st.ok()) return Fail(st);
  }

  // A live mount: syncfs flushes what the kernel still holds for it (mmap'ed writes) to
  // the daemon, so everything written before commit started is in the upper dir.
  if (!resolved->mountpoint.empty()) {
    UniqueFd m(::open(resolved->mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (m.get() >= 0) (void)::syncfs(m.get());
  }
  std::vector<fs::Change> changes;
  UniqueFd upper_fd;
  if (!resolved->upper.empty()) {
    upper_fd = UniqueFd(::open(resolved->upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (upper_fd.get() < 0) return Fail(Status::FromErrno(errno, "commit: " + resolved->upper));
    fs::UpperOptions options;
    options.display_path = resolved->upper;
    options.ignore = resolved->ignore;  // a container's runtime mount points
    auto computed = fs::ComputeUpperChanges(upper_fd.get(), *base->view, options);
    if (!computed.ok()) return Fail(computed.status());
    changes = std::move(*computed);
  }

  auto scratch_dir = ScratchDir::Make(global, "commit-");
  if (!scratch_dir.ok()) return Fail(scratch_dir.status());
  const std::string* scratch = &(*scratch_dir)->path();

  // The new layer, written locally before DEST is touched (a socket refuses here).
  std::optional<LayerFile> layer;
  const std::string layer_path = *scratch + "/layer";
  if (!changes.empty()) {
    const std::string tar_path = *scratch + "/layer.tar";
    {
      UniqueFd tar(::open(tar_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (tar.get() < 0) return Fail(Status::FromErrno(errno, "creating " + tar_path));
      fs::UpperOptions options;
      options.display_path = resolved->upper;
      options.ignore = resolved->ignore;
      Status st = fs::WriteChangesTar(upper_fd.get(), changes, tar.get(), options);
      if (!st.ok()) return Fail(st.WithContext("commit"));
    }
    auto written = WriteLayerFile(*seekable, tar_path, layer_path, index::LayerWriteOptions{});
    if (!written.ok()) return Fail(written.status().WithContext("commit"));
    (void)RemoveAll(tar_path);
    layer = std::move(*written);
  }

  const bool docker_family = base_image.manifest.media_type == fetch::kDockerManifest;
  if (layer && docker_family && layer->desc.media_type == fetch::kOciLayerGzip) {
    layer->desc.media_type = std::string(fetch::kDockerLayerGzip);
  }

  const std::string created = NowRfc3339();
  config["created"] = created;
  if (!author.empty()) config["author"] = author;
  config["rootfs"]["type"] = "layers";
  if (!config["rootfs"].contains("diff_ids") || !config["rootfs"]["diff_ids"].is_array()) {
    config["rootfs"]["diff_ids"] = OrderedJson::array();
  }
  if (layer) config["rootfs"]["diff_ids"].push_back(layer->diff_id);
  OrderedJson entry;
  entry["created"] = created;
  if (!author.empty()) entry["author"] = author;
  std::string created_by = "imagefs commit";
  for (const std::string& c : changes_text) created_by += " --change '" + c + "'";
  entry["created_by"] = created_by;
  if (!message.empty()) entry["comment"] = message;
  if (!layer) entry["empty_layer"] = true;
  if (!config.contains("history") || !config["history"].is_array()) {
    config["history"] = OrderedJson::array();
  }
  config["history"].push_back(entry);

  // DEST: base layers, the new layer, the config, the manifest (last).
  auto dest = fetch::OpenImageDestination(*dst_ref, base->opened.options);
  if (!dest.ok()) return Fail(dest.status());
  // A pulled base is read from the store without a source: base layers then come from
  // where the image's name points (the registry).
  std::optional<OpenedImage> remote;
  fetch::ImageSource* source = base->opened.source.get();
  if (source == nullptr) {
    auto opened = OpenImage(global, resolved->image, platform);
    if (!opened.ok()) return Fail(opened.status());
    remote = std::move(*opened);
    source = remote->source.get();
  }
  std::vector<fetch::Descriptor> layers = base_image.parsed.layers;
  for (const fetch::Descriptor& d : base_image.parsed.layers) {
    auto put = fetch::CopyBlob(*source, d, **dest, *scratch);
    if (!put.ok()) return Fail(put.status());
  }
  if (layer) {
    if (Status st = PutBlobIfMissing(**dest, layer->desc, layer_path); !st.ok()) return Fail(st);
    layers.push_back(layer->desc);
  }
  auto digest = PutConfigAndManifest(**dest, *scratch, config.dump(), layers,
                                     docker_family ? ManifestFamily::kDocker : ManifestFamily::kOci);
  if (!digest.ok()) return Fail(digest.status());
  NoteUnseekableDestination(*dst_ref, dst);
  std::printf("%s\n", digest->c_str());
  return 0;
}

}  // namespace imagefs::tools
