// CachedFileReader: reads through the chunk store, against layers in memory whose reads
// are counted (FakeBlobSource), so "nothing fetched the second time" is observed, not
// assumed.

#include "store/cached_reader.h"

#include <gtest/gtest.h>

#include <thread>

#include "index/layer_writer.h"
#include "tests/index/index_test_util.h"
#include "tests/testing/fake_blob_source.h"
#include "util/file.h"

namespace imagefs::store {
namespace cached_reader_test {
namespace {

using testing::FakeBlobSource;

constexpr uint64_t kBig = 9 * 1024 * 1024 + 123;  // three 4 MiB chunks, the last short

class CachedReaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto d = MakeTempDir("/tmp", "cached-reader-test-");
    ASSERT_TRUE(d.ok());
    dir_ = new std::string(*d);
    small_ = new std::string(index::test::TextBytes(3000, 1));
    big_ = new std::string(index::test::RandomBytes(kBig, 2));
    const std::string tar = index::test::Dir("etc/") + index::test::File("etc/small", *small_) +
                            index::test::File("big", *big_) +
                            index::test::File("other", index::test::TextBytes(500, 3)) +
                            index::test::EndOfArchive();
    ASSERT_TRUE(WriteFileAtomic(*dir_ + "/layer.tar", tar).ok());
    index::test::Sh("gzip -n -k layer.tar", *dir_);
    gzip_ = new std::string(index::test::ReadAllOf(*dir_ + "/layer.tar.gz"));
    zstd_chunked_ = new std::string;
    auto written = index::WriteSeekableLayer(
        index::SeekableFormat::kZstdChunked, *dir_ + "/layer.tar",
        [](std::span<const uint8_t> data) {
          zstd_chunked_->append(reinterpret_cast<const char*>(data.data()), data.size());
          return Status::Ok();
        },
        {});
    ASSERT_TRUE(written.ok()) << written.status().message();
  }
  static void TearDownTestSuite() { (void)RemoveAll(*dir_); }

  void SetUp() override {
    store_dir_ = *dir_ + "/store-" + std::to_string(counter_++);
    OpenStore();
  }
  void OpenStore() {
    store_.reset();
    ChunkStoreOptions options;
    options.dir = store_dir_;
    auto store = ChunkStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status().message();
    store_ = std::move(*store);
  }

  // A one-layer view over `blob`; *source observes its reads (counters reset after the
  // index is opened, so they count file bytes only).
  std::unique_ptr<index::MergedView> View(const std::string& blob, const std::string& digest,
                                          FakeBlobSource** source) {
    auto owned = std::make_unique<FakeBlobSource>(blob, digest);
    *source = owned.get();
    auto idx = index::OpenLayerIndex(*owned, "application/vnd.oci.image.layer.v1.tar", digest,
                                     nullptr);
    EXPECT_TRUE(idx.ok()) << idx.status().message();
    if (!idx.ok()) return nullptr;
    std::vector<index::ViewLayer> layers;
    layers.push_back({std::move(owned), std::move(*idx)});
    auto view = index::MergedView::Build(std::move(layers));
    EXPECT_TRUE(view.ok());
    (*source)->ResetCounters();
    return view.ok() ? std::move(*view) : nullptr;
  }

  static std::string ReadAll(CachedFileReader& reader, const index::MergedView& view,
                             const std::string& path, size_t piece = 1 << 20) {
    auto ino = view.Resolve(path);
    EXPECT_TRUE(ino.ok()) << path;
    if (!ino.ok()) return "";
    std::string out;
    std::string buf(piece, '\0');
    for (uint64_t off = 0;; off += piece) {
      auto n = reader.Read(*ino, off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), piece));
      EXPECT_TRUE(n.ok()) << n.status().message();
      if (!n.ok() || *n == 0) break;
      out.append(buf, 0, *n);
    }
    return out;
  }

  static std::string* dir_;
  static std::string* small_;
  static std::string* big_;
  static std::string* gzip_;
  static std::string* zstd_chunked_;
  static int counter_;
  std::string store_dir_;
  std::unique_ptr<ChunkStore> store_;
};
std::string* CachedReaderTest::dir_ = nullptr;
std::string* CachedReaderTest::small_ = nullptr;
std::string* CachedReaderTest::big_ = nullptr;
std::string* CachedReaderTest::gzip_ = nullptr;
std::string* CachedReaderTest::zstd_chunked_ = nullptr;
int CachedReaderTest::counter_ = 0;

TEST_F(CachedReaderTest, SecondReadOfAGzipLayerComesFromTheStore) {
  FakeBlobSource* source = nullptr;
  auto view = View(*gzip_, "sha256:gz", &source);
  ASSERT_NE(view, nullptr);
  {
    CachedFileReader reader(*view, store_.get(), {});
    EXPECT_EQ(ReadAll(reader, *view, "etc/small"), *small_);
    EXPECT_EQ(ReadAll(reader, *view, "big", 100000), *big_);
    reader.Flush();
    EXPECT_EQ(reader.Stats().stored_chunks, 4u);  // small + three 4 MiB pieces of big
    EXPECT_GT(source->bytes_served(), 0u);
  }
  EXPECT_EQ(store_->Stats().chunks, 4u);
  EXPECT_EQ(store_->Stats().bytes, small_->size() + big_->size());

  // A new process (store reopened, new view): every byte from the store.
  OpenStore();
  FakeBlobSource* again = nullptr;
  auto view2 = View(*gzip_, "sha256:gz", &again);
  ASSERT_NE(view2, nullptr);
  CachedFileReader reader(*view2, store_.get(), {});
  EXPECT_EQ(ReadAll(reader, *view2, "etc/small"), *small_);
  EXPECT_EQ(ReadAll(reader, *view2, "big", 65536), *big_);
  EXPECT_EQ(again->bytes_served(), 0u);
  EXPECT_EQ(reader.Stats().filled_bytes, 0u);
  EXPECT_EQ(reader.Stats().hit_bytes, small_->size() + big_->size());
}

TEST_F(CachedReaderTest, ConvertedTwinSharesTheChunksOfTheGzipImage) {
  FakeBlobSource* gz_source = nullptr;
  auto gz = View(*gzip_, "sha256:gz", &gz_source);
  ASSERT_NE(gz, nullptr);
  {
    CachedFileReader reader(*gz, store_.get(), {});
    EXPECT_EQ(ReadAll(reader, *gz, "big"), *big_);
    EXPECT_EQ(ReadAll(reader, *gz, "etc/small"), *small_);
  }
  const ChunkStoreStats before = store_->Stats();

  FakeBlobSource* zc_source = nullptr;
  auto zc = View(*zstd_chunked_, "sha256:zc", &zc_source);
  ASSERT_NE(zc, nullptr);
  CachedFileReader reader(*zc, store_.get(), {});
  EXPECT_EQ(ReadAll(reader, *zc, "big"), *big_);
  EXPECT_EQ(ReadAll(reader, *zc, "etc/small"), *small_);
  reader.Flush();
  EXPECT_EQ(zc_source->bytes_served(), 0u) << "the twin's file bytes should come from the store";
  EXPECT_EQ(store_->Stats().chunks, before.chunks);
  EXPECT_EQ(store_->Stats().bytes, before.bytes);

  // A file only the twin has read is stored once more.
  EXPECT_EQ(ReadAll(reader, *zc, "other"), index::test::TextBytes(500, 3));
  reader.Flush();
  EXPECT_EQ(store_->Stats().chunks, before.chunks + 1);
}

TEST_F(CachedReaderTest, ConcurrentReadsOfOneMissingChunkMakeOneFetch) {
  FakeBlobSource* source = nullptr;
  auto view = View(*zstd_chunked_, "sha256:zc", &source);
  ASSERT_NE(view, nullptr);
  CachedFileReader reader(*view, store_.get(), {});
  auto ino = view->Resolve("etc/small");
  ASSERT_TRUE(ino.ok());
  std::vector<std::thread> threads;
  std::vector<std::string> got(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] { got[t] = ReadAll(reader, *view, "etc/small"); });
  }
  for (auto& t : threads) t.join();
  for (const std::string& g : got) EXPECT_EQ(g, *small_);
  EXPECT_EQ(source->call_count(), 1u);
}

TEST_F(CachedReaderTest, CorruptBytesAreNeitherServedNorStored) {
  FakeBlobSource* source = nullptr;
  auto view = View(*zstd_chunked_, "sha256:zc", &source);
  ASSERT_NE(view, nullptr);
  auto ino = view->Resolve("etc/small");
  ASSERT_TRUE(ino.ok());
  auto origin = view->OriginOf(*ino);
  ASSERT_TRUE(origin.ok());
  auto chunks = view->layers()[0].index->Chunks(origin->node);
  ASSERT_FALSE(chunks.empty());
  source->FlipByte(chunks[0].blob_offset + chunks[0].blob_length / 2, 0x01);
  CachedFileReader reader(*view, store_.get(), {});
  std::string buf(4096, '\0');
  auto n = reader.Read(*ino, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), buf.size()));
  EXPECT_FALSE(n.ok());
  reader.Flush();
  EXPECT_EQ(store_->Stats().chunks, 0u);
}

TEST_F(CachedReaderTest, LayersLeftOutAreReadDirectly) {
  FakeBlobSource* source = nullptr;
  auto view = View(*gzip_, "sha256:gz", &source);
  ASSERT_NE(view, nullptr);
  CachedFileReader reader(*view, store_.get(), {false});
  EXPECT_EQ(ReadAll(reader, *view, "etc/small"), *small_);
  reader.Flush();
  EXPECT_EQ(store_->Stats().chunks, 0u);
  EXPECT_EQ(reader.Stats().uncached_bytes, small_->size());
}

TEST_F(CachedReaderTest, StoreSharedByTwoProcessesKeepsTheOthersWip) {
  // A writer of another live process (this test's parent pid stands in) keeps its wip file.
  const std::string wip = store_dir_ + "/wip/" + std::string(64, 'a') + "." +
                          std::to_string(::getppid()) + ".0";
  const std::string dead = store_dir_ + "/wip/" + std::string(64, 'b') + ".999999999.0";
  ASSERT_TRUE(WriteFileAtomic(wip, "x").ok());
  ASSERT_TRUE(WriteFileAtomic(dead, "x").ok());
  OpenStore();
  EXPECT_TRUE(PathExists(wip));
  EXPECT_FALSE(PathExists(dead));
}

}  // namespace
}  // namespace cached_reader_test
}  // namespace imagefs::store
