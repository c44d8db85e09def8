#pragma once

// Finding pulled images by what a user types, as docker does: a name ("busybox",
// "host:5000/app:1", "app@sha256:..."), a full digest (manifest, config or index), or an
// image ID (config digest hex, any prefix), and showing names in docker's familiar form.

#include <optional>
#include <string>
#include <vector>

#include "fetch/image_source.h"
#include "store/blob_store.h"
#include "store/metadata_store.h"
#include "util/status.h"

namespace imagefs::tools {

struct LocalImage {
  std::vector<std::string> manifest_digests;  // one, or several sharing a config (same ID)
  bool by_name = false;                       // the text was a tag or repo digest
  store::NameRef name;                        // when by_name
};

// kNotFound: "no such image: TEXT"; kInvalidArgument when a short ID is ambiguous.
Result<LocalImage> FindLocalImage(store::MetadataStore& meta, const std::string& text);

// "docker.io/library/busybox" -> "busybox"; other registries stay "host/repo".
std::string FamiliarRepository(const std::string& repository);
// "busybox:latest", "busybox@sha256:...".
std::string FamiliarName(const store::NameRef& name);
// docker's image ID column: 12 hex, or "sha256:<64 hex>" with no_trunc.
std::string ImageId(const std::string& config_digest, bool no_trunc);

// Puts the config, the manifest and (when there is one) the index of an image into the
// blob store, verified; its layers are the caller's business.
Status StoreImageMetadataBlobs(store::BlobStore& blobs, const fetch::ResolvedImage& image);

// Records an image whose blobs (layers, config, manifest) are all in the blob store, with
// the names given, in one metadata transaction (a tag moved from another image leaves that
// one dangling). Called last, so a name only ever points at a whole image. `source` is
// what `images`/`inspect` show it came from.
Status RecordStoredImage(const std::string& root, const fetch::ResolvedImage& image,
                         const std::string& source, const std::vector<store::NameRef>& names);

// A stored image read back from the blob store by manifest digest (manifest and config
// parsed; config checked by the store's digest). nullopt when the manifest, the config or
// a layer is not stored.
Result<std::optional<fetch::ResolvedImage>> ReadStoredImage(store::BlobStore& blobs,
                                                            const std::string& manifest_digest);

// kAlreadyExists ("image is being used by the mount at ...") when a live mount serves the
// image (tools/mount_table.h).
Status CheckImageNotMounted(const std::string& root, const std::string& manifest_digest);

}  // namespace imagefs::tools
