// imagefs diff against a real registry and real kernel overlayfs: the busybox test image
// is unpacked with standard tools (tests/testing/apply-layers) into a lower dir, mounted
// with kernel overlayfs, changed by shell commands, unmounted, and `imagefs diff` must
// print exactly the lines docker diff's rules give (fs/changes.h). Also two images against
// each other, and the one-line errors.
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
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;


class DiffTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
    ASSERT_TRUE(reg.ok()) << reg.status().message();
    registry_ = reg->release();
    auto dir = MakeTempDir("/tmp", "diff-test-");
    ASSERT_TRUE(dir.ok());
    dir_ = new std::string(*dir);
    auto image = TestImage("busybox");
    ASSERT_TRUE(image.ok()) << image.status().message();
    busybox_ = new std::string(registry_->host() + "/t/busybox:gzip");
    ASSERT_TRUE(PushImage(*registry_, *image, "t/busybox:gzip", false).ok());

    // The lower dir: skopeo's dir: holds the layers by digest; apply them with GNU tar.
    const std::string dirout = *dir_ + "/busybox-dir";
    auto c = registry_->RunSkopeo({"copy", "--quiet", "oci:" + *image, "dir:" + dirout});
    ASSERT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : "");
    auto manifest = ReadFile(dirout + "/manifest.json");
    ASSERT_TRUE(manifest.ok());
    std::string args;
    const Json parsed = Json::parse(*manifest);
    for (const Json& l : parsed["layers"]) {
      args += " " + dirout + "/" + l["digest"].get<std::string>().substr(7);
    }
    lower_ = new std::string(*dir_ + "/lower");
    Shell(std::string(IMAGEFS_SOURCE_DIR) + "/tests/testing/apply-layers " + *lower_ + args);
    ASSERT_TRUE(PathExists(*lower_ + "/data/hello.txt"));
  }
  static void TearDownTestSuite() {
    delete registry_;
    registry_ = nullptr;
    if (dir_ != nullptr) (void)RemoveAll(*dir_);
    delete dir_;
    delete lower_;
    delete busybox_;
  }

  void SetUp() override {
    ASSERT_NE(registry_, nullptr);
    auto root = MakeTempDir(*dir_, "root-");
    ASSERT_TRUE(root.ok());
    root_ = *root;
  }

  ProcessResult Imagefs(std::vector<std::string> args) {
    args.insert(args.begin(), {"--root", root_});
    return RunImagefs(args, registry_->client_env());
  }

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
      Shell("mount -t overlay overlay -o lowerdir=" + *lower_ + ",upperdir=" + upper +
            ",workdir=" + work + options + " " + merged);
      Shell("set -e; M=" + merged + "; " + script);
      Shell("umount " + merged);
    }
    return upper;
  }

  static TestRegistry* registry_;
  static std::string* dir_;
  static std::string* lower_;
  static std::string* busybox_;
  std::string root_;
};

TestRegistry* DiffTest::registry_ = nullptr;
std::string* DiffTest::dir_ = nullptr;
std::string* DiffTest::lower_ = nullptr;
std::string* DiffTest::busybox_ = nullptr;

TEST_F(DiffTest, KernelOverlayUpperDirGivesDockerDiffLines) {
  const std::string upper = RunInOverlay(
      "mkdir -p $M/newdir/sub; echo a > $M/newdir/sub/f; echo n > $M/tmp/new.txt;"  // create
      "echo hi > $M/usr/share/doc/busybox/README;"                                   // modify
      "echo tester2:x:1001:1001::/:/bin/sh >> $M/etc/passwd;"                        // append
      "rm $M/etc/group;"                                                             // delete
      "rm -rf $M/data/olddir; mkdir $M/data/olddir; echo z > $M/data/olddir/z.txt;"  // re-create
      "mv \"$M/data/with space.txt\" $M/data/renamed.txt;"                           // rename
      "ln $M/data/hello.txt $M/data/hello-link2;"                                    // hard link
      "python3 -c 'import os,sys; os.setxattr(sys.argv[1], \"user.x\", b\"1\")' "
      "$M/data/xattr.txt;"                                                           // xattr only
      "chmod 600 $M/data/owned.txt;"                                                 // chmod only
      "rm $M/data/run.sh; mkdir $M/data/run.sh; echo x > $M/data/run.sh/inside;");   // file -> dir
  // hello.txt and xattr.txt are copied up but unchanged: no line (docker's overlay2 would
  // print C for them); every directory on the way to a change is C.
  const std::string want =
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
      "C /etc\n"
      "D /etc/group\n"
      "C /etc/passwd\n"
      "A /newdir\n"
      "A /newdir/sub\n"
      "A /newdir/sub/f\n"
      "C /tmp\n"
      "A /tmp/new.txt\n"
      "C /usr\n"
      "C /usr/share\n"
      "C /usr/share/doc\n"
      "C /usr/share/doc/busybox\n"
      "C /usr/share/doc/busybox/README\n";
  ASSERT_TRUE(PathExists(upper + "/data/hello.txt"));  // copied up by ln
  ASSERT_TRUE(PathExists(upper + "/data/xattr.txt"));  // copied up by setxattr
  ProcessResult r = Imagefs({"diff", "--image", *busybox_, upper});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, want);
  EXPECT_EQ(r.stderr_text, "");

  // Without --image: the image named in <upper>.work/origin.json (the mount's contract).
  ASSERT_TRUE(WriteFileAtomic(upper + ".work/origin.json",
                              Json{{"image", *busybox_}}.dump()).ok());
  r = Imagefs({"diff", upper});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, want);
}

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
