// Ranged-read throughput from a real local docker-registry through fetch::RegistryClient:
// one request at a time vs 8 in flight, 64 KiB and 1 MiB ranges.
//
//   build/bench/registry_read_bench --benchmark_min_time=2
//
// The program starts its own registry (tests/testing harness) on a free loopback port,
// uploads a 64 MiB random blob, and reads random aligned ranges of it.

#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "fetch/http.h"
#include "fetch/registry_client.h"
#include "tests/testing/registry.h"
#include "util/digest.h"

namespace imagefs {
namespace {

constexpr uint64_t kBlobSize = 64ull << 20;
constexpr char kRepo[] = "bench/blob";

struct Env {
  std::unique_ptr<testing::TestRegistry> registry;
  std::unique_ptr<fetch::RegistryClient> client;
  std::unique_ptr<fetch::BlobSource> blob;
};

Env* g_env = nullptr;

Status Upload(const std::string& host, const std::string& data, const Digest& digest) {
  fetch::HttpClient http;
  fetch::HttpRequest start;
  start.method = "POST";
  start.url = "http://" + host + "/v2/" + kRepo + "/blobs/uploads/";
  ASSIGN_OR_RETURN(fetch::HttpResponse r, http.Do(start));
  std::string location = r.Header("location");
  if (r.status != 202 || location.empty()) return Status::Internal("upload start failed");
  if (location.rfind("http", 0) != 0) location = "http://" + host + location;
  fetch::HttpRequest put;
  put.method = "PUT";
  put.url = location + (location.find('?') == std::string::npos ? "?" : "&") +
            "digest=" + digest.String();
  put.headers.push_back({"Content-Type", "application/octet-stream"});
  put.body = data;
  ASSIGN_OR_RETURN(fetch::HttpResponse done, http.Do(put));
  if (done.status != 201) return Status::Internal("upload failed: " + std::to_string(done.status));
  return Status::Ok();
}

Env* SetUpEnv() {
  auto env = std::make_unique<Env>();
  auto reg = testing::TestRegistry::Start(testing::RegistryFlavor::kPlain);
  if (!reg.ok()) {
    std::fprintf(stderr, "registry: %s\n", reg.status().message().c_str());
    std::exit(1);
  }
  env->registry = std::move(*reg);
  std::string data(kBlobSize, '\0');
  std::mt19937_64 rng(42);
  for (size_t i = 0; i < data.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  Digest digest = Digest::Sha256Of(std::string_view(data));
  Status st = Upload(env->registry->host(), data, digest);
  fetch::RegistryEndpointConfig config;
  config.host = env->registry->host();
  auto client = fetch::RegistryClient::Create(config);
  if (st.ok() && client.ok()) {
    env->client = std::move(*client);
    auto blob = env->client->OpenBlob(kRepo, digest.String(), static_cast<int64_t>(kBlobSize));
    if (blob.ok()) env->blob = std::move(*blob);
    else st = blob.status();
  } else if (st.ok()) {
    st = client.status();
  }
  if (!st.ok()) {
    std::fprintf(stderr, "setup: %s\n", st.message().c_str());
    std::exit(1);
  }
  return env.release();
}

void BM_RangedRead(benchmark::State& state) {
  const size_t range = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> buf(range);
  std::mt19937_64 rng(static_cast<uint64_t>(state.thread_index()) + 1);
  const uint64_t slots = kBlobSize / range;
  for (auto _ : state) {
    uint64_t offset = (rng() % slots) * range;
    auto n = g_env->blob->ReadAt(offset, buf);
    if (!n.ok() || *n != range) {
      state.SkipWithError(n.ok() ? "short read" : n.status().message().c_str());
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * range));
}

BENCHMARK(BM_RangedRead)->Arg(64 << 10)->Arg(1 << 20)->Threads(1)->Threads(8)->UseRealTime();

}  // namespace
}  // namespace imagefs

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  imagefs::g_env = imagefs::SetUpEnv();
  benchmark::RunSpecifiedBenchmarks();
  delete imagefs::g_env;
  benchmark::Shutdown();
  return 0;
}
