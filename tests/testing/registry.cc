#include "tests/testing/registry.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kService[] = "imagefs-test-registry";
constexpr char kIssuer[] = "imagefs-test-token-issuer";
constexpr char kUser[] = "tester";
constexpr auto kStartTimeout = std::chrono::seconds(10);

std::string RandomHex(size_t bytes) {
  std::random_device rd;
  std::string out;
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < bytes; ++i) {
    unsigned v = rd() & 0xff;
    out += kHex[v >> 4];
    out += kHex[v & 15];
  }
  return out;
}

Status WriteFile(const std::string& path, const std::string& data, int mode = 0644) {
  return WriteFileAtomic(path, data, mode);
}

// Runs a helper tool (openssl, htpasswd) and turns a failure into a Status.
Result<ProcessResult> RunTool(std::vector<std::string> argv, const std::string& cwd = "") {
  ProcessOptions options;
  options.argv = std::move(argv);
  options.cwd = cwd;
  options.timeout = std::chrono::seconds(60);
  ASSIGN_OR_RETURN(ProcessResult result, RunProcess(options));
  if (!result.ok()) {
    return Status::Internal(ShellQuote(options.argv) + ": " + result.Describe());
  }
  return result;
}

// logfmt as the registry's text formatter writes it: key=value or key="quoted \" value".
std::map<std::string, std::string> ParseLogfmt(std::string_view line) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t eq = line.find('=', i);
    if (eq == std::string_view::npos) break;
    std::string key(line.substr(i, eq - i));
    i = eq + 1;
    std::string value;
    if (i < line.size() && line[i] == '"') {
      ++i;
      while (i < line.size() && line[i] != '"') {
        if (line[i] == '\\' && i + 1 < line.size()) ++i;
        value += line[i++];
      }
      ++i;  // closing quote
    } else {
      size_t end = line.find(' ', i);
      if (end == std::string_view::npos) end = line.size();
      value = std::string(line.substr(i, end - i));
      i = end;
    }
    out[key] = value;
  }
  return out;
}

uint64_t ToU64(const std::string& s) {
  try {
    return std::stoull(s);
  } catch (...) {
    return 0;
  }
}

}  // namespace

const char* RegistryFlavorName(RegistryFlavor flavor) {
  switch (flavor) {
    case RegistryFlavor::kPlain:
      return "plain";
    case RegistryFlavor::kTlsBasic:
      return "tls-basic";
    case RegistryFlavor::kToken:
      return "token";
  }
  return "unknown";
}

Result<std::unique_ptr<TestRegistry>> TestRegistry::Start(RegistryFlavor flavor) {
  std::unique_ptr<TestRegistry> registry(new TestRegistry());
  registry->flavor_ = flavor;
  Status st = registry->Setup();
  if (!st.ok()) {
    return st.WithContext(std::string("starting a ") + RegistryFlavorName(flavor) + " registry");
  }
  return registry;
}

TestRegistry::~TestRegistry() {
  process_.Stop();
  token_server_.reset();
  if (!dir_.empty()) (void)RemoveAll(dir_);
}

void TestRegistry::Stop() { process_.Stop(); }

Status TestRegistry::Restart() {
  process_.Stop();
  RETURN_IF_ERROR(WriteConfig());
  return Launch();
}

Status TestRegistry::Setup() {
  ASSIGN_OR_RETURN(dir_, MakeTempDir("/tmp", "imagefs-registry-"));
  ::chmod(dir_.c_str(), 0755);
  log_path_ = dir_ + "/registry.log";
  config_path_ = dir_ + "/config.yml";
  policy_path_ = dir_ + "/policy.json";
  registries_conf_ = dir_ + "/registries.conf";
  empty_auth_file_ = dir_ + "/auth-empty.json";
  RETURN_IF_ERROR(WriteFile(policy_path_, R"({"default":[{"type":"insecureAcceptAnything"}]})"));
  RETURN_IF_ERROR(WriteFile(registries_conf_, "unqualified-search-registries = []\n"));
  RETURN_IF_ERROR(WriteFile(empty_auth_file_, "{\"auths\":{}}\n", 0600));
  RETURN_IF_ERROR(MakeDirs(dir_ + "/data"));
  if (needs_auth()) {
    username_ = kUser;
    password_ = "pw-" + RandomHex(8);
  }
  if (tls()) RETURN_IF_ERROR(MakeTlsFiles());
  if (flavor_ == RegistryFlavor::kTlsBasic) {
    ASSIGN_OR_RETURN(ProcessResult htpasswd, RunTool({"htpasswd", "-Bbn", username_, password_}));
    RETURN_IF_ERROR(WriteFile(dir_ + "/htpasswd", htpasswd.stdout_text));
  }
  if (flavor_ == RegistryFlavor::kToken) {
    // The token signing key: a self-signed RSA certificate that is also the registry's
    // rootcertbundle, so the x5c chain in each token ends at a trusted root.
    std::string key = dir_ + "/token-signer.key";
    token_cert_path_ = dir_ + "/token-signer.crt";
    RETURN_IF_ERROR(RunTool({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                             "-keyout", key, "-out", token_cert_path_, "-days", "3", "-subj",
                             "/CN=imagefs test token signer", "-config", dir_ + "/openssl.cnf",
                             "-extensions", "v3_signer"})
                        .status());
    TokenServerOptions options;
    options.key_pem_path = key;
    options.cert_pem_path = token_cert_path_;
    options.username = username_;
    options.password = password_;
    options.issuer = kIssuer;
    ASSIGN_OR_RETURN(token_server_, TokenServer::Start(options));
  }
  RETURN_IF_ERROR(WriteConfig());
  RETURN_IF_ERROR(Launch());
  auth_file_ = empty_auth_file_;
  if (needs_auth()) {
    auth_file_ = dir_ + "/auth.json";
    std::string auth = Base64Encode(username_ + ":" + password_);
    RETURN_IF_ERROR(
        WriteFile(auth_file_, "{\"auths\":{\"" + host_ + "\":{\"auth\":\"" + auth + "\"}}}\n", 0600));
  }
  if (tls()) {
    certs_d_dir_ = dir_ + "/certs.d";
    RETURN_IF_ERROR(MakeDirs(certs_d_dir_ + "/" + host_));
    ASSIGN_OR_RETURN(std::string ca, ReadFile(ca_cert_path_));
    RETURN_IF_ERROR(WriteFile(certs_d_dir_ + "/" + host_ + "/ca.crt", ca));
  }
  return Status::Ok();
}

Status TestRegistry::MakeTlsFiles() {
  // One openssl config for the CA (req -x509) and the token signer; the server cert's
  // extensions come from server.ext. EC keys for TLS keep this fast.
  const std::string cnf =
      "[req]\n"
      "distinguished_name = dn\n"
      "prompt = no\n"
      "[dn]\n"
      "CN = imagefs test\n"
      "[v3_ca]\n"
      "basicConstraints = critical,CA:TRUE\n"
      "keyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
      "subjectKeyIdentifier = hash\n"
      "[v3_signer]\n"
      "basicConstraints = critical,CA:TRUE\n"
      "keyUsage = critical,digitalSignature,keyCertSign\n"
      "subjectKeyIdentifier = hash\n";
  RETURN_IF_ERROR(WriteFile(dir_ + "/openssl.cnf", cnf));
  RETURN_IF_ERROR(WriteFile(dir_ + "/server.ext",
                            "subjectAltName = DNS:localhost,IP:127.0.0.1\n"
                            "basicConstraints = critical,CA:FALSE\n"
                            "keyUsage = critical,digitalSignature,keyEncipherment\n"
                            "extendedKeyUsage = serverAuth\n"
                            "authorityKeyIdentifier = keyid\n"));
  cert_dir_ = dir_ + "/certs";
  RETURN_IF_ERROR(MakeDirs(cert_dir_));
  ca_cert_path_ = cert_dir_ + "/ca.crt";
  const std::string ca_key = dir_ + "/ca.key";
  server_key_path_ = dir_ + "/server.key";
  server_cert_path_ = dir_ + "/server.crt";
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"};
  std::vector<std::string> ca_cmd = {"openssl", "req", "-x509"};
  ca_cmd.insert(ca_cmd.end(), ec.begin(), ec.end());
  ca_cmd.insert(ca_cmd.end(), {"-nodes", "-keyout", ca_key, "-out", ca_cert_path_, "-days", "3",
                               "-subj", "/CN=imagefs test CA", "-config", dir_ + "/openssl.cnf",
                               "-extensions", "v3_ca"});
  RETURN_IF_ERROR(RunTool(ca_cmd).status());
  std::vector<std::string> csr_cmd = {"openssl", "req", "-new"};
  csr_cmd.insert(csr_cmd.end(), ec.begin(), ec.end());
  csr_cmd.insert(csr_cmd.end(), {"-nodes", "-keyout", server_key_path_, "-out", dir_ + "/server.csr",
                                 "-subj", "/CN=localhost", "-config", dir_ + "/openssl.cnf"});
  RETURN_IF_ERROR(RunTool(csr_cmd).status());
  RETURN_IF_ERROR(RunTool({"openssl", "x509", "-req", "-in", dir_ + "/server.csr", "-CA",
                           ca_cert_path_, "-CAkey", ca_key, "-set_serial",
                           "0x" + RandomHex(8), "-days", "3",
                           "-extfile", dir_ + "/server.ext", "-out", server_cert_path_})
                      .status());
  return Status::Ok();
}

Status TestRegistry::WriteConfig() {
  std::ostringstream c;
  c << "version: 0.1\n"
    << "log:\n"
    << "  level: info\n"
    << "  formatter: text\n"
    << "  accesslog:\n"
    << "    disabled: true\n"
    << "storage:\n"
    << "  filesystem:\n"
    << "    rootdirectory: " << dir_ << "/data\n"
    << "  delete:\n"
    << "    enabled: true\n"
    << "  maintenance:\n"
    << "    uploadpurging:\n"
    << "      enabled: false\n"
    << "http:\n"
    // Port 0 at first: the kernel picks a free port and the registry logs it ("listening
    // on"), so no other process can take it between choosing and binding. Restart reuses it.
    << "  addr: 127.0.0.1:" << port_ << "\n"
    << "  secret: " << RandomHex(16) << "\n";
  if (tls()) {
    c << "  tls:\n"
      << "    certificate: " << server_cert_path_ << "\n"
      << "    key: " << server_key_path_ << "\n";
  }
  if (flavor_ == RegistryFlavor::kTlsBasic) {
    c << "auth:\n"
      << "  htpasswd:\n"
      << "    realm: imagefs-test\n"
      << "    path: " << dir_ << "/htpasswd\n";
  } else if (flavor_ == RegistryFlavor::kToken) {
    c << "auth:\n"
      << "  token:\n"
      << "    realm: " << token_server_->realm() << "\n"
      << "    service: " << kService << "\n"
      << "    issuer: " << kIssuer << "\n"
      << "    rootcertbundle: " << token_cert_path_ << "\n";
  }
  return WriteFile(config_path_, c.str());
}

Status TestRegistry::Launch() {
  ProcessOptions options;
  options.argv = {"docker-registry", "serve", config_path_};
  // docker-registry maps every REGISTRY_* variable onto its config (REGISTRY_AUTH_FILE
  // would become auth.file and the registry would refuse to start).
  options.env_remove = {"REGISTRY_*"};
  options.cwd = dir_;
  ASSIGN_OR_RETURN(process_, BackgroundProcess::Start(options, log_path_));

  const auto deadline = Clock::now() + kStartTimeout;
  const std::string marker = "msg=\"listening on 127.0.0.1:";
  Status last = Status::Unavailable("no \"listening on\" line in the log yet");
  while (Clock::now() < deadline) {
    if (!process_.IsRunning()) {
      std::string log = ReadFile(log_path_).value_or("");
      return Status::Unavailable("docker-registry exited with " +
                                 std::to_string(process_.exit_code()) + "; log:\n" + log);
    }
    if (port_ == 0) {
      std::string log = ReadFile(log_path_).value_or("");
      size_t at = log.find(marker);
      if (at != std::string::npos) {
        port_ = std::atoi(log.c_str() + at + marker.size());
        host_ = (tls() ? "localhost:" : "127.0.0.1:") + std::to_string(port_);
      }
    }
    if (port_ != 0) {
      Result<int> code = ProbeV2();
      if (code.ok() && (*code == 200 || (needs_auth() && *code == 401))) return Status::Ok();
      last = code.ok() ? Status::Unavailable("GET /v2/ answered " + std::to_string(*code))
                       : code.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  std::string log = ReadFile(log_path_).value_or("");
  return Status::Timeout("docker-registry did not answer /v2/ within 10 s (" + last.message() +
                         "); log:\n" + log);
}

// GET /v2/ over plain TCP or TLS (verifying the server cert against our CA and the name
// "localhost"); returns the HTTP status code.
Result<int> TestRegistry::ProbeV2() const {
  const std::string request =
      "GET /v2/ HTTP/1.1\r\nHost: " + host_ + "\r\nConnection: close\r\n\r\n";
  std::string response;
  if (!tls()) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return Status::FromErrno(errno, "socket");
    struct timeval tv = {2, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return Status::FromErrno(errno, "connecting to " + host_);
    }
    if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      return Status::FromErrno(errno, "sending to " + host_);
    }
    char buf[1024];
    ssize_t n;
    while (response.find("\r\n") == std::string::npos &&
           (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0) {
      response.append(buf, static_cast<size_t>(n));
    }
  } else {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) return Status::Internal("SSL_CTX_new failed");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    Status st = Status::Ok();
    if (SSL_CTX_load_verify_locations(ctx, ca_cert_path_.c_str(), nullptr) != 1) {
      st = Status::Internal("loading " + ca_cert_path_);
    }
    BIO* bio = st.ok() ? BIO_new_ssl_connect(ctx) : nullptr;
    if (st.ok() && bio == nullptr) st = Status::Internal("BIO_new_ssl_connect failed");
    if (st.ok()) {
      SSL* ssl = nullptr;
      BIO_get_ssl(bio, &ssl);
      SSL_set_tlsext_host_name(ssl, "localhost");
      SSL_set1_host(ssl, "localhost");
      const std::string target = "127.0.0.1:" + std::to_string(port_);
      BIO_set_conn_hostname(bio, target.c_str());
      if (BIO_do_connect(bio) != 1 || BIO_do_handshake(bio) != 1) {
        unsigned long err = ERR_get_error();
        char text[256] = "";
        ERR_error_string_n(err, text, sizeof text);
        ERR_clear_error();
        st = Status::Unavailable("TLS connection to " + target + " failed: " + text +
                                 " (verify: " +
                                 X509_verify_cert_error_string(SSL_get_verify_result(ssl)) + ")");
      } else if (BIO_write(bio, request.data(), static_cast<int>(request.size())) !=
                 static_cast<int>(request.size())) {
        st = Status::Unavailable("TLS write to " + target + " failed");
      } else {
        char buf[1024];
        int n;
        while (response.find("\r\n") == std::string::npos &&
               (n = BIO_read(bio, buf, sizeof buf)) > 0) {
          response.append(buf, static_cast<size_t>(n));
        }
      }
      BIO_free_all(bio);
    }
    SSL_CTX_free(ctx);
    RETURN_IF_ERROR(st);
  }
  // "HTTP/1.1 200 OK"
  if (response.compare(0, 5, "HTTP/") != 0 || response.find(' ') == std::string::npos) {
    return Status::Unavailable("no HTTP answer from " + host_);
  }
  return std::atoi(response.c_str() + response.find(' ') + 1);
}

std::string TestRegistry::base_url() const {
  return (tls() ? "https://" : "http://") + host_;
}

std::vector<std::string> TestRegistry::skopeo_dest_flags() const {
  if (!tls()) return {"--dest-tls-verify=false"};
  return {"--dest-cert-dir", cert_dir_, "--dest-creds", username_ + ":" + password_};
}

std::vector<std::string> TestRegistry::skopeo_src_flags() const {
  if (!tls()) return {"--src-tls-verify=false"};
  return {"--src-cert-dir", cert_dir_, "--src-creds", username_ + ":" + password_};
}

std::vector<std::string> TestRegistry::skopeo_image_flags() const {
  if (!tls()) return {"--tls-verify=false"};
  return {"--cert-dir", cert_dir_, "--creds", username_ + ":" + password_};
}

std::vector<std::pair<std::string, std::string>> TestRegistry::client_env() const {
  return {{"REGISTRY_AUTH_FILE", empty_auth_file_},
          {"CONTAINERS_REGISTRIES_CONF", registries_conf_}};
}

Result<ProcessResult> TestRegistry::RunSkopeo(const std::vector<std::string>& args,
                                              std::chrono::milliseconds timeout) const {
  ProcessOptions options;
  options.argv = {"skopeo", "--policy", policy_path_};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.env_set = client_env();
  options.timeout = timeout;
  return RunProcess(options);
}

std::vector<RegistryRequest> TestRegistry::ReadRequests() const {
  std::vector<RegistryRequest> out;
  std::ifstream in(log_path_, std::ios::binary);
  if (!in) return out;
  in.seekg(static_cast<std::streamoff>(counter_offset_));
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // a partial last line; it will be complete next time
    if (line.find("msg=\"response completed") == std::string::npos) continue;
    std::map<std::string, std::string> fields = ParseLogfmt(line);
    RegistryRequest r;
    r.method = fields["http.request.method"];
    r.uri = fields["http.request.uri"];
    r.status = static_cast<int>(ToU64(fields["http.response.status"]));
    r.written = ToU64(fields["http.response.written"]);
    out.push_back(std::move(r));
  }
  return out;
}

uint64_t TestRegistry::BytesSent() const {
  uint64_t total = 0;
  for (const RegistryRequest& r : ReadRequests()) total += r.written;
  return total;
}

uint64_t TestRegistry::SettledBytesSent() const {
  // The registry logs a response after sending it: wait until the count stops moving.
  uint64_t last = BytesSent();
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    uint64_t now = BytesSent();
    if (now == last && i >= 2) break;
    last = now;
  }
  return last;
}

int TestRegistry::RequestCount() const { return static_cast<int>(ReadRequests().size()); }

std::vector<RegistryRequest> TestRegistry::Requests() const { return ReadRequests(); }

void TestRegistry::ResetCounters() {
  // Up to the end of the last complete line, so a line being written is counted later.
  std::string log = ReadFile(log_path_).value_or("");
  size_t last_newline = log.rfind('\n');
  counter_offset_ = last_newline == std::string::npos ? 0 : last_newline + 1;
}

}  // namespace imagefs::testing
