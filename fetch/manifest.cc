// Manifests, indexes and configs from JSON. The JSON is parsed without exceptions and every
// field is read defensively: a field of the wrong type is a kCorruption naming the field, so
// a hostile or broken registry cannot crash us or make us act on half-read data.

#include "fetch/manifest.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>

#include "util/ascii.h"

namespace imagefs::fetch {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kSchema1Message =
    "the manifest is a Docker schema 1 manifest, which imagefs does not support; re-push it "
    "with a current docker or skopeo";

std::string TypeName(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::object: return "an object";
    case Json::value_t::array: return "an array";
    case Json::value_t::string: return "a string";
    case Json::value_t::boolean: return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float: return "a number";
    default: return "not valid";
  }
}

Status WrongType(std::string_view what, std::string_view field, const Json& got,
                 std::string_view want) {
  return Status::Corruption(std::string(what) + ": field \"" + std::string(field) + "\" is " +
                            TypeName(got) + ", not " + std::string(want));
}

Result<Json> ParseObject(std::string_view bytes, std::string_view what) {
  Json j = Json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corruption(std::string(what) + " is not valid JSON");
  if (!j.is_object()) {
    return Status::Corruption(std::string(what) + " is " + TypeName(j) + ", not a JSON object");
  }
  return j;
}

// The member `field` of object j, or nullptr when absent or null (both mean "not given").
const Json* Field(const Json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

Result<std::string> GetString(const Json& j, const char* field, std::string_view what) {
  const Json* v = Field(j, field);
  if (v == nullptr) return std::string();
  if (!v->is_string()) return WrongType(what, field, *v, "a string");
  return v->get<std::string>();
}

// An optional object member; nullptr when absent or null.
Result<const Json*> GetObject(const Json& j, const char* field, std::string_view what) {
  const Json* v = Field(j, field);
  if (v != nullptr && !v->is_object()) return WrongType(what, field, *v, "an object");
  return v;
}

Result<const Json*> GetArray(const Json& j, const char* field, std::string_view what) {
  const Json* v = Field(j, field);
  if (v != nullptr && !v->is_array()) return WrongType(what, field, *v, "an array");
  return v;
}

// allow_bare: Docker accepts a lone string for Cmd and Entrypoint in old configs.
Result<std::vector<std::string>> GetStrings(const Json& j, const char* field,
                                            std::string_view what, bool allow_bare = false) {
  std::vector<std::string> out;
  const Json* v = Field(j, field);
  if (v == nullptr) return out;
  if (allow_bare && v->is_string()) {
    out.push_back(v->get<std::string>());
    return out;
  }
  if (!v->is_array()) return WrongType(what, field, *v, "an array of strings");
  for (const Json& e : *v) {
    if (!e.is_string()) return WrongType(what, field, e, "a string in an array of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

Result<std::map<std::string, std::string>> GetStringMap(const Json& j, const char* field,
                                                        std::string_view what) {
  std::map<std::string, std::string> out;
  const Json* v = Field(j, field);
  if (v == nullptr) return out;
  if (!v->is_object()) return WrongType(what, field, *v, "an object of strings");
  for (auto kv = v->begin(); kv != v->end(); ++kv) {
    if (!kv.value().is_string()) {
      return WrongType(what, std::string(field) + "." + kv.key(), kv.value(), "a string");
    }
    out[kv.key()] = kv.value().get<std::string>();
  }
  return out;
}

Result<Platform> ParsePlatformJson(const Json& j, std::string_view what) {
  Platform p;
  ASSIGN_OR_RETURN(p.os, GetString(j, "os", what));
  ASSIGN_OR_RETURN(p.architecture, GetString(j, "architecture", what));
  ASSIGN_OR_RETURN(p.variant, GetString(j, "variant", what));
  return p;
}

Result<Descriptor> ParseDescriptor(const Json& j, std::string_view what) {
  if (!j.is_object()) {
    return Status::Corruption(std::string(what) + ": descriptor is " + TypeName(j) +
                              ", not an object");
  }
  Descriptor d;
  ASSIGN_OR_RETURN(d.media_type, GetString(j, "mediaType", what));
  ASSIGN_OR_RETURN(d.digest, GetString(j, "digest", what));
  if (d.digest.empty()) return Status::Corruption(std::string(what) + ": descriptor has no digest");
  const Json* size = Field(j, "size");
  if (size == nullptr) {
    return Status::Corruption(std::string(what) + ": descriptor " + d.digest + " has no size");
  }
  bool valid_size = size->is_number_unsigned()
                        ? size->get<uint64_t>() <=
                              static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                        : size->is_number_integer() && size->get<int64_t>() >= 0;
  if (!valid_size) {
    return Status::Corruption(std::string(what) + ": descriptor " + d.digest +
                              ": field \"size\" is not a non-negative integer");
  }
  d.size = size->get<int64_t>();
  ASSIGN_OR_RETURN(d.annotations, GetStringMap(j, "annotations", what));
  ASSIGN_OR_RETURN(d.urls, GetStrings(j, "urls", what));
  ASSIGN_OR_RETURN(const Json* platform, GetObject(j, "platform", what));
  if (platform != nullptr) {
    ASSIGN_OR_RETURN(Platform p, ParsePlatformJson(*platform, std::string(what) + " platform"));
    d.platform = std::move(p);
  }
  return d;
}

Result<std::vector<Descriptor>> ParseDescriptors(const Json& j, const char* field,
                                                 std::string_view what, bool required) {
  std::vector<Descriptor> out;
  ASSIGN_OR_RETURN(const Json* list, GetArray(j, field, what));
  if (list == nullptr) {
    if (required) {
      return Status::Corruption(std::string(what) + ": field \"" + field + "\" is missing");
    }
    return out;
  }
  for (size_t i = 0; i < list->size(); ++i) {
    ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor((*list)[i], std::string(what) + " " + field +
                                                                   "[" + std::to_string(i) + "]"));
    out.push_back(std::move(d));
  }
  return out;
}

// "application/vnd.oci.image.manifest.v1+json; charset=utf-8" -> the type alone.
std::string_view StripParams(std::string_view ct) {
  size_t semi = ct.find(';');
  if (semi != std::string_view::npos) ct = ct.substr(0, semi);
  while (!ct.empty() && (ct.back() == ' ' || ct.back() == '\t')) ct.remove_suffix(1);
  while (!ct.empty() && (ct.front() == ' ' || ct.front() == '\t')) ct.remove_prefix(1);
  return ct;
}

// Content-Types that say nothing about which manifest this is.
bool IsGenericContentType(std::string_view ct) {
  return ct.empty() || ct == "application/json" || ct == "text/plain" ||
         ct == "application/octet-stream" || ct == "binary/octet-stream";
}

bool IsSchema1Type(std::string_view type) {
  return type == kDockerManifestV1 || type == kDockerManifestV1Signed ||
         type == "application/json+jws";
}

// The JSON's mediaType when it has one, else a specific Content-Type, else "".
Result<std::string> EffectiveType(const Json& j, std::string_view content_type,
                                  std::string_view what) {
  ASSIGN_OR_RETURN(std::string type, GetString(j, "mediaType", what));
  if (!type.empty()) return type;
  content_type = StripParams(content_type);
  if (!IsGenericContentType(content_type)) return std::string(content_type);
  return std::string();
}

Status CheckSchemaVersion(const Json& j, std::string_view what) {
  const Json* v = Field(j, "schemaVersion");
  if (v == nullptr) return Status::Ok();  // optional in practice (some tools omit it)
  if (!v->is_number_integer()) return WrongType(what, "schemaVersion", *v, "an integer");
  int64_t version = v->get<int64_t>();
  if (version == 1) return Status::Unsupported(std::string(kSchema1Message));
  if (version != 2) {
    return Status::Unsupported(std::string(what) + ": schemaVersion " + std::to_string(version) +
                               " is not supported (only 2 is)");
  }
  return Status::Ok();
}


// Docker's aliases for architectures and variants, applied to both sides of a comparison.
Platform Normalize(Platform p) {
  p.os = AsciiLower(p.os);
  p.architecture = AsciiLower(p.architecture);
  p.variant = AsciiLower(p.variant);
  const std::string& a = p.architecture;
  if (a == "x86_64" || a == "x86-64") {
    p.architecture = "amd64";
  } else if (a == "aarch64") {
    p.architecture = "arm64";
  } else if (a == "i386" || a == "i486" || a == "i586" || a == "i686" || a == "x86") {
    p.architecture = "386";
  } else if (a == "armhf") {
    p.architecture = "arm";
    if (p.variant.empty()) p.variant = "v7";
  } else if (a == "armel") {
    p.architecture = "arm";
    if (p.variant.empty()) p.variant = "v6";
  }
  if ((p.architecture == "arm" || p.architecture == "arm64") && p.variant.size() == 1 &&
      p.variant[0] >= '5' && p.variant[0] <= '9') {
    p.variant = "v" + p.variant;  // "8" -> "v8"
  }
  return p;
}

// The variant a CPU of this architecture implies when none is named.
std::string DefaultVariant(const std::string& arch) {
  if (arch == "arm64") return "v8";
  if (arch == "arm") return "v7";
  return "";
}

// "v7" -> 7, anything else -> -1.
int ArmVariantNumber(const std::string& v) {
  if (v.size() != 2 || v[0] != 'v' || v[1] < '5' || v[1] > '9') return -1;
  return v[1] - '0';
}

}  // namespace

std::string ManifestAcceptHeader() {
  return std::string(kOciIndex) + ", " + std::string(kOciManifest) + ", " +
         std::string(kDockerManifestList) + ", " + std::string(kDockerManifest);
}

Result<Platform> Platform::Parse(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t slash = text.find('/', start);
    parts.push_back(text.substr(start, slash == std::string_view::npos ? text.npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  bool bad = parts.size() > 3;
  for (std::string_view p : parts) bad = bad || p.empty();
  if (bad) {
    return Status::InvalidArgument("platform \"" + std::string(text) +
                                   "\": use os/arch[/variant], e.g. linux/arm64/v8");
  }
  Platform out;
  if (parts.size() == 1) {
    out.os = "linux";
    out.architecture = std::string(parts[0]);
  } else {
    out.os = std::string(parts[0]);
    out.architecture = std::string(parts[1]);
    if (parts.size() == 3) out.variant = std::string(parts[2]);
  }
  return Normalize(std::move(out));
}

Platform Platform::Host() {
  struct utsname u {};
  ::uname(&u);
  std::string m = u.machine;
  Platform p;
  p.os = "linux";
  struct Alias {
    std::string_view machine, arch, variant;
  };
  static constexpr Alias kAliases[] = {
      {"x86_64", "amd64", ""},        {"amd64", "amd64", ""},      {"i386", "386", ""},
      {"i486", "386", ""},            {"i586", "386", ""},         {"i686", "386", ""},
      {"aarch64", "arm64", ""},       {"arm64", "arm64", ""},      {"armv8l", "arm", "v8"},
      {"armv7l", "arm", "v7"},        {"armv7", "arm", "v7"},      {"armv6l", "arm", "v6"},
      {"armv5tel", "arm", "v5"},      {"armv5l", "arm", "v5"},     {"ppc64le", "ppc64le", ""},
      {"ppc64", "ppc64", ""},         {"s390x", "s390x", ""},      {"riscv64", "riscv64", ""},
      {"mips64", "mips64", ""},       {"mips64el", "mips64le", ""}, {"mips", "mips", ""},
      {"mipsel", "mipsle", ""},       {"loongarch64", "loong64", ""},
  };
  p.architecture = m;
  for (const Alias& a : kAliases) {
    if (m == a.machine) {
      p.architecture = std::string(a.arch);
      p.variant = std::string(a.variant);
      break;
    }
  }
  return p;
}

std::string Platform::String() const {
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

bool Platform::Matches(const Platform& image) const {
  Platform want = Normalize(*this);
  Platform got = Normalize(image);
  if (want.os != got.os || want.architecture != got.architecture) return false;
  if (want.variant.empty() || got.variant.empty()) return true;
  if (want.variant == got.variant) return true;
  // A 32-bit ARM CPU runs images built for older ARM revisions (v7 runs v6 and v5).
  if (want.architecture == "arm") {
    int w = ArmVariantNumber(want.variant);
    int g = ArmVariantNumber(got.variant);
    return w > 0 && g > 0 && g <= w;
  }
  return false;
}

Result<ManifestKind> SniffManifest(std::string_view bytes, std::string_view content_type) {
  std::string_view ct = StripParams(content_type);
  if (IsSchema1Type(ct)) return Status::Unsupported(std::string(kSchema1Message));
  ASSIGN_OR_RETURN(Json j, ParseObject(bytes, "manifest"));
  RETURN_IF_ERROR(CheckSchemaVersion(j, "manifest"));
  ASSIGN_OR_RETURN(std::string type, EffectiveType(j, content_type, "manifest"));
  if (IsSchema1Type(type)) return Status::Unsupported(std::string(kSchema1Message));
  if (type == kOciIndex || type == kDockerManifestList) return ManifestKind::kIndex;
  if (type == kOciManifest || type == kDockerManifest) return ManifestKind::kImage;
  if (!type.empty()) {
    return Status::Unsupported("manifest media type \"" + type +
                               "\" is not an image manifest or index imagefs can read");
  }
  // No type anywhere (umoci omits mediaType, some servers send application/json): the shape.
  if (j.contains("manifests")) return ManifestKind::kIndex;
  if (j.contains("layers") || j.contains("config")) return ManifestKind::kImage;
  if (j.contains("fsLayers")) return Status::Unsupported(std::string(kSchema1Message));
  return Status::Corruption(
      "manifest has no mediaType and neither \"manifests\" nor \"layers\"/\"config\"");
}

Result<ImageManifest> ParseImageManifest(std::string_view bytes, std::string_view content_type) {
  constexpr std::string_view kWhat = "manifest";
  ASSIGN_OR_RETURN(Json j, ParseObject(bytes, kWhat));
  RETURN_IF_ERROR(CheckSchemaVersion(j, kWhat));
  ImageManifest m;
  ASSIGN_OR_RETURN(m.media_type, EffectiveType(j, content_type, kWhat));
  if (IsSchema1Type(m.media_type)) return Status::Unsupported(std::string(kSchema1Message));
  if (m.media_type == kOciIndex || m.media_type == kDockerManifestList) {
    return Status::Corruption("manifest is an image index (" + m.media_type +
                              "), not an image manifest");
  }
  if (m.media_type.empty()) m.media_type = std::string(kOciManifest);
  const Json* config = Field(j, "config");
  if (config == nullptr) return Status::Corruption("manifest has no config descriptor");
  ASSIGN_OR_RETURN(m.config, ParseDescriptor(*config, "manifest config"));
  ASSIGN_OR_RETURN(m.layers, ParseDescriptors(j, "layers", kWhat, /*required=*/false));
  ASSIGN_OR_RETURN(m.annotations, GetStringMap(j, "annotations", kWhat));
  return m;
}

Result<ImageIndex> ParseImageIndex(std::string_view bytes, std::string_view content_type) {
  constexpr std::string_view kWhat = "image index";
  ASSIGN_OR_RETURN(Json j, ParseObject(bytes, kWhat));
  RETURN_IF_ERROR(CheckSchemaVersion(j, kWhat));
  ImageIndex idx;
  ASSIGN_OR_RETURN(idx.media_type, EffectiveType(j, content_type, kWhat));
  if (idx.media_type == kOciManifest || idx.media_type == kDockerManifest) {
    return Status::Corruption("image index is an image manifest (" + idx.media_type +
                              "), not an index");
  }
  if (idx.media_type.empty()) idx.media_type = std::string(kOciIndex);
  ASSIGN_OR_RETURN(idx.manifests, ParseDescriptors(j, "manifests", kWhat, /*required=*/true));
  ASSIGN_OR_RETURN(idx.annotations, GetStringMap(j, "annotations", kWhat));
  return idx;
}

Result<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want) {
  return SelectPlatform(index, want, "the image index");
}

Result<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want,
                                  std::string_view where) {
  Platform w = Normalize(want);
  std::string want_variant = w.variant.empty() ? DefaultVariant(w.architecture) : w.variant;
  // Rank: 4 exact variant (an unnamed arm64 variant is v8, arm's is v7), 3 image names no
  // variant, 2 an older compatible ARM variant (newest first), 1 an entry without a platform.
  const Descriptor* best = nullptr;
  int best_rank = 0;
  std::string available;
  for (const Descriptor& d : index.manifests) {
    int rank = 0;
    if (!d.platform) {
      if (d.media_type.empty() || d.media_type == kOciManifest || d.media_type == kDockerManifest) {
        rank = 1;
      }
    } else {
      Platform p = Normalize(*d.platform);
      // Attestation manifests (buildkit) carry unknown/unknown; they are not images.
      if (p.os == "unknown" || p.architecture == "unknown") continue;
      if (!available.empty()) available += ", ";
      available += d.platform->String();
      if (!w.Matches(p)) continue;
      std::string image_variant = p.variant.empty() ? DefaultVariant(p.architecture) : p.variant;
      if (image_variant == want_variant) {
        rank = 40;
      } else if (p.variant.empty()) {
        rank = 30;
      } else {
        rank = 20 + std::max(0, ArmVariantNumber(p.variant));
      }
    }
    if (rank > best_rank) {
      best = &d;
      best_rank = rank;
    }
  }
  if (best != nullptr) return *best;
  return Status::NotFound("no image for " + want.String() + " in " + std::string(where) +
                          ": available: " + (available.empty() ? std::string("none") : available));
}

Result<ImageConfig> ParseImageConfig(std::string_view bytes) {
  constexpr std::string_view kWhat = "image config";
  ASSIGN_OR_RETURN(Json j, ParseObject(bytes, kWhat));
  ImageConfig c;
  ASSIGN_OR_RETURN(c.architecture, GetString(j, "architecture", kWhat));
  ASSIGN_OR_RETURN(c.os, GetString(j, "os", kWhat));
  ASSIGN_OR_RETURN(c.variant, GetString(j, "variant", kWhat));
  ASSIGN_OR_RETURN(c.created, GetString(j, "created", kWhat));
  ASSIGN_OR_RETURN(c.author, GetString(j, "author", kWhat));
  ASSIGN_OR_RETURN(const Json* cfg, GetObject(j, "config", kWhat));
  if (cfg != nullptr) {
    constexpr std::string_view kCfg = "image config \"config\"";
    ASSIGN_OR_RETURN(c.env, GetStrings(*cfg, "Env", kCfg));
    ASSIGN_OR_RETURN(c.cmd, GetStrings(*cfg, "Cmd", kCfg, /*allow_bare=*/true));
    ASSIGN_OR_RETURN(c.entrypoint, GetStrings(*cfg, "Entrypoint", kCfg, /*allow_bare=*/true));
    ASSIGN_OR_RETURN(c.working_dir, GetString(*cfg, "WorkingDir", kCfg));
    ASSIGN_OR_RETURN(c.user, GetString(*cfg, "User", kCfg));
    ASSIGN_OR_RETURN(c.labels, GetStringMap(*cfg, "Labels", kCfg));
    ASSIGN_OR_RETURN(const Json* ports, GetObject(*cfg, "ExposedPorts", kCfg));
    if (ports != nullptr) {
      for (auto p = ports->begin(); p != ports->end(); ++p) c.exposed_ports.push_back(p.key());
    }
  }
  ASSIGN_OR_RETURN(const Json* rootfs, GetObject(j, "rootfs", kWhat));
  if (rootfs != nullptr) {
    ASSIGN_OR_RETURN(c.diff_ids, GetStrings(*rootfs, "diff_ids", "image config \"rootfs\""));
  }
  ASSIGN_OR_RETURN(const Json* history, GetArray(j, "history", kWhat));
  if (history != nullptr) {
    for (size_t i = 0; i < history->size(); ++i) {
      const Json& h = (*history)[i];
      std::string what = "image config history[" + std::to_string(i) + "]";
      if (!h.is_object()) {
        return Status::Corruption(what + " is " + TypeName(h) + ", not an object");
      }
      HistoryEntry e;
      ASSIGN_OR_RETURN(e.created, GetString(h, "created", what));
      ASSIGN_OR_RETURN(e.created_by, GetString(h, "created_by", what));
      ASSIGN_OR_RETURN(e.author, GetString(h, "author", what));
      ASSIGN_OR_RETURN(e.comment, GetString(h, "comment", what));
      if (const Json* empty = Field(h, "empty_layer"); empty != nullptr) {
        if (!empty->is_boolean()) return WrongType(what, "empty_layer", *empty, "a boolean");
        e.empty_layer = empty->get<bool>();
      }
      c.history.push_back(std::move(e));
    }
  }
  return c;
}

}  // namespace imagefs::fetch
