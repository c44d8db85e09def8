// Registry authentication without the network: WWW-Authenticate challenges (RFC 7235), the
// credential files podman and docker write, docker-credential-* helpers, and base64.

#include "fetch/auth.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "fetch/reference.h"
#include "util/ascii.h"
#include "util/file.h"
#include "util/unique_fd.h"

extern char** environ;

namespace imagefs::fetch {
namespace {

using Json = nlohmann::json;

// The server URL docker login and credential helpers use for Docker Hub.
constexpr std::string_view kDockerHubServerUrl = "https://index.docker.io/v1/";


bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// RFC 7230 tchar.
bool IsTokenChar(char c) {
  return IsAlnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// RFC 7235 token68 characters (before the trailing '=' padding).
bool IsToken68Char(char c) {
  return IsAlnum(c) || std::string_view("-._~+/").find(c) != std::string_view::npos;
}

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

// ---- WWW-Authenticate ------------------------------------------------------------------

class ChallengeParser {
 public:
  explicit ChallengeParser(std::string_view header) : h_(header) {}

  Result<std::vector<AuthChallenge>> Parse() {
    std::vector<AuthChallenge> out;
    while (true) {
      SkipSpaceAndCommas();
      if (AtEnd()) break;
      std::string_view scheme = Token();
      if (scheme.empty()) return Bad("expected an auth scheme at offset " + std::to_string(i_));
      AuthChallenge ch;
      ch.scheme = AsciiLower(scheme);
      if (!AtEnd() && !IsSpace(h_[i_]) && h_[i_] != ',') {
        return Bad("unexpected '" + std::string(1, h_[i_]) + "' after scheme \"" +
                   std::string(scheme) + "\"");
      }
      SkipSpace();
      if (!TryToken68(ch)) RETURN_IF_ERROR(Params(ch));
      out.push_back(std::move(ch));
    }
    if (out.empty()) return Bad("no challenge");
    return out;
  }

 private:
  bool AtEnd() const { return i_ >= h_.size(); }
  void SkipSpace() {
    while (!AtEnd() && IsSpace(h_[i_])) ++i_;
  }
  void SkipSpaceAndCommas() {
    while (!AtEnd() && (IsSpace(h_[i_]) || h_[i_] == ',')) ++i_;
  }
  std::string_view Token() {
    size_t start = i_;
    while (!AtEnd() && IsTokenChar(h_[i_])) ++i_;
    return h_.substr(start, i_ - start);
  }
  Status Bad(const std::string& why) const {
    return Status::Corruption("bad WWW-Authenticate header \"" + std::string(h_) + "\": " + why);
  }

  // "Scheme token68": token68 characters, optional '=' padding, then the end or a comma.
  bool TryToken68(AuthChallenge& ch) {
    size_t j = i_;
    while (j < h_.size() && IsToken68Char(h_[j])) ++j;
    if (j == i_) return false;
    size_t k = j;
    while (k < h_.size() && h_[k] == '=') ++k;
    size_t m = k;
    while (m < h_.size() && IsSpace(h_[m])) ++m;
    if (m < h_.size() && h_[m] != ',') return false;  // "name=value" or another scheme
    ch.token68 = std::string(h_.substr(i_, k - i_));
    i_ = m;
    return true;
  }

  // #auth-param: name BWS "=" BWS (token | quoted-string), comma separated. Stops before a
  // token not followed by '=' (the next challenge's scheme).
  Status Params(AuthChallenge& ch) {
    while (true) {
      SkipSpace();
      if (AtEnd() || h_[i_] == ',') return Status::Ok();  // "Basic, Bearer ...": no params
      size_t name_start = i_;
      std::string name = AsciiLower(Token());
      SkipSpace();
      if (name.empty()) return Bad("expected a parameter name at offset " + std::to_string(i_));
      if (AtEnd() || h_[i_] != '=') {
        i_ = name_start;  // the next challenge starts here
        return Status::Ok();
      }
      ++i_;  // '='
      SkipSpace();
      std::string value;
      if (!AtEnd() && h_[i_] == '"') {
        ASSIGN_OR_RETURN(value, QuotedString());
      } else {
        // Leniently up to the next comma or space: some registries send realm=https://x/y.
        size_t start = i_;
        while (!AtEnd() && h_[i_] != ',' && !IsSpace(h_[i_])) ++i_;
        value = std::string(h_.substr(start, i_ - start));
      }
      ch.params.emplace(std::move(name), std::move(value));  // the first occurrence wins
      SkipSpace();
      if (AtEnd()) return Status::Ok();
      if (h_[i_] != ',') {
        return Bad("expected ',' after parameter at offset " + std::to_string(i_));
      }
      SkipSpaceAndCommas();
    }
  }

  Result<std::string> QuotedString() {
    ++i_;  // opening quote
    std::string value;
    while (!AtEnd()) {
      char c = h_[i_++];
      if (c == '"') return value;
      if (c == '\\') {
        if (AtEnd()) break;
        c = h_[i_++];
      }
      value += c;
    }
    return Bad("unterminated quoted string");
  }

  std::string_view h_;
  size_t i_ = 0;
};

// ---- credential files --------------------------------------------------------------------

// A registry host as given by callers: "https://host/v1/" -> "host", docker.io's aliases ->
// "docker.io".
std::string NormalizeHost(std::string_view host) {
  std::string h(host);
  for (std::string_view scheme : {"https://", "http://"}) {
    if (h.rfind(scheme, 0) == 0) h.erase(0, scheme.size());
  }
  h = h.substr(0, h.find('/'));
  if (h == "index.docker.io" || h == "registry-1.docker.io") h = kDockerHub;
  return h;
}

// An "auths" key as containers/image reads it: with a scheme, the path is dropped
// ("https://index.docker.io/v1/"); without one, a path scopes the key to a namespace or
// repository and is kept ("quay.io/org"). docker.io's aliases become "docker.io".
std::string NormalizeAuthKey(std::string_view key) {
  std::string k(key);
  bool had_scheme = false;
  for (std::string_view scheme : {"https://", "http://"}) {
    if (k.rfind(scheme, 0) == 0) {
      k.erase(0, scheme.size());
      had_scheme = true;
    }
  }
  if (had_scheme) k = k.substr(0, k.find('/'));
  while (!k.empty() && k.back() == '/') k.pop_back();
  size_t slash = k.find('/');
  std::string host = k.substr(0, slash);
  if (host == "index.docker.io" || host == "registry-1.docker.io") host = kDockerHub;
  return slash == std::string::npos ? host : host + k.substr(slash);
}

std::string HelperServerUrl(const std::string& host) {
  return host == kDockerHub ? std::string(kDockerHubServerUrl) : host;
}

Status SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);  // no SIGPIPE if it exits
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "writing to a credential helper");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// Runs `docker-credential-<helper> get` with the server URL on stdin (a socket, so a helper
// that exits early cannot SIGPIPE us). nullopt when the helper has no credential.
Result<std::optional<Credential>> RunCredentialHelper(const std::string& helper,
                                                      const std::string& host) {
  const std::string program = "docker-credential-" + helper;
  const std::string server = HelperServerUrl(host);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status::FromErrno(errno, "running " + program);
  }
  UniqueFd in_parent(sv[0]), in_child(sv[1]);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return Status::FromErrno(errno, "running " + program);
  UniqueFd out_parent(pipefd[0]), out_child(pipefd[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_child.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_child.get(), STDOUT_FILENO);
  std::string arg_get = "get";
  char* argv[] = {const_cast<char*>(program.c_str()), arg_get.data(), nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    if (rc == ENOENT) {
      return Status::NotFound("credential helper " + program + " is not installed (not on PATH)");
    }
    return Status::FromErrno(rc, "running " + program);
  }
  in_child.Reset();
  out_child.Reset();

  Status write_status = SendAll(in_parent.get(), server);
  ::shutdown(in_parent.get(), SHUT_WR);
  std::string output;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(out_parent.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output.append(buf, static_cast<size_t>(n));
  }
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
  if (code == 127) {
    return Status::NotFound("credential helper " + program + " could not be started");
  }
  if (code != 0) {
    // Helpers print "credentials not found in native keychain" and exit 1 for an unknown host.
    if (output.find("credentials not found") != std::string::npos) {
      return std::optional<Credential>();
    }
    while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
    return Status::Unavailable(program + " get " + server + " failed (exit " + std::to_string(code) +
                               ")" + (output.empty() ? "" : ": " + output.substr(0, 200)));
  }
  RETURN_IF_ERROR(write_status);
  Json j = Json::parse(output, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return Status::Corruption(program + " get " + server + " printed something that is not a JSON object");
  }
  Credential c;
  if (auto it = j.find("Username"); it != j.end() && it->is_string()) c.username = it->get<std::string>();
  if (auto it = j.find("Secret"); it != j.end() && it->is_string()) c.password = it->get<std::string>();
  if (c.username == "<token>") {  // the secret is an identity (refresh) token
    c.identity_token = std::move(c.password);
    c.username.clear();
    c.password.clear();
  }
  if (c.empty()) return std::optional<Credential>();
  return std::optional<Credential>(std::move(c));
}

// {"auth": base64(user:pass), "identitytoken": ...}
Result<Credential> DecodeAuthEntry(const Json& entry, const std::string& path, const std::string& key) {
  Credential c;
  if (!entry.is_object()) return c;
  if (auto it = entry.find("auth"); it != entry.end() && it->is_string() && !it->get<std::string>().empty()) {
    auto decoded = Base64Decode(it->get<std::string>());
    if (!decoded.ok()) {
      return Status::Corruption(path + ": the \"auth\" of \"" + key + "\" is not base64");
    }
    size_t colon = decoded->find(':');
    if (colon == std::string::npos) {
      return Status::Corruption(path + ": the \"auth\" of \"" + key + "\" is not base64(user:password)");
    }
    c.username = decoded->substr(0, colon);
    c.password = decoded->substr(colon + 1);
  }
  if (auto it = entry.find("identitytoken"); it != entry.end() && it->is_string()) {
    c.identity_token = it->get<std::string>();
  }
  return c;
}

// The exact "auths" keys to try for host + repository, most specific first:
// "host/a/b/c", "host/a/b", "host/a", "host".
std::vector<std::string> ScopedKeys(const std::string& host, std::string_view repository) {
  std::vector<std::string> keys;
  std::string scoped = repository.empty() ? host : host + "/" + std::string(repository);
  while (true) {
    keys.push_back(scoped);
    if (scoped.size() <= host.size()) break;
    scoped.erase(scoped.rfind('/'));
  }
  return keys;
}

Result<std::optional<Credential>> LookupInFile(const std::string& path, const std::string& host,
                                               std::string_view repository) {
  if (!PathExists(path)) return std::optional<Credential>();
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Corruption(path + ": not a JSON object; fix or remove it");

  if (auto helpers = j.find("credHelpers"); helpers != j.end() && helpers->is_object()) {
    for (auto it = helpers->begin(); it != helpers->end(); ++it) {
      if (NormalizeAuthKey(it.key()) != host || !it->is_string()) continue;
      return RunCredentialHelper(it->get<std::string>(), host);
    }
  }
  if (auto auths = j.find("auths"); auths != j.end() && auths->is_object()) {
    for (const std::string& key : ScopedKeys(host, repository)) {
      auto it = auths->find(key);
      if (it == auths->end()) continue;
      ASSIGN_OR_RETURN(Credential c, DecodeAuthEntry(*it, path, key));
      if (!c.empty()) return std::optional<Credential>(std::move(c));
    }
    for (auto it = auths->begin(); it != auths->end(); ++it) {
      if (NormalizeAuthKey(it.key()) != host) continue;
      ASSIGN_OR_RETURN(Credential c, DecodeAuthEntry(*it, path, it.key()));
      if (!c.empty()) return std::optional<Credential>(std::move(c));
    }
  }
  if (auto store = j.find("credsStore"); store != j.end() && store->is_string() &&
                                         !store->get<std::string>().empty()) {
    auto c = RunCredentialHelper(store->get<std::string>(), host);
    // A global store that is not installed here (a config.json copied from Docker Desktop)
    // must not break anonymous pulls.
    if (!c.ok() && c.status().IsNotFound()) return std::optional<Credential>();
    return c;
  }
  return std::optional<Credential>();
}

Result<Json> LoadForWrite(const std::string& path) {
  if (!PathExists(path)) return Json::object();
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Corruption(path + ": not a JSON object; fix or remove it");
  return j;
}

// mkdir -p with mode 0700 for the directories it creates (existing ones are left alone).
// util's MakeDirs does not apply its mode argument, so credentials get their own.
Status MakePrivateDirs(const std::string& dir) {
  if (dir.empty() || dir == "/" || dir == "." || PathExists(dir)) return Status::Ok();
  RETURN_IF_ERROR(MakePrivateDirs(Dirname(dir)));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FromErrno(errno, "creating directory " + dir);
  }
  return Status::Ok();
}

Status SaveAuthFile(const std::string& path, const Json& j) {
  RETURN_IF_ERROR(MakePrivateDirs(Dirname(path)));
  std::string text = j.dump(1, '\t', false, Json::error_handler_t::replace) + "\n";
  return WriteFileAtomic(path, text, 0600);
}

}  // namespace

Result<std::vector<AuthChallenge>> ParseWwwAuthenticate(std::string_view header) {
  return ChallengeParser(header).Parse();
}

AuthEnv AuthEnv::FromProcess() {
  AuthEnv e;
  e.registry_auth_file = GetEnv("REGISTRY_AUTH_FILE");
  e.xdg_runtime_dir = GetEnv("XDG_RUNTIME_DIR");
  e.xdg_config_home = GetEnv("XDG_CONFIG_HOME");
  e.home = HomeDir();
  e.docker_config = GetEnv("DOCKER_CONFIG");
  e.uid = ::getuid();
  return e;
}

namespace {
std::string RuntimeAuthFile(const AuthEnv& env) {
  if (!env.xdg_runtime_dir.empty()) return env.xdg_runtime_dir + "/containers/auth.json";
  return "/run/containers/" + std::to_string(env.uid) + "/auth.json";
}
}  // namespace

std::vector<std::string> AuthFilesInOrder(const AuthEnv& env) {
  std::vector<std::string> files;
  if (!env.registry_auth_file.empty()) files.push_back(env.registry_auth_file);
  files.push_back(RuntimeAuthFile(env));
  if (!env.xdg_config_home.empty()) {
    files.push_back(env.xdg_config_home + "/containers/auth.json");
  } else if (!env.home.empty()) {
    files.push_back(env.home + "/.config/containers/auth.json");
  }
  if (!env.docker_config.empty()) {
    files.push_back(env.docker_config + "/config.json");
  } else if (!env.home.empty()) {
    files.push_back(env.home + "/.docker/config.json");
  }
  return files;
}

std::string AuthFileForWrite(const AuthEnv& env) {
  if (!env.registry_auth_file.empty()) return env.registry_auth_file;
  return RuntimeAuthFile(env);
}

Result<std::optional<Credential>> LookupCredential(const AuthEnv& env, std::string_view host,
                                                   std::string_view repository) {
  std::string want = NormalizeHost(host);
  if (want.empty()) return Status::InvalidArgument("looking up credentials: the registry host is empty");
  for (const std::string& path : AuthFilesInOrder(env)) {
    ASSIGN_OR_RETURN(std::optional<Credential> c, LookupInFile(path, want, repository));
    if (c && !c->empty()) return c;
  }
  return std::optional<Credential>();
}

Result<std::optional<Credential>> LookupCredential(const AuthEnv& env, std::string_view host) {
  return LookupCredential(env, host, std::string_view());
}

Status StoreCredential(const AuthEnv& env, std::string_view host, const Credential& cred) {
  std::string key = NormalizeHost(host);
  if (key.empty()) return Status::InvalidArgument("storing credentials: the registry host is empty");
  std::string path = AuthFileForWrite(env);
  ASSIGN_OR_RETURN(Json j, LoadForWrite(path));
  auto auths = j.find("auths");
  if (auths == j.end() || !auths->is_object()) j["auths"] = Json::object();
  Json entry = Json::object();
  if (!cred.username.empty() || !cred.password.empty()) {
    entry["auth"] = Base64Encode(cred.username + ":" + cred.password);
  }
  if (!cred.identity_token.empty()) entry["identitytoken"] = cred.identity_token;
  j["auths"][key] = std::move(entry);
  return SaveAuthFile(path, j);
}

Status EraseCredential(const AuthEnv& env, std::string_view host) {
  std::string want = NormalizeHost(host);
  std::string path = AuthFileForWrite(env);
  ASSIGN_OR_RETURN(Json j, LoadForWrite(path));
  bool found = false;
  if (auto auths = j.find("auths"); auths != j.end() && auths->is_object()) {
    for (auto it = auths->begin(); it != auths->end();) {
      if (NormalizeAuthKey(it.key()) == want) {
        it = auths->erase(it);
        found = true;
      } else {
        ++it;
      }
    }
  }
  if (!found) return Status::NotFound("not logged in to " + want + " (in " + path + ")");
  return SaveAuthFile(path, j);
}

}  // namespace imagefs::fetch
