// fs::ComputeUpperChanges / ComputeImageChanges: a lower tree from small hand-made tar
// layers, upper dirs written by hand with kernel overlayfs's markers (whiteouts by mknod,
// opaque dirs and the rest by setxattr: the tests run as root), and the exact
// `docker diff` lines each rule gives.

#include "fs/changes.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include "index/layer_index.h"
#include "tests/index/index_test_util.h"
#include "tests/testing/fake_blob_source.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::fs {
namespace changes_test {
namespace {

using index::test::Dir;
using index::test::Entry;
using index::test::File;

constexpr int64_t kTime = 1700000000;  // every tar entry's mtime

// A valid VFS_CAP_REVISION_2 value: cap_net_bind_service permitted and effective.
const std::string kCap("\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
                       "\x00\x00\x00\x00", 20);

// Layers from tars (bottom first), each blob named "sha256:<prefix><i>" unless `digests`
// names them; `fakes` (when given) gets each layer's FakeBlobSource to count its reads.
Result<std::unique_ptr<index::MergedView>> BuildView(
    const std::vector<std::string>& tars, const std::string& prefix = "layer",
    const std::vector<std::string>& digests = {},
    std::vector<testing::FakeBlobSource*>* fakes = nullptr) {
  std::vector<index::ViewLayer> layers;
  for (size_t i = 0; i < tars.size(); ++i) {
    auto source = std::make_unique<testing::FakeBlobSource>(tars[i] + index::test::EndOfArchive());
    const std::string digest =
        i < digests.size() ? digests[i] : "sha256:" + prefix + std::to_string(i);
    ASSIGN_OR_RETURN(auto idx, index::OpenLayerIndex(
                                   *source, "application/vnd.oci.image.layer.v1.tar", digest,
                                   nullptr));
    if (fakes != nullptr) fakes->push_back(source.get());
    layers.push_back({std::move(source), std::move(idx)});
  }
  return index::MergedView::Build(std::move(layers));
}

class ChangesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "fs-changes-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
    upper_ = dir_ + "/upper";
    ASSERT_EQ(::mkdir(upper_.c_str(), 0755), 0);
    auto view = BuildView({
        Dir("bin/") + File("bin/tool", "tool bytes", 0755) +
            Entry("bin/sh", '2', "", 0777, "tool") + Dir("etc/") + File("etc/passwd", "root\n") +
            File("etc/hosts", "hosts\n") + Dir("data/") + File("data/a.txt", "aaaa") +
            Dir("data/sub/") + File("data/sub/deep.txt", "deep") + Dir("usr/") +
            Dir("usr/share/") + Dir("usr/share/nginx/") + Dir("usr/share/nginx/html/") +
            File("usr/share/nginx/html/index.html", "old page\n"),
        Dir("opq/") + File("opq/x", "x") + File("opq/y", "y") + File("f2d", "was a file") +
            Dir("d2f/") + File("d2f/inner", "inner"),
    });
    ASSERT_TRUE(view.ok()) << view.status().message();
    view_ = std::move(*view);
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  std::string U(const std::string& rel) const { return upper_ + "/" + rel; }
  // Upper entries as a copy-up leaves them: lower's mode, owner 0:0, mtime kTime.
  void MkDir(const std::string& rel, mode_t mode = 0755) {
    ASSERT_EQ(::mkdir(U(rel).c_str(), mode), 0) << rel;
    ASSERT_EQ(::chmod(U(rel).c_str(), mode), 0);
  }
  void Put(const std::string& rel, const std::string& data, mode_t mode = 0644) {
    ASSERT_TRUE(WriteFileAtomic(U(rel), data, static_cast<int>(mode)).ok()) << rel;
    ASSERT_EQ(::chmod(U(rel).c_str(), mode), 0);
  }
  void Whiteout(const std::string& rel) {
    ASSERT_EQ(::mknod(U(rel).c_str(), S_IFCHR | 0, makedev(0, 0)), 0) << rel;
  }
  void SetXattr(const std::string& rel, const std::string& name, const std::string& value) {
    ASSERT_EQ(::lsetxattr(U(rel).c_str(), name.c_str(), value.data(), value.size(), 0), 0)
        << rel << " " << name << ": " << std::strerror(errno);
  }
  // Sets every upper entry's mtime to kTime (creating children moved the dirs' mtimes).
  void FixTimes() { index::test::Sh("find . -mindepth 1 -exec touch -h -d @" + std::to_string(kTime) + " {} +", upper_); }

  Result<std::vector<Change>> Changes(const std::set<std::string>& ignore = {}) {
    UniqueFd fd(::open(upper_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    EXPECT_GE(fd.get(), 0);
    UpperOptions options;
    options.display_path = upper_;
    options.ignore = ignore;
    return ComputeUpperChanges(fd.get(), *view_, options);
  }
  std::string Lines(const std::set<std::string>& ignore = {}) {
    auto changes = Changes(ignore);
    EXPECT_TRUE(changes.ok()) << changes.status().message();
    return changes.ok() ? FormatChanges(*changes) : "error: " + changes.status().message();
  }

  std::string dir_, upper_;
  std::unique_ptr<index::MergedView> view_;
};

TEST_F(ChangesTest, EmptyUpperDirHasNoChanges) { EXPECT_EQ(Lines(), ""); }

TEST_F(ChangesTest, ModifiedFileListsEveryParentDirectoryAsChangedFirst) {
  for (const char* d : {"usr", "usr/share", "usr/share/nginx", "usr/share/nginx/html"}) MkDir(d);
  Put("usr/share/nginx/html/index.html", "hi\n");
  FixTimes();
  EXPECT_EQ(Lines(),
            "C /usr\nC /usr/share\nC /usr/share/nginx\nC /usr/share/nginx/html\n"
            "C /usr/share/nginx/html/index.html\n");
}

TEST_F(ChangesTest, CopiedUpUnchangedFileAndOverlayXattrsAreNoChange) {
  MkDir("etc");
  Put("etc/passwd", "root\n");
  SetXattr("etc", "trusted.overlay.impure", "y");
  SetXattr("etc", "trusted.overlay.origin", std::string("\0\xfb\x21", 3));
  SetXattr("etc/passwd", "trusted.overlay.origin", std::string("\0\xfb\x21", 3));
  SetXattr("etc/passwd", "trusted.overlay.nlink", "U+0");
  SetXattr("etc/passwd", "user.overlay.origin", "x");
  SetXattr("etc", "trusted.overlay.opaque", "x");  // "has whiteouts", not opaque
  FixTimes();
  EXPECT_EQ(Lines(), "");
}

TEST_F(ChangesTest, EachMetadataChangeOfAFileIsAChange) {
  MkDir("etc");
  MkDir("data");
  MkDir("bin");
  Put("etc/passwd", "root\n", 0600);          // mode
  Put("etc/hosts", "HOSTS\n");                 // same size, other bytes
  Put("data/a.txt", "aaaa");                   // owner
  ASSERT_EQ(::chown(U("data/a.txt").c_str(), 1000, 1000), 0);
  Put("bin/tool", "tool bytes", 0755);         // capability
  SetXattr("bin/tool", "security.capability", kCap);
  FixTimes();
  EXPECT_EQ(Lines(),
            "C /bin\nC /bin/tool\nC /data\nC /data/a.txt\nC /etc\nC /etc/hosts\nC /etc/passwd\n");
}

TEST_F(ChangesTest, MtimeAndSizeChangesAreChanges) {
  MkDir("etc");
  Put("etc/passwd", "root\n");
  Put("etc/hosts", "hosts\nmore\n");
  FixTimes();
  index::test::Sh("touch -d @1800000000 etc/passwd", upper_);
  EXPECT_EQ(Lines(), "C /etc\nC /etc/hosts\nC /etc/passwd\n");
}

// Unlike docker (security.capability only), every xattr counts: an xattr-only change of a
// copied-up lower file is a change (setfattr -n user.x -v 1), so commit carries it.
TEST_F(ChangesTest, XattrOnlyChangesAreChangesOverlayMarkersAreNot) {
  MkDir("etc");
  Put("etc/passwd", "root\n");
  SetXattr("etc/passwd", "user.x", "1");
  FixTimes();
  EXPECT_EQ(Lines(), "C /etc\nC /etc/passwd\n");

  // A lower tree whose entries carry xattrs (PAX SCHILY.xattr).
  using index::test::PaxHeader;
  using index::test::PaxRecord;
  const std::string keep = PaxHeader(PaxRecord("SCHILY.xattr.user.keep", "v"));
  auto view = BuildView({Dir("data/") + keep + File("data/same.txt", "s") +
                         File("data/plain.txt", "p") + keep + File("data/value.txt", "v") +
                         keep + File("data/dropped.txt", "d") + Dir("data/sub/") + keep +
                         Dir("data/xsub/") + keep + File("data/xsub/f", "f")});
  ASSERT_TRUE(view.ok()) << view.status().message();
  view_ = std::move(*view);
  ASSERT_TRUE(RemoveAll(upper_).ok());
  MkDir("");
  MkDir("data");
  SetXattr("data", "trusted.overlay.impure", "y");
  Put("data/same.txt", "s");  // copied up with the same xattrs and overlayfs's own
  SetXattr("data/same.txt", "user.keep", "v");
  SetXattr("data/same.txt", "trusted.overlay.origin", std::string("\0\xfb\x21", 3));
  SetXattr("data/same.txt", "user.overlay.origin", "x");
  Put("data/plain.txt", "p");  // an xattr added
  SetXattr("data/plain.txt", "user.new", "1");
  Put("data/value.txt", "v");  // a value changed
  SetXattr("data/value.txt", "user.keep", "w");
  Put("data/dropped.txt", "d");  // an xattr removed
  MkDir("data/sub");  // a directory's own xattr added
  SetXattr("data/sub", "security.test", "1");
  MkDir("data/xsub");  // a directory copied up with its xattr, a child's removed
  SetXattr("data/xsub", "user.keep", "v");
  Put("data/xsub/f", "f");
  FixTimes();
  EXPECT_EQ(Lines(),
            "C /data\nC /data/dropped.txt\nC /data/plain.txt\nC /data/sub\n"
            "C /data/value.txt\nC /data/xsub\nC /data/xsub/f\n");
}

TEST_F(ChangesTest, WhiteoutOfAFileOrADirectoryIsOneDeleteLine) {
  MkDir("etc");
  Whiteout("etc/hosts");
  MkDir("data");
  Whiteout("data/sub");  // a directory with children: one D line
  Whiteout("nothing-below");
  FixTimes();
  EXPECT_EQ(Lines(), "C /data\nD /data/sub\nC /etc\nD /etc/hosts\n");
}

TEST_F(ChangesTest, ZeroSizeFileWithWhiteoutXattrIsAWhiteout) {
  MkDir("etc");
  Put("etc/hosts", "");
  SetXattr("etc/hosts", "trusted.overlay.whiteout", "");
  FixTimes();
  EXPECT_EQ(Lines(), "C /etc\nD /etc/hosts\n");
}

TEST_F(ChangesTest, AddedDirectoryListsItselfAndEverythingInIt) {
  MkDir("newdir");
  Put("newdir/f", "f");
  MkDir("newdir/sub");
  Put("newdir/sub/g", "g");
  Whiteout("newdir/sub/ignored");  // nothing below an added directory
  MkDir("data");
  Put("data/new.txt", "new");
  Put("data-x", "sorted bytewise: '-' before '/'");
  FixTimes();
  EXPECT_EQ(Lines(),
            "C /data\nA /data-x\nA /data/new.txt\nA /newdir\nA /newdir/f\nA /newdir/sub\n"
            "A /newdir/sub/g\n");
}

TEST_F(ChangesTest, IgnoredPathsAreNeitherChangesNorWalkedAndDoNotMakeTheirParentChanged) {
  // What a container runtime creates (imagefs run's init paths), and one real change.
  MkDir("proc");
  MkDir("dev");
  Put("dev/null", "");
  MkDir("etc");
  Put("etc/resolv.conf", "nameserver 1.1.1.1\n");
  MkDir("data");
  Put("data/new.txt", "new");
  FixTimes();
  const std::set<std::string> ignore = {"/proc", "/dev", "/etc/resolv.conf"};
  EXPECT_EQ(Lines(ignore), "C /data\nA /data/new.txt\n");
  // Only exact paths: a sibling with a shared prefix is still a change.
  Put("procs", "p");
  FixTimes();
  EXPECT_EQ(Lines(ignore), "C /data\nA /data/new.txt\nA /procs\n");
  EXPECT_EQ(Lines(), "C /data\nA /data/new.txt\nA /dev\nA /dev/null\nC /etc\n"
                     "A /etc/resolv.conf\nA /proc\nA /procs\n");
}

TEST_F(ChangesTest, OpaqueDirectoryDeletesLowerChildrenItDoesNotRecreate) {
  MkDir("opq");
  SetXattr("opq", "trusted.overlay.opaque", "y");
  Put("opq/y", "y");  // re-created: added, as in docker's archive diff
  Put("opq/z", "z");
  Whiteout("opq/x");  // under an opaque dir a whiteout changes nothing
  FixTimes();
  EXPECT_EQ(Lines(), "C /opq\nD /opq/x\nA /opq/y\nA /opq/z\n");
  auto changes = Changes();
  ASSERT_TRUE(changes.ok());
  ASSERT_EQ(changes->size(), 4u);
  EXPECT_TRUE((*changes)[0].opaque);
  EXPECT_EQ((*changes)[0].upper_rel, "opq");
  EXPECT_EQ((*changes)[1].upper_rel, "");  // deleted by the opaque dir, no whiteout
  EXPECT_EQ((*changes)[3].upper_rel, "opq/z");
  EXPECT_TRUE(S_ISREG((*changes)[3].mode));
}

TEST_F(ChangesTest, FileReplacedByDirectoryAndDirectoryByFileAreChanges) {
  MkDir("f2d");
  SetXattr("f2d", "trusted.overlay.opaque", "y");  // as overlayfs creates it over a whiteout
  Put("f2d/child", "c");
  Put("d2f", "now a file");
  FixTimes();
  EXPECT_EQ(Lines(), "C /d2f\nC /f2d\nA /f2d/child\n");
}

TEST_F(ChangesTest, OtherTypeChangesAndSpecialFiles) {
  MkDir("data");
  ASSERT_EQ(::symlink("a.txt", U("data/sub").c_str()), 0);    // dir -> symlink
  ASSERT_EQ(::mkfifo(U("data/a.txt").c_str(), 0644), 0);      // file -> fifo
  ASSERT_EQ(::mknod(U("data/dev").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);  // added
  FixTimes();
  EXPECT_EQ(Lines(), "C /data\nC /data/a.txt\nA /data/dev\nC /data/sub\n");
}

TEST_F(ChangesTest, SymlinkTargetChangeIsAChangeAnUnchangedCopyIsNot) {
  MkDir("bin");
  ASSERT_EQ(::symlink("tool", U("bin/sh").c_str()), 0);
  FixTimes();
  EXPECT_EQ(Lines(), "");
  ASSERT_EQ(::unlink(U("bin/sh").c_str()), 0);
  ASSERT_EQ(::symlink("/bin/other", U("bin/sh").c_str()), 0);
  FixTimes();
  EXPECT_EQ(Lines(), "C /bin\nC /bin/sh\n");
}

TEST_F(ChangesTest, DirectoryOwnMetadataChangeIsAChange) {
  MkDir("data", 0700);
  FixTimes();
  EXPECT_EQ(Lines(), "C /data\n");
}

TEST_F(ChangesTest, RedirectDirAndMetacopyUpperDirsAreRefused) {
  MkDir("data");
  MkDir("data/moved");
  SetXattr("data/moved", "trusted.overlay.redirect", "/etc");
  auto changes = Changes();
  ASSERT_FALSE(changes.ok());
  EXPECT_EQ(changes.status().code(), Code::kUnsupported);
  EXPECT_EQ(changes.status().message(),
            upper_ + ": upper dir uses overlayfs redirect_dir/metacopy, which imagefs diff "
                     "cannot read (mount overlayfs without redirect_dir/metacopy)");
  ASSERT_TRUE(RemoveAll(U("data")).ok());
  MkDir("etc");
  Put("etc/passwd", "");
  SetXattr("etc/passwd", "trusted.overlay.metacopy", "");
  changes = Changes();
  ASSERT_FALSE(changes.ok());
  EXPECT_EQ(changes.status().code(), Code::kUnsupported);
}

// Image against image: the second tree plays the upper dir, without markers.
TEST_F(ChangesTest, ImageChangesFollowTheSameRules) {
  auto to = BuildView({
      Dir("bin/") + File("bin/tool", "tool bytes", 0755) +
          Entry("bin/sh", '2', "", 0777, "tool") + Dir("etc/") + File("etc/passwd", "root\n") +
          Dir("data/") + File("data/a.txt", "aaab") + Dir("usr/") + Dir("usr/share/") +
          Dir("usr/share/nginx/") + Dir("usr/share/nginx/html/") +
          File("usr/share/nginx/html/index.html", "old page\n") + Dir("opq/") +
          File("opq/y", "y") + File("opq/z", "z") + Dir("f2d/") + File("f2d/child", "c") +
          File("d2f", "file"),
  }, "to-layer");
  ASSERT_TRUE(to.ok()) << to.status().message();
  auto changes = ComputeImageChanges(*view_, **to);
  ASSERT_TRUE(changes.ok()) << changes.status().message();
  EXPECT_EQ(FormatChanges(*changes),
            "C /d2f\nC /data\nC /data/a.txt\nD /data/sub\nC /etc\nD /etc/hosts\nC /f2d\n"
            "A /f2d/child\nC /opq\nD /opq/x\nA /opq/z\n");
  auto same = ComputeImageChanges(*view_, *view_);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(FormatChanges(*same), "");
}

TEST_F(ChangesTest, ImageChangesCompareEveryXattr) {
  using index::test::PaxHeader;
  using index::test::PaxRecord;
  auto from = BuildView({Dir("d/") + File("d/a", "a") + File("d/b", "b")}, "x-from");
  auto to = BuildView({Dir("d/") + PaxHeader(PaxRecord("SCHILY.xattr.user.x", "1")) +
                       File("d/a", "a") + File("d/b", "b")},
                      "x-to");
  ASSERT_TRUE(from.ok() && to.ok());
  auto changes = ComputeImageChanges(**from, **to);
  ASSERT_TRUE(changes.ok()) << changes.status().message();
  EXPECT_EQ(FormatChanges(*changes), "C /d\nC /d/a\n");
}

// Images sharing a base layer: its files are the same entries of the same blob, and are
// not read to be compared. Files of different blobs without chunk digests are read.
TEST_F(ChangesTest, ImageChangesReadNoFileOfASharedLayer) {
  const std::string base = Dir("data/") + File("data/big", index::test::RandomBytes(200000, 3)) +
                           File("data/same", "same");
  std::vector<testing::FakeBlobSource*> a_fakes, b_fakes;
  auto a = BuildView({base, Dir("data/") + File("data/other", "one")}, "",
                     {"sha256:base", "sha256:a"}, &a_fakes);
  auto b = BuildView({base, Dir("data/") + File("data/other", "two")}, "",
                     {"sha256:base", "sha256:b"}, &b_fakes);
  ASSERT_TRUE(a.ok() && b.ok());
  for (auto* f : a_fakes) f->ResetCounters();
  for (auto* f : b_fakes) f->ResetCounters();
  auto changes = ComputeImageChanges(**a, **b);
  ASSERT_TRUE(changes.ok()) << changes.status().message();
  EXPECT_EQ(FormatChanges(*changes), "C /data\nC /data/other\n");
  EXPECT_EQ(a_fakes[0]->bytes_served() + b_fakes[0]->bytes_served(), 0u);
  EXPECT_GT(a_fakes[1]->bytes_served(), 0u);  // "one" and "two" compared byte by byte
}

}  // namespace
}  // namespace changes_test
}  // namespace imagefs::fs
