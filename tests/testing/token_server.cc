#include "tests/testing/token_server.h"

#include "fetch/auth.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <ctime>
#include <nlohmann/json.hpp>

namespace imagefs::testing {

struct TokenServer::Key {
  EVP_PKEY* pkey = nullptr;
  ~Key() { EVP_PKEY_free(pkey); }
};

namespace {

constexpr size_t kMaxHead = 64 * 1024;

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string HttpResponse(int code, std::string_view reason, std::string_view body,
                         std::string_view extra_headers = "") {
  std::string out = "HTTP/1.1 " + std::to_string(code) + " " + std::string(reason) + "\r\n";
  out += "Content-Type: application/json\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "Connection: close\r\n";
  out += extra_headers;
  out += "\r\n";
  out += body;
  return out;
}

std::string Rfc3339(time_t t) {
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string OpenSslError() {
  return "openssl error " + std::to_string(ERR_get_error());
}

}  // namespace

std::string Base64Encode(std::string_view data) { return fetch::Base64Encode(data); }

std::string Base64UrlEncode(std::string_view data) {
  std::string out = Base64Encode(data);
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  std::string in(text);
  for (char& c : in) {
    if (c == '-') c = '+';
    else if (c == '_') c = '/';
  }
  return fetch::Base64Decode(in);
}

Result<std::unique_ptr<TokenServer>> TokenServer::Start(const TokenServerOptions& options) {
  std::unique_ptr<TokenServer> server(new TokenServer());
  server->options_ = options;

  BIO* key_bio = BIO_new_file(options.key_pem_path.c_str(), "r");
  if (key_bio == nullptr) return Status::NotFound("token server: reading " + options.key_pem_path);
  server->key_ = std::make_unique<Key>();
  server->key_->pkey = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  if (server->key_->pkey == nullptr) {
    return Status::InvalidArgument("token server: no private key in " + options.key_pem_path);
  }
  BIO* cert_bio = BIO_new_file(options.cert_pem_path.c_str(), "r");
  if (cert_bio == nullptr) return Status::NotFound("token server: reading " + options.cert_pem_path);
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  if (cert == nullptr) {
    return Status::InvalidArgument("token server: no certificate in " + options.cert_pem_path);
  }
  unsigned char* der = nullptr;
  int der_len = i2d_X509(cert, &der);
  X509_free(cert);
  if (der_len <= 0) return Status::Internal("token server: encoding the certificate: " + OpenSslError());
  server->cert_der_base64_ =
      Base64Encode(std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(der_len)));
  OPENSSL_free(der);

  server->listen_fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!server->listen_fd_) return Status::FromErrno(errno, "token server: socket");
  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(server->listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno(errno, "token server: bind 127.0.0.1:0");
  }
  if (::listen(server->listen_fd_.get(), 64) != 0) return Status::FromErrno(errno, "token server: listen");
  socklen_t len = sizeof addr;
  if (::getsockname(server->listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Status::FromErrno(errno, "token server: getsockname");
  }
  server->port_ = ntohs(addr.sin_port);
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC) != 0) return Status::FromErrno(errno, "token server: pipe");
  server->wake_read_.Reset(wake[0]);
  server->wake_write_.Reset(wake[1]);
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

TokenServer::~TokenServer() {
  if (thread_.joinable()) {
    char c = 'q';
    ssize_t ignored = ::write(wake_write_.get(), &c, 1);
    (void)ignored;
    thread_.join();
  }
}

std::string TokenServer::realm() const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/token";
}

void TokenServer::Serve() {
  for (;;) {
    struct pollfd pfds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_read_.get(), POLLIN, 0}};
    int n = ::poll(pfds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (pfds[1].revents != 0) return;
    if (pfds[0].revents & POLLIN) {
      int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      UniqueFd conn(fd);
      HandleConnection(conn.get());
    }
  }
}

void TokenServer::HandleConnection(int fd) {
  struct timeval tv = {5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string head;
  char buf[4096];
  while (head.find("\r\n\r\n") == std::string::npos && head.size() < kMaxHead) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    head.append(buf, static_cast<size_t>(n));
  }
  std::string response = Respond(head);
  size_t sent = 0;
  while (sent < response.size()) {
    ssize_t n = ::send(fd, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
}

std::string TokenServer::Respond(const std::string& head) {
  size_t line_end = head.find("\r\n");
  std::string request_line = head.substr(0, line_end);
  size_t sp1 = request_line.find(' ');
  size_t sp2 = request_line.rfind(' ');
  if (sp1 == std::string::npos || sp2 <= sp1) {
    return HttpResponse(400, "Bad Request", R"({"details":"bad request line"})");
  }
  std::string method = request_line.substr(0, sp1);
  std::string target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string path = target.substr(0, target.find('?'));
  std::string query = target.find('?') == std::string::npos ? "" : target.substr(target.find('?') + 1);
  if (path != "/token") return HttpResponse(404, "Not Found", R"({"details":"not found"})");
  requests_.fetch_add(1);
  if (method != "GET") {
    denied_.fetch_add(1);
    return HttpResponse(405, "Method Not Allowed", R"({"details":"only GET"})");
  }

  std::string authorization;
  size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string::npos || end == pos) break;
    std::string line = head.substr(pos, end - pos);
    size_t colon = line.find(':');
    if (colon != std::string::npos && ToLower(line.substr(0, colon)) == "authorization") {
      authorization = line.substr(colon + 1);
      size_t first = authorization.find_first_not_of(" \t");
      authorization = first == std::string::npos ? "" : authorization.substr(first);
    }
    pos = end + 2;
  }

  std::string service;
  std::vector<std::string> scopes;
  size_t qpos = 0;
  while (qpos <= query.size() && !query.empty()) {
    size_t amp = query.find('&', qpos);
    if (amp == std::string::npos) amp = query.size();
    std::string pair = query.substr(qpos, amp - qpos);
    size_t eq = pair.find('=');
    std::string key = PercentDecode(pair.substr(0, eq));
    std::string value = eq == std::string::npos ? "" : PercentDecode(pair.substr(eq + 1));
    if (key == "service") {
      service = value;
    } else if (key == "scope") {
      size_t start = 0;
      while (start < value.size()) {  // OAuth2 allows several scopes separated by spaces
        size_t space = value.find(' ', start);
        if (space == std::string::npos) space = value.size();
        if (space > start) scopes.push_back(value.substr(start, space - start));
        start = space + 1;
      }
    }
    qpos = amp + 1;
  }

  const std::string challenge = "WWW-Authenticate: Basic realm=\"imagefs-test-token\"\r\n";
  if (ToLower(authorization.substr(0, 6)) != "basic ") {
    denied_.fetch_add(1);
    return HttpResponse(401, "Unauthorized", R"({"details":"credentials required"})", challenge);
  }
  Result<std::string> decoded = Base64Decode(authorization.substr(6));
  size_t colon = decoded.ok() ? decoded->find(':') : std::string::npos;
  if (colon == std::string::npos || decoded->substr(0, colon) != options_.username ||
      decoded->substr(colon + 1) != options_.password) {
    denied_.fetch_add(1);
    return HttpResponse(401, "Unauthorized", R"({"details":"wrong username or password"})", challenge);
  }

  Result<std::string> jwt = MakeJwt(options_.username, service, scopes);
  if (!jwt.ok()) {
    return HttpResponse(500, "Internal Server Error",
                        nlohmann::json{{"details", jwt.status().message()}}.dump());
  }
  issued_.fetch_add(1);
  nlohmann::json body = {
      {"token", *jwt},
      {"access_token", *jwt},
      {"expires_in", options_.lifetime_seconds},
      {"issued_at", Rfc3339(::time(nullptr))},
  };
  return HttpResponse(200, "OK", body.dump());
}

Result<std::string> TokenServer::MakeJwt(const std::string& subject, const std::string& service,
                                         const std::vector<std::string>& scopes) {
  nlohmann::json access = nlohmann::json::array();
  for (const std::string& scope : scopes) {
    size_t first = scope.find(':');
    size_t last = scope.rfind(':');
    if (first == std::string::npos || last == first) continue;
    std::string type = scope.substr(0, first);
    std::string name = scope.substr(first + 1, last - first - 1);
    nlohmann::json actions = nlohmann::json::array();
    if (type == "repository") {
      actions = {"pull", "push"};
    } else {
      std::string requested = scope.substr(last + 1);
      size_t start = 0;
      while (start <= requested.size()) {
        size_t comma = requested.find(',', start);
        if (comma == std::string::npos) comma = requested.size();
        if (comma > start) actions.push_back(requested.substr(start, comma - start));
        start = comma + 1;
      }
    }
    access.push_back({{"type", type}, {"name", name}, {"actions", actions}});
  }
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  unsigned char random[8];
  RAND_bytes(random, sizeof random);
  std::string jti = std::to_string(jti_counter_.fetch_add(1)) + "-" +
                    Base64UrlEncode(std::string_view(reinterpret_cast<char*>(random), sizeof random));

  nlohmann::json header = {{"alg", "RS256"}, {"typ", "JWT"}, {"x5c", {cert_der_base64_}}};
  nlohmann::json claims = {
      {"iss", options_.issuer},
      {"sub", subject},
      {"aud", service},
      {"exp", now + options_.lifetime_seconds},
      {"nbf", now - 10},
      {"iat", now},
      {"jti", jti},
      {"access", access},
  };
  const auto kReplace = nlohmann::json::error_handler_t::replace;
  std::string signing_input = Base64UrlEncode(header.dump(-1, ' ', false, kReplace)) + "." +
                              Base64UrlEncode(claims.dump(-1, ' ', false, kReplace));

  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) return Status::Internal("EVP_MD_CTX_new failed");
  size_t sig_len = 0;
  std::string signature;
  bool ok = EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key_->pkey) == 1 &&
            EVP_DigestSign(ctx, nullptr, &sig_len,
                           reinterpret_cast<const unsigned char*>(signing_input.data()),
                           signing_input.size()) == 1;
  if (ok) {
    signature.resize(sig_len);
    ok = EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(signature.data()), &sig_len,
                        reinterpret_cast<const unsigned char*>(signing_input.data()),
                        signing_input.size()) == 1;
    signature.resize(sig_len);
  }
  EVP_MD_CTX_free(ctx);
  if (!ok) return Status::Internal("signing the token: " + OpenSslError());
  return signing_input + "." + Base64UrlEncode(signature);
}

}  // namespace imagefs::testing
