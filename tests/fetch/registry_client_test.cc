// fetch::RegistryClient and fetch::HttpClient against a real Debian docker-registry started
// by the test on a free 127.0.0.1 port (plain, and with `auth: token` backed by an
// in-process RS256 token server), plus small in-process fake servers for faults the real
// registry cannot be made to show: 5xx bursts, redirects to another host, servers that
// ignore Range or send short bodies, tokens that go stale.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fetch/auth.h"
#include "fetch/http.h"
#include "fetch/manifest.h"
#include "fetch/registry_client.h"
#include "gtest/gtest.h"
#include "util/digest.h"
#include "util/file.h"
#include "util/unique_fd.h"

extern char** environ;

namespace imagefs::fetch {
namespace registry_client_test {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr char kRegistryBin[] = "/usr/bin/docker-registry";
constexpr char kService[] = "imagefs-test-registry";
constexpr char kIssuer[] = "imagefs-test-issuer";
constexpr char kUser[] = "tester";
constexpr char kPassword[] = "s3cret-pass";

// A port nothing listens on right now (bound to 127.0.0.1:0, then released).
int FreePort() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return -1;
  socklen_t len = sizeof(addr);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

// Deterministic bytes that differ at every offset often enough to catch misplaced copies.
std::string PatternBytes(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>(x & 0xff);
  }
  return out;
}

std::string Base64Url(std::string_view data) {
  std::string s = Base64Encode(data);
  for (char& c : s) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  while (!s.empty() && s.back() == '=') s.pop_back();
  return s;
}

// ---------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server on 127.0.0.1: one thread, one connection at a time, every answer
// "Connection: close". TLS hellos (the client's HTTPS probe) are hung up on.

struct FakeRequest {
  std::string method;
  std::string target;  // path and query
  std::string path;
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  bool HasHeader(const std::string& name) const { return headers.count(name) > 0; }
};

struct FakeResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

std::string UrlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else if (s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

class FakeServer {
 public:
  using Handler = std::function<FakeResponse(const FakeRequest&)>;

  explicit FakeServer(Handler handler) : handler_(std::move(handler)) {
    listen_.Reset(::socket(AF_INET, SOCK_STREAM, 0));
    int one = 1;
    ::setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_.get(), 64) != 0) {
      ADD_FAILURE() << "fake server cannot listen";
      return;
    }
    socklen_t len = sizeof(addr);
    ::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::vector<FakeRequest> Requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  std::vector<FakeRequest> RequestsTo(const std::string& path_prefix) const {
    std::vector<FakeRequest> out;
    for (auto& r : Requests()) {
      if (r.path.rfind(path_prefix, 0) == 0) out.push_back(r);
    }
    return out;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      UniqueFd conn(::accept(listen_.get(), nullptr, nullptr));
      if (!conn) continue;
      timeval tv{5, 0};
      ::setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      Handle(conn.get());
    }
  }

  void Handle(int fd) {
    std::string data;
    char buf[16384];
    size_t head_end = std::string::npos;
    while (head_end == std::string::npos) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return;
      data.append(buf, static_cast<size_t>(n));
      if (static_cast<unsigned char>(data[0]) == 0x16) return;  // a TLS hello: not HTTP
      head_end = data.find("\r\n\r\n");
    }
    FakeRequest req;
    std::istringstream head(data.substr(0, head_end));
    std::string line;
    std::getline(head, line);
    std::istringstream first(line);
    std::string version;
    first >> req.method >> req.target >> version;
    while (std::getline(head, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      size_t v = line.find_first_not_of(' ', colon + 1);
      req.headers[name] = v == std::string::npos ? "" : line.substr(v);
    }
    size_t q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) {
      std::stringstream qs(req.target.substr(q + 1));
      std::string kv;
      while (std::getline(qs, kv, '&')) {
        size_t eq = kv.find('=');
        req.query[UrlDecode(kv.substr(0, eq))] = eq == std::string::npos ? "" : UrlDecode(kv.substr(eq + 1));
      }
    }
    size_t want = req.HasHeader("content-length") ? std::stoul(req.Header("content-length")) : 0;
    req.body = data.substr(head_end + 4);
    while (req.body.size() < want) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      req.body.append(buf, static_cast<size_t>(n));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(req);
    }
    FakeResponse resp = handler_(req);
    std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " Fake\r\n";
    bool has_length = false;
    for (const auto& [k, v] : resp.headers) {
      out += k + ": " + v + "\r\n";
      if (k == "Content-Length") has_length = true;
    }
    if (!has_length) out += "Content-Length: " + std::to_string(resp.body.size()) + "\r\n";
    out += "Connection: close\r\n\r\n";
    if (req.method != "HEAD") out += resp.body;
    for (size_t sent = 0; sent < out.size();) {
      ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    ::shutdown(fd, SHUT_WR);
  }

  Handler handler_;
  UniqueFd listen_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<FakeRequest> requests_;  // guarded by mu_
};

FakeResponse Json200(const std::string& body, const std::string& type = "application/json") {
  return {200, {{"Content-Type", type}}, body};
}

// ---------------------------------------------------------------------------------------
// Token server for distribution's `auth: token`: RS256 JWTs whose header carries the
// signing certificate (x5c), which the registry trusts through rootcertbundle.

class TokenIssuer {
 public:
  // Makes a fresh key and self-signed certificate in dir with the openssl tool.
  static std::unique_ptr<TokenIssuer> Create(const std::string& dir) {
    std::string key = dir + "/token.key", cert = dir + "/token.crt";
    std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " + cert +
                      " -days 2 -subj /CN=imagefs-test-token >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) return nullptr;
    auto issuer = std::unique_ptr<TokenIssuer>(new TokenIssuer());
    issuer->cert_path_ = cert;
    FILE* kf = std::fopen(key.c_str(), "r");
    FILE* cf = std::fopen(cert.c_str(), "r");
    if (kf == nullptr || cf == nullptr) return nullptr;
    issuer->key_ = PEM_read_PrivateKey(kf, nullptr, nullptr, nullptr);
    X509* x = PEM_read_X509(cf, nullptr, nullptr, nullptr);
    std::fclose(kf);
    std::fclose(cf);
    if (issuer->key_ == nullptr || x == nullptr) return nullptr;
    unsigned char* der = nullptr;
    int der_len = i2d_X509(x, &der);
    issuer->cert_der_b64_ = Base64Encode(std::string_view(reinterpret_cast<char*>(der), der_len));
    OPENSSL_free(der);
    X509_free(x);
    return issuer;
  }
  ~TokenIssuer() { EVP_PKEY_free(key_); }

  const std::string& cert_path() const { return cert_path_; }

  std::string Mint(const std::string& subject, const std::string& service,
                   const std::vector<std::string>& scopes) {
    Json access = Json::array();
    for (const auto& scope : scopes) {  // "repository:NAME:pull" -> grant pull and push
      size_t a = scope.find(':'), b = scope.rfind(':');
      if (a == std::string::npos || a == b) continue;
      access.push_back({{"type", scope.substr(0, a)},
                        {"name", scope.substr(a + 1, b - a - 1)},
                        {"actions", {"pull", "push"}}});
    }
    int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
    Json header = {{"alg", "RS256"}, {"typ", "JWT"}, {"x5c", {cert_der_b64_}}};
    Json claims = {{"iss", kIssuer}, {"sub", subject}, {"aud", service},
                   {"exp", now + 300}, {"nbf", now - 10}, {"iat", now},
                   {"jti", std::to_string(++jti_)}, {"access", access}};
    std::string input = Base64Url(header.dump()) + "." + Base64Url(claims.dump());
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    size_t sig_len = 0;
    std::string sig;
    if (EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key_) == 1 &&
        EVP_DigestSign(ctx, nullptr, &sig_len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1) {
      sig.resize(sig_len);
      EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size());
      sig.resize(sig_len);
    }
    EVP_MD_CTX_free(ctx);
    return input + "." + Base64Url(sig);
  }

 private:
  TokenIssuer() = default;
  EVP_PKEY* key_ = nullptr;
  std::string cert_path_;
  std::string cert_der_b64_;
  std::atomic<int> jti_{0};
};

// ---------------------------------------------------------------------------------------
// The real registry, started per test.

class RegistryProcess {
 public:
  ~RegistryProcess() { Stop(); }

  // auth_yaml: "" or an `auth:` section.
  Status Start(const std::string& dir, const std::string& auth_yaml) {
    port_ = FreePort();
    log_path_ = dir + "/registry.log";
    std::string config = dir + "/config.yml";
    std::ofstream(config) << "version: 0.1\n"
                          << "log:\n  level: info\n  accesslog:\n    disabled: true\n"
                          << "storage:\n  filesystem:\n    rootdirectory: " << dir << "/data\n"
                          << "  delete:\n    enabled: true\n"
                          << "http:\n  addr: 127.0.0.1:" << port_ << "\n"
                          << "  secret: imagefs-registry-client-test\n"
                          << auth_yaml;
    // docker-registry maps REGISTRY_* variables onto its config: hide ours.
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::string_view(*e).rfind("REGISTRY_", 0) != 0) env.emplace_back(*e);
    }
    std::vector<char*> envp;
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string bin = kRegistryBin, serve = "serve";
    std::vector<char*> argv = {bin.data(), serve.data(), config.data(), nullptr};
    pid_ = ::fork();
    if (pid_ < 0) return Status::FromErrno(errno, "fork");
    if (pid_ == 0) {
      int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (log >= 0) {
        ::dup2(log, 1);
        ::dup2(log, 2);
      }
      ::execve(bin.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    // Poll /v2/ until it answers (200, or 401 with auth).
    HttpClient http;
    auto deadline = steady_clock::now() + std::chrono::seconds(20);
    while (steady_clock::now() < deadline) {
      HttpRequest req;
      req.url = base() + "/v2/";
      req.connect_timeout = milliseconds(500);
      auto r = http.Do(req);
      if (r.ok() && (r->status == 200 || r->status == 401)) return Status::Ok();
      int wstatus = 0;
      if (::waitpid(pid_, &wstatus, WNOHANG) == pid_) {
        pid_ = -1;
        return Status::Unavailable("docker-registry exited: " + ReadFile(log_path_).value_or(""));
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    return Status::Timeout("docker-registry did not answer: " + ReadFile(log_path_).value_or(""));
  }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string base() const { return "http://" + host(); }
  // "response completed" log lines whose request URI contains `uri_part` and method.
  int CompletedRequests(const std::string& method, const std::string& uri_part) const {
    std::ifstream in(log_path_);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      if (line.find("response completed") != std::string::npos &&
          line.find("http.request.method=" + method) != std::string::npos &&
          line.find(uri_part) != std::string::npos) {
        ++n;
      }
    }
    return n;
  }
  // The registry logs a response just after sending it: poll until `want` lines are there
  // (or 3 s pass) and return the count then.
  int WaitForCompleted(const std::string& method, const std::string& uri_part, int want) const {
    int n = CompletedRequests(method, uri_part);
    for (int i = 0; i < 60 && n < want; ++i) {
      std::this_thread::sleep_for(milliseconds(50));
      n = CompletedRequests(method, uri_part);
    }
    std::this_thread::sleep_for(milliseconds(50));  // let an unexpected extra one show up too
    return CompletedRequests(method, uri_part);
  }
  // The count once it stops changing.
  int SettledCompleted(const std::string& method, const std::string& uri_part) const {
    int n = CompletedRequests(method, uri_part);
    for (int i = 0; i < 60; ++i) {
      std::this_thread::sleep_for(milliseconds(50));
      int again = CompletedRequests(method, uri_part);
      if (again == n) break;
      n = again;
    }
    return n;
  }

 private:
  int port_ = 0;
  pid_t pid_ = -1;
  std::string log_path_;
};

// Pushes with the registry API through HttpClient. `auth` is an Authorization value or "".
Status PushBlob(HttpClient& http, const std::string& base, const std::string& repo,
                const std::string& data, const std::string& auth) {
  HttpRequest start;
  start.method = "POST";
  start.url = base + "/v2/" + repo + "/blobs/uploads/";
  if (!auth.empty()) start.headers.emplace_back("Authorization", auth);
  ASSIGN_OR_RETURN(HttpResponse r, http.Do(start));
  if (r.status != 202) return Status::Internal("upload start: HTTP " + std::to_string(r.status) + " " + r.body);
  std::string loc = r.Header("location");
  if (loc.rfind("http", 0) != 0) loc = base + loc;
  HttpRequest put;
  put.method = "PUT";
  put.url = loc + (loc.find('?') == std::string::npos ? "?" : "&") +
            "digest=" + Digest::Sha256Of(data).String();
  put.headers.emplace_back("Content-Type", "application/octet-stream");
  if (!auth.empty()) put.headers.emplace_back("Authorization", auth);
  put.body = data;
  ASSIGN_OR_RETURN(HttpResponse p, http.Do(put));
  if (p.status != 201) return Status::Internal("upload put: HTTP " + std::to_string(p.status) + " " + p.body);
  return Status::Ok();
}

Status PushManifest(HttpClient& http, const std::string& base, const std::string& repo,
                    const std::string& ref, const std::string& bytes, const std::string& auth) {
  HttpRequest put;
  put.method = "PUT";
  put.url = base + "/v2/" + repo + "/manifests/" + ref;
  put.headers.emplace_back("Content-Type", std::string(kOciManifest));
  if (!auth.empty()) put.headers.emplace_back("Authorization", auth);
  put.body = bytes;
  ASSIGN_OR_RETURN(HttpResponse p, http.Do(put));
  if (p.status != 201) return Status::Internal("manifest put: HTTP " + std::to_string(p.status) + " " + p.body);
  return Status::Ok();
}

constexpr char kRepo[] = "test/app";
constexpr size_t kLayerSize = (1 << 20) + 12345;

class RegistryClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("/tmp", "imagefs-regclient-");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = *dir;
    env_.registry_auth_file = dir_ + "/auth.json";
    env_.xdg_runtime_dir = dir_ + "/run";
    env_.xdg_config_home = dir_ + "/config";
    env_.home = dir_ + "/home";
    env_.docker_config = dir_ + "/docker";
    layer_ = PatternBytes(kLayerSize, 7);
    config_ = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}})";
    Json m = {{"schemaVersion", 2},
              {"mediaType", kOciManifest},
              {"config", {{"mediaType", kOciConfig},
                          {"digest", Digest::Sha256Of(config_).String()},
                          {"size", config_.size()}}},
              {"layers", {{{"mediaType", kOciLayerGzip},
                           {"digest", Digest::Sha256Of(layer_).String()},
                           {"size", layer_.size()}}}}};
    manifest_ = m.dump();
  }
  void TearDown() override {
    registry_.Stop();
    if (!dir_.empty()) (void)RemoveAll(dir_);
  }

  void StartPlainRegistryWithImage() {
    Status st = registry_.Start(dir_, "");
    ASSERT_TRUE(st.ok()) << st.ToString();
    PushImage("");
  }

  void PushImage(const std::string& auth) {
    HttpClient http;
    Status st = PushBlob(http, registry_.base(), kRepo, config_, auth);
    ASSERT_TRUE(st.ok()) << st.ToString();
    st = PushBlob(http, registry_.base(), kRepo, layer_, auth);
    ASSERT_TRUE(st.ok()) << st.ToString();
    st = PushManifest(http, registry_.base(), kRepo, "latest", manifest_, auth);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }

  void WriteAuthFile(const std::string& host, const std::string& user, const std::string& pass) {
    Json j = {{"auths", {{host, {{"auth", Base64Encode(user + ":" + pass)}}}}}};
    ASSERT_TRUE(WriteFileAtomic(env_.registry_auth_file, j.dump(), 0600).ok());
  }

  std::unique_ptr<RegistryClient> Client(const std::string& host,
                                         milliseconds retry_budget = milliseconds(0)) {
    RegistryEndpointConfig config;
    config.retry_budget = retry_budget;
    config.host = host;
    config.auth_env = env_;
    config.certs_dir_override = dir_ + "/certs";  // none: keep machine-wide certs.d out
    config.retry_base_delay = milliseconds(5);
    config.max_retries = 2;
    auto c = RegistryClient::Create(config);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  std::string LayerDigest() const { return Digest::Sha256Of(layer_).String(); }

  std::string dir_;
  AuthEnv env_;
  RegistryProcess registry_;
  std::string layer_, config_, manifest_;
};

// ---------------------------------------------------------------------------------------
// Real registry, no auth.

TEST_F(RegistryClientTest, PingFallsBackToPlainHttpOnLoopback) {
  StartPlainRegistryWithImage();
  auto client = Client(registry_.host());
  ASSERT_TRUE(client->Ping().ok());
  EXPECT_EQ(client->BaseUrl(), registry_.base());
  // "localhost" counts as loopback too.
  std::string local = "localhost:" + registry_.host().substr(registry_.host().find(':') + 1);
  auto by_name = Client(local);
  Status st = by_name->Ping();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(by_name->BaseUrl(), "http://" + local);
}

TEST_F(RegistryClientTest, GetManifestByTagAndByDigest) {
  StartPlainRegistryWithImage();
  auto client = Client(registry_.host());
  auto by_tag = client->GetManifest(kRepo, "latest");
  ASSERT_TRUE(by_tag.ok()) << by_tag.status().ToString();
  EXPECT_EQ(by_tag->bytes, manifest_);
  EXPECT_EQ(by_tag->content_type, kOciManifest);
  std::string digest = Digest::Sha256Of(manifest_).String();
  EXPECT_EQ(by_tag->docker_content_digest, digest);
  auto by_digest = client->GetManifest(kRepo, digest);
  ASSERT_TRUE(by_digest.ok()) << by_digest.status().ToString();
  EXPECT_EQ(by_digest->bytes, manifest_);
}

TEST_F(RegistryClientTest, MissingManifestAndBlobAreNotFound) {
  StartPlainRegistryWithImage();
  auto client = Client(registry_.host());
  auto tag = client->GetManifest(kRepo, "nope");
  ASSERT_FALSE(tag.ok());
  EXPECT_EQ(tag.status().code(), Code::kNotFound);
  EXPECT_EQ(tag.status().message(), registry_.host() + "/test/app:nope: manifest unknown");
  auto repo = client->GetManifest("test/missing", "latest");
  EXPECT_EQ(repo.status().code(), Code::kNotFound) << repo.status().ToString();

  std::string unknown = Digest::Sha256Of(std::string_view("not pushed")).String();
  auto size = client->BlobSize(kRepo, unknown);
  ASSERT_FALSE(size.ok());
  EXPECT_EQ(size.status().code(), Code::kNotFound);
  EXPECT_NE(size.status().message().find(unknown + ": blob unknown"), std::string::npos)
      << size.status().ToString();

  auto blob = client->OpenBlob(kRepo, unknown, 100);
  ASSERT_TRUE(blob.ok());
  std::vector<uint8_t> buf(10);
  auto read = (*blob)->ReadAt(0, buf);
  EXPECT_EQ(read.status().code(), Code::kNotFound) << read.status().ToString();

  bool sink_called = false;
  Status get = client->GetBlob(kRepo, unknown, [&](const char*, size_t) {
    sink_called = true;
    return true;
  });
  EXPECT_EQ(get.code(), Code::kNotFound) << get.ToString();
  EXPECT_FALSE(sink_called) << "the error body must not reach the sink";
}

TEST_F(RegistryClientTest, BlobSizeAndGetBlob) {
  StartPlainRegistryWithImage();
  auto client = Client(registry_.host());
  auto size = client->BlobSize(kRepo, LayerDigest());
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, layer_.size());
  std::string got;
  Status st = client->GetBlob(kRepo, LayerDigest(), [&](const char* d, size_t n) {
    got.append(d, n);
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(got == layer_);
  auto tags = client->ListTags(kRepo);
  ASSERT_TRUE(tags.ok()) << tags.status().ToString();
  EXPECT_EQ(*tags, std::vector<std::string>{"latest"});
}

TEST_F(RegistryClientTest, ReadAtReadsRangesIncludingTheLastBytesAndPastTheEnd) {
  StartPlainRegistryWithImage();
  auto client = Client(registry_.host());
  auto blob = client->OpenBlob(kRepo, LayerDigest(), -1);  // size learned with HEAD
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  BlobSource& src = **blob;
  EXPECT_EQ(src.Size(), layer_.size());
  auto check = [&](uint64_t offset, size_t n, size_t want) {
    std::vector<uint8_t> buf(n, 0xee);
    auto r = src.ReadAt(offset, buf);
    ASSERT_TRUE(r.ok()) << offset << ": " << r.status().ToString();
    ASSERT_EQ(*r, want) << "offset " << offset;
    if (want == 0) return;
    EXPECT_EQ(std::string(buf.begin(), buf.begin() + want), layer_.substr(offset, want))
        << "offset " << offset;
  };
  check(0, 1, 1);
  check(0, 4096, 4096);
  check(777777, 100000, 100000);
  check(layer_.size() - 64, 64, 64);     // the last bytes
  check(layer_.size() - 10, 100, 10);    // crossing the end: short read
  check(layer_.size(), 100, 0);          // at the end
  check(layer_.size() + 5000, 100, 0);   // past the end
  check(0, layer_.size(), layer_.size());  // everything (in 8 parallel requests)
  EXPECT_NE(src.Describe().find(LayerDigest()), std::string::npos);
  // Ranged GETs answered 206 by the server (not counting the empty reads, never sent):
  // 5 small ones, and the whole blob as 8.
  EXPECT_EQ(registry_.WaitForCompleted("GET", "/v2/test/app/blobs/" + LayerDigest(), 13), 13);
}

TEST_F(RegistryClientTest, ReadRangesCoalescesNeighboursIntoOneRequest) {
  StartPlainRegistryWithImage();
  auto client = Client(registry_.host());
  auto blob = client->OpenBlob(kRepo, LayerDigest(), static_cast<int64_t>(layer_.size()));
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE(client->Ping().ok());
  // Group 1: [0,100) [200,300) [150,250) overlap/near; group 2: [400000,+1000) and one
  // 65535 bytes after it (gap < 64 KiB); group 3: 65536 bytes further (gap = 64 KiB);
  // group 4: the blob's last byte.
  std::vector<ByteRange> ranges = {
      {200, 100}, {0, 100}, {150, 100},
      {400000, 1000}, {401000 + 65535, 500},
      {401000 + 65535 + 500 + 65536, 10},
      {layer_.size() - 1, 1}};
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<std::span<uint8_t>> outs;
  for (const auto& r : ranges) bufs.emplace_back(r.length);
  for (auto& b : bufs) outs.emplace_back(b);
  uint64_t before = client->RequestCount();
  int server_before = registry_.SettledCompleted("GET", "/blobs/" + LayerDigest());
  Status st = (*blob)->ReadRanges(ranges, outs);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(client->RequestCount() - before, 4u);
  EXPECT_EQ(registry_.WaitForCompleted("GET", "/blobs/" + LayerDigest(), server_before + 4) - server_before, 4);
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(std::string(bufs[i].begin(), bufs[i].end()),
              layer_.substr(ranges[i].offset, ranges[i].length)) << "range " << i;
  }
  // A range past the end fails the batch without sending anything.
  std::vector<ByteRange> bad = {{layer_.size() - 1, 2}};
  std::vector<uint8_t> b2(2);
  std::vector<std::span<uint8_t>> o2 = {b2};
  before = client->RequestCount();
  EXPECT_FALSE((*blob)->ReadRanges(bad, o2).ok());
  EXPECT_EQ(client->RequestCount(), before);
}

// A large read goes out as parallel requests of at least 128 KiB (a WAN's slow start is
// paid once per connection, at the same time): same bytes, more requests.
TEST_F(RegistryClientTest, LargeReadsAreSplitIntoParallelRequests) {
  StartPlainRegistryWithImage();
  auto client = Client(registry_.host());
  auto blob = client->OpenBlob(kRepo, LayerDigest(), static_cast<int64_t>(layer_.size()));
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  ASSERT_GE(layer_.size(), 1u << 20);
  const uint64_t offset = 1000, len = (1 << 20) + 5;  // not a multiple of 8
  std::vector<uint8_t> buf(len);
  uint64_t before = client->RequestCount();
  auto n = (*blob)->ReadAt(offset, buf);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, len);
  EXPECT_EQ(client->RequestCount() - before, 8u);  // kMaxInFlight pieces of ~128 KiB
  EXPECT_TRUE(std::string(buf.begin(), buf.end()) == layer_.substr(offset, len));
  // One range through ReadRanges is split as well; two small ones are not.
  std::vector<ByteRange> ranges = {{0, 300 << 10}, {layer_.size() - 10, 10}};
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<std::span<uint8_t>> outs;
  for (const auto& r : ranges) bufs.emplace_back(r.length);
  for (auto& b : bufs) outs.emplace_back(b);
  before = client->RequestCount();
  ASSERT_TRUE((*blob)->ReadRanges(ranges, outs).ok());
  EXPECT_EQ(client->RequestCount() - before, 3u);  // 300 KiB in 2 pieces, and the tail
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_TRUE(std::string(bufs[i].begin(), bufs[i].end()) ==
                layer_.substr(ranges[i].offset, ranges[i].length)) << "range " << i;
  }
}

TEST_F(RegistryClientTest, ReadRangesRunsFarApartRangesInParallelAndConcurrentReadersWork) {
  StartPlainRegistryWithImage();
  auto client = Client(registry_.host());
  auto blob = client->OpenBlob(kRepo, LayerDigest(), static_cast<int64_t>(layer_.size()));
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE(client->Ping().ok());
  std::vector<ByteRange> ranges;
  for (uint64_t off = 0; off + 3000 < layer_.size(); off += 70000) ranges.push_back({off, 3000});
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<std::span<uint8_t>> outs;
  for (const auto& r : ranges) bufs.emplace_back(r.length);
  for (auto& b : bufs) outs.emplace_back(b);
  uint64_t before = client->RequestCount();
  ASSERT_TRUE((*blob)->ReadRanges(ranges, outs).ok());
  EXPECT_EQ(client->RequestCount() - before, ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    ASSERT_EQ(std::string(bufs[i].begin(), bufs[i].end()),
              layer_.substr(ranges[i].offset, ranges[i].length)) << "range " << i;
  }
  // Many threads on one source share the client's connection pool.
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        uint64_t off = (static_cast<uint64_t>(t) * 131071 + i * 9973) % (layer_.size() - 5000);
        std::vector<uint8_t> buf(5000);
        auto r = (*blob)->ReadAt(off, buf);
        if (!r.ok() || *r != buf.size() || std::string(buf.begin(), buf.end()) != layer_.substr(off, 5000)) {
          ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(RegistryClientTest, RefusedConnectionIsUnavailableQuickly) {
  int port = FreePort();
  std::string host = "127.0.0.1:" + std::to_string(port);
  auto client = Client(host);
  auto start = steady_clock::now();
  Status st = client->Ping();
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_EQ(st.message(), "connection refused by " + host + ": is the registry running?");
  auto manifest = client->GetManifest(kRepo, "latest");
  EXPECT_EQ(manifest.status().code(), Code::kUnavailable);
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(3));
}

TEST_F(RegistryClientTest, UnknownHostSaysSo) {
  auto client = Client("nohost.invalid:5000");
  Status st = client->Ping();
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_EQ(st.message().rfind("unknown host nohost.invalid", 0), 0u) << st.ToString();
}

TEST_F(RegistryClientTest, HttpClientReportsTransportErrorsWithMethodAndUrl) {
  HttpClient http;
  HttpRequest req;
  req.url = "http://127.0.0.1:" + std::to_string(FreePort()) + "/v2/";
  TransportError kind = TransportError::kNone;
  auto r = http.Do(req, &kind);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(kind, TransportError::kRefused);
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_EQ(r.status().message().rfind("GET " + req.url + ": ", 0), 0u) << r.status().ToString();
}

TEST_F(RegistryClientTest, StalledServerTimesOut) {
  // Accepts the connection, never answers.
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener.get(), 8), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  HttpClient http;
  HttpRequest req;
  req.url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/v2/";
  req.stall_timeout = milliseconds(1000);
  TransportError kind = TransportError::kNone;
  auto start = steady_clock::now();
  auto r = http.Do(req, &kind);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kTimeout) << r.status().ToString();
  EXPECT_EQ(kind, TransportError::kStall);
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(RegistryClientTest, HangingRegistryTimesOutWithoutTryingEverySchemeInTurn) {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener.get(), 8), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  std::string host = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  RegistryEndpointConfig config;
  config.host = host;
  config.auth_env = env_;
  config.connect_timeout = milliseconds(1000);
  config.stall_timeout = milliseconds(1000);
  auto client = RegistryClient::Create(config);
  ASSERT_TRUE(client.ok());
  auto start = steady_clock::now();
  Status st = (*client)->Ping();
  EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
  EXPECT_EQ(st.message(), "registry " + host + " did not answer within 1s");
  EXPECT_LT(steady_clock::now() - start, milliseconds(1900));
}

// ---------------------------------------------------------------------------------------
// Real registry with `auth: token` and an in-process token server.

class TokenRegistryTest : public RegistryClientTest {
 protected:
  void SetUp() override {
    RegistryClientTest::SetUp();
    issuer_ = TokenIssuer::Create(dir_);
    ASSERT_NE(issuer_, nullptr) << "openssl could not make a key";
    token_server_ = std::make_unique<FakeServer>([this](const FakeRequest& req) {
      return TokenEndpoint(req);
    });
    std::string realm = "http://" + token_server_->host() + "/token";
    std::string auth = std::string("auth:\n  token:\n") + "    realm: " + realm + "\n" +
                       "    service: " + kService + "\n    issuer: " + kIssuer + "\n" +
                       "    rootcertbundle: " + issuer_->cert_path() + "\n";
    Status st = registry_.Start(dir_, auth);
    ASSERT_TRUE(st.ok()) << st.ToString();
    std::string push = "Bearer " + issuer_->Mint("pusher", kService, {"repository:test/app:pull,push"});
    PushImage(push);
  }
  void TearDown() override {
    registry_.Stop();
    token_server_.reset();
    RegistryClientTest::TearDown();
  }

  FakeResponse TokenEndpoint(const FakeRequest& req) {
    if (req.path != "/token") return {404, {}, "not here"};
    if (req.Header("authorization") != "Basic " + Base64Encode(std::string(kUser) + ":" + kPassword)) {
      return {401, {{"WWW-Authenticate", "Basic realm=\"token\""}}, "{}"};
    }
    std::vector<std::string> scopes;
    if (req.query.count("scope")) scopes.push_back(req.query.at("scope"));
    std::string service = req.query.count("service") ? req.query.at("service") : "";
    Json body = {{"access_token", issuer_->Mint(kUser, service, scopes)},
                 {"expires_in", expires_in_.load()}};
    return Json200(body.dump());
  }

  std::vector<FakeRequest> TokenRequests() const { return token_server_->RequestsTo("/token"); }

  std::unique_ptr<TokenIssuer> issuer_;
  std::unique_ptr<FakeServer> token_server_;
  std::atomic<int> expires_in_{300};
};

TEST_F(TokenRegistryTest, BearerFlowSendsCredentialsToTheRealmAndCachesTheToken) {
  WriteAuthFile(registry_.host(), kUser, kPassword);
  auto client = Client(registry_.host());
  auto m = client->GetManifest(kRepo, "latest");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->bytes, manifest_);
  auto tokens = TokenRequests();
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_EQ(tokens[0].query["service"], kService);
  EXPECT_EQ(tokens[0].query["scope"], "repository:test/app:pull");
  // Cached per scope: the manifest again, a blob read, no new token.
  ASSERT_TRUE(client->GetManifest(kRepo, "latest").ok());
  auto blob = client->OpenBlob(kRepo, LayerDigest(), -1);
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  std::vector<uint8_t> buf(1000);
  auto r = (*blob)->ReadAt(layer_.size() - 1000, buf);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(std::string(buf.begin(), buf.end()), layer_.substr(layer_.size() - 1000));
  EXPECT_EQ(TokenRequests().size(), 1u);
  EXPECT_TRUE(client->CheckCredentials().ok());
}

TEST_F(TokenRegistryTest, ExpiredTokenIsFetchedAgain) {
  expires_in_ = 1;
  WriteAuthFile(registry_.host(), kUser, kPassword);
  auto client = Client(registry_.host());
  ASSERT_TRUE(client->GetManifest(kRepo, "latest").ok());
  std::this_thread::sleep_for(milliseconds(1200));
  ASSERT_TRUE(client->GetManifest(kRepo, "latest").ok());
  EXPECT_EQ(TokenRequests().size(), 2u);
}

TEST_F(TokenRegistryTest, MissingOrWrongCredentialsSayHowToLogIn) {
  auto anonymous = Client(registry_.host());
  auto m = anonymous->GetManifest(kRepo, "latest");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kUnauthenticated);
  EXPECT_NE(m.status().message().find("imagefs login " + registry_.host()), std::string::npos)
      << m.status().ToString();

  WriteAuthFile(registry_.host(), kUser, "wrong");
  auto wrong = Client(registry_.host());
  auto w = wrong->GetManifest(kRepo, "latest");
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Code::kUnauthenticated);
  EXPECT_NE(w.status().message().find("rejected the credentials"), std::string::npos)
      << w.status().ToString();
  EXPECT_NE(w.status().message().find("imagefs login " + registry_.host()), std::string::npos);
  EXPECT_EQ(wrong->CheckCredentials().code(), Code::kUnauthenticated);
}

// ---------------------------------------------------------------------------------------
// Fake servers: faults and flows the real registry does not produce on demand.

TEST_F(RegistryClientTest, StaleTokenIsRefreshedOnceOn401) {
  std::atomic<int> issued{0};
  std::atomic<bool> accept_any{true};
  std::unique_ptr<FakeServer> server;
  server = std::make_unique<FakeServer>([&](const FakeRequest& req) -> FakeResponse {
    std::string challenge = "Bearer realm=\"http://" + server->host() +
                            "/token\",service=\"fake\",scope=\"repository:r:pull\"";
    if (req.path == "/token") {
      return Json200(Json{{"token", "tok-" + std::to_string(++issued)}, {"expires_in", 300}}.dump());
    }
    // tok-1 is "revoked": only later tokens work.
    std::string auth = req.Header("authorization");
    bool good = accept_any ? (auth.rfind("Bearer tok-", 0) == 0 && auth != "Bearer tok-1")
                           : false;
    if (!good) return {401, {{"WWW-Authenticate", challenge}}, R"({"errors":[]})"};
    return Json200("{\"schemaVersion\":2}", std::string(kOciManifest));
  });
  auto client = Client(server->host());
  auto m = client->GetManifest("r", "t");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(issued.load(), 2);
  EXPECT_EQ(server->RequestsTo("/v2/r/manifests/t").back().Header("authorization"), "Bearer tok-2");
  // A registry that keeps refusing: one refresh, then a clear error (no loop).
  accept_any = false;
  int before = issued.load();
  auto refused = client->GetManifest("r", "t");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kUnauthenticated) << refused.status().ToString();
  EXPECT_EQ(issued.load() - before, 1);
}

// No /v2/ ping before the first manifest: the manifest request itself meets the 401, whose
// challenge is followed (token) before the request is sent again with the token.
TEST_F(RegistryClientTest, FirstManifestRequestMeetsTheChallengeWithoutAPing) {
  std::atomic<int> issued{0};
  std::unique_ptr<FakeServer> server;
  server = std::make_unique<FakeServer>([&](const FakeRequest& req) -> FakeResponse {
    if (req.path == "/token") {
      return Json200(Json{{"token", "tok-" + std::to_string(++issued)}, {"expires_in", 300}}.dump());
    }
    std::string challenge = "Bearer realm=\"http://" + server->host() +
                            "/token\",service=\"fake\",scope=\"repository:r:pull\"";
    if (req.Header("authorization") != "Bearer tok-1") {
      return {401, {{"WWW-Authenticate", challenge}}, R"({"errors":[]})"};
    }
    if (req.path == "/v2/") return Json200("{}");
    return Json200("{\"schemaVersion\":2}", std::string(kOciManifest));
  });
  auto client = Client(server->host());
  auto m = client->GetManifest("r", "t");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->bytes, "{\"schemaVersion\":2}");
  EXPECT_EQ(client->BaseUrl(), "http://" + server->host());
  EXPECT_EQ(issued.load(), 1);
  std::vector<std::string> paths;
  for (const FakeRequest& req : server->Requests()) paths.push_back(req.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"/v2/r/manifests/t", "/token", "/v2/r/manifests/t"}));
  EXPECT_EQ(server->RequestsTo("/v2/r/manifests/t").back().Header("authorization"), "Bearer tok-1");
}

// A manifest request answered by neither scheme like a registry's (a web server's 404) is
// judged by the ping, as before: the same failure as the ping's, which then went first.
TEST_F(RegistryClientTest, ServerThatIsNoRegistryFailsAsThePingDoes) {
  FakeServer server([&](const FakeRequest&) -> FakeResponse { return {404, {}, "no such page"}; });
  auto m = Client(server.host())->GetManifest("r", "t");
  ASSERT_FALSE(m.ok());
  Status ping = Client(server.host())->Ping();
  ASSERT_FALSE(ping.ok());
  EXPECT_EQ(m.status().ToString(), ping.ToString());
  EXPECT_EQ(server.RequestsTo("/v2/r/manifests/t").size(), 1u);  // the probe; no 2nd attempt
}

TEST_F(RegistryClientTest, ServerErrorsAreRetriedWithBackoffThenSucceed) {
  std::atomic<int> manifest_calls{0};
  FakeServer server([&](const FakeRequest& req) -> FakeResponse {
    if (req.path == "/v2/") return Json200("{}");
    if (++manifest_calls <= 2) return {503, {}, R"({"errors":[{"code":"UNAVAILABLE","message":"busy"}]})"};
    return Json200("{\"schemaVersion\":2}", std::string(kOciManifest));
  });
  auto client = Client(server.host());  // max_retries = 2
  auto m = client->GetManifest("r", "t");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->bytes, "{\"schemaVersion\":2}");
  EXPECT_EQ(manifest_calls.load(), 3);
  // The Accept header lists the manifest types.
  EXPECT_EQ(server.RequestsTo("/v2/r/manifests/").back().Header("accept"), ManifestAcceptHeader());
}

TEST_F(RegistryClientTest, ServerErrorsGiveUpAfterMaxRetries) {
  std::atomic<int> manifest_calls{0};
  FakeServer server([&](const FakeRequest& req) -> FakeResponse {
    if (req.path == "/v2/") return Json200("{}");
    ++manifest_calls;
    return {500, {}, R"({"errors":[{"code":"UNKNOWN","message":"disk on fire"}]})"};
  });
  auto client = Client(server.host());
  auto m = client->GetManifest("r", "t");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kUnavailable);
  EXPECT_NE(m.status().message().find("HTTP 500 (disk on fire)"), std::string::npos)
      << m.status().ToString();
  EXPECT_EQ(manifest_calls.load(), 3);  // 1 + max_retries
}

TEST_F(RegistryClientTest, RetryBudgetRetriesPastMaxRetriesUntilItIsSpent) {
  std::atomic<int> manifest_calls{0};
  std::atomic<int> failures{8};  // more than max_retries (2)
  FakeServer server([&](const FakeRequest& req) -> FakeResponse {
    if (req.path == "/v2/") return Json200("{}");
    ++manifest_calls;
    if (failures.fetch_sub(1) > 0) return {503, {}, R"({"errors":[{"message":"busy"}]})"};
    return Json200("{\"schemaVersion\":2}", std::string(kOciManifest));
  });
  // Back within the budget: the request succeeds.
  auto m = Client(server.host(), milliseconds(3000))->GetManifest("r", "t");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(manifest_calls.load(), 9);
  // Never back: it fails once the budget is spent, not before.
  failures = 1 << 30;
  auto start = steady_clock::now();
  m = Client(server.host(), milliseconds(700))->GetManifest("r", "t");
  ASSERT_FALSE(m.ok());
  EXPECT_GE(steady_clock::now() - start, milliseconds(600));
  EXPECT_LT(steady_clock::now() - start, milliseconds(3000));
}

TEST_F(RegistryClientTest, BlobRedirectResendsRangeButNotAuthorizationToAnotherHost) {
  std::string blob = PatternBytes(5000, 3);
  std::string digest = Digest::Sha256Of(blob).String();
  FakeServer storage([&](const FakeRequest& req) -> FakeResponse {
    std::string range = req.Header("range");  // "bytes=a-b"
    size_t dash = range.find('-');
    uint64_t a = std::stoull(range.substr(6, dash - 6)), b = std::stoull(range.substr(dash + 1));
    return {206,
            {{"Content-Range", "bytes " + std::to_string(a) + "-" + std::to_string(b) + "/" +
                                   std::to_string(blob.size())}},
            blob.substr(a, b - a + 1)};
  });
  std::string basic = "Basic " + Base64Encode(std::string(kUser) + ":" + kPassword);
  FakeServer registry([&](const FakeRequest& req) -> FakeResponse {
    if (req.Header("authorization") != basic) {
      return {401, {{"WWW-Authenticate", "Basic realm=\"fake\""}}, "{}"};
    }
    if (req.path == "/v2/") return Json200("{}");
    return {307, {{"Location", "http://" + storage.host() + "/store/blob?sig=abc"}}, "moved"};
  });
  WriteAuthFile(registry.host(), kUser, kPassword);
  auto client = Client(registry.host());
  auto src = client->OpenBlob("r", digest, static_cast<int64_t>(blob.size()));
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  std::vector<uint8_t> buf(20);
  auto n = (*src)->ReadAt(10, buf);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 20u);
  EXPECT_EQ(std::string(buf.begin(), buf.end()), blob.substr(10, 20));
  auto at_registry = registry.RequestsTo("/v2/r/blobs/");
  ASSERT_FALSE(at_registry.empty());
  EXPECT_EQ(at_registry.back().Header("authorization"), basic);
  EXPECT_EQ(at_registry.back().Header("range"), "bytes=10-29");
  auto at_storage = storage.RequestsTo("/store/blob");
  ASSERT_EQ(at_storage.size(), 1u);
  EXPECT_EQ(at_storage[0].Header("range"), "bytes=10-29");
  EXPECT_FALSE(at_storage[0].HasHeader("authorization"));
  EXPECT_EQ(at_storage[0].query["sig"], "abc");
}

TEST_F(RegistryClientTest, ServerIgnoringRangeIsSlicedAndShortBodiesAreCorruption) {
  std::string blob = PatternBytes(3000, 5);
  std::atomic<int> mode{0};  // 0: whole blob with 200; 1: 206 cut short; 2: 200 wrong size
  FakeServer server([&](const FakeRequest& req) -> FakeResponse {
    if (req.path == "/v2/") return Json200("{}");
    if (mode == 0) return {200, {}, blob};
    if (mode == 1) return {206, {{"Content-Range", "bytes 100-199/3000"}}, blob.substr(100, 60)};
    return {200, {}, blob.substr(0, 2000)};
  });
  auto client = Client(server.host());
  auto src = client->OpenBlob("r", Digest::Sha256Of(blob).String(), static_cast<int64_t>(blob.size()));
  ASSERT_TRUE(src.ok());
  std::vector<uint8_t> buf(100);
  auto n = (*src)->ReadAt(100, buf);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(std::string(buf.begin(), buf.end()), blob.substr(100, 100));
  mode = 1;
  auto short_read = (*src)->ReadAt(100, buf);
  EXPECT_EQ(short_read.status().code(), Code::kCorruption) << short_read.status().ToString();
  EXPECT_NE(short_read.status().message().find("60 of 100"), std::string::npos)
      << short_read.status().ToString();
  mode = 2;
  auto wrong = (*src)->ReadAt(100, buf);
  EXPECT_EQ(wrong.status().code(), Code::kCorruption) << wrong.status().ToString();
}

TEST_F(RegistryClientTest, GetBlobResumesABrokenDownloadWithRange) {
  std::string blob = PatternBytes(300000, 9);
  FakeServer server([&](const FakeRequest& req) -> FakeResponse {
    if (req.path == "/v2/") return Json200("{}");
    std::string range = req.Header("range");
    if (range.empty()) {
      // Promise the whole blob, send a third, hang up.
      return {200, {{"Content-Length", std::to_string(blob.size())}}, blob.substr(0, 100000)};
    }
    uint64_t from = std::stoull(range.substr(6, range.find('-') - 6));
    return {206,
            {{"Content-Range", "bytes " + std::to_string(from) + "-" +
                                   std::to_string(blob.size() - 1) + "/" + std::to_string(blob.size())}},
            blob.substr(from)};
  });
  auto client = Client(server.host());
  std::string got;
  Status st = client->GetBlob("r", Digest::Sha256Of(blob).String(), [&](const char* d, size_t n) {
    got.append(d, n);
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(got == blob) << "got " << got.size() << " bytes";
  auto gets = server.RequestsTo("/v2/r/blobs/");
  ASSERT_EQ(gets.size(), 2u);
  EXPECT_EQ(gets[1].Header("range"), "bytes=100000-");
}

}  // namespace
}  // namespace registry_client_test
}  // namespace imagefs::fetch
