#include "tools/local_images.h"

#include <set>

#include "fetch/reference.h"
#include "tools/mount_table.h"

namespace imagefs::tools {
namespace {

bool IsHex(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

Result<LocalImage> FindLocalImage(store::MetadataStore& meta, const std::string& text) {
  LocalImage out;
  Status not_found = Status::NotFound("no such image: " + text);
  if (text.rfind("sha256:", 0) == 0) {
    if (text.size() != 71 || !IsHex(text.substr(7))) return not_found;
    ASSIGN_OR_RETURN(out.manifest_digests, meta.LookupDigest(text));
    if (out.manifest_digests.empty()) return not_found;
    return out;
  }
  auto ref = fetch::ParseReference(text);
  if (ref.ok()) {
    store::NameRef name{ref->Name(), ref->digest.empty() ? ref->tag : "", ref->digest, ""};
    auto found = meta.LookupName(name.repository, name.tag, name.digest);
    if (found.ok()) {
      name.manifest_digest = *found;
      out.by_name = true;
      out.name = name;
      out.manifest_digests = {*found};
      return out;
    }
    if (!found.status().IsNotFound()) return found.status();
  }
  if (IsHex(text)) {
    ASSIGN_OR_RETURN(auto manifests, meta.LookupIdPrefix(text));
    std::set<std::string> configs;
    for (const std::string& m : manifests) {
      ASSIGN_OR_RETURN(auto image, meta.GetImage(m));
      if (image) configs.insert(image->config_digest);
    }
    if (configs.size() > 1) {
      return Status::InvalidArgument("image ID " + text + " is ambiguous: it matches " +
                                     std::to_string(configs.size()) + " images");
    }
    if (!manifests.empty()) {
      out.manifest_digests = std::move(manifests);
      return out;
    }
  }
  return not_found;
}

std::string FamiliarRepository(const std::string& repository) {
  auto ref = fetch::ParseReference(repository);
  if (!ref.ok()) return repository;
  fetch::Reference r = *ref;
  r.tag.clear();
  r.digest.clear();
  return r.Familiar();
}

std::string FamiliarName(const store::NameRef& name) {
  std::string repo = FamiliarRepository(name.repository);
  return repo + (name.tag.empty() ? "@" + name.digest : ":" + name.tag);
}

std::string ImageId(const std::string& config_digest, bool no_trunc) {
  if (no_trunc) return config_digest;
  std::string hex = config_digest.rfind("sha256:", 0) == 0 ? config_digest.substr(7) : config_digest;
  return hex.substr(0, 12);
}

Status CheckImageNotMounted(const std::string& root, const std::string& manifest_digest) {
  ASSIGN_OR_RETURN(std::vector<MountRecord> mounts, LiveMounts(root));
  for (const MountRecord& m : mounts) {
    if (m.manifest_digest == manifest_digest) {
      return Status::AlreadyExists("image is being used by the mount at " + m.mountpoint +
                                   " (imagefs umount " + m.mountpoint + " first)");
    }
  }
  return Status::Ok();
}

}  // namespace imagefs::tools
