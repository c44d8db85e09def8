// PreloadBlobSource: a window covering a later Preload is not fetched again, also while it
// is still being fetched (the mount's early preload, started before the layer's index, and
// the prefetch that asks for part of it once the index is open).

#include "fetch/preload_source.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/fake_blob_source.h"

namespace imagefs::fetch {
namespace preload_source_test {
namespace {

using testing::FakeBlobSource;

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 7 + 3);
  return s;
}

// Passes reads to a FakeBlobSource; ReadRanges waits until released.
class GatedSource final : public BlobSource {
 public:
  explicit GatedSource(FakeBlobSource* inner) : inner_(inner) {}
  uint64_t Size() const override { return inner_->Size(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    return inner_->ReadAt(offset, out);
  }
  Status ReadRanges(std::span<const ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override {
    entered.store(true);
    release.get_future().wait();
    return inner_->ReadRanges(ranges, outs);
  }
  std::string Describe() const override { return "gated"; }

  std::atomic<bool> entered{false};
  std::promise<void> release;

 private:
  FakeBlobSource* inner_;
};

TEST(PreloadSourceTest, ARangeInsideTheWindowIsNotFetchedAgain) {
  const std::string data = Pattern(1000);
  auto fake = std::make_unique<FakeBlobSource>(data);
  FakeBlobSource* raw = fake.get();
  PreloadBlobSource preload(std::move(fake));
  ASSERT_TRUE(preload.Preload({0, 600}, 256).ok());
  const size_t calls = raw->call_count();
  ASSERT_TRUE(preload.Preload({100, 400}).ok());
  EXPECT_EQ(raw->call_count(), calls);
  std::vector<uint8_t> out(300);
  ASSERT_EQ(*preload.ReadAt(150, out), 300u);
  EXPECT_EQ(std::string(out.begin(), out.end()), data.substr(150, 300));
  EXPECT_EQ(raw->call_count(), calls);
  // Past the window: fetched.
  ASSERT_TRUE(preload.Preload({500, 400}).ok());
  EXPECT_GT(raw->call_count(), calls);
  ASSERT_EQ(*preload.ReadAt(550, out), 300u);
  EXPECT_EQ(std::string(out.begin(), out.end()), data.substr(550, 300));
}

TEST(PreloadSourceTest, APreloadInsideAWindowBeingFetchedWaitsForIt) {
  const std::string data = Pattern(1000);
  FakeBlobSource fake(data);
  auto gated = std::make_unique<GatedSource>(&fake);
  GatedSource* gate = gated.get();
  PreloadBlobSource preload(std::move(gated));
  auto early = std::async(std::launch::async, [&] { return preload.Preload({0, 800}); });
  while (!gate->entered.load()) std::this_thread::yield();
  auto later = std::async(std::launch::async, [&] { return preload.Preload({200, 300}); });
  EXPECT_EQ(later.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
      << "the covered preload should wait for the window being fetched";
  gate->release.set_value();
  ASSERT_TRUE(early.get().ok());
  ASSERT_TRUE(later.get().ok());
  EXPECT_EQ(fake.call_count(), 1u);
  std::vector<uint8_t> out(300);
  ASSERT_EQ(*preload.ReadAt(200, out), 300u);
  EXPECT_EQ(std::string(out.begin(), out.end()), data.substr(200, 300));
  EXPECT_EQ(fake.call_count(), 1u);
}

// Holds back requests for ranges at or past `from` until released; passes the rest.
class HoldPastSource final : public BlobSource {
 public:
  HoldPastSource(FakeBlobSource* inner, uint64_t from)
      : inner_(inner), from_(from), released_(release_.get_future().share()) {}
  uint64_t Size() const override { return inner_->Size(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    return inner_->ReadAt(offset, out);
  }
  Status ReadRanges(std::span<const ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override {
    if (!ranges.empty() && ranges[0].offset >= from_) released_.wait();
    return inner_->ReadRanges(ranges, outs);
  }
  std::string Describe() const override { return "held"; }
  void Release() { release_.set_value(); }

 private:
  FakeBlobSource* inner_;
  const uint64_t from_;
  std::promise<void> release_;
  std::shared_future<void> released_;
};

// A window arrives by parts: its small first part is served while the rest is still on
// its way, and a read inside a part not yet in waits for it instead of asking again.
TEST(PreloadSourceTest, ReadsInsideAWindowBeingFetchedAreServedByItsParts) {
  const std::string data = Pattern(300 << 10);
  FakeBlobSource fake(data);
  auto held = std::make_unique<HoldPastSource>(&fake, PreloadBlobSource::kHeadPart);
  HoldPastSource* hold = held.get();
  PreloadBlobSource preload(std::move(held));
  auto window = std::async(std::launch::async, [&] { return preload.Preload({0, 300 << 10}, 128 << 10); });
  while (fake.call_count() == 0) std::this_thread::yield();  // the window is on its way
  // The head part (passwd, group: what a start reads first) comes at once.
  std::vector<uint8_t> head(1000);
  ASSERT_EQ(*preload.ReadAt(100, head), head.size());
  EXPECT_EQ(std::string(head.begin(), head.end()), data.substr(100, 1000));
  // A read in a later part waits for it.
  auto later = std::async(std::launch::async, [&] {
    std::vector<uint8_t> out(5000);
    auto n = preload.ReadAt(200 << 10, out);
    return n.ok() ? std::string(out.begin(), out.begin() + *n) : std::string("error");
  });
  EXPECT_EQ(later.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
  hold->Release();
  EXPECT_EQ(later.get(), data.substr(200 << 10, 5000));
  ASSERT_TRUE(window.get().ok());
  // Nothing was asked twice: three parts, no read of its own.
  size_t ranged = 0;
  for (const FakeBlobSource::Call& c : fake.calls()) {
    EXPECT_TRUE(c.ranges);
    ranged += c.ranges ? 1 : 0;
  }
  EXPECT_EQ(ranged, 3u);
}

}  // namespace
}  // namespace preload_source_test
}  // namespace imagefs::fetch
