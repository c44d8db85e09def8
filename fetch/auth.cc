#include "fetch/auth.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "util/file.h"

namespace imagefs::fetch {
namespace {

using Json = nlohmann::json;

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool IsTokenChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// "https://index.docker.io/v1/" -> "index.docker.io"; "host:5000/x" -> "host:5000".
std::string NormalizeAuthKey(std::string_view key) {
  std::string k(key);
  for (const char* scheme : {"https://", "http://"}) {
    if (k.rfind(scheme, 0) == 0) k = k.substr(std::string_view(scheme).size());
  }
  k = k.substr(0, k.find('/'));
  if (k == "index.docker.io" || k == "registry-1.docker.io") k = "docker.io";
  return k;
}

Result<Credential> FromHelper(const std::string& helper, std::string_view host) {
  std::string program = "docker-credential-" + helper;
  std::string server = host == "docker.io" ? "https://index.docker.io/v1/" : std::string(host);
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
    return Status::FromErrno(errno, "running " + program);
  }
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "running " + program);
  if (pid == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::execlp(program.c_str(), program.c_str(), "get", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  (void)!::write(in[1], server.data(), server.size());
  ::close(in[1]);
  std::string output;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) output.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
      return Status::NotFound("credential helper " + program + " is not installed");
    }
    // Helpers exit 1 with "credentials not found in native keychain".
    return Credential{};
  }
  Json j = Json::parse(output, nullptr, false);
  if (!j.is_object()) return Status::Corruption(program + " printed something that is not JSON");
  Credential c;
  if (j.contains("Username") && j["Username"].is_string()) c.username = j["Username"];
  if (j.contains("Secret") && j["Secret"].is_string()) c.password = j["Secret"];
  if (c.username == "<token>") {
    c.identity_token = c.password;
    c.username.clear();
    c.password.clear();
  }
  return c;
}

Result<std::optional<Credential>> LookupInFile(const std::string& path, std::string_view host) {
  if (!PathExists(path)) return std::optional<Credential>();
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return Status::Corruption(path + ": not a JSON object; fix or remove it");
  std::string want = NormalizeAuthKey(host);
  if (auto helpers = j.find("credHelpers"); helpers != j.end() && helpers->is_object()) {
    for (auto it = helpers->begin(); it != helpers->end(); ++it) {
      if (NormalizeAuthKey(it.key()) == want && it.value().is_string()) {
        ASSIGN_OR_RETURN(Credential c, FromHelper(it.value().get<std::string>(), want));
        if (!c.empty()) return std::optional<Credential>(c);
      }
    }
  }
  if (auto auths = j.find("auths"); auths != j.end() && auths->is_object()) {
    for (auto it = auths->begin(); it != auths->end(); ++it) {
      if (NormalizeAuthKey(it.key()) != want || !it.value().is_object()) continue;
      const Json& e = it.value();
      Credential c;
      if (e.contains("auth") && e["auth"].is_string()) {
        auto decoded = Base64Decode(e["auth"].get<std::string>());
        if (!decoded.ok()) return Status::Corruption(path + ": the auth entry for " + it.key() + " is not base64");
        size_t colon = decoded->find(':');
        if (colon == std::string::npos) {
          return Status::Corruption(path + ": the auth entry for " + it.key() + " is not user:password");
        }
        c.username = decoded->substr(0, colon);
        c.password = decoded->substr(colon + 1);
      }
      if (e.contains("identitytoken") && e["identitytoken"].is_string()) {
        c.identity_token = e["identitytoken"].get<std::string>();
      }
      if (!c.empty()) return std::optional<Credential>(c);
    }
  }
  if (auto store = j.find("credsStore"); store != j.end() && store->is_string()) {
    auto c = FromHelper(store->get<std::string>(), want);
    if (c.ok() && !c->empty()) return std::optional<Credential>(*c);
  }
  return std::optional<Credential>();
}

Result<Json> LoadForWrite(const std::string& path) {
  if (!PathExists(path)) return Json::object();
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return Status::Corruption(path + ": not a JSON object; fix or remove it");
  return j;
}

}  // namespace

Result<std::vector<AuthChallenge>> ParseWwwAuthenticate(std::string_view h) {
  std::vector<AuthChallenge> out;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
  };
  auto bad = [&](const std::string& why) {
    return Status::Corruption("bad WWW-Authenticate header \"" + std::string(h) + "\": " + why);
  };
  while (true) {
    skip_ws();
    while (i < h.size() && (h[i] == ',' || h[i] == ' ')) ++i;
    if (i >= h.size()) break;
    size_t start = i;
    while (i < h.size() && IsTokenChar(h[i])) ++i;
    if (i == start) return bad("expected an auth scheme");
    AuthChallenge ch;
    ch.scheme = Lower(h.substr(start, i - start));
    // Parameters: name=value pairs separated by commas, until the next scheme.
    while (true) {
      skip_ws();
      size_t save = i;
      size_t ns = i;
      while (i < h.size() && IsTokenChar(h[i])) ++i;
      std::string name = Lower(h.substr(ns, i - ns));
      skip_ws();
      if (name.empty() || i >= h.size() || h[i] != '=') {
        // Not "name=value": the next challenge's scheme starts here.
        i = save;
        break;
      }
      ++i;  // '='
      skip_ws();
      std::string value;
      if (i < h.size() && h[i] == '"') {
        ++i;
        bool closed = false;
        while (i < h.size()) {
          char c = h[i++];
          if (c == '\\' && i < h.size()) {
            value += h[i++];
          } else if (c == '"') {
            closed = true;
            break;
          } else {
            value += c;
          }
        }
        if (!closed) return bad("unterminated quoted string");
      } else {
        size_t vs = i;
        while (i < h.size() && h[i] != ',' && h[i] != ' ') ++i;
        value = std::string(h.substr(vs, i - vs));
      }
      ch.params[name] = value;
      skip_ws();
      if (i < h.size() && h[i] == ',') {
        ++i;
        continue;
      }
      break;
    }
    out.push_back(std::move(ch));
  }
  if (out.empty()) return bad("no challenge");
  return out;
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

std::string AuthFileForWrite(const AuthEnv& env) {
  if (!env.registry_auth_file.empty()) return env.registry_auth_file;
  if (!env.xdg_runtime_dir.empty()) return env.xdg_runtime_dir + "/containers/auth.json";
  return "/run/containers/" + std::to_string(env.uid) + "/auth.json";
}

std::vector<std::string> AuthFilesInOrder(const AuthEnv& env) {
  std::vector<std::string> files;
  if (!env.registry_auth_file.empty()) files.push_back(env.registry_auth_file);
  files.push_back(!env.xdg_runtime_dir.empty() ? env.xdg_runtime_dir + "/containers/auth.json"
                                               : "/run/containers/" + std::to_string(env.uid) + "/auth.json");
  std::string config = !env.xdg_config_home.empty() ? env.xdg_config_home : env.home + "/.config";
  files.push_back(config + "/containers/auth.json");
  files.push_back((!env.docker_config.empty() ? env.docker_config : env.home + "/.docker") +
                  "/config.json");
  return files;
}

Result<std::optional<Credential>> LookupCredential(const AuthEnv& env, std::string_view host) {
  for (const std::string& path : AuthFilesInOrder(env)) {
    ASSIGN_OR_RETURN(std::optional<Credential> c, LookupInFile(path, host));
    if (c) return c;
  }
  return std::optional<Credential>();
}

Status StoreCredential(const AuthEnv& env, std::string_view host, const Credential& cred) {
  std::string path = AuthFileForWrite(env);
  RETURN_IF_ERROR(MakeDirs(Dirname(path), 0700));
  ASSIGN_OR_RETURN(Json j, LoadForWrite(path));
  if (!j.contains("auths") || !j["auths"].is_object()) j["auths"] = Json::object();
  std::string key = NormalizeAuthKey(host);
  j["auths"][key] = {{"auth", Base64Encode(cred.username + ":" + cred.password)}};
  return WriteFileAtomic(path, j.dump(1, '\t') + "\n", 0600);
}

Status EraseCredential(const AuthEnv& env, std::string_view host) {
  std::string path = AuthFileForWrite(env);
  ASSIGN_OR_RETURN(Json j, LoadForWrite(path));
  std::string want = NormalizeAuthKey(host);
  bool found = false;
  if (j.contains("auths") && j["auths"].is_object()) {
    for (auto it = j["auths"].begin(); it != j["auths"].end();) {
      if (NormalizeAuthKey(it.key()) == want) {
        it = j["auths"].erase(it);
        found = true;
      } else {
        ++it;
      }
    }
  }
  if (!found) return Status::NotFound("not logged in to " + std::string(host));
  return WriteFileAtomic(path, j.dump(1, '\t') + "\n", 0600);
}

std::string Base64Encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> Base64Decode(std::string_view data) {
  std::string in(data);
  while (!in.empty() && (in.back() == '\n' || in.back() == ' ')) in.pop_back();
  if (in.size() % 4 != 0) in.append(4 - in.size() % 4, '=');  // tolerate missing padding
  std::string out(3 * in.size() / 4 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return Status::InvalidArgument("not valid base64");
  size_t pad = 0;
  if (!in.empty() && in.back() == '=') ++pad;
  if (in.size() > 1 && in[in.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

}  // namespace imagefs::fetch
