#pragma once

// Registry authentication pieces that need no network:
//  - WWW-Authenticate parsing (RFC 7235 challenges; Bearer realm/service/scope, Basic realm)
//  - credential lookup in containers/image's order, and login/logout writes.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/base64.h"
#include "util/status.h"

namespace imagefs::fetch {

struct AuthChallenge {
  std::string scheme;                         // lowercased: "bearer", "basic"
  std::map<std::string, std::string> params;  // keys lowercased, values unquoted
  std::string token68;                        // "Scheme abc123==" form (no params then)
};

// Parses a WWW-Authenticate header value that may hold several challenges:
//   Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="a,b"
// Quoted strings keep commas and backslash escapes. A malformed header is kCorruption.
Result<std::vector<AuthChallenge>> ParseWwwAuthenticate(std::string_view header);

struct Credential {
  std::string username;
  std::string password;
  std::string identity_token;  // from "identitytoken" (OAuth refresh token)
  bool empty() const { return username.empty() && password.empty() && identity_token.empty(); }
};

// The environment the lookup reads; filled from the process by FromProcess(), set by tests.
struct AuthEnv {
  std::string registry_auth_file;  // $REGISTRY_AUTH_FILE
  std::string xdg_runtime_dir;     // $XDG_RUNTIME_DIR
  std::string xdg_config_home;     // $XDG_CONFIG_HOME
  std::string home;                // $HOME
  std::string docker_config;       // $DOCKER_CONFIG (dir holding config.json)
  unsigned uid = 0;
  static AuthEnv FromProcess();
};

// Files consulted, in order: $REGISTRY_AUTH_FILE; $XDG_RUNTIME_DIR/containers/auth.json
// (or /run/containers/$UID/auth.json when XDG_RUNTIME_DIR is unset);
// $XDG_CONFIG_HOME/containers/auth.json (default ~/.config); then ~/.docker/config.json
// ($DOCKER_CONFIG/config.json when set). Paths that would need an empty $HOME are left out.
std::vector<std::string> AuthFilesInOrder(const AuthEnv& env);
// The file login/logout write: $REGISTRY_AUTH_FILE if set, else the runtime-dir auth.json.
std::string AuthFileForWrite(const AuthEnv& env);

// Looks up credentials for a registry host ("localhost:5000", "docker.io").
// Keys in "auths" may be "host", "https://host", "http://host/v1/" and so on, and for
// docker.io also "https://index.docker.io/v1/". Per-host credHelpers and a global
// credsStore run `docker-credential-NAME get`. Returns nullopt when nothing matches.
// A malformed file is an error naming the file.
// Within one file: a credHelpers entry for the host decides alone; else "auths" (an exact key
// first, then keys that normalize to the host); else the global credsStore (a credsStore
// helper that is not installed is skipped, a per-host one is kNotFound). The first file that
// yields a credential wins.
Result<std::optional<Credential>> LookupCredential(const AuthEnv& env, std::string_view host);
// The same for one repository ("library/nginx"): "auths" keys scoped to the repository or one
// of its namespaces ("quay.io/org/app", "quay.io/org"), as podman login writes them, are
// preferred to the registry-wide key. Keys without a scheme but with a path are scoped keys.
Result<std::optional<Credential>> LookupCredential(const AuthEnv& env, std::string_view host,
                                                   std::string_view repository);

// Writes {"auths":{host:{"auth":base64(user:pass)}}} into AuthFileForWrite, keeping
// other entries, atomically, with mode 0600 (parent directories are created 0700). An
// identity token is stored as "identitytoken". docker.io's aliases are written as "docker.io".
Status StoreCredential(const AuthEnv& env, std::string_view host, const Credential& cred);
// Removes host from AuthFileForWrite. kNotFound if it was not logged in.
Status EraseCredential(const AuthEnv& env, std::string_view host);

// Standard alphabet. Encode pads with '='; decode accepts missing padding and trailing
// white space, and rejects anything else that is not base64 (kInvalidArgument).
using ::imagefs::Base64Decode;  // util/base64.h
using ::imagefs::Base64Encode;

}  // namespace imagefs::fetch
