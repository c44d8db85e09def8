// Layer index costs on one realistic layer of 50,000 files, per format: index build time
// (OpenLayerIndex from a file blob source), index memory (LayerIndex::MemoryUsage, and per
// file), load time from the serialized cache form (FlatLayerIndex EncodeTo / DecodeFrom),
// file read throughput through ChunkReader, and raw span decode throughput; the convert
// throughput of the eStargz and zstd:chunked writers beside `zstd -T2` on the same tar.
//
//   build-bench/bench/index_bench --benchmark_counters_tabular=true
//
// The layer is made once per process in a temp dir with the real tar, gzip and zstd:
// 50,000 files in nested directories, mostly 100 B - 4 KiB (text and binary), 4% of
// 8 - 40 KiB, 40 files of 256 KiB - 1 MiB; about 210 MB of tar. Everything is timed in
// wall-clock time (the convert rows run an external command). Counters: MB/s is 10^6
// bytes per second of the uncompressed tar (build, convert, spans) or of file contents
// (reads); mem_MiB and B_per_file are LayerIndex::MemoryUsage().

#include <benchmark/benchmark.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fetch/blob_source.h"
#include "index/chunk_reader.h"
#include "index/flat_index.h"
#include "index/layer_index.h"
#include "index/layer_writer.h"
#include "tests/testing/process.h"
#include "util/file.h"

namespace imagefs::index {
namespace {

enum Format : int { kTarFmt = 0, kGzipFmt, kZstdFmt, kEstargzFmt, kZstdChunkedFmt, kFormats };
constexpr const char* kFormatNames[] = {"tar", "gzip", "zstd", "estargz", "zstd:chunked"};
constexpr const char* kMediaTypes[] = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
};
constexpr int kFiles = 50000;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "index_bench: %s\n", what.c_str());
  std::exit(1);
}

void Sh(const std::string& script, const std::string& cwd) {
  testing::ProcessOptions opts;
  opts.argv = {"sh", "-c", script};
  opts.cwd = cwd;
  opts.timeout = std::chrono::minutes(10);
  auto r = testing::RunProcess(opts);
  if (!r.ok()) Die(script + ": " + r.status().message());
  if (r->exit_code != 0) Die(script + ": " + r->Describe());
}

struct Layer {
  std::string dir;
  std::string blob[kFormats];  // paths; empty when the format is not available
  std::string why_missing[kFormats];
  uint64_t tar_size = 0;
  uint64_t file_bytes = 0;
  uint64_t regular_files = 0;

  ~Layer() {
    if (!dir.empty()) (void)RemoveAll(dir);
  }
};

// Pools the file contents are cut from: English-like text and random bytes, large enough
// that zstd's window does not see one file repeat another.
std::string TextPool(size_t n, std::mt19937_64& rng) {
  static const char* kWords[] = {
      "the ",    "layer ",  "index ",   "file ",  "return ", "if ",     "for ",   "int ",
      "const ",  "struct ", "static ",  "void ",  "error ",  "value ",  "path ",  "data ",
      "offset ", "size ",   "{\n",      "}\n",    "(",       ");\n",    "=",      "// ",
      "#include ", "<", ">\n", "config ", "user ",  "root ",   "usr/lib/", "bin/", "0x",
      "name: ",  "version: ", "- ",     "true",   "false",   "null",    ", ",     ".\n"};
  constexpr size_t kWordCount = sizeof(kWords) / sizeof(kWords[0]);
  std::string s;
  s.reserve(n + 32);
  while (s.size() < n) {
    uint64_t r = rng();
    s += kWords[r % kWordCount];
    if ((r >> 8) % 7 == 0) s += std::to_string((r >> 16) % 100000);
  }
  s.resize(n);
  return s;
}

std::string RandomPool(size_t n, std::mt19937_64& rng) {
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  // Runs of zeros, as in object files: about 30% of the bytes.
  for (size_t i = 0; i < n; i += 4096) {
    size_t run = rng() % 1300;
    std::memset(&s[i], 0, std::min(run, n - i));
  }
  return s;
}

void MakeTree(const std::string& root, Layer& layer) {
  std::mt19937_64 rng(42);
  const std::string text = TextPool(64 << 20, rng);
  const std::string binary = RandomPool(64 << 20, rng);
  for (int i = 0; i < kFiles; ++i) {
    // 50 top directories x 20 subdirectories, a tenth of the files one or two levels deeper.
    std::string dir = root + "/d" + std::to_string(i % 50) + "/s" + std::to_string(i / 50 % 20);
    if (i % 10 == 0) dir += "/t" + std::to_string(i % 7);
    if (i % 30 == 0) dir += "/u" + std::to_string(i % 3);
    uint64_t r = rng();
    size_t size;
    if (i % 1250 == 7) {
      size = (256 << 10) + r % (768 << 10);  // 40 large files
    } else if (r % 100 < 4) {
      size = (8 << 10) + r % (32 << 10);
    } else {
      size = 100 + r % 4000;
    }
    const bool is_text = (r >> 32) % 10 < 7;
    const std::string& pool = is_text ? text : binary;
    size_t from = (r >> 40) % (pool.size() - size);
    const std::string path =
        dir + "/f" + std::to_string(i) + (is_text ? ".txt" : ".bin");
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) {
      if (!MakeDirs(dir).ok()) Die("mkdir " + dir);
      f = std::fopen(path.c_str(), "wb");
      if (f == nullptr) Die("create " + path);
    }
    if (std::fwrite(pool.data() + from, 1, size, f) != size || std::fclose(f) != 0) {
      Die("write " + path);
    }
    layer.file_bytes += size;
    ++layer.regular_files;
  }
}

Result<WrittenLayer> Convert(Format format, const std::string& tar, const std::string& out) {
  FILE* f = std::fopen(out.c_str(), "wb");
  if (f == nullptr) return Status::FromErrno(errno, "create " + out);
  auto written = WriteSeekableLayer(
      format == kEstargzFmt ? SeekableFormat::kEstargz : SeekableFormat::kZstdChunked, tar,
      [&](std::span<const uint8_t> bytes) {
        if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
          return Status::FromErrno(errno, "write " + out);
        }
        return Status::Ok();
      },
      LayerWriteOptions{});
  if (std::fclose(f) != 0 && written.ok()) return Status::FromErrno(errno, "close " + out);
  return written;
}

Layer* g_layer = nullptr;  // made on first use, deleted (with its temp dir) by main

const Layer& TheLayer() {
  if (g_layer == nullptr) {
    auto* l = new Layer;
    auto dir = MakeTempDir("/tmp", "index-bench-");
    if (!dir.ok()) Die(dir.status().message());
    l->dir = *dir;
    auto t0 = std::chrono::steady_clock::now();
    MakeTree(l->dir + "/tree", *l);
    Sh("tar -C tree --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner "
       "-cf layer.tar . && gzip -n -6 -c layer.tar >layer.tar.gz && "
       "zstd -q -3 -T2 -c layer.tar >layer.tar.zst && rm -rf tree",
       l->dir);
    l->blob[kTarFmt] = l->dir + "/layer.tar";
    l->blob[kGzipFmt] = l->dir + "/layer.tar.gz";
    l->blob[kZstdFmt] = l->dir + "/layer.tar.zst";
    for (Format f : {kEstargzFmt, kZstdChunkedFmt}) {
      std::string out = l->dir + (f == kEstargzFmt ? "/layer.estargz" : "/layer.zstdchunked");
      auto written = Convert(f, l->blob[kTarFmt], out);
      if (written.ok()) {
        l->blob[f] = out;
      } else {
        l->why_missing[f] = written.status().message();
      }
    }
    struct stat st;
    if (::stat(l->blob[kTarFmt].c_str(), &st) != 0) Die("stat layer.tar");
    l->tar_size = static_cast<uint64_t>(st.st_size);
    double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "index_bench: layer of %llu files, %.1f MB of files, %.1f MB tar",
                 static_cast<unsigned long long>(l->regular_files), l->file_bytes / 1e6,
                 l->tar_size / 1e6);
    for (int f = kGzipFmt; f < kFormats; ++f) {
      if (l->blob[f].empty() || ::stat(l->blob[f].c_str(), &st) != 0) continue;
      std::fprintf(stderr, ", %s %.1f MB", kFormatNames[f], st.st_size / 1e6);
    }
    std::fprintf(stderr, " (made in %.1f s in %s)\n", secs, l->dir.c_str());
    g_layer = l;
  }
  return *g_layer;
}

// Skips the benchmark (with the reason) when the format's blob could not be made.
bool Available(benchmark::State& state, Format format) {
  const Layer& layer = TheLayer();
  if (!layer.blob[format].empty()) return true;
  state.SkipWithError((std::string(kFormatNames[format]) + ": " + layer.why_missing[format])
                          .c_str());
  return false;
}

std::unique_ptr<fetch::BlobSource> OpenBlob(Format format) {
  auto src = fetch::OpenFileBlobSource(TheLayer().blob[format]);
  if (!src.ok()) Die(src.status().message());
  return std::move(*src);
}

OpenOptions Options(uint64_t span_kib) {
  OpenOptions o;
  if (span_kib > 0) o.span_size = span_kib << 10;
  return o;
}

std::unique_ptr<LayerIndex> Build(Format format, uint64_t span_kib) {
  auto src = OpenBlob(format);
  auto idx = OpenLayerIndex(*src, kMediaTypes[format], "", nullptr, Options(span_kib));
  if (!idx.ok()) Die(std::string(kFormatNames[format]) + ": " + idx.status().message());
  return std::move(*idx);
}

// One index per (format, span size), built on first use (outside the timed loops).
const LayerIndex& CachedIndex(Format format, uint64_t span_kib) {
  static std::map<std::pair<int, uint64_t>, std::unique_ptr<LayerIndex>> built;
  auto& slot = built[{format, span_kib}];
  if (!slot) slot = Build(format, span_kib);
  return *slot;
}

std::vector<NodeId> RegularFiles(const LayerIndex& idx) {
  std::vector<NodeId> files;
  for (NodeId id = 0; id < idx.NodeCount(); ++id) {
    auto a = idx.Attr(id);
    if (a.ok() && S_ISREG(a->mode) && !a->whiteout && !a->lower_hardlink) files.push_back(id);
  }
  return files;
}

void SetIndexCounters(benchmark::State& state, const LayerIndex& idx) {
  const double mem = static_cast<double>(idx.MemoryUsage());
  state.counters["mem_MiB"] = mem / (1 << 20);
  state.counters["B_per_file"] = mem / static_cast<double>(TheLayer().regular_files);
  state.counters["nodes"] = idx.NodeCount();
}

void SetLabel(benchmark::State& state, Format format, uint64_t span_kib) {
  std::string label = kFormatNames[format];
  if (span_kib > 0 && (format == kGzipFmt || format == kZstdFmt)) {
    label += " span=" + std::to_string(span_kib) + "KiB";
  }
  state.SetLabel(label);
}

// Args: format, span KiB (0: default; only gzip and zstd use it).
void BM_BuildIndex(benchmark::State& state) {
  const auto format = static_cast<Format>(state.range(0));
  const uint64_t span_kib = static_cast<uint64_t>(state.range(1));
  if (!Available(state, format)) return;
  auto src = OpenBlob(format);
  std::unique_ptr<LayerIndex> idx;
  for (auto _ : state) {
    idx.reset();
    auto r = OpenLayerIndex(*src, kMediaTypes[format], "", nullptr, Options(span_kib));
    if (!r.ok()) {
      state.SkipWithError(r.status().message().c_str());
      return;
    }
    idx = std::move(*r);
  }
  SetIndexCounters(state, *idx);
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(TheLayer().tar_size) / 1e6,
                                              benchmark::Counter::kIsIterationInvariantRate);
  SetLabel(state, format, span_kib);
}

// The serialized form IndexCache keeps: encode, and load (DecodeFrom, which checks it).
void BM_EncodeIndex(benchmark::State& state) {
  const auto format = static_cast<Format>(state.range(0));
  if (!Available(state, format)) return;
  const auto* flat = dynamic_cast<const FlatLayerIndex*>(&CachedIndex(format, 0));
  if (flat == nullptr) {
    state.SkipWithError("not a FlatLayerIndex");
    return;
  }
  std::string out;
  for (auto _ : state) {
    out.clear();
    flat->EncodeTo(out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["encoded_MiB"] = static_cast<double>(out.size()) / (1 << 20);
  state.counters["B_per_file"] =
      static_cast<double>(out.size()) / static_cast<double>(TheLayer().regular_files);
  SetLabel(state, format, 0);
}

void BM_LoadIndex(benchmark::State& state) {
  const auto format = static_cast<Format>(state.range(0));
  if (!Available(state, format)) return;
  const auto* flat = dynamic_cast<const FlatLayerIndex*>(&CachedIndex(format, 0));
  if (flat == nullptr) {
    state.SkipWithError("not a FlatLayerIndex");
    return;
  }
  std::string bytes;
  flat->EncodeTo(bytes);
  std::unique_ptr<FlatLayerIndex> loaded;
  for (auto _ : state) {
    loaded.reset();
    auto r = FlatLayerIndex::DecodeFrom(bytes);
    if (!r.ok()) {
      state.SkipWithError(r.status().message().c_str());
      return;
    }
    loaded = std::move(*r);
  }
  SetIndexCounters(state, *loaded);
  state.counters["encoded_MiB"] = static_cast<double>(bytes.size()) / (1 << 20);
  SetLabel(state, format, 0);
}

// Reads whole files through one ChunkReader, every `stride`-th regular file in id order
// (stride 1: all of them). Each read of a plain gzip / zstd file decodes and verifies its
// whole span (and a zstd span inside a frame is decoded from the frame start), so those
// read only a sample.
// Args: format, span KiB, stride.
void BM_ReadFiles(benchmark::State& state) {
  const auto format = static_cast<Format>(state.range(0));
  const uint64_t span_kib = static_cast<uint64_t>(state.range(1));
  const size_t stride = static_cast<size_t>(state.range(2));
  if (!Available(state, format)) return;
  const LayerIndex& idx = CachedIndex(format, span_kib);
  auto src = OpenBlob(format);
  ChunkReader reader(*src, idx);
  std::vector<NodeId> all = RegularFiles(idx);
  std::vector<NodeId> files;
  for (size_t i = 0; i < all.size(); i += stride) files.push_back(all[i]);
  std::vector<uint8_t> buf(4 << 20);
  uint64_t bytes = 0;
  for (auto _ : state) {
    bytes = 0;
    for (NodeId id : files) {
      uint64_t off = 0;
      while (true) {
        auto n = reader.ReadFile(id, off, buf);
        if (!n.ok()) {
          state.SkipWithError(n.status().message().c_str());
          return;
        }
        if (*n == 0) break;
        off += *n;
      }
      bytes += off;
    }
  }
  state.counters["files"] = static_cast<double>(files.size());
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e6,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["files/s"] = benchmark::Counter(static_cast<double>(files.size()),
                                                 benchmark::Counter::kIsIterationInvariantRate);
  SetLabel(state, format, span_kib);
}

// Decodes every distinct span of the layer once through ChunkReader::ReadSpan (fetch,
// decompress, sha256 check): the format's sequential decode throughput.
void BM_DecodeSpans(benchmark::State& state) {
  const auto format = static_cast<Format>(state.range(0));
  const uint64_t span_kib = static_cast<uint64_t>(state.range(1));
  if (!Available(state, format)) return;
  const LayerIndex& idx = CachedIndex(format, span_kib);
  std::vector<const ChunkRef*> spans;
  std::set<std::pair<uint64_t, uint64_t>> seen;
  for (NodeId id = 0; id < idx.NodeCount(); ++id) {
    for (const ChunkRef& c : idx.Chunks(id)) {
      if (c.codec != Codec::kNone && seen.insert({c.blob_offset, c.skip}).second) {
        spans.push_back(&c);
      }
    }
  }
  if (spans.empty()) {
    state.SkipWithError("no compressed spans (uncompressed tar)");
    return;
  }
  auto src = OpenBlob(format);
  ChunkReader reader(*src, idx);
  uint64_t bytes = 0;
  for (auto _ : state) {
    bytes = 0;
    for (const ChunkRef* c : spans) {
      auto span = reader.ReadSpan(*c);
      if (!span.ok()) {
        state.SkipWithError(span.status().message().c_str());
        return;
      }
      bytes += span->size();
    }
  }
  state.counters["spans"] = static_cast<double>(spans.size());
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e6,
                                              benchmark::Counter::kIsIterationInvariantRate);
  SetLabel(state, format, span_kib);
}

// Convert throughput (MB/s of the input tar): `zstd -T2` as the reference, and the
// eStargz / zstd:chunked writers once they are linked.
void BM_ConvertZstdCli(benchmark::State& state) {
  const Layer& layer = TheLayer();
  for (auto _ : state) {
    Sh("zstd -q -f -3 -T2 -o convert.tar.zst layer.tar", layer.dir);
  }
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(layer.tar_size) / 1e6,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("zstd -3 -T2 (external command)");
}

void BM_ConvertWriter(benchmark::State& state) {
  const auto format = static_cast<Format>(state.range(0));
  if (!Available(state, format)) return;
  const Layer& layer = TheLayer();
  const std::string out = layer.dir + "/convert.out";
  uint64_t size = 0;
  for (auto _ : state) {
    auto written = Convert(format, layer.blob[kTarFmt], out);
    if (!written.ok()) {
      state.SkipWithError(written.status().message().c_str());
      return;
    }
    size = written->size;
  }
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(layer.tar_size) / 1e6,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["out_MB"] = static_cast<double>(size) / 1e6;
  state.SetLabel(std::string(kFormatNames[format]) + " writer (default options)");
}

// Opening a real layer's index from a local copy of its blob (the seekable formats read
// only their footer and TOC): IMAGEFS_BENCH_LAYER=PATH, IMAGEFS_BENCH_MEDIA_TYPE=TYPE
// (default the zstd layer type). The cold-start bench's nginx layers are the reference:
// the CPU a mount spends between the TOC's arrival and the index being ready.
void BM_OpenGivenLayer(benchmark::State& state) {
  const std::string path = GetEnv("IMAGEFS_BENCH_LAYER");
  if (path.empty()) {
    state.SkipWithError("IMAGEFS_BENCH_LAYER is not set");
    return;
  }
  std::string media_type = GetEnv("IMAGEFS_BENCH_MEDIA_TYPE");
  if (media_type.empty()) media_type = kMediaTypes[kZstdChunkedFmt];
  auto src = fetch::OpenFileBlobSource(path);
  if (!src.ok()) {
    state.SkipWithError(src.status().message().c_str());
    return;
  }
  std::unique_ptr<LayerIndex> idx;
  for (auto _ : state) {
    idx.reset();
    auto r = OpenLayerIndex(**src, media_type, "", nullptr, OpenOptions{});
    if (!r.ok()) {
      state.SkipWithError(r.status().message().c_str());
      return;
    }
    idx = std::move(*r);
  }
  state.counters["mem_MiB"] = static_cast<double>(idx->MemoryUsage()) / (1 << 20);
  state.counters["nodes"] = static_cast<double>(idx->NodeCount());
  state.SetLabel(path);
}

constexpr auto kMs = benchmark::kMillisecond;

BENCHMARK(BM_OpenGivenLayer)->Unit(kMs)->UseRealTime();

BENCHMARK(BM_BuildIndex)
    ->ArgNames({"format", "span_kib"})
    ->Args({kTarFmt, 0})
    ->Args({kGzipFmt, 0})
    ->Args({kGzipFmt, 256})
    ->Args({kZstdFmt, 0})
    ->Args({kZstdFmt, 256})
    // Seekable formats: their TOC is read, not the whole blob (skipped until the writers
    // exist).
    ->Args({kEstargzFmt, 0})
    ->Args({kZstdChunkedFmt, 0})
    ->Unit(kMs)
    ->UseRealTime()
    ->MinTime(2);
BENCHMARK(BM_EncodeIndex)
    ->ArgName("format")
    ->DenseRange(kTarFmt, kZstdChunkedFmt)
    ->Unit(kMs)
    ->UseRealTime();
BENCHMARK(BM_LoadIndex)
    ->ArgName("format")
    ->DenseRange(kTarFmt, kZstdChunkedFmt)
    ->Unit(kMs)
    ->UseRealTime();
BENCHMARK(BM_ReadFiles)
    ->ArgNames({"format", "span_kib", "stride"})
    ->Args({kTarFmt, 0, 1})
    ->Args({kGzipFmt, 0, 100})
    ->Args({kGzipFmt, 256, 10})
    // A plain zstd layer is one frame (zstd -T2 too): every read decodes from the frame
    // start, so only a small sample.
    ->Args({kZstdFmt, 0, 500})
    ->Args({kZstdFmt, 256, 500})
    ->Args({kEstargzFmt, 0, 1})
    ->Args({kZstdChunkedFmt, 0, 1})
    ->Unit(kMs)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_DecodeSpans)
    ->ArgNames({"format", "span_kib"})
    ->Args({kGzipFmt, 0})
    ->Args({kZstdFmt, 0})
    ->Args({kEstargzFmt, 0})
    ->Args({kZstdChunkedFmt, 0})
    ->Unit(kMs)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_ConvertZstdCli)->Unit(kMs)->UseRealTime()->Iterations(2);
BENCHMARK(BM_ConvertWriter)
    ->ArgName("format")
    ->Arg(kEstargzFmt)
    ->Arg(kZstdChunkedFmt)
    ->Unit(kMs)
    ->UseRealTime()
    ->Iterations(2);

}  // namespace
}  // namespace imagefs::index

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  delete imagefs::index::g_layer;  // removes the layer's temp dir
  return 0;
}
