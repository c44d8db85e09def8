// Chunk store throughput with io_uring vs pread (4 KiB and 1 MiB chunks), and store open
// time with 100,000 chunks.
//
//   build/bench/chunk_store_bench --benchmark_min_time=1
//
// Reads are of chunks already in the page cache (the store's hot path); puts include the
// sha256 check, fsync and rename of every chunk.

#include <benchmark/benchmark.h>

#include <cstring>
#include <random>

#include "store/chunk_store.h"
#include "util/file.h"

namespace imagefs::store {
namespace {

std::string Bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  return s;
}

std::span<const uint8_t> Span(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::unique_ptr<ChunkStore> OpenStore(const std::string& dir, IoEngine io) {
  ChunkStoreOptions o;
  o.dir = dir;
  o.capacity_bytes = 100ull << 30;
  o.io = io;
  auto s = ChunkStore::Open(o);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.status().message().c_str());
    std::exit(1);
  }
  return std::move(*s);
}

void BM_Get(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const IoEngine io = state.range(1) == 0 ? IoEngine::kPread : IoEngine::kIoUring;
  std::string dir = *MakeTempDir("/tmp", "chunkbench-");
  auto store = OpenStore(dir, io);
  constexpr int kChunks = 64;
  std::vector<Digest> digests;
  for (int i = 0; i < kChunks; ++i) {
    std::string c = Bytes(size, static_cast<uint64_t>(i));
    digests.push_back(Digest::Sha256Of(std::string_view(c)));
    (void)store->Put(digests.back(), Span(c));
  }
  std::vector<uint8_t> buf(size);
  size_t i = 0;
  for (auto _ : state) {
    auto n = store->Read(digests[i++ % kChunks], 0, buf);
    benchmark::DoNotOptimize(n);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.SetLabel(store->io_engine());
  store.reset();
  (void)RemoveAll(dir);
}

void BM_Put(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const IoEngine io = state.range(1) == 0 ? IoEngine::kPread : IoEngine::kIoUring;
  std::string dir = *MakeTempDir("/tmp", "chunkbench-");
  auto store = OpenStore(dir, io);
  uint64_t seed = 1;
  for (auto _ : state) {
    state.PauseTiming();
    std::string c = Bytes(size, seed++);
    Digest d = Digest::Sha256Of(std::string_view(c));
    state.ResumeTiming();
    Status st = store->Put(d, Span(c));
    if (!st.ok()) state.SkipWithError(st.message().c_str());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.SetLabel(store->io_engine());
  store.reset();
  (void)RemoveAll(dir);
}

void BM_OpenWith100kChunks(benchmark::State& state) {
  std::string dir = *MakeTempDir("/tmp", "chunkbench-open-");
  {
    // Lay the files out directly (faster than 100k fsync'ed puts); Open only stats them.
    for (int i = 0; i < 100000; ++i) {
      std::string c = Bytes(64, static_cast<uint64_t>(i));
      std::string hex = Digest::Sha256Of(std::string_view(c)).hex();
      std::string sub = dir + "/sha256/" + hex.substr(0, 2);
      if (i < 256) (void)MakeDirs(sub);
      FILE* f = std::fopen((sub + "/" + hex).c_str(), "w");
      if (f == nullptr) {
        (void)MakeDirs(sub);
        f = std::fopen((sub + "/" + hex).c_str(), "w");
      }
      std::fwrite(c.data(), 1, c.size(), f);
      std::fclose(f);
    }
  }
  for (auto _ : state) {
    auto store = OpenStore(dir, IoEngine::kAuto);
    if (store->Stats().chunks != 100000) state.SkipWithError("wrong chunk count");
  }
  (void)RemoveAll(dir);
}

BENCHMARK(BM_Get)->ArgsProduct({{4 << 10, 1 << 20}, {0, 1}})->ArgNames({"size", "uring"});
BENCHMARK(BM_Put)->ArgsProduct({{4 << 10, 1 << 20}, {0, 1}})->ArgNames({"size", "uring"});
BENCHMARK(BM_OpenWith100kChunks)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace imagefs::store

BENCHMARK_MAIN();
