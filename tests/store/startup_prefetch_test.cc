// Startup prefetch over a zstd:chunked / eStargz layer without a prefetch set: the
// command found through PATH, its ELF closure (interpreter, DT_NEEDED found through
// symlinked lib dirs, RUNPATH with $ORIGIN, libraries of libraries) and its config files
// are fetched before anything reads them; unrelated files are not.

#include "store/startup_prefetch.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "fetch/preload_source.h"
#include "index/layer_writer.h"
#include "tests/index/index_test_util.h"
#include "tests/store/elf_test_util.h"
#include "tests/store/seekable_layer_util.h"
#include "tests/testing/fake_blob_source.h"
#include "util/file.h"

namespace imagefs::store {
namespace startup_prefetch_test {
namespace {

using index::test::Dir;
using index::test::Entry;
using index::test::File;
using testing::FakeBlobSource;

// Each file different (identical bytes would share their cached chunks).
std::string Elf(std::string interp, std::vector<std::string> needed, std::string runpath = "") {
  static size_t serial = 0;
  test::ElfSpec spec;
  spec.interp = std::move(interp);
  spec.needed = std::move(needed);
  spec.runpath = std::move(runpath);
  spec.padding = 3000 + 8 * ++serial;
  return test::BuildElf(spec);
}

class StartupPrefetchTest : public ::testing::TestWithParam<index::SeekableFormat> {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "startup-prefetch-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
    const std::string ld = "/lib64/ld-linux-x86-64.so.2";
    std::string tar;
    tar += Dir("etc/") + File("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    tar += Dir("etc/app/") + File("etc/app/app.conf", "x = 1\n");
    tar += Dir("etc/app/conf.d/") + File("etc/app/conf.d/a.conf", "y = 2\n");
    tar += File("etc/app/huge.dat", index::test::RandomBytes(300 << 10, 1));  // over the cap
    tar += Dir("usr/") + Dir("usr/bin/") + Dir("usr/lib/") + Dir("usr/lib/x86_64-linux-gnu/");
    tar += Entry("lib", '2', "", 0777, "usr/lib");  // merged /usr, as Debian
    tar += Dir("lib64/") + File("lib64/ld-linux-x86-64.so.2", Elf("", {}));
    tar += File("usr/bin/app", Elf(ld, {"libfoo.so.1", "libpriv.so"}, "$ORIGIN/../lib/app"), 0755);
    tar += File("usr/lib/x86_64-linux-gnu/libfoo.so.1.2", Elf("", {"libbar.so.2"}));
    tar += Entry("usr/lib/x86_64-linux-gnu/libfoo.so.1", '2', "", 0777, "libfoo.so.1.2");
    tar += File("usr/lib/x86_64-linux-gnu/libbar.so.2", Elf("", {}));
    tar += Dir("usr/lib/app/") + File("usr/lib/app/libpriv.so", Elf("", {}));
    tar += File("usr/lib/x86_64-linux-gnu/libunused.so.1", Elf("", {}));
    tar += File("usr/bin/other", Elf(ld, {"libunused.so.1"}), 0755);
    tar += File("usr/bin/script", "#!/usr/bin/other\n", 0755);
    tar += File("big", index::test::RandomBytes(2 << 20, 9));
    tar += index::test::EndOfArchive();
    auto blob =
        test::WriteSeekableBlob(GetParam(), tar, dir_ + "/layer.tar", index::LayerWriteOptions{});
    ASSERT_TRUE(blob.ok()) << blob.status().message();
    blob_ = std::move(*blob);
    ChunkStoreOptions so;
    so.dir = dir_ + "/store";
    auto store = ChunkStore::Open(so);
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    auto fake = std::make_unique<FakeBlobSource>(blob_, "layer");
    fake_ = fake.get();
    auto idx =
        index::OpenLayerIndex(*fake, test::SeekableMediaType(GetParam()), "sha256:layer", nullptr);
    ASSERT_TRUE(idx.ok()) << idx.status().message();
    std::vector<index::ViewLayer> layers;
    layers.push_back({std::move(fake), std::move(*idx)});
    auto view = index::MergedView::Build(std::move(layers));
    ASSERT_TRUE(view.ok());
    view_ = std::move(*view);
    reader_ = std::make_unique<CachedFileReader>(*view_, store_.get(), std::vector<bool>{});
  }
  void TearDown() override {
    reader_.reset();
    view_.reset();
    store_.reset();
    (void)RemoveAll(dir_);
  }

  bool Cached(const std::string& path) {
    auto ino = view_->Resolve(path);
    EXPECT_TRUE(ino.ok()) << path;
    return ino.ok() && reader_->IsCached(*ino);
  }

  std::string dir_;
  std::string blob_;
  std::unique_ptr<ChunkStore> store_;
  FakeBlobSource* fake_ = nullptr;
  std::unique_ptr<index::MergedView> view_;
  std::unique_ptr<CachedFileReader> reader_;
};

TEST_P(StartupPrefetchTest, FollowPathResolvesSymlinks) {
  auto found = FollowPath(*view_, "/lib/x86_64-linux-gnu/libfoo.so.1");
  ASSERT_TRUE(found.ok()) << found.status().message();
  EXPECT_EQ(found->second, "/usr/lib/x86_64-linux-gnu/libfoo.so.1.2");
  EXPECT_EQ(found->first, *view_->Resolve("usr/lib/x86_64-linux-gnu/libfoo.so.1.2"));
  auto dotdot = FollowPath(*view_, "/usr/bin/../../lib/app/libpriv.so");
  ASSERT_TRUE(dotdot.ok());
  EXPECT_EQ(dotdot->second, "/usr/lib/app/libpriv.so");
  EXPECT_FALSE(FollowPath(*view_, "/usr/bin/nothing").ok());
  EXPECT_FALSE(FollowPath(*view_, "/etc/passwd/x").ok());
}

TEST_P(StartupPrefetchTest, CommandClosureAndConfigAreFetchedBeforeAnyRead) {
  StartupPrefetcher prefetcher(*view_, *reader_);
  prefetcher.AddCommand("app", "/nowhere:/usr/local/bin:/usr/bin:/bin");
  prefetcher.Wait();
  reader_->Flush();
  for (const char* p :
       {"usr/bin/app", "lib64/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/libfoo.so.1.2",
        "usr/lib/x86_64-linux-gnu/libbar.so.2", "usr/lib/app/libpriv.so", "etc/passwd",
        "etc/app/app.conf", "etc/app/conf.d/a.conf"}) {
    EXPECT_TRUE(Cached(p)) << p;
  }
  for (const char* p :
       {"usr/lib/x86_64-linux-gnu/libunused.so.1", "usr/bin/other", "big", "etc/app/huge.dat"}) {
    EXPECT_FALSE(Cached(p)) << p;
  }
  const StartupPrefetchStats stats = prefetcher.Stats();
  EXPECT_EQ(stats.files, 8u);
  EXPECT_EQ(stats.elf, 5u);
  // Everything the command needs is local: reading it touches the layer no more.
  fake_->ResetCounters();
  std::vector<uint8_t> buf(64 << 10);
  for (const char* p : {"usr/bin/app", "usr/lib/x86_64-linux-gnu/libbar.so.2", "etc/passwd"}) {
    ASSERT_TRUE(reader_->Read(*view_->Resolve(p), 0, buf).ok());
  }
  EXPECT_EQ(fake_->call_count(), 0u);

  // A second prefetcher over the same store finds everything cached.
  StartupPrefetcher again(*view_, *reader_);
  again.AddCommand("/usr/bin/app", "");
  again.Wait();
  EXPECT_EQ(again.Stats().files, 0u);
  EXPECT_GE(again.Stats().skipped, 5u);
  EXPECT_EQ(fake_->call_count(), 0u);
}

TEST_P(StartupPrefetchTest, ObservedElfReadQueuesItsLibraries) {
  StartupPrefetcher prefetcher(*view_, *reader_);
  const index::Ino other = *view_->Resolve("usr/bin/other");
  std::vector<uint8_t> head(4096);
  auto n = reader_->Read(other, 0, head);
  ASSERT_TRUE(n.ok());
  prefetcher.Observe(other, std::span<const uint8_t>(head.data(), *n));
  prefetcher.Wait();
  reader_->Flush();
  EXPECT_TRUE(Cached("usr/lib/x86_64-linux-gnu/libunused.so.1"));
  EXPECT_TRUE(Cached("lib64/ld-linux-x86-64.so.2"));
  EXPECT_FALSE(Cached("usr/lib/x86_64-linux-gnu/libfoo.so.1.2"));
  EXPECT_FALSE(Cached("etc/passwd"));
  // Not an ELF file nor a script: nothing happens.
  const index::Ino passwd = *view_->Resolve("etc/passwd");
  const std::string text = "root:x:0:0";
  prefetcher.Observe(
      passwd, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  prefetcher.Wait();
  EXPECT_FALSE(Cached("etc/passwd"));
}

// The sibling_after-th cold file read in one directory queues the directory's other small
// files, without following their libraries; fewer reads queue nothing.
TEST_P(StartupPrefetchTest, ColdReadsInADirectoryFetchItsOtherSmallFiles) {
  StartupPrefetchOptions two;
  two.sibling_after = 2;
  StartupPrefetcher prefetcher(*view_, *reader_, two);
  const std::string text = "not an ELF file";
  const std::span<const uint8_t> head(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  prefetcher.Observe(*view_->Resolve("usr/bin/script"), head);
  prefetcher.Observe(*view_->Resolve("usr/bin/script"), head);  // the same file again
  prefetcher.Wait();
  reader_->Flush();
  // A read the cache served shows no need to read ahead.
  prefetcher.Observe(*view_->Resolve("usr/bin/app"), head, /*missed=*/false);
  prefetcher.Wait();
  reader_->Flush();
  EXPECT_FALSE(Cached("usr/bin/app"));
  EXPECT_EQ(prefetcher.Stats().dirs, 0u);
  prefetcher.Observe(*view_->Resolve("usr/bin/other"), head);
  prefetcher.Wait();
  reader_->Flush();
  EXPECT_TRUE(Cached("usr/bin/app"));
  EXPECT_TRUE(Cached("usr/bin/script"));
  EXPECT_EQ(prefetcher.Stats().dirs, 1u);
  // app's libraries are not the directory's: not followed.
  EXPECT_FALSE(Cached("usr/lib/app/libpriv.so"));
  EXPECT_FALSE(Cached("usr/lib/x86_64-linux-gnu/libfoo.so.1.2"));

  // Files over the per-file cap stay where they are; so does everything when it is off.
  prefetcher.Observe(*view_->Resolve("etc/app/app.conf"), head);
  prefetcher.Observe(*view_->Resolve("etc/app/conf.d/a.conf"), head);  // another directory
  prefetcher.Wait();
  EXPECT_EQ(prefetcher.Stats().dirs, 1u);
  StartupPrefetchOptions off;
  off.sibling_after = 0;
  StartupPrefetcher quiet(*view_, *reader_, off);
  quiet.Observe(*view_->Resolve("usr/lib/x86_64-linux-gnu/libbar.so.2"), head);
  quiet.Observe(*view_->Resolve("usr/lib/x86_64-linux-gnu/libfoo.so.1.2"), head);
  quiet.Wait();
  reader_->Flush();
  EXPECT_FALSE(Cached("usr/lib/x86_64-linux-gnu/libunused.so.1"));
  StartupPrefetchOptions small = two;
  small.max_sibling_file = 1000;  // the libraries are ~3 KB
  StartupPrefetcher capped(*view_, *reader_, small);
  capped.Observe(*view_->Resolve("usr/lib/x86_64-linux-gnu/libbar.so.2"), head);
  capped.Observe(*view_->Resolve("usr/lib/x86_64-linux-gnu/libfoo.so.1.2"), head);
  capped.Wait();
  reader_->Flush();
  EXPECT_EQ(capped.Stats().dirs, 1u);
  EXPECT_FALSE(Cached("usr/lib/x86_64-linux-gnu/libunused.so.1"));
  // With a preloader, the directory's files go as one range of the layer (here the
  // preloader is not the view's source, so the files are then read one by one).
  std::vector<uint32_t> asked;
  fetch::PreloadBlobSource window(std::make_unique<FakeBlobSource>(blob_, "window"));
  StartupPrefetcher open_dir(*view_, *reader_, two, [&](uint32_t layer) {
    asked.push_back(layer);
    return &window;
  });
  open_dir.Observe(*view_->Resolve("usr/lib/x86_64-linux-gnu/libbar.so.2"), head);
  open_dir.Observe(*view_->Resolve("usr/lib/x86_64-linux-gnu/libfoo.so.1.2"), head);
  open_dir.Wait();
  reader_->Flush();
  EXPECT_TRUE(Cached("usr/lib/x86_64-linux-gnu/libunused.so.1"));
  EXPECT_EQ(asked, std::vector<uint32_t>{0});
  EXPECT_GT(window.preloaded_bytes(), 0u);
  // The default waits for a third cold read.
  StartupPrefetcher defaults(*view_, *reader_);
  defaults.Observe(*view_->Resolve("etc/passwd"), head);
  defaults.Observe(*view_->Resolve("etc/passwd"), head);
  defaults.Wait();
  EXPECT_EQ(defaults.Stats().dirs, 0u);

  // The reader says whether a read had to fetch.
  std::vector<uint8_t> buf(100);
  const index::Ino big = *view_->Resolve("big");
  ASSERT_TRUE(reader_->Read(big, 0, buf).ok());
  EXPECT_TRUE(CachedFileReader::LastReadMissed());
  reader_->Flush();
  ASSERT_TRUE(reader_->Read(big, 0, buf).ok());
  EXPECT_FALSE(CachedFileReader::LastReadMissed());
}

TEST_P(StartupPrefetchTest, ScriptCommandFetchesItsInterpreterAndItsLibraries) {
  StartupPrefetcher prefetcher(*view_, *reader_);
  prefetcher.AddCommand("script", "/usr/bin");
  prefetcher.Wait();
  reader_->Flush();
  EXPECT_TRUE(Cached("usr/bin/script"));
  EXPECT_TRUE(Cached("usr/bin/other"));
  EXPECT_TRUE(Cached("usr/lib/x86_64-linux-gnu/libunused.so.1"));
  EXPECT_FALSE(Cached("usr/bin/app"));
}

TEST_P(StartupPrefetchTest, MissingCommandAndStopAreHarmless) {
  StartupPrefetcher prefetcher(*view_, *reader_);
  prefetcher.AddCommand("nosuch", "/usr/bin:/bin");
  prefetcher.AddCommand("", "/usr/bin");
  prefetcher.Wait();
  EXPECT_FALSE(Cached("usr/bin/app"));
  prefetcher.Stop();
  prefetcher.AddPath("/usr/bin/app");
  prefetcher.Wait();
  EXPECT_FALSE(Cached("usr/bin/app"));
}

INSTANTIATE_TEST_SUITE_P(Formats, StartupPrefetchTest,
                         ::testing::Values(index::SeekableFormat::kZstdChunked,
                                           index::SeekableFormat::kEstargz));

}  // namespace
}  // namespace startup_prefetch_test
}  // namespace imagefs::store
