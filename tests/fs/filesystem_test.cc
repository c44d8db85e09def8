// fs::Filesystem without a mount: a MergedView built from small hand-made tar layers,
// asked what the FUSE callbacks ask.

#include "fs/filesystem.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "index/layer_index.h"
#include "tests/index/index_test_util.h"
#include "tests/testing/fake_blob_source.h"
#include "util/file.h"

namespace imagefs::fs {
namespace filesystem_test {
namespace {

using index::test::HeaderSpec;
using index::test::Padded;
using index::test::PaxHeader;
using index::test::PaxRecord;
using index::test::TarHeader;

using index::test::Dir;
using index::test::Entry;
using index::test::File;

int ErrnoOf(const Status& st) { return st.ToErrno(); }

class FilesystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "fs-filesystem-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
    const std::string big = index::test::RandomBytes(300000, 7);
    big_ = big;
    std::vector<std::string> tars = {
        Dir("bin/") + File("bin/tool", big, 0755) + Entry("bin/sh", '2', "", 0777, "tool") +
            Dir("etc/") + File("etc/passwd", "root:x:0:0\n") + File("etc/old", "old\n") +
            Dir("data/") + File("data/a.txt", "aaaa") + Dir("data/sub/") +
            File("data/sub/deep.txt", "deep", 0600, 1000),
        PaxHeader(PaxRecord("SCHILY.xattr.user.color", "blue") +
                  PaxRecord("SCHILY.xattr.user.size", "large")) +
            File("data/x.txt", "xattrs here") + File("data/h1", "linked\n") +
            Entry("data/h2", '1', "", 0644, "data/h1") + Entry("etc/.wh.old", '0'),
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
    fs_ = std::make_unique<Filesystem>(*view_);
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  Ino Path(const std::string& path) {
    Ino ino = kRootIno;
    size_t pos = 0;
    while (pos < path.size()) {
      size_t slash = path.find('/', pos);
      if (slash == std::string::npos) slash = path.size();
      auto e = fs_->Lookup(ino, path.substr(pos, slash - pos));
      EXPECT_TRUE(e.ok()) << path << ": " << e.status().message();
      if (!e.ok()) return 0;
      ino = e->ino;
      pos = slash + 1;
    }
    return ino;
  }

  std::vector<std::string> Names(Ino dir_ino) {
    auto dir = fs_->OpenDir(dir_ino);
    EXPECT_TRUE(dir.ok());
    std::vector<std::string> names;
    if (!dir.ok()) return names;
    fs_->ReadDir(**dir, 0, [&](const DirHandle::Item& item, uint64_t) {
      names.push_back(item.name);
      return true;
    });
    return names;
  }

  std::string dir_;
  std::string big_;
  std::unique_ptr<index::MergedView> view_;
  std::unique_ptr<Filesystem> fs_;
};

TEST_F(FilesystemTest, RootIsInodeOneAndADirectory) {
  auto st = fs_->GetAttr(kRootIno);
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(S_ISDIR(st->st_mode));
  EXPECT_EQ(st->st_ino, kRootIno);
  EXPECT_EQ(fs_->ParentOf(kRootIno), kRootIno);
}

TEST_F(FilesystemTest, LookupAnswersTheNodeAndStatFieldsAsStatDoes) {
  auto e = fs_->Lookup(Path("bin"), "tool");
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e->attr.st_ino, e->ino);
  EXPECT_EQ(e->attr.st_mode, S_IFREG | 0755u);
  EXPECT_EQ(e->attr.st_size, 300000);
  EXPECT_EQ(e->attr.st_blocks, (300000 + 511) / 512);
  EXPECT_EQ(e->attr.st_blksize, 4096);
  EXPECT_EQ(e->attr.st_nlink, 1u);
  EXPECT_EQ(e->attr.st_mtim.tv_sec, 1700000000);
  EXPECT_EQ(e->attr.st_ctim.tv_sec, 1700000000);

  auto deep = fs_->GetAttr(Path("data/sub/deep.txt"));
  ASSERT_TRUE(deep.ok());
  EXPECT_EQ(deep->st_uid, 1000u);
  EXPECT_EQ(deep->st_gid, 1000u);
  EXPECT_EQ(deep->st_mode, S_IFREG | 0600u);

  auto data = fs_->GetAttr(Path("data"));
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->st_nlink, 3u);  // 2 + one subdirectory
}

TEST_F(FilesystemTest, MissingNamesAreENOENTAndNamesUnderFilesENOTDIR) {
  auto missing = fs_->Lookup(kRootIno, "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(ErrnoOf(missing.status()), ENOENT);
  auto whited_out = fs_->Lookup(Path("etc"), "old");
  ASSERT_FALSE(whited_out.ok());
  EXPECT_EQ(ErrnoOf(whited_out.status()), ENOENT);
  auto under_file = fs_->Lookup(Path("etc/passwd"), "x");
  ASSERT_FALSE(under_file.ok());
  EXPECT_EQ(ErrnoOf(under_file.status()), ENOTDIR);
  auto too_long = fs_->Lookup(kRootIno, std::string(300, 'a'));
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(ErrnoOf(too_long.status()), ENAMETOOLONG);
  auto bad_ino = fs_->GetAttr(view_->InodeCount() + 5);
  EXPECT_FALSE(bad_ino.ok());
}

TEST_F(FilesystemTest, ReadDirListsDotDotDotThenChildrenInNameOrder) {
  EXPECT_EQ(Names(kRootIno), (std::vector<std::string>{".", "..", "bin", "data", "etc"}));
  EXPECT_EQ(Names(Path("data")),
            (std::vector<std::string>{".", "..", "a.txt", "h1", "h2", "sub", "x.txt"}));
  EXPECT_EQ(Names(Path("etc")), (std::vector<std::string>{".", "..", "passwd"}));
}

TEST_F(FilesystemTest, DotDotNamesTheParentDirectory) {
  auto dir = fs_->OpenDir(Path("data/sub"));
  ASSERT_TRUE(dir.ok());
  const auto& items = (*dir)->items();
  ASSERT_GE(items.size(), 2u);
  EXPECT_EQ(items[0].ino, Path("data/sub"));
  EXPECT_EQ(items[1].ino, Path("data"));
  EXPECT_EQ(items[1].mode, static_cast<uint32_t>(S_IFDIR));
}

TEST_F(FilesystemTest, ReadDirResumesAtAnyOffsetItHandedOut) {
  auto dir = fs_->OpenDir(Path("data"));
  ASSERT_TRUE(dir.ok());
  // One entry per call, as a kernel with a tiny buffer would page through it.
  std::vector<std::string> names;
  uint64_t offset = 0;
  for (int calls = 0; calls < 20; ++calls) {
    bool got = false;
    fs_->ReadDir(**dir, offset, [&](const DirHandle::Item& item, uint64_t next) {
      if (got) return false;
      got = true;
      names.push_back(item.name);
      offset = next;
      return true;
    });
    if (!got) break;
  }
  EXPECT_EQ(names, Names(Path("data")));
  // Seeking back to an earlier offset gives the same entries again.
  std::vector<std::string> again;
  fs_->ReadDir(**dir, 3, [&](const DirHandle::Item& item, uint64_t) {
    again.push_back(item.name);
    return true;
  });
  EXPECT_EQ(again, (std::vector<std::string>{"h1", "h2", "sub", "x.txt"}));
}

TEST_F(FilesystemTest, OpenDirOfAFileIsENOTDIR) {
  auto dir = fs_->OpenDir(Path("etc/passwd"));
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(ErrnoOf(dir.status()), ENOTDIR);
}

TEST_F(FilesystemTest, OpenForWritingIsEROFS) {
  const Ino passwd = Path("etc/passwd");
  EXPECT_TRUE(fs_->Open(passwd, O_RDONLY).ok());
  for (int flags : {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_APPEND, O_RDWR | O_CREAT}) {
    auto st = fs_->Open(passwd, flags);
    ASSERT_FALSE(st.ok()) << flags;
    EXPECT_EQ(ErrnoOf(st.status()), EROFS) << flags;
  }
  EXPECT_EQ(ErrnoOf(fs_->Mkdir(kRootIno, "d", 0755, Caller{}).status()), EROFS);
  EXPECT_EQ(ErrnoOf(fs_->Unlink(Path("etc"), "passwd")), EROFS);
  EXPECT_EQ(ErrnoOf(Filesystem::ReadOnly()), EROFS);
}

TEST_F(FilesystemTest, ReadGivesTheFileBytesShortOnlyAtTheEnd) {
  const Ino tool = Path("bin/tool");
  std::vector<uint8_t> buf(1 << 20);
  auto n = fs_->Read(tool, 0, buf);
  ASSERT_TRUE(n.ok()) << n.status().message();
  ASSERT_EQ(*n, big_.size());
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + static_cast<long>(*n)), big_);

  std::vector<uint8_t> mid(4096);
  n = fs_->Read(tool, 123457, mid);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 4096u);
  EXPECT_EQ(std::string(mid.begin(), mid.end()), big_.substr(123457, 4096));

  n = fs_->Read(tool, big_.size() - 10, mid);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 10u);
  n = fs_->Read(tool, big_.size() + 100, mid);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);

  auto of_dir = fs_->Read(Path("data"), 0, mid);
  ASSERT_FALSE(of_dir.ok());
  EXPECT_EQ(ErrnoOf(of_dir.status()), EISDIR);
}

TEST_F(FilesystemTest, ReadLinkGivesTheTargetAndEINVALForOtherNodes) {
  auto target = fs_->ReadLink(Path("bin/sh"));
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(*target, "tool");
  auto st = fs_->GetAttr(Path("bin/sh"));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(S_ISLNK(st->st_mode));
  EXPECT_EQ(st->st_size, 4);
  auto not_link = fs_->ReadLink(Path("etc/passwd"));
  ASSERT_FALSE(not_link.ok());
  EXPECT_EQ(ErrnoOf(not_link.status()), EINVAL);
}

TEST_F(FilesystemTest, HardLinksShareOneInodeAndCountTheirNames) {
  const Ino h1 = Path("data/h1");
  const Ino h2 = Path("data/h2");
  EXPECT_EQ(h1, h2);
  auto st = fs_->GetAttr(h1);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->st_nlink, 2u);
}

TEST_F(FilesystemTest, GetXattrProbesSizeThenFillsAndSaysERANGEWhenTooSmall) {
  const Ino x = Path("data/x.txt");
  auto probe = fs_->GetXattr(x, "user.color", 0);
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  EXPECT_EQ(probe->size, 4u);
  EXPECT_TRUE(probe->data.empty());
  auto full = fs_->GetXattr(x, "user.color", 4);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->data, "blue");
  auto small = fs_->GetXattr(x, "user.size", 3);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(ErrnoOf(small.status()), ERANGE);
  auto missing = fs_->GetXattr(x, "user.nope", 100);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(ErrnoOf(missing.status()), ENODATA);
  auto none = fs_->GetXattr(Path("etc/passwd"), "user.color", 100);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(ErrnoOf(none.status()), ENODATA);
}

TEST_F(FilesystemTest, ListXattrGivesNulTerminatedNames) {
  const Ino x = Path("data/x.txt");
  const std::string want = std::string("user.color\0user.size\0", 21);
  auto probe = fs_->ListXattr(x, 0);
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(probe->size, want.size());
  auto full = fs_->ListXattr(x, 1024);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->data, want);
  auto small = fs_->ListXattr(x, 5);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(ErrnoOf(small.status()), ERANGE);
  auto empty = fs_->ListXattr(Path("etc/passwd"), 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size, 0u);
}

TEST_F(FilesystemTest, StatFsCountsEveryInodeAndHardLinkedBytesOnce) {
  struct statvfs s = fs_->StatFs();
  EXPECT_EQ(s.f_files, view_->InodeCount());
  EXPECT_EQ(s.f_bsize, 4096u);
  EXPECT_EQ(s.f_bfree, 0u);
  EXPECT_NE(s.f_flag & ST_RDONLY, 0u);
  const uint64_t bytes = 300000 + 11 + 4 + 4 + 11 + 7;  // tool passwd a deep x h1 (once)
  EXPECT_EQ(s.f_blocks, (bytes + 4095) / 4096);
  EXPECT_EQ(s.f_namemax, 255u);
}

// A registry that stops answering mid-read: the read fails with EIO (what the FUSE reply
// carries), and the next read succeeds once the source answers again.
TEST(FilesystemFailureTest, AFailingLayerReadIsEIOAndLaterReadsRecover) {
  std::string tar = File("f.txt", "payload bytes") + index::test::EndOfArchive();
  auto fake = std::make_unique<testing::FakeBlobSource>(tar, "layer blob");
  testing::FakeBlobSource* source = fake.get();
  auto idx = index::OpenLayerIndex(*fake, "application/vnd.oci.image.layer.v1.tar",
                                   "sha256:fake", nullptr);
  ASSERT_TRUE(idx.ok()) << idx.status().message();
  std::vector<index::ViewLayer> layers;
  layers.push_back({std::move(fake), std::move(*idx)});
  auto view = index::MergedView::Build(std::move(layers));
  ASSERT_TRUE(view.ok());
  Filesystem fs(**view);
  auto e = fs.Lookup(kRootIno, "f.txt");
  ASSERT_TRUE(e.ok());
  std::vector<uint8_t> buf(64);
  source->FailNextReads(1, Status::Unavailable("registry went away"));
  auto n = fs.Read(e->ino, 0, buf);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().ToErrno(), EIO);
  n = fs.Read(e->ino, 0, buf);
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + static_cast<long>(*n)), "payload bytes");
}

}  // namespace
}  // namespace filesystem_test
}  // namespace imagefs::fs
