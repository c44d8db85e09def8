#include "fetch/manifest.h"

#include <sys/utsname.h>

#include <nlohmann/json.hpp>

namespace imagefs::fetch {
namespace {

using Json = nlohmann::json;

Result<Json> ParseJson(std::string_view bytes, std::string_view what) {
  Json j = Json::parse(bytes.begin(), bytes.end(), nullptr, false);
  if (j.is_discarded()) return Status::Corruption(std::string(what) + " is not valid JSON");
  if (!j.is_object()) return Status::Corruption(std::string(what) + " is not a JSON object");
  return j;
}

Status WrongType(std::string_view what, std::string_view field, std::string_view want) {
  return Status::Corruption(std::string(what) + ": field \"" + std::string(field) +
                            "\" is not " + std::string(want));
}

// Optional string field; absent or null gives "".
Result<std::string> GetString(const Json& j, const char* field, std::string_view what) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::string();
  if (!it->is_string()) return WrongType(what, field, "a string");
  return it->get<std::string>();
}

Result<std::vector<std::string>> GetStrings(const Json& j, const char* field,
                                            std::string_view what) {
  std::vector<std::string> out;
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return out;
  if (it->is_string()) {  // Docker accepts a bare string for Cmd/Entrypoint in old configs
    out.push_back(it->get<std::string>());
    return out;
  }
  if (!it->is_array()) return WrongType(what, field, "an array of strings");
  for (const Json& v : *it) {
    if (!v.is_string()) return WrongType(what, field, "an array of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

Result<std::map<std::string, std::string>> GetStringMap(const Json& j, const char* field,
                                                        std::string_view what) {
  std::map<std::string, std::string> out;
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_object()) return WrongType(what, field, "an object of strings");
  for (auto kv = it->begin(); kv != it->end(); ++kv) {
    if (!kv.value().is_string()) return WrongType(what, field, "an object of strings");
    out[kv.key()] = kv.value().get<std::string>();
  }
  return out;
}

Result<Platform> ParsePlatformJson(const Json& j) {
  Platform p;
  ASSIGN_OR_RETURN(p.os, GetString(j, "os", "platform"));
  ASSIGN_OR_RETURN(p.architecture, GetString(j, "architecture", "platform"));
  ASSIGN_OR_RETURN(p.variant, GetString(j, "variant", "platform"));
  return p;
}

Result<Descriptor> ParseDescriptor(const Json& j, std::string_view what) {
  if (!j.is_object()) return Status::Corruption(std::string(what) + ": descriptor is not an object");
  Descriptor d;
  ASSIGN_OR_RETURN(d.media_type, GetString(j, "mediaType", what));
  ASSIGN_OR_RETURN(d.digest, GetString(j, "digest", what));
  if (d.digest.empty()) return Status::Corruption(std::string(what) + ": descriptor has no digest");
  auto size = j.find("size");
  if (size == j.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    return Status::Corruption(std::string(what) + ": descriptor " + d.digest +
                              " has no valid size");
  }
  d.size = size->get<int64_t>();
  ASSIGN_OR_RETURN(d.annotations, GetStringMap(j, "annotations", what));
  ASSIGN_OR_RETURN(d.urls, GetStrings(j, "urls", what));
  if (auto p = j.find("platform"); p != j.end() && p->is_object()) {
    ASSIGN_OR_RETURN(Platform plat, ParsePlatformJson(*p));
    d.platform = plat;
  }
  return d;
}

bool IsGenericContentType(std::string_view ct) {
  return ct.empty() || ct == "application/json" || ct == "text/plain" ||
         ct == "application/octet-stream";
}

// "application/vnd.oci.image.manifest.v1+json; charset=utf-8" -> without parameters.
std::string_view StripParams(std::string_view ct) {
  size_t semi = ct.find(';');
  if (semi != std::string_view::npos) ct = ct.substr(0, semi);
  while (!ct.empty() && ct.back() == ' ') ct.remove_suffix(1);
  return ct;
}

std::string EffectiveType(const Json& j, std::string_view content_type) {
  auto it = j.find("mediaType");
  if (it != j.end() && it->is_string() && !it->get<std::string>().empty()) {
    return it->get<std::string>();
  }
  content_type = StripParams(content_type);
  if (!IsGenericContentType(content_type)) return std::string(content_type);
  return "";
}

}  // namespace

std::string ManifestAcceptHeader() {
  return std::string(kOciIndex) + ", " + std::string(kOciManifest) + ", " +
         std::string(kDockerManifestList) + ", " + std::string(kDockerManifest);
}

Result<Platform> Platform::Parse(std::string_view text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t slash = text.find('/', start);
    parts.emplace_back(text.substr(start, slash == std::string_view::npos ? text.npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  for (const auto& p : parts) {
    if (p.empty() || parts.size() > 3) {
      return Status::InvalidArgument("platform \"" + std::string(text) +
                                     "\": use os/arch[/variant], e.g. linux/arm64/v8");
    }
  }
  Platform out;
  if (parts.size() == 1) {
    out.os = "linux";
    out.architecture = parts[0];
  } else {
    out.os = parts[0];
    out.architecture = parts[1];
    if (parts.size() == 3) out.variant = parts[2];
  }
  // Docker's normalization of common aliases.
  if (out.architecture == "x86_64" || out.architecture == "x86-64") out.architecture = "amd64";
  if (out.architecture == "aarch64") out.architecture = "arm64";
  return out;
}

Platform Platform::Host() {
  struct utsname u {};
  ::uname(&u);
  std::string m = u.machine;
  Platform p;
  p.os = "linux";
  if (m == "x86_64") {
    p.architecture = "amd64";
  } else if (m == "aarch64" || m == "arm64") {
    p.architecture = "arm64";
  } else if (m == "armv7l") {
    p.architecture = "arm";
    p.variant = "v7";
  } else if (m == "armv6l") {
    p.architecture = "arm";
    p.variant = "v6";
  } else if (m == "i686" || m == "i386") {
    p.architecture = "386";
  } else if (m == "ppc64le") {
    p.architecture = "ppc64le";
  } else if (m == "s390x") {
    p.architecture = "s390x";
  } else if (m == "riscv64") {
    p.architecture = "riscv64";
  } else {
    p.architecture = m;
  }
  return p;
}

std::string Platform::String() const {
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

bool Platform::Matches(const Platform& image) const {
  if (os != image.os || architecture != image.architecture) return false;
  if (variant.empty() || image.variant.empty()) return true;
  return variant == image.variant;
}

Result<ManifestKind> SniffManifest(std::string_view bytes, std::string_view content_type) {
  std::string_view ct = StripParams(content_type);
  if (ct == kDockerManifestV1 || ct == kDockerManifestV1Signed) {
    return Status::Unsupported(
        "the manifest is a Docker schema 1 manifest, which imagefs does not support; re-push "
        "the image with a current docker or skopeo");
  }
  ASSIGN_OR_RETURN(Json j, ParseJson(bytes, "manifest"));
  auto version = j.find("schemaVersion");
  if (version != j.end() && version->is_number_integer() && version->get<int>() == 1) {
    return Status::Unsupported(
        "the manifest is a Docker schema 1 manifest, which imagefs does not support; re-push "
        "the image with a current docker or skopeo");
  }
  std::string type = EffectiveType(j, content_type);
  if (type == kOciIndex || type == kDockerManifestList) return ManifestKind::kIndex;
  if (type == kOciManifest || type == kDockerManifest) return ManifestKind::kImage;
  if (type.empty()) {
    if (j.contains("manifests")) return ManifestKind::kIndex;
    if (j.contains("layers") || j.contains("config")) return ManifestKind::kImage;
  }
  return Status::Unsupported("unknown manifest media type \"" + type + "\"");
}

Result<ImageManifest> ParseImageManifest(std::string_view bytes, std::string_view content_type) {
  ASSIGN_OR_RETURN(Json j, ParseJson(bytes, "manifest"));
  ImageManifest m;
  m.media_type = EffectiveType(j, content_type);
  if (m.media_type.empty()) m.media_type = std::string(kOciManifest);
  auto config = j.find("config");
  if (config == j.end()) return Status::Corruption("manifest has no config descriptor");
  ASSIGN_OR_RETURN(m.config, ParseDescriptor(*config, "manifest config"));
  auto layers = j.find("layers");
  if (layers != j.end() && !layers->is_null()) {
    if (!layers->is_array()) return WrongType("manifest", "layers", "an array");
    for (const Json& l : *layers) {
      ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(l, "manifest layer"));
      m.layers.push_back(std::move(d));
    }
  }
  ASSIGN_OR_RETURN(m.annotations, GetStringMap(j, "annotations", "manifest"));
  return m;
}

Result<ImageIndex> ParseImageIndex(std::string_view bytes, std::string_view content_type) {
  ASSIGN_OR_RETURN(Json j, ParseJson(bytes, "image index"));
  ImageIndex idx;
  idx.media_type = EffectiveType(j, content_type);
  if (idx.media_type.empty()) idx.media_type = std::string(kOciIndex);
  auto manifests = j.find("manifests");
  if (manifests == j.end() || !manifests->is_array()) {
    return WrongType("image index", "manifests", "an array");
  }
  for (const Json& m : *manifests) {
    ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(m, "image index entry"));
    idx.manifests.push_back(std::move(d));
  }
  ASSIGN_OR_RETURN(idx.annotations, GetStringMap(j, "annotations", "image index"));
  return idx;
}

Result<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want) {
  const Descriptor* fallback = nullptr;
  std::string available;
  for (const Descriptor& d : index.manifests) {
    if (!d.platform) continue;
    // Attestation manifests (buildkit) carry platform unknown/unknown.
    if (d.platform->os == "unknown") continue;
    if (!available.empty()) available += ", ";
    available += d.platform->String();
    if (want.Matches(*d.platform)) {
      // Prefer an exact variant match; arm64 with no variant means v8.
      std::string image_variant = d.platform->variant;
      std::string want_variant = want.variant;
      if (want.architecture == "arm64") {
        if (image_variant.empty()) image_variant = "v8";
        if (want_variant.empty()) want_variant = "v8";
      }
      if (image_variant == want_variant) return d;
      if (fallback == nullptr) fallback = &d;
    }
  }
  if (fallback != nullptr) return *fallback;
  return Status::NotFound("no image for " + want.String() + " in the image index (available: " +
                          (available.empty() ? std::string("none") : available) +
                          "): choose one with --platform");
}

Result<ImageConfig> ParseImageConfig(std::string_view bytes) {
  ASSIGN_OR_RETURN(Json j, ParseJson(bytes, "image config"));
  ImageConfig c;
  constexpr std::string_view kWhat = "image config";
  ASSIGN_OR_RETURN(c.architecture, GetString(j, "architecture", kWhat));
  ASSIGN_OR_RETURN(c.os, GetString(j, "os", kWhat));
  ASSIGN_OR_RETURN(c.variant, GetString(j, "variant", kWhat));
  ASSIGN_OR_RETURN(c.created, GetString(j, "created", kWhat));
  ASSIGN_OR_RETURN(c.author, GetString(j, "author", kWhat));
  if (auto cfg = j.find("config"); cfg != j.end() && cfg->is_object()) {
    ASSIGN_OR_RETURN(c.env, GetStrings(*cfg, "Env", kWhat));
    ASSIGN_OR_RETURN(c.cmd, GetStrings(*cfg, "Cmd", kWhat));
    ASSIGN_OR_RETURN(c.entrypoint, GetStrings(*cfg, "Entrypoint", kWhat));
    ASSIGN_OR_RETURN(c.working_dir, GetString(*cfg, "WorkingDir", kWhat));
    ASSIGN_OR_RETURN(c.user, GetString(*cfg, "User", kWhat));
    ASSIGN_OR_RETURN(c.labels, GetStringMap(*cfg, "Labels", kWhat));
    if (auto ports = cfg->find("ExposedPorts"); ports != cfg->end() && ports->is_object()) {
      for (auto p = ports->begin(); p != ports->end(); ++p) c.exposed_ports.push_back(p.key());
    }
  }
  if (auto rootfs = j.find("rootfs"); rootfs != j.end() && rootfs->is_object()) {
    ASSIGN_OR_RETURN(c.diff_ids, GetStrings(*rootfs, "diff_ids", kWhat));
  }
  if (auto history = j.find("history"); history != j.end() && history->is_array()) {
    for (const Json& h : *history) {
      if (!h.is_object()) return WrongType(kWhat, "history", "an array of objects");
      HistoryEntry e;
      ASSIGN_OR_RETURN(e.created, GetString(h, "created", kWhat));
      ASSIGN_OR_RETURN(e.created_by, GetString(h, "created_by", kWhat));
      ASSIGN_OR_RETURN(e.author, GetString(h, "author", kWhat));
      ASSIGN_OR_RETURN(e.comment, GetString(h, "comment", kWhat));
      auto empty = h.find("empty_layer");
      e.empty_layer = empty != h.end() && empty->is_boolean() && empty->get<bool>();
      c.history.push_back(std::move(e));
    }
  }
  return c;
}

}  // namespace imagefs::fetch
