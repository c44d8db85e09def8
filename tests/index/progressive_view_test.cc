// ProgressiveView while a plain gzip layer is still being scanned: a file is served once
// the scan has passed it, a name not reached yet and a listing not finished wait, an
// absence the walk order proves is answered at once, a layer out of walk order proves no
// absence, and a scan that fails fails every answer (index/progressive_view.h).

#include "index/progressive_view.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "index/progress.h"
#include "tests/index/index_test_util.h"
#include "util/file.h"

namespace imagefs::index {
namespace progressive_view_test {
namespace {

using test::Dir;
using test::File;

using namespace std::chrono_literals;

// A blob in memory whose reads stop at `gate` until Open(): a stream that stops in the
// middle, which a real registry does not do on demand.
class GatedSource final : public fetch::BlobSource {
 public:
  GatedSource(std::string data, uint64_t gate) : data_(std::move(data)), gate_(gate) {}
  uint64_t Size() const override { return data_.size(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (offset >= data_.size()) return size_t{0};
    size_t n = std::min<uint64_t>(out.size(), data_.size() - offset);
    {
      // Short reads up to the gate, then nothing until it opens.
      std::unique_lock lock(mu_);
      // (The last KiB, where seekable formats keep their footers, is always there.)
      const bool tail = offset + 1024 >= data_.size();
      cv_.wait(lock, [&] { return open_ || tail || offset < gate_; });
      if (!open_ && !tail) n = std::min<uint64_t>(n, gate_ - offset);
    }
    std::memcpy(out.data(), data_.data() + offset, n);
    return n;
  }
  std::string Describe() const override { return "gated blob"; }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  const std::string data_;
  const uint64_t gate_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

class ProgressiveViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "progressive-view-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
  }
  void TearDown() override {
    if (gated_) gated_->Open();
    if (scanning_.valid()) scanning_.wait();
    view_.reset();
    (void)RemoveAll(dir_);
  }

  // Gzips `tar`, starts scanning it through a gate at `gate` compressed bytes (spans of
  // 16 KiB, a snapshot whenever one is wanted) and builds the view once the first
  // snapshot is out.
  void Start(const std::string& tar, uint64_t gate) {
    const std::string path = dir_ + "/layer.tar";
    ASSERT_TRUE(WriteFileAtomic(path, tar + test::EndOfArchive()).ok());
    test::Sh("gzip -n " + path, dir_);
    const std::string gz = test::ReadAllOf(path + ".gz");
    gated_ = std::make_shared<GatedSource>(gz, gate);
    scan_ = std::make_shared<ImageScan>(1, 0ms);
    scanning_ = std::async(std::launch::async, [this] {
      OpenOptions options;
      options.observer = scan_->Observer(0);
      options.span_size = 16 << 10;
      auto index = OpenLayerIndex(*gated_, "application/vnd.oci.image.layer.v1.tar+gzip",
                                  "sha256:progressive", nullptr, options);
      scan_->Finish(0, index.status(),
                    index.ok() ? std::shared_ptr<const LayerIndex>(std::move(*index)) : nullptr);
    });
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
      const uint64_t seen = scan_->version();
      auto state = scan_->State(0);
      if (state.index || !state.error.ok()) break;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no snapshot came";
      scan_->WaitChange(seen, 100ms);
    }
    auto source = fetch::OpenFileBlobSource(path + ".gz");
    ASSERT_TRUE(source.ok());
    std::vector<ViewLayer> layers;
    layers.push_back({std::move(*source), std::make_unique<GrowingLayerIndex>(scan_, 0, "sha256:progressive")});
    auto view = ProgressiveView::Create(std::move(layers), scan_);
    ASSERT_TRUE(view.ok()) << view.status().message();
    view_ = std::move(*view);
  }

  std::string Read(Ino ino) {
    auto attr = view_->Attr(ino);
    EXPECT_TRUE(attr.ok());
    if (!attr.ok()) return "";
    std::vector<uint8_t> buf(attr->size + 1);
    auto n = view_->ReadFile(ino, 0, buf);
    EXPECT_TRUE(n.ok()) << n.status().message();
    return n.ok() ? std::string(buf.begin(), buf.begin() + *n) : "";
  }

  std::vector<std::string> List(Ino dir) {
    std::vector<std::string> names;
    Status st = view_->ForEachChild(dir, [&](std::string_view n, Ino) {
      names.emplace_back(n);
      return true;
    });
    EXPECT_TRUE(st.ok()) << st.message();
    return names;
  }

  std::string dir_;
  std::shared_ptr<GatedSource> gated_;
  std::shared_ptr<ImageScan> scan_;
  std::future<void> scanning_;
  std::unique_ptr<MergedView> view_;
};

// aaa/ first, then 2 MiB that do not compress, then zzz/last: walk order, as Docker writes.
std::string WalkOrderedLayer() {
  return Dir("aaa/") + File("aaa/first", "first\n") + File("aaa/second", "2") + Dir("zzz/") +
         File("zzz/big", test::RandomBytes(2 << 20, 7)) + File("zzz/last", "last\n");
}

TEST_F(ProgressiveViewTest, ServesWhatTheScanHasPassedAndWaitsForTheRest) {
  Start(WalkOrderedLayer(), 256 << 10);
  ASSERT_TRUE(view_->progressive());
  auto first = view_->Resolve("aaa/first");
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_EQ(Read(*first), "first\n");
  // Absent, and proven absent by the walk order (the scan is inside zzz/ already).
  EXPECT_TRUE(view_->Resolve("aaa/missing").status().IsNotFound());
  EXPECT_TRUE(view_->Resolve("abc").status().IsNotFound());
  auto aaa = view_->Resolve("aaa");
  ASSERT_TRUE(aaa.ok());
  EXPECT_EQ(List(*aaa), (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(view_->Attr(*aaa)->nlink, 2u);

  // Not reached yet: these wait.
  auto last = std::async(std::launch::async, [&] { return view_->Resolve("zzz/last"); });
  auto root = std::async(std::launch::async, [&] { return List(kRootIno); });
  auto after = std::async(std::launch::async, [&] { return view_->Resolve("zzz/zzz"); });
  EXPECT_EQ(last.wait_for(300ms), std::future_status::timeout);
  EXPECT_EQ(root.wait_for(0ms), std::future_status::timeout);
  EXPECT_EQ(after.wait_for(0ms), std::future_status::timeout);
  EXPECT_FALSE(scan_->State(0).done);

  gated_->Open();
  auto last_ino = last.get();
  ASSERT_TRUE(last_ino.ok()) << last_ino.status().message();
  EXPECT_EQ(Read(*last_ino), "last\n");
  EXPECT_EQ(root.get(), (std::vector<std::string>{"aaa", "zzz"}));
  EXPECT_TRUE(after.get().status().IsNotFound());
  // Numbers handed out before the end stay.
  EXPECT_EQ(*view_->Resolve("aaa/first"), *first);
  auto big = view_->Resolve("zzz/big");
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(Read(*big), test::RandomBytes(2 << 20, 7));
  ASSERT_TRUE(view_->WaitComplete().ok());
  EXPECT_EQ(view_->InodeCount(), 7u);  // root, aaa, first, second, zzz, big, last
}

TEST_F(ProgressiveViewTest, ALayerOutOfWalkOrderProvesNoAbsenceBeforeItsEnd) {
  // b/ before a/: GNU tar without --sort writes directories in any order.
  Start(Dir("b/") + File("b/x", "x") + Dir("a/") + File("a/y", "y") +
            File("a/big", test::RandomBytes(2 << 20, 9)) + File("a/z", "z"),
        256 << 10);
  auto absent = std::async(std::launch::async, [&] { return view_->Resolve("b/nothing"); });
  auto present = std::async(std::launch::async, [&] { return view_->Resolve("b/x"); });
  EXPECT_EQ(absent.wait_for(300ms), std::future_status::timeout);
  EXPECT_EQ(present.wait_for(0ms), std::future_status::timeout);
  gated_->Open();
  EXPECT_TRUE(absent.get().status().IsNotFound());
  auto x = present.get();
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(Read(*x), "x");
}

TEST_F(ProgressiveViewTest, ALayerInTheBytewiseOrderOfWholePathsProvesAbsencesToo) {
  // What `find | LC_ALL=C sort` feeds tar: "a.b" before "a/first" ('.' < '/').
  Start(Dir("a/") + Dir("a.b/") + File("a.b/f", "f") + File("a/first", "first\n") +
            File("a/zbig", test::RandomBytes(2 << 20, 11)) + File("b", "b"),
        256 << 10);
  EXPECT_FALSE(scan_->State(0).frontier.walk_order);
  EXPECT_TRUE(scan_->State(0).frontier.path_order);
  auto first = view_->Resolve("a/first");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(Read(*first), "first\n");
  EXPECT_TRUE(view_->Resolve("a.b/nothing").status().IsNotFound());
  auto ab = view_->Resolve("a.b");
  ASSERT_TRUE(ab.ok());
  EXPECT_EQ(List(*ab), std::vector<std::string>{"f"});
  auto later = std::async(std::launch::async, [&] { return view_->Resolve("a/missing"); });
  EXPECT_EQ(later.wait_for(300ms), std::future_status::timeout);
  gated_->Open();
  EXPECT_TRUE(later.get().status().IsNotFound());
  EXPECT_EQ(List(kRootIno), (std::vector<std::string>{"a", "a.b", "b"}));
}

TEST_F(ProgressiveViewTest, AScanThatFailsFailsEveryAnswer) {
  std::string tar = WalkOrderedLayer();
  Start(tar, 256 << 10);
  ASSERT_TRUE(view_->Resolve("aaa/first").ok());
  // The end of the stream is cut: the scan fails once it gets there.
  scan_->Finish(0, Status::Corruption("gzip layer sha256:progressive: truncated"), nullptr);
  EXPECT_EQ(view_->Resolve("aaa/first").status().code(), Code::kCorruption);
  EXPECT_EQ(view_->Attr(kRootIno).status().code(), Code::kCorruption);
  Status listed = view_->ForEachChild(kRootIno, [](std::string_view, Ino) { return true; });
  EXPECT_EQ(listed.code(), Code::kCorruption);
}

TEST(WalkOrderTest, ParentsComeBeforeChildrenAndSiblingsByName) {
  EXPECT_LT(CompareWalkOrder("", "a"), 0);
  EXPECT_LT(CompareWalkOrder("a", "a/x"), 0);
  EXPECT_LT(CompareWalkOrder("a/x", "a.b"), 0);  // bytewise "a/x" > "a.b"; walk order not
  EXPECT_LT(CompareWalkOrder("a/.wh.b", "a/b"), 0);
  EXPECT_GT(CompareWalkOrder("b", "a/zzz/zzz"), 0);
  EXPECT_EQ(CompareWalkOrder("usr/bin", "usr/bin"), 0);
  EXPECT_TRUE(PathIsUnder("usr/bin/env", "usr"));
  EXPECT_FALSE(PathIsUnder("usrx/bin", "usr"));
  EXPECT_TRUE(PathIsUnder("usr", ""));
}

TEST(WalkOrderTest, AFrontierPassesWhatEveryOrderStillHeldHasPassed) {
  ScanFrontier f;
  f.last = "a/x";
  EXPECT_TRUE(f.Passed("a/w"));
  EXPECT_FALSE(f.Passed("a.b"));  // before "a/x" bytewise, after it in walk order
  f.walk_order = false;
  EXPECT_TRUE(f.Passed("a.b"));
  EXPECT_FALSE(f.PassedDir("a"));
  f.last = "b";
  EXPECT_TRUE(f.PassedDir("a"));
  EXPECT_FALSE(f.PassedDir(""));  // the root is passed only at the end
  f.path_order = false;
  EXPECT_FALSE(f.Passed("a"));
}

}  // namespace
}  // namespace progressive_view_test
}  // namespace imagefs::index
