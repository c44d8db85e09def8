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

}  // namespace
}  // namespace preload_source_test
}  // namespace imagefs::fetch
