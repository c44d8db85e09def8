// WWW-Authenticate parsing, base64, and credentials: lookup order over auth files built in a
// temp dir, Docker's config.json forms, credential helpers run from PATH, login/logout writes.

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fetch/auth.h"
#include "util/file.h"

namespace imagefs::fetch {
namespace auth_test {
namespace {

using Json = nlohmann::json;
using Params = std::map<std::string, std::string>;

// ---- WWW-Authenticate -------------------------------------------------------------------

AuthChallenge Challenge(std::string scheme, Params params, std::string token68 = "") {
  AuthChallenge c;
  c.scheme = std::move(scheme);
  c.params = std::move(params);
  c.token68 = std::move(token68);
  return c;
}

void ExpectChallenges(std::string_view header, const std::vector<AuthChallenge>& want) {
  SCOPED_TRACE(std::string(header));
  auto got = ParseWwwAuthenticate(header);
  ASSERT_TRUE(got.ok()) << got.status().message();
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*got)[i].scheme, want[i].scheme) << i;
    EXPECT_EQ((*got)[i].params, want[i].params) << i;
    EXPECT_EQ((*got)[i].token68, want[i].token68) << i;
  }
}

TEST(WwwAuthenticateTest, ParsesDockerHubsBearerChallenge) {
  ExpectChallenges(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull")",
      {Challenge("bearer", {{"realm", "https://auth.docker.io/token"},
                            {"service", "registry.docker.io"},
                            {"scope", "repository:library/nginx:pull"}})});
}

TEST(WwwAuthenticateTest, QuotedValuesKeepCommasAndUnescapeBackslashes) {
  ExpectChallenges(R"(Bearer realm="https://ghcr.io/token",scope="repository:a/b:pull,push",error="insufficient_scope")",
                   {Challenge("bearer", {{"realm", "https://ghcr.io/token"},
                                         {"scope", "repository:a/b:pull,push"},
                                         {"error", "insufficient_scope"}})});
  ExpectChallenges(R"(Basic realm="say \"hi\", a\\b \x")",
                   {Challenge("basic", {{"realm", R"(say "hi", a\b x)"}})});
}

TEST(WwwAuthenticateTest, SplitsSeveralChallengesInOneHeader) {
  ExpectChallenges(R"(Basic realm="Registry Realm", Bearer realm="https://a/token",service="s")",
                   {Challenge("basic", {{"realm", "Registry Realm"}}),
                    Challenge("bearer", {{"realm", "https://a/token"}, {"service", "s"}})});
  ExpectChallenges(R"(Bearer realm="r", scope="a,b",Basic realm="x")",
                   {Challenge("bearer", {{"realm", "r"}, {"scope", "a,b"}}), Challenge("basic", {{"realm", "x"}})});
  ExpectChallenges("Basic, Bearer realm=\"r\"", {Challenge("basic", {}), Challenge("bearer", {{"realm", "r"}})});
  ExpectChallenges("Bearer realm=\"r\", Basic", {Challenge("bearer", {{"realm", "r"}}), Challenge("basic", {})});
}

TEST(WwwAuthenticateTest, AcceptsToken68) {
  ExpectChallenges("Negotiate YIIB3wYGKwYBBQUCoIIB0zCC+/A=, Basic realm=\"x\"",
                   {Challenge("negotiate", {}, "YIIB3wYGKwYBBQUCoIIB0zCC+/A="), Challenge("basic", {{"realm", "x"}})});
  ExpectChallenges("Basic dXNlcjpwYXNz", {Challenge("basic", {}, "dXNlcjpwYXNz")});
  ExpectChallenges("Basic abc==", {Challenge("basic", {}, "abc==")});
}

TEST(WwwAuthenticateTest, SchemesAndNamesAreCaseInsensitiveValuesAreNot) {
  ExpectChallenges(R"(BEARER Realm="R", SERVICE=Svc)", {Challenge("bearer", {{"realm", "R"}, {"service", "Svc"}})});
}

TEST(WwwAuthenticateTest, ToleratesSpacesUnquotedUrlsAndEmptyListElements) {
  ExpectChallenges("  Bearer   realm = \"r\" ,  service= s ,, scope=https://x/y:z  ",
                   {Challenge("bearer", {{"realm", "r"}, {"service", "s"}, {"scope", "https://x/y:z"}})});
  ExpectChallenges(", Basic realm=\"x\",", {Challenge("basic", {{"realm", "x"}})});
}

TEST(WwwAuthenticateTest, FirstOccurrenceOfAParameterWins) {
  ExpectChallenges(R"(Bearer realm="first", realm="second")", {Challenge("bearer", {{"realm", "first"}})});
}

TEST(WwwAuthenticateTest, MalformedHeadersAreCorruptionErrors) {
  struct Case {
    std::string header;
    std::string why;
  };
  const std::vector<Case> cases = {
      {"", "no challenge"},
      {" , ", "no challenge"},
      {"=x", "expected an auth scheme at offset 0"},
      {R"(Bearer realm="unterminated)", "unterminated quoted string"},
      {R"(Bearer realm="x\)", "unterminated quoted string"},
      {R"(Bearer realm="a" service="b")", "expected ',' after parameter at offset 17"},
      {R"(Bearer realm="a", ="b")", "expected a parameter name at offset 18"},
      {R"(Bearer"x")", "unexpected '\"' after scheme \"Bearer\""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.header);
    auto r = ParseWwwAuthenticate(c.header);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kCorruption);
    EXPECT_EQ(r.status().message(), "bad WWW-Authenticate header \"" + c.header + "\": " + c.why);
  }
}

// ---- base64 -----------------------------------------------------------------------------

TEST(Base64Test, MatchesRfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}, {"user:pass", "dXNlcjpwYXNz"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(Base64Encode(plain), encoded) << plain;
    auto decoded = Base64Decode(encoded);
    ASSERT_TRUE(decoded.ok()) << encoded;
    EXPECT_EQ(*decoded, plain) << encoded;
  }
}

TEST(Base64Test, DecodeAcceptsMissingPaddingAndTrailingNewline) {
  EXPECT_EQ(*Base64Decode("Zg"), "f");
  EXPECT_EQ(*Base64Decode("Zm8"), "fo");
  EXPECT_EQ(*Base64Decode("Zm9vYmFy\n"), "foobar");
}

TEST(Base64Test, RoundTripsEveryByteValue) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t len = 0; len <= all.size(); len += 37) {
    std::string part = all.substr(all.size() - len);
    auto back = Base64Decode(Base64Encode(part));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, part) << len;
  }
  EXPECT_EQ(Base64Encode(std::string("\xfb\xff", 2)), "+/8=");
}

TEST(Base64Test, DecodeRejectsWhatIsNotBase64) {
  for (std::string bad : {"!!!!", "Z", "Zg=", "Zm9v!", "Zm=9", "Zg==Zg==", "Zm 9v", "Zm9v-_"}) {
    auto r = Base64Decode(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
  }
}

// ---- file order -------------------------------------------------------------------------

TEST(AuthEnvTest, FromProcessReadsTheEnvironment) {
  ::setenv("REGISTRY_AUTH_FILE", "/a/auth.json", 1);
  ::setenv("XDG_RUNTIME_DIR", "/run/user/42", 1);
  ::setenv("XDG_CONFIG_HOME", "/cfg", 1);
  ::setenv("DOCKER_CONFIG", "/dcfg", 1);
  std::string old_home = GetEnv("HOME");
  ::setenv("HOME", "/home/someone", 1);
  AuthEnv env = AuthEnv::FromProcess();
  ::unsetenv("REGISTRY_AUTH_FILE");
  ::unsetenv("XDG_CONFIG_HOME");
  ::unsetenv("DOCKER_CONFIG");
  ::setenv("HOME", old_home.c_str(), 1);
  EXPECT_EQ(env.registry_auth_file, "/a/auth.json");
  EXPECT_EQ(env.xdg_runtime_dir, "/run/user/42");
  EXPECT_EQ(env.xdg_config_home, "/cfg");
  EXPECT_EQ(env.docker_config, "/dcfg");
  EXPECT_EQ(env.home, "/home/someone");
  EXPECT_EQ(env.uid, ::getuid());
}

TEST(AuthFilesTest, OrderFollowsContainersImage) {
  AuthEnv env;
  env.home = "/home/u";
  env.uid = 1000;
  EXPECT_EQ(AuthFilesInOrder(env), (std::vector<std::string>{"/run/containers/1000/auth.json",
                                                             "/home/u/.config/containers/auth.json",
                                                             "/home/u/.docker/config.json"}));
  EXPECT_EQ(AuthFileForWrite(env), "/run/containers/1000/auth.json");

  env.xdg_runtime_dir = "/run/user/1000";
  env.xdg_config_home = "/cfg";
  env.docker_config = "/dcfg";
  env.registry_auth_file = "/explicit/auth.json";
  EXPECT_EQ(AuthFilesInOrder(env),
            (std::vector<std::string>{"/explicit/auth.json", "/run/user/1000/containers/auth.json",
                                      "/cfg/containers/auth.json", "/dcfg/config.json"}));
  EXPECT_EQ(AuthFileForWrite(env), "/explicit/auth.json");
  env.registry_auth_file.clear();
  EXPECT_EQ(AuthFileForWrite(env), "/run/user/1000/containers/auth.json");
}

TEST(AuthFilesTest, EmptyHomeLeavesOutHomeRelativeFiles) {
  AuthEnv env;
  env.uid = 0;
  EXPECT_EQ(AuthFilesInOrder(env), std::vector<std::string>{"/run/containers/0/auth.json"});
}

// ---- lookup -----------------------------------------------------------------------------

class AuthLookupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "auth-test-");
    ASSERT_TRUE(d.ok()) << d.status().message();
    dir_ = *d;
    env_.home = dir_ + "/home";
    env_.xdg_runtime_dir = dir_ + "/run";
    env_.uid = 4242;
    old_path_ = GetEnv("PATH");
    ASSERT_TRUE(MakeDirs(dir_ + "/bin").ok());
    ::setenv("PATH", (dir_ + "/bin:" + old_path_).c_str(), 1);
  }
  void TearDown() override {
    ::setenv("PATH", old_path_.c_str(), 1);
    (void)RemoveAll(dir_);
  }

  std::string RuntimeFile() const { return dir_ + "/run/containers/auth.json"; }
  std::string ConfigFile() const { return dir_ + "/home/.config/containers/auth.json"; }
  std::string DockerFile() const { return dir_ + "/home/.docker/config.json"; }

  void Write(const std::string& path, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomic(path, text).ok());
  }
  void WriteJson(const std::string& path, const Json& j) { Write(path, j.dump()); }
  static Json Auths(const Json& auths) { return Json{{"auths", auths}}; }
  static Json Entry(const std::string& user, const std::string& pass) {
    return Json{{"auth", Base64Encode(user + ":" + pass)}};
  }

  // A docker-credential-test helper: logs "argv1 stdin" lines, answers per server URL.
  void InstallHelper(const std::string& name = "test") {
    std::string script = dir_ + "/bin/docker-credential-" + name;
    Write(script,
          "#!/bin/sh\n"
          "server=$(cat)\n"
          "echo \"$1 $server\" >> '" + dir_ + "/helper.log'\n"
          "case \"$server\" in\n"
          "  https://index.docker.io/v1/) echo '{\"ServerURL\":\"x\",\"Username\":\"hubhelper\",\"Secret\":\"hubsecret\"}' ;;\n"
          "  token.io) echo '{\"Username\":\"<token>\",\"Secret\":\"refresh-token\"}' ;;\n"
          "  broken.io) echo 'keychain locked' ; exit 2 ;;\n"
          "  garbage.io) echo 'not json' ;;\n"
          "  helped.io:5000) printf '{\"Username\":\"helper-user\",\"Secret\":\"s3cret\"}' ;;\n"
          "  *) echo 'credentials not found in native keychain' ; exit 1 ;;\n"
          "esac\n");
    ASSERT_EQ(::chmod(script.c_str(), 0755), 0);
  }
  std::string HelperLog() { return ReadFile(dir_ + "/helper.log").value_or(""); }

  Credential MustFind(std::string_view host, std::string_view repository = {}) {
    auto r = LookupCredential(env_, host, repository);
    EXPECT_TRUE(r.ok()) << r.status().message();
    EXPECT_TRUE(r.ok() && r->has_value()) << host << " not found";
    return r.ok() && r->has_value() ? **r : Credential{};
  }
  void ExpectNone(std::string_view host, std::string_view repository = {}) {
    auto r = LookupCredential(env_, host, repository);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_FALSE(r->has_value()) << host << " found " << (*r)->username;
  }

  std::string dir_;
  std::string old_path_;
  AuthEnv env_;
};

TEST_F(AuthLookupTest, FilesAreConsultedInOrderAndTheFirstHitWins) {
  env_.registry_auth_file = dir_ + "/explicit.json";
  WriteJson(env_.registry_auth_file, Auths({{"r.io", Entry("explicit", "1")}}));
  WriteJson(RuntimeFile(), Auths({{"r.io", Entry("runtime", "2")}}));
  WriteJson(ConfigFile(), Auths({{"r.io", Entry("config", "3")}}));
  WriteJson(DockerFile(), Auths({{"r.io", Entry("docker", "4")}}));
  EXPECT_EQ(MustFind("r.io").username, "explicit");
  ASSERT_EQ(::unlink(env_.registry_auth_file.c_str()), 0);
  EXPECT_EQ(MustFind("r.io").username, "runtime");
  ASSERT_EQ(::unlink(RuntimeFile().c_str()), 0);
  EXPECT_EQ(MustFind("r.io").username, "config");
  ASSERT_EQ(::unlink(ConfigFile().c_str()), 0);
  Credential c = MustFind("r.io");
  EXPECT_EQ(c.username, "docker");
  EXPECT_EQ(c.password, "4");
  ExpectNone("other.io");
}

TEST_F(AuthLookupTest, LaterFilesAnswerForHostsEarlierOnesLack) {
  WriteJson(RuntimeFile(), Auths({{"a.io", Entry("a", "1")}}));
  WriteJson(DockerFile(), Auths({{"b.io", Entry("b", "2")}}));
  EXPECT_EQ(MustFind("a.io").username, "a");
  EXPECT_EQ(MustFind("b.io").username, "b");
}

TEST_F(AuthLookupTest, DockerConfigIndexV1KeyServesEveryDockerHubName) {
  WriteJson(DockerFile(), Auths({{"https://index.docker.io/v1/", Entry("hubuser", "hubpass")}}));
  for (const char* host : {"docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"}) {
    Credential c = MustFind(host);
    EXPECT_EQ(c.username, "hubuser") << host;
    EXPECT_EQ(c.password, "hubpass") << host;
  }
}

TEST_F(AuthLookupTest, KeysAreNormalizedBySchemeAndPath) {
  WriteJson(RuntimeFile(), Auths({{"http://localhost:5000/v2/", Entry("u", "p:with:colons")},
                                  {"https://secure.io", Entry("s", "1")},
                                  {"registry-1.docker.io", Entry("hub", "2")}}));
  Credential c = MustFind("localhost:5000");
  EXPECT_EQ(c.username, "u");
  EXPECT_EQ(c.password, "p:with:colons");  // only the first ':' separates
  EXPECT_EQ(MustFind("secure.io").username, "s");
  EXPECT_EQ(MustFind("docker.io").username, "hub");
  ExpectNone("localhost");  // the port is part of the host
}

TEST_F(AuthLookupTest, ExactKeyBeatsANormalizedOne) {
  WriteJson(RuntimeFile(), Auths({{"https://index.docker.io/v1/", Entry("legacy", "1")},
                                  {"docker.io", Entry("exact", "2")}}));
  EXPECT_EQ(MustFind("docker.io").username, "exact");
}

TEST_F(AuthLookupTest, RepositoryScopedKeysApplyOnlyToTheirNamespace) {
  WriteJson(RuntimeFile(), Auths({{"quay.io/org/app", Entry("app", "1")},
                                  {"quay.io/org", Entry("org", "2")},
                                  {"quay.io", Entry("registry", "3")}}));
  EXPECT_EQ(MustFind("quay.io", "org/app").username, "app");
  EXPECT_EQ(MustFind("quay.io", "org/other").username, "org");
  EXPECT_EQ(MustFind("quay.io", "elsewhere/x").username, "registry");
  EXPECT_EQ(MustFind("quay.io").username, "registry");
  // A namespace-scoped key alone never answers for the whole registry.
  WriteJson(RuntimeFile(), Auths({{"ghcr.io/org", Entry("org", "2")}}));
  ExpectNone("ghcr.io");
  EXPECT_EQ(MustFind("ghcr.io", "org/x").username, "org");
  ExpectNone("ghcr.io", "orgx/x");
}

TEST_F(AuthLookupTest, IdentityTokenIsReturned) {
  WriteJson(RuntimeFile(), Auths({{"t.io", {{"auth", Base64Encode("user:")}, {"identitytoken", "refresh"}}},
                                  {"only.io", {{"identitytoken", "tok"}}}}));
  Credential c = MustFind("t.io");
  EXPECT_EQ(c.username, "user");
  EXPECT_EQ(c.password, "");
  EXPECT_EQ(c.identity_token, "refresh");
  Credential only = MustFind("only.io");
  EXPECT_EQ(only.username, "");
  EXPECT_EQ(only.identity_token, "tok");
}

TEST_F(AuthLookupTest, EmptyEntryFallsThroughToLaterFiles) {
  WriteJson(RuntimeFile(), Auths({{"r.io", Json::object()}, {"s.io", {{"auth", ""}}}}));
  WriteJson(DockerFile(), Auths({{"r.io", Entry("docker", "1")}, {"s.io", Entry("docker2", "2")}}));
  EXPECT_EQ(MustFind("r.io").username, "docker");
  EXPECT_EQ(MustFind("s.io").username, "docker2");
}

TEST_F(AuthLookupTest, MalformedFilesAreErrorsNamingTheFile) {
  Write(RuntimeFile(), "{not json");
  auto r = LookupCredential(env_, "r.io");
  EXPECT_EQ(r.status().code(), Code::kCorruption);
  EXPECT_EQ(r.status().message(), RuntimeFile() + ": not a JSON object; fix or remove it");

  WriteJson(RuntimeFile(), Auths({{"r.io", {{"auth", "!!!"}}}}));
  r = LookupCredential(env_, "r.io");
  EXPECT_EQ(r.status().code(), Code::kCorruption);
  EXPECT_EQ(r.status().message(), RuntimeFile() + ": the \"auth\" of \"r.io\" is not base64");

  WriteJson(RuntimeFile(), Auths({{"r.io", {{"auth", Base64Encode("nocolon")}}}}));
  r = LookupCredential(env_, "r.io");
  EXPECT_EQ(r.status().code(), Code::kCorruption);
  EXPECT_EQ(r.status().message(), RuntimeFile() + ": the \"auth\" of \"r.io\" is not base64(user:password)");
}

TEST_F(AuthLookupTest, CredHelpersRunPerHostWithTheServerUrlOnStdin) {
  InstallHelper();
  WriteJson(DockerFile(), {{"credHelpers", {{"helped.io:5000", "test"}, {"docker.io", "test"}}},
                           {"auths", {{"helped.io:5000", Entry("file-user", "ignored")}}}});
  Credential c = MustFind("helped.io:5000");
  EXPECT_EQ(c.username, "helper-user");  // the helper decides, not the auths entry
  EXPECT_EQ(c.password, "s3cret");
  Credential hub = MustFind("registry-1.docker.io");
  EXPECT_EQ(hub.username, "hubhelper");
  EXPECT_EQ(hub.password, "hubsecret");
  EXPECT_EQ(HelperLog(), "get helped.io:5000\nget https://index.docker.io/v1/\n");
}

TEST_F(AuthLookupTest, HelperTokenUsernameMeansIdentityToken) {
  InstallHelper();
  WriteJson(DockerFile(), {{"credHelpers", {{"token.io", "test"}}}});
  Credential c = MustFind("token.io");
  EXPECT_EQ(c.username, "");
  EXPECT_EQ(c.password, "");
  EXPECT_EQ(c.identity_token, "refresh-token");
}

TEST_F(AuthLookupTest, HelperWithoutCredentialLetsLaterFilesAnswer) {
  InstallHelper();
  WriteJson(ConfigFile(), {{"credHelpers", {{"unknown.io", "test"}}}});
  ExpectNone("unknown.io");
  WriteJson(DockerFile(), Auths({{"unknown.io", Entry("docker", "1")}}));
  EXPECT_EQ(MustFind("unknown.io").username, "docker");
}

TEST_F(AuthLookupTest, CredsStoreServesHostsWithoutAnEntry) {
  InstallHelper();
  WriteJson(DockerFile(), {{"credsStore", "test"},
                           {"auths", {{"helped.io:5000", Json::object()}, {"file.io", Entry("file", "1")}}}});
  EXPECT_EQ(MustFind("helped.io:5000").username, "helper-user");
  EXPECT_EQ(MustFind("file.io").username, "file");  // a real auths entry is used first
  ExpectNone("unknown.io");
  EXPECT_EQ(HelperLog(), "get helped.io:5000\nget unknown.io\n");
}

TEST_F(AuthLookupTest, HelperFailuresAreErrors) {
  InstallHelper();
  WriteJson(DockerFile(), {{"credHelpers", {{"broken.io", "test"}, {"garbage.io", "test"}, {"x.io", "missing"}}}});
  auto broken = LookupCredential(env_, "broken.io");
  EXPECT_EQ(broken.status().code(), Code::kUnavailable);
  EXPECT_EQ(broken.status().message(), "docker-credential-test get broken.io failed (exit 2): keychain locked");
  auto garbage = LookupCredential(env_, "garbage.io");
  EXPECT_EQ(garbage.status().code(), Code::kCorruption);
  EXPECT_EQ(garbage.status().message(),
            "docker-credential-test get garbage.io printed something that is not a JSON object");
  auto missing = LookupCredential(env_, "x.io");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_EQ(missing.status().message(), "credential helper docker-credential-missing is not installed (not on PATH)");
}

TEST_F(AuthLookupTest, MissingCredsStoreHelperIsSkipped) {
  WriteJson(DockerFile(), {{"credsStore", "desktop-not-here"}});
  ExpectNone("r.io");
}

// ---- store and erase --------------------------------------------------------------------

TEST_F(AuthLookupTest, StoreWritesMode0600InPrivateDirsAndRoundTrips) {
  ASSERT_TRUE(StoreCredential(env_, "new.io:5000", {"user", "pass", ""}).ok());
  std::string path = AuthFileForWrite(env_);
  EXPECT_EQ(path, RuntimeFile());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir_ + "/run/containers").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(Json::parse(*ReadFile(path)), Auths({{"new.io:5000", {{"auth", "dXNlcjpwYXNz"}}}}));
  Credential c = MustFind("new.io:5000");
  EXPECT_EQ(c.username, "user");
  EXPECT_EQ(c.password, "pass");
}

TEST_F(AuthLookupTest, StoreKeepsOtherEntriesAndKeys) {
  Json before = {{"auths", {{"keep.io", Entry("k", "k")}}},
                 {"credHelpers", {{"h.io", "x"}}},
                 {"other", 1}};
  WriteJson(RuntimeFile(), before);
  ASSERT_TRUE(StoreCredential(env_, "https://index.docker.io/v1/", {"hub", "pw", "idtok"}).ok());
  Json want = before;
  want["auths"]["docker.io"] = {{"auth", Base64Encode("hub:pw")}, {"identitytoken", "idtok"}};
  EXPECT_EQ(Json::parse(*ReadFile(RuntimeFile())), want);
  // Storing again replaces the entry.
  ASSERT_TRUE(StoreCredential(env_, "docker.io", {"hub2", "pw2", ""}).ok());
  want["auths"]["docker.io"] = {{"auth", Base64Encode("hub2:pw2")}};
  EXPECT_EQ(Json::parse(*ReadFile(RuntimeFile())), want);
}

TEST_F(AuthLookupTest, StoreUsesRegistryAuthFileWhenSet) {
  env_.registry_auth_file = dir_ + "/deep/er/auth.json";
  ASSERT_TRUE(StoreCredential(env_, "r.io", {"u", "p", ""}).ok());
  EXPECT_TRUE(PathExists(dir_ + "/deep/er/auth.json"));
  EXPECT_FALSE(PathExists(RuntimeFile()));
  EXPECT_EQ(MustFind("r.io").username, "u");
}

TEST_F(AuthLookupTest, StoreRefusesToOverwriteAMalformedFile) {
  Write(RuntimeFile(), "[1,2");
  Status st = StoreCredential(env_, "r.io", {"u", "p", ""});
  EXPECT_EQ(st.code(), Code::kCorruption);
  EXPECT_EQ(*ReadFile(RuntimeFile()), "[1,2");
}

TEST_F(AuthLookupTest, EraseRemovesEveryKeyForTheHostAndKeepsTheRest) {
  WriteJson(RuntimeFile(), {{"auths", {{"docker.io", Entry("a", "1")},
                                       {"https://index.docker.io/v1/", Entry("b", "2")},
                                       {"quay.io", Entry("q", "3")},
                                       {"quay.io/org", Entry("qo", "4")}}},
                            {"other", true}});
  ASSERT_TRUE(EraseCredential(env_, "registry-1.docker.io").ok());
  EXPECT_EQ(Json::parse(*ReadFile(RuntimeFile())),
            (Json{{"auths", {{"quay.io", Entry("q", "3")}, {"quay.io/org", Entry("qo", "4")}}}, {"other", true}}));
  ASSERT_TRUE(EraseCredential(env_, "quay.io").ok());
  EXPECT_EQ(Json::parse(*ReadFile(RuntimeFile())),
            (Json{{"auths", {{"quay.io/org", Entry("qo", "4")}}}, {"other", true}}));
  struct stat st {};
  ASSERT_EQ(::stat(RuntimeFile().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AuthLookupTest, EraseWhenNotLoggedInIsNotFound) {
  Status missing_file = EraseCredential(env_, "r.io");
  EXPECT_EQ(missing_file.code(), Code::kNotFound);
  EXPECT_EQ(missing_file.message(), "not logged in to r.io (in " + RuntimeFile() + ")");
  ASSERT_TRUE(StoreCredential(env_, "r.io", {"u", "p", ""}).ok());
  ASSERT_TRUE(EraseCredential(env_, "r.io").ok());
  ExpectNone("r.io");
  EXPECT_TRUE(EraseCredential(env_, "r.io").IsNotFound());
}

}  // namespace
}  // namespace auth_test
}  // namespace imagefs::fetch
