// MergedView against the oracle: the same layers applied with GNU tar and the OCI
// whiteout rules by tests/testing/apply-layers.

#include "index/merged_view.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "index/layer_index.h"
#include "index/progress.h"
#include "index/progressive_view.h"
#include "tests/index/index_test_util.h"
#include "util/file.h"

namespace imagefs::index {
namespace merged_view_test {
namespace {

using test::HeaderSpec;
using test::Padded;
using test::TarHeader;

using test::Dir;
using test::Entry;
using test::File;

class MergedViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "merged-view-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  // Writes the layers, opens them (`gzip` compresses every other one) and the oracle.
  void Build(const std::vector<std::string>& tars, bool gzip, bool oracle = true) {
    std::vector<ViewLayer> layers;
    std::string args;
    for (size_t i = 0; i < tars.size(); ++i) {
      std::string path = dir_ + "/layer" + std::to_string(i) + ".tar";
      ASSERT_TRUE(WriteFileAtomic(path, tars[i] + test::EndOfArchive()).ok());
      if (gzip && (i % 2 == 1 || progressive_)) {
        test::Sh("gzip -n " + path, dir_);
        path += ".gz";
      }
      args += " " + path;
      auto source = fetch::OpenFileBlobSource(path);
      ASSERT_TRUE(source.ok()) << source.status().message();
      OpenOptions options;
      if (progressive_) {
        // A snapshot at every 4 KiB span: the view then reads the last one.
        if (!scan_) scan_ = std::make_shared<ImageScan>(tars.size(), std::chrono::milliseconds(0));
        options.observer = scan_->Observer(i);
        options.span_size = 4096;
      }
      auto index = OpenLayerIndex(**source, "application/vnd.oci.image.layer.v1.tar",
                                  "sha256:layer" + std::to_string(i), nullptr, options);
      ASSERT_TRUE(index.ok()) << index.status().message();
      if (progressive_) {
        scan_->Finish(i, Status::Ok(), std::shared_ptr<const LayerIndex>(std::move(*index)));
        index = std::unique_ptr<LayerIndex>(
            std::make_unique<GrowingLayerIndex>(scan_, i, "sha256:layer" + std::to_string(i)));
      }
      layers.push_back({std::move(*source), std::move(*index)});
    }
    if (oracle) test::Sh(std::string(IMAGEFS_SOURCE_DIR) + "/tests/testing/apply-layers " + dir_ +
             "/oracle" + args);
    if (progressive_) {
      auto view = ProgressiveView::Create(std::move(layers), scan_);
      ASSERT_TRUE(view.ok()) << view.status().message();
      view_ = std::move(*view);
      ASSERT_TRUE(view_->WaitComplete().ok());
      return;
    }
    auto view = MergedView::Build(std::move(layers));
    ASSERT_TRUE(view.ok()) << view.status().message();
    view_ = std::move(*view);
  }

  // Every entry of the oracle directory and of the view, compared field by field.
  void ExpectSameAsOracle() {
    const std::string root = dir_ + "/oracle";
    std::set<std::string> oracle_paths;
    std::map<ino_t, Ino> inode_pairs;  // oracle st_ino -> view ino (hard links)
    for (auto it = std::filesystem::recursive_directory_iterator(root);
         it != std::filesystem::recursive_directory_iterator(); ++it) {
      const std::string full = it->path().string();
      const std::string rel = full.substr(root.size() + 1);
      oracle_paths.insert(rel);
      SCOPED_TRACE(rel);
      struct stat st;
      ASSERT_EQ(lstat(full.c_str(), &st), 0);
      auto ino = view_->Resolve(rel);
      ASSERT_TRUE(ino.ok()) << ino.status().message();
      auto attr = view_->Attr(*ino);
      ASSERT_TRUE(attr.ok());
      EXPECT_EQ(attr->mode, st.st_mode);
      EXPECT_EQ(attr->uid, st.st_uid);
      EXPECT_EQ(attr->gid, st.st_gid);
      if (S_ISDIR(st.st_mode)) {
        EXPECT_EQ(attr->nlink, st.st_nlink);
        continue;
      }
      EXPECT_EQ(attr->nlink, st.st_nlink);
      EXPECT_EQ(attr->mtime_sec, st.st_mtim.tv_sec);
      auto [pair, inserted] = inode_pairs.try_emplace(st.st_ino, *ino);
      EXPECT_EQ(pair->second, *ino) << "hard links must share one inode number";
      if (S_ISLNK(st.st_mode)) {
        auto target = view_->ReadLink(*ino);
        ASSERT_TRUE(target.ok());
        EXPECT_EQ(std::string(*target), std::filesystem::read_symlink(full).string());
      } else if (S_ISREG(st.st_mode)) {
        ASSERT_EQ(attr->size, static_cast<uint64_t>(st.st_size));
        std::vector<uint8_t> buf(attr->size + 10);
        auto n = view_->ReadFile(*ino, 0, buf);
        ASSERT_TRUE(n.ok()) << n.status().message();
        buf.resize(*n);
        EXPECT_EQ(std::string(buf.begin(), buf.end()), test::ReadAllOf(full));
      }
    }
    // And nothing more in the view.
    std::set<std::string> view_paths;
    std::function<void(Ino, const std::string&)> walk = [&](Ino dir, const std::string& prefix) {
      ASSERT_TRUE(view_->ForEachChild(dir, [&](std::string_view name, Ino child) {
                        std::string path = prefix + std::string(name);
                        view_paths.insert(path);
                        auto a = view_->Attr(child);
                        if (a.ok() && S_ISDIR(a->mode)) walk(child, path + "/");
                        return true;
                      }).ok());
    };
    walk(kRootIno, "");
    EXPECT_EQ(view_paths, oracle_paths);
  }

  std::string dir_;
  std::unique_ptr<MergedView> view_;
  // Build() scans every layer as gzip with snapshots and serves a ProgressiveView.
  bool progressive_ = false;
  std::shared_ptr<ImageScan> scan_;
};

std::vector<std::string> ThreeLayers() {
  std::string base = Dir("etc/") + File("etc/passwd", "root:x:0:0\n") +
                     File("etc/hostname", "base\n") + Dir("usr/") + Dir("usr/bin/") +
                     File("usr/bin/tool", "#!/bin/sh\necho tool\n", 0755) +
                     Entry("usr/bin/tool2", '1', "", 0755, "usr/bin/tool") +
                     Entry("usr/bin/tool3", '1', "", 0755, "usr/bin/tool") + Dir("var/") +
                     Dir("var/cache/") + File("var/cache/a", "a") + File("var/cache/b", "b") +
                     Dir("gone/") + File("gone/x", "x") + Entry("link", '2', "", 0777, "etc/passwd") +
                     File("replaced", "file\n") + Dir("dir2file/") + File("dir2file/child", "c") +
                     File("home-owned", "u", 0600, 1000) + Dir("keep/") + File("keep/k1", "1");
  std::string mid = File("etc/passwd", "root:x:0:0\nuser:x:1000:1000\n") +
                    File(".wh.gone", "") + File("var/cache/.wh..wh..opq", "") +
                    File("var/cache/new", "new") + File("usr/bin/.wh.tool3", "") +
                    File("dir2file", "now a file\n") + Dir("replaced/") +
                    File("replaced/inner", "inner") + File("keep/k2", "2") +
                    Entry("usr/bin/tool4", '1', "", 0755, "usr/bin/tool");
  std::string top = File("etc/hostname", "top\n") + Dir("gone/") + File("gone/again", "again") +
                    File("keep/.wh.k1", "") + Dir("var/cache/") + File("var/cache/top", "t");
  return {base, mid, top};
}

TEST_F(MergedViewTest, ThreeLayersMatchGnuTarWithWhiteouts) {
  Build(ThreeLayers(), /*gzip=*/false);
  ExpectSameAsOracle();
}

TEST_F(MergedViewTest, MixedTarAndGzipLayersMatchTheOracle) {
  Build(ThreeLayers(), /*gzip=*/true);
  ExpectSameAsOracle();
}

// The same layers scanned as plain gzip with a snapshot at every span, served by the view
// a mount uses while layers are still scanned: once the scans end, the same tree
// (index/progressive_view.h).
TEST_F(MergedViewTest, AProgressiveViewOfScannedGzipLayersMatchesTheOracle) {
  progressive_ = true;
  Build(ThreeLayers(), /*gzip=*/true);
  ExpectSameAsOracle();
  auto tool = view_->Resolve("usr/bin/tool");
  auto tool4 = view_->Resolve("usr/bin/tool4");
  ASSERT_TRUE(tool.ok() && tool4.ok());
  EXPECT_EQ(*tool, *tool4);
  EXPECT_EQ(view_->Attr(*tool)->nlink, 3u);
}

TEST_F(MergedViewTest, WhiteoutsOpaqueDirsAndReplacementsApply) {
  Build(ThreeLayers(), false);
  EXPECT_TRUE(view_->Resolve("gone/x").status().IsNotFound());
  EXPECT_TRUE(view_->Resolve("gone/again").ok());
  EXPECT_TRUE(view_->Resolve("var/cache/a").status().IsNotFound());
  EXPECT_TRUE(view_->Resolve("var/cache/new").ok());
  EXPECT_TRUE(view_->Resolve("var/cache/top").ok());
  EXPECT_TRUE(view_->Resolve("keep/k1").status().IsNotFound());
  EXPECT_TRUE(view_->Resolve("keep/k2").ok());
  auto f = view_->Resolve("dir2file");
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(S_ISREG(view_->Attr(*f)->mode));
  EXPECT_EQ(view_->Resolve("dir2file/child").status().code(),
            Status::FromErrno(ENOTDIR, "").code());
}

TEST_F(MergedViewTest, HardLinksAcrossLayersShareTheInodeAndCountVisibleNames) {
  Build(ThreeLayers(), false);
  auto tool = view_->Resolve("usr/bin/tool");
  auto tool2 = view_->Resolve("usr/bin/tool2");
  auto tool4 = view_->Resolve("usr/bin/tool4");
  ASSERT_TRUE(tool.ok() && tool2.ok() && tool4.ok());
  EXPECT_EQ(*tool, *tool2);
  EXPECT_EQ(*tool, *tool4);
  EXPECT_EQ(view_->Attr(*tool)->nlink, 3u);  // tool, tool2, tool4 (tool3 deleted)
}

TEST_F(MergedViewTest, InodesAreDenseStableAndChildrenSorted) {
  Build(ThreeLayers(), false);
  std::vector<std::string> names;
  ASSERT_TRUE(view_->ForEachChild(kRootIno, [&](std::string_view n, Ino ino) {
                      names.emplace_back(n);
                      EXPECT_GE(ino, 2u);
                      EXPECT_LE(ino, view_->InodeCount());
                      return true;
                    }).ok());
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(*view_->Resolve("/"), kRootIno);
  EXPECT_FALSE(view_->Attr(view_->InodeCount() + 1).ok());
  EXPECT_FALSE(view_->Attr(0).ok());
}

TEST_F(MergedViewTest, AHardLinkToAFileNoLowerLayerHasIsLeftOut) {
  Build({Dir("a/") + File("a/f", "f"), Entry("a/dangling", '1', "", 0644, "a/missing")},
        false, /*oracle=*/false);
  EXPECT_TRUE(view_->Resolve("a/f").ok());
  EXPECT_TRUE(view_->Resolve("a/dangling").status().IsNotFound());
}

TEST_F(MergedViewTest, DotDotInAPathIsRefused) {
  Build({Dir("a/") + File("a/f", "f")}, false);
  EXPECT_FALSE(view_->Resolve("a/../a/f").ok());
}

// The budget: an image of 100,000 files in well under 100 MB of index.
TEST(MergedViewMemoryTest, HundredThousandFilesInTwoLayersFitWellUnder100MB) {
  std::string base, top;
  for (int d = 0; d < 1000; ++d) {
    const std::string dir = "usr/lib/pkg" + std::to_string(d) + "/";
    base += Dir(dir);
    for (int f = 0; f < 100; ++f) {
      base += File(dir + "module_" + std::to_string(f) + ".so", "x");
    }
    if (d % 10 == 0) {  // the upper layer replaces a tenth of the files and deletes some
      top += File(dir + "module_0.so", "y") + File(dir + ".wh.module_1.so", "");
    }
  }
  std::vector<ViewLayer> layers;
  for (const std::string* tar : {&base, &top}) {
    auto source = fetch::MakeMemoryBlobSource(*tar + test::EndOfArchive(), "layer");
    auto index = OpenLayerIndex(*source, "application/vnd.oci.image.layer.v1.tar", "", nullptr);
    ASSERT_TRUE(index.ok()) << index.status().message();
    layers.push_back({std::move(source), std::move(*index)});
  }
  const auto start = std::chrono::steady_clock::now();
  auto view = MergedView::Build(std::move(layers));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                              start).count();
  ASSERT_TRUE(view.ok()) << view.status().message();
  EXPECT_EQ((*view)->InodeCount(), 1u + 2 + 1000 + 100000 - 100);
  const size_t bytes = (*view)->MemoryUsage();
  std::printf("100k files, 2 layers: merged view + indexes %.1f MB, merged in %.0f ms\n",
              bytes / 1e6, ms);
  EXPECT_LT(bytes, 50u << 20);
}

}  // namespace
}  // namespace merged_view_test
}  // namespace imagefs::index
