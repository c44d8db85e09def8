// oci:DIR[:TAG] — an OCI image layout directory (image-spec image-layout.md):
//   DIR/oci-layout        {"imageLayoutVersion": "1.0.0"}
//   DIR/index.json        an image index; entries name images with the annotation
//                         org.opencontainers.image.ref.name
//   DIR/blobs/<alg>/<hex> content-addressed blobs
// The entry chosen by TAG (or the only entry) is the source's top manifest; it may itself be
// an index (a multi-platform image), which ResolveImage handles.

#include <nlohmann/json.hpp>

#include "fetch/sources_internal.h"
#include "util/digest.h"
#include "util/file.h"

namespace imagefs::fetch::internal {
namespace {

constexpr char kRefNameAnnotation[] = "org.opencontainers.image.ref.name";

std::string JoinNames(const std::vector<std::string>& names) {
  if (names.empty()) return "none";
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

class OciLayoutSource final : public ImageSource {
 public:
  OciLayoutSource(std::string dir, std::string tag, Descriptor top,
                  std::vector<std::string> names)
      : dir_(std::move(dir)), tag_(std::move(tag)), top_(std::move(top)), names_(std::move(names)) {}

  std::string Describe() const override { return "oci:" + dir_ + (tag_.empty() ? "" : ":" + tag_); }
  // skopeo names no Docker reference for a layout, so `inspect` prints no Name either.
  std::string Name() const override { return ""; }

  Result<RawManifest> GetManifest(const std::string& digest) override {
    RawManifest m;
    m.digest = digest.empty() ? top_.digest : digest;
    ASSIGN_OR_RETURN(std::string path, BlobPath(m.digest));
    auto blob = OpenFileBlobSource(path);
    if (!blob.ok()) {
      if (blob.status().IsNotFound()) {
        return Status::NotFound(Describe() + ": manifest " + m.digest +
                                " is missing from the layout");
      }
      return blob.status();
    }
    uint64_t size = (*blob)->Size();
    if (size > kMaxManifestBytes) {
      return Status::Corruption(Describe() + ": manifest " + m.digest + " is " +
                                std::to_string(size) + " bytes, too large for a manifest");
    }
    if (digest.empty() && top_.size >= 0 && size != static_cast<uint64_t>(top_.size)) {
      return Status::Corruption(Describe() + ": manifest " + m.digest + " has " +
                                std::to_string(size) + " bytes, index.json says " +
                                std::to_string(top_.size));
    }
    ASSIGN_OR_RETURN(m.bytes, ReadAll(**blob));
    RETURN_IF_ERROR(CheckManifestDigest(m.bytes, m.digest, Describe()));
    // index.json's descriptor names the type of the top manifest; deeper ones carry their own
    // mediaType (or none, which SniffManifest resolves from the shape).
    if (digest.empty() || digest == top_.digest) m.media_type = top_.media_type;
    return m;
  }

  Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& desc) override {
    ASSIGN_OR_RETURN(std::string path, BlobPath(desc.digest));
    auto blob = OpenFileBlobSource(path);
    if (!blob.ok()) {
      if (blob.status().IsNotFound()) {
        return Status::NotFound(Describe() + ": blob " + desc.digest +
                                " is missing from the layout");
      }
      return blob.status();
    }
    if (desc.size >= 0 && (*blob)->Size() != static_cast<uint64_t>(desc.size)) {
      return Status::Corruption(Describe() + ": blob " + desc.digest + " has " +
                                std::to_string((*blob)->Size()) + " bytes, the manifest says " +
                                std::to_string(desc.size));
    }
    return blob;
  }

  Result<std::vector<std::string>> ListTags() override { return names_; }

 private:
  // blobs/<alg>/<hex>; the digest is parsed first so a hostile one cannot name another path.
  Result<std::string> BlobPath(const std::string& digest) const {
    auto d = Digest::Parse(digest);
    if (!d.ok()) return d.status().WithContext(Describe());
    return dir_ + "/blobs/" + d->algorithm() + "/" + d->hex();
  }

  const std::string dir_;
  const std::string tag_;
  const Descriptor top_;
  const std::vector<std::string> names_;
};

Status CheckLayoutFile(const std::string& dir, const std::string& where) {
  auto text = ReadFile(dir + "/oci-layout");
  if (!text.ok()) {
    if (!PathExists(dir)) return Status::NotFound(where + ": no such directory");
    if (text.status().IsNotFound()) {
      return Status::NotFound(where + ": not an OCI image layout (no oci-layout file)");
    }
    return text.status();
  }
  auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Corruption(where + ": oci-layout is not a JSON object");
  }
  auto version = j.find("imageLayoutVersion");
  if (version == j.end() || !version->is_string()) {
    return Status::Corruption(where + ": oci-layout has no imageLayoutVersion string");
  }
  const std::string v = version->get<std::string>();
  if (v.rfind("1.", 0) != 0) {
    return Status::Unsupported(where + ": imageLayoutVersion \"" + v +
                               "\" is not supported (only 1.x)");
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenOciLayout(const ImageRef& ref) {
  const std::string& dir = ref.path;
  const std::string where = "oci:" + dir;
  RETURN_IF_ERROR(CheckLayoutFile(dir, where));
  auto index_text = ReadFile(dir + "/index.json");
  if (!index_text.ok()) {
    if (index_text.status().IsNotFound()) {
      return Status::Corruption(where + ": the layout has no index.json");
    }
    return index_text.status();
  }
  auto index = ParseImageIndex(*index_text, kOciIndex);
  if (!index.ok()) return index.status().WithContext(where + "/index.json");
  std::vector<std::string> names;
  const Descriptor* chosen = nullptr;
  for (const Descriptor& d : index->manifests) {
    auto it = d.annotations.find(kRefNameAnnotation);
    if (it == d.annotations.end() || it->second.empty()) continue;
    names.push_back(it->second);
    if (!ref.tag.empty() && chosen == nullptr && it->second == ref.tag) chosen = &d;
  }
  if (ref.tag.empty()) {
    if (index->manifests.size() != 1) {
      return Status::InvalidArgument(
          where + " holds " + std::to_string(index->manifests.size()) +
          " images: name one as oci:" + dir + ":TAG (available: " + JoinNames(names) + ")");
    }
    chosen = &index->manifests[0];
  } else if (chosen == nullptr) {
    return Status::NotFound(where + ": no image tagged \"" + ref.tag +
                            "\" (available: " + JoinNames(names) + ")");
  }
  return std::unique_ptr<ImageSource>(
      std::make_unique<OciLayoutSource>(dir, ref.tag, *chosen, std::move(names)));
}

}  // namespace imagefs::fetch::internal
