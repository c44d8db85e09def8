// imagefs diff on a live container and on kernel overlayfs, one scenario: the busybox test
// image is mounted writable with imagefs, a shell scenario changes it (adds, modifies,
// deletes; a lower dir deleted and re-created, a rename, a hard link, an xattr-only and a
// chmod-only change of lower files, a file replaced by a dir, a nested lower dir deleted,
// an added dir with children), and `imagefs diff MOUNTPOINT` must print exactly the lines
// written out below (docker diff's format, fs/changes.h). The same scenario then runs on
// kernel overlayfs over the oracle tree (skopeo + GNU tar), and `imagefs diff --image`
// of the kernel's upper dir must print the same lines: the kernel's own xattrs
// (trusted.overlay.origin, impure) never show. A kernel upper dir written with
// redirect_dir is refused by diff and by commit with one clear line.
//
// Every mount is undone by a ScopedMount destructor, also when an assertion fails.

#include <gtest/gtest.h>
#include <sys/xattr.h>

#include <nlohmann/json.hpp>
#include <string>

#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/mounts.h"
#include "tests/e2e/oracle.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

// Run with the tree as the current directory.
const char kScenario[] = R"SH(
set -eu
mkdir -p newdir/sub; echo a > newdir/sub/f; echo b > newdir/g
echo n > tmp/new.txt
echo tester2:x:1001:1001::/:/bin/sh >> etc/passwd
rm etc/group
rm -r data/olddir; mkdir data/olddir; echo z > data/olddir/z.txt
mv 'data/with space.txt' data/renamed.txt
ln data/hello.txt data/hello-link2
python3 -c "import os; os.setxattr('data/xattr.txt', 'user.x', b'1')"
chmod 600 data/owned.txt
rm data/run.sh; mkdir data/run.sh; echo x > data/run.sh/inside
rm -r usr/share/doc
)SH";

// hello.txt is copied up by ln but unchanged: no line. Every directory on the way to a
// change is C; the deleted nested dir usr/share/doc is one D line; the re-created
// data/olddir is opaque, so its lower child is D.
const char kWant[] =
    "C /data\n"
    "A /data/hello-link2\n"
    "C /data/olddir\n"
    "D /data/olddir/new.txt\n"
    "A /data/olddir/z.txt\n"
    "C /data/owned.txt\n"
    "A /data/renamed.txt\n"
    "C /data/run.sh\n"
    "A /data/run.sh/inside\n"
    "D /data/with space.txt\n"
    "C /data/xattr.txt\n"
    "C /etc\n"
    "D /etc/group\n"
    "C /etc/passwd\n"
    "A /newdir\n"
    "A /newdir/g\n"
    "A /newdir/sub\n"
    "A /newdir/sub/f\n"
    "C /tmp\n"
    "A /tmp/new.txt\n"
    "C /usr\n"
    "C /usr/share\n"
    "D /usr/share/doc\n";

class DiffOverlayTest : public BusyboxOracleTest {
 protected:
  // Kernel overlayfs over the oracle with a fresh upper dir (returned); runs `script` in
  // the merged dir and unmounts.
  std::string RunInKernelOverlay(const std::string& script, const std::string& options) {
    const std::string upper = Dir("kupper"), work = Dir("kwork");
    ScopedMount merged(Dir("kmerged"));
    Shell("mount -t overlay overlay -o lowerdir=" + *oracle_ + ",upperdir=" + upper +
          ",workdir=" + work + options + " " + merged.dir());
    int rc = 0;
    const std::string out = Shell("cd " + merged.dir() + " && " + script + " 2>&1", &rc);
    EXPECT_EQ(rc, 0) << out;
    Shell("umount " + merged.dir());
    return upper;
  }
};

TEST_F(DiffOverlayTest, OneScenarioGivesTheSameLinesOnAnImagefsMountAndOnKernelOverlayfs) {
  {
    ScopedMount mnt(Dir("mnt"));
    ProcessResult r = Imagefs({"mount", "--upper", case_ + "/upper", *busybox_, mnt.dir()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    int rc = 0;
    const std::string out = Shell("cd " + mnt.dir() + " && " + kScenario + " 2>&1", &rc);
    ASSERT_EQ(rc, 0) << out;
    r = Imagefs({"diff", mnt.dir()});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_EQ(r.stdout_text, kWant);
    EXPECT_EQ(r.stderr_text, "");
    EXPECT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
  }

  const std::string kupper =
      RunInKernelOverlay(kScenario, ",redirect_dir=off,index=off,metacopy=off");
  // The kernel marked its copy-ups (origin on files it copied up, impure on their parent
  // when it could encode a file handle) and made data/olddir opaque; none of it is a line.
  char value[256];
  EXPECT_GT(::lgetxattr((kupper + "/data/olddir").c_str(), "trusted.overlay.opaque", value,
                        sizeof value),
            0);
  ASSERT_TRUE(PathExists(kupper + "/data/hello.txt"));  // copied up by ln, unchanged
  std::printf("kernel upper dir: %s trusted.overlay.origin/impure xattrs\n",
              Shell("python3 -c \"import os, sys\nn = 0\nfor d, ds, fs in os.walk(sys.argv[1]):\n"
                    "  for x in [d] + [os.path.join(d, f) for f in fs]:\n"
                    "    n += sum(a in ('trusted.overlay.origin', 'trusted.overlay.impure') for a "
                    "in os.listxattr(x, follow_symlinks=False))\nprint(n, end='')\" " +
                    kupper)
                  .c_str());
  ProcessResult r = Imagefs({"diff", "--image", *busybox_, kupper});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, kWant);
  EXPECT_EQ(r.stderr_text, "");

  // Without --image: the image named in <upper>.work/origin.json (the mount's contract).
  ASSERT_TRUE(MakeDirs(kupper + ".work").ok());
  ASSERT_TRUE(WriteFileAtomic(kupper + ".work/origin.json",
                              nlohmann::json{{"image", *busybox_}}.dump()).ok());
  r = Imagefs({"diff", kupper});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, kWant);
}

TEST_F(DiffOverlayTest, ARedirectDirUpperIsRefusedByDiffAndCommitWithOneLine) {
  if (!PathExists("/sys/module/overlay/parameters/redirect_dir")) GTEST_SKIP();
  const std::string kupper =
      RunInKernelOverlay("mv data/olddir data/moved", ",redirect_dir=on,index=off");
  char value[256];
  if (::lgetxattr((kupper + "/data/moved").c_str(), "trusted.overlay.redirect", value,
                  sizeof value) < 0) {
    GTEST_SKIP() << "the kernel renamed by copying (no redirect xattr)";
  }
  const std::string want_error =
      "imagefs: " + kupper +
      ": upper dir uses overlayfs redirect_dir/metacopy, which imagefs diff cannot read "
      "(mount overlayfs without redirect_dir/metacopy)\n";
  ProcessResult r = Imagefs({"diff", "--image", *busybox_, kupper});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stdout_text, "");
  EXPECT_EQ(r.stderr_text, want_error);
  r = Imagefs({"commit", "--image", *busybox_, kupper, "oci:" + case_ + "/out:t"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stdout_text, "");
  EXPECT_EQ(r.stderr_text, want_error);
  EXPECT_FALSE(PathExists(case_ + "/out"));
}

}  // namespace
}  // namespace imagefs::testing
