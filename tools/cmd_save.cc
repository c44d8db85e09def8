// imagefs save [-o FILE] IMAGE...: stored images written into one docker-archive, as docker
// save. Each IMAGE is a name, an image ID or a digest of a stored (pulled, loaded, imported)
// image; names given for the same image share its manifest.json entry (RepoTags, docker's
// familiar form "busybox:latest"), an image given by ID gets no RepoTags. Layers are
// written as plain tars named by diff_id (fetch/image_dest.h DockerArchiveWriter), once
// however many images share them. -o FILE is written to a hidden temp file beside FILE and
// renamed over it at the end; without -o the archive goes to stdout (refused on a terminal,
// as docker does), spooled under --root/tmp first so a failure writes nothing.

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>

#include "fetch/image_dest.h"
#include "store/blob_store.h"
#include "store/metadata_store.h"
#include "tools/command.h"
#include "tools/image_write.h"
#include "tools/input_file.h"
#include "tools/local_images.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::tools {
namespace {

struct SavedImage {
  fetch::ResolvedImage image;
  std::vector<std::string> repo_tags;
};

// Copies the file at path to stdout.
Status CopyToStdout(const std::string& path) {
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return Status::FromErrno(errno, "opening " + path);
  std::vector<char> buf(1 << 20);
  while (true) {
    ASSIGN_OR_RETURN(size_t n, ReadSome(in.get(), buf.data(), buf.size(), path));
    if (n == 0) return Status::Ok();
    RETURN_IF_ERROR(WriteAll(STDOUT_FILENO, std::string_view(buf.data(), n), "standard output"));
  }
}

Status Save(const GlobalOptions& global, const std::vector<std::string>& names,
            const std::string& out_path, const std::string& scratch) {
  ASSIGN_OR_RETURN(auto meta, store::MetadataStore::Open(global.root));
  ASSIGN_OR_RETURN(auto blobs, store::BlobStore::Open(global.root));
  // Images in the order first named; several names of one image share its entry.
  std::vector<SavedImage> images;
  std::map<std::string, size_t> by_manifest;
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(LocalImage local, FindLocalImage(*meta, name));
    const std::string& manifest_digest = local.manifest_digests.front();
    auto [it, added] = by_manifest.emplace(manifest_digest, images.size());
    if (added) {
      ASSIGN_OR_RETURN(auto image, ReadStoredImage(*blobs, manifest_digest));
      if (!image) {
        return Status::NotFound(name + " is not stored whole under " + global.root +
                                " (imagefs pull " + name + " first)");
      }
      images.push_back({std::move(*image), {}});
    }
    if (local.by_name && !local.name.tag.empty()) {
      std::string tag = FamiliarName(local.name);
      auto& tags = images[it->second].repo_tags;
      if (std::find(tags.begin(), tags.end(), tag) == tags.end()) tags.push_back(tag);
    }
  }
  ASSIGN_OR_RETURN(auto writer, fetch::OpenDockerArchiveWriter(out_path));
  for (const SavedImage& saved : images) {
    const fetch::ResolvedImage& image = saved.image;
    for (const fetch::Descriptor& layer : image.parsed.layers) {
      ASSIGN_OR_RETURN(Digest digest, Digest::Parse(layer.digest));
      RETURN_IF_ERROR(PutBlobIfMissing(*writer, layer, blobs->PathOf(digest)));
    }
    const std::string config_path = scratch + "/config";
    RETURN_IF_ERROR(WriteFileAtomic(config_path, image.config_bytes));
    RETURN_IF_ERROR(PutBlobIfMissing(*writer, image.parsed.config, config_path));
    RETURN_IF_ERROR(writer->AddImage(image.manifest, saved.repo_tags));
  }
  return writer->Commit();
}

}  // namespace

int RunSave(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Save stored images to a tar archive (a docker-archive, as docker save writes;\n"
               "streamed to standard output by default). Layers are plain tars, stored once\n"
               "however many images share them.",
               "imagefs save");
  std::string output;
  std::vector<std::string> names;
  app.add_option("-o,--output", output, "Write to a file instead of standard output");
  app.add_option("IMAGE", names, "Images to save: names, image IDs or digests")->required();
  if (int rc = ParseCommandLine(app, "save", args); rc >= 0) return rc;

  if (output.empty() && ::isatty(STDOUT_FILENO)) {
    return Fail(Status::InvalidArgument(
        "save: cowardly refusing to write an archive to a terminal: use -o FILE or redirect "
        "standard output"));
  }
  auto scratch_dir = ScratchDir::Make(global, "save-");
  if (!scratch_dir.ok()) return Fail(scratch_dir.status());
  const std::string* scratch = &(*scratch_dir)->path();
  const std::string path = output.empty() ? *scratch + "/archive.tar" : output;
  if (Status st = Save(global, names, path, *scratch); !st.ok()) return Fail(st.WithContext("save"));
  if (output.empty()) {
    if (Status st = CopyToStdout(path); !st.ok()) return Fail(st.WithContext("save"));
  }
  return 0;
}

}  // namespace imagefs::tools
