// imagefs diff against a real registry and real kernel overlayfs: the busybox test image
// is unpacked with standard tools (tests/testing/apply-layers) into a lower dir, mounted
// with kernel overlayfs, changed by shell commands, unmounted, and `imagefs diff` must
// print exactly the lines docker diff's rules give (fs/changes.h): copy-ups that change
// nothing, refused redirect_dir/metacopy upper dirs, mounts found in the mount table. Also
// two images against each other, and the one-line errors. The full scenario (one script
// on an imagefs mount and on kernel overlayfs, the same lines) is diff_overlay_test.cc.
//
// Every overlay and imagefs mount is undone by a ScopedMount destructor (umount2 with
// MNT_DETACH), also when an assertion fails.

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/mounts.h"
#include "tests/e2e/oracle.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;

class DiffTest : public BusyboxOracleTest {
 protected:
  // A kernel overlayfs over the lower dir with a fresh upper dir U and its work dir
  // U.work (the layout imagefs mounts will use); runs `script` in the merged dir M
  // ($M in the script), unmounts, and returns U.
  std::string RunInOverlay(const std::string& script, const std::string& options = "") {
    auto d = MakeTempDir(*dir_, "ovl-");
    EXPECT_TRUE(d.ok());
    const std::string upper = *d + "/upper", work = upper + ".work", merged = *d + "/merged";
    Shell("mkdir " + upper + " " + work + " " + merged);
    {
      ScopedMount guard(merged);
      Shell("mount -t overlay overlay -o lowerdir=" + *oracle_ + ",upperdir=" + upper +
            ",workdir=" + work + options + " " + merged);
      Shell("set -e; M=" + merged + "; " + script);
      Shell("umount " + merged);
    }
    return upper;
  }
};

TEST_F(DiffTest, CopiedUpButUnchangedFilesAreNoChange) {
  const std::string upper = RunInOverlay(
      "touch -c -d @0 $M/nothing; cat $M/data/hello.txt >/dev/null;"
      "chmod 644 $M/data/hello.txt; chown 0:0 $M/etc/passwd;");  // copy-ups, same values
  ASSERT_TRUE(PathExists(upper + "/data/hello.txt"));
  ASSERT_TRUE(PathExists(upper + "/etc/passwd"));
  ProcessResult r = Imagefs({"diff", "--image", *busybox_, upper});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "");
}

TEST_F(DiffTest, RedirectDirAndMetacopyUppersAreRefusedWithOneLine) {
  if (!PathExists("/sys/module/overlay/parameters/metacopy")) GTEST_SKIP();
  // A renamed lower directory (redirect_dir) and a chown that copies up metadata only.
  for (const auto& [script, options] :
       {std::pair<std::string, std::string>{"mv $M/data/olddir $M/data/moved", ",redirect_dir=on"},
        {"chown 1:1 $M/data/big.bin", ",redirect_dir=on,metacopy=on"}}) {
    SCOPED_TRACE(options);
    const std::string upper = RunInOverlay(script, options);
    ProcessResult r = Imagefs({"diff", "--image", *busybox_, upper});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.stdout_text, "");
    EXPECT_EQ(r.stderr_text,
              "imagefs: " + upper +
                  ": upper dir uses overlayfs redirect_dir/metacopy, which imagefs diff cannot "
                  "read (mount overlayfs without redirect_dir/metacopy)\n");
  }
}

TEST_F(DiffTest, UsageErrorsPrintOneLine) {
  auto d = MakeTempDir(*dir_, "plain-");
  ASSERT_TRUE(d.ok());
  ProcessResult r = Imagefs({"diff", *d});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stderr_text, "imagefs: diff: cannot tell which image " + *d +
                               " is an upper dir of (give --image IMAGE)\n");
  const std::string missing = *dir_ + "/no-such-dir";
  r = Imagefs({"diff", "--image", *busybox_, missing});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stderr_text, "imagefs: diff: " + missing + ": No such file or directory\n");
  r = Imagefs({"diff", "--image", registry_->host() + "/t/nosuchimage:latest", *d});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
}

TEST_F(DiffTest, MountIsFoundInTheMountTable) {
  auto d = MakeTempDir(*dir_, "mnt-");
  ASSERT_TRUE(d.ok());
  ScopedMount guard(*d);
  ProcessResult r = Imagefs({"mount", "--read-only", *busybox_, *d});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = Imagefs({"diff", *d});  // read-only: no upper dir, nothing changed
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "");

  // A record naming an upper dir, as writable mounts will write it: diff reads that dir
  // against the image the mount serves.
  const std::string upper = RunInOverlay("rm $M/etc/group");
  std::string record_path;
  for (const auto& e : std::filesystem::directory_iterator(root_ + "/mounts")) {
    record_path = e.path().string();
  }
  ASSERT_NE(record_path, "");
  Json record = Json::parse(*ReadFile(record_path));
  record["upper"] = upper;
  ASSERT_TRUE(WriteFileAtomic(record_path, record.dump()).ok());
  r = Imagefs({"diff", *d + "/"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "C /etc\nD /etc/group\n");
  // Another --root has no record of it: refused, not walked as if it were an upper dir.
  const std::string other_root = root_ + "-other";
  r = RunImagefs({"--root", other_root, "diff", "--image", *busybox_, *d},
                 registry_->client_env());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stderr_text, "imagefs: diff: " + *d + ": an imagefs mount that " + other_root +
                               "/mounts does not list (give the --root it was mounted with)\n");
  EXPECT_EQ(Imagefs({"umount", *d}).exit_code, 0);
}

TEST_F(DiffTest, TwoImages) {
  auto image = TestImage("busybox");
  ASSERT_TRUE(image.ok());
  // imagefs convert's zstd:chunked twin holds the same tree: no lines.
  const std::string twin = registry_->host() + "/t/busybox:zstd-chunked";
  ProcessResult r = Imagefs({"convert", "--format", "zstd-chunked", "oci:" + *image,
                             "docker://" + twin});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = Imagefs({"diff", *busybox_, twin});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "");

  // Two seekable conversions of one tree (other layer blobs): their chunk digests tell
  // that the files are equal, without fetching them (data/big.bin alone is 20 MiB).
  const std::string estargz = registry_->host() + "/t/busybox:estargz";
  r = Imagefs({"convert", "--format", "estargz", "oci:" + *image, "docker://" + estargz});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  registry_->SettledBytesSent();
  registry_->ResetCounters();
  r = Imagefs({"diff", twin, estargz});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "");
  const uint64_t sent = registry_->SettledBytesSent();
  EXPECT_LT(sent, 2u << 20) << "diff of two 20 MiB images sent " << sent << " bytes";
  std::printf("diff zstd:chunked vs estargz sent %llu bytes\n",
              static_cast<unsigned long long>(sent));

  // The multiarch image's two platforms differ in /arch only.
  auto multi = TestImage("multiarch");
  ASSERT_TRUE(multi.ok());
  for (const std::string arch : {"amd64", "arm64"}) {
    std::vector<std::string> copy = {"copy", "--quiet", "--override-os", "linux",
                                     "--override-arch", arch};
    if (arch == "arm64") copy.insert(copy.end(), {"--override-variant", "v8"});
    for (const auto& f : registry_->skopeo_dest_flags()) copy.push_back(f);
    copy.insert(copy.end(), {"oci:" + *multi, "docker://" + registry_->host() + "/t/multi:" + arch});
    auto c = registry_->RunSkopeo(copy);
    ASSERT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : "");
  }
  r = Imagefs({"diff", registry_->host() + "/t/multi:amd64", registry_->host() + "/t/multi:arm64"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "C /arch\n");

  // Unrelated trees: D for what the second lacks, A (with everything inside) for what it adds.
  r = Imagefs({"diff", registry_->host() + "/t/multi:amd64", twin});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text.rfind("D /arch\nA /bin\nA /bin/busybox\n", 0), 0u) << r.stdout_text;
}

}  // namespace
}  // namespace imagefs::testing
