// imagefs run, ps, rm and diff of a container: the busybox test image pushed to a real
// registry, mounted lazily and writable, run by the real runc (as root).
//
// Every case has its own --root; TearDown kills and deletes any container of that root
// (runc kill/delete by its own ids) and unmounts its rootfs, also on failure.

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/mounts.h"
#include "tests/e2e/oracle.h"
#include "tests/testing/images.h"
#include "tests/testing/process.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {


std::vector<std::string> ListNames(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != ".." && n[0] != '.') out.push_back(n);
  }
  ::closedir(d);
  return out;
}

class RunTest : public RegistrySuite {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    StartRegistrySuite("run-test-");
    if (HasFatalFailure()) return;
    ref_ = new std::string(PushBusybox("t/busybox:gzip"));
  }
  static void TearDownTestSuite() {
    delete ref_;
    ref_ = nullptr;
    RegistrySuite::TearDownTestSuite();
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "runc needs root";
    RegistrySuite::SetUp();
  }

  void TearDown() override {
    if (root_.empty()) return;
    const std::string containers = root_ + "/containers";
    for (const std::string& id : ListNames(containers)) {
      Shell("runc --root " + root_ + "/runc kill " + id + " KILL >/dev/null 2>&1; runc --root " +
                root_ + "/runc delete -f " + id + " >/dev/null 2>&1; true");
      const std::string rootfs = containers + "/" + id + "/rootfs";
      for (int i = 0; i < 5 && IsMounted(rootfs); ++i) {
        if (::umount2(rootfs.c_str(), MNT_DETACH) != 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    }
  }

  ProcessResult Imagefs(std::vector<std::string> args, const std::string& stdin_text = "",
                        std::vector<std::pair<std::string, std::string>> extra_env = {}) {
    args.insert(args.begin(), {"--root", root_});
    auto env = registry_->client_env();
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    return RunImagefs(args, env, stdin_text, std::chrono::seconds(60));
  }

  inline static std::string* ref_ = nullptr;
};

TEST_F(RunTest, RunsCommandsWithDockersArgsEnvWorkdirUserAndExitCodes) {
  ProcessResult r = Imagefs({"run", "--rm", *ref_, "echo", "hello"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "hello\n");

  r = Imagefs({"run", "--rm", *ref_, "sh", "-c", "exit 7"});
  EXPECT_EQ(r.exit_code, 7) << r.Describe();

  r = Imagefs({"run", "--rm", "-e", "A=b", *ref_, "sh", "-c", "echo $A $PATH"});
  EXPECT_EQ(r.stdout_text, "b /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
      << r.Describe();

  r = Imagefs({"run", "--rm", "-w", "/data", *ref_, "sh", "-c", "pwd"});
  EXPECT_EQ(r.stdout_text, "/data\n") << r.Describe();

  r = Imagefs({"run", "--rm", "-u", "tester", *ref_, "sh", "-c", "busybox id -u; echo $HOME"});
  EXPECT_EQ(r.stdout_text, "1000\n/tmp\n") << r.Describe();

  // stdin passes through with -i only (docker's rule).
  r = Imagefs({"run", "--rm", "-i", *ref_, "cat"}, "hi\n");
  EXPECT_EQ(r.stdout_text, "hi\n") << r.Describe();
  r = Imagefs({"run", "--rm", *ref_, "cat"}, "hi\n");
  EXPECT_EQ(r.stdout_text, "") << r.Describe();

  // Each container's own hostname and pid namespace.
  r = Imagefs({"run", "--rm", *ref_, "sh", "-c", "echo $$ $(cat /etc/hostname) $HOSTNAME"});
  std::istringstream f(r.stdout_text);
  std::string pid, etc_hostname, env_hostname;
  f >> pid >> etc_hostname >> env_hostname;
  EXPECT_EQ(pid, "1") << r.Describe();
  EXPECT_EQ(etc_hostname.size(), 12u) << r.Describe();
  EXPECT_EQ(etc_hostname, env_hostname);

  // --rm left nothing: no container dir, no mount.
  EXPECT_TRUE(ListNames(root_ + "/containers").empty());
  EXPECT_EQ(Imagefs({"mounts", "-q"}).stdout_text, "");
}

// run takes the config from its mount (<upper>.work/image-config.json) instead of resolving
// the image a second time: one manifest request per run, none for a pulled image.
TEST_F(RunTest, ResolvesTheImageOnceAndUsesTheMountsConfig) {
  auto manifest_requests = [] {
    int n = 0;
    (void)registry_->SettledBytesSent();
    for (const RegistryRequest& req : registry_->Requests()) {
      if (req.uri.find("/manifests/") != std::string::npos) ++n;
    }
    return n;
  };
  registry_->ResetCounters();
  ProcessResult r = Imagefs({"run", "--rm", *ref_, "echo", "once"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "once\n");
  EXPECT_EQ(manifest_requests(), 1);

  r = Imagefs({"run", "--name", "kept", *ref_, "true"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::vector<std::string> ids = ListNames(root_ + "/containers");
  ASSERT_EQ(ids.size(), 1u);
  auto config = ReadFile(root_ + "/containers/" + ids[0] + "/upper.work/image-config.json");
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_NE(config->find("\"rootfs\""), std::string::npos) << *config;

  ASSERT_EQ(Imagefs({"pull", "-q", *ref_}).exit_code, 0);
  registry_->ResetCounters();
  r = Imagefs({"run", "--rm", *ref_, "echo", "pulled"});
  EXPECT_EQ(r.stdout_text, "pulled\n") << r.Describe();
  EXPECT_EQ(manifest_requests(), 0);
}

TEST_F(RunTest, AContainerKeepsItsChangesForDiffWithoutTheRuntimesMountPoints) {
  ProcessResult r = Imagefs(
      {"run", "--name", "c1", *ref_, "sh", "-c", "echo x > /new.txt; busybox rm /etc/group"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "");

  r = Imagefs({"diff", "c1"});
  EXPECT_EQ(r.stdout_text, "C /etc\nD /etc/group\nA /new.txt\n") << r.Describe();

  // A container that changes nothing has an empty diff (by id prefix this time).
  r = Imagefs({"run", "--name", "c2", *ref_, "true"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = Imagefs({"ps", "-a", "-q"});
  std::vector<std::string> ids = Lines(r.stdout_text);
  ASSERT_EQ(ids.size(), 2u) << r.Describe();
  // c2's id: both containers may be created in the same second, so ps's order alone
  // does not tell which is which.
  std::string c2_id;
  for (const std::string& l : Lines(Imagefs({"ps", "-a"}).stdout_text)) {
    if (l.size() > 2 && l.substr(l.size() - 2) == "c2") c2_id = l.substr(0, l.find(' '));
  }
  ASSERT_NE(std::find(ids.begin(), ids.end(), c2_id), ids.end()) << c2_id;
  r = Imagefs({"diff", c2_id});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "");

  r = Imagefs({"ps", "-a"});
  std::vector<std::string> lines = Lines(r.stdout_text);
  ASSERT_EQ(lines.size(), 3u) << r.stdout_text;
  EXPECT_EQ(lines[0].substr(0, 15), "CONTAINER ID   ");
  EXPECT_NE(lines[0].find("IMAGE"), std::string::npos);
  EXPECT_NE(lines[0].find("NAMES"), std::string::npos);
  bool saw_c1 = false;
  for (const std::string& l : lines) {
    if (l.size() < 2 || l.substr(l.size() - 2) != "c1") continue;
    saw_c1 = true;
    EXPECT_NE(l.find("Exited (0)"), std::string::npos) << l;
    EXPECT_NE(l.find("\"sh -c echo x > /new…\""), std::string::npos) << l;  // docker's cut
  }
  EXPECT_TRUE(saw_c1) << r.stdout_text;
  // Not running: ps without -a shows the header only.
  EXPECT_EQ(Lines(Imagefs({"ps"}).stdout_text).size(), 1u);
  // The rootfs is unmounted once the container exits.
  EXPECT_EQ(Imagefs({"mounts", "-q"}).stdout_text, "");

  // A name in use is refused, with docker's message and exit code.
  r = Imagefs({"run", "--name", "c1", *ref_, "true"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.stderr_text.find("Conflict. The container name \"/c1\" is already in use"),
            std::string::npos)
      << r.stderr_text;

  r = Imagefs({"run", "--name", "bad/name", *ref_, "true"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.stderr_text.find("Invalid container name (bad/name)"), std::string::npos)
      << r.stderr_text;

  r = Imagefs({"rm", "c1", "c2"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(ListNames(root_ + "/containers").empty());
  EXPECT_EQ(Lines(Imagefs({"ps", "-a"}).stdout_text).size(), 1u);
}

TEST_F(RunTest, DetachedContainersShowAsUpAndRmForceKillsThem) {
  ProcessResult r = Imagefs({"run", "-d", "--name", "d1", *ref_, "sleep", "30"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string id = r.stdout_text.substr(0, r.stdout_text.find('\n'));
  EXPECT_EQ(id.size(), 64u) << r.stdout_text;
  r = Imagefs({"ps"});
  std::vector<std::string> lines = Lines(r.stdout_text);
  ASSERT_EQ(lines.size(), 2u) << r.stdout_text;
  EXPECT_EQ(lines[1].substr(0, 12), id.substr(0, 12));
  EXPECT_NE(lines[1].find("Up "), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("\"sleep 30\""), std::string::npos) << lines[1];

  r = Imagefs({"rm", "d1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.stderr_text.find("You cannot remove a running container"), std::string::npos)
      << r.stderr_text;
  const auto start = std::chrono::steady_clock::now();
  r = Imagefs({"rm", "-f", "d1"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_TRUE(ListNames(root_ + "/containers").empty());
  EXPECT_EQ(Imagefs({"mounts", "-q"}).stdout_text, "");
}

TEST_F(RunTest, SigtermReachesTheContainerAndNetNoneHasOnlyLoopback) {
  ProcessOptions o;
  o.argv = {ImagefsBinary(), "--root", root_, "run", "--rm", *ref_, "sh", "-c",
            "trap 'echo got TERM; exit 3' TERM; echo ready; while true; do sleep 0.1; done"};
  o.env_set = registry_->client_env();
  o.env_remove = {"REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF", "IMAGEFS_ROOT"};
  auto proc = BackgroundProcess::Start(o, root_ + ".log");
  ASSERT_TRUE(proc.ok()) << proc.status().message();
  for (int i = 0; i < 200; ++i) {
    auto log = ReadFile(root_ + ".log");
    if (log.ok() && log->find("ready") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(proc->Stop(std::chrono::seconds(10)), 3);  // SIGTERM to imagefs
  EXPECT_NE(ReadFile(root_ + ".log")->find("got TERM"), std::string::npos);
  EXPECT_TRUE(ListNames(root_ + "/containers").empty());

  ProcessResult r = Imagefs({"run", "--rm", "--net", "none", *ref_, "ls", "/sys/class/net"});
  EXPECT_EQ(r.stdout_text, "lo\n") << r.Describe();
  r = Imagefs({"run", "--rm", *ref_, "ls", "/sys/class/net"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.stdout_text, "lo\n") << "--net host is the default";
}

TEST_F(RunTest, RunFailuresExit125WithOneLine) {
  ProcessResult r = Imagefs({"run", "--rm", registry_->host() + "/t/missing:latest", "true"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_TRUE(ListNames(root_ + "/containers").empty());

  r = Imagefs({"run", "--rm", "-u", "nosuchuser", *ref_, "true"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.stderr_text.find("unable to find user nosuchuser"), std::string::npos)
      << r.stderr_text;
  EXPECT_TRUE(ListNames(root_ + "/containers").empty());
  EXPECT_EQ(Imagefs({"mounts", "-q"}).stdout_text, "");
}

TEST_F(RunTest, WithoutRuncItFallsBackToChrootInNewNamespaces) {
  ProcessResult r = Imagefs({"run", "--rm", "-u", "tester", *ref_, "sh", "-c",
                             "echo $$ $(busybox id -u); pwd"},
                            "", {{"IMAGEFS_RUNTIME", "chroot"}});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "1 1000\n/\n");
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("falling back to chroot"), std::string::npos) << r.stderr_text;
  EXPECT_TRUE(ListNames(root_ + "/containers").empty());
}

}  // namespace
}  // namespace imagefs::testing
