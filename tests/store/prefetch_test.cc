// Prefetch over layers written with a prefetch profile (imagefs's eStargz and zstd:chunked
// writers), with reads counted by a FakeBlobSource under the PreloadBlobSource.

#include "store/prefetch.h"

#include <gtest/gtest.h>

#include "index/layer_writer.h"
#include "tests/index/index_test_util.h"
#include "tests/store/seekable_layer_util.h"
#include "tests/testing/fake_blob_source.h"
#include "util/file.h"

namespace imagefs::store {
namespace prefetch_test {
namespace {

using testing::FakeBlobSource;

class PrefetchTest : public ::testing::TestWithParam<index::SeekableFormat> {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "prefetch-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
    std::string tar = index::test::Dir("etc/");
    for (int i = 0; i < 20; ++i) {
      tar += index::test::File("etc/f" + std::to_string(i), index::test::TextBytes(2000 + i, i));
    }
    tar += index::test::File("big", index::test::RandomBytes(5 << 20, 99));
    tar += index::test::EndOfArchive();
    index::LayerWriteOptions options;
    options.prefetch_paths = {"etc/f7", "etc/f3", "etc/f12"};
    auto blob = test::WriteSeekableBlob(GetParam(), tar, dir_ + "/layer.tar", options, &written_);
    ASSERT_TRUE(blob.ok()) << blob.status().message();
    blob_ = std::move(*blob);
    ChunkStoreOptions so;
    so.dir = dir_ + "/store";
    auto store = ChunkStore::Open(so);
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  std::unique_ptr<index::MergedView> View() {
    auto fake = std::make_unique<FakeBlobSource>(blob_, "layer");
    fake_ = fake.get();
    auto idx = index::OpenLayerIndex(*fake, test::SeekableMediaType(GetParam()), "sha256:layer",
                                     nullptr);
    EXPECT_TRUE(idx.ok()) << idx.status().message();
    if (!idx.ok()) return nullptr;
    EXPECT_GT((*idx)->prefetch_end(), 0u);
    // The manifest's annotation names the same end (a mount preloads it before the index).
    EXPECT_EQ(written_.annotations[std::string(index::kPrefetchEndAnnotation)],
              std::to_string((*idx)->prefetch_end()));
    auto preload = std::make_unique<fetch::PreloadBlobSource>(std::move(fake));
    preload_ = preload.get();
    std::vector<index::ViewLayer> layers;
    layers.push_back({std::move(preload), std::move(*idx)});
    auto view = index::MergedView::Build(std::move(layers));
    EXPECT_TRUE(view.ok());
    fake_->ResetCounters();
    return view.ok() ? std::move(*view) : nullptr;
  }

  std::string dir_;
  std::string blob_;
  index::WrittenLayer written_;
  std::unique_ptr<ChunkStore> store_;
  FakeBlobSource* fake_ = nullptr;
  fetch::PreloadBlobSource* preload_ = nullptr;
};

TEST_P(PrefetchTest, TheProfileFilesComeFirstInProfileOrder) {
  auto view = View();
  ASSERT_NE(view, nullptr);
  std::vector<index::Ino> want;
  for (const char* p : {"etc/f7", "etc/f3", "etc/f12"}) want.push_back(*view->Resolve(p));
  EXPECT_EQ(PrefetchOrder(*view, false), want);
  std::vector<index::Ino> all = PrefetchOrder(*view, true);
  ASSERT_EQ(all.size(), 21u);
  EXPECT_EQ(std::vector<index::Ino>(all.begin(), all.begin() + 3), want);
}

TEST_P(PrefetchTest, OneBatchOfRequestsFetchesTheSetAndARemountFetchesNothing) {
  auto view = View();
  ASSERT_NE(view, nullptr);
  {
    CachedFileReader reader(*view, store_.get(), {});
    auto stats = Prefetch(*view, reader, [&](uint32_t) { return preload_; }, {});
    ASSERT_TRUE(stats.ok()) << stats.status().message();
    EXPECT_EQ(stats->files, 3u);
    EXPECT_EQ(fake_->call_count(), 1u) << "the three files should come in one window";
    reader.Flush();
    // Their bytes are now local: reading them touches nothing.
    fake_->ResetCounters();
    std::vector<uint8_t> buf(4096);
    auto n = reader.Read(*view->Resolve("etc/f3"), 0, buf);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 2003u);
    EXPECT_EQ(fake_->call_count(), 0u);
  }
  auto again = View();
  ASSERT_NE(again, nullptr);
  CachedFileReader reader(*again, store_.get(), {});
  auto stats = Prefetch(*again, reader, [&](uint32_t) { return preload_; }, {});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->files, 0u);
  EXPECT_EQ(stats->skipped, 3u);
  EXPECT_EQ(fake_->call_count(), 0u);
}

TEST_P(PrefetchTest, AllFetchesEveryFileAndStops) {
  auto view = View();
  ASSERT_NE(view, nullptr);
  CachedFileReader reader(*view, store_.get(), {});
  PrefetchOptions options;
  options.all = true;
  options.window = 1 << 20;  // the 5 MiB file is read on its own
  auto stats = Prefetch(*view, reader, [&](uint32_t) { return preload_; }, options);
  ASSERT_TRUE(stats.ok()) << stats.status().message();
  EXPECT_EQ(stats->files, 21u);
  reader.Flush();
  for (index::Ino ino = 1; ino <= view->InodeCount(); ++ino) {
    auto attr = view->Attr(ino);
    if (attr.ok() && S_ISREG(attr->mode)) {
      EXPECT_TRUE(reader.IsCached(ino)) << ino;
    }
  }

  std::atomic<bool> stop{true};
  options.stop = &stop;
  auto fresh = View();
  ASSERT_NE(fresh, nullptr);
  ChunkStoreOptions so;
  so.dir = dir_ + "/store2";
  auto store2 = ChunkStore::Open(so);
  ASSERT_TRUE(store2.ok());
  CachedFileReader reader2(*fresh, store2->get(), {});
  auto none = Prefetch(*fresh, reader2, [&](uint32_t) { return preload_; }, options);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->files, 0u);
}

TEST_P(PrefetchTest, RecordedReadOrderBecomesAProfile) {
  auto view = View();
  ASSERT_NE(view, nullptr);
  CachedFileReader reader(*view, store_.get(), {});
  reader.RecordReadOrder();
  std::vector<uint8_t> buf(100);
  for (const char* p : {"etc/f5", "big", "etc/f5", "etc/f1"}) {
    ASSERT_TRUE(reader.Read(*view->Resolve(p), 0, buf).ok());
  }
  EXPECT_EQ(ProfileText(*view, reader.ReadOrder()), "/etc/f5\n/big\n/etc/f1\n");
}

INSTANTIATE_TEST_SUITE_P(Formats, PrefetchTest,
                         ::testing::Values(index::SeekableFormat::kZstdChunked,
                                           index::SeekableFormat::kEstargz),
                         [](const auto& info) {
                           return info.param == index::SeekableFormat::kEstargz ? "estargz"
                                                                                : "zstd_chunked";
                         });

}  // namespace
}  // namespace prefetch_test
}  // namespace imagefs::store
