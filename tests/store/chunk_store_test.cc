#include "store/chunk_store.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <thread>

#include "util/file.h"
#include "util/single_flight.h"

namespace imagefs::store {
namespace chunk_store_test {
namespace {

std::string Bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

std::span<const uint8_t> Span(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

Digest D(const std::string& s) { return Digest::Sha256Of(std::string_view(s)); }

class ChunkStoreTest : public ::testing::TestWithParam<IoEngine> {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "chunkstore-test-");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  std::unique_ptr<ChunkStore> Open(uint64_t capacity = 1ull << 30) {
    ChunkStoreOptions o;
    o.dir = dir_;
    o.capacity_bytes = capacity;
    o.io = GetParam();
    auto s = ChunkStore::Open(o);
    EXPECT_TRUE(s.ok()) << s.status().message();
    return s.ok() ? std::move(*s) : nullptr;
  }

  int WipFiles() {
    int n = 0;
    DIR* d = ::opendir((dir_ + "/wip").c_str());
    while (struct dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
    return n;
  }

  std::string dir_;
};

TEST_P(ChunkStoreTest, PutThenGetAndPartialRead) {
  auto s = Open();
  std::string a = Bytes(100000, 1);
  ASSERT_TRUE(s->Put(D(a), Span(a)).ok());
  EXPECT_TRUE(s->Contains(D(a)));
  EXPECT_EQ(*s->Get(D(a)), a);
  std::string part(10, '\0');
  auto n = s->Read(D(a), 99995, std::span<uint8_t>(reinterpret_cast<uint8_t*>(part.data()), part.size()));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 5u);
  EXPECT_EQ(part.substr(0, 5), a.substr(99995));
  EXPECT_TRUE(s->Get(D("missing")).status().IsNotFound());
  EXPECT_EQ(s->Stats().chunks, 1u);
  EXPECT_EQ(s->Stats().bytes, 100000u);
}

TEST_P(ChunkStoreTest, IdenticalBytesAreStoredOnce) {
  auto s = Open();
  std::string a = Bytes(5000, 2);
  ASSERT_TRUE(s->Put(D(a), Span(a)).ok());
  ASSERT_TRUE(s->Put(D(a), Span(a)).ok());
  EXPECT_EQ(s->Stats().chunks, 1u);
  EXPECT_EQ(s->Stats().bytes, 5000u);
}

TEST_P(ChunkStoreTest, WrongDigestNeverBecomesVisible) {
  auto s = Open();
  std::string a = Bytes(5000, 3);
  std::string b = Bytes(5000, 4);
  Status st = s->Put(D(a), Span(b));
  EXPECT_EQ(st.code(), Code::kCorruption);
  EXPECT_FALSE(s->Contains(D(a)));
  EXPECT_FALSE(PathExists(dir_ + "/sha256/" + D(a).hex().substr(0, 2) + "/" + D(a).hex()));
  EXPECT_EQ(WipFiles(), 0);
}

TEST_P(ChunkStoreTest, EvictsLeastRecentlyUsedPastTheBound) {
  auto s = Open(3000);
  std::string c1 = Bytes(1000, 11), c2 = Bytes(1000, 12), c3 = Bytes(1000, 13), c4 = Bytes(1000, 14);
  ASSERT_TRUE(s->Put(D(c1), Span(c1)).ok());
  ASSERT_TRUE(s->Put(D(c2), Span(c2)).ok());
  ASSERT_TRUE(s->Put(D(c3), Span(c3)).ok());
  ASSERT_TRUE(s->Get(D(c1)).ok());  // c2 is now the least recently used
  ASSERT_TRUE(s->Put(D(c4), Span(c4)).ok());
  EXPECT_TRUE(s->Contains(D(c1)));
  EXPECT_FALSE(s->Contains(D(c2)));
  EXPECT_TRUE(s->Contains(D(c3)));
  EXPECT_TRUE(s->Contains(D(c4)));
  EXPECT_EQ(s->Stats().bytes, 3000u);
  EXPECT_EQ(s->Stats().evictions, 1u);
}

TEST_P(ChunkStoreTest, PinnedChunksAreNotEvicted) {
  auto s = Open(2000);
  std::string c1 = Bytes(1000, 21), c2 = Bytes(1000, 22), c3 = Bytes(1000, 23);
  ASSERT_TRUE(s->Put(D(c1), Span(c1)).ok());
  auto pin = s->Pin(D(c1));
  ASSERT_TRUE(pin.ok());
  ASSERT_TRUE(s->Put(D(c2), Span(c2)).ok());
  ASSERT_TRUE(s->Put(D(c3), Span(c3)).ok());
  EXPECT_TRUE(s->Contains(D(c1)));  // oldest, but pinned
  EXPECT_FALSE(s->Contains(D(c2)));
  EXPECT_EQ(s->Remove(D(c1)).code(), Code::kPermissionDenied);
  *pin = ChunkPin();  // unpinning lets the bound apply again
  ASSERT_TRUE(s->Put(D(c2), Span(c2)).ok());
  EXPECT_LE(s->Stats().bytes, 2000u);
}

TEST_P(ChunkStoreTest, ReopenKeepsChunksAndDropsUnfinishedWrites) {
  std::string a = Bytes(4000, 31);
  {
    auto s = Open();
    ASSERT_TRUE(s->Put(D(a), Span(a)).ok());
  }
  // What a writer killed mid-chunk leaves behind: a partial file in wip/, named with the
  // pid of a process that is gone.
  pid_t dead = ::fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/wip/" + D(Bytes(10, 32)).hex() + "." + std::to_string(dead) + ".0",
                              Bytes(5, 33)).ok());
  EXPECT_EQ(WipFiles(), 1);
  auto s = Open();
  EXPECT_EQ(WipFiles(), 0);
  EXPECT_EQ(*s->Get(D(a)), a);
  EXPECT_EQ(s->Stats().chunks, 1u);
}

// A child forked after its parent used the store writes through its own io_uring ring:
// sharing the parent's (the queues are shared memory) mixed up completions, so a chunk
// could be renamed into place before its bytes were written.
TEST_P(ChunkStoreTest, AForkedChildWritesThroughItsOwnRing) {
  auto parent = Open();
  ASSERT_NE(parent, nullptr);
  std::string a = Bytes(64 << 10, 41);
  ASSERT_TRUE(parent->Put(D(a), Span(a)).ok());
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto child = Open();
    int bad = 0;
    for (uint64_t i = 0; i < 200; ++i) {
      std::string c = Bytes(64 << 10, 5000 + i);
      if (!child->Put(D(c), Span(c)).ok()) ++bad;
      auto back = child->Get(D(c));
      if (!back.ok() || *back != c) ++bad;
    }
    ::_exit(bad == 0 ? 0 : 1);
  }
  // The parent keeps using its ring meanwhile.
  for (uint64_t i = 0; i < 200; ++i) {
    std::string c = Bytes(64 << 10, 9000 + i);
    ASSERT_TRUE(parent->Put(D(c), Span(c)).ok());
    auto back = parent->Get(D(c));
    ASSERT_TRUE(back.ok());
    ASSERT_EQ(*back, c);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// A writer process is killed with SIGKILL at random moments; every chunk visible after a
// reopen must be whole and match its name.
TEST_P(ChunkStoreTest, KillNineAtRandomPointsLeavesOnlyValidChunks) {
  std::mt19937 rng(7);
  for (int round = 0; round < 8; ++round) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ChunkStoreOptions o;
      o.dir = dir_;
      o.capacity_bytes = 64 << 20;
      o.io = GetParam();
      auto s = ChunkStore::Open(o);
      if (!s.ok()) ::_exit(3);
      for (uint64_t i = 0;; ++i) {
        std::string c = Bytes(64 << 10, static_cast<uint64_t>(round) * 100000 + i);
        (void)(*s)->Put(D(c), Span(c));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 80));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    auto s = Open(64 << 20);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(WipFiles(), 0);
    std::string base = dir_ + "/sha256";
    DIR* top = ::opendir(base.c_str());
    int checked = 0;
    while (struct dirent* d = ::readdir(top)) {
      if (d->d_name[0] == '.') continue;
      DIR* in = ::opendir((base + "/" + d->d_name).c_str());
      while (struct dirent* f = ::readdir(in)) {
        if (f->d_name[0] == '.') continue;
        auto bytes = ReadFile(base + "/" + d->d_name + "/" + f->d_name);
        ASSERT_TRUE(bytes.ok());
        EXPECT_EQ(D(*bytes).hex(), f->d_name);
        ++checked;
      }
      ::closedir(in);
    }
    ::closedir(top);
    EXPECT_EQ(static_cast<uint64_t>(checked), s->Stats().chunks);
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, ChunkStoreTest, ::testing::Values(IoEngine::kPread, IoEngine::kAuto),
                         [](const auto& info) { return info.param == IoEngine::kPread ? "pread" : "auto"; });

TEST(SingleFlightTest, ConcurrentCallersShareOneExecution) {
  SingleFlight<std::string, int> flight;
  std::atomic<int> runs{0};
  std::atomic<int> shared_count{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      bool shared = false;
      auto r = flight.Do("k", [&]() -> Result<int> {
        runs++;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        return 42;
      }, &shared);
      EXPECT_EQ(*r, 42);
      if (shared) shared_count++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(shared_count.load(), 7);
  // After landing, a new call runs again.
  EXPECT_EQ(*flight.Do("k", [&]() -> Result<int> { runs++; return 1; }), 1);
  EXPECT_EQ(runs.load(), 2);
}

}  // namespace
}  // namespace chunk_store_test
}  // namespace imagefs::store
