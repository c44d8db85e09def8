#include "store/blob_store.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include "util/file.h"

namespace imagefs::store {
namespace blob_store_test {
namespace {

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("/tmp", "blobstore-test-");
    ASSERT_TRUE(dir.ok());
    root_ = *dir;
    auto s = BlobStore::Open(root_);
    ASSERT_TRUE(s.ok()) << s.status().message();
    store_ = std::move(*s);
  }
  void TearDown() override { (void)RemoveAll(root_); }

  size_t TempFiles() {
    size_t n = 0;
    DIR* d = ::opendir((root_ + "/tmp").c_str());
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    return n;
  }

  static std::span<const uint8_t> Bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
  }

  std::string root_;
  std::unique_ptr<BlobStore> store_;
};

TEST_F(BlobStoreTest, CommittedBlobIsVisibleUnderItsDigest) {
  Digest d = Digest::Sha256Of(std::string_view("hello"));
  ASSERT_TRUE(store_->Put(d, "hello").ok());
  EXPECT_TRUE(store_->Has(d));
  EXPECT_EQ(*store_->Get(d), "hello");
  EXPECT_EQ(store_->PathOf(d), root_ + "/blobs/sha256/" + d.hex());
  EXPECT_EQ(TempFiles(), 0u);
}

TEST_F(BlobStoreTest, DigestMismatchLeavesNothingVisible) {
  Digest d = Digest::Sha256Of(std::string_view("hello"));
  auto w = store_->Begin(d, 5);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write(Bytes("jello")).ok());
  Status st = (*w)->Commit();
  EXPECT_EQ(st.code(), Code::kCorruption);
  EXPECT_NE(st.message().find("digest mismatch"), std::string::npos) << st.message();
  w->reset();
  EXPECT_FALSE(store_->Has(d));
  EXPECT_EQ(TempFiles(), 0u);
}

TEST_F(BlobStoreTest, ShortOrLongBlobIsRejected) {
  Digest d = Digest::Sha256Of(std::string_view("hello"));
  {
    auto w = store_->Begin(d, 5);
    ASSERT_TRUE((*w)->Write(Bytes("hel")).ok());
    EXPECT_EQ((*w)->Commit().code(), Code::kCorruption);
  }
  {
    auto w = store_->Begin(d, 5);
    EXPECT_EQ((*w)->Write(Bytes("hello!")).code(), Code::kCorruption);
  }
  EXPECT_FALSE(store_->Has(d));
  EXPECT_EQ(TempFiles(), 0u);
}

TEST_F(BlobStoreTest, AbandonedWriterRemovesItsTempFile) {
  Digest d = Digest::Sha256Of(std::string_view("x"));
  {
    auto w = store_->Begin(d, 1);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(TempFiles(), 1u);
  }
  EXPECT_EQ(TempFiles(), 0u);
}

TEST_F(BlobStoreTest, RemoveUnlinksAndMissingIsFine) {
  std::string bytes = "remove me";
  Digest d = Digest::Sha256Of(bytes);
  ASSERT_TRUE(store_->Put(d, bytes).ok());
  ASSERT_TRUE(store_->Has(d));
  EXPECT_TRUE(store_->Remove(d).ok());
  EXPECT_FALSE(store_->Has(d));
  EXPECT_TRUE(store_->Remove(d).ok());
}

}  // namespace
}  // namespace blob_store_test
}  // namespace imagefs::store
