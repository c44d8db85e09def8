// Proves the end-to-end harness with third-party oracles: the test images, pushed by
// skopeo into each registry flavor, read back by skopeo with the same digests; the token
// flow runs; wrong credentials fail; the log-based byte counter moves; nothing is left
// running afterwards.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "tests/testing/images.h"
#include "tests/testing/process.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

// skopeo inspect [--raw] docker://HOST/REF with the registry's flags; parsed JSON.
Result<nlohmann::json> Inspect(const TestRegistry& registry, const std::string& repo_tag,
                               std::vector<std::string> extra = {}) {
  std::vector<std::string> args;
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back("inspect");
  std::vector<std::string> flags = registry.skopeo_image_flags();
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back("docker://" + registry.host() + "/" + repo_tag);
  ASSIGN_OR_RETURN(ProcessResult result, registry.RunSkopeo(args));
  if (!result.ok()) return Status::Internal("skopeo inspect: " + result.Describe());
  nlohmann::json j = nlohmann::json::parse(result.stdout_text, nullptr, false);
  if (j.is_discarded()) return Status::Corruption("skopeo inspect printed no JSON");
  return j;
}

bool ProcessExists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

class HarnessTest : public ::testing::TestWithParam<RegistryFlavor> {
 protected:
  void SetUp() override {
    auto images = TestImagesDir();
    ASSERT_TRUE(images.ok()) << images.status().ToString();
    images_ = *images;
    auto registry = TestRegistry::Start(GetParam());
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
  }

  std::string images_;
  std::unique_ptr<TestRegistry> registry_;
};

TEST_P(HarnessTest, PushedImagesInspectWithTheLayoutDigests) {
  const std::string busybox = images_ + "/busybox:latest";
  const std::string multiarch = images_ + "/multiarch:latest";
  ASSERT_TRUE(PushImage(*registry_, busybox, "test/busybox:latest", false).ok());
  Status pushed = PushImage(*registry_, multiarch, "test/multiarch:latest", true);
  ASSERT_TRUE(pushed.ok()) << pushed.ToString();

  auto busybox_digest = LayoutDigest(busybox);
  ASSERT_TRUE(busybox_digest.ok()) << busybox_digest.status().ToString();
  auto inspected = Inspect(*registry_, "test/busybox:latest");
  ASSERT_TRUE(inspected.ok()) << inspected.status().ToString();
  EXPECT_EQ((*inspected)["Digest"], *busybox_digest);
  EXPECT_EQ((*inspected)["Layers"].size(), 3u);
  EXPECT_EQ((*inspected)["Architecture"], "amd64");

  auto index_digest = LayoutDigest(multiarch);
  ASSERT_TRUE(index_digest.ok()) << index_digest.status().ToString();
  auto amd64 = Inspect(*registry_, "test/multiarch:latest");
  ASSERT_TRUE(amd64.ok()) << amd64.status().ToString();
  EXPECT_EQ((*amd64)["Digest"], *index_digest);
  EXPECT_EQ((*amd64)["Architecture"], "amd64");
  auto arm64 = Inspect(*registry_, "test/multiarch:latest",
                       {"--override-arch", "arm64", "--override-variant", "v8"});
  ASSERT_TRUE(arm64.ok()) << arm64.status().ToString();
  EXPECT_EQ((*arm64)["Architecture"], "arm64");
  EXPECT_NE((*arm64)["Layers"], (*amd64)["Layers"]);

  if (GetParam() == RegistryFlavor::kToken) {
    EXPECT_GT(registry_->TokenRequests(), 0);
    EXPECT_GT(registry_->token_server()->TokensIssued(), 0);
  } else {
    EXPECT_EQ(registry_->TokenRequests(), 0);
  }
  EXPECT_GT(registry_->RequestCount(), 0);
}

TEST_P(HarnessTest, WrongCredentialsAreRefused) {
  if (!registry_->needs_auth()) GTEST_SKIP() << "plain registry has no auth";
  ASSERT_TRUE(PushImage(*registry_, images_ + "/busybox:latest", "test/busybox:latest", false).ok());
  std::vector<std::string> args = {"inspect", "--cert-dir", registry_->cert_dir(), "--creds",
                                   registry_->username() + ":wrong-password",
                                   "docker://" + registry_->host() + "/test/busybox:latest"};
  auto wrong = registry_->RunSkopeo(args);
  ASSERT_TRUE(wrong.ok()) << wrong.status().ToString();
  EXPECT_NE(wrong->exit_code, 0) << wrong->Describe();

  std::vector<std::string> anonymous = {"inspect", "--cert-dir", registry_->cert_dir(),
                                        "docker://" + registry_->host() + "/test/busybox:latest"};
  auto anon = registry_->RunSkopeo(anonymous);
  ASSERT_TRUE(anon.ok()) << anon.status().ToString();
  EXPECT_NE(anon->exit_code, 0) << anon->Describe();

  if (GetParam() == RegistryFlavor::kToken) {
    EXPECT_GT(registry_->token_server()->Denied(), 0);
  }
  // The right password still works afterwards.
  EXPECT_TRUE(Inspect(*registry_, "test/busybox:latest").ok());
}

TEST_P(HarnessTest, BytesSentCountsBlobDownloads) {
  ASSERT_TRUE(PushImage(*registry_, images_ + "/busybox:latest", "test/busybox:latest", false).ok());
  auto out = MakeTempDir("/tmp", "imagefs-harness-pull-");
  ASSERT_TRUE(out.ok());
  registry_->ResetCounters();
  EXPECT_EQ(registry_->BytesSent(), 0u);

  std::vector<std::string> args = {"copy", "--quiet"};
  std::vector<std::string> flags = registry_->skopeo_src_flags();
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back("docker://" + registry_->host() + "/test/busybox:latest");
  args.push_back("oci:" + *out + "/copy:latest");
  auto copied = registry_->RunSkopeo(args);
  ASSERT_TRUE(copied.ok()) << copied.status().ToString();
  ASSERT_TRUE(copied->ok()) << copied->Describe();

  // The 20 MiB data layer alone is ~21 MB compressed. The registry logs a response just
  // after writing it, so give the last line a moment.
  constexpr uint64_t kAtLeast = 20ull << 20;
  for (int i = 0; i < 100 && registry_->BytesSent() < kAtLeast; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(registry_->BytesSent(), kAtLeast);
  bool saw_blob = false;
  for (const RegistryRequest& r : registry_->Requests()) {
    if (r.method == "GET" && r.uri.find("/blobs/sha256:") != std::string::npos && r.status == 200 &&
        r.written > (1u << 20)) {
      saw_blob = true;
    }
  }
  EXPECT_TRUE(saw_blob);

  auto round_trip = LayoutDigest(*out + "/copy:latest");
  auto original = LayoutDigest(images_ + "/busybox:latest");
  ASSERT_TRUE(round_trip.ok()) << round_trip.status().ToString();
  EXPECT_EQ(*round_trip, *original);
  EXPECT_TRUE(RemoveAll(*out).ok());
}

TEST_P(HarnessTest, NothingIsLeftAfterTheRegistryIsDestroyed) {
  const pid_t pid = registry_->pid();
  const std::string dir = registry_->dir();
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(ProcessExists(pid));
  EXPECT_TRUE(PathExists(dir));
  registry_.reset();
  EXPECT_FALSE(ProcessExists(pid));
  EXPECT_FALSE(PathExists(dir));
}

INSTANTIATE_TEST_SUITE_P(Flavors, HarnessTest,
                         ::testing::Values(RegistryFlavor::kPlain, RegistryFlavor::kTlsBasic,
                                           RegistryFlavor::kToken),
                         [](const ::testing::TestParamInfo<RegistryFlavor>& info) {
                           std::string name = RegistryFlavorName(info.param);
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// umoci is the oracle for the busybox image: its unpacked tree shows the layers merged with
// whiteouts, the opaque dir, the hard link, the xattr and the owners the script promises.
TEST(TestImagesTest, UmociUnpacksBusyboxAsDocumented) {
  auto image = TestImage("busybox");
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  auto dir = MakeTempDir("/tmp", "imagefs-umoci-");
  ASSERT_TRUE(dir.ok());
  const std::string bundle = *dir + "/bundle";
  ProcessOptions unpack;
  unpack.argv = {"umoci", "unpack", "--image", *image, bundle};
  auto unpacked = RunProcess(unpack);
  ASSERT_TRUE(unpacked.ok()) << unpacked.status().ToString();
  ASSERT_TRUE(unpacked->ok()) << unpacked->Describe();
  const std::string root = bundle + "/rootfs";

  struct stat hello, link, owned, big, tmp;
  ASSERT_EQ(::lstat((root + "/data/hello.txt").c_str(), &hello), 0);
  ASSERT_EQ(::lstat((root + "/data/hello-link").c_str(), &link), 0);
  EXPECT_EQ(hello.st_ino, link.st_ino);
  EXPECT_EQ(hello.st_nlink, 2u);
  char target[64] = {};
  ASSERT_GT(::readlink((root + "/data/rel-link").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "hello.txt");
  char value[64] = {};
  ASSERT_EQ(::lgetxattr((root + "/data/xattr.txt").c_str(), "user.imagefs.test", value,
                        sizeof value - 1),
            5);
  EXPECT_STREQ(value, "value");
  ASSERT_EQ(::lstat((root + "/data/owned.txt").c_str(), &owned), 0);
  EXPECT_EQ(owned.st_uid, 1000u);
  EXPECT_EQ(owned.st_gid, 1000u);
  ASSERT_EQ(::lstat((root + "/data/big.bin").c_str(), &big), 0);
  EXPECT_EQ(big.st_size, 20 << 20);
  ASSERT_EQ(::lstat((root + "/tmp").c_str(), &tmp), 0);
  EXPECT_EQ(tmp.st_mode & 07777, 01777u);
  EXPECT_TRUE(PathExists(root + "/data/with space.txt"));
  EXPECT_TRUE(PathExists(root + "/data/ünïcödé.txt"));
  // Layer 3: whiteouts and the opaque dir.
  EXPECT_FALSE(PathExists(root + "/data/removed.txt"));
  EXPECT_FALSE(PathExists(root + "/etc/gone"));
  EXPECT_FALSE(PathExists(root + "/data/olddir/a.txt"));
  EXPECT_FALSE(PathExists(root + "/data/olddir/b.txt"));
  EXPECT_TRUE(PathExists(root + "/data/olddir/new.txt"));
  EXPECT_FALSE(PathExists(root + "/data/olddir/.wh..wh..opq"));
  EXPECT_NE(ReadFile(root + "/etc/passwd").value_or("").find("tester:x:1000"), std::string::npos);

  // And the image runs: busybox sh inside the tree.
  ProcessOptions run;
  run.argv = {"chroot", root, "/bin/sh", "-c", "echo hi from $(cat /data/hello-link)"};
  auto ran = RunProcess(run);
  ASSERT_TRUE(ran.ok()) << ran.status().ToString();
  EXPECT_EQ(ran->stdout_text, "hi from hello from imagefs\n") << ran->Describe();
  EXPECT_TRUE(RemoveAll(*dir).ok());
}

TEST(ProcessTest, CapturesOutputExitCodeAndStdin) {
  ProcessOptions options;
  options.argv = {"sh", "-c", "cat; echo err >&2; exit 3"};
  options.stdin_text = "from stdin";
  options.use_stdin = true;
  auto r = RunProcess(options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->stdout_text, "from stdin");
  EXPECT_EQ(r->stderr_text, "err\n");
}

TEST(ProcessTest, RemovesAndSetsEnvironment) {
  ::setenv("REGISTRY_IMAGEFS_PROBE", "x", 1);
  ProcessOptions options;
  options.argv = {"sh", "-c", "env"};
  options.env_remove = {"REGISTRY_*"};
  options.env_set = {{"IMAGEFS_PROBE", "y"}};
  auto r = RunProcess(options);
  ::unsetenv("REGISTRY_IMAGEFS_PROBE");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_text.find("REGISTRY_IMAGEFS_PROBE"), std::string::npos);
  EXPECT_NE(r->stdout_text.find("IMAGEFS_PROBE=y\n"), std::string::npos);
}

TEST(ProcessTest, TimeoutKillsTheChild) {
  ProcessOptions options;
  options.argv = {"sleep", "30"};
  options.timeout = std::chrono::milliseconds(200);
  auto r = RunProcess(options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kTimeout);
}

TEST(ProcessTest, MissingProgramIsAnError) {
  ProcessOptions options;
  options.argv = {"imagefs-no-such-program"};
  EXPECT_FALSE(RunProcess(options).ok());
}

TEST(ProcessTest, BackgroundProcessIsStoppedByItsDestructor) {
  auto dir = MakeTempDir("/tmp", "imagefs-bg-");
  ASSERT_TRUE(dir.ok());
  pid_t pid;
  {
    ProcessOptions options;
    options.argv = {"sh", "-c", "echo started; exec sleep 30"};
    auto bg = BackgroundProcess::Start(options, *dir + "/log");
    ASSERT_TRUE(bg.ok()) << bg.status().ToString();
    pid = bg->pid();
    EXPECT_TRUE(bg->IsRunning());
    for (int i = 0; i < 250 && ReadFile(*dir + "/log").value_or("").empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_FALSE(ProcessExists(pid));
  auto log = ReadFile(*dir + "/log");
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(*log, "started\n");
  EXPECT_TRUE(RemoveAll(*dir).ok());
}

}  // namespace
}  // namespace imagefs::testing
