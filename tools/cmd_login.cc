// imagefs login / logout: verify credentials against a registry and save them in the
// auth.json containers/image reads first (see fetch/auth.h), as `podman login` does.

#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "fetch/registry_client.h"
#include "tools/command.h"
#include "util/file.h"

namespace imagefs::tools {
namespace {

// "https://host:5000/v2/" -> "host:5000"; "" -> "docker.io".
std::string NormalizeRegistry(std::string text) {
  for (const char* scheme : {"https://", "http://"}) {
    if (text.rfind(scheme, 0) == 0) text = text.substr(std::string_view(scheme).size());
  }
  if (size_t slash = text.find('/'); slash != std::string::npos) text = text.substr(0, slash);
  if (text.empty() || text == "index.docker.io" || text == "registry-1.docker.io") {
    return "docker.io";
  }
  return text;
}

bool IsInsecure(const GlobalOptions& global, const fetch::RegistriesConf& conf,
                const std::string& host) {
  for (const auto& h : global.insecure_registries) {
    if (h == host) return true;
  }
  for (const auto& r : conf.registries) {
    std::string loc = r.location.empty() ? r.prefix : r.location;
    if (loc == host && r.insecure) return true;
  }
  return false;
}

Result<std::string> ReadPassword(bool from_stdin) {
  std::string line;
  if (from_stdin) {
    std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    while (!all.empty() && (all.back() == '\n' || all.back() == '\r')) all.pop_back();
    return all;
  }
  if (::isatty(STDIN_FILENO) == 0) {
    return Status::InvalidArgument(
        "login: cannot ask for a password without a terminal: use --password-stdin");
  }
  std::fprintf(stderr, "Password: ");
  termios old{};
  ::tcgetattr(STDIN_FILENO, &old);
  termios quiet = old;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  std::getline(std::cin, line);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
  std::fprintf(stderr, "\n");
  return line;
}

}  // namespace

int RunLogin(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Verify credentials for a registry and save them in auth.json.", "imagefs login");
  std::string registry;
  std::string username;
  std::string password;
  bool password_stdin = false;
  app.add_option("REGISTRY", registry, "Registry host[:port] (default docker.io)");
  app.add_option("-u,--username", username, "User name");
  app.add_option("-p,--password", password, "Password (prefer --password-stdin)");
  app.add_flag("--password-stdin", password_stdin, "Read the password from standard input");
  if (int rc = ParseCommandLine(app, "login", args); rc >= 0) return rc;

  std::string host = NormalizeRegistry(registry);
  if (username.empty()) {
    if (::isatty(STDIN_FILENO) == 0 || password_stdin) {
      return Fail(Status::InvalidArgument("login: a user name is required: use -u USER"));
    }
    std::fprintf(stderr, "Username: ");
    std::getline(std::cin, username);
  }
  if (password.empty()) {
    auto p = ReadPassword(password_stdin);
    if (!p.ok()) return Fail(p.status());
    password = *p;
  } else if (password_stdin) {
    return Fail(Status::InvalidArgument("login: --password and --password-stdin are exclusive"));
  }
  if (password.empty()) return Fail(Status::InvalidArgument("login: the password is empty"));

  auto conf = fetch::LoadRegistriesConf();
  if (!conf.ok()) return Fail(conf.status());

  // Verify against the registry with exactly these credentials: a throwaway auth file.
  auto tmp = MakeTempDir("/tmp", "imagefs-login-");
  if (!tmp.ok()) return Fail(tmp.status());
  fetch::AuthEnv probe_env = fetch::AuthEnv::FromProcess();
  probe_env.registry_auth_file = *tmp + "/auth.json";
  fetch::Credential cred{username, password, ""};
  Status st = fetch::StoreCredential(probe_env, host, cred);
  if (st.ok()) {
    fetch::RegistryEndpointConfig config;
    config.host = host == "docker.io" ? "registry-1.docker.io" : host;
    config.insecure = IsInsecure(global, *conf, host);
    config.auth_env = probe_env;
    config.certs_dir_override = global.cert_dir;
    auto client = fetch::RegistryClient::Create(config);
    st = client.ok() ? (*client)->CheckCredentials() : client.status();
  }
  (void)RemoveAll(*tmp);
  if (!st.ok()) return Fail(st.WithContext("login to " + host));

  fetch::AuthEnv env = fetch::AuthEnv::FromProcess();
  st = fetch::StoreCredential(env, host, cred);
  if (!st.ok()) return Fail(st);
  std::printf("Login Succeeded\n");
  return 0;
}

int RunLogout(const GlobalOptions&, const std::vector<std::string>& args) {
  CLI::App app("Remove saved credentials for a registry.", "imagefs logout");
  std::string registry;
  app.add_option("REGISTRY", registry, "Registry host[:port] (default docker.io)");
  if (int rc = ParseCommandLine(app, "logout", args); rc >= 0) return rc;
  std::string host = NormalizeRegistry(registry);
  Status st = fetch::EraseCredential(fetch::AuthEnv::FromProcess(), host);
  if (st.IsNotFound()) {
    return Fail(Status::NotFound("logout: not logged in to " + host));
  }
  if (!st.ok()) return Fail(st);
  std::printf("Removing login credentials for %s\n", host.c_str());
  return 0;
}

}  // namespace imagefs::tools
