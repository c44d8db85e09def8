// imagefs commit against a real registry and a real writable imagefs mount: a scenario
// runs in a writable mount of the busybox test image, the mount is committed, and the new
// image must hold the same tree, read by imagefs (a read-only mount) and by standard tools
// (skopeo + zstd + GNU tar through tests/testing/apply-layers). Then history, inspect,
// reproducibility, an unchanged container, oci:/docker-archive: and the errors; and the
// same round trip with --format estargz (skopeo to an oci: layout, gzip + GNU tar).

#include <gtest/gtest.h>
#include <sys/mount.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/oracle.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;

// Every entry under a tree but its root: type+mode, uid, gid, size (not for dirs), mtime
// seconds, content sha256 or link target, xattrs (overlayfs's own left out).
const char* kTreeDump = R"PY(
import hashlib, os, stat, sys
root = sys.argv[1]
out = []
for d, dirs, files in os.walk(root):
    for n in sorted(dirs + files):
        p = os.path.join(d, n)
        st = os.lstat(p)
        rel = os.path.relpath(p, root)
        extra = ''
        if stat.S_ISREG(st.st_mode):
            extra = hashlib.sha256(open(p, 'rb').read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            extra = os.readlink(p)
        try:
            xs = sorted((x, os.getxattr(p, x, follow_symlinks=False)) for x in
                        os.listxattr(p, follow_symlinks=False) if '.overlay.' not in x)
        except OSError:
            xs = []
        size = '' if stat.S_ISDIR(st.st_mode) else st.st_size
        out.append('%s %o %d %d %s %d %s %s %r' % (rel, st.st_mode, st.st_uid, st.st_gid, size,
                                                   int(st.st_mtime), os.major(st.st_rdev) if
                                                   stat.S_ISCHR(st.st_mode) else '', extra, xs))
print('\n'.join(sorted(out)))
)PY";

class CommitTest : public BusyboxOracleTest {
 protected:
  static void SetUpTestSuite() {
    BusyboxOracleTest::SetUpTestSuite();
    if (dir_ != nullptr) {
      ASSERT_TRUE(WriteFileAtomic(*dir_ + "/dump.py", kTreeDump).ok());
    }
  }
  void TearDown() override {
    for (const std::string& m : mounts_) {
      (void)Imagefs({"umount", m});
      ::umount2(m.c_str(), MNT_DETACH);
    }
  }
  std::string Mount(const std::vector<std::string>& extra, const std::string& image,
                    const std::string& name) {
    const std::string mnt = *dir_ + "/" + name;
    Shell("mkdir -p " + mnt);
    std::vector<std::string> args = {"mount"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(image);
    args.push_back(mnt);
    ProcessResult r = Imagefs(args);
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    mounts_.push_back(mnt);
    return mnt;
  }
  std::string Dump(const std::string& dir) {
    return Shell("python3 " + *dir_ + "/dump.py " + dir);
  }
  // The layer digests of a manifest in the registry.
  std::vector<std::string> Layers(const std::string& ref) {
    auto r = registry_->RunSkopeo({"inspect", "--tls-verify=false", "--raw", "docker://" + ref});
    EXPECT_TRUE(r.ok() && r->exit_code == 0);
    std::vector<std::string> out;
    if (!r.ok()) return out;
    const Json manifest = Json::parse(r->stdout_text);
    for (const Json& l : manifest["layers"]) out.push_back(l["digest"]);
    return out;
  }

  std::vector<std::string> mounts_;
};

TEST_F(CommitTest, CommittedImageHoldsTheMountsTreeForImagefsAndStandardTools) {
  const std::string upper = *dir_ + "/upper";
  const std::string mnt = Mount({"--upper", upper}, *busybox_, "mnt");
  Shell("set -e; cd " + mnt + "; echo new > tmp/new.txt; echo mod > etc/passwd;"
        " chmod 600 etc/group; rm data/hello.txt; rm -rf usr/share/doc;"
        " mkdir -p usr/share/doc; echo again > usr/share/doc/f; ln tmp/new.txt tmp/hard;"
        " ln -s ../etc/passwd tmp/sym; python3 -c \"import os;"
        " os.setxattr('tmp/new.txt','user.x',b'v'); os.setxattr('data/xattr.txt','user.y',b'w')\";"
        " rm -f etc/hostname || true;"
        " mkdir etc/hostname; echo d > etc/hostname/inner");
  const std::string ref = registry_->host() + "/t/committed:1";
  const auto start = std::chrono::steady_clock::now();
  ProcessResult r = Imagefs({"commit", "-a", "me", "-m", "msg", "-c", "ENV A=b", "-c",
                             "CMD [\"sh\"]", mnt, ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text.rfind("sha256:", 0), 0u) << r.stdout_text;
  std::fprintf(stderr, "commit took %.2fs\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  const std::string want = Dump(mnt);
  ASSERT_NE(want.find("tmp/hard"), std::string::npos);

  // (a) imagefs reads the new image as the old mount's merged tree.
  const std::string ro = Mount({"--read-only"}, ref, "ro");
  EXPECT_EQ(Dump(ro), want);

  // (b) standard tools unpack the same tree.
  UnpackOracle(*registry_, "docker://" + ref, *dir_ + "/committed-dir", *dir_ + "/unpacked");
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(Dump(*dir_ + "/unpacked"), want);

  // (c) history, (d) inspect.
  ASSERT_EQ(Imagefs({"pull", ref}).exit_code, 0);
  r = Imagefs({"history", "--no-trunc", ref});
  EXPECT_NE(r.stdout_text.find("msg"), std::string::npos) << r.Describe();
  r = Imagefs({"inspect", "--config", ref});
  EXPECT_NE(r.stdout_text.find("A=b"), std::string::npos) << r.Describe();
  EXPECT_NE(r.stdout_text.find("\"sh\""), std::string::npos) << r.Describe();
  EXPECT_NE(r.stdout_text.find("\"me\""), std::string::npos) << r.Describe();

  // push: the pulled commit to another name, blobs first and the manifest last.
  const std::string pushed = registry_->host() + "/t/pushed:1";
  r = Imagefs({"push", ref, pushed});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Layers(pushed), Layers(ref));
  r = Imagefs({"push", registry_->host() + "/t/never-pulled:1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;

  // (e) committing again gives the same layer.
  const std::string ref2 = registry_->host() + "/t/committed:2";
  ASSERT_EQ(Imagefs({"commit", mnt, ref2}).exit_code, 0);
  EXPECT_EQ(Layers(ref2), Layers(ref));

  // (g) oci: and docker-archive:.
  r = Imagefs({"commit", mnt, "oci:" + *dir_ + "/oci:t"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(PathExists(*dir_ + "/oci/index.json"));
  r = Imagefs({"commit", mnt, "docker-archive:" + *dir_ + "/a.tar"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.stderr_text.find("plain tar"), std::string::npos);
  auto c = registry_->RunSkopeo({"inspect", "docker-archive:" + *dir_ + "/a.tar"});
  EXPECT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : "");

  // (h) a dead registry and a socket: one line, exit 1.
  r = Imagefs({"commit", mnt, "127.0.0.1:1/t/x:1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  Shell("python3 -c \"import socket;socket.socket(socket.AF_UNIX).bind('" + upper +
        "/tmp/sock')\"");
  r = Imagefs({"commit", mnt, registry_->host() + "/t/committed:3"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("tmp/sock"), std::string::npos) << r.stderr_text;
}

// --format estargz: the layer is gzip with a TOC, read by standard tools (skopeo to an
// oci: layout, gzip + GNU tar) and by imagefs as the mount's tree; history shows the
// commit; two commits of one upper dir give the same layer.
TEST_F(CommitTest, EstargzCommitRoundTripsThroughStandardToolsAndImagefs) {
  const std::string mnt = Mount({"--upper", *dir_ + "/upper-estargz"}, *busybox_, "mnt-estargz");
  Shell("set -e; cd " + mnt + "; mkdir -p new/sub; echo a > new/sub/f; echo m >> etc/passwd;"
        " rm -r data/olddir; mkdir data/olddir; echo z > data/olddir/z; rm etc/group;"
        " ln data/hello.txt data/hl; chmod 700 data/owned.txt; head -c 3000000 data/big.bin >"
        " new/big; python3 -c \"import os; os.setxattr('data/xattr.txt','user.y',b'w')\"");
  const std::string want = Dump(mnt);
  ASSERT_NE(want.find("user.y"), std::string::npos);
  const std::string ref = registry_->host() + "/t/estargz:1";
  ProcessResult r = Imagefs({"commit", "--format", "estargz", "-m", "estargz commit", mnt, ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  // Standard tools: skopeo to an oci: layout, the new layer is gzip with a TOC digest.
  const std::string layout = *dir_ + "/estargz-oci";
  auto c = registry_->RunSkopeo({"copy", "--quiet", "--src-tls-verify=false", "docker://" + ref,
                                 "oci:" + layout + ":t"});
  ASSERT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : "");
  const Json index = Json::parse(*ReadFile(layout + "/index.json"));
  const std::string manifest_digest = index["manifests"][0]["digest"];
  const Json manifest =
      Json::parse(*ReadFile(layout + "/blobs/sha256/" + manifest_digest.substr(7)));
  const Json& top = manifest["layers"].back();
  EXPECT_NE(top["mediaType"].get<std::string>().find("gzip"), std::string::npos) << top;
  EXPECT_TRUE(top["annotations"].contains("containerd.io/snapshot/stargz/toc.digest")) << top;
  std::vector<std::string> layers;
  for (const Json& l : manifest["layers"]) {
    layers.push_back(layout + "/blobs/sha256/" + l["digest"].get<std::string>().substr(7));
  }
  ApplyLayers(*dir_ + "/estargz-tree", layers);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(Dump(*dir_ + "/estargz-tree"), want);

  // imagefs reads it as the mount's tree.
  const std::string ro = Mount({"--read-only"}, ref, "ro-estargz");
  EXPECT_EQ(Dump(ro), want);

  // History: the base's entries, then the commit's.
  ASSERT_EQ(Imagefs({"pull", ref}).exit_code, 0);
  r = Imagefs({"history", "--no-trunc", ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::vector<std::string> lines = Lines(r.stdout_text);
  ASSERT_GE(lines.size(), 2u) << r.stdout_text;
  EXPECT_NE(lines[1].find("imagefs commit"), std::string::npos) << r.stdout_text;
  EXPECT_NE(lines[1].find("estargz commit"), std::string::npos) << r.stdout_text;

  // Reproducible: the same upper dir gives the same layer (and so the same diff_id).
  const std::string ref2 = registry_->host() + "/t/estargz:2";
  r = Imagefs({"commit", "--format", "estargz", mnt, ref2});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Layers(ref2), Layers(ref));
  EXPECT_EQ(Layers(ref).size(), Layers(*busybox_).size() + 1);
}

TEST_F(CommitTest, UnchangedContainerGivesAnEmptyLayerHistoryEntry) {
  const std::string mnt = Mount({"--upper", *dir_ + "/upper-empty"}, *busybox_, "mnt-empty");
  const std::string ref = registry_->host() + "/t/committed:empty";
  ProcessResult r = Imagefs({"commit", "-m", "nothing", mnt, ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Layers(ref), Layers(*busybox_));
  r = Imagefs({"inspect", "--raw", "--config", ref});
  EXPECT_NE(r.stdout_text.find("\"empty_layer\":true"), std::string::npos) << r.stdout_text;
}

}  // namespace
}  // namespace imagefs::testing
