// imagefs inspect / pull / login against a real docker-registry in each flavour (plain HTTP,
// TLS + Basic auth, token auth), through mirrors and short names from registries.conf, via
// the oci: and docker-archive: transports, and with multi-arch selection. skopeo is the
// oracle for digests; sha256sum-style checks for pulled blobs.

#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "tests/e2e/imagefs_runner.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/digest.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;
using Env = std::vector<std::pair<std::string, std::string>>;

std::string SkopeoDigest(const TestRegistry& reg, const std::string& image,
                         const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args;
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back("inspect");
  auto flags = reg.skopeo_image_flags();
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back(image);
  auto r = reg.RunSkopeo(args);
  if (!r.ok() || !r->ok()) return "skopeo failed: " + (r.ok() ? r->Describe() : r.status().ToString());
  Json j = Json::parse(r->stdout_text, nullptr, false);
  return j.is_object() && j.contains("Digest") ? j["Digest"].get<std::string>() : "no digest";
}

// Every file under root/blobs/sha256 hashes to its name; returns how many there are.
int CheckBlobs(const std::string& root) {
  std::string dir = root + "/blobs/sha256";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  int n = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name[0] == '.') continue;
    auto bytes = ReadFile(dir + "/" + name);
    EXPECT_TRUE(bytes.ok());
    EXPECT_EQ(Digest::Sha256Of(std::string_view(*bytes)).hex(), name);
    ++n;
  }
  ::closedir(d);
  return n;
}

int TempFiles(const std::string& root) {
  DIR* d = ::opendir((root + "/tmp").c_str());
  if (d == nullptr) return 0;
  int n = 0;
  while (struct dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

class ImagesFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = TestImagesDir();
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    images_ = new std::string(*dir);
  }
  static void TearDownTestSuite() {
    delete images_;
    images_ = nullptr;
  }
  void SetUp() override {
    auto tmp = MakeTempDir("/tmp", "imagefs-e2e-");
    ASSERT_TRUE(tmp.ok());
    tmp_ = *tmp;
    root_ = tmp_ + "/root";
  }
  void TearDown() override { (void)RemoveAll(tmp_); }

  static std::string* images_;
  std::string tmp_;
  std::string root_;
};
std::string* ImagesFixture::images_ = nullptr;

// ---- each registry flavour ----

class RegistryFlavorTest : public ImagesFixture,
                           public ::testing::WithParamInterface<RegistryFlavor> {
 protected:
  void SetUp() override {
    ImagesFixture::SetUp();
    auto reg = TestRegistry::Start(GetParam());
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    reg_ = std::move(*reg);
    ASSERT_TRUE(PushImage(*reg_, *images_ + "/busybox:latest", "test/busybox:latest", false).ok());
    env_ = {{"REGISTRY_AUTH_FILE", tmp_ + "/auth.json"},
            {"CONTAINERS_REGISTRIES_CONF", tmp_ + "/registries.conf"}};
    ASSERT_TRUE(WriteFileAtomic(tmp_ + "/registries.conf", "").ok());
  }

  // Global flags every call needs for this registry.
  std::vector<std::string> Globals() const {
    std::vector<std::string> g = {"--root", root_};
    if (reg_->tls()) {
      g.push_back("--cert-dir");
      g.push_back(reg_->cert_dir());
    }
    return g;
  }

  ProcessResult Run(std::vector<std::string> args, const std::string& stdin_text = "") {
    std::vector<std::string> all = Globals();
    all.insert(all.end(), args.begin(), args.end());
    return RunImagefs(all, env_, stdin_text);
  }

  void Login() {
    if (!reg_->needs_auth()) return;
    ProcessResult r = Run({"login", "-u", reg_->username(), "--password-stdin", reg_->host()},
                          reg_->password() + "\n");
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_EQ(r.stdout_text, "Login Succeeded\n");
  }

  std::unique_ptr<TestRegistry> reg_;
  Env env_;
};

TEST_P(RegistryFlavorTest, InspectDigestEqualsSkopeos) {
  Login();
  std::string image = reg_->host() + "/test/busybox:latest";
  ProcessResult r = Run({"inspect", image});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  Json j = Json::parse(r.stdout_text, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.stdout_text;
  EXPECT_EQ(j["Digest"], SkopeoDigest(*reg_, "docker://" + image));
  EXPECT_EQ(j["Name"], reg_->host() + "/test/busybox");
  EXPECT_EQ(j["RepoTags"], Json::array({"latest"}));
  EXPECT_EQ(j["Layers"].size(), 3u);
  EXPECT_EQ(j["Architecture"], "amd64");
  EXPECT_EQ(j["Cmd"], Json::array({"sh"}));
  if (GetParam() == RegistryFlavor::kToken) {
    EXPECT_GT(reg_->TokenRequests(), 0);
  }
}

TEST_P(RegistryFlavorTest, PullStoresEveryVerifiedBlob) {
  Login();
  ProcessResult r = Run({"pull", reg_->host() + "/test/busybox:latest"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, reg_->host() + "/test/busybox:latest\n");
  // Not a TTY: one line per layer.
  EXPECT_NE(r.stderr_text.find(": Pull complete\n"), std::string::npos) << r.stderr_text;
  EXPECT_EQ(CheckBlobs(root_), 5);  // 3 layers + config + manifest
  EXPECT_EQ(TempFiles(root_), 0);
  // A second pull finds every layer already there.
  ProcessResult again = Run({"pull", reg_->host() + "/test/busybox:latest"});
  ASSERT_EQ(again.exit_code, 0) << again.Describe();
  EXPECT_NE(again.stderr_text.find("Already exists"), std::string::npos) << again.stderr_text;
}

TEST_P(RegistryFlavorTest, MissingTagIsNotFound) {
  Login();
  ProcessResult r = Run({"inspect", reg_->host() + "/test/busybox:nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("manifest unknown"), std::string::npos) << r.stderr_text;
}

TEST_P(RegistryFlavorTest, WithoutCredentialsAuthRegistriesSaySoAndHowToFix) {
  if (!reg_->needs_auth()) GTEST_SKIP() << "plain registry needs no credentials";
  ProcessResult r = Run({"inspect", reg_->host() + "/test/busybox:latest"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("imagefs login " + reg_->host()), std::string::npos) << r.stderr_text;
}

TEST_P(RegistryFlavorTest, WrongPasswordIsRejectedAndNothingIsSaved) {
  if (!reg_->needs_auth()) GTEST_SKIP() << "plain registry needs no credentials";
  ProcessResult r = Run({"login", "-u", reg_->username(), "--password-stdin", reg_->host()},
                        "wrong-password\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("rejected"), std::string::npos) << r.stderr_text;
  EXPECT_FALSE(PathExists(tmp_ + "/auth.json"));
}

TEST_P(RegistryFlavorTest, LogoutForgetsTheCredentials) {
  if (!reg_->needs_auth()) GTEST_SKIP() << "plain registry needs no credentials";
  Login();
  ProcessResult out = Run({"logout", reg_->host()});
  ASSERT_EQ(out.exit_code, 0) << out.Describe();
  EXPECT_EQ(out.stdout_text, "Removing login credentials for " + reg_->host() + "\n");
  EXPECT_EQ(Run({"inspect", reg_->host() + "/test/busybox:latest"}).exit_code, 1);
  EXPECT_EQ(Run({"logout", reg_->host()}).exit_code, 1);
}

TEST_P(RegistryFlavorTest, InsecureRegistryFlagSkipsTlsVerification) {
  if (!reg_->tls()) GTEST_SKIP() << "plain registry has no TLS";
  // No CA anywhere: verification fails unless the registry is marked insecure.
  std::vector<std::string> base = {"--root", root_, "--insecure-registry", reg_->host()};
  auto with = [&](std::vector<std::string> args, const std::string& in = "") {
    std::vector<std::string> all = base;
    all.insert(all.end(), args.begin(), args.end());
    return RunImagefs(all, env_, in);
  };
  ProcessResult login = with({"login", "-u", reg_->username(), "--password-stdin", reg_->host()},
                             reg_->password() + "\n");
  ASSERT_EQ(login.exit_code, 0) << login.Describe();
  ProcessResult r = with({"inspect", reg_->host() + "/test/busybox:latest"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  // The same through registries.conf's `insecure = true`.
  ASSERT_TRUE(WriteFileAtomic(tmp_ + "/registries.conf", "[[registry]]\nlocation = \"" + reg_->host() +
                                                             "\"\ninsecure = true\n").ok());
  ProcessResult conf = RunImagefs({"--root", root_, "inspect", reg_->host() + "/test/busybox:latest"}, env_);
  EXPECT_EQ(conf.exit_code, 0) << conf.Describe();
}

// Removes a directory tree when it goes out of scope, also when an assertion fails.
struct ScopedDir {
  std::string path;
  ~ScopedDir() { (void)RemoveAll(path); }
};

TEST_P(RegistryFlavorTest, TrustsCaCertificatesFromCertsD) {
  if (!reg_->tls()) GTEST_SKIP() << "plain registry has no TLS";
  auto without = RunImagefs({"--root", root_, "inspect", reg_->host() + "/test/busybox:latest"}, env_);
  EXPECT_EQ(without.exit_code, 1);
  EXPECT_NE(without.stderr_text.find("certs.d/" + reg_->host()), std::string::npos)
      << without.stderr_text;
  // The machine-wide places podman and docker read; the directory is unique to this port.
  for (std::string base : {"/etc/containers/certs.d/", "/etc/docker/certs.d/"}) {
    // Leave no empty certs.d behind that this test created.
    struct RemoveIfCreated {
      std::string path;
      bool existed;
      ~RemoveIfCreated() {
        if (!existed) ::rmdir(path.c_str());
      }
    } parent{base, PathExists(base)};
    ScopedDir dir{base + reg_->host()};
    ASSERT_TRUE(MakeDirs(dir.path).ok());
    auto ca = ReadFile(reg_->ca_cert_path());
    ASSERT_TRUE(ca.ok());
    ASSERT_TRUE(WriteFileAtomic(dir.path + "/ca.crt", *ca).ok());
    ProcessResult login = RunImagefs({"--root", root_, "login", "-u", reg_->username(),
                                      "--password-stdin", reg_->host()},
                                     env_, reg_->password() + "\n");
    ASSERT_EQ(login.exit_code, 0) << base << ": " << login.Describe();
    ProcessResult r = RunImagefs({"--root", root_, "inspect", reg_->host() + "/test/busybox:latest"}, env_);
    EXPECT_EQ(r.exit_code, 0) << base << ": " << r.Describe();
  }
}

INSTANTIATE_TEST_SUITE_P(Flavors, RegistryFlavorTest,
                         ::testing::Values(RegistryFlavor::kPlain, RegistryFlavor::kTlsBasic,
                                           RegistryFlavor::kToken),
                         [](const auto& info) {
                           std::string n = RegistryFlavorName(info.param);
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

// ---- one plain registry: transports, configuration, multi-arch, bad input ----

class PlainRegistryTest : public ImagesFixture {
 protected:
  void SetUp() override {
    ImagesFixture::SetUp();
    auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    reg_ = std::move(*reg);
    ASSERT_TRUE(PushImage(*reg_, *images_ + "/busybox:latest", "test/busybox:latest", false).ok());
    conf_ = tmp_ + "/registries.conf";
    ASSERT_TRUE(WriteFileAtomic(conf_, "").ok());
    env_ = {{"REGISTRY_AUTH_FILE", tmp_ + "/auth.json"}, {"CONTAINERS_REGISTRIES_CONF", conf_}};
  }

  ProcessResult Run(std::vector<std::string> args) {
    std::vector<std::string> all = {"--root", root_};
    all.insert(all.end(), args.begin(), args.end());
    return RunImagefs(all, env_);
  }

  std::string Image() const { return reg_->host() + "/test/busybox:latest"; }

  // Path of a blob's data in the registry's filesystem storage.
  std::string StoragePath(const std::string& digest) const {
    std::string hex = digest.substr(7);
    return reg_->dir() + "/data/docker/registry/v2/blobs/sha256/" + hex.substr(0, 2) + "/" + hex + "/data";
  }

  Json InspectJson(const std::string& image) {
    ProcessResult r = Run({"inspect", image});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    return Json::parse(r.stdout_text, nullptr, false);
  }

  std::unique_ptr<TestRegistry> reg_;
  std::string conf_;
  Env env_;
};

TEST_F(PlainRegistryTest, PullDrawsProgressBarsOnATerminal) {
  // util-linux `script` gives the command a pseudo-terminal.
  std::string cmd = ShellQuote({ImagefsBinary(), "--root", root_, "pull", Image()});
  ProcessOptions options;
  options.argv = {"script", "-qefc", cmd, "/dev/null"};
  options.env_set = env_;
  auto r = RunProcess(options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->exit_code, 0) << r->Describe();
  // Rows are redrawn in place with cursor movements, and every layer ends complete.
  EXPECT_NE(r->stdout_text.find("\033["), std::string::npos) << r->stdout_text;
  size_t complete = 0;
  for (size_t p = 0; (p = r->stdout_text.find("Pull complete", p)) != std::string::npos; ++p) ++complete;
  EXPECT_GE(complete, 3u) << r->stdout_text;
  EXPECT_EQ(CheckBlobs(root_), 5);
}

TEST_F(PlainRegistryTest, MirrorIsTriedBeforeADeadOrigin) {
  // The origin is a closed port; its mirror holds the image under the same path.
  std::string dead = "127.0.0.1:9";
  ASSERT_TRUE(WriteFileAtomic(conf_, "[[registry]]\nlocation = \"" + dead +
                                         "\"\n[[registry.mirror]]\nlocation = \"" + reg_->host() +
                                         "\"\n").ok());
  Json j = InspectJson(dead + "/test/busybox:latest");
  EXPECT_EQ(j["Digest"], SkopeoDigest(*reg_, "docker://" + Image()));
  ProcessResult pull = Run({"pull", dead + "/test/busybox:latest"});
  EXPECT_EQ(pull.exit_code, 0) << pull.Describe();
  EXPECT_EQ(CheckBlobs(root_), 5);
}

TEST_F(PlainRegistryTest, ShortNamesResolveThroughSearchRegistriesAndAliases) {
  ASSERT_TRUE(WriteFileAtomic(conf_, "unqualified-search-registries = [\"" + reg_->host() +
                                         "\"]\n[aliases]\n\"bb\" = \"" + reg_->host() +
                                         "/test/busybox\"\n").ok());
  std::string want = SkopeoDigest(*reg_, "docker://" + Image());
  EXPECT_EQ(InspectJson("test/busybox")["Digest"], want);
  EXPECT_EQ(InspectJson("bb:latest")["Digest"], want);
}

TEST_F(PlainRegistryTest, BlockedRegistryIsRefused) {
  ASSERT_TRUE(WriteFileAtomic(conf_, "[[registry]]\nlocation = \"" + reg_->host() +
                                         "\"\nblocked = true\n").ok());
  ProcessResult r = Run({"inspect", Image()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.stderr_text.find("blocked"), std::string::npos) << r.stderr_text;
}

TEST_F(PlainRegistryTest, ByDigestWorksAndTagPlusDigestUsesTheDigest) {
  std::string digest = SkopeoDigest(*reg_, "docker://" + Image());
  EXPECT_EQ(InspectJson(reg_->host() + "/test/busybox@" + digest)["Digest"], digest);
  EXPECT_EQ(InspectJson(reg_->host() + "/test/busybox:nonexistent@" + digest)["Digest"], digest);
}

TEST_F(PlainRegistryTest, OciLayoutTransportMatchesSkopeo) {
  std::string layout = "oci:" + *images_ + "/busybox:latest";
  Json j = InspectJson(layout);
  EXPECT_EQ(j["Digest"], SkopeoDigest(*reg_, layout));
  EXPECT_EQ(j["Layers"].size(), 3u);
  ProcessResult pull = Run({"pull", layout});
  EXPECT_EQ(pull.exit_code, 0) << pull.Describe();
  EXPECT_EQ(CheckBlobs(root_), 5);
  ProcessResult raw = Run({"inspect", "--raw", layout});
  ASSERT_EQ(raw.exit_code, 0) << raw.Describe();
  EXPECT_EQ("sha256:" + Digest::Sha256Of(std::string_view(raw.stdout_text)).hex(), j["Digest"]);
  ProcessResult bad = Run({"inspect", "oci:" + *images_ + "/busybox:nope"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.stderr_text.find("no image tagged \"nope\""), std::string::npos) << bad.stderr_text;
}

TEST_F(PlainRegistryTest, DockerArchiveTransportReadsWhatDockerSaveWrites) {
  std::string archive = tmp_ + "/busybox.tar";
  auto r = reg_->RunSkopeo({"copy", "oci:" + *images_ + "/busybox:latest",
                            "docker-archive:" + archive + ":test/busybox:latest"});
  ASSERT_TRUE(r.ok() && r->ok()) << (r.ok() ? r->Describe() : r.status().ToString());
  Json j = InspectJson("docker-archive:" + archive);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["Layers"].size(), 3u);
  EXPECT_EQ(j["Name"], "docker.io/test/busybox");
  EXPECT_EQ(InspectJson("docker-archive:" + archive + ":test/busybox:latest")["Digest"], j["Digest"]);
  EXPECT_EQ(InspectJson("docker-archive:" + archive + ":@0")["Digest"], j["Digest"]);
  ProcessResult pull = Run({"pull", "docker-archive:" + archive});
  EXPECT_EQ(pull.exit_code, 0) << pull.Describe();
  EXPECT_EQ(CheckBlobs(root_), 5);
}

TEST_F(PlainRegistryTest, MultiArchSelectsThePlatform) {
  ASSERT_TRUE(PushImage(*reg_, *images_ + "/multiarch:latest", "test/multiarch:latest", true).ok());
  std::string image = reg_->host() + "/test/multiarch:latest";
  Json amd = InspectJson(image);
  EXPECT_EQ(amd["Architecture"], "amd64");
  EXPECT_EQ(amd["Digest"], SkopeoDigest(*reg_, "docker://" + image));
  ProcessResult r = Run({"inspect", "--platform", "linux/arm64", image});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  Json arm = Json::parse(r.stdout_text, nullptr, false);
  EXPECT_EQ(arm["Architecture"], "arm64");
  // Digest is the index's, as skopeo prints it; the layers tell the platforms apart.
  EXPECT_EQ(arm["Digest"], amd["Digest"]);
  EXPECT_NE(arm["Layers"], amd["Layers"]);
  ProcessResult raw = Run({"inspect", "--raw", "--platform", "linux/arm64", image});
  Json index = Json::parse(raw.stdout_text, nullptr, false);
  ASSERT_TRUE(index.is_object()) << raw.stdout_text;
  std::string arm_manifest;
  for (const auto& m : index["manifests"]) {
    if (m["platform"]["architecture"] == "arm64") arm_manifest = m["digest"];
  }
  ProcessResult by_digest = Run({"inspect", reg_->host() + "/test/multiarch@" + arm_manifest});
  ASSERT_EQ(by_digest.exit_code, 0) << by_digest.Describe();
  EXPECT_EQ(Json::parse(by_digest.stdout_text)["Layers"], arm["Layers"]);
  ProcessResult none = Run({"inspect", "--platform", "linux/s390x", image});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.stderr_text.find("linux/arm64/v8"), std::string::npos) << none.stderr_text;
}

TEST_F(PlainRegistryTest, UnknownHostAndRefusedConnectionFailFast) {
  auto start = std::chrono::steady_clock::now();
  ProcessResult host = Run({"inspect", "nohost.invalid/x:1"});
  EXPECT_EQ(host.exit_code, 1);
  EXPECT_NE(host.stderr_text.find("unknown host nohost.invalid"), std::string::npos) << host.stderr_text;
  ProcessResult refused = Run({"inspect", "127.0.0.1:9/x:1"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(LineCount(refused.stderr_text), 1) << refused.stderr_text;
  EXPECT_NE(refused.stderr_text.find("is the registry running?"), std::string::npos) << refused.stderr_text;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST_F(PlainRegistryTest, CorruptLayerFailsThePullAndLeavesNothing) {
  Json j = InspectJson(Image());
  std::string layer = j["Layers"][1];
  std::string path = StoragePath(layer);
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok()) << path;
  std::string corrupt = *bytes;
  corrupt[corrupt.size() / 2] ^= 0x55;
  ASSERT_TRUE(WriteFileAtomic(path, corrupt).ok());
  ProcessResult r = Run({"pull", Image()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.stderr_text.find("digest mismatch"), std::string::npos) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find(layer), std::string::npos) << r.stderr_text;
  EXPECT_FALSE(PathExists(root_ + "/blobs/sha256/" + layer.substr(7)));
  EXPECT_EQ(TempFiles(root_), 0);
  EXPECT_EQ(Run({"images", "-q"}).stdout_text, "");  // no name points at a half-pulled image
}

TEST_F(PlainRegistryTest, TruncatedLayerFailsThePull) {
  Json j = InspectJson(Image());
  std::string layer = j["Layers"][1];
  std::string path = StoragePath(layer);
  ASSERT_EQ(::truncate(path.c_str(), 1000), 0);
  ProcessResult r = Run({"pull", Image()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text.substr(r.stderr_text.find("imagefs:"))), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find(layer), std::string::npos) << r.stderr_text;
  EXPECT_FALSE(PathExists(root_ + "/blobs/sha256/" + layer.substr(7)));
  EXPECT_EQ(TempFiles(root_), 0);
}

TEST_F(PlainRegistryTest, CorruptManifestIsRejected) {
  std::string digest = SkopeoDigest(*reg_, "docker://" + Image());
  std::string path = StoragePath(digest);
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok()) << path;
  std::string changed = *bytes;
  changed.insert(changed.size() - 1, " ");  // still valid JSON, different digest
  ASSERT_TRUE(WriteFileAtomic(path, changed).ok());
  ProcessResult r = Run({"inspect", Image()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.stderr_text.find("digest mismatch"), std::string::npos) << r.stderr_text;
  ProcessResult by_digest = Run({"inspect", reg_->host() + "/test/busybox@" + digest});
  EXPECT_EQ(by_digest.exit_code, 1);
  EXPECT_NE(by_digest.stderr_text.find("digest mismatch"), std::string::npos) << by_digest.stderr_text;
}

TEST_F(PlainRegistryTest, HangingRegistryTimesOutWithin30Seconds) {
  // A listener that accepts connections and never answers.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::string host = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  auto start = std::chrono::steady_clock::now();
  ProcessResult r = Run({"inspect", host + "/x:1"});
  auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find(host), std::string::npos) << r.stderr_text;
  EXPECT_LT(took, std::chrono::seconds(30));
}

}  // namespace
}  // namespace imagefs::testing
