// A plain gzip layer nobody indexed is served while it downloads (docs/architecture.md,
// "Serving during the pass"): with the registry's bytes held back half-way through the
// layer by a proxy, `imagefs mount` returns, a file the scan has passed reads back, a name
// it has not reached waits; once the bytes flow again the whole tree matches umoci's.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <future>
#include <string>

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
};

TEST_F(ProgressiveGzipTest, TheMountAnswersAndServesPassedFilesWhileTheLayerStillDownloads) {
  auto proxy = GateProxy::Start(static_cast<uint16_t>(registry_->port()));
  ASSERT_TRUE(proxy.ok()) << proxy.status().message();
  // Manifest, config and the first windows of the layer (1 + 2 + 4 + 8 MiB) get through;
  // the rest of the 40 MiB waits.
  (*proxy)->CloseGateAfter(16 << 20);
  const std::string mnt = Dir("mnt");
  ScopedMount scoped(mnt);
  const std::string ref = "127.0.0.1:" + std::to_string((*proxy)->port()) + "/t/big:gz";
  ProcessResult mounted = RunImagefs({"--root", root_, "--log-level", "info", "mount",
                                      "--read-only", "--prefetch", "none", ref, mnt},
                                     registry_->client_env(), "", 60s);
  ASSERT_EQ(mounted.exit_code, 0) << mounted.Describe();
  ASSERT_LT((*proxy)->forwarded(), kBigMiB << 20) << "the mount waited for the whole layer";

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
  EXPECT_LT((*proxy)->forwarded(), kBigMiB << 20);

  (*proxy)->Open();
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

}  // namespace
}  // namespace imagefs::testing
