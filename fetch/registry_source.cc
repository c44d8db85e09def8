// docker:// images: short-name resolution, mirrors then origin, digest checks.

#include <map>

#include "fetch/registry_client.h"
#include "fetch/sources_internal.h"
#include "util/digest.h"

namespace imagefs::fetch::internal {
namespace {

class RegistrySource final : public ImageSource {
 public:
  RegistrySource(Reference ref, std::unique_ptr<RegistryClient> client, Endpoint endpoint)
      : ref_(std::move(ref)), client_(std::move(client)), endpoint_(std::move(endpoint)) {}

  std::string Describe() const override { return "docker://" + ref_.String(); }
  std::string Name() const override {
    Reference r = ref_;
    r.tag.clear();
    r.digest.clear();
    return r.String();
  }

  Result<RawManifest> GetManifest(const std::string& digest) override {
    if (digest.empty() && top_) return *top_;
    std::string want = digest.empty() ? ref_.TagOrDigest() : digest;
    ASSIGN_OR_RETURN(ManifestResponse r, client_->GetManifest(endpoint_.repository, want));
    return Verify(std::move(r), want, digest.empty());
  }

  Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& desc) override {
    return client_->OpenBlob(endpoint_.repository, desc.digest, desc.size);
  }

  Result<std::vector<std::string>> ListTags() override {
    return client_->ListTags(endpoint_.repository);
  }

  // Fetches the manifest the reference names, once; the first endpoint that has it wins.
  Status Prime() {
    ASSIGN_OR_RETURN(RawManifest m, GetManifest(""));
    top_ = std::move(m);
    return Status::Ok();
  }

 private:
  Result<RawManifest> Verify(ManifestResponse r, const std::string& want, bool top) {
    RawManifest m;
    m.bytes = std::move(r.bytes);
    m.media_type = r.content_type;
    if (size_t semi = m.media_type.find(';'); semi != std::string::npos) m.media_type.resize(semi);
    Digest got = Digest::Sha256Of(std::string_view(m.bytes));
    m.digest = got.String();
    std::string what = endpoint_.host + "/" + endpoint_.repository;
    // By digest: the bytes must hash to it. By tag: to the registry's Docker-Content-Digest.
    std::string expected = want.find(':') != std::string::npos && want.rfind("sha", 0) == 0
                               ? want
                               : r.docker_content_digest;
    if (!top && expected.empty()) expected = want;
    if (!expected.empty() && expected.rfind("sha256:", 0) == 0 && expected != m.digest) {
      return Status::Corruption("manifest " + what + "@" + expected + ": digest mismatch (got " +
                                m.digest + "): the registry served corrupt data");
    }
    return m;
  }

  Reference ref_;
  std::unique_ptr<RegistryClient> client_;
  Endpoint endpoint_;
  std::optional<RawManifest> top_;
};

bool IsInsecureHost(const FetchOptions& options, const std::string& host) {
  for (const auto& h : options.insecure_registries) {
    if (h == host) return true;
  }
  return false;
}

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenRegistrySource(const ImageRef& image,
                                                        const FetchOptions& options) {
  std::vector<Reference> candidates;
  if (image.short_name) {
    std::string text = image.text.rfind("docker://", 0) == 0 ? image.text.substr(9) : image.text;
    ASSIGN_OR_RETURN(candidates, ResolveShortName(options.registries, text));
  } else {
    candidates.push_back(image.ref);
  }
  Status first_error;
  bool all_not_found = true;
  std::string tried;
  for (const Reference& ref : candidates) {
    ASSIGN_OR_RETURN(std::vector<Endpoint> endpoints,
                     EndpointsFor(options.registries, ref, options.insecure_registries));
    Status origin_error;
    for (const Endpoint& ep : endpoints) {
      RegistryEndpointConfig config;
      config.host = ep.host;
      config.insecure = ep.insecure || IsInsecureHost(options, ep.host);
      config.auth_env = options.auth_env;
      config.certs_dir_override = options.cert_dir;
      config.stall_timeout = options.request_timeout;
      ASSIGN_OR_RETURN(auto client, RegistryClient::Create(config));
      auto source = std::make_unique<RegistrySource>(ref, std::move(client), ep);
      Status st = source->Prime();
      if (st.ok()) return std::unique_ptr<ImageSource>(std::move(source));
      // The origin's error is the useful one; a mirror's is remembered only if nothing else.
      if (!ep.mirror || origin_error.ok()) origin_error = st;
      // Corrupt data or bad credentials are not a reason to try another endpoint silently.
      if (st.code() == Code::kCorruption) return st;
    }
    if (!origin_error.IsNotFound()) all_not_found = false;
    if (first_error.ok() || (first_error.IsNotFound() && !origin_error.IsNotFound())) {
      first_error = origin_error;
    }
    tried += (tried.empty() ? "" : ", ") + ref.String();
  }
  if (candidates.size() > 1 && all_not_found) {
    return Status::NotFound("image " + image.text + " not found in any search registry (tried " +
                            tried + ")");
  }
  return first_error;
}

}  // namespace imagefs::fetch::internal
