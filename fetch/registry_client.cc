#include "fetch/registry_client.h"

#include <dirent.h>
#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "fetch/manifest.h"
#include "util/file.h"
#include "util/log.h"

namespace imagefs::fetch {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMaxRedirects = 5;
constexpr uint64_t kCoalesceGap = 64 << 10;
constexpr size_t kMaxInFlight = 8;

bool IsLoopbackHost(const std::string& host_port) {
  std::string host = host_port;
  if (!host.empty() && host.front() == '[') {
    host = host.substr(1, host.find(']') - 1);
  } else if (size_t colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  if (host == "localhost" || host == "::1") return true;
  in_addr addr{};
  if (::inet_pton(AF_INET, host.c_str(), &addr) == 1) {
    return (ntohl(addr.s_addr) >> 24) == 127;
  }
  return false;
}

std::string HostOf(const std::string& url) {
  std::string rest = url;
  if (size_t scheme = rest.find("://"); scheme != std::string::npos) rest = rest.substr(scheme + 3);
  return rest.substr(0, rest.find('/'));
}

std::string UrlEncode(const std::string& s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// The registry's error body: {"errors":[{"code":"MANIFEST_UNKNOWN","message":"..."}]}.
std::string RegistryErrorText(const HttpResponse& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
    const auto& e = j["errors"][0];
    if (e.is_object() && e.contains("message") && e["message"].is_string()) {
      return e["message"].get<std::string>();
    }
  }
  return "HTTP " + std::to_string(r.status);
}

bool Retryable(const Status& st) {
  return st.code() == Code::kUnavailable || st.code() == Code::kTimeout;
}

// TLS material from a certs.d-style directory.
TlsOptions TlsFromDir(const std::string& dir, TlsOptions tls) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return tls;
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  std::vector<std::string> cas;
  for (const auto& n : names) {
    auto ends = [&](std::string_view suf) {
      return n.size() > suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0;
    };
    if (ends(".crt")) cas.push_back(dir + "/" + n);
    if (ends(".cert")) {
      std::string key = dir + "/" + n.substr(0, n.size() - 5) + ".key";
      if (PathExists(key)) {
        tls.client_cert = dir + "/" + n;
        tls.client_key = key;
      }
    }
  }
  if (cas.size() == 1) {
    tls.ca_file = cas[0];
  } else if (cas.size() > 1) {
    // curl takes one CA bundle: join them into a private file.
    std::string bundle;
    for (const auto& c : cas) {
      auto text = ReadFile(c);
      if (text.ok()) bundle += *text + "\n";
    }
    std::string path = "/tmp/imagefs-ca-" + std::to_string(std::hash<std::string>()(bundle)) + ".pem";
    if (WriteFileAtomic(path, bundle).ok()) tls.ca_file = path;
  }
  return tls;
}

struct Token {
  std::string value;
  Clock::time_point expires;
};

// Shared by the client and the BlobSources it hands out (they may outlive it).
class Core : public std::enable_shared_from_this<Core> {
 public:
  explicit Core(RegistryEndpointConfig config) : config_(std::move(config)) {
    std::vector<std::string> dirs;
    if (!config_.certs_dir_override.empty()) {
      dirs.push_back(config_.certs_dir_override);
    } else {
      dirs.push_back("/etc/containers/certs.d/" + config_.host);
      dirs.push_back("/etc/docker/certs.d/" + config_.host);
    }
    for (const auto& d : dirs) tls_ = TlsFromDir(d, tls_);
    if (config_.insecure) tls_.verify = false;
  }

  const RegistryEndpointConfig& config() const { return config_; }
  uint64_t requests() const { return requests_.load(); }

  std::string BaseUrl() {
    std::lock_guard<std::mutex> lock(mu_);
    return base_url_;
  }

  Status Ping() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!base_url_.empty()) return Status::Ok();
    }
    bool allow_http = config_.insecure || IsLoopbackHost(config_.host);
    std::vector<std::string> schemes = {"https://"};
    if (allow_http) schemes.push_back("http://");
    Status first_error;
    for (const auto& scheme : schemes) {
      HttpRequest req;
      req.url = scheme + config_.host + "/v2/";
      req.tls = tls_;
      req.connect_timeout = std::chrono::milliseconds(5000);
      // Both schemes may be tried against a server that hangs: keep the sum under 30 s.
      req.stall_timeout = std::chrono::milliseconds(10000);
      auto r = Send(req);
      if (!r.ok()) {
        if (first_error.ok()) first_error = r.status();
        // A plain-HTTP server answers TLS with garbage: try the next scheme.
        continue;
      }
      if (r->status == 200 || r->status == 401) {
        std::lock_guard<std::mutex> lock(mu_);
        base_url_ = scheme + config_.host;
        if (r->status == 401) LearnChallenge(*r);
        return Status::Ok();
      }
      if (first_error.ok()) {
        first_error = Status::Unavailable(config_.host + " does not look like a registry: GET /v2/ answered HTTP " +
                                          std::to_string(r->status));
      }
    }
    return first_error;
  }

  Status CheckCredentials() {
    RETURN_IF_ERROR(Ping());
    ASSIGN_OR_RETURN(std::optional<Credential> cred, Credentials());
    if (!cred) return Status::Unauthenticated("no credentials for " + config_.host);
    HttpRequest req;
    req.url = BaseUrl() + "/v2/";
    ASSIGN_OR_RETURN(HttpResponse r, Authorized(req, ""));
    if (r.status == 200) return Status::Ok();
    if (r.status == 401 || r.status == 403) {
      return Status::Unauthenticated("the registry rejected the user name or password");
    }
    return Status::Unavailable(config_.host + ": GET /v2/ answered HTTP " + std::to_string(r.status));
  }

  // Sends a request relative to the base URL with auth for `scope`, retrying transient
  // failures and following redirects by hand.
  Result<HttpResponse> Authorized(HttpRequest req, const std::string& scope) {
    RETURN_IF_ERROR(Ping());
    req.tls = tls_;
    bool auth_refreshed = false;
    int redirects = 0;
    std::string origin_host = config_.host;
    for (int attempt = 0;;) {
      HttpRequest sent = req;
      bool same_host = HostOf(sent.url) == origin_host;
      if (same_host) {
        ASSIGN_OR_RETURN(std::string auth, AuthHeader(scope, false));
        if (!auth.empty()) sent.headers.emplace_back("Authorization", auth);
      } else {
        sent.tls = TlsOptions{};  // a storage backend elsewhere: default trust
      }
      auto r = Send(sent);
      if (!r.ok()) {
        if (Retryable(r.status()) && attempt < config_.max_retries && !streamed_) {
          Backoff(attempt++);
          continue;
        }
        return r.status();
      }
      long code = r->status;
      if ((code == 301 || code == 302 || code == 303 || code == 307 || code == 308) &&
          !r->Header("location").empty()) {
        if (++redirects > kMaxRedirects) {
          return Status::Unavailable(config_.host + ": too many redirects for " + req.url);
        }
        std::string loc = r->Header("location");
        if (loc.rfind("http", 0) != 0) {
          std::string base = req.url.substr(0, req.url.find('/', req.url.find("://") + 3));
          loc = base + (loc.front() == '/' ? "" : "/") + loc;
        }
        req.url = loc;  // Range and other headers stay; Authorization only on the origin
        if (code == 303) req.method = "GET";
        continue;
      }
      if (code == 401 && same_host && !auth_refreshed) {
        LearnChallenge(*r);
        auth_refreshed = true;
        ASSIGN_OR_RETURN(std::string auth, AuthHeader(scope, true));
        if (!auth.empty()) continue;
        return *r;
      }
      if ((code >= 500 || code == 429) && attempt < config_.max_retries) {
        Backoff(attempt++);
        continue;
      }
      return r;
    }
  }

  // Maps a final non-2xx response to a one-line error.
  Status ErrorFor(const HttpResponse& r, const std::string& what) {
    std::string text = RegistryErrorText(r);
    switch (r.status) {
      case 401: {
        auto cred = Credentials();
        if (cred.ok() && *cred) {
          return Status::Unauthenticated(what + ": unauthorized: the registry rejected the "
                                         "credentials for " + config_.host +
                                         " (imagefs login " + config_.host + ")");
        }
        return Status::Unauthenticated(what + ": unauthorized: " + config_.host +
                                       " needs credentials (imagefs login " + config_.host + ")");
      }
      case 403:
        return Status::PermissionDenied(what + ": access denied by " + config_.host + " (" + text + ")");
      case 404:
        return Status::NotFound(what + ": " + text);
      default:
        return Status::Unavailable(what + ": " + config_.host + " answered HTTP " +
                                   std::to_string(r.status) + " (" + text + ")");
    }
  }

  Result<HttpResponse> Send(const HttpRequest& req) {
    requests_.fetch_add(1);
    return http_.Do(req);
  }

 private:
  void Backoff(int attempt) {
    auto delay = config_.retry_base_delay * (1 << std::min(attempt, 6));
    std::this_thread::sleep_for(delay);
  }

  void LearnChallenge(const HttpResponse& r) {  // any lock state; takes challenge_mu_
    auto range = r.headers_multi.equal_range("www-authenticate");
    std::vector<AuthChallenge> all;
    for (auto it = range.first; it != range.second; ++it) {
      auto parsed = ParseWwwAuthenticate(it->second);
      if (parsed.ok()) all.insert(all.end(), parsed->begin(), parsed->end());
    }
    std::lock_guard<std::mutex> lock(challenge_mu_);
    for (const auto& c : all) {
      if (c.scheme == "bearer" || c.scheme == "basic") {
        challenge_ = c;
        if (c.scheme == "bearer") break;  // prefer Bearer when both are offered
      }
    }
  }

  Result<std::optional<Credential>> Credentials() {
    std::lock_guard<std::mutex> lock(cred_mu_);
    if (!cred_loaded_) {
      std::string host = config_.host == "registry-1.docker.io" ? "docker.io" : config_.host;
      ASSIGN_OR_RETURN(cred_, LookupCredential(config_.auth_env, host));
      cred_loaded_ = true;
    }
    return cred_;
  }

  // "" when no challenge is known yet (try anonymously first).
  Result<std::string> AuthHeader(const std::string& scope, bool refresh) {
    std::optional<AuthChallenge> ch;
    {
      std::lock_guard<std::mutex> lock(challenge_mu_);
      ch = challenge_;
    }
    if (!ch) return std::string();
    ASSIGN_OR_RETURN(std::optional<Credential> cred, Credentials());
    if (ch->scheme == "basic") {
      if (!cred) return std::string();
      return "Basic " + Base64Encode(cred->username + ":" + cred->password);
    }
    {
      std::lock_guard<std::mutex> lock(token_mu_);
      auto it = tokens_.find(scope);
      if (!refresh && it != tokens_.end() && it->second.expires > Clock::now()) {
        return "Bearer " + it->second.value;
      }
    }
    ASSIGN_OR_RETURN(Token token, FetchToken(*ch, scope, cred));
    std::lock_guard<std::mutex> lock(token_mu_);
    tokens_[scope] = token;
    return "Bearer " + token.value;
  }

  Result<Token> FetchToken(const AuthChallenge& ch, const std::string& scope,
                           const std::optional<Credential>& cred) {
    auto realm = ch.params.find("realm");
    if (realm == ch.params.end() || realm->second.empty()) {
      return Status::Unavailable(config_.host + ": Bearer challenge without a realm");
    }
    std::string url = realm->second;
    char sep = url.find('?') == std::string::npos ? '?' : '&';
    if (auto service = ch.params.find("service"); service != ch.params.end()) {
      url += sep + std::string("service=") + UrlEncode(service->second);
      sep = '&';
    }
    if (!scope.empty()) url += sep + std::string("scope=") + UrlEncode(scope);
    HttpRequest req;
    req.url = url;
    req.tls = HostOf(url) == config_.host ? tls_ : TlsOptions{};
    if (config_.insecure) req.tls.verify = false;
    if (cred && !cred->username.empty()) {
      req.headers.emplace_back("Authorization",
                               "Basic " + Base64Encode(cred->username + ":" + cred->password));
    }
    Result<HttpResponse> r = Status::Internal("unreachable");
    for (int attempt = 0;; ++attempt) {
      r = Send(req);
      bool again = !r.ok() ? Retryable(r.status()) : (r->status >= 500 || r->status == 429);
      if (!again || attempt >= config_.max_retries) break;
      Backoff(attempt);
    }
    if (!r.ok()) return r.status().WithContext("token server for " + config_.host);
    if (r->status == 401 || r->status == 403) {
      return Status::Unauthenticated(
          cred ? "unauthorized: the token server for " + config_.host +
                     " rejected the credentials (imagefs login " + config_.host + ")"
               : "unauthorized: " + config_.host + " needs credentials (imagefs login " +
                     config_.host + ")");
    }
    if (r->status != 200) {
      return Status::Unavailable("token server for " + config_.host + " answered HTTP " +
                                 std::to_string(r->status));
    }
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    Token t;
    if (j.is_object()) {
      for (const char* key : {"token", "access_token"}) {
        if (j.contains(key) && j[key].is_string() && !j[key].get<std::string>().empty()) {
          t.value = j[key].get<std::string>();
          break;
        }
      }
    }
    if (t.value.empty()) {
      return Status::Unavailable("token server for " + config_.host + " sent no token");
    }
    int64_t expires_in = 60;
    if (j.contains("expires_in") && j["expires_in"].is_number_integer()) {
      expires_in = std::max<int64_t>(j["expires_in"].get<int64_t>(), 10);
    }
    // Refresh a little early so a long read doesn't start with a token about to lapse.
    t.expires = Clock::now() + std::chrono::seconds(expires_in - std::min<int64_t>(expires_in / 10, 30));
    return t;
  }

  RegistryEndpointConfig config_;
  TlsOptions tls_;
  HttpClient http_;
  std::atomic<uint64_t> requests_{0};
  bool streamed_ = false;

  std::mutex mu_;  // guards base_url_
  std::string base_url_;
  std::mutex challenge_mu_;  // guards challenge_
  std::optional<AuthChallenge> challenge_;
  std::mutex cred_mu_;  // guards cred_, cred_loaded_
  std::optional<Credential> cred_;
  bool cred_loaded_ = false;
  std::mutex token_mu_;  // guards tokens_
  std::map<std::string, Token> tokens_;
};

std::string PullScope(const std::string& repository) { return "repository:" + repository + ":pull"; }

class RegistryBlobSource final : public BlobSource {
 public:
  RegistryBlobSource(std::shared_ptr<Core> core, std::string repository, std::string digest,
                     uint64_t size)
      : core_(std::move(core)), repository_(std::move(repository)), digest_(std::move(digest)), size_(size) {}

  uint64_t Size() const override { return size_; }

  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (offset >= size_ || out.empty()) return size_t{0};
    uint64_t len = std::min<uint64_t>(out.size(), size_ - offset);
    RETURN_IF_ERROR(Fetch(offset, len, out.data()));
    return static_cast<size_t>(len);
  }

  Status ReadRanges(std::span<const ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override {
    if (ranges.size() != outs.size()) return Status::Internal("ReadRanges: size mismatch");
    for (const auto& r : ranges) {
      if (r.end() > size_) {
        return Status::Corruption(Describe() + ": range " + std::to_string(r.offset) + "+" +
                                  std::to_string(r.length) + " is past the end");
      }
    }
    // Sort by offset and group neighbours closer than kCoalesceGap into one request.
    std::vector<size_t> order(ranges.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return ranges[a].offset < ranges[b].offset; });
    struct Group {
      uint64_t begin, end;
      std::vector<size_t> members;
    };
    std::vector<Group> groups;
    for (size_t i : order) {
      const ByteRange& r = ranges[i];
      if (r.length == 0) continue;
      if (!groups.empty() && r.offset <= groups.back().end + kCoalesceGap) {
        groups.back().end = std::max(groups.back().end, r.end());
        groups.back().members.push_back(i);
      } else {
        groups.push_back({r.offset, r.end(), {i}});
      }
    }
    std::vector<Status> results(groups.size());
    auto run = [&](size_t g) {
      const Group& grp = groups[g];
      std::vector<uint8_t> buf(grp.end - grp.begin);
      Status st = Fetch(grp.begin, buf.size(), buf.data());
      if (st.ok()) {
        for (size_t i : grp.members) {
          std::copy_n(buf.data() + (ranges[i].offset - grp.begin), ranges[i].length, outs[i].data());
        }
      }
      results[g] = st;
    };
    if (groups.size() == 1) {
      run(0);
    } else {
      std::atomic<size_t> next{0};
      std::vector<std::thread> workers;
      for (size_t w = 0; w < std::min(kMaxInFlight, groups.size()); ++w) {
        workers.emplace_back([&] {
          for (size_t g = next++; g < groups.size(); g = next++) run(g);
        });
      }
      for (auto& t : workers) t.join();
    }
    for (const Status& st : results) RETURN_IF_ERROR(st);
    return Status::Ok();
  }

  std::string Describe() const override {
    return "registry blob " + core_->config().host + "/" + repository_ + "@" + digest_;
  }

 private:
  Status Fetch(uint64_t offset, uint64_t len, uint8_t* out) {
    HttpRequest req;
    req.url = core_->BaseUrl() + "/v2/" + repository_ + "/blobs/" + digest_;
    req.headers.emplace_back("Range", "bytes=" + std::to_string(offset) + "-" +
                                          std::to_string(offset + len - 1));
    ASSIGN_OR_RETURN(HttpResponse r, core_->Authorized(req, PullScope(repository_)));
    std::string_view body = r.body;
    if (r.status == 200) {
      // A server that ignores Range sends the whole blob.
      if (body.size() != size_) {
        return Status::Corruption(Describe() + ": got " + std::to_string(body.size()) +
                                  " bytes for the whole blob, expected " + std::to_string(size_));
      }
      body = body.substr(offset, len);
    } else if (r.status == 206) {
      if (body.size() != len) {
        return Status::Corruption(Describe() + ": range " + std::to_string(offset) + "+" +
                                  std::to_string(len) + " returned " + std::to_string(body.size()) +
                                  " bytes (truncated blob?)");
      }
    } else if (r.status == 416) {
      return Status::Corruption(Describe() + ": range " + std::to_string(offset) + "+" +
                                std::to_string(len) + " is past the end of the stored blob "
                                "(truncated blob?)");
    } else {
      return core_->ErrorFor(r, Describe());
    }
    std::copy(body.begin(), body.end(), out);
    return Status::Ok();
  }

  std::shared_ptr<Core> core_;
  std::string repository_;
  std::string digest_;
  uint64_t size_;
};

class RegistryClientImpl final : public RegistryClient {
 public:
  explicit RegistryClientImpl(RegistryEndpointConfig config)
      : core_(std::make_shared<Core>(std::move(config))) {}

  Status Ping() override { return core_->Ping(); }
  Status CheckCredentials() override { return core_->CheckCredentials(); }
  uint64_t RequestCount() const override { return core_->requests(); }
  std::string BaseUrl() const override { return core_->BaseUrl(); }

  Result<ManifestResponse> GetManifest(const std::string& repository,
                                       const std::string& tag_or_digest) override {
    HttpRequest req;
    req.url = core_->BaseUrl() + "/v2/" + repository + "/manifests/" + tag_or_digest;
    RETURN_IF_ERROR(core_->Ping());
    req.url = core_->BaseUrl() + "/v2/" + repository + "/manifests/" + tag_or_digest;
    req.headers.emplace_back("Accept", ManifestAcceptHeader());
    std::string what = Name(repository, tag_or_digest);
    ASSIGN_OR_RETURN(HttpResponse r, core_->Authorized(req, PullScope(repository)));
    if (r.status != 200) {
      if (r.status == 404) {
        return Status::NotFound(what + ": manifest unknown: check the name and tag");
      }
      return core_->ErrorFor(r, what);
    }
    ManifestResponse out;
    out.bytes = std::move(r.body);
    out.content_type = r.Header("content-type");
    out.docker_content_digest = r.Header("docker-content-digest");
    return out;
  }

  Result<uint64_t> BlobSize(const std::string& repository, const std::string& digest) override {
    RETURN_IF_ERROR(core_->Ping());
    HttpRequest req;
    req.method = "HEAD";
    req.url = core_->BaseUrl() + "/v2/" + repository + "/blobs/" + digest;
    ASSIGN_OR_RETURN(HttpResponse r, core_->Authorized(req, PullScope(repository)));
    if (r.status != 200) {
      if (r.status == 404) return Status::NotFound(Name(repository, digest) + ": blob unknown");
      return core_->ErrorFor(r, Name(repository, digest));
    }
    std::string len = r.Header("content-length");
    if (len.empty()) return Status::Unavailable(Name(repository, digest) + ": no Content-Length");
    return static_cast<uint64_t>(std::stoull(len));
  }

  Result<std::unique_ptr<BlobSource>> OpenBlob(const std::string& repository,
                                               const std::string& digest, int64_t size) override {
    RETURN_IF_ERROR(core_->Ping());
    uint64_t n;
    if (size < 0) {
      ASSIGN_OR_RETURN(n, BlobSize(repository, digest));
    } else {
      n = static_cast<uint64_t>(size);
    }
    return std::unique_ptr<BlobSource>(
        std::make_unique<RegistryBlobSource>(core_, repository, digest, n));
  }

  Status GetBlob(const std::string& repository, const std::string& digest,
                 const std::function<bool(const char*, size_t)>& sink) override {
    RETURN_IF_ERROR(core_->Ping());
    HttpRequest req;
    req.url = core_->BaseUrl() + "/v2/" + repository + "/blobs/" + digest;
    bool started = false;
    long status = 0;
    req.on_data = [&](const char* data, size_t n) {
      started = true;
      return sink(data, n);
    };
    (void)status;
    ASSIGN_OR_RETURN(HttpResponse r, core_->Authorized(req, PullScope(repository)));
    if (r.status != 200) {
      if (r.status == 404) return Status::NotFound(Name(repository, digest) + ": blob unknown");
      return core_->ErrorFor(r, Name(repository, digest));
    }
    (void)started;
    return Status::Ok();
  }

  Result<std::vector<std::string>> ListTags(const std::string& repository) override {
    RETURN_IF_ERROR(core_->Ping());
    std::vector<std::string> tags;
    std::string url = core_->BaseUrl() + "/v2/" + repository + "/tags/list";
    for (int page = 0; page < 100 && !url.empty(); ++page) {
      HttpRequest req;
      req.url = url;
      ASSIGN_OR_RETURN(HttpResponse r, core_->Authorized(req, PullScope(repository)));
      if (r.status != 200) return core_->ErrorFor(r, core_->config().host + "/" + repository);
      auto j = nlohmann::json::parse(r.body, nullptr, false);
      if (j.is_object() && j.contains("tags") && j["tags"].is_array()) {
        for (const auto& t : j["tags"]) {
          if (t.is_string()) tags.push_back(t.get<std::string>());
        }
      }
      // Link: </v2/x/tags/list?last=a&n=100>; rel="next"
      url.clear();
      std::string link = r.Header("link");
      size_t lt = link.find('<'), gt = link.find('>');
      if (lt != std::string::npos && gt != std::string::npos && gt > lt) {
        std::string next = link.substr(lt + 1, gt - lt - 1);
        url = next.rfind("http", 0) == 0 ? next : core_->BaseUrl() + next;
      }
    }
    return tags;
  }

 private:
  std::string Name(const std::string& repository, const std::string& ref) const {
    std::string sep = ref.rfind("sha256:", 0) == 0 ? "@" : ":";
    return core_->config().host + "/" + repository + sep + ref;
  }

  std::shared_ptr<Core> core_;
};

}  // namespace

Result<std::unique_ptr<RegistryClient>> RegistryClient::Create(RegistryEndpointConfig config) {
  if (config.host.empty()) return Status::InvalidArgument("registry host is empty");
  return std::unique_ptr<RegistryClient>(std::make_unique<RegistryClientImpl>(std::move(config)));
}

}  // namespace imagefs::fetch
