#include "store/metadata_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>

#include "util/file.h"

namespace imagefs::store {
namespace metadata_store_test {
namespace {

std::string D(char c) { return "sha256:" + std::string(64, c); }

ImageRecord Image(char manifest, char config, std::vector<std::pair<char, int64_t>> layers,
                  int64_t created = 1000) {
  ImageRecord r;
  r.manifest_digest = D(manifest);
  r.config_digest = D(config);
  r.created = created;
  r.pulled = r.last_used = 5000;
  r.config_size = 100;
  r.size = r.config_size;
  r.platform = "linux/amd64";
  r.source = "docker://example.com/app:1";
  for (auto [c, size] : layers) {
    r.layers.push_back({D(c), size});
    r.size += size;
  }
  return r;
}

NameRef TagRef(const std::string& repo, const std::string& tag) { return {repo, tag, "", ""}; }

class MetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("/tmp", "metadata-test-");
    ASSERT_TRUE(dir.ok());
    root_ = *dir;
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    (void)RemoveAll(root_);
  }
  void Reopen() {
    store_.reset();
    auto s = MetadataStore::Open(root_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  std::vector<NameRef> Names() {
    auto n = store_->ListNames();
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return n.ok() ? *n : std::vector<NameRef>{};
  }
  std::string root_;
  std::unique_ptr<MetadataStore> store_;
};

TEST_F(MetadataStoreTest, RecordedImageAndNamesRoundTrip) {
  ImageRecord img = Image('a', 'c', {{'1', 10}, {'2', 20}});
  img.index_digest = D('i');
  ASSERT_TRUE(store_->RecordImage(img, {TagRef("docker.io/library/busybox", "latest"),
                                        {"docker.io/library/busybox", "", D('i'), ""}})
                  .ok());
  auto got = store_->GetImage(D('a'));
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->config_digest, D('c'));
  EXPECT_EQ((*got)->index_digest, D('i'));
  EXPECT_EQ((*got)->size, 130);
  ASSERT_EQ((*got)->layers.size(), 2u);
  EXPECT_EQ((*got)->layers[1].digest, D('2'));
  EXPECT_EQ(*store_->LookupName("docker.io/library/busybox", "latest", ""), D('a'));
  EXPECT_EQ(*store_->LookupName("docker.io/library/busybox", "", D('i')), D('a'));
  EXPECT_TRUE(store_->LookupName("docker.io/library/busybox", "1", "").status().IsNotFound());
  EXPECT_EQ(*store_->LookupDigest(D('c')), std::vector<std::string>{D('a')});
  EXPECT_EQ(*store_->LookupIdPrefix("ccc"), std::vector<std::string>{D('a')});
  EXPECT_TRUE(store_->LookupIdPrefix("ddd")->empty());
}

TEST_F(MetadataStoreTest, SeveralTagsPerImageAndTagOfMissingImageFails) {
  ASSERT_TRUE(store_->RecordImage(Image('a', 'c', {{'1', 10}}), {TagRef("r/x", "1")}).ok());
  ASSERT_TRUE(store_->Tag("r/y", "2", D('a')).ok());
  auto names = *store_->NamesOf(D('a'));
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].String(), "r/x:1");
  EXPECT_EQ(names[1].String(), "r/y:2");
  EXPECT_TRUE(store_->Tag("r/z", "1", D('f')).IsNotFound());
}

TEST_F(MetadataStoreTest, RetagToNewDigestLeavesOldImageDangling) {
  ASSERT_TRUE(store_->RecordImage(Image('a', 'c', {{'1', 10}}, 1000), {TagRef("r/x", "latest")}).ok());
  ASSERT_TRUE(store_->RecordImage(Image('b', 'd', {{'2', 10}}, 2000), {TagRef("r/x", "latest")}).ok());
  EXPECT_EQ(*store_->LookupName("r/x", "latest", ""), D('b'));
  EXPECT_TRUE(store_->NamesOf(D('a'))->empty());
  auto images = *store_->ListImages();
  ASSERT_EQ(images.size(), 2u);
  EXPECT_EQ(images[0].manifest_digest, D('b'));  // newest first
  EXPECT_EQ(images[1].manifest_digest, D('a'));
}

TEST_F(MetadataStoreTest, UntagKeepsImageUntilLastNameThenDeletesWithUnusedBlobs) {
  ASSERT_TRUE(store_->RecordImage(Image('a', 'c', {{'1', 10}, {'2', 20}}),
                                  {TagRef("r/x", "1"), {"r/x", "", D('a'), ""}})
                  .ok());
  ASSERT_TRUE(store_->Tag("r/y", "2", D('a')).ok());
  auto first = store_->RemoveName(TagRef("r/y", "2"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->untagged.size(), 1u);
  EXPECT_TRUE(first->deleted.empty());
  EXPECT_TRUE(first->unused_blobs.empty());
  // The last tag of r/x takes r/x's digest reference with it, and the image goes.
  auto last = store_->RemoveName(TagRef("r/x", "1"));
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  ASSERT_EQ(last->untagged.size(), 2u);
  EXPECT_EQ(last->untagged[0].String(), "r/x:1");
  EXPECT_EQ(last->untagged[1].String(), "r/x@" + D('a'));
  ASSERT_EQ(last->deleted.size(), 1u);
  auto blobs = last->unused_blobs;
  std::sort(blobs.begin(), blobs.end());
  EXPECT_EQ(blobs, (std::vector<std::string>{D('1'), D('2'), D('a'), D('c')}));
  EXPECT_FALSE(store_->GetImage(D('a'))->has_value());
  EXPECT_TRUE(store_->RemoveName(TagRef("r/x", "1")).status().IsNotFound());
}

TEST_F(MetadataStoreTest, SharedLayersCountOnceAndSurviveDeletionOfOneImage) {
  ASSERT_TRUE(store_->RecordImage(Image('a', 'c', {{'1', 1000}, {'2', 20}}), {TagRef("r/x", "1")}).ok());
  ASSERT_TRUE(store_->RecordImage(Image('b', 'd', {{'1', 1000}, {'3', 30}}), {TagRef("r/y", "1")}).ok());
  EXPECT_EQ(*store_->ImagesUsingLayer(D('1')), 2);
  // configs 100 + 100, layers 1000 + 20 + 30 (the shared base once).
  EXPECT_EQ(*store_->DistinctBytes(), 1250);
  auto removal = store_->RemoveName(TagRef("r/x", "1"));
  ASSERT_TRUE(removal.ok());
  auto blobs = removal->unused_blobs;
  std::sort(blobs.begin(), blobs.end());
  EXPECT_EQ(blobs, (std::vector<std::string>{D('2'), D('a'), D('c')}));  // not the shared D('1')
  EXPECT_EQ(*store_->ImagesUsingLayer(D('1')), 1);
  EXPECT_EQ(*store_->DistinctBytes(), 1130);
}

TEST_F(MetadataStoreTest, RemoveByIdRefusesSeveralRepositoriesWithoutForce) {
  ASSERT_TRUE(store_->RecordImage(Image('a', 'c', {{'1', 10}}), {TagRef("r/x", "1")}).ok());
  ASSERT_TRUE(store_->Tag("r/y", "1", D('a')).ok());
  auto refused = store_->RemoveImages({D('a')}, false);
  EXPECT_EQ(refused.status().code(), Code::kAlreadyExists);
  EXPECT_EQ(Names().size(), 2u);  // nothing changed
  auto forced = store_->RemoveImages({D('a')}, true);
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  EXPECT_EQ(forced->untagged.size(), 2u);
  EXPECT_EQ(forced->deleted.size(), 1u);
  EXPECT_TRUE(Names().empty());
  // Two tags in one repository need no force.
  ASSERT_TRUE(store_->RecordImage(Image('b', 'd', {{'1', 10}}), {TagRef("r/x", "1")}).ok());
  ASSERT_TRUE(store_->Tag("r/x", "2", D('b')).ok());
  EXPECT_TRUE(store_->RemoveImages({D('b')}, false).ok());
}

TEST_F(MetadataStoreTest, ReopenKeepsEverything) {
  ASSERT_TRUE(store_->RecordImage(Image('a', 'c', {{'1', 10}}), {TagRef("r/x", "1")}).ok());
  ASSERT_TRUE(store_->RecordImage(Image('b', 'd', {{'1', 10}}), {}).ok());
  ASSERT_TRUE(store_->Touch(D('a'), 9999).ok());
  Reopen();
  auto images = *store_->ListImages();
  ASSERT_EQ(images.size(), 2u);
  EXPECT_EQ(store_->GetImage(D('a'))->value().last_used, 9999);
  EXPECT_EQ(*store_->LookupName("r/x", "1", ""), D('a'));
  EXPECT_EQ(*store_->ImagesUsingLayer(D('1')), 2);
  // The schema version is recorded for later migrations.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((root_ + "/metadata.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), MetadataStore::kSchemaVersion);
  sqlite3_finalize(st);
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_F(MetadataStoreTest, NewerSchemaIsRefused) {
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((root_ + "/metadata.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto s = MetadataStore::Open(root_);
  EXPECT_EQ(s.status().code(), Code::kUnsupported);
}

TEST_F(MetadataStoreTest, FailedTransactionLeavesNoHalfState) {
  ASSERT_TRUE(store_->RecordImage(Image('a', 'c', {{'1', 10}}), {TagRef("r/x", "1")}).ok());
  // The second layer's digest breaks a constraint after the image row, its first layer and
  // nothing else were written: all of it must roll back, and the tag must not move.
  ImageRecord bad = Image('b', 'd', {{'2', 10}});
  bad.layers.push_back({"md5:nope", 1});
  Status st = store_->RecordImage(bad, {TagRef("r/x", "1")});
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(store_->GetImage(D('b'))->has_value());
  EXPECT_EQ(*store_->ImagesUsingLayer(D('2')), 0);
  EXPECT_EQ(*store_->LookupName("r/x", "1", ""), D('a'));
  // A bad name (empty repository) after a good one rolls back the good one too.
  st = store_->RecordImage(Image('e', 'f', {{'3', 10}}), {TagRef("r/z", "1"), TagRef("", "2")});
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(store_->GetImage(D('e'))->has_value());
  EXPECT_TRUE(store_->LookupName("r/z", "1", "").status().IsNotFound());
  // The store still works afterwards.
  EXPECT_TRUE(store_->RecordImage(Image('b', 'd', {{'2', 10}}), {}).ok());
}

}  // namespace
}  // namespace metadata_store_test
}  // namespace imagefs::store
