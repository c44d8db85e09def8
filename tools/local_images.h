#pragma once

// Finding pulled images by what a user types, as docker does: a name ("busybox",
// "host:5000/app:1", "app@sha256:..."), a full digest (manifest, config or index), or an
// image ID (config digest hex, any prefix), and showing names in docker's familiar form.

#include <string>
#include <vector>

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

// kAlreadyExists ("image is being used by the mount at ...") when a live mount serves the
// image (tools/mount_table.h).
Status CheckImageNotMounted(const std::string& root, const std::string& manifest_digest);

}  // namespace imagefs::tools
