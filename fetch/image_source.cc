// Transport parsing, the OCI layout source, and the transport-independent resolution of an
// image (platform choice, digest checks). The registry and docker-archive sources live in
// their own files.

#include "fetch/image_source.h"

#include "fetch/sources_internal.h"
#include "util/digest.h"
#include "util/file.h"

#include <nlohmann/json.hpp>

namespace imagefs::fetch {

std::string ImageRef::String() const {
  switch (transport) {
    case Transport::kDocker:
      return "docker://" + ref.String();
    case Transport::kOci:
      return "oci:" + path + (tag.empty() ? "" : ":" + tag);
    case Transport::kDockerArchive:
      return "docker-archive:" + path + (tag.empty() ? "" : ":" + tag);
  }
  return text;
}

Result<ImageRef> ParseImageRef(std::string_view text) {
  ImageRef out;
  out.text = std::string(text);
  auto path_and_tag = [&](std::string_view rest) -> Status {
    if (rest.empty()) {
      return Status::InvalidArgument("image \"" + out.text + "\": the path is empty");
    }
    // containers/image's rule: the first ':' ends the path (paths cannot hold one).
    size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
      out.path = std::string(rest.substr(0, colon));
      out.tag = std::string(rest.substr(colon + 1));
    } else {
      out.path = std::string(rest);
    }
    if (out.path.empty()) {
      return Status::InvalidArgument("image \"" + out.text + "\": the path is empty");
    }
    return Status::Ok();
  };
  if (text.rfind("oci:", 0) == 0) {
    out.transport = Transport::kOci;
    RETURN_IF_ERROR(path_and_tag(text.substr(4)));
    return out;
  }
  if (text.rfind("docker-archive:", 0) == 0) {
    out.transport = Transport::kDockerArchive;
    RETURN_IF_ERROR(path_and_tag(text.substr(15)));
    return out;
  }
  std::string_view name = text;
  if (text.rfind("docker://", 0) == 0) {
    name = text.substr(9);
  } else if (size_t colon = text.find(':'); colon != std::string_view::npos) {
    // "foo:bar" where foo looks like a transport we don't know (skopeo's other transports).
    std::string_view prefix = text.substr(0, colon);
    static constexpr std::string_view kOthers[] = {"containers-storage", "dir", "docker-daemon",
                                                   "oci-archive", "ostree", "sif", "tarball"};
    for (std::string_view t : kOthers) {
      if (prefix == t) {
        return Status::Unsupported("image \"" + out.text + "\": transport \"" + std::string(t) +
                                   "\" is not supported: use docker://, oci: or docker-archive:");
      }
    }
  }
  out.transport = Transport::kDocker;
  ASSIGN_OR_RETURN(ParsedName loose, ParseReferenceLoose(name));
  out.short_name = !loose.has_registry;
  ASSIGN_OR_RETURN(out.ref, ParseReference(name));
  return out;
}

namespace {

Status CheckDigest(std::string_view bytes, const std::string& want, const std::string& what) {
  ASSIGN_OR_RETURN(Digest d, Digest::Parse(want));
  if (d.algorithm() != "sha256") {
    return Status::Unsupported(what + ": digest algorithm " + d.algorithm() + " is not supported");
  }
  Digest got = Digest::Sha256Of(bytes);
  if (got != d) {
    return Status::Corruption(what + ": digest mismatch: wanted " + want + ", got " +
                              got.String());
  }
  return Status::Ok();
}

// oci:DIR[:TAG]
class OciLayoutSource final : public ImageSource {
 public:
  OciLayoutSource(std::string dir, std::string tag, std::string top_digest,
                  std::string top_media_type, std::vector<std::string> names)
      : dir_(std::move(dir)),
        tag_(std::move(tag)),
        top_digest_(std::move(top_digest)),
        top_media_type_(std::move(top_media_type)),
        names_(std::move(names)) {}

  std::string Describe() const override { return "oci:" + dir_ + (tag_.empty() ? "" : ":" + tag_); }
  std::string Name() const override { return ""; }

  Result<RawManifest> GetManifest(const std::string& digest) override {
    RawManifest m;
    m.digest = digest.empty() ? top_digest_ : digest;
    ASSIGN_OR_RETURN(Digest d, Digest::Parse(m.digest));
    ASSIGN_OR_RETURN(m.bytes, ReadFile(dir_ + "/blobs/" + d.algorithm() + "/" + d.hex()));
    RETURN_IF_ERROR(CheckDigest(m.bytes, m.digest, Describe() + ": manifest " + m.digest));
    if (digest.empty()) m.media_type = top_media_type_;
    if (m.media_type.empty()) {
      auto j = nlohmann::json::parse(m.bytes, nullptr, false);
      if (j.is_object() && j.contains("mediaType") && j["mediaType"].is_string()) {
        m.media_type = j["mediaType"].get<std::string>();
      }
    }
    return m;
  }

  Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& desc) override {
    ASSIGN_OR_RETURN(Digest d, Digest::Parse(desc.digest));
    std::string path = dir_ + "/blobs/" + d.algorithm() + "/" + d.hex();
    auto blob = OpenFileBlobSource(path);
    if (!blob.ok() && blob.status().IsNotFound()) {
      return Status::NotFound(Describe() + ": blob " + desc.digest + " is missing from the layout");
    }
    return blob;
  }

  Result<std::vector<std::string>> ListTags() override { return names_; }

 private:
  std::string dir_;
  std::string tag_;
  std::string top_digest_;
  std::string top_media_type_;
  std::vector<std::string> names_;
};

Result<std::unique_ptr<ImageSource>> OpenOciLayout(const ImageRef& ref) {
  const std::string& dir = ref.path;
  std::string where = "oci:" + dir;
  auto layout_text = ReadFile(dir + "/oci-layout");
  if (!layout_text.ok()) {
    return Status::NotFound(where + ": not an OCI image layout (no oci-layout file)");
  }
  auto layout = nlohmann::json::parse(*layout_text, nullptr, false);
  if (!layout.is_object() || !layout.contains("imageLayoutVersion") ||
      !layout["imageLayoutVersion"].is_string()) {
    return Status::Corruption(where + ": oci-layout has no imageLayoutVersion");
  }
  ASSIGN_OR_RETURN(std::string index_text, ReadFile(dir + "/index.json"));
  ASSIGN_OR_RETURN(ImageIndex index, ParseImageIndex(index_text, kOciIndex));
  std::vector<std::string> names;
  const Descriptor* chosen = nullptr;
  for (const Descriptor& d : index.manifests) {
    auto it = d.annotations.find("org.opencontainers.image.ref.name");
    std::string name = it == d.annotations.end() ? "" : it->second;
    if (!name.empty()) names.push_back(name);
    if (!ref.tag.empty() && name == ref.tag) chosen = &d;
  }
  if (ref.tag.empty()) {
    if (index.manifests.size() != 1) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      return Status::InvalidArgument(where + " holds " + std::to_string(index.manifests.size()) +
                                     " images: name one as oci:" + dir + ":TAG (" + list + ")");
    }
    chosen = &index.manifests[0];
  }
  if (chosen == nullptr) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    return Status::NotFound(where + ": no image tagged \"" + ref.tag + "\" (tags: " +
                            (list.empty() ? "none" : list) + ")");
  }
  return std::unique_ptr<ImageSource>(std::make_unique<OciLayoutSource>(
      dir, ref.tag, chosen->digest, chosen->media_type, std::move(names)));
}

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenImageSource(const ImageRef& ref,
                                                     const FetchOptions& options) {
  switch (ref.transport) {
    case Transport::kOci:
      return OpenOciLayout(ref);
    case Transport::kDockerArchive:
      return internal::OpenDockerArchive(ref);
    case Transport::kDocker:
      return internal::OpenRegistrySource(ref, options);
  }
  return Status::Internal("unknown transport");
}

Result<ResolvedImage> ResolveImage(ImageSource& source, const FetchOptions& options) {
  ResolvedImage out;
  out.name = source.Name();
  ASSIGN_OR_RETURN(RawManifest top, source.GetManifest(""));
  ASSIGN_OR_RETURN(ManifestKind kind, SniffManifest(top.bytes, top.media_type));
  if (kind == ManifestKind::kIndex) {
    ASSIGN_OR_RETURN(ImageIndex index, ParseImageIndex(top.bytes, top.media_type));
    Platform want = options.platform.value_or(Platform::Host());
    auto selected = SelectPlatform(index, want);
    if (!selected.ok()) return selected.status().WithContext(source.Describe());
    const Descriptor& chosen = *selected;
    ASSIGN_OR_RETURN(out.manifest, source.GetManifest(chosen.digest));
    if (out.manifest.media_type.empty()) out.manifest.media_type = chosen.media_type;
    ASSIGN_OR_RETURN(ManifestKind inner, SniffManifest(out.manifest.bytes, out.manifest.media_type));
    if (inner != ManifestKind::kImage) {
      return Status::Unsupported(source.Describe() + ": nested image indexes are not supported");
    }
    out.index = std::move(top);
  } else {
    out.manifest = std::move(top);
  }
  ASSIGN_OR_RETURN(out.parsed, ParseImageManifest(out.manifest.bytes, out.manifest.media_type));
  out.manifest.media_type = out.parsed.media_type;
  ASSIGN_OR_RETURN(out.config_bytes, FetchVerifiedBlob(source, out.parsed.config));
  ASSIGN_OR_RETURN(out.config, ParseImageConfig(out.config_bytes));
  return out;
}

Result<std::string> FetchVerifiedBlob(ImageSource& source, const Descriptor& desc) {
  ASSIGN_OR_RETURN(auto blob, source.OpenBlob(desc));
  if (desc.size >= 0 && blob->Size() != static_cast<uint64_t>(desc.size)) {
    return Status::Corruption("blob " + desc.digest + " from " + source.Describe() + " has " +
                              std::to_string(blob->Size()) + " bytes, the manifest says " +
                              std::to_string(desc.size));
  }
  ASSIGN_OR_RETURN(std::string bytes, ReadAll(*blob));
  RETURN_IF_ERROR(CheckDigest(bytes, desc.digest,
                              "blob " + desc.digest + " from " + source.Describe()));
  return bytes;
}

}  // namespace imagefs::fetch
