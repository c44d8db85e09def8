// Transport parsing and the transport-independent resolution of an image (platform choice,
// digest checks). Each transport's ImageSource lives in its own file: registry_source.cc,
// oci_layout_source.cc, docker_archive_source.cc.

#include "fetch/image_source.h"

#include "fetch/sources_internal.h"
#include "util/digest.h"

namespace imagefs::fetch {

namespace internal {

Status CheckManifestDigest(std::string_view bytes, const std::string& want,
                           const std::string& where) {
  auto parsed = Digest::Parse(want);
  if (!parsed.ok()) return parsed.status().WithContext(where);
  if (parsed->algorithm() != "sha256") {
    return Status::Unsupported(where + ": digest algorithm " + parsed->algorithm() +
                               " is not supported (only sha256)");
  }
  Digest got = Digest::Sha256Of(bytes);
  if (got != *parsed) {
    return Status::Corruption(where + ": manifest digest mismatch: wanted " + want + ", got " +
                              got.String());
  }
  return Status::Ok();
}

std::string StripMediaTypeParams(std::string_view ct) {
  size_t semi = ct.find(';');
  if (semi != std::string_view::npos) ct = ct.substr(0, semi);
  while (!ct.empty() && (ct.back() == ' ' || ct.back() == '\t')) ct.remove_suffix(1);
  while (!ct.empty() && (ct.front() == ' ' || ct.front() == '\t')) ct.remove_prefix(1);
  return std::string(ct);
}

}  // namespace internal

namespace {

constexpr std::string_view kTransportsHelp =
    "imagefs reads docker://REF, oci:DIR[:TAG] and docker-archive:FILE[:REF|:@N]";

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Looks like a transport name: a lowercase word before the first ':' ("foo" in "foo:/x").
bool LooksLikeTransport(std::string_view word) {
  if (word.empty()) return false;
  for (char c : word) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return word[0] >= 'a' && word[0] <= 'z';
}

// The transports skopeo has and imagefs does not.
bool IsOtherSkopeoTransport(std::string_view word) {
  static constexpr std::string_view kOthers[] = {"containers-storage", "dir",   "docker-daemon",
                                                 "oci-archive",        "ostree", "sif",
                                                 "tarball"};
  for (std::string_view t : kOthers) {
    if (word == t) return true;
  }
  return false;
}

Status ParseOciPath(std::string_view rest, ImageRef& out) {
  // The last ':' splits DIR and TAG, but only when what follows it has no '/': a colon
  // inside a directory name ("oci:/tmp/a:b/layout") then stays part of the path.
  size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      rest.find('/', colon) == std::string_view::npos) {
    out.path = std::string(rest.substr(0, colon));
    out.tag = std::string(rest.substr(colon + 1));
  } else {
    out.path = std::string(rest);
  }
  if (out.path.empty()) {
    return Status::InvalidArgument("image \"" + out.text + "\": the directory is empty");
  }
  return Status::Ok();
}

Status ParseArchivePath(std::string_view rest, ImageRef& out) {
  // The first ':' ends FILE: what follows is a reference ("name:tag", itself holding ':'
  // and '/') or "@N", as containers/image splits it.
  size_t colon = rest.find(':');
  out.path = std::string(rest.substr(0, colon));
  if (colon != std::string_view::npos) out.tag = std::string(rest.substr(colon + 1));
  if (out.path.empty()) {
    return Status::InvalidArgument("image \"" + out.text + "\": the archive file is empty");
  }
  if (out.tag.empty()) return Status::Ok();
  if (out.tag[0] == '@') {
    std::string_view n = std::string_view(out.tag).substr(1);
    bool digits = !n.empty() && n.size() <= 9;
    for (char c : n) digits = digits && c >= '0' && c <= '9';
    if (!digits) {
      return Status::InvalidArgument("image \"" + out.text + "\": \"" + out.tag +
                                     "\" is not an image index: use @0, @1, ...");
    }
    return Status::Ok();
  }
  auto ref = ParseReference(out.tag);
  if (!ref.ok()) return ref.status().WithContext("image \"" + out.text + "\"");
  if (!ref->digest.empty()) {
    return Status::InvalidArgument("image \"" + out.text +
                                   "\": a docker-archive image is named by name:tag or @N, "
                                   "not by digest");
  }
  return Status::Ok();
}

}  // namespace

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
  if (StartsWith(text, "oci:")) {
    out.transport = Transport::kOci;
    RETURN_IF_ERROR(ParseOciPath(text.substr(4), out));
    return out;
  }
  if (StartsWith(text, "docker-archive:")) {
    out.transport = Transport::kDockerArchive;
    RETURN_IF_ERROR(ParseArchivePath(text.substr(15), out));
    return out;
  }
  out.transport = Transport::kDocker;
  std::string_view name = text;
  bool explicit_docker = StartsWith(text, "docker://");
  if (explicit_docker) {
    name = text.substr(9);
    if (name.empty()) {
      return Status::InvalidArgument("image \"" + out.text + "\": no reference after docker://");
    }
  }
  size_t colon = name.find(':');
  std::string_view word = colon == std::string_view::npos ? std::string_view() : name.substr(0, colon);
  if (!explicit_docker && IsOtherSkopeoTransport(word)) {
    return Status::Unsupported("image \"" + out.text + "\": transport \"" + std::string(word) +
                               "\" is not supported: " + std::string(kTransportsHelp));
  }
  auto loose = ParseReferenceLoose(name);
  auto ref = loose.ok() ? ParseReference(name) : Result<Reference>(loose.status());
  if (!ref.ok()) {
    // "foo:/some/path": more likely a transport we do not know than a bad reference.
    if (!explicit_docker && LooksLikeTransport(word) && colon + 1 < name.size()) {
      return Status::InvalidArgument("image \"" + out.text + "\": unknown transport \"" +
                                     std::string(word) + "\" (" + std::string(kTransportsHelp) +
                                     ") and not a valid image reference: " +
                                     ref.status().message());
    }
    return ref.status();
  }
  out.short_name = !loose->has_registry;
  out.ref = std::move(ref).value();
  return out;
}

Result<std::unique_ptr<ImageSource>> OpenImageSource(const ImageRef& ref,
                                                     const FetchOptions& options) {
  switch (ref.transport) {
    case Transport::kOci:
      return internal::OpenOciLayout(ref);
    case Transport::kDockerArchive:
      return internal::OpenDockerArchive(ref);
    case Transport::kDocker:
      return internal::OpenRegistrySource(ref, options);
  }
  return Status::Internal("unknown transport");
}

namespace {

// Every manifest a source hands out must hash to the digest it claims.
Status CheckRaw(const RawManifest& m, const std::string& where) {
  if (m.digest.empty()) return Status::Internal(where + ": manifest without a digest");
  return internal::CheckManifestDigest(m.bytes, m.digest, where);
}

}  // namespace

Result<ResolvedImage> ResolveImage(ImageSource& source, const FetchOptions& options) {
  ASSIGN_OR_RETURN(ResolvedImage out, ResolveManifest(source, options));
  RETURN_IF_ERROR(ResolveConfig(source, out));
  return out;
}

Result<ResolvedImage> ResolveManifest(ImageSource& source, const FetchOptions& options) {
  const std::string where = source.Describe();
  ResolvedImage out;
  out.name = source.Name();
  ASSIGN_OR_RETURN(RawManifest top, source.GetManifest(""));
  RETURN_IF_ERROR(CheckRaw(top, where));
  auto kind = SniffManifest(top.bytes, top.media_type);
  if (!kind.ok()) return kind.status().WithContext(where);
  if (*kind == ManifestKind::kIndex) {
    auto index = ParseImageIndex(top.bytes, top.media_type);
    if (!index.ok()) return index.status().WithContext(where);
    Platform want = options.platform.value_or(Platform::Host());
    ASSIGN_OR_RETURN(Descriptor chosen, SelectPlatform(*index, want, where));
    ASSIGN_OR_RETURN(out.manifest, source.GetManifest(chosen.digest));
    if (out.manifest.digest != chosen.digest) {
      return Status::Corruption(where + ": manifest digest mismatch: wanted " + chosen.digest +
                                ", got " + out.manifest.digest);
    }
    RETURN_IF_ERROR(CheckRaw(out.manifest, where));
    if (chosen.size >= 0 && out.manifest.bytes.size() != static_cast<uint64_t>(chosen.size)) {
      return Status::Corruption(where + ": manifest " + chosen.digest + " has " +
                                std::to_string(out.manifest.bytes.size()) +
                                " bytes, the index says " + std::to_string(chosen.size));
    }
    if (out.manifest.media_type.empty()) out.manifest.media_type = chosen.media_type;
    auto inner = SniffManifest(out.manifest.bytes, out.manifest.media_type);
    if (!inner.ok()) return inner.status().WithContext(where + ": manifest " + chosen.digest);
    if (*inner != ManifestKind::kImage) {
      return Status::Unsupported(where + ": the index entry for " + want.String() +
                                 " is itself an index; nested indexes are not supported");
    }
    out.index = std::move(top);
  } else {
    out.manifest = std::move(top);
  }
  auto parsed = ParseImageManifest(out.manifest.bytes, out.manifest.media_type);
  if (!parsed.ok()) return parsed.status().WithContext(where);
  out.parsed = std::move(parsed).value();
  out.manifest.media_type = out.parsed.media_type;
  return out;
}

Status ResolveConfig(ImageSource& source, ResolvedImage& out) {
  const std::string where = source.Describe();
  // Configs are kilobytes; refuse to buffer a "config" a hostile manifest made huge.
  constexpr int64_t kMaxConfigBytes = 64 << 20;
  if (out.parsed.config.size > kMaxConfigBytes) {
    return Status::Corruption(where + ": config " + out.parsed.config.digest + " claims " +
                              std::to_string(out.parsed.config.size) +
                              " bytes, more than an image config can be");
  }
  ASSIGN_OR_RETURN(out.config_bytes, FetchVerifiedBlob(source, out.parsed.config));
  auto config = ParseImageConfig(out.config_bytes);
  if (!config.ok()) return config.status().WithContext(where);
  out.config = std::move(config).value();
  return Status::Ok();
}

Result<std::string> FetchVerifiedBlob(ImageSource& source, const Descriptor& desc) {
  const std::string what = "blob " + desc.digest + " from " + source.Describe();
  auto want = Digest::Parse(desc.digest);
  if (!want.ok()) return want.status().WithContext(what);
  if (want->algorithm() != "sha256") {
    return Status::Unsupported(what + ": digest algorithm " + want->algorithm() +
                               " is not supported (only sha256)");
  }
  // Local transports hold files; only a registry "serves" data.
  const char* culprit = StartsWith(source.Describe(), "docker://")
                            ? "the registry served corrupt data"
                            : "the file is corrupt";
  ASSIGN_OR_RETURN(auto blob, source.OpenBlob(desc));
  if (desc.size >= 0 && blob->Size() != static_cast<uint64_t>(desc.size)) {
    return Status::Corruption(what + ": size mismatch (" + std::to_string(blob->Size()) +
                              " bytes, the manifest says " + std::to_string(desc.size) +
                              "): " + culprit);
  }
  ASSIGN_OR_RETURN(std::string bytes, ReadAll(*blob));
  if (desc.size >= 0 && bytes.size() != static_cast<uint64_t>(desc.size)) {
    return Status::Corruption(what + ": size mismatch (got " + std::to_string(bytes.size()) +
                              " bytes, the manifest says " + std::to_string(desc.size) +
                              "): " + culprit);
  }
  Digest got = Digest::Sha256Of(std::string_view(bytes));
  if (got != *want) {
    return Status::Corruption(what + ": digest mismatch (got " + got.String() + "): " + culprit);
  }
  return bytes;
}

}  // namespace imagefs::fetch
