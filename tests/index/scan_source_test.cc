// OpenOptions::scan_source: a plain gzip or zstd layer is scanned from the source the hook
// returns (a streamed local copy), a tar is not, and a stream that fails its digest leaves
// no index behind.

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "fetch/streamed_source.h"
#include "index/index_cache.h"
#include "index/layer_index.h"
#include "tests/index/index_test_util.h"
#include "tests/testing/fake_blob_source.h"

namespace imagefs::index {
namespace scan_source_test {
namespace {

class ScanSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/scan-source-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::string tar = test::File("a.txt", test::TextBytes(3 << 20, 1)) +
                      test::File("b.bin", test::RandomBytes(5 << 20, 2)) + test::EndOfArchive();
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/layer.tar", tar).ok());
    tar_ = tar;
    gzip_ = test::Sh("gzip -6 -n -c layer.tar", dir_);
    zstd_ = test::Sh("zstd -q -3 -c layer.tar", dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string DigestOf(const std::string& data) {
    Sha256 h;
    h.Update(std::string_view(data));
    return h.Finish().String();
  }

  // Opens `blob` with a scan_source streaming a second copy whose digest is `claimed`;
  // `remote` is the range-read source, `streamed_from` the streamed one.
  Result<std::unique_ptr<LayerIndex>> Open(const std::string& blob, const std::string& claimed,
                                           IndexCache* cache, bool* hook_called,
                                           testing::FakeBlobSource** remote,
                                           testing::FakeBlobSource** streamed_from) {
    remote_ = std::make_unique<testing::FakeBlobSource>(blob, "remote");
    *remote = remote_.get();
    OpenOptions options;
    options.scan_source = [&, blob, claimed]() -> Result<fetch::BlobSource*> {
      *hook_called = true;
      auto inner = std::make_unique<testing::FakeBlobSource>(blob, "streamed");
      *streamed_from = inner.get();
      ASSIGN_OR_RETURN(streamed_, fetch::StreamedBlobSource::Start(
                                      std::move(inner), *Digest::Parse(claimed), dir_));
      return streamed_.get();
    };
    return OpenLayerIndex(*remote_, "application/vnd.oci.image.layer.v1.tar+gzip", claimed,
                          cache, options);
  }

  std::string dir_, tar_, gzip_, zstd_;
  std::unique_ptr<testing::FakeBlobSource> remote_;
  std::unique_ptr<fetch::StreamedBlobSource> streamed_;
};

TEST_F(ScanSourceTest, GzipAndZstdAreScannedFromTheStreamedCopy) {
  for (const std::string* blob : {&gzip_, &zstd_}) {
    bool called = false;
    testing::FakeBlobSource *remote = nullptr, *streamed = nullptr;
    auto index = Open(*blob, DigestOf(*blob), nullptr, &called, &remote, &streamed);
    ASSERT_TRUE(index.ok()) << index.status().message();
    EXPECT_TRUE(called);
    EXPECT_EQ(streamed->bytes_served(), blob->size()) << "the stream reads the blob once";
    // The range-read source answered only the format probes (footer, first bytes).
    EXPECT_LT(remote->bytes_served(), 4096u);
    auto b = (*index)->Lookup((*index)->Root(), "b.bin");
    ASSERT_TRUE(b.ok());
    EXPECT_EQ((*index)->Attr(*b)->size, 5u << 20);
  }
}

TEST_F(ScanSourceTest, ATarIsNotStreamed) {
  bool called = false;
  testing::FakeBlobSource *remote = nullptr, *streamed = nullptr;
  auto index = Open(tar_, DigestOf(tar_), nullptr, &called, &remote, &streamed);
  ASSERT_TRUE(index.ok()) << index.status().message();
  EXPECT_FALSE(called) << "a tar is indexed by its headers alone";
}

TEST_F(ScanSourceTest, AStreamFailingItsDigestLeavesNoCachedIndex) {
  auto cache = MakeDirectoryIndexCache(dir_ + "/indexes");
  bool called = false;
  testing::FakeBlobSource *remote = nullptr, *streamed = nullptr;
  // The layer claims the digest of other bytes: the registry served a corrupt blob.
  const std::string claimed = DigestOf("not this layer");
  auto index = Open(gzip_, claimed, cache.get(), &called, &remote, &streamed);
  ASSERT_FALSE(index.ok());
  EXPECT_EQ(index.status().code(), Code::kCorruption);
  EXPECT_NE(index.status().message().find("digest mismatch"), std::string::npos)
      << index.status().message();
  EXPECT_TRUE(cache->Get(claimed).status().IsNotFound());
}

}  // namespace
}  // namespace scan_source_test
}  // namespace imagefs::index
