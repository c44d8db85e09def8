// imagefs rmi [-f] IMAGE...: as docker rmi. A name is untagged ("Untagged: NAME"); an image
// left with no name is deleted ("Deleted: sha256:<ID>") with the blobs no other image uses.
// By ID or digest every name goes, but an image named in several repositories needs -f.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <set>

#include "store/blob_store.h"
#include "store/metadata_store.h"
#include "tools/command.h"
#include "tools/local_images.h"

namespace imagefs::tools {
namespace {

// True when removing `name` would leave the image with no name (so it is deleted).
Result<bool> WouldDelete(store::MetadataStore& meta, const store::NameRef& name) {
  ASSIGN_OR_RETURN(auto names, meta.NamesOf(name.manifest_digest));
  for (const store::NameRef& n : names) {
    if (n == name) continue;
    // The repository's digests go with its last tag.
    if (!name.tag.empty() && n.repository == name.repository && n.tag.empty()) continue;
    return false;
  }
  return true;
}

Status RemoveOne(const GlobalOptions& global, store::MetadataStore& meta, store::BlobStore& blobs,
                 const std::string& text, bool force) {
  ASSIGN_OR_RETURN(LocalImage found, FindLocalImage(meta, text));
  Result<store::Removal> removal = Status::Internal("unreachable");
  if (found.by_name) {
    ASSIGN_OR_RETURN(bool deletes, WouldDelete(meta, found.name));
    if (deletes && !force) {
      RETURN_IF_ERROR(CheckImageNotMounted(global.root, found.name.manifest_digest));
    }
    removal = meta.RemoveName(found.name);
  } else {
    if (!force) {
      for (const std::string& m : found.manifest_digests) {
        RETURN_IF_ERROR(CheckImageNotMounted(global.root, m));
      }
    }
    removal = meta.RemoveImages(found.manifest_digests, force);
    if (!removal.ok() && removal.status().code() == Code::kAlreadyExists) {
      ASSIGN_OR_RETURN(auto image, meta.GetImage(found.manifest_digests.front()));
      std::string id = image ? ImageId(image->config_digest, false) : text;
      return Status::AlreadyExists("conflict: unable to delete " + id + " (must be forced) - " +
                                   removal.status().message());
    }
  }
  if (!removal.ok()) return removal.status();
  for (const store::NameRef& n : removal->untagged) {
    std::printf("Untagged: %s\n", FamiliarName(n).c_str());
  }
  std::set<std::string> printed;
  for (const store::ImageRecord& image : removal->deleted) {
    if (printed.insert(image.config_digest).second) {
      std::printf("Deleted: %s\n", image.config_digest.c_str());
    }
  }
  // The image table committed first: a crash here leaves unreferenced blobs (harmless,
  // prune collects them), never a name pointing at missing blobs.
  for (const std::string& d : removal->unused_blobs) {
    auto digest = Digest::Parse(d);
    if (!digest.ok()) continue;
    RETURN_IF_ERROR(blobs.Remove(*digest));
  }
  return Status::Ok();
}

}  // namespace

int RunRmi(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Remove one or more images, as docker rmi.\n"
               "IMAGE is a name (untags it), a short or long image ID, or a digest.",
               "imagefs rmi");
  std::vector<std::string> images;
  bool force = false;
  app.add_option("IMAGE", images, "Images to remove")->required();
  app.add_flag("-f,--force", force, "Remove an image named in several repositories");
  if (int rc = ParseCommandLine(app, "rmi", args); rc >= 0) return rc;

  auto meta = store::MetadataStore::Open(global.root);
  if (!meta.ok()) return Fail(meta.status().WithContext("rmi"));
  auto blobs = store::BlobStore::Open(global.root);
  if (!blobs.ok()) return Fail(blobs.status().WithContext("rmi"));
  int rc = 0;
  for (const std::string& image : images) {
    Status st = RemoveOne(global, **meta, **blobs, image, force);
    std::fflush(stdout);
    if (!st.ok()) rc = Fail(st.WithContext("rmi"));
  }
  return rc;
}

}  // namespace imagefs::tools
