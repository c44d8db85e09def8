#include "index/tar_scanner.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <map>

#include "tests/index/index_test_util.h"

namespace imagefs::index {
namespace tar_scanner_test {
namespace {

using test::HeaderSpec;
using test::Sh;

const std::string kLongDir(120, 'd');
const std::string kLongName = kLongDir + "/" + std::string(130, 'f') + ".txt";

class TarScannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "tar-scanner-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
    src_ = dir_ + "/src";
    ASSERT_TRUE(MakeDirs(src_ + "/" + kLongDir).ok());
    ASSERT_TRUE(MakeDirs(src_ + "/sub/inner").ok());
    ASSERT_TRUE(WriteFileAtomic(src_ + "/hello.txt", "hello, world\n").ok());
    ASSERT_TRUE(WriteFileAtomic(src_ + "/" + kLongName, test::TextBytes(3000, 1)).ok());
    ASSERT_TRUE(WriteFileAtomic(src_ + "/sub/inner/data.bin", test::RandomBytes(70000, 2)).ok());
    ASSERT_EQ(::symlink("../hello.txt", (src_ + "/sub/link").c_str()), 0);
    ASSERT_EQ(::link((src_ + "/hello.txt").c_str(), (src_ + "/sub/hard").c_str()), 0);
    ASSERT_EQ(::mkfifo((src_ + "/fifo").c_str(), 0640), 0);
    ASSERT_EQ(::mknod((src_ + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    ASSERT_EQ(::mknod((src_ + "/loop").c_str(), S_IFBLK | 0660, makedev(7, 9)), 0);
    ASSERT_EQ(::chmod((src_ + "/sub/inner").c_str(), 0700), 0);
    ASSERT_EQ(::setxattr((src_ + "/hello.txt").c_str(), "user.comment", "hi there", 8, 0), 0);
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  std::string MakeTar(const std::string& flags) {
    Sh("tar " + flags + " --sort=name --numeric-owner -cf ../out.tar .", src_);
    return test::ReadAllOf(dir_ + "/out.tar");
  }

  static std::map<std::string, TarEntry> ByPath(const std::vector<TarEntry>& entries) {
    std::map<std::string, TarEntry> m;
    for (const auto& e : entries) m[e.path] = e;
    return m;
  }

  // Every entry is what lstat says about the source, and its data is where it says.
  void CheckEntries(const std::string& tar, const std::vector<TarEntry>& entries,
                    bool pax) {
    auto m = ByPath(entries);
    ASSERT_EQ(m.count(""), 1u) << "the ./ entry is the root";
    EXPECT_EQ(m[""].type, TarType::kDirectory);
    for (const std::string rel :
         {"hello.txt", kLongName.c_str(), "sub/inner/data.bin", "sub/link", "sub/hard", "fifo",
          "null", "loop", "sub", "sub/inner", kLongDir.c_str()}) {
      SCOPED_TRACE(rel);
      ASSERT_EQ(m.count(rel), 1u);
      const TarEntry& e = m[rel];
      struct stat st;
      ASSERT_EQ(::lstat((src_ + "/" + rel).c_str(), &st), 0);
      EXPECT_EQ(e.mode, st.st_mode & 07777);
      EXPECT_EQ(e.uid, st.st_uid);
      EXPECT_EQ(e.gid, st.st_gid);
      EXPECT_EQ(e.mtime_sec, st.st_mtim.tv_sec);
      if (pax) {
        EXPECT_EQ(e.mtime_nsec, static_cast<uint32_t>(st.st_mtim.tv_nsec));
      }
      if (rel == "sub/hard") {
        EXPECT_EQ(e.type, TarType::kHardLink);  // tar stores the second name as a link
        EXPECT_EQ(e.linkname, "hello.txt");
        continue;
      }
      switch (st.st_mode & S_IFMT) {
        case S_IFREG: {
          EXPECT_EQ(e.type, TarType::kRegular);
          ASSERT_EQ(e.size, static_cast<uint64_t>(st.st_size));
          EXPECT_EQ(tar.substr(e.data_offset, e.size), test::ReadAllOf(src_ + "/" + rel));
          break;
        }
        case S_IFDIR: EXPECT_EQ(e.type, TarType::kDirectory); break;
        case S_IFLNK:
          EXPECT_EQ(e.type, TarType::kSymlink);
          EXPECT_EQ(e.linkname, "../hello.txt");
          break;
        case S_IFIFO: EXPECT_EQ(e.type, TarType::kFifo); break;
        case S_IFCHR:
          EXPECT_EQ(e.type, TarType::kCharDevice);
          EXPECT_EQ(e.dev_major, 1u);
          EXPECT_EQ(e.dev_minor, 3u);
          break;
        case S_IFBLK:
          EXPECT_EQ(e.type, TarType::kBlockDevice);
          EXPECT_EQ(e.dev_major, 7u);
          EXPECT_EQ(e.dev_minor, 9u);
          break;
      }
      if (e.type != TarType::kRegular) {
        EXPECT_EQ(e.size, 0u);
      }
    }
  }

  std::string dir_;
  std::string src_;
};

TEST_F(TarScannerTest, PaxArchiveFromGnuTarReadsEveryEntryTypeWithDataOffsets) {
  std::string tar = MakeTar("--format=pax --xattrs --xattrs-include='user.*'");
  auto entries = test::ScanTar(tar);
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  CheckEntries(tar, *entries, /*pax=*/true);
  auto m = ByPath(*entries);
  ASSERT_EQ(m["hello.txt"].xattrs.size(), 1u);
  EXPECT_EQ(m["hello.txt"].xattrs[0].first, "user.comment");
  EXPECT_EQ(m["hello.txt"].xattrs[0].second, "hi there");
}

TEST_F(TarScannerTest, GnuArchiveWithLongNamesAndLongLinkTargets) {
  std::string long_target = "../" + std::string(150, 't');
  ASSERT_EQ(::symlink(long_target.c_str(), (src_ + "/longlink").c_str()), 0);
  std::string tar = MakeTar("--format=gnu");
  auto entries = test::ScanTar(tar);
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  CheckEntries(tar, *entries, /*pax=*/false);
  EXPECT_EQ(ByPath(*entries)["longlink"].linkname, long_target);
}

TEST_F(TarScannerTest, UstarArchiveUsesThePrefixField) {
  // ustar fits names up to 255 bytes by splitting them into prefix + name.
  std::string name = std::string(90, 'p') + "/" + std::string(90, 'n');
  ASSERT_TRUE(MakeDirs(src_ + "/" + std::string(90, 'p')).ok());
  ASSERT_TRUE(WriteFileAtomic(src_ + "/" + name, "x").ok());
  ASSERT_TRUE(RemoveAll(src_ + "/" + kLongDir).ok());
  Sh("tar --format=ustar --sort=name --numeric-owner -cf ../out.tar ./" + name + " hello.txt",
     src_);
  std::string tar = test::ReadAllOf(dir_ + "/out.tar");
  auto entries = test::ScanTar(tar);
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  auto m = ByPath(*entries);
  ASSERT_EQ(m.count(name), 1u);
  EXPECT_EQ(tar.substr(m[name].data_offset, 1), "x");
}

TEST_F(TarScannerTest, AnyPieceSizeGivesTheSameEntries) {
  std::string tar = MakeTar("--format=pax");
  auto whole = test::ScanTar(tar);
  ASSERT_TRUE(whole.ok());
  for (size_t piece : {1, 7, 511, 513, 4096}) {
    auto pieces = test::ScanTar(tar, piece);
    ASSERT_TRUE(pieces.ok()) << piece << ": " << pieces.status().message();
    ASSERT_EQ(pieces->size(), whole->size());
    for (size_t i = 0; i < whole->size(); ++i) {
      EXPECT_EQ((*pieces)[i].path, (*whole)[i].path);
      EXPECT_EQ((*pieces)[i].data_offset, (*whole)[i].data_offset);
      EXPECT_EQ((*pieces)[i].header_offset, (*whole)[i].header_offset);
    }
  }
}

TEST_F(TarScannerTest, SkippingFileDataGivesTheSameEntries) {
  std::string tar = MakeTar("--format=pax");
  auto whole = test::ScanTar(tar);
  ASSERT_TRUE(whole.ok());
  std::vector<TarEntry> got;
  TarScanner scanner([&](const TarEntry& e) {
    got.push_back(e);
    return Status::Ok();
  });
  uint64_t pos = 0;
  uint64_t skipped = 0;
  while (pos < tar.size() && !scanner.at_end()) {
    if (uint64_t skip = scanner.SkippableBytes()) {
      ASSERT_TRUE(scanner.Skip(skip).ok());
      pos += skip;
      skipped += skip;
      continue;
    }
    ASSERT_TRUE(scanner.Feed(std::span<const uint8_t>(
                                 reinterpret_cast<const uint8_t*>(tar.data()) + pos, 512))
                    .ok());
    pos += 512;
  }
  ASSERT_TRUE(scanner.Finish().ok());
  EXPECT_GT(skipped, 70000u);
  ASSERT_EQ(got.size(), whole->size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].data_offset, (*whole)[i].data_offset);
}

TEST_F(TarScannerTest, SparseFilesAreUnsupportedInGnuAndPaxFormats) {
  Sh("truncate -s 8M holes && printf tail >> holes && printf head | dd of=holes conv=notrunc "
     "2>/dev/null",
     src_);
  for (const std::string format : {"gnu", "pax"}) {
    SCOPED_TRACE(format);
    std::string tar = MakeTar("-S --format=" + format);
    auto entries = test::ScanTar(tar);
    ASSERT_FALSE(entries.ok());
    EXPECT_EQ(entries.status().code(), Code::kUnsupported);
    EXPECT_NE(entries.status().message().find("sparse"), std::string::npos)
        << entries.status().message();
    EXPECT_NE(entries.status().message().find("holes"), std::string::npos)
        << entries.status().message();
  }
}

TEST(TarScannerHandMadeTest, DotDotEscapingTheRootIsCorruptionNamingTheEntry) {
  std::string tar = test::TarFile("ok.txt", "fine") + test::TarFile("../x", "evil") +
                    test::EndOfArchive();
  auto entries = test::ScanTar(tar);
  ASSERT_FALSE(entries.ok());
  EXPECT_EQ(entries.status().code(), Code::kCorruption);
  EXPECT_NE(entries.status().message().find("\"../x\""), std::string::npos)
      << entries.status().message();

  std::string deep = test::TarFile("a/b/../../../etc/passwd", "evil") + test::EndOfArchive();
  EXPECT_EQ(test::ScanTar(deep).status().code(), Code::kCorruption);

  HeaderSpec link;
  link.name = "innocent";
  link.type = '1';
  link.linkname = "../../etc/shadow";
  EXPECT_EQ(test::ScanTar(test::TarHeader(link) + test::EndOfArchive()).status().code(),
            Code::kCorruption);
}

TEST(TarScannerHandMadeTest, DotDotInsideTheRootIsResolved) {
  std::string tar = test::TarFile("/a/./b/../c//d", "x") + test::EndOfArchive();
  auto entries = test::ScanTar(tar);
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].path, "a/c/d");
}

TEST(TarScannerHandMadeTest, BadChecksumIsCorruption) {
  HeaderSpec h;
  h.name = "file";
  h.size = 3;
  h.bad_checksum = true;
  auto entries = test::ScanTar(test::TarHeader(h) + test::Padded("abc") + test::EndOfArchive());
  ASSERT_FALSE(entries.ok());
  EXPECT_EQ(entries.status().code(), Code::kCorruption);
  EXPECT_NE(entries.status().message().find("checksum"), std::string::npos);
}

TEST(TarScannerHandMadeTest, TruncatedArchiveIsCorruption) {
  std::string tar = test::TarFile("file", std::string(2000, 'a'));
  auto entries = test::ScanTar(tar.substr(0, 1500));
  ASSERT_FALSE(entries.ok());
  EXPECT_EQ(entries.status().code(), Code::kCorruption);
}

TEST(TarScannerHandMadeTest, EndsAtTwoZeroBlocksAndIgnoresWhatFollows) {
  std::string tar = test::TarFile("a", "1") + test::EndOfArchive() + "garbage after the end";
  auto entries = test::ScanTar(tar);
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  EXPECT_EQ(entries->size(), 1u);
}

TEST(TarScannerHandMadeTest, PaxRecordsOverrideTheHeader) {
  std::string records = test::PaxRecord("path", "very/long/" + std::string(200, 'x')) +
                        test::PaxRecord("mtime", "1700000000.123456789") +
                        test::PaxRecord("uid", "4000000") + test::PaxRecord("gid", "77") +
                        test::PaxRecord("uname", "someone") +
                        test::PaxRecord("SCHILY.xattr.security.capability",
                                        std::string("\x01\x00\x00\x02\n=", 6)) +
                        test::PaxRecord("size", "5");
  HeaderSpec h;
  h.name = "short";
  h.size = 5;
  std::string tar = test::PaxHeader(records) + test::TarHeader(h) + test::Padded("12345") +
                    test::PaxHeader(test::PaxRecord("mtime", "-1.5")) +
                    test::TarFile("neg", "") + test::EndOfArchive();
  auto entries = test::ScanTar(tar, 100);
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  ASSERT_EQ(entries->size(), 2u);
  const TarEntry& e = (*entries)[0];
  EXPECT_EQ(e.path, "very/long/" + std::string(200, 'x'));
  EXPECT_EQ(e.mtime_sec, 1700000000);
  EXPECT_EQ(e.mtime_nsec, 123456789u);
  EXPECT_EQ(e.uid, 4000000u);
  EXPECT_EQ(e.gid, 77u);
  EXPECT_EQ(e.uname, "someone");
  ASSERT_EQ(e.xattrs.size(), 1u);
  EXPECT_EQ(e.xattrs[0].first, "security.capability");
  EXPECT_EQ(e.xattrs[0].second, std::string("\x01\x00\x00\x02\n=", 6));
  EXPECT_EQ(tar.substr(e.data_offset, 5), "12345");
  EXPECT_EQ(e.header_offset, 0u) << "the entry starts at its PAX header";
  const TarEntry& neg = (*entries)[1];
  EXPECT_EQ(neg.path, "neg");
  EXPECT_EQ(neg.mtime_sec, -2);
  EXPECT_EQ(neg.mtime_nsec, 500000000u);
}

TEST(TarScannerHandMadeTest, GlobalPaxHeaderAppliesToEveryLaterEntry) {
  std::string tar = test::PaxHeader(test::PaxRecord("uid", "1234"), 'g') +
                    test::TarFile("a", "") + test::TarFile("b", "") + test::EndOfArchive();
  auto entries = test::ScanTar(tar);
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].uid, 1234u);
  EXPECT_EQ((*entries)[1].uid, 1234u);
}

TEST(TarScannerHandMadeTest, Base256SizeIsRead) {
  HeaderSpec h;
  h.name = "big";
  h.size = 3;
  h.base256_size = true;
  auto entries = test::ScanTar(test::TarHeader(h) + test::Padded("abc") + test::EndOfArchive());
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  EXPECT_EQ((*entries)[0].size, 3u);
}

TEST(TarScannerHandMadeTest, BadPaxRecordIsCorruption) {
  std::string tar = test::PaxHeader("99 path=x\n") + test::TarFile("a", "") + test::EndOfArchive();
  EXPECT_EQ(test::ScanTar(tar).status().code(), Code::kCorruption);
}

TEST(NormalizeTarPathTest, Cases) {
  EXPECT_EQ(*NormalizeTarPath("./"), "");
  EXPECT_EQ(*NormalizeTarPath("/"), "");
  EXPECT_EQ(*NormalizeTarPath("./usr//bin/"), "usr/bin");
  EXPECT_EQ(*NormalizeTarPath("///etc/./passwd"), "etc/passwd");
  EXPECT_EQ(*NormalizeTarPath("a/b/.."), "a");
  EXPECT_EQ(NormalizeTarPath("..").status().code(), Code::kCorruption);
  EXPECT_EQ(NormalizeTarPath("/../etc").status().code(), Code::kCorruption);
  EXPECT_EQ(NormalizeTarPath(std::string("a\0b", 3)).status().code(), Code::kCorruption);
}

}  // namespace
}  // namespace tar_scanner_test
}  // namespace imagefs::index
