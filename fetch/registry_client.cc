#include "fetch/registry_client.h"

#include <arpa/inet.h>
#include <dirent.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "fetch/manifest.h"
#include "util/ascii.h"
#include "util/digest.h"
#include "util/file.h"
#include "util/log.h"

namespace imagefs::fetch {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMaxRedirects = 5;
constexpr uint64_t kCoalesceGap = 64 << 10;       // merge ranges closer than this
constexpr uint64_t kMaxCoalesced = 16 << 20;      // but keep one request at most this big
constexpr size_t kMaxInFlight = 8;
// A request larger than two of these is split into parallel requests of at least this
// much (at most kMaxInFlight at once): over a WAN each connection starts slow (TCP slow
// start doubles its window once per round trip), so 4 MB on one fresh connection takes ~8
// round trips, in 8 parts ~5. The bytes sent are the same.
constexpr uint64_t kSplitPiece = 128 << 10;
constexpr auto kMaxRetryAfter = std::chrono::seconds(10);

// "localhost:5000" -> "localhost", "[::1]:5000" -> "::1", "10.0.0.1" -> "10.0.0.1".
std::string HostName(const std::string& host_port) {
  if (!host_port.empty() && host_port.front() == '[') {
    size_t close = host_port.find(']');
    return host_port.substr(1, close == std::string::npos ? std::string::npos : close - 1);
  }
  size_t colon = host_port.find(':');
  // More than one colon without brackets: a bare IPv6 address.
  if (colon != std::string::npos && host_port.find(':', colon + 1) == std::string::npos) {
    return host_port.substr(0, colon);
  }
  return host_port;
}

bool IsLoopbackHost(const std::string& host_port) {
  std::string host = HostName(host_port);
  if (host == "localhost" || host == "::1") return true;
  in_addr addr{};
  if (::inet_pton(AF_INET, host.c_str(), &addr) == 1) return (ntohl(addr.s_addr) >> 24) == 127;
  return false;
}

// "https://a:5000/v2/x" -> "a:5000".
std::string HostOf(const std::string& url) {
  std::string rest = url;
  if (size_t scheme = rest.find("://"); scheme != std::string::npos) rest = rest.substr(scheme + 3);
  return rest.substr(0, rest.find_first_of("/?#"));
}

// "https://a:5000/v2/x" -> "https://a:5000".
std::string OriginOf(const std::string& url) {
  size_t scheme = url.find("://");
  size_t start = scheme == std::string::npos ? 0 : scheme + 3;
  size_t slash = url.find_first_of("/?#", start);
  return url.substr(0, slash);
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

// "bytes 100-199/5000" -> {100, 199}.
std::optional<std::pair<uint64_t, uint64_t>> ParseContentRange(std::string_view v) {
  if (v.rfind("bytes ", 0) != 0) return std::nullopt;
  v.remove_prefix(6);
  size_t dash = v.find('-');
  size_t slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) {
    return std::nullopt;
  }
  auto first = ParseAsciiU64(v.substr(0, dash));
  auto last = ParseAsciiU64(v.substr(dash + 1, slash - dash - 1));
  if (!first || !last || *last < *first) return std::nullopt;
  return std::make_pair(*first, *last);
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

bool RetryableTransport(TransportError e) {
  switch (e) {
    case TransportError::kRefused:
    case TransportError::kConnect:
    case TransportError::kConnectTimeout:
    case TransportError::kStall:
    case TransportError::kReset:
      return true;
    default:
      return false;
  }
}

bool RetryableStatus(long code) { return code >= 500 || code == 429; }

std::string Seconds(std::chrono::milliseconds ms) {
  return std::to_string((ms.count() + 999) / 1000) + "s";
}

// TLS material from a certs.d-style directory: *.crt CAs, *.cert + *.key client pairs.
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
  if (cas.size() == 1 && tls.ca_file.empty()) {
    tls.ca_file = cas[0];
  } else if (!cas.empty()) {
    // curl takes one CA file: join them (and any earlier one) into a bundle of our own.
    std::string bundle;
    if (!tls.ca_file.empty()) cas.insert(cas.begin(), tls.ca_file);
    for (const auto& c : cas) {
      auto text = ReadFile(c);
      if (text.ok()) bundle += *text + "\n";
    }
    std::string path = "/tmp/imagefs-ca-" + std::to_string(::getuid()) + "-" +
                       std::to_string(std::hash<std::string>()(bundle)) + ".pem";
    if (WriteFileAtomic(path, bundle, 0600).ok()) tls.ca_file = path;
  }
  return tls;
}

struct Token {
  std::string value;
  Clock::time_point expires;
};

std::string PullScope(const std::string& repository) { return "repository:" + repository + ":pull"; }
std::string PushScope(const std::string& repository) {
  return "repository:" + repository + ":pull,push";
}

// State shared by the client and the BlobSources it hands out (they may outlive it).
class Core {
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
  const std::string& host() const { return config_.host; }
  uint64_t requests() const { return requests_.load(); }

  std::string BaseUrl() {
    std::lock_guard<std::mutex> lock(mu_);
    return base_url_;
  }

  // Decides the scheme once: HTTPS, then plain HTTP where allowed (GET /v2/).
  Status Ping() {
    if (!BaseUrl().empty()) return Status::Ok();
    Status not_registry;
    ASSIGN_OR_RETURN(std::optional<HttpResponse> r,
                     Probe(NewRequest("GET", "/v2/"), &not_registry, nullptr));
    if (!r) return not_registry;
    return Status::Ok();
  }

  // As Authorized, for a request whose url is a path ("/v2/x/manifests/t"). While the
  // scheme is undecided the request itself decides it (Probe), without a /v2/ ping first:
  // one round trip less before the first manifest. A 401 met on the way has its challenge
  // learnt, and Authorized sends the request again with the credentials, as after a ping.
  Result<HttpResponse> AuthorizedPath(HttpRequest req, const std::string& scope) {
    int attempts = 0;
    if (BaseUrl().empty()) {
      Status not_registry;
      bool busy = false;
      ASSIGN_OR_RETURN(std::optional<HttpResponse> r, Probe(req, &not_registry, &busy));
      if (r && r->status != 401) return *std::move(r);
      // No answer like a registry's (a 404 of a mirror, a web server, a 5xx): the ping
      // decides, and words the failure, as before. A 5xx / 429 counts as a first attempt.
      if (!r) RETURN_IF_ERROR(Ping());
      if (busy) attempts = 1;
    }
    req.url = BaseUrl() + req.url;
    return Authorized(std::move(req), scope, /*retry_transport=*/true, attempts);
  }

  // Sends `path_req` (its url a path) over HTTPS and, where allowed, plain HTTP, and adopts
  // the first scheme, in that order, that answers like a registry (200 or 401; a 401's
  // challenge is learnt). Both schemes are tried at once when the host names its port (both
  // then reach the same server, which answers each at once; without a port plain HTTP goes
  // to port 80, which may hang, so it waits for HTTPS to fail). Returns that answer; nullopt
  // with *not_registry set when the server answered, but not like a registry; the first
  // transport failure when none answered. (*not_registry is the first failure, as the
  // user should read it.)
  // With `busy` (not null) an answer 5xx / 429 is not retried here: *busy says there was
  // one, and the caller's own retries take over.
  Result<std::optional<HttpResponse>> Probe(const HttpRequest& path_req, Status* not_registry,
                                            bool* busy) {
    bool allow_http = config_.insecure || IsLoopbackHost(config_.host);
    std::vector<std::string> schemes = {"https://"};
    if (allow_http) schemes.push_back("http://");
    auto attempt = [&](const std::string& scheme) -> Result<HttpResponse> {
      HttpRequest req = path_req;
      req.url = scheme + config_.host + path_req.url;
      Result<HttpResponse> r = Status::Internal("unreachable");
      for (int n = 0;; ++n) {
        r = Send(req);
        if (!r.ok() || !RetryableStatus(r->status) || busy != nullptr ||
            n >= config_.max_retries) {
          return r;
        }
        Backoff(n, *r);
      }
    };
    std::vector<std::optional<Result<HttpResponse>>> answers(schemes.size());
    const bool at_once = schemes.size() > 1 && config_.host.find(':') != std::string::npos;
    if (at_once) {
      auto https = std::async(std::launch::async, attempt, schemes[0]);
      answers[1] = attempt(schemes[1]);
      answers[0] = https.get();
    }
    Status first_error;
    bool answered = false;  // some scheme answered HTTP, not as a registry
    for (size_t i = 0; i < schemes.size(); ++i) {
      if (!answers[i]) answers[i] = attempt(schemes[i]);
      Result<HttpResponse>& r = *answers[i];
      if (!r.ok()) {
        // A plain-HTTP server answers a TLS hello with garbage: try the next scheme, but
        // report the first failure (refused, unknown host, TLS) if none works.
        if (first_error.ok()) first_error = r.status();
        // No other scheme helps a host that does not resolve or a server that hangs
        // (and trying would double the wait).
        if (r.status().message().find("unknown host") == 0) break;
        if (r.status().code() == Code::kTimeout) break;
        continue;
      }
      if (r->status == 200 || r->status == 401) {
        if (r->status == 401) LearnChallenge(*r);
        std::lock_guard<std::mutex> lock(mu_);
        base_url_ = schemes[i] + config_.host;
        return std::optional<HttpResponse>(std::move(*r));
      }
      answered = true;
      if (busy != nullptr && RetryableStatus(r->status)) *busy = true;
      if (first_error.ok()) {
        first_error = Status::Unavailable(
            config_.host + " does not look like a registry: " + path_req.method + " " +
            schemes[i] + config_.host + path_req.url + " answered HTTP " +
            std::to_string(r->status));
      }
    }
    if (!answered) return first_error;
    *not_registry = first_error;
    return std::optional<HttpResponse>();
  }

  Status CheckCredentials() {
    RETURN_IF_ERROR(Ping());
    ASSIGN_OR_RETURN(std::optional<Credential> cred, Credentials());
    if (!cred) return Status::Unauthenticated("no credentials for " + config_.host);
    ASSIGN_OR_RETURN(HttpResponse r, Authorized(NewRequest("GET", BaseUrl() + "/v2/"), ""));
    if (r.status == 200) return Status::Ok();
    if (r.status == 401 || r.status == 403) {
      return Status::Unauthenticated(config_.host + " rejected the user name or password");
    }
    return Status::Unavailable(config_.host + ": GET /v2/ answered HTTP " + std::to_string(r.status));
  }

  HttpRequest NewRequest(const std::string& method, const std::string& url) const {
    HttpRequest req;
    req.method = method;
    req.url = url;
    req.tls = tls_;
    req.connect_timeout = config_.connect_timeout;
    req.stall_timeout = config_.stall_timeout;
    return req;
  }

  // Sends a request for `scope` with the registry's auth, retrying transient failures
  // (transport ones only when retry_transport) and following redirects by hand: the
  // request's headers (Range) go along, Authorization only to the registry's own host.
  // `first_attempt` > 0: that many attempts were already answered 5xx / 429 (the first
  // one backs off before it is sent).
  Result<HttpResponse> Authorized(HttpRequest req, const std::string& scope,
                                  bool retry_transport = true, int first_attempt = 0) {
    RETURN_IF_ERROR(Ping());
    bool auth_refreshed = false;
    int redirects = 0;
    std::string rejected_token;
    const Clock::time_point deadline = Clock::now() + config_.retry_budget;
    const bool budgeted = config_.retry_budget.count() > 0;
    // Whether another attempt fits: within the budget when there is one, else max_retries.
    auto may_retry = [&](int attempt) {
      return budgeted ? Clock::now() + std::chrono::milliseconds(50) < deadline
                      : attempt < config_.max_retries;
    };
    auto backoff = [&](int attempt, const std::optional<HttpResponse>& r) {
      if (!budgeted) return Backoff(attempt, r);
      auto delay = std::min<Clock::duration>(
          std::min<Clock::duration>(config_.retry_base_delay * (int64_t{1} << std::min(attempt, 6)),
                                    std::chrono::seconds(1)),
          deadline - Clock::now());
      if (delay > Clock::duration::zero()) std::this_thread::sleep_for(delay);
    };
    if (first_attempt > 0) {
      if (!may_retry(first_attempt - 1)) first_attempt = 0;  // none left: send it once more
      if (first_attempt > 0) backoff(first_attempt - 1, std::nullopt);
    }
    for (int attempt = first_attempt;;) {
      HttpRequest sent = req;
      if (budgeted) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        left = std::max(left, std::chrono::milliseconds(1000));
        sent.stall_timeout = std::min(sent.stall_timeout, left);
        sent.connect_timeout = std::min(sent.connect_timeout, left);
      }
      bool same_host = HostOf(sent.url) == config_.host;
      std::string auth;
      if (same_host) {
        ASSIGN_OR_RETURN(auth, AuthHeader(scope, rejected_token));
        if (!auth.empty()) sent.headers.emplace_back("Authorization", auth);
      } else {
        sent.tls = TlsOptions{};  // a storage backend elsewhere: default trust
        sent.tls.verify = !config_.insecure;
      }
      TransportError kind = TransportError::kNone;
      auto r = Send(sent, &kind);
      if (!r.ok()) {
        if (retry_transport && RetryableTransport(kind) && may_retry(attempt)) {
          backoff(attempt++, std::nullopt);
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
        if (loc.find("://") == std::string::npos) {
          loc = OriginOf(sent.url) + (loc.front() == '/' ? "" : "/") + loc;
        }
        req.url = loc;
        if (code == 303) req.method = "GET";
        continue;
      }
      if (code == 401 && same_host && !auth_refreshed) {
        // No challenge known yet, or the token went stale: learn it and try once more.
        LearnChallenge(*r);
        auth_refreshed = true;
        if (auth.rfind("Bearer ", 0) == 0) rejected_token = auth.substr(7);
        ASSIGN_OR_RETURN(std::string again, AuthHeader(scope, rejected_token));
        if (!again.empty() && again != auth) continue;
        return r;
      }
      if (RetryableStatus(code) && may_retry(attempt)) {
        backoff(attempt++, *r);
        continue;
      }
      return r;
    }
  }

  // Maps a final unexpected response to a one-line error. `what` names the object
  // ("localhost:5000/app:1"), `unknown` is the 404 wording ("manifest unknown").
  Status ErrorFor(const HttpResponse& r, const std::string& what, const std::string& unknown) {
    std::string text = RegistryErrorText(r);
    switch (r.status) {
      case 401: {
        auto cred = Credentials();
        if (cred.ok() && *cred) {
          return Status::Unauthenticated(what + ": unauthorized: check the credentials for " +
                                         config_.host + " (imagefs login " + config_.host + ")");
        }
        return Status::Unauthenticated(what + ": unauthorized: " + config_.host +
                                       " needs credentials (imagefs login " + config_.host + ")");
      }
      case 403:
        return Status::PermissionDenied(what + ": access denied by " + config_.host + " (" + text +
                                        "): check that this account may pull it");
      case 404:
        return Status::NotFound(what + ": " + unknown);
      case 416:
        return Status::Corruption(what + ": range not satisfiable (" + text + ")");
      default:
        return Status::Unavailable(what + ": " + config_.host + " answered HTTP " +
                                   std::to_string(r.status) + " (" + text + ")");
    }
  }

  // As ErrorFor, worded for a push: 401/403 say that push access to `repo_name`
  // ("localhost:5000/app") was denied and how to fix it.
  Status PushErrorFor(const HttpResponse& r, const std::string& repo_name,
                      const std::string& what, const std::string& unknown) {
    const std::string login = "imagefs login " + config_.host;
    if (r.status == 401) {
      auto cred = Credentials();
      if (cred.ok() && *cred) {
        return Status::Unauthenticated("denied: push access to " + repo_name + ": " + config_.host +
                                       " rejected the credentials or this account may not push "
                                       "there; check them with " + login);
      }
      return Status::Unauthenticated("denied: push access to " + repo_name +
                                     " needs credentials: log in with " + login);
    }
    if (r.status == 403) {
      return Status::PermissionDenied("denied: push access to " + repo_name + " (" +
                                      RegistryErrorText(r) +
                                      "): this account may not push there; log in as another "
                                      "user with " + login);
    }
    return ErrorFor(r, what, unknown);
  }

  // Sends one request, counting it, and words transport failures for a user.
  Result<HttpResponse> Send(const HttpRequest& req, TransportError* kind_out = nullptr) {
    requests_.fetch_add(1);
    TransportError kind = TransportError::kNone;
    auto r = http_.Do(req, &kind);
    if (kind_out != nullptr) *kind_out = kind;
    if (r.ok()) return r;
    return Explain(req, r.status(), kind);
  }

  void Backoff(int attempt, const std::optional<HttpResponse>& r) {
    auto delay = config_.retry_base_delay * (int64_t{1} << std::min(attempt, 6));
    if (r) {
      if (auto after = ParseAsciiU64(r->Header("retry-after"))) {
        auto wanted = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::seconds(std::min<uint64_t>(*after, kMaxRetryAfter.count())));
        delay = std::max(delay, wanted);
      }
    }
    std::this_thread::sleep_for(delay);
  }

 private:
  Status Explain(const HttpRequest& req, const Status& st, TransportError kind) const {
    std::string host = HostOf(req.url);
    std::string who = (host == config_.host ? "registry " : "") + host;
    std::string why = st.message();
    if (size_t colon = why.find(": "); colon != std::string::npos) why = why.substr(colon + 2);
    switch (kind) {
      case TransportError::kResolve:
        return Status::Unavailable("unknown host " + HostName(host) +
                                   ": check the registry name and DNS");
      case TransportError::kRefused:
        return Status::Unavailable("connection refused by " + host + ": is the registry running?");
      case TransportError::kConnect:
        return Status::Unavailable("cannot connect to " + host + " (" + why +
                                   "): is the registry running?");
      case TransportError::kConnectTimeout:
        return Status::Timeout(who + " did not answer within " + Seconds(req.connect_timeout));
      case TransportError::kStall:
        return Status::Timeout(who + " did not answer within " + Seconds(req.stall_timeout));
      case TransportError::kTls:
        return Status::Unavailable("TLS with " + host + " failed (" + why +
                                   "): add its CA to /etc/containers/certs.d/" + host +
                                   "/ or use --cert-dir");
      case TransportError::kReset:
        return Status::Unavailable("connection to " + host + " broke (" + why + "): " +
                                   req.method + " " + req.url);
      default:
        return st;
    }
  }

  void LearnChallenge(const HttpResponse& r) {  // takes challenge_mu_
    auto range = r.headers_multi.equal_range("www-authenticate");
    std::vector<AuthChallenge> all;
    for (auto it = range.first; it != range.second; ++it) {
      auto parsed = ParseWwwAuthenticate(it->second);
      if (parsed.ok()) all.insert(all.end(), parsed->begin(), parsed->end());
    }
    std::optional<AuthChallenge> chosen;
    for (const auto& c : all) {
      if (c.scheme == "bearer") {  // preferred when both are offered
        chosen = c;
        break;
      }
      if (c.scheme == "basic" && !chosen) chosen = c;
    }
    if (!chosen) return;
    std::lock_guard<std::mutex> lock(challenge_mu_);
    challenge_ = std::move(chosen);
  }

  Result<std::optional<Credential>> Credentials() {  // takes cred_mu_
    std::lock_guard<std::mutex> lock(cred_mu_);
    if (!cred_loaded_) {
      std::string host = config_.host == "registry-1.docker.io" ? "docker.io" : config_.host;
      ASSIGN_OR_RETURN(cred_, LookupCredential(config_.auth_env, host));
      cred_loaded_ = true;
    }
    return cred_;
  }

  // The Authorization value for `scope`; "" when no challenge is known (anonymous first).
  // A token equal to `rejected` is not reused. Lock order: token_fetch_mu_, then token_mu_.
  Result<std::string> AuthHeader(const std::string& scope, const std::string& rejected) {
    std::optional<AuthChallenge> ch;
    {
      std::lock_guard<std::mutex> lock(challenge_mu_);
      ch = challenge_;
    }
    if (!ch) return std::string();
    ASSIGN_OR_RETURN(std::optional<Credential> cred, Credentials());
    if (ch->scheme == "basic") {
      if (!cred || cred->username.empty()) return std::string();
      return "Basic " + Base64Encode(cred->username + ":" + cred->password);
    }
    auto cached = [&]() -> std::optional<std::string> {
      std::lock_guard<std::mutex> lock(token_mu_);
      auto it = tokens_.find(scope);
      if (it != tokens_.end() && it->second.expires > Clock::now() && it->second.value != rejected) {
        return it->second.value;
      }
      return std::nullopt;
    };
    if (auto t = cached()) return "Bearer " + *t;
    // One fetch at a time: concurrent range reads wait for the first token, not a flood.
    std::lock_guard<std::mutex> fetch_lock(token_fetch_mu_);
    if (auto t = cached()) return "Bearer " + *t;
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
    std::string service;
    if (auto it = ch.params.find("service"); it != ch.params.end()) service = it->second;
    HttpRequest req = NewRequest("GET", realm->second);
    if (HostOf(req.url) != config_.host) {
      req.tls = TlsOptions{};
      req.tls.verify = !config_.insecure;
    }
    if (cred && !cred->identity_token.empty()) {
      // OAuth2 refresh token (docker login with an identity provider).
      req.method = "POST";
      req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
      req.body = "grant_type=refresh_token&client_id=imagefs&refresh_token=" +
                 UrlEncode(cred->identity_token) + "&service=" + UrlEncode(service);
      if (!scope.empty()) req.body += "&scope=" + UrlEncode(scope);
    } else {
      char sep = req.url.find('?') == std::string::npos ? '?' : '&';
      if (!service.empty()) {
        req.url += sep + std::string("service=") + UrlEncode(service);
        sep = '&';
      }
      if (!scope.empty()) req.url += sep + std::string("scope=") + UrlEncode(scope);
      if (cred && !cred->username.empty()) {
        req.headers.emplace_back("Authorization",
                                 "Basic " + Base64Encode(cred->username + ":" + cred->password));
      }
    }
    Result<HttpResponse> r = Status::Internal("unreachable");
    for (int attempt = 0;; ++attempt) {
      TransportError kind = TransportError::kNone;
      r = Send(req, &kind);
      bool again = !r.ok() ? RetryableTransport(kind) : RetryableStatus(r->status);
      if (!again || attempt >= config_.max_retries) break;
      Backoff(attempt, r.ok() ? std::optional<HttpResponse>(*r) : std::nullopt);
    }
    if (!r.ok()) return r.status().WithContext("token server for " + config_.host);
    if (r->status == 401 || r->status == 403) {
      if (cred) {
        return Status::Unauthenticated("unauthorized: the token server for " + config_.host +
                                       " rejected the credentials: check them (imagefs login " +
                                       config_.host + ")");
      }
      return Status::Unauthenticated("unauthorized: " + config_.host +
                                     " needs credentials (imagefs login " + config_.host + ")");
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
    int64_t expires_in = 60;  // the token spec's default
    if (j.contains("expires_in") && j["expires_in"].is_number()) {
      expires_in = std::max<int64_t>(j["expires_in"].get<int64_t>(), 1);
    }
    // Renew a little early so a long read does not start with a token about to lapse.
    int64_t margin = std::min<int64_t>(expires_in / 10, 30);
    t.expires = Clock::now() + std::chrono::seconds(expires_in - margin);
    return t;
  }

  RegistryEndpointConfig config_;
  TlsOptions tls_;
  HttpClient http_;
  std::atomic<uint64_t> requests_{0};

  std::mutex mu_;  // guards base_url_
  std::string base_url_;
  std::mutex challenge_mu_;  // guards challenge_
  std::optional<AuthChallenge> challenge_;
  std::mutex cred_mu_;  // guards cred_, cred_loaded_
  std::optional<Credential> cred_;
  bool cred_loaded_ = false;
  std::mutex token_fetch_mu_;  // held while fetching a token; taken before token_mu_
  std::mutex token_mu_;        // guards tokens_
  std::map<std::string, Token> tokens_;
};

std::string BlobName(const std::string& host, const std::string& repository,
                     const std::string& digest) {
  return host + "/" + repository + "@" + digest;
}

class RegistryBlobSource final : public BlobSource {
 public:
  RegistryBlobSource(std::shared_ptr<Core> core, std::string repository, std::string digest,
                     uint64_t size)
      : core_(std::move(core)), repository_(std::move(repository)), digest_(std::move(digest)), size_(size) {}

  uint64_t Size() const override { return size_; }

  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (offset >= size_ || out.empty()) return size_t{0};
    uint64_t len = std::min<uint64_t>(out.size(), size_ - offset);
    RETURN_IF_ERROR(FetchSplit(offset, len, out.data(), kMaxInFlight));
    return static_cast<size_t>(len);
  }

  Status ReadRanges(std::span<const ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override {
    if (ranges.size() != outs.size()) return Status::Internal("ReadRanges: size mismatch");
    for (size_t i = 0; i < ranges.size(); ++i) {
      const ByteRange& r = ranges[i];
      if (r.end() > size_ || r.end() < r.offset) {
        return Status::Corruption(Describe() + ": range " + std::to_string(r.offset) + "+" +
                                  std::to_string(r.length) + " is past the end (" +
                                  std::to_string(size_) + " bytes)");
      }
      if (outs[i].size() != r.length) return Status::Internal("ReadRanges: buffer size mismatch");
    }
    // Sort by offset and merge neighbours closer than kCoalesceGap into one request.
    std::vector<size_t> order;
    for (size_t i = 0; i < ranges.size(); ++i) {
      if (ranges[i].length > 0) order.push_back(i);
    }
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return ranges[a].offset < ranges[b].offset; });
    struct Group {
      uint64_t begin, end;
      std::vector<size_t> members;
    };
    std::vector<Group> groups;
    for (size_t i : order) {
      const ByteRange& r = ranges[i];
      if (!groups.empty()) {
        Group& g = groups.back();
        uint64_t merged_end = std::max(g.end, r.end());
        if (r.offset < g.end + kCoalesceGap && merged_end - g.begin <= kMaxCoalesced) {
          g.end = merged_end;
          g.members.push_back(i);
          continue;
        }
      }
      groups.push_back({r.offset, r.end(), {i}});
    }
    std::vector<Status> results(groups.size());
    // Fewer groups than kMaxInFlight: the large ones are split over the spare connections.
    const size_t pieces = std::max<size_t>(1, kMaxInFlight / std::max<size_t>(1, groups.size()));
    auto run = [&](size_t g) {
      const Group& grp = groups[g];
      if (grp.members.size() == 1) {
        results[g] = FetchSplit(grp.begin, grp.end - grp.begin, outs[grp.members[0]].data(), pieces);
        return;
      }
      std::vector<uint8_t> buf(grp.end - grp.begin);
      results[g] = FetchSplit(grp.begin, buf.size(), buf.data(), pieces);
      if (!results[g].ok()) return;
      for (size_t i : grp.members) {
        std::copy_n(buf.data() + (ranges[i].offset - grp.begin), ranges[i].length, outs[i].data());
      }
    };
    // Up to kMaxInFlight requests at once: this thread plus helpers pulling from a counter.
    std::atomic<size_t> next{0};
    auto worker = [&] {
      for (size_t g = next++; g < groups.size(); g = next++) run(g);
    };
    std::vector<std::thread> helpers;
    size_t want = std::min(kMaxInFlight, groups.size());
    for (size_t w = 1; w < want; ++w) helpers.emplace_back(worker);
    worker();
    for (auto& t : helpers) t.join();
    for (const Status& st : results) RETURN_IF_ERROR(st);
    return Status::Ok();
  }

  std::string Describe() const override {
    return "registry blob " + BlobName(core_->host(), repository_, digest_);
  }

 private:
  // Fetch, in up to `pieces` parallel requests of at least kSplitPiece each.
  Status FetchSplit(uint64_t offset, uint64_t len, uint8_t* out, size_t pieces) {
    pieces = std::min<uint64_t>(pieces, len / kSplitPiece);
    if (pieces < 2) return Fetch(offset, len, out);
    const uint64_t each = (len + pieces - 1) / pieces;
    std::vector<Status> results(pieces);
    std::vector<std::thread> helpers;
    for (size_t i = 1; i < pieces; ++i) {
      const uint64_t at = i * each;
      if (at >= len) break;
      helpers.emplace_back([&, i, at] {
        results[i] = Fetch(offset + at, std::min(each, len - at), out + at);
      });
    }
    results[0] = Fetch(offset, std::min(each, len), out);
    for (auto& t : helpers) t.join();
    for (const Status& st : results) RETURN_IF_ERROR(st);
    return Status::Ok();
  }

  // Reads [offset, offset+len) straight into out, checking the response covers exactly it.
  Status Fetch(uint64_t offset, uint64_t len, uint8_t* out) {
    const uint64_t last = offset + len - 1;
    std::string range = std::to_string(offset) + "-" + std::to_string(last);
    HttpRequest req = core_->NewRequest(
        "GET", core_->BaseUrl() + "/v2/" + repository_ + "/blobs/" + digest_);
    req.headers.emplace_back("Range", "bytes=" + range);
    // Per response (a redirect or retry starts a new one): where our window starts in the
    // body, how much of it arrived, and what went wrong.
    uint64_t skip = 0;
    uint64_t got = 0;
    bool whole = false;
    std::string bad;
    req.on_headers = [&](const HttpResponse& h) {
      skip = 0;
      got = 0;
      whole = false;
      bad.clear();
      if (h.status == 206) {
        auto cr = ParseContentRange(h.Header("content-range"));
        if (!cr || cr->first != offset || cr->second != last) {
          bad = "asked for bytes " + range + ", got Content-Range \"" + h.Header("content-range") + "\"";
          return false;
        }
      } else if (h.status == 200) {
        // The server ignored Range and sends the whole blob: keep our window of it.
        auto length = ParseAsciiU64(h.Header("content-length"));
        if (length && *length != size_) {
          bad = "the registry sent the whole blob of " + std::to_string(*length) +
                " bytes instead of range " + range + ", but the blob should have " +
                std::to_string(size_);
          return false;
        }
        whole = true;
        skip = offset;
      }
      return true;
    };
    req.on_data = [&](const char* data, size_t n) {
      if (skip > 0) {
        size_t drop = static_cast<size_t>(std::min<uint64_t>(skip, n));
        skip -= drop;
        data += drop;
        n -= drop;
      }
      if (got + n > len) {
        if (!whole) {
          bad = "range " + range + " returned more than " + std::to_string(len) + " bytes";
          return false;
        }
        n = static_cast<size_t>(len - got);
      }
      std::copy_n(data, n, out + got);
      got += n;
      // Whole-blob answer: stop once our window is in rather than download the rest.
      return !(whole && got == len);
    };
    auto r = core_->Authorized(std::move(req), PullScope(repository_));
    if (!bad.empty()) return Status::Corruption(Describe() + ": " + bad);
    if (!r.ok()) {
      if (whole && got == len) return Status::Ok();  // we stopped it ourselves
      return r.status().WithContext("reading " + Describe() + " bytes " + range);
    }
    if (r->status == 206 || r->status == 200) {
      if (got != len) {
        return Status::Corruption(Describe() + ": range " + range + " returned " +
                                  std::to_string(got) + " of " + std::to_string(len) +
                                  " bytes (truncated blob?)");
      }
      return Status::Ok();
    }
    if (r->status == 416) {
      return Status::Corruption(Describe() + ": range " + range +
                                " is past the end of the stored blob (truncated blob?)");
    }
    return core_->ErrorFor(*r, BlobName(core_->host(), repository_, digest_), "blob unknown");
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
    HttpRequest req =
        core_->NewRequest("GET", "/v2/" + repository + "/manifests/" + tag_or_digest);
    req.headers.emplace_back("Accept", ManifestAcceptHeader());
    std::string what = Name(repository, tag_or_digest);
    ASSIGN_OR_RETURN(HttpResponse r,
                     core_->AuthorizedPath(std::move(req), PullScope(repository)));
    if (r.status != 200) return core_->ErrorFor(r, what, "manifest unknown");
    ManifestResponse out;
    out.bytes = std::move(r.body);
    out.content_type = r.Header("content-type");
    out.docker_content_digest = r.Header("docker-content-digest");
    return out;
  }

  Result<uint64_t> BlobSize(const std::string& repository, const std::string& digest) override {
    RETURN_IF_ERROR(core_->Ping());
    HttpRequest req =
        core_->NewRequest("HEAD", core_->BaseUrl() + "/v2/" + repository + "/blobs/" + digest);
    std::string what = BlobName(core_->host(), repository, digest);
    ASSIGN_OR_RETURN(HttpResponse r, core_->Authorized(std::move(req), PullScope(repository)));
    if (r.status != 200) return core_->ErrorFor(r, what, "blob unknown");
    auto len = ParseAsciiU64(r.Header("content-length"));
    if (!len) {
      return Status::Unavailable(what + ": the registry sent no usable Content-Length (\"" +
                                 r.Header("content-length") + "\")");
    }
    return *len;
  }

  Result<std::unique_ptr<BlobSource>> OpenBlob(const std::string& repository,
                                               const std::string& digest, int64_t size) override {
    RETURN_IF_ERROR(core_->Ping());
    uint64_t n = 0;
    if (size < 0) {
      ASSIGN_OR_RETURN(n, BlobSize(repository, digest));
    } else {
      n = static_cast<uint64_t>(size);
    }
    return std::unique_ptr<BlobSource>(
        std::make_unique<RegistryBlobSource>(core_, repository, digest, n));
  }

  // Streams the blob; a connection that breaks mid-way resumes with a Range request from
  // the first byte not yet delivered, so the sink sees every byte exactly once.
  Status GetBlob(const std::string& repository, const std::string& digest,
                 const std::function<bool(const char*, size_t)>& sink) override {
    RETURN_IF_ERROR(core_->Ping());
    std::string what = BlobName(core_->host(), repository, digest);
    uint64_t delivered = 0;
    for (int attempt = 0;; ++attempt) {
      HttpRequest req =
          core_->NewRequest("GET", core_->BaseUrl() + "/v2/" + repository + "/blobs/" + digest);
      if (delivered > 0) req.headers.emplace_back("Range", "bytes=" + std::to_string(delivered) + "-");
      uint64_t skip = 0;
      bool sink_stopped = false;
      std::string bad;
      req.on_headers = [&](const HttpResponse& h) {
        skip = 0;
        if (h.status == 200) {
          skip = delivered;  // the whole blob again: drop what the sink already has
        } else if (h.status == 206) {
          auto cr = ParseContentRange(h.Header("content-range"));
          if (!cr || cr->first > delivered) {
            bad = "resuming at byte " + std::to_string(delivered) + " got Content-Range \"" +
                  h.Header("content-range") + "\"";
            return false;
          }
          skip = delivered - cr->first;
        }
        return true;
      };
      req.on_data = [&](const char* data, size_t n) {
        if (skip > 0) {
          size_t drop = static_cast<size_t>(std::min<uint64_t>(skip, n));
          skip -= drop;
          data += drop;
          n -= drop;
        }
        if (n == 0) return true;
        delivered += n;
        if (!sink(data, n)) {
          sink_stopped = true;
          return false;
        }
        return true;
      };
      auto r = core_->Authorized(std::move(req), PullScope(repository), /*retry_transport=*/false);
      if (!bad.empty()) return Status::Corruption(what + ": " + bad);
      if (sink_stopped) return Status::Unavailable(what + ": download stopped by the receiver");
      if (!r.ok()) {
        bool transient = r.status().code() == Code::kUnavailable || r.status().code() == Code::kTimeout;
        if (transient && r.status().message().find("unknown host") != 0 &&
            r.status().message().find("TLS with") != 0 && attempt < core_->config().max_retries) {
          core_->Backoff(attempt, std::nullopt);
          continue;
        }
        return r.status().WithContext("downloading " + what);
      }
      if (r->status == 200 || r->status == 206) return Status::Ok();
      return core_->ErrorFor(*r, what, "blob unknown");
    }
  }

  Result<std::vector<std::string>> ListTags(const std::string& repository) override {
    RETURN_IF_ERROR(core_->Ping());
    std::vector<std::string> tags;
    std::string url = core_->BaseUrl() + "/v2/" + repository + "/tags/list";
    for (int page = 0; page < 1000 && !url.empty(); ++page) {
      ASSIGN_OR_RETURN(HttpResponse r,
                       core_->Authorized(core_->NewRequest("GET", url), PullScope(repository)));
      if (r.status != 200) {
        return core_->ErrorFor(r, core_->host() + "/" + repository, "repository unknown");
      }
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
        url = next.find("://") != std::string::npos ? next : core_->BaseUrl() + next;
      }
    }
    return tags;
  }

  Result<std::optional<uint64_t>> StatBlobForPush(const std::string& repository,
                                                  const std::string& digest) override {
    RETURN_IF_ERROR(PushPing(repository));
    HttpRequest req =
        core_->NewRequest("HEAD", core_->BaseUrl() + "/v2/" + repository + "/blobs/" + digest);
    std::string what = BlobName(core_->host(), repository, digest);
    auto r = core_->Authorized(std::move(req), PushScope(repository));
    if (!r.ok()) return r.status().WithContext("pushing to " + RepoName(repository));
    if (r->status == 404) return std::optional<uint64_t>();
    if (r->status != 200) {
      return core_->PushErrorFor(*r, RepoName(repository), what, "blob unknown");
    }
    auto len = ParseAsciiU64(r->Header("content-length"));
    if (!len) {
      return Status::Unavailable(what + ": the registry sent no usable Content-Length (\"" +
                                 r->Header("content-length") + "\")");
    }
    return std::optional<uint64_t>(*len);
  }

  Status UploadBlob(const std::string& repository, const std::string& digest,
                    BlobSource& body) override {
    auto parsed = Digest::Parse(digest);
    if (!parsed.ok()) return parsed.status().WithContext("pushing to " + RepoName(repository));
    if (parsed->algorithm() != "sha256") {
      return Status::Unsupported("pushing " + digest + ": only sha256 blobs can be uploaded");
    }
    RETURN_IF_ERROR(PushPing(repository));
    constexpr int kUploadAttempts = 2;
    Status st;
    for (int attempt = 0; attempt < kUploadAttempts; ++attempt) {
      st = UploadOnce(repository, *parsed, body);
      if (st.ok()) return st;
      // A session that broke half-way cannot be resumed reliably: start again from the POST.
      // Refusals, bad credentials and bad data do not get better by retrying.
      bool transient = st.code() == Code::kUnavailable || st.code() == Code::kTimeout;
      if (!transient || st.message().find("unknown host") == 0 ||
          st.message().find("connection refused") == 0) {
        return st;
      }
      if (attempt + 1 < kUploadAttempts) core_->Backoff(attempt, std::nullopt);
    }
    return st;
  }

  Result<std::string> PutManifest(const std::string& repository, const std::string& tag_or_digest,
                                  const std::string& media_type,
                                  const std::string& bytes) override {
    RETURN_IF_ERROR(PushPing(repository));
    HttpRequest req = core_->NewRequest(
        "PUT", core_->BaseUrl() + "/v2/" + repository + "/manifests/" + tag_or_digest);
    req.headers.emplace_back("Content-Type", media_type);
    req.body = bytes;
    std::string what = Name(repository, tag_or_digest);
    auto r = core_->Authorized(std::move(req), PushScope(repository));
    if (!r.ok()) return r.status().WithContext("pushing manifest to " + what);
    if (r->status != 201 && r->status != 200) {
      if (r->status == 400 || r->status == 404) {
        // MANIFEST_INVALID / MANIFEST_BLOB_UNKNOWN / NAME_UNKNOWN: the text says which.
        return Status::InvalidArgument(what + ": the registry refused the manifest (" +
                                       RegistryErrorText(*r) + ")");
      }
      return core_->PushErrorFor(*r, RepoName(repository), what, "manifest unknown");
    }
    std::string computed = Digest::Sha256Of(std::string_view(bytes)).String();
    std::string answered = r->Header("docker-content-digest");
    if (!answered.empty() && answered.rfind("sha256:", 0) == 0 && answered != computed) {
      return Status::Corruption(what + ": the registry stored the manifest as " + answered +
                                ", but its bytes hash to " + computed);
    }
    return computed;
  }

 private:
  std::string RepoName(const std::string& repository) const {
    return core_->host() + "/" + repository;
  }

  // Ping, naming the push in its error: "pushing to HOST/NAME: connection refused by ...".
  Status PushPing(const std::string& repository) {
    Status st = core_->Ping();
    if (!st.ok()) return st.WithContext("pushing to " + RepoName(repository));
    return st;
  }

  // "/v2/x/blobs/uploads/u?_state=s" or an absolute URL -> an absolute URL.
  std::string ResolveLocation(const std::string& location) const {
    if (location.find("://") != std::string::npos) return location;
    return OriginOf(core_->BaseUrl()) + (location.empty() || location.front() != '/' ? "/" : "") +
           location;
  }

  static std::string WithQuery(const std::string& url, const std::string& query) {
    return url + (url.find('?') == std::string::npos ? "?" : "&") + query;
  }

  // Cancels an upload session; its failure changes nothing for the caller.
  void CancelUpload(const std::string& repository, const std::string& url) {
    auto r = core_->Authorized(core_->NewRequest("DELETE", url), PushScope(repository),
                               /*retry_transport=*/false);
    (void)r;
  }

  // Reads [offset, offset+n) of body into out (all of it, or an error).
  static Status ReadChunk(BlobSource& body, uint64_t offset, uint64_t n, std::string& out) {
    out.resize(n);
    uint64_t done = 0;
    while (done < n) {
      ASSIGN_OR_RETURN(size_t got,
                       body.ReadAt(offset + done, std::span<uint8_t>(
                                                      reinterpret_cast<uint8_t*>(out.data()) + done,
                                                      n - done)));
      if (got == 0) {
        return Status::Corruption(body.Describe() + ": ended at byte " +
                                  std::to_string(offset + done) + " of " + std::to_string(n));
      }
      done += got;
    }
    return Status::Ok();
  }

  Status UploadOnce(const std::string& repository, const Digest& digest, BlobSource& body) {
    const std::string what = BlobName(core_->host(), repository, digest.String());
    const std::string context = "pushing " + what;
    HttpRequest post =
        core_->NewRequest("POST", core_->BaseUrl() + "/v2/" + repository + "/blobs/uploads/");
    auto started = core_->Authorized(std::move(post), PushScope(repository));
    if (!started.ok()) return started.status().WithContext(context);
    if (started->status != 202 || started->Header("location").empty()) {
      if (started->status == 202) {
        return Status::Unavailable(context + ": the registry started an upload without a Location");
      }
      return core_->PushErrorFor(*started, RepoName(repository), what, "repository unknown");
    }
    std::string url = ResolveLocation(started->Header("location"));
    const uint64_t size = body.Size();
    Sha256 hash;
    std::string chunk;
    auto fail = [&](Status st) {
      CancelUpload(repository, url);
      return st;
    };
    auto check_digest = [&]() -> Status {
      Digest got = hash.Finish();
      if (got == digest) return Status::Ok();
      return Status::Corruption(context + ": " + body.Describe() + " hashes to " + got.String() +
                                ", not " + digest.String() + "; nothing was stored");
    };
    if (size <= kMonolithicUploadMax) {
      Status st = ReadChunk(body, 0, size, chunk);
      if (!st.ok()) return fail(st.WithContext(context));
      hash.Update(std::string_view(chunk));
      st = check_digest();
      if (!st.ok()) return fail(st);
    } else {
      for (uint64_t offset = 0; offset < size;) {
        uint64_t n = std::min<uint64_t>(kUploadChunk, size - offset);
        Status st = ReadChunk(body, offset, n, chunk);
        if (!st.ok()) return fail(st.WithContext(context));
        hash.Update(std::string_view(chunk));
        HttpRequest patch = core_->NewRequest("PATCH", url);
        patch.headers.emplace_back("Content-Type", "application/octet-stream");
        patch.headers.emplace_back("Content-Range", std::to_string(offset) + "-" +
                                                         std::to_string(offset + n - 1));
        patch.body = std::move(chunk);
        chunk.clear();
        // A retried PATCH could append twice; a broken one restarts the whole upload instead.
        auto r = core_->Authorized(std::move(patch), PushScope(repository),
                                   /*retry_transport=*/false);
        if (!r.ok()) return fail(r.status().WithContext(context));
        if (r->status != 202) {
          return fail(core_->PushErrorFor(*r, RepoName(repository), what, "upload unknown"));
        }
        if (!r->Header("location").empty()) url = ResolveLocation(r->Header("location"));
        offset += n;
      }
      Status st = check_digest();
      if (!st.ok()) return fail(st);
      chunk.clear();
    }
    HttpRequest put = core_->NewRequest("PUT", WithQuery(url, "digest=" + digest.String()));
    put.headers.emplace_back("Content-Type", "application/octet-stream");
    put.body = std::move(chunk);
    auto r = core_->Authorized(std::move(put), PushScope(repository), /*retry_transport=*/false);
    if (!r.ok()) return fail(r.status().WithContext(context));
    if (r->status != 201) {
      if (r->status == 400) {
        return fail(Status::Corruption(context + ": the registry refused the blob (" +
                                       RegistryErrorText(*r) + ")"));
      }
      return fail(core_->PushErrorFor(*r, RepoName(repository), what, "upload unknown"));
    }
    return Status::Ok();
  }

  std::string Name(const std::string& repository, const std::string& ref) const {
    std::string sep = ref.find(':') != std::string::npos ? "@" : ":";
    return core_->host() + "/" + repository + sep + ref;
  }

  std::shared_ptr<Core> core_;
};

}  // namespace

Result<std::unique_ptr<RegistryClient>> RegistryClient::Create(RegistryEndpointConfig config) {
  if (config.host.empty()) return Status::InvalidArgument("registry host is empty");
  return std::unique_ptr<RegistryClient>(std::make_unique<RegistryClientImpl>(std::move(config)));
}

}  // namespace imagefs::fetch
