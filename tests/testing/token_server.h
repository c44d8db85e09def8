#pragma once

// A Docker-style token server for registry tests (the `auth: token` flow of distribution):
//
//   GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]
//   Authorization: Basic base64(user:password)
//   -> 200 {"token": JWT, "access_token": JWT, "expires_in": 300, "issued_at": RFC3339}
//
// Requests without credentials, or with wrong ones, get 401. The JWT is RS256, signed with
// the given key; its header carries x5c = [the DER signing certificate], which the registry
// checks against its rootcertbundle (the same certificate). Claims: iss, sub (the user),
// aud (the requested service, a single string), exp, nbf, iat, jti and access, which grants
// pull and push on every repository scope requested.
//
// HTTP/1.1 on 127.0.0.1 with one thread serving one connection at a time ("Connection:
// close"). Counters are thread-safe. The destructor stops the thread.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "util/status.h"
#include "util/unique_fd.h"

namespace imagefs::testing {

struct TokenServerOptions {
  std::string key_pem_path;   // RSA private key, PEM
  std::string cert_pem_path;  // its certificate, PEM (put into x5c)
  std::string username;
  std::string password;
  std::string issuer;
  int64_t lifetime_seconds = 300;
};

class TokenServer {
 public:
  static Result<std::unique_ptr<TokenServer>> Start(const TokenServerOptions& options);
  ~TokenServer();
  TokenServer(const TokenServer&) = delete;
  TokenServer& operator=(const TokenServer&) = delete;

  int port() const { return port_; }
  // "http://127.0.0.1:PORT/token", the realm for the registry config.
  std::string realm() const;
  // Every request to /token, granted or not.
  int TokenRequests() const { return requests_.load(); }
  // Requests answered with a token.
  int TokensIssued() const { return issued_.load(); }
  // Requests refused with 401.
  int Denied() const { return denied_.load(); }

 private:
  struct Key;
  TokenServer() = default;
  void Serve();
  void HandleConnection(int fd);
  // The full HTTP response for one request head.
  std::string Respond(const std::string& head);
  Result<std::string> MakeJwt(const std::string& subject, const std::string& service,
                              const std::vector<std::string>& scopes);

  TokenServerOptions options_;
  std::unique_ptr<Key> key_;
  std::string cert_der_base64_;
  UniqueFd listen_fd_;
  UniqueFd wake_read_;
  UniqueFd wake_write_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<int> requests_{0};
  std::atomic<int> issued_{0};
  std::atomic<int> denied_{0};
  std::atomic<uint64_t> jti_counter_{0};
};

// Base64 helpers shared with the registry harness.
std::string Base64Encode(std::string_view data);     // standard alphabet, padded
std::string Base64UrlEncode(std::string_view data);  // URL alphabet, no padding
Result<std::string> Base64Decode(std::string_view text);

}  // namespace imagefs::testing
