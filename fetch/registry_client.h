#pragma once

// Distribution-spec (OCI distribution / Docker registry v2) client for one endpoint.
//
// Scheme: HTTPS first; plain HTTP is allowed when the endpoint is insecure (registries.conf
// `insecure = true`, --insecure-registry) or the host is localhost / 127.0.0.0/8 / ::1, as
// Docker does. TLS material comes from /etc/containers/certs.d/HOST:PORT/ and
// /etc/docker/certs.d/HOST:PORT/ (*.crt CAs, *.cert/*.key client pairs).
//
// Auth: on 401 the WWW-Authenticate challenge is followed: Bearer (GET realm?service=&scope=
// with Basic credentials if any; "token" or "access_token"; expires_in honoured; a 401 with
// a cached token refreshes once) or Basic. Tokens are cached per scope.
//
// Redirects (302/307) on blob GETs are followed by hand: Range is re-sent, Authorization is
// not forwarded to another host. 5xx/429/connection resets retry with backoff (bounded);
// 401/403/404 are immediate, clear errors.
//
// Thread safety: all methods may be called concurrently.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fetch/auth.h"
#include "fetch/blob_source.h"
#include "fetch/http.h"
#include "util/status.h"

namespace imagefs::fetch {

struct RegistryEndpointConfig {
  std::string host;          // "localhost:5000"
  bool insecure = false;     // allow plain HTTP and skip TLS verification
  // A directory of *.crt / *.cert / *.key used instead of /etc/containers/certs.d/HOST and
  // /etc/docker/certs.d/HOST (skopeo's --cert-dir).
  std::string certs_dir_override;
  AuthEnv auth_env;
  // Retries after the first attempt for 5xx/429/broken connections; the delay doubles
  // from retry_base_delay (a Retry-After of up to 10 s is honoured).
  int max_retries = 4;
  std::chrono::milliseconds retry_base_delay{200};
  std::chrono::milliseconds connect_timeout{10000};
  // A request fails with kTimeout when no byte arrives for this long.
  std::chrono::milliseconds stall_timeout{20000};
  // When > 0, the bound on one request's whole life (imagefs mount --fetch-timeout):
  // transient failures (refused, reset, stall, 5xx/429) are retried, at most 1 s apart and
  // regardless of max_retries, until it is spent, and each attempt's connect and stall
  // timeouts are cut to what is left. A registry that goes away fails the request within
  // about this long; one that comes back within it lets the request succeed.
  std::chrono::milliseconds retry_budget{0};
};

struct ManifestResponse {
  std::string bytes;
  std::string content_type;
  std::string docker_content_digest;  // header value, may be empty
};

class RegistryClient {
 public:
  static Result<std::unique_ptr<RegistryClient>> Create(RegistryEndpointConfig config);
  virtual ~RegistryClient() = default;
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  // GET /v2/: decides the scheme and learns the auth challenge. Errors say which host and
  // why (refused, unknown host, TLS, unauthorized).
  virtual Status Ping() = 0;
  virtual Result<ManifestResponse> GetManifest(const std::string& repository,
                                               const std::string& tag_or_digest) = 0;
  // HEAD on a blob; returns its size.
  virtual Result<uint64_t> BlobSize(const std::string& repository, const std::string& digest) = 0;
  // Range-reading BlobSource for a blob of known size (size < 0: learned with HEAD).
  // ReadAt sends one "Range: bytes=a-b" GET. ReadRanges merges ranges whose gap is under
  // 64 KiB into one request (up to 16 MiB each) and keeps up to 8 requests in flight.
  // Every response's length is checked. The source may outlive the client.
  virtual Result<std::unique_ptr<BlobSource>> OpenBlob(const std::string& repository,
                                                       const std::string& digest,
                                                       int64_t size) = 0;
  // Streams the whole blob to sink (sink returns false to abort).
  virtual Status GetBlob(const std::string& repository, const std::string& digest,
                         const std::function<bool(const char*, size_t)>& sink) = 0;
  virtual Result<std::vector<std::string>> ListTags(const std::string& repository) = 0;
  // The base URL in use once pinged ("https://localhost:5000").
  virtual std::string BaseUrl() const = 0;
  // For `login`: authenticates with the stored credentials even when /v2/ would answer
  // anonymously for some scopes (Bearer: fetch a token without scope and retry /v2/).
  // kUnauthenticated when the registry rejects them.
  virtual Status CheckCredentials() = 0;
  // HTTP requests sent so far, to any host (pings, token fetches, redirects and retries
  // included; tests assert coalescing with it).
  virtual uint64_t RequestCount() const = 0;

  // ---- Push. Every request below asks for the scope "repository:NAME:pull,push", so one
  // token serves a whole push. 401/403 become one line naming HOST/NAME and the fix
  // ("imagefs login HOST").

  // HEAD /v2/NAME/blobs/DIGEST: the blob's size when the repository has it, nullopt on 404.
  virtual Result<std::optional<uint64_t>> StatBlobForPush(const std::string& repository,
                                                          const std::string& digest) = 0;
  // Uploads `body` as blob `digest` (sha256 only): POST /v2/NAME/blobs/uploads/, then
  // PUT LOCATION?digest=DIGEST with the whole body when it is at most kMonolithicUploadMax
  // bytes, else PATCH chunks of kUploadChunk bytes and a final empty PUT. The bytes are
  // hashed as they are sent; when they do not hash to `digest` the upload session is
  // cancelled (DELETE) before the PUT, so the registry never stores the blob (kCorruption).
  // A transient failure restarts the whole upload (bounded retries).
  virtual Status UploadBlob(const std::string& repository, const std::string& digest,
                            BlobSource& body) = 0;
  // PUT /v2/NAME/manifests/TAG_OR_DIGEST with Content-Type media_type. Returns the digest
  // of the stored manifest (the Docker-Content-Digest header, else the sha256 of bytes).
  virtual Result<std::string> PutManifest(const std::string& repository,
                                          const std::string& tag_or_digest,
                                          const std::string& media_type,
                                          const std::string& bytes) = 0;

  static constexpr uint64_t kMonolithicUploadMax = 32 << 20;
  static constexpr uint64_t kUploadChunk = 16 << 20;

 protected:
  RegistryClient() = default;
};

}  // namespace imagefs::fetch
