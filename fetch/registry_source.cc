// docker:// images: short-name resolution, mirrors then origin, digest checks.
//
// For each candidate reference (a short name may give several, from registries.conf), the
// endpoints are tried in order (mirrors, then the origin); the first that serves the manifest
// wins and every blob then comes from that same endpoint (pull-through mirrors). When every
// endpoint fails, the origin's error is reported, since it is the one the user can act on.

#include "fetch/registry_client.h"
#include "fetch/sources_internal.h"
#include "util/digest.h"

namespace imagefs::fetch::internal {
namespace {

class RegistrySource final : public ImageSource {
 public:
  RegistrySource(Reference ref, Endpoint endpoint, std::unique_ptr<RegistryClient> client,
                 RawManifest top)
      : ref_(std::move(ref)),
        endpoint_(std::move(endpoint)),
        client_(std::move(client)),
        top_(std::move(top)) {}

  std::string Describe() const override { return "docker://" + ref_.String(); }
  // "docker.io/library/nginx": what skopeo inspect prints as Name.
  std::string Name() const override { return ref_.Name(); }

  Result<RawManifest> GetManifest(const std::string& digest) override {
    if (digest.empty() || digest == top_.digest) return top_;
    auto parsed = Digest::Parse(digest);
    if (!parsed.ok()) return parsed.status().WithContext(Describe());
    auto r = client_->GetManifest(endpoint_.repository, digest);
    if (!r.ok()) return r.status();
    if (r->bytes.size() > kMaxManifestBytes) {
      return Status::Corruption(Where() + "@" + digest + ": manifest is too large (" +
                                std::to_string(r->bytes.size()) + " bytes)");
    }
    RETURN_IF_ERROR(CheckManifestDigest(r->bytes, digest, Where() + "@" + digest));
    RawManifest m;
    m.bytes = std::move(r->bytes);
    m.media_type = StripMediaTypeParams(r->content_type);
    m.digest = digest;
    return m;
  }

  Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& desc) override {
    auto parsed = Digest::Parse(desc.digest);
    if (!parsed.ok()) return parsed.status().WithContext(Describe());
    return client_->OpenBlob(endpoint_.repository, desc.digest, desc.size);
  }

  Result<std::vector<std::string>> ListTags() override {
    return client_->ListTags(endpoint_.repository);
  }

 private:
  std::string Where() const { return endpoint_.host + "/" + endpoint_.repository; }

  const Reference ref_;
  const Endpoint endpoint_;
  const std::unique_ptr<RegistryClient> client_;
  const RawManifest top_;
};

// The manifest the reference names, from one endpoint, checked against the pinned digest (or
// the registry's Docker-Content-Digest for a tag).
Result<RawManifest> FetchTopManifest(RegistryClient& client, const Endpoint& ep,
                                     const Reference& ref) {
  const std::string where = ep.host + "/" + ep.repository;
  const std::string want = ref.TagOrDigest();
  ASSIGN_OR_RETURN(ManifestResponse r, client.GetManifest(ep.repository, want));
  if (r.bytes.size() > kMaxManifestBytes) {
    return Status::Corruption(where + ": manifest is too large (" + std::to_string(r.bytes.size()) +
                              " bytes)");
  }
  RawManifest m;
  m.digest = Digest::Sha256Of(std::string_view(r.bytes)).String();
  m.bytes = std::move(r.bytes);
  m.media_type = StripMediaTypeParams(r.content_type);
  if (!ref.digest.empty()) {
    RETURN_IF_ERROR(CheckManifestDigest(m.bytes, ref.digest, where + "@" + ref.digest));
  } else if (r.docker_content_digest.rfind("sha256:", 0) == 0 &&
             r.docker_content_digest != m.digest) {
    return Status::Corruption(where + ":" + ref.tag + ": manifest digest mismatch: wanted " +
                              r.docker_content_digest + " (Docker-Content-Digest), got " +
                              m.digest + ": the registry served corrupt data");
  }
  return m;
}

std::string JoinRefs(const std::vector<Reference>& refs) {
  std::string out;
  for (const Reference& r : refs) out += (out.empty() ? "" : ", ") + r.String();
  return out;
}

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenRegistrySource(const ImageRef& image,
                                                        const FetchOptions& options) {
  std::vector<Reference> candidates;
  if (image.short_name) {
    std::string_view text = image.text;
    if (text.rfind("docker://", 0) == 0) text.remove_prefix(9);
    ASSIGN_OR_RETURN(candidates, ResolveShortName(options.registries, text));
    if (candidates.empty()) {
      return Status::NotFound("image " + image.text +
                              ": no registry to search for a short name (registries.conf)");
    }
  } else {
    candidates.push_back(image.ref);
  }

  Status first_real_error;  // the first candidate error other than NotFound
  Status first_not_found;
  for (const Reference& ref : candidates) {
    auto endpoints = EndpointsFor(options.registries, ref, options.insecure_registries);
    if (!endpoints.ok()) {
      if (candidates.size() == 1) return endpoints.status();
      if (first_real_error.ok()) first_real_error = endpoints.status();
      continue;
    }
    Status origin_error;
    Status mirror_error;
    for (const Endpoint& ep : *endpoints) {
      RegistryEndpointConfig config;
      config.host = ep.host;
      config.insecure = ep.insecure;
      config.auth_env = options.auth_env;
      config.certs_dir_override = options.cert_dir;
      config.stall_timeout = options.request_timeout;
      config.retry_budget = options.fetch_timeout;
      auto client = RegistryClient::Create(config);
      Status st;
      if (client.ok()) {
        auto top = FetchTopManifest(**client, ep, ref);
        if (top.ok()) {
          return std::unique_ptr<ImageSource>(std::make_unique<RegistrySource>(
              ref, ep, std::move(client).value(), std::move(top).value()));
        }
        st = top.status();
      } else {
        st = client.status();
      }
      if (ep.mirror) {
        if (mirror_error.ok()) mirror_error = st;
      } else if (origin_error.ok()) {
        origin_error = st;
      }
    }
    Status error = !origin_error.ok() ? origin_error : mirror_error;
    if (error.ok()) error = Status::NotFound(ref.String() + ": no endpoint to fetch it from");
    if (candidates.size() == 1) return error;
    if (error.IsNotFound()) {
      if (first_not_found.ok()) first_not_found = error;
    } else if (first_real_error.ok()) {
      first_real_error = error;
    }
  }
  if (!first_real_error.ok()) return first_real_error;
  return Status::NotFound("image " + image.text + " not found in any search registry (tried " +
                          JoinRefs(candidates) + "): " + first_not_found.message());
}

}  // namespace imagefs::fetch::internal
