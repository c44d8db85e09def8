// A plain gzip layer nobody indexed is served while it downloads (docs/architecture.md,
// "Serving during the pass"): with the registry's bytes held back half-way through the
// layer by a proxy, `imagefs mount` returns, a file the scan has passed reads back, a name
// it has not reached waits; once the bytes flow again the whole tree matches umoci's.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/mounts.h"
#include "tests/e2e/oracle.h"
#include "tests/testing/gate_proxy.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kBigMiB = 40;

class ProgressiveGzipTest : public RegistrySuite {
 protected:
  static void SetUpTestSuite() {
    StartRegistrySuite("progressive-gzip-test-");
    if (HasFatalFailure()) return;
    // umoci writes the layer in walk order, gzip'd: aaa/ first, zzz/last.txt last.
    const std::string d = *dir_;
    Shell("set -e; cd " + d + "; umoci init --layout oci >/dev/null; " +
          "umoci new --image oci:t >/dev/null; umoci unpack --image oci:t bundle >/dev/null; " +
          "mkdir bundle/rootfs/aaa bundle/rootfs/zzz; " +
          "echo first > bundle/rootfs/aaa/first.txt; echo second > bundle/rootfs/aaa/second.txt; " +
          "chmod 0600 bundle/rootfs/aaa/second.txt; " +
          "head -c " + std::to_string(kBigMiB << 20) + " /dev/urandom > bundle/rootfs/zzz/big.bin; " +
          "echo last > bundle/rootfs/zzz/last.txt; " +
          "umoci repack --image oci:t bundle >/dev/null; " +
          "umoci unpack --image oci:t oracle >/dev/null");
    if (HasFatalFailure()) return;
    std::vector<std::string> push = {"copy", "--quiet"};
    for (const auto& f : registry_->skopeo_dest_flags()) push.push_back(f);
    push.insert(push.end(), {"oci:" + d + "/oci:t", "docker://" + registry_->host() + "/t/big:gz"});
    auto c = registry_->RunSkopeo(push);
    ASSERT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : c.status().message());
  }

  // Mounts the image read-only at mnt (fresh --root, so no index is cached) through a
  // proxy that lets manifest, config and the layer's first windows (1 + 2 + 4 + 8 MiB)
  // through and holds the rest of the 40 MiB until proxy->Open().
  void MountThroughGate(const std::string& mnt, const std::vector<std::string>& flags,
                        std::unique_ptr<GateProxy>& proxy) {
    auto started = GateProxy::Start(static_cast<uint16_t>(registry_->port()));
    ASSERT_TRUE(started.ok()) << started.status().message();
    proxy = std::move(*started);
    proxy->CloseGateAfter(16 << 20);
    const std::string ref = "127.0.0.1:" + std::to_string(proxy->port()) + "/t/big:gz";
    std::vector<std::string> args = {"--root", root_, "--log-level", "info", "mount"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"--read-only", "--prefetch", "none", ref, mnt});
    ProcessResult mounted = RunImagefs(args, registry_->client_env(), "", 60s);
    ASSERT_EQ(mounted.exit_code, 0) << mounted.Describe();
  }
};

TEST_F(ProgressiveGzipTest, TheMountAnswersAndServesPassedFilesWhileTheLayerStillDownloads) {
  const std::string mnt = Dir("mnt");
  ScopedMount scoped(mnt);
  std::unique_ptr<GateProxy> proxy;
  MountThroughGate(mnt, {}, proxy);
  if (HasFatalFailure()) return;
  ASSERT_LT(proxy->forwarded(), kBigMiB << 20) << "the mount waited for the whole layer";

  int rc = -1;
  EXPECT_EQ(Shell("cat " + mnt + "/aaa/first.txt", &rc), "first\n");
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(Shell("ls " + mnt + "/aaa", &rc), "first.txt\nsecond.txt\n");
  EXPECT_EQ(Shell("stat -c %a " + mnt + "/aaa/second.txt", &rc), "600\n");
  // Absent, and provably so: the scan is past aaa/.
  Shell("test ! -e " + mnt + "/aaa/nothing");
  // Not reached yet: waits while the bytes are held back.
  auto last = std::async(std::launch::async, [&] {
    int code = -1;
    std::string out = Shell("cat " + mnt + "/zzz/last.txt", &code);
    return std::make_pair(code, out);
  });
  EXPECT_EQ(last.wait_for(1s), std::future_status::timeout);
  EXPECT_LT(proxy->forwarded(), kBigMiB << 20);

  proxy->Open();
  auto [code, out] = last.get();
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "last\n");
  // The whole tree, as umoci unpacks it: names, contents, modes.
  Shell("diff -r " + *dir_ + "/oracle/rootfs " + mnt);
  EXPECT_EQ(Shell("cd " + *dir_ + "/oracle/rootfs && find . -printf '%p %m %U %G %s\\n' | sort"),
            Shell("cd " + mnt + " && find . -printf '%p %m %U %G %s\\n' | sort"));
  ProcessResult um = Imagefs({"umount", mnt});
  EXPECT_EQ(um.exit_code, 0) << um.Describe();
  EXPECT_FALSE(IsMounted(mnt));
  // The index the scan built is kept: the next mount reads it at once.
  EXPECT_TRUE(WaitForDaemonLog(root_, "phase scanned", 5s));
}

// The registry stops sending in the middle of the layer: a name the scan has not reached
// fails with EIO once nothing has come for --fetch-timeout, the files already passed are
// still served, and once bytes flow again the same name reads back.
TEST_F(ProgressiveGzipTest, AStalledDownloadFailsWaitingLookupsWithEioUntilItFlowsAgain) {
  const std::string mnt = Dir("mnt");
  ScopedMount scoped(mnt);
  std::unique_ptr<GateProxy> proxy;
  MountThroughGate(mnt, {"--fetch-timeout", "2s"}, proxy);
  if (HasFatalFailure()) return;

  int rc = 0;
  const std::string err = Shell("cat " + mnt + "/zzz/last.txt 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("Input/output error"), std::string::npos) << err;
  EXPECT_EQ(Shell("cat " + mnt + "/aaa/first.txt"), "first\n");

  proxy->Open();
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  do {
    out = Shell("cat " + mnt + "/zzz/last.txt 2>&1", &rc);
  } while (rc != 0 && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "last\n");
  Shell("cmp " + *dir_ + "/oracle/rootfs/zzz/big.bin " + mnt + "/zzz/big.bin");
  ProcessResult um = Imagefs({"umount", mnt});
  EXPECT_EQ(um.exit_code, 0) << um.Describe();
  EXPECT_TRUE(WaitForDaemonLog(root_, "asking again until it answers", 5s));
}

// Unmounting while the download is stalled: the daemon stops its stream and ends once the
// request in flight gives up (its stall timeout: ~10 s here), leaving nothing behind.
TEST_F(ProgressiveGzipTest, UnmountingWhileTheDownloadIsStalledEndsTheDaemon) {
  const std::string mnt = Dir("mnt");
  std::unique_ptr<GateProxy> proxy;
  ScopedMount scoped(mnt);
  MountThroughGate(mnt, {"--fetch-timeout", "2s"}, proxy);
  if (HasFatalFailure()) return;
  std::string pid = Shell("ls " + root_ + "/logs | sed -n 's/^mount-\\([0-9]*\\)\\.log$/\\1/p'");
  while (!pid.empty() && pid.back() == '\n') pid.pop_back();
  ASSERT_FALSE(pid.empty());
  ProcessResult um = Imagefs({"umount", mnt});
  EXPECT_EQ(um.exit_code, 0) << um.Describe();
  EXPECT_FALSE(IsMounted(mnt));
  int rc = 0;
  Shell("for i in $(seq 400); do kill -0 " + pid + " 2>/dev/null || exit 0; sleep 0.1; done; exit 1", &rc);
  EXPECT_EQ(rc, 0) << "the daemon (pid " << pid << ") is still running";
  EXPECT_EQ(Shell("ls -A " + root_ + "/tmp 2>/dev/null | wc -l"), "0\n");
}

}  // namespace
}  // namespace imagefs::testing
