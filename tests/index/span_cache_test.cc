// SpanCache: LRU by decoded bytes; through MergedView, the files of one gzip span are read
// with one fetch and one decode of that span, and a pulled gzip file read in FUSE-sized
// pieces decodes each span once.

#include "index/span_cache.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "index/merged_view.h"
#include "tests/index/index_test_util.h"
#include "tests/testing/fake_blob_source.h"

namespace imagefs::index {
namespace span_cache_test {
namespace {

SpanCache::Span Bytes(size_t n) { return std::make_shared<const std::vector<uint8_t>>(n); }

TEST(SpanCacheTest, EvictsTheLeastRecentlyUsedBeyondItsCapacity) {
  SpanCache cache(10);
  cache.Put(0, 0, Bytes(4));
  cache.Put(0, 100, Bytes(4));
  ASSERT_NE(cache.Get(0, 0), nullptr);  // now the most recent
  cache.Put(1, 0, Bytes(4));            // 12 > 10: (0, 100) goes
  EXPECT_EQ(cache.Get(0, 100), nullptr);
  EXPECT_NE(cache.Get(0, 0), nullptr);
  EXPECT_NE(cache.Get(1, 0), nullptr);
  cache.Put(2, 0, Bytes(11));  // larger than the whole cache: not kept
  EXPECT_EQ(cache.Get(2, 0), nullptr);
  EXPECT_EQ(cache.hits(), 3u);
  EXPECT_EQ(cache.misses(), 2u);
}

class SpanCacheViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/span-cache-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // 200 small files (~2.5 MB of text, one or two spans), then one 9 MiB file.
    std::string tar;
    for (int i = 0; i < 200; ++i) {
      char name[32];
      std::snprintf(name, sizeof(name), "small/f%03d.txt", i);
      tar += test::File(name, test::TextBytes(12000 + i, i));
    }
    tar += test::File("big.bin", test::RandomBytes(9 << 20, 7)) + test::EndOfArchive();
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/layer.tar", tar).ok());
    tar_ = tar;
    gzip_ = test::Sh("gzip -6 -n -c layer.tar", dir_);
    auto source = std::make_unique<testing::FakeBlobSource>(gzip_, "layer");
    source_ = source.get();
    auto index = OpenLayerIndex(*source, "application/vnd.oci.image.layer.v1.tar+gzip",
                                "", nullptr);
    ASSERT_TRUE(index.ok()) << index.status().message();
    std::vector<ViewLayer> layers;
    layers.push_back({std::move(source), std::move(*index)});
    auto view = MergedView::Build(std::move(layers));
    ASSERT_TRUE(view.ok()) << view.status().message();
    view_ = std::move(*view);
    source_->ResetCounters();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Read(const std::string& dir, const std::string& name, size_t piece) {
    Ino d = kRootIno;
    if (!dir.empty()) d = *view_->Lookup(d, dir);
    auto ino = view_->Lookup(d, name);
    EXPECT_TRUE(ino.ok()) << name;
    std::string out;
    std::vector<uint8_t> buf(piece);
    for (;;) {
      auto n = view_->ReadFile(*ino, out.size(), buf);
      EXPECT_TRUE(n.ok()) << n.status().message();
      if (!n.ok() || *n == 0) break;
      out.append(reinterpret_cast<const char*>(buf.data()), *n);
    }
    return out;
  }

  std::string dir_, tar_, gzip_;
  testing::FakeBlobSource* source_ = nullptr;
  std::unique_ptr<MergedView> view_;
};

TEST_F(SpanCacheViewTest, EachSpanIsFetchedOnceForAllItsFiles) {
  for (int i = 0; i < 200; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "f%03d.txt", i);
    ASSERT_EQ(Read("small", name, 1 << 20), test::TextBytes(12000 + i, i)) << name;
  }
  // The small files lie in the first span or two: without the cache every file fetched
  // its span again (200 × ~1 MB).
  EXPECT_LT(source_->bytes_served(), gzip_.size()) << "spans were fetched again";
}

TEST_F(SpanCacheViewTest, AFileReadInSmallPiecesDecodesEachSpanOnce) {
  ASSERT_EQ(Read("", "big.bin", 128 << 10), test::RandomBytes(9 << 20, 7));
  // 9 MiB of random data in 4 MiB spans: three or four spans, each fetched once, where
  // 128 KiB reads used to fetch a span per read (72 reads).
  EXPECT_LE(source_->bytes_served(), gzip_.size());
  EXPECT_LE(source_->call_count(), 5u);
}

}  // namespace
}  // namespace span_cache_test
}  // namespace imagefs::index
