// fs::Filesystem with a writable upper dir, without a mount: a MergedView built from small
// tar layers, a temp upper dir and work dir, each operation called as the FUSE callbacks
// call it, and the upper dir's bytes on disk checked (kernel overlayfs's markers).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <thread>
#include <filesystem>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "index/layer_index.h"
#include "tests/index/index_test_util.h"
#include "util/file.h"

namespace imagefs::fs {
namespace upper_test {
namespace {

using index::test::Dir;
using index::test::Entry;
using index::test::File;
using index::test::PaxHeader;
using index::test::PaxRecord;

int ErrnoOf(const Status& st) { return st.ToErrno(); }

class UpperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "fs-upper-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
    std::vector<std::string> tars = {
        Dir("bin/") + File("bin/tool", "#!/bin/sh\necho tool\n", 04755) +
            Entry("bin/sh", '2', "", 0777, "tool") + Dir("etc/") +
            File("etc/passwd", "root:x:0:0\n") + Dir("data/") + File("data/a.txt", "aaaa") +
            Dir("data/sub/") + File("data/sub/deep.txt", "deep", 0600, 1000) +
            Dir("empty/") + Dir("usr/") + Dir("usr/share/") + Dir("usr/share/doc/") +
            File("usr/share/doc/README", "readme\n", 0644) + File("data/h1", "linked\n") +
            Entry("data/h2", '1', "", 0644, "data/h1") +
            File("data/big", index::test::RandomBytes(300000, 11)),
        PaxHeader(PaxRecord("SCHILY.xattr.user.color", "blue")) + File("data/x.txt", "xattrs here"),
    };
    std::vector<index::ViewLayer> layers;
    for (size_t i = 0; i < tars.size(); ++i) {
      std::string path = dir_ + "/layer" + std::to_string(i) + ".tar";
      ASSERT_TRUE(WriteFileAtomic(path, tars[i] + index::test::EndOfArchive()).ok());
      auto source = fetch::OpenFileBlobSource(path);
      ASSERT_TRUE(source.ok()) << source.status().message();
      auto idx = index::OpenLayerIndex(**source, "application/vnd.oci.image.layer.v1.tar",
                                       "sha256:layer" + std::to_string(i), nullptr);
      ASSERT_TRUE(idx.ok()) << idx.status().message();
      layers.push_back({std::move(*source), std::move(*idx)});
    }
    auto view = index::MergedView::Build(std::move(layers));
    ASSERT_TRUE(view.ok()) << view.status().message();
    view_ = std::move(*view);
    upper_ = dir_ + "/upper";
    Reopen();
  }
  void TearDown() override {
    fs_.reset();
    (void)RemoveAll(dir_);
  }

  // A new Filesystem over the same upper dir (a remount).
  void Reopen() {
    fs_.reset();
    auto fs = Filesystem::OpenWritable(*view_, upper_, upper_ + ".work");
    ASSERT_TRUE(fs.ok()) << fs.status().message();
    fs_ = std::move(*fs);
  }

  Ino Path(const std::string& path) {
    Ino ino = kRootIno;
    size_t pos = 0;
    while (pos < path.size()) {
      size_t slash = path.find('/', pos);
      if (slash == std::string::npos) slash = path.size();
      auto e = fs_->Lookup(ino, path.substr(pos, slash - pos));
      if (!e.ok()) return 0;
      ino = e->ino;
      pos = slash + 1;
    }
    return ino;
  }

  std::vector<std::string> Names(Ino dir_ino) {
    auto dir = fs_->OpenDir(dir_ino);
    EXPECT_TRUE(dir.ok()) << dir.status().message();
    std::vector<std::string> names;
    if (!dir.ok()) return names;
    fs_->ReadDir(**dir, 2, [&](const DirHandle::Item& item, uint64_t) {
      names.push_back(item.name);
      return true;
    });
    fs_->ReleaseDir(std::move(*dir));
    return names;
  }

  std::string ReadAll(Ino ino) {
    std::vector<uint8_t> buf(1 << 16);
    auto n = fs_->Read(ino, 0, buf);
    EXPECT_TRUE(n.ok()) << n.status().message();
    return n.ok() ? std::string(buf.begin(), buf.begin() + static_cast<long>(*n)) : "";
  }

  void WriteAt(Ino ino, uint64_t off, const std::string& data, int flags = O_WRONLY) {
    auto fh = fs_->Open(ino, flags);
    ASSERT_TRUE(fh.ok()) << fh.status().message();
    auto n = fs_->Write(**fh, off, std::span<const uint8_t>(
                                        reinterpret_cast<const uint8_t*>(data.data()), data.size()));
    ASSERT_TRUE(n.ok()) << n.status().message();
    EXPECT_EQ(*n, data.size());
    fs_->Release(std::move(*fh));
  }

  struct stat UpperStat(const std::string& rel) {
    struct stat st;
    std::memset(&st, 0, sizeof st);
    if (::lstat((upper_ + "/" + rel).c_str(), &st) != 0) st.st_mode = 0;
    return st;
  }
  bool IsWhiteout(const std::string& rel) {
    struct stat st = UpperStat(rel);
    return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
  }
  bool IsOpaque(const std::string& rel) {
    char v[4];
    ssize_t n = ::lgetxattr((upper_ + "/" + rel).c_str(), "trusted.overlay.opaque", v, sizeof v);
    return n == 1 && v[0] == 'y';
  }

  std::string dir_, upper_;
  std::unique_ptr<index::MergedView> view_;
  std::unique_ptr<Filesystem> fs_;
  Caller caller_{1000, 1000};
};

TEST_F(UpperTest, AFreshUpperDirShowsTheLowerTreeAndWorkDirIsASibling) {
  EXPECT_TRUE(fs_->writable());
  EXPECT_EQ(Names(kRootIno), (std::vector<std::string>{"bin", "data", "empty", "etc", "usr"}));
  EXPECT_TRUE(PathExists(upper_ + ".work"));
  EXPECT_EQ(ReadAll(Path("etc/passwd")), "root:x:0:0\n");
  struct statvfs s = fs_->StatFs();
  EXPECT_EQ(s.f_flag & ST_RDONLY, 0u);
  EXPECT_GT(s.f_bfree, 0u);
}

TEST_F(UpperTest, WriteCopiesUpDataAndMetadataAndKeepsTheInodeNumber) {
  const Ino x = Path("data/x.txt");
  auto before = fs_->GetAttr(x);
  ASSERT_TRUE(before.ok());
  WriteAt(x, 0, "XX");
  EXPECT_EQ(ReadAll(x), "XXttrs here");
  EXPECT_EQ(Path("data/x.txt"), x);
  struct stat up = UpperStat("data/x.txt");
  ASSERT_TRUE(S_ISREG(up.st_mode));
  EXPECT_EQ(up.st_mode & 07777, 0644u);
  char v[16];
  ssize_t n = ::lgetxattr((upper_ + "/data/x.txt").c_str(), "user.color", v, sizeof v);
  EXPECT_EQ(std::string(v, n > 0 ? static_cast<size_t>(n) : 0), "blue");
  // The parent was copied up first, with the lower dir's metadata.
  struct stat data = UpperStat("data");
  EXPECT_TRUE(S_ISDIR(data.st_mode));
  EXPECT_EQ(data.st_mode & 07777, 0755u);
  EXPECT_FALSE(IsOpaque("data"));
  // The other children of the merged dir are still served from below.
  EXPECT_EQ(ReadAll(Path("data/a.txt")), "aaaa");
  EXPECT_FALSE(PathExists(upper_ + "/data/a.txt"));
  // Merged directories report nlink 1, as overlayfs.
  EXPECT_EQ(fs_->GetAttr(Path("data"))->st_nlink, 1u);
}

// The kernel's write-back cache sends an inode's times after a ctime-only change (unlink
// of another name): repeating a lower file's mtime copies nothing up; a new mtime does.
TEST_F(UpperTest, AnMtimeEqualToTheLowerOneCopiesNothingUpAnotherDoes) {
  const Ino a = Path("data/a.txt");
  auto before = fs_->GetAttr(a);
  ASSERT_TRUE(before.ok());
  SetAttrRequest r;
  r.set_mtime = true;
  r.mtime = before->st_mtim;
  auto st = fs_->SetAttr(a, r, nullptr, caller_);
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->st_mtim.tv_sec, before->st_mtim.tv_sec);
  EXPECT_FALSE(PathExists(upper_ + "/data/a.txt"));
  r.mtime.tv_sec += 60;
  st = fs_->SetAttr(a, r, nullptr, caller_);
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->st_mtim.tv_sec, before->st_mtim.tv_sec + 60);
  EXPECT_EQ(UpperStat("data/a.txt").st_mtim.tv_sec, before->st_mtim.tv_sec + 60);
  EXPECT_EQ(ReadAll(a), "aaaa");
}

TEST_F(UpperTest, ChmodOnlyCopiesUpWithDataOwnerAndMtime) {
  const Ino deep = Path("data/sub/deep.txt");
  SetAttrRequest r;
  r.set_mode = true;
  r.mode = 0640;
  auto st = fs_->SetAttr(deep, r, nullptr, caller_);
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->st_mode, S_IFREG | 0640u);
  EXPECT_EQ(st->st_ino, deep);
  struct stat up = UpperStat("data/sub/deep.txt");
  EXPECT_EQ(up.st_mode, S_IFREG | 0640u);
  EXPECT_EQ(up.st_uid, 1000u);
  EXPECT_EQ(up.st_size, 4);
  EXPECT_EQ(up.st_mtim.tv_sec, 1700000000);
  EXPECT_EQ(*ReadFile(upper_ + "/data/sub/deep.txt"), "deep");
  EXPECT_TRUE(S_ISDIR(UpperStat("data/sub").st_mode));
  // Nothing is left in the work dir.
  EXPECT_TRUE(std::filesystem::is_empty(upper_ + ".work/tmp"));
}

TEST_F(UpperTest, TruncateChownAndUtimensGoToTheUpperFile) {
  const Ino a = Path("data/a.txt");
  SetAttrRequest r;
  r.set_size = true;
  r.size = 2;
  ASSERT_TRUE(fs_->SetAttr(a, r, nullptr, caller_).ok());
  EXPECT_EQ(ReadAll(a), "aa");
  SetAttrRequest c;
  c.set_uid = c.set_gid = true;
  c.uid = 123;
  c.gid = 456;
  ASSERT_TRUE(fs_->SetAttr(a, c, nullptr, caller_).ok());
  SetAttrRequest t;
  t.set_mtime = true;
  t.mtime = {1234567890, 5};
  auto st = fs_->SetAttr(a, t, nullptr, caller_);
  ASSERT_TRUE(st.ok());
  struct stat up = UpperStat("data/a.txt");
  EXPECT_EQ(up.st_uid, 123u);
  EXPECT_EQ(up.st_gid, 456u);
  EXPECT_EQ(up.st_size, 2);
  EXPECT_EQ(up.st_mtim.tv_sec, 1234567890);
  EXPECT_EQ(st->st_mtim.tv_sec, 1234567890);
}

TEST_F(UpperTest, OpenWithTruncAndAppend) {
  const Ino passwd = Path("etc/passwd");
  WriteAt(passwd, 0, "new\n", O_WRONLY | O_TRUNC);
  EXPECT_EQ(ReadAll(passwd), "new\n");
  WriteAt(passwd, 0, "more\n", O_WRONLY | O_APPEND);
  EXPECT_EQ(ReadAll(passwd), "new\nmore\n");
}

TEST_F(UpperTest, CreateMkdirSymlinkMknodAndLinkMakeUpperOnlyNodes) {
  auto created = fs_->Create(Path("data"), "new.txt", 0640, O_WRONLY | O_CREAT | O_EXCL, caller_);
  ASSERT_TRUE(created.ok()) << created.status().message();
  EXPECT_GT(created->entry.ino, view_->InodeCount());
  const std::string hello = "hello";
  ASSERT_TRUE(fs_->Write(*created->handle, 0,
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(hello.data()), 5))
                  .ok());
  fs_->Release(std::move(created->handle));
  EXPECT_EQ(*ReadFile(upper_ + "/data/new.txt"), "hello");
  struct stat up = UpperStat("data/new.txt");
  EXPECT_EQ(up.st_mode, S_IFREG | 0640u);
  EXPECT_EQ(up.st_uid, 1000u);
  auto again = fs_->Create(Path("data"), "new.txt", 0640, O_WRONLY | O_CREAT | O_EXCL, caller_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(ErrnoOf(again.status()), EEXIST);

  auto d = fs_->Mkdir(kRootIno, "newdir", 0750, caller_);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_TRUE(S_ISDIR(UpperStat("newdir").st_mode));
  EXPECT_FALSE(IsOpaque("newdir"));
  auto l = fs_->Symlink(d->ino, "link", "../data/new.txt", caller_);
  ASSERT_TRUE(l.ok()) << l.status().message();
  EXPECT_EQ(*fs_->ReadLink(l->ino), "../data/new.txt");
  auto fifo = fs_->Mknod(d->ino, "fifo", S_IFIFO | 0644, 0, caller_);
  ASSERT_TRUE(fifo.ok()) << fifo.status().message();
  EXPECT_TRUE(S_ISFIFO(UpperStat("newdir/fifo").st_mode));
  auto wh = fs_->Mknod(d->ino, "wh", S_IFCHR | 0644, makedev(0, 0), caller_);
  ASSERT_FALSE(wh.ok());
  EXPECT_EQ(ErrnoOf(wh.status()), EPERM);

  // A hard link to a lower file copies it up; both names share the inode.
  const Ino a = Path("data/a.txt");
  auto hl = fs_->Link(a, d->ino, "hard");
  ASSERT_TRUE(hl.ok()) << hl.status().message();
  EXPECT_EQ(hl->ino, a);
  EXPECT_EQ(hl->attr.st_nlink, 2u);
  EXPECT_EQ(UpperStat("newdir/hard").st_ino, UpperStat("data/a.txt").st_ino);
  EXPECT_EQ(Names(d->ino), (std::vector<std::string>{"fifo", "hard", "link"}));
}

TEST_F(UpperTest, LongNamesAreENAMETOOLONG) {
  const std::string longname(256, 'n');
  EXPECT_EQ(ErrnoOf(fs_->Lookup(kRootIno, longname).status()), ENAMETOOLONG);
  EXPECT_EQ(ErrnoOf(fs_->Mkdir(kRootIno, longname, 0755, caller_).status()), ENAMETOOLONG);
  EXPECT_EQ(ErrnoOf(fs_->Create(kRootIno, longname, 0644, O_CREAT | O_WRONLY, caller_).status()),
            ENAMETOOLONG);
  EXPECT_TRUE(fs_->Mkdir(kRootIno, std::string(255, 'n'), 0755, caller_).ok());
}

TEST_F(UpperTest, UnlinkOfALowerFileWritesAWhiteout) {
  const Ino data = Path("data");
  ASSERT_NE(Path("data/a.txt"), 0u);
  ASSERT_TRUE(fs_->Unlink(data, "a.txt").ok());
  EXPECT_TRUE(IsWhiteout("data/a.txt"));
  EXPECT_EQ(ErrnoOf(fs_->Lookup(data, "a.txt").status()), ENOENT);
  EXPECT_EQ(Names(data), (std::vector<std::string>{"big", "h1", "h2", "sub", "x.txt"}));
  // An upper-only file goes away without a trace.
  auto c = fs_->Create(data, "tmp", 0644, O_CREAT | O_WRONLY, caller_);
  ASSERT_TRUE(c.ok());
  fs_->Release(std::move(c->handle));
  ASSERT_TRUE(fs_->Unlink(data, "tmp").ok());
  EXPECT_EQ(UpperStat("data/tmp").st_mode, 0u);
  // A copied-up file becomes a whiteout.
  WriteAt(Path("data/x.txt"), 0, "y");
  ASSERT_TRUE(fs_->Unlink(data, "x.txt").ok());
  EXPECT_TRUE(IsWhiteout("data/x.txt"));
  // Recreating the name replaces the whiteout.
  c = fs_->Create(data, "a.txt", 0644, O_CREAT | O_WRONLY, caller_);
  ASSERT_TRUE(c.ok()) << c.status().message();
  fs_->Release(std::move(c->handle));
  EXPECT_TRUE(S_ISREG(UpperStat("data/a.txt").st_mode));
  EXPECT_EQ(ReadAll(Path("data/a.txt")), "");
}

TEST_F(UpperTest, RmdirNeedsAnEmptyUnionDirAndMkdirOverAWhiteoutIsOpaque) {
  EXPECT_EQ(ErrnoOf(fs_->Rmdir(kRootIno, "data")), ENOTEMPTY);
  EXPECT_EQ(ErrnoOf(fs_->Rmdir(kRootIno, "etc")), ENOTEMPTY);
  EXPECT_EQ(ErrnoOf(fs_->Unlink(kRootIno, "etc")), EISDIR);
  EXPECT_EQ(ErrnoOf(fs_->Rmdir(Path("etc"), "passwd")), ENOTDIR);
  ASSERT_TRUE(fs_->Unlink(Path("etc"), "passwd").ok());
  ASSERT_TRUE(fs_->Rmdir(kRootIno, "etc").ok()) << "etc is empty in the union";
  EXPECT_TRUE(IsWhiteout("etc"));
  ASSERT_TRUE(fs_->Rmdir(kRootIno, "empty").ok());
  EXPECT_TRUE(IsWhiteout("empty"));
  auto d = fs_->Mkdir(kRootIno, "etc", 0700, caller_);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_TRUE(S_ISDIR(UpperStat("etc").st_mode));
  EXPECT_TRUE(IsOpaque("etc"));
  EXPECT_GT(d->ino, view_->InodeCount());
  EXPECT_TRUE(Names(d->ino).empty());
  // The opaque marker is never shown.
  EXPECT_EQ(ErrnoOf(fs_->GetXattr(d->ino, "trusted.overlay.opaque", 10).status()), ENODATA);
  auto list = fs_->ListXattr(d->ino, 100);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->data, "");
  EXPECT_EQ(ErrnoOf(fs_->SetXattr(d->ino, "trusted.overlay.opaque", "n", 0)), EPERM);
  // After a remount the markers still hide the lower tree.
  Reopen();
  EXPECT_EQ(Names(kRootIno), (std::vector<std::string>{"bin", "data", "etc", "usr"}));
  EXPECT_TRUE(Names(Path("etc")).empty());
}

TEST_F(UpperTest, RenameOfFilesWhitesOutTheLowerNameAndLowerDirsAreEXDEV) {
  const Ino data = Path("data");
  const Ino a = Path("data/a.txt");
  ASSERT_TRUE(fs_->Rename(data, "a.txt", kRootIno, "moved.txt", 0).ok());
  EXPECT_TRUE(IsWhiteout("data/a.txt"));
  EXPECT_EQ(*ReadFile(upper_ + "/moved.txt"), "aaaa");
  EXPECT_EQ(Path("moved.txt"), a) << "a rename keeps the number";
  EXPECT_TRUE(std::filesystem::is_empty(upper_ + ".work/tmp")) << "the staged copy was used";
  EXPECT_EQ(ErrnoOf(fs_->Rename(kRootIno, "data", kRootIno, "data2", 0)), EXDEV);
  EXPECT_EQ(ErrnoOf(fs_->Rename(kRootIno, "moved.txt", kRootIno, "x", 1u << 7)), EINVAL);
  // NOREPLACE and EXCHANGE between files.
  EXPECT_EQ(ErrnoOf(fs_->Rename(kRootIno, "moved.txt", data, "x.txt", RENAME_NOREPLACE)), EEXIST);
  ASSERT_TRUE(fs_->Rename(kRootIno, "moved.txt", data, "x.txt", RENAME_EXCHANGE).ok());
  EXPECT_EQ(*ReadFile(upper_ + "/moved.txt"), "xattrs here");
  EXPECT_EQ(*ReadFile(upper_ + "/data/x.txt"), "aaaa");
  // An upper-only directory moves (and is marked opaque in a merged parent, as overlayfs).
  auto d = fs_->Mkdir(kRootIno, "mine", 0755, caller_);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(fs_->Rename(kRootIno, "mine", data, "mine2", 0).ok());
  EXPECT_TRUE(S_ISDIR(UpperStat("data/mine2").st_mode));
  EXPECT_TRUE(IsOpaque("data/mine2"));
  EXPECT_EQ(Path("data/mine2"), d->ino);
}

TEST_F(UpperTest, DeepTreesBeyondPathMaxWork) {
  Ino dir = kRootIno;
  const std::string name(200, 'd');
  for (int i = 0; i < 30; ++i) {  // ~6 KB of path
    auto d = fs_->Mkdir(dir, name, 0755, caller_);
    ASSERT_TRUE(d.ok()) << i << ": " << d.status().message();
    dir = d->ino;
  }
  auto c = fs_->Create(dir, "leaf", 0644, O_CREAT | O_WRONLY, caller_);
  ASSERT_TRUE(c.ok()) << c.status().message();
  const std::string text = "deep";
  ASSERT_TRUE(fs_->Write(*c->handle, 0, std::span<const uint8_t>(
                                            reinterpret_cast<const uint8_t*>(text.data()), 4))
                  .ok());
  fs_->Release(std::move(c->handle));
  EXPECT_EQ(ReadAll(c->entry.ino), "deep");
  EXPECT_EQ(Names(dir), (std::vector<std::string>{"leaf"}));
}

TEST_F(UpperTest, AnUnlinkedOpenFileReportsNlinkZeroFromItsHandle) {
  auto c = fs_->Create(kRootIno, "gone", 0644, O_CREAT | O_RDWR, caller_);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(fs_->Unlink(kRootIno, "gone").ok());
  auto e = fs_->GetEntry(c->entry.ino, c->handle.get());
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e->attr.st_nlink, 0u);
  EXPECT_EQ(e->attr.st_ino, c->entry.ino);
  fs_->Release(std::move(c->handle));
}

TEST_F(UpperTest, ForgetFreesUpperInodesAndNumbersStayForLiveNodes) {
  const size_t base = fs_->NodeCount();
  auto c = fs_->Create(kRootIno, "f", 0644, O_CREAT | O_WRONLY, caller_);
  ASSERT_TRUE(c.ok());
  const Ino ino = c->entry.ino;
  fs_->Release(std::move(c->handle));
  auto again = fs_->Lookup(kRootIno, "f");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ino, ino);
  EXPECT_EQ(fs_->NodeCount(), base + 1);
  fs_->Forget(ino, 2);  // create + lookup
  EXPECT_EQ(fs_->NodeCount(), base);
  // Calls that resolve a name themselves leave nothing behind either.
  ASSERT_TRUE(fs_->Rename(kRootIno, "f", kRootIno, "g", 0).ok());
  ASSERT_TRUE(fs_->Unlink(kRootIno, "g").ok());
  EXPECT_EQ(fs_->NodeCount(), base);
  // Lower nodes are freed too, and come back with the same number.
  const Ino tool = Path("bin/tool");
  const Ino bin = Path("bin");
  fs_->Forget(tool, 1);
  fs_->Forget(bin, 2);
  EXPECT_EQ(fs_->NodeCount(), base);
  EXPECT_EQ(Path("bin/tool"), tool);
}

TEST_F(UpperTest, XattrsAreSetOnTheUpperCopy) {
  const Ino passwd = Path("etc/passwd");
  EXPECT_EQ(ErrnoOf(fs_->RemoveXattr(passwd, "user.none")), ENODATA);
  EXPECT_FALSE(PathExists(upper_ + "/etc/passwd")) << "nothing to remove, nothing copied up";
  ASSERT_TRUE(fs_->SetXattr(passwd, "user.x", "1", 0).ok());
  char v[4];
  EXPECT_EQ(::lgetxattr((upper_ + "/etc/passwd").c_str(), "user.x", v, sizeof v), 1);
  auto got = fs_->GetXattr(passwd, "user.x", 10);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->data, "1");
  ASSERT_TRUE(fs_->RemoveXattr(passwd, "user.x").ok());
  EXPECT_EQ(ErrnoOf(fs_->GetXattr(passwd, "user.x", 10).status()), ENODATA);
  EXPECT_EQ(*ReadFile(upper_ + "/etc/passwd"), "root:x:0:0\n");
  EXPECT_TRUE(std::filesystem::is_empty(upper_ + ".work/tmp")) << "staged copies are used";
}

TEST_F(UpperTest, ARemountSeesTheChangesAndKeepsCopiedUpNumbers) {
  const Ino x = Path("data/x.txt");
  WriteAt(x, 0, "Z");
  ASSERT_TRUE(fs_->Unlink(Path("etc"), "passwd").ok());
  Reopen();
  EXPECT_EQ(Path("data/x.txt"), x);
  EXPECT_EQ(ReadAll(Path("data/x.txt")), "Zattrs here");
  EXPECT_EQ(ErrnoOf(fs_->Lookup(Path("etc"), "passwd").status()), ENOENT);
}

TEST_F(UpperTest, SetuidSymlinkAndSpecialCopyUp) {
  // A set-uid lower file keeps its bits on a copy-up by root (the kernel asks to clear them
  // for other callers); symlinks copy up with their target.
  const Ino tool = Path("bin/tool");
  SetAttrRequest t;
  t.set_mtime = true;
  t.mtime = {1, 0};
  ASSERT_TRUE(fs_->SetAttr(tool, t, nullptr, caller_).ok());
  EXPECT_EQ(UpperStat("bin/tool").st_mode, S_IFREG | 04755u);
  const Ino sh = Path("bin/sh");
  ASSERT_TRUE(fs_->SetAttr(sh, t, nullptr, caller_).ok());
  char buf[16];
  ssize_t n = ::readlink((upper_ + "/bin/sh").c_str(), buf, sizeof buf);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "tool");
  EXPECT_EQ(*fs_->ReadLink(sh), "tool");
}

TEST_F(UpperTest, DeepCopyUpCreatesEveryParent) {
  ASSERT_TRUE(fs_->SetXattr(Path("usr/share/doc/README"), "user.y", "2", 0).ok());
  for (const char* d : {"usr", "usr/share", "usr/share/doc"}) {
    EXPECT_TRUE(S_ISDIR(UpperStat(d).st_mode)) << d;
    EXPECT_EQ(UpperStat(d).st_mtim.tv_sec, 1700000000) << d;
  }
  EXPECT_EQ(*ReadFile(upper_ + "/usr/share/doc/README"), "readme\n");
}

TEST_F(UpperTest, ConcurrentWritersOfOneLowerFileShareOneCopyUp) {
  const Ino big = Path("data/big");
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto fh = fs_->Open(big, O_RDWR);
      ASSERT_TRUE(fh.ok()) << fh.status().message();
      const uint8_t byte = static_cast<uint8_t>('A' + i);
      ASSERT_TRUE(fs_->Write(**fh, static_cast<uint64_t>(i) * 1000, std::span<const uint8_t>(&byte, 1)).ok());
      fs_->Release(std::move(*fh));
      EXPECT_TRUE(fs_->Lookup(Path("data"), "a.txt").ok());
    });
  }
  for (auto& t : threads) t.join();
  const std::string want = [] {
    std::string b = index::test::RandomBytes(300000, 11);
    for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i) * 1000] = static_cast<char>('A' + i);
    return b;
  }();
  EXPECT_TRUE(*ReadFile(upper_ + "/data/big") == want);
  EXPECT_TRUE(std::filesystem::is_empty(upper_ + ".work/tmp"));
}

TEST_F(UpperTest, ACopyUpBreaksALowerHardLinkAsOverlayfsDoes) {
  const Ino h1 = Path("data/h1");
  ASSERT_EQ(Path("data/h2"), h1);
  EXPECT_FALSE(fs_->Lookup(Path("data"), "h2")->cacheable) << "the kernel must ask again";
  // The copy goes to the name the node was last looked up by, as the kernel's path walk
  // before open(2) does.
  ASSERT_EQ(Path("data/h1"), h1);
  WriteAt(h1, 0, "LINKED");
  EXPECT_EQ(ReadAll(Path("data/h1")), "LINKED\n");
  const Ino h2 = Path("data/h2");
  EXPECT_NE(h2, h1);
  EXPECT_EQ(Path("data/h2"), h2) << "the other name keeps its new number";
  EXPECT_EQ(ReadAll(h2), "linked\n");
  EXPECT_FALSE(PathExists(upper_ + "/data/h2"));
}

TEST_F(UpperTest, AReusedUpperDirWrittenByOthersIsReadWithItsMarkers) {
  fs_.reset();
  // As kernel overlayfs (or an earlier container) left it: a whiteout, an opaque dir with
  // a file, a plain upper file over a lower one.
  ASSERT_EQ(::mknod((upper_ + "/bin").c_str(), S_IFCHR | 0600, makedev(0, 0)), 0);
  ASSERT_TRUE(MakeDirs(upper_ + "/data").ok());
  ASSERT_EQ(::mkdir((upper_ + "/data/sub").c_str(), 0755), 0);
  ASSERT_EQ(::setxattr((upper_ + "/data/sub").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  ASSERT_TRUE(WriteFileAtomic(upper_ + "/data/sub/mine", "mine").ok());
  ASSERT_TRUE(WriteFileAtomic(upper_ + "/data/a.txt", "upper a").ok());
  Reopen();
  EXPECT_EQ(Names(kRootIno), (std::vector<std::string>{"data", "empty", "etc", "usr"}));
  EXPECT_EQ(Names(Path("data/sub")), (std::vector<std::string>{"mine"}));
  EXPECT_GT(Path("data/sub"), view_->InodeCount()) << "opaque: not the lower dir";
  EXPECT_EQ(ReadAll(Path("data/a.txt")), "upper a");
  EXPECT_EQ(Names(Path("data")),
            (std::vector<std::string>{"a.txt", "big", "h1", "h2", "sub", "x.txt"}));
}

// ---- upper-node fds: dropped and reopened by name (issue 5) ----------------------------

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST_F(UpperTest, DroppedFdsAreReopenedAfterRenamesOfTheNodeAndItsParent) {
  fs_->SetUpperFdCache(0);  // every fd that can be reopened is closed after each call
  auto a = fs_->Mkdir(kRootIno, "a", 0755, caller_);
  ASSERT_TRUE(a.ok());
  auto b = fs_->Mkdir(a->ino, "b", 0755, caller_);
  ASSERT_TRUE(b.ok());
  auto c = fs_->Create(b->ino, "f", 0644, O_CREAT | O_WRONLY, caller_);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(fs_->Write(*c->handle, 0, Bytes("first")).ok());
  fs_->Release(std::move(c->handle));
  const Ino f = c->entry.ino;
  EXPECT_EQ(fs_->UpperFdCount(), 1u) << "the root only";

  ASSERT_TRUE(fs_->Rename(kRootIno, "a", kRootIno, "a2", 0).ok());  // the grandparent
  EXPECT_EQ(ReadAll(f), "first");
  ASSERT_TRUE(fs_->Rename(b->ino, "f", a->ino, "g", 0).ok());  // the node, to another dir
  WriteAt(f, 5, "+more");
  EXPECT_EQ(ReadAll(f), "first+more");
  ASSERT_TRUE(fs_->SetXattr(f, "user.k", "v", 0).ok());
  auto x = fs_->GetXattr(f, "user.k", 16);
  ASSERT_TRUE(x.ok()) << x.status().message();
  EXPECT_EQ(x->data, "v");
  auto st = fs_->GetAttr(f);
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->st_size, 10);
  EXPECT_EQ(UpperStat("a2/g").st_size, 10);
  // Exchange: each node ends up known by the other's name.
  auto h = fs_->Create(kRootIno, "h", 0644, O_CREAT | O_WRONLY, caller_);
  ASSERT_TRUE(h.ok());
  fs_->Release(std::move(h->handle));
  ASSERT_TRUE(fs_->Rename(a->ino, "g", kRootIno, "h", RENAME_EXCHANGE).ok());
  EXPECT_EQ(ReadAll(f), "first+more");
  EXPECT_EQ(ReadAll(h->entry.ino), "");
  EXPECT_EQ(UpperStat("h").st_size, 10);
  EXPECT_EQ(fs_->UpperFdCount(), 1u);
}

TEST_F(UpperTest, AHardLinkKeepsServingWhenItsKnownNameIsUnlinked) {
  fs_->SetUpperFdCache(0);
  auto c = fs_->Create(kRootIno, "one", 0644, O_CREAT | O_WRONLY, caller_);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(fs_->Write(*c->handle, 0, Bytes("linked")).ok());
  fs_->Release(std::move(c->handle));
  const Ino ino = c->entry.ino;
  auto d = fs_->Mkdir(kRootIno, "d", 0755, caller_);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(fs_->Link(ino, d->ino, "two").ok());
  ASSERT_TRUE(fs_->Rename(d->ino, "two", kRootIno, "three", 0).ok());  // known name: three
  ASSERT_TRUE(fs_->Unlink(kRootIno, "three").ok());  // the name it was known by
  auto st = fs_->GetAttr(ino);
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->st_nlink, 1u);
  EXPECT_EQ(ReadAll(ino), "linked");
  WriteAt(ino, 0, "LINKED");
  EXPECT_EQ(fs_->UpperFdCount(), 2u) << "no name known: its fd is held";
  auto again = fs_->Lookup(kRootIno, "one");  // a name again: the fd may go
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ino, ino);
  EXPECT_EQ(fs_->UpperFdCount(), 1u);
  EXPECT_EQ(ReadAll(ino), "LINKED");
  ASSERT_TRUE(fs_->Unlink(kRootIno, "one").ok());
  st = fs_->GetAttr(ino);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->st_nlink, 0u) << "removed and not open: its last attributes";
  EXPECT_EQ(fs_->UpperFdCount(), 1u);
}

TEST_F(UpperTest, AnOpenUnlinkedFileReportsNlinkZeroWithFdsDropped) {
  fs_->SetUpperFdCache(0);
  auto c = fs_->Create(kRootIno, "gone", 0644, O_CREAT | O_RDWR, caller_);
  ASSERT_TRUE(c.ok());
  const Ino ino = c->entry.ino;
  ASSERT_TRUE(fs_->Unlink(kRootIno, "gone").ok());
  for (const FileHandle* fh : std::vector<const FileHandle*>{c->handle.get(), nullptr}) {
    auto e = fs_->GetEntry(ino, fh);
    ASSERT_TRUE(e.ok()) << e.status().message();
    EXPECT_EQ(e->attr.st_nlink, 0u);
    EXPECT_EQ(e->attr.st_ino, ino);
  }
  ASSERT_TRUE(fs_->Write(*c->handle, 0, Bytes("still here")).ok());
  SetAttrRequest r;
  r.set_mode = true;
  r.mode = 0600;
  auto set = fs_->SetAttr(ino, r, c->handle.get(), caller_);  // fchmod of an unlinked file
  ASSERT_TRUE(set.ok()) << set.status().message();
  EXPECT_EQ(set->st_mode & 07777, 0600u);
  auto st = fs_->GetAttr(ino);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->st_size, 10);
  fs_->Release(std::move(c->handle));
  st = fs_->GetAttr(ino);  // the kernel may still hold it
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->st_nlink, 0u);
  EXPECT_EQ(fs_->UpperFdCount(), 1u);
  const size_t nodes = fs_->NodeCount();
  fs_->Forget(ino, 1);
  EXPECT_EQ(fs_->NodeCount(), nodes - 1);
}

TEST_F(UpperTest, DeepTreesBeyondPathMaxWorkWithFdsDropped) {
  fs_->SetUpperFdCache(0);
  const size_t base = fs_->NodeCount();
  std::vector<Ino> dirs = {kRootIno};
  const std::string name(200, 'd');
  for (int i = 0; i < 30; ++i) {  // ~6 KB of path
    auto d = fs_->Mkdir(dirs.back(), name, 0755, caller_);
    ASSERT_TRUE(d.ok()) << i << ": " << d.status().message();
    dirs.push_back(d->ino);
  }
  auto c = fs_->Create(dirs.back(), "leaf", 0644, O_CREAT | O_WRONLY, caller_);
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_TRUE(fs_->Write(*c->handle, 0, Bytes("deep")).ok());
  fs_->Release(std::move(c->handle));
  EXPECT_EQ(fs_->UpperFdCount(), 1u);
  EXPECT_EQ(ReadAll(c->entry.ino), "deep");
  EXPECT_EQ(Names(dirs.back()), (std::vector<std::string>{"leaf"}));
  ASSERT_TRUE(fs_->Rename(dirs[1], name, kRootIno, "top", 0).ok());  // cut the chain high up
  ASSERT_TRUE(fs_->Rename(dirs.back(), "leaf", dirs[20], "moved", 0).ok());
  EXPECT_EQ(ReadAll(c->entry.ino), "deep");
  ASSERT_TRUE(fs_->SetXattr(dirs.back(), "user.deep", "1", 0).ok());
  ASSERT_TRUE(fs_->Unlink(dirs[20], "moved").ok());
  ASSERT_TRUE(fs_->Rmdir(dirs[29], name).ok());
  EXPECT_EQ(fs_->UpperFdCount(), 1u);
  // The removed directory, still known (a process's cwd): empty, nlink 0, nothing in it.
  auto removed = fs_->GetAttr(dirs.back());
  ASSERT_TRUE(removed.ok()) << removed.status().message();
  EXPECT_EQ(removed->st_nlink, 0u);
  EXPECT_TRUE(Names(dirs.back()).empty());
  EXPECT_EQ(fs_->Lookup(dirs.back(), "x").status().ToErrno(), ENOENT);
  EXPECT_EQ(fs_->Mkdir(dirs.back(), "x", 0755, caller_).status().ToErrno(), ENOENT);
  // Forgotten in any order (parents first here), every node goes once no child names it.
  fs_->Forget(c->entry.ino, 1);
  for (size_t i = 1; i < dirs.size(); ++i) fs_->Forget(dirs[i], 1);
  EXPECT_EQ(fs_->NodeCount(), base);
}

TEST_F(UpperTest, AReopenThatFindsAnotherInodeIsEstaleNeverTheWrongFile) {
  fs_->SetUpperFdCache(0);
  auto d = fs_->Mkdir(kRootIno, "d", 0755, caller_);
  ASSERT_TRUE(d.ok());
  auto c = fs_->Create(d->ino, "f", 0644, O_CREAT | O_WRONLY, caller_);
  ASSERT_TRUE(c.ok());
  fs_->Release(std::move(c->handle));
  // Behind the mount's back (unsupported, but never served wrong): another file at the
  // name, and the directory replaced by a symlink to a directory outside the upper dir.
  ASSERT_TRUE(WriteFileAtomic(upper_ + "/d/f", "other").ok());
  auto st = fs_->GetAttr(c->entry.ino);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(ErrnoOf(st.status()), ESTALE);
  EXPECT_EQ(fs_->Open(c->entry.ino, O_RDONLY).status().ToErrno(), ESTALE);
  ASSERT_EQ(::mkdir((dir_ + "/outside").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/outside/f", "outside").ok());
  ASSERT_EQ(::rename((upper_ + "/d").c_str(), (dir_ + "/d-moved").c_str()), 0);
  ASSERT_EQ(::symlink((dir_ + "/outside").c_str(), (upper_ + "/d").c_str()), 0);
  auto dst = fs_->GetAttr(d->ino);
  ASSERT_FALSE(dst.ok());
  EXPECT_EQ(ErrnoOf(dst.status()), ESTALE);
  EXPECT_EQ(fs_->Create(d->ino, "new", 0644, O_CREAT | O_WRONLY, caller_).status().ToErrno(), ESTALE);
  EXPECT_FALSE(PathExists(dir_ + "/outside/new"));
}

TEST_F(UpperTest, ConcurrentCallsShareASmallFdCache) {
  fs_->SetUpperFdCache(4);
  std::vector<std::thread> threads;
  std::vector<std::string> errors(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto d = fs_->Mkdir(kRootIno, "t" + std::to_string(t), 0755, caller_);
      if (!d.ok()) return void(errors[t] = d.status().message());
      std::vector<Ino> files;
      for (int i = 0; i < 100; ++i) {
        auto c = fs_->Create(d->ino, "f" + std::to_string(i), 0644, O_CREAT | O_WRONLY, caller_);
        if (!c.ok()) return void(errors[t] = c.status().message());
        const std::string text = std::to_string(t * 1000 + i);
        if (!fs_->Write(*c->handle, 0, Bytes(text)).ok()) return void(errors[t] = "write");
        fs_->Release(std::move(c->handle));
        files.push_back(c->entry.ino);
      }
      for (int i = 0; i < 100; i += 2) {
        Status st = fs_->Rename(d->ino, "f" + std::to_string(i), d->ino, "g" + std::to_string(i), 0);
        if (!st.ok()) return void(errors[t] = st.message());
      }
      for (int i = 0; i < 100; ++i) {
        std::vector<uint8_t> buf(16);
        auto n = fs_->Read(files[i], 0, buf);
        const std::string want = std::to_string(t * 1000 + i);
        if (!n.ok() || std::string(buf.begin(), buf.begin() + static_cast<long>(*n)) != want) {
          return void(errors[t] = "read of " + want);
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  EXPECT_LE(fs_->UpperFdCount(), 5u);
  EXPECT_EQ(*ReadFile(upper_ + "/t3/g42"), "3042");
}

TEST_F(UpperTest, TheFdCacheDropsFilesBeforeDirectories) {
  fs_->SetUpperFdCache(1);
  auto d = fs_->Mkdir(kRootIno, "d", 0755, caller_);
  ASSERT_TRUE(d.ok());
  std::vector<Ino> files;
  for (int i = 0; i < 3; ++i) {
    auto c = fs_->Create(d->ino, "f" + std::to_string(i), 0644, O_CREAT | O_WRONLY, caller_);
    ASSERT_TRUE(c.ok());
    fs_->Release(std::move(c->handle));
    files.push_back(c->entry.ino);
  }
  ASSERT_TRUE(fs_->GetAttr(files[2]).ok());  // the most recent use: a file
  EXPECT_EQ(fs_->UpperFdCount(), 2u) << "the root and one cached";
  // The cached one is the directory: a file reopens from its fd, not from the name "d"
  // (moved behind the mount's back here, which only a dropped directory fd would notice).
  ASSERT_EQ(::rename((upper_ + "/d").c_str(), (upper_ + "/elsewhere").c_str()), 0);
  for (Ino f : files) {
    auto st = fs_->GetAttr(f);
    EXPECT_TRUE(st.ok()) << st.status().message();
  }
}

}  // namespace
}  // namespace upper_test
}  // namespace imagefs::fs
