// WWW-Authenticate parsing and credentials in containers/image's lookup order.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <stdlib.h>

#include "fetch/auth.h"
#include "util/file.h"

namespace imagefs::fetch {
namespace auth_file_test {
namespace {

TEST(AuthFileWwwAuthenticateTest, ParsesDockerHubsBearerChallenge) {
  auto c = ParseWwwAuthenticate(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push")");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->size(), 1u);
  EXPECT_EQ((*c)[0].scheme, "bearer");
  EXPECT_EQ((*c)[0].params.at("realm"), "https://auth.docker.io/token");
  EXPECT_EQ((*c)[0].params.at("service"), "registry.docker.io");
  EXPECT_EQ((*c)[0].params.at("scope"), "repository:library/nginx:pull,push");
}

TEST(AuthFileWwwAuthenticateTest, ParsesSeveralChallengesEscapesAndTokens) {
  auto c = ParseWwwAuthenticate(
      R"(Basic realm="Registry \"Realm\"", Bearer realm=https://a/token, service = "s", error="invalid_token")");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].scheme, "basic");
  EXPECT_EQ((*c)[0].params.at("realm"), "Registry \"Realm\"");
  EXPECT_EQ((*c)[1].scheme, "bearer");
  EXPECT_EQ((*c)[1].params.at("realm"), "https://a/token");
  EXPECT_EQ((*c)[1].params.at("service"), "s");
  EXPECT_EQ((*c)[1].params.at("error"), "invalid_token");
}

TEST(AuthFileWwwAuthenticateTest, SchemeAndParameterNamesAreCaseInsensitive) {
  auto c = ParseWwwAuthenticate(R"(BASIC REALM="x")");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)[0].scheme, "basic");
  EXPECT_EQ((*c)[0].params.at("realm"), "x");
}

TEST(AuthFileWwwAuthenticateTest, MalformedHeadersAreErrors) {
  EXPECT_FALSE(ParseWwwAuthenticate("").ok());
  EXPECT_FALSE(ParseWwwAuthenticate(R"(Bearer realm="unterminated)").ok());
  EXPECT_FALSE(ParseWwwAuthenticate("=x").ok());
}

TEST(AuthFileBase64Test, RoundTripsAndToleratesMissingPadding) {
  EXPECT_EQ(Base64Encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_EQ(*Base64Decode("dXNlcjpwYXNz"), "user:pass");
  EXPECT_EQ(Base64Encode("ab"), "YWI=");
  EXPECT_EQ(*Base64Decode("YWI="), "ab");
  EXPECT_EQ(*Base64Decode("YWI"), "ab");
  EXPECT_FALSE(Base64Decode("!!!!").ok());
}

class AuthFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "auth-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
    env_.home = dir_ + "/home";
    env_.xdg_runtime_dir = dir_ + "/run";
    env_.uid = 1234;
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  void Write(const std::string& path, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomic(path, text).ok());
  }
  static std::string Auth(const std::string& user, const std::string& pass) {
    return Base64Encode(user + ":" + pass);
  }

  std::string dir_;
  AuthEnv env_;
};

TEST_F(AuthFileTest, FilesAreConsultedInContainersImageOrder) {
  env_.registry_auth_file = dir_ + "/explicit.json";
  EXPECT_EQ(AuthFilesInOrder(env_),
            (std::vector<std::string>{dir_ + "/explicit.json", dir_ + "/run/containers/auth.json",
                                      dir_ + "/home/.config/containers/auth.json",
                                      dir_ + "/home/.docker/config.json"}));
  AuthEnv root;
  root.home = "/root";
  root.uid = 0;
  EXPECT_EQ(AuthFilesInOrder(root)[0], "/run/containers/0/auth.json");
  EXPECT_EQ(AuthFileForWrite(root), "/run/containers/0/auth.json");
  root.xdg_config_home = "/cfg";
  root.docker_config = "/dockercfg";
  EXPECT_EQ(AuthFilesInOrder(root)[1], "/cfg/containers/auth.json");
  EXPECT_EQ(AuthFilesInOrder(root)[2], "/dockercfg/config.json");
}

TEST_F(AuthFileTest, FirstFileWithTheHostWins) {
  Write(dir_ + "/home/.docker/config.json",
        R"({"auths":{"https://index.docker.io/v1/":{"auth":")" + Auth("hubuser", "hubpass") +
            R"("},"r.io":{"auth":")" + Auth("docker", "d") + R"("}}})");
  Write(dir_ + "/run/containers/auth.json",
        R"({"auths":{"r.io":{"auth":")" + Auth("podman", "p") + R"("}}})");
  auto r = LookupCredential(env_, "r.io");
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status().message();
  EXPECT_EQ((*r)->username, "podman");
  EXPECT_EQ((*r)->password, "p");
  auto hub = LookupCredential(env_, "docker.io");
  ASSERT_TRUE(hub.ok() && hub->has_value());
  EXPECT_EQ((*hub)->username, "hubuser");
  auto none = LookupCredential(env_, "other.io");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(AuthFileTest, KeysWithSchemeAndPathMatchTheHost) {
  Write(dir_ + "/run/containers/auth.json",
        R"({"auths":{"http://localhost:5000/v2/":{"auth":")" + Auth("u", "p:with:colons") + R"("}}})");
  auto r = LookupCredential(env_, "localhost:5000");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->password, "p:with:colons");
}

TEST_F(AuthFileTest, CredentialHelpersAreRun) {
  std::string bin = dir_ + "/bin";
  ASSERT_TRUE(MakeDirs(bin).ok());
  Write(bin + "/docker-credential-imagefstest",
        "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 2\n"
        "printf '{\"ServerURL\":\"%s\",\"Username\":\"helper-user\",\"Secret\":\"s3cret\"}' \"$server\"\n");
  ::chmod((bin + "/docker-credential-imagefstest").c_str(), 0755);
  Write(dir_ + "/home/.docker/config.json", R"({"credHelpers":{"helped.io":"imagefstest"}})");
  std::string old_path = GetEnv("PATH");
  ::setenv("PATH", (bin + ":" + old_path).c_str(), 1);
  auto r = LookupCredential(env_, "helped.io");
  Write(dir_ + "/home/.docker/config.json", R"({"credsStore":"imagefstest"})");
  auto store = LookupCredential(env_, "any.io");
  Write(dir_ + "/home/.docker/config.json", R"({"credHelpers":{"x.io":"notinstalled"}})");
  auto missing = LookupCredential(env_, "x.io");
  ::setenv("PATH", old_path.c_str(), 1);
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status().message();
  EXPECT_EQ((*r)->username, "helper-user");
  EXPECT_EQ((*r)->password, "s3cret");
  ASSERT_TRUE(store.ok() && store->has_value()) << store.status().message();
  EXPECT_EQ((*store)->username, "helper-user");
  EXPECT_TRUE(missing.status().IsNotFound()) << missing.status().message();
}

TEST_F(AuthFileTest, StoreAndEraseKeepOtherEntriesAndUseMode0600) {
  std::string path = AuthFileForWrite(env_);
  Write(path, R"({"auths":{"keep.io":{"auth":")" + Auth("k", "k") + R"("}},"other":1})");
  ASSERT_TRUE(StoreCredential(env_, "new.io:5000", {"user", "pass", ""}).ok());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ((*LookupCredential(env_, "new.io:5000"))->username, "user");
  EXPECT_EQ((*LookupCredential(env_, "keep.io"))->username, "k");
  ASSERT_TRUE(EraseCredential(env_, "new.io:5000").ok());
  EXPECT_FALSE(LookupCredential(env_, "new.io:5000")->has_value());
  EXPECT_EQ((*LookupCredential(env_, "keep.io"))->username, "k");
  EXPECT_NE(ReadFile(path)->find("\"other\""), std::string::npos);
  EXPECT_TRUE(EraseCredential(env_, "new.io:5000").IsNotFound());
}

TEST_F(AuthFileTest, MalformedFilesNameTheFile) {
  Write(dir_ + "/run/containers/auth.json", "{not json");
  auto r = LookupCredential(env_, "r.io");
  EXPECT_EQ(r.status().code(), Code::kCorruption);
  EXPECT_NE(r.status().message().find(dir_ + "/run/containers/auth.json"), std::string::npos);
  Write(dir_ + "/run/containers/auth.json", R"({"auths":{"r.io":{"auth":"bm9jb2xvbg=="}}})");
  EXPECT_EQ(LookupCredential(env_, "r.io").status().code(), Code::kCorruption);  // "nocolon"
}

}  // namespace
}  // namespace auth_file_test
}  // namespace imagefs::fetch
