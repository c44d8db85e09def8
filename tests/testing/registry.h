#pragma once

// A real docker-registry (distribution 2.8) for end-to-end tests, on a free 127.0.0.1 port,
// with its config, storage, certificates and log in a fresh /tmp/imagefs-registry-XXXXXX.
//
//   auto reg = TestRegistry::Start(RegistryFlavor::kTlsBasic);
//   ASSERT_TRUE(reg.ok()) << reg.status().ToString();
//   (*reg)->host()  // "localhost:PORT"
//
// Flavors:
//   kPlain     HTTP, no auth. host() = "127.0.0.1:PORT".
//   kTlsBasic  HTTPS (own CA; server cert for DNS:localhost, IP:127.0.0.1) and htpasswd
//              Basic auth for username()/password(). host() = "localhost:PORT".
//   kToken     HTTPS as above and `auth: token` served by an in-process TokenServer at
//              http://127.0.0.1:TPORT/token (Bearer challenge -> token -> retry, as on
//              Docker Hub). host() = "localhost:PORT".
//
// The registry logs at info level to log_path(); every response adds a "response
// completed" line with http.response.written=N, which BytesSent()/Requests() read.
// REGISTRY_* variables never reach the registry (it would take them as config).
// The destructor stops the registry by PID (SIGTERM, then SIGKILL), stops the token
// server and removes the directory. Methods are safe to call from several threads except
// ResetCounters.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tests/testing/process.h"
#include "tests/testing/token_server.h"
#include "util/status.h"

namespace imagefs::testing {

enum class RegistryFlavor { kPlain, kTlsBasic, kToken };

// "plain", "tls-basic", "token" (for test names).
const char* RegistryFlavorName(RegistryFlavor flavor);

// One "response completed" line of the registry log.
struct RegistryRequest {
  std::string method;
  std::string uri;  // path and query, as requested
  int status = 0;
  uint64_t written = 0;  // response body bytes
};

class TestRegistry {
 public:
  static Result<std::unique_ptr<TestRegistry>> Start(RegistryFlavor flavor);
  ~TestRegistry();
  TestRegistry(const TestRegistry&) = delete;
  TestRegistry& operator=(const TestRegistry&) = delete;

  RegistryFlavor flavor() const { return flavor_; }
  bool tls() const { return flavor_ != RegistryFlavor::kPlain; }
  bool needs_auth() const { return flavor_ != RegistryFlavor::kPlain; }
  // "127.0.0.1:PORT" (kPlain) or "localhost:PORT".
  const std::string& host() const { return host_; }
  int port() const { return port_; }
  // "http://127.0.0.1:PORT" or "https://localhost:PORT".
  std::string base_url() const;
  pid_t pid() const { return process_.pid(); }
  // The temp dir holding everything (removed by the destructor).
  const std::string& dir() const { return dir_; }
  const std::string& log_path() const { return log_path_; }

  // TLS flavors: the CA that signed the server cert (PEM). Empty for kPlain.
  const std::string& ca_cert_path() const { return ca_cert_path_; }
  // A directory holding only ca.crt: skopeo's --cert-dir / --dest-cert-dir. Empty for kPlain.
  const std::string& cert_dir() const { return cert_dir_; }
  // A containers certs.d tree: certs_d_dir()/HOST:PORT/ca.crt. Empty for kPlain.
  const std::string& certs_d_dir() const { return certs_d_dir_; }
  // Credentials ("" for kPlain).
  const std::string& username() const { return username_; }
  const std::string& password() const { return password_; }
  // An auth file (containers auth.json / docker config.json shape) with no credentials.
  const std::string& empty_auth_file() const { return empty_auth_file_; }
  // An auth file with this registry's credentials under host() ({"auths":{HOST:{"auth":..}}});
  // the same as empty_auth_file() for kPlain.
  const std::string& auth_file() const { return auth_file_; }

  // skopeo flags for this registry as a destination, a source, or the image of
  // inspect / list-tags / delete (--tls-verify=false, or --cert-dir + --creds).
  std::vector<std::string> skopeo_dest_flags() const;
  std::vector<std::string> skopeo_src_flags() const;
  std::vector<std::string> skopeo_image_flags() const;
  // Environment for a client process that must not read the user's files:
  // REGISTRY_AUTH_FILE = empty_auth_file(), CONTAINERS_REGISTRIES_CONF = an empty file.
  std::vector<std::pair<std::string, std::string>> client_env() const;
  // Runs `skopeo --policy <accept-anything> ARGS...` with client_env(). Add the flags above.
  Result<ProcessResult> RunSkopeo(const std::vector<std::string>& args,
                                  std::chrono::milliseconds timeout = std::chrono::minutes(5)) const;

  // Faults: Stop ends the registry process (SIGTERM, then SIGKILL; storage, port and
  // certificates stay) so clients see connections refused; Restart serves the same storage
  // on the same port again (the log goes on; counters are unchanged). Neither is safe
  // to call concurrently with other methods.
  void Stop();
  Status Restart();
  // The registry's storage root (docker/registry/v2/blobs/sha256/XX/HEX/data per blob).
  std::string storage_dir() const { return dir_ + "/data"; }

  // Counters over the log lines written since the last ResetCounters() (or Start).
  uint64_t BytesSent() const;
  // BytesSent() once the log has caught up with the responses already sent (about 0.5 s).
  uint64_t SettledBytesSent() const;
  int RequestCount() const;
  std::vector<RegistryRequest> Requests() const;
  void ResetCounters();

  // kToken only (nullptr / 0 otherwise).
  const TokenServer* token_server() const { return token_server_.get(); }
  int TokenRequests() const { return token_server_ ? token_server_->TokenRequests() : 0; }

 private:
  TestRegistry() = default;
  Status Setup();
  Status MakeTlsFiles();
  Status WriteConfig();
  Status Launch();
  Result<int> ProbeV2() const;
  std::vector<RegistryRequest> ReadRequests() const;

  RegistryFlavor flavor_ = RegistryFlavor::kPlain;
  std::string dir_;
  std::string log_path_;
  std::string config_path_;
  std::string host_;
  int port_ = 0;
  std::string ca_cert_path_;
  std::string cert_dir_;
  std::string certs_d_dir_;
  std::string server_cert_path_;
  std::string server_key_path_;
  std::string username_;
  std::string password_;
  std::string empty_auth_file_;
  std::string auth_file_;
  std::string registries_conf_;
  std::string policy_path_;
  std::unique_ptr<TokenServer> token_server_;
  std::string token_cert_path_;
  uint64_t counter_offset_ = 0;
  BackgroundProcess process_;
};

}  // namespace imagefs::testing
