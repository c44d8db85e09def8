#include "fetch/streamed_source.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/fake_blob_source.h"

namespace imagefs::fetch {
namespace streamed_source_test {
namespace {

std::string Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

Digest DigestOf(const std::string& data) {
  Sha256 h;
  h.Update(std::string_view(data));
  return h.Finish();
}

class StreamedBlobSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/streamed-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Starts streaming `data`; `fake` is left pointing at the source it reads.
  std::unique_ptr<StreamedBlobSource> Stream(const std::string& data, const Digest& expected,
                                             testing::FakeBlobSource** fake) {
    auto owned = std::make_unique<testing::FakeBlobSource>(data, "registry blob x");
    *fake = owned.get();
    auto started = StreamedBlobSource::Start(std::move(owned), expected, dir_);
    EXPECT_TRUE(started.ok()) << started.status().message();
    return started.ok() ? std::move(*started) : nullptr;
  }

  std::string dir_;
};

TEST_F(StreamedBlobSourceTest, ServesEveryByteAndFetchesEachOnce) {
  const std::string data = Random((37 << 20) + 4321, 1);
  testing::FakeBlobSource* fake = nullptr;
  auto s = Stream(data, DigestOf(data), &fake);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->Size(), data.size());
  // Readers from several threads, in and out of order, while the stream runs.
  std::vector<std::thread> readers;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::vector<uint8_t> buf(300000);
      for (int i = 0; i < 40; ++i) {
        uint64_t off = rng() % data.size();
        auto n = s->ReadAt(off, buf);
        if (!n.ok() || *n != std::min<uint64_t>(buf.size(), data.size() - off) ||
            std::memcmp(buf.data(), data.data() + off, *n) != 0) {
          ++bad;
        }
      }
    });
  }
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0);
  ASSERT_TRUE(s->Wait().ok());
  EXPECT_EQ(s->local_bytes(), data.size());
  EXPECT_EQ(fake->bytes_served(), data.size()) << "a byte was fetched twice";
  // The tail, and reads at and past the end.
  std::vector<uint8_t> tail(100);
  auto n = s->ReadAt(data.size() - 10, tail);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 10u);
  EXPECT_EQ(std::memcmp(tail.data(), data.data() + data.size() - 10, 10), 0);
  EXPECT_EQ(*s->ReadAt(data.size(), tail), 0u);
  // The unnamed file left no name behind.
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
}

TEST_F(StreamedBlobSourceTest, TheLastByteWaitsForTheDigestAndFailsOnAMismatch) {
  const std::string data = Random(3 << 20, 2);
  testing::FakeBlobSource* fake = nullptr;
  auto s = Stream(data, DigestOf("other bytes"), &fake);
  ASSERT_NE(s, nullptr);
  std::vector<uint8_t> buf(data.size());
  auto n = s->ReadAt(0, buf);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kCorruption);
  EXPECT_NE(n.status().message().find("digest mismatch"), std::string::npos)
      << n.status().message();
  EXPECT_NE(n.status().message().find("registry blob x"), std::string::npos);
  EXPECT_EQ(s->Wait().code(), Code::kCorruption);
}

TEST_F(StreamedBlobSourceTest, ASourceErrorReachesReaders) {
  const std::string data = Random(6 << 20, 3);
  auto owned = std::make_unique<testing::FakeBlobSource>(data, "registry blob y");
  owned->FailNextReads(1, Status::Unavailable("registry blob y: connection refused"));
  auto s = StreamedBlobSource::Start(std::move(owned), DigestOf(data), dir_);
  ASSERT_TRUE(s.ok());
  std::vector<uint8_t> buf(10);
  auto n = (*s)->ReadAt(5 << 20, buf);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kUnavailable);
  EXPECT_EQ((*s)->Wait().code(), Code::kUnavailable);
}

TEST_F(StreamedBlobSourceTest, AnUnwritableTempDirIsAnError) {
  auto s = StreamedBlobSource::Start(std::make_unique<testing::FakeBlobSource>("x"), Digest(),
                                     "/proc/version/nope");
  EXPECT_FALSE(s.ok());
}

// A full disk, made with RLIMIT_FSIZE: the copy stops at the limit and the rest is read
// from the source, still correct.
TEST_F(StreamedBlobSourceTest, ALocalWriteFailureFallsBackToTheSource) {
  const std::string data = Random(9 << 20, 4);
  struct rlimit old;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 2 << 20;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  testing::FakeBlobSource* fake = nullptr;
  auto s = Stream(data, DigestOf(data), &fake);
  ASSERT_NE(s, nullptr);
  Status waited = s->Wait();
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(waited.ok()) << waited.message();
  EXPECT_LT(s->local_bytes(), data.size());
  std::vector<uint8_t> buf(data.size());
  auto n = s->ReadAt(0, buf);
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(*n, data.size());
  EXPECT_EQ(std::memcmp(buf.data(), data.data(), data.size()), 0);
}

// A mount's stream (keep_trying) asks again for a window the registry failed to send for a
// reason that may pass, and ends whole; a plain stream fails with the registry's error.
TEST_F(StreamedBlobSourceTest, KeepTryingAsksAgainUntilTheRegistryAnswers) {
  const std::string data = Random(3 << 20, 5);
  for (bool keep_trying : {true, false}) {
    SCOPED_TRACE(keep_trying);
    auto owned = std::make_unique<testing::FakeBlobSource>(data, "registry blob y");
    owned->FailNextReads(2, Status::Unavailable("registry y: connection refused"));
    auto s = StreamedBlobSource::Start(std::move(owned), DigestOf(data), dir_, keep_trying);
    ASSERT_TRUE(s.ok());
    Status st = (*s)->Wait();
    if (keep_trying) {
      EXPECT_TRUE(st.ok()) << st.message();
      std::vector<uint8_t> buf(data.size());
      ASSERT_TRUE((*s)->ReadAt(0, buf).ok());
      EXPECT_EQ(std::string(buf.begin(), buf.end()), data);
    } else {
      EXPECT_EQ(st.code(), Code::kUnavailable);
    }
  }
}

// Cancel ends a stream that keeps trying: a reader waiting for bytes gets kUnavailable.
TEST_F(StreamedBlobSourceTest, CancelEndsAStreamThatKeepsTrying) {
  const std::string data = Random(3 << 20, 6);
  auto owned = std::make_unique<testing::FakeBlobSource>(data, "registry blob z");
  owned->FailNextReads(1000, Status::Timeout("registry z did not answer within 1s"));
  auto s = StreamedBlobSource::Start(std::move(owned), DigestOf(data), dir_, true);
  ASSERT_TRUE(s.ok());
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    (*s)->Cancel();
  });
  std::vector<uint8_t> buf(100);
  auto r = (*s)->ReadAt(0, buf);
  canceller.join();
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_EQ((*s)->Wait().code(), Code::kUnavailable);
}

}  // namespace
}  // namespace streamed_source_test
}  // namespace imagefs::fetch
