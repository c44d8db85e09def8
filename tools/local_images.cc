#include "tools/local_images.h"

#include <ctime>
#include <set>

#include "fetch/reference.h"
#include "tools/format.h"
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

Status StoreImageMetadataBlobs(store::BlobStore& blobs, const fetch::ResolvedImage& image) {
  auto put = [&](const std::string& digest, const std::string& bytes) -> Status {
    ASSIGN_OR_RETURN(Digest d, Digest::Parse(digest));
    return blobs.Put(d, bytes);
  };
  RETURN_IF_ERROR(put(image.parsed.config.digest, image.config_bytes));
  RETURN_IF_ERROR(put(image.manifest.digest, image.manifest.bytes));
  if (image.index) RETURN_IF_ERROR(put(image.index->digest, image.index->bytes));
  return Status::Ok();
}

Status RecordStoredImage(const std::string& root, const fetch::ResolvedImage& image,
                         const std::string& source, const std::vector<store::NameRef>& names) {
  store::ImageRecord record;
  record.manifest_digest = image.manifest.digest;
  record.config_digest = image.parsed.config.digest;
  if (image.index) record.index_digest = image.index->digest;
  record.created = ParseRfc3339(image.config.created).value_or(0);
  record.pulled = static_cast<int64_t>(::time(nullptr));
  record.last_used = record.pulled;
  record.config_size = static_cast<int64_t>(image.config_bytes.size());
  record.size = record.config_size;
  for (const fetch::Descriptor& l : image.parsed.layers) {
    record.layers.push_back({l.digest, l.size});
    record.size += l.size;
  }
  record.platform = image.config.os + "/" + image.config.architecture +
                    (image.config.variant.empty() ? "" : "/" + image.config.variant);
  record.source = source;
  ASSIGN_OR_RETURN(auto meta, store::MetadataStore::Open(root));
  return meta->RecordImage(record, names);
}

Result<std::optional<fetch::ResolvedImage>> ReadStoredImage(store::BlobStore& blobs,
                                                            const std::string& manifest_digest) {
  using Missing = std::optional<fetch::ResolvedImage>;
  fetch::ResolvedImage image;
  ASSIGN_OR_RETURN(Digest digest, Digest::Parse(manifest_digest));
  if (!blobs.Has(digest)) return Missing();
  ASSIGN_OR_RETURN(image.manifest.bytes, blobs.Get(digest));
  image.manifest.digest = digest.String();
  ASSIGN_OR_RETURN(image.parsed, fetch::ParseImageManifest(image.manifest.bytes, ""));
  image.manifest.media_type = image.parsed.media_type;
  ASSIGN_OR_RETURN(Digest config_digest, Digest::Parse(image.parsed.config.digest));
  if (!blobs.Has(config_digest)) return Missing();
  ASSIGN_OR_RETURN(image.config_bytes, blobs.Get(config_digest));
  ASSIGN_OR_RETURN(image.config, fetch::ParseImageConfig(image.config_bytes));
  for (const fetch::Descriptor& layer : image.parsed.layers) {
    auto d = Digest::Parse(layer.digest);
    if (!d.ok() || !blobs.Has(*d)) return Missing();
  }
  return std::optional<fetch::ResolvedImage>(std::move(image));
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
