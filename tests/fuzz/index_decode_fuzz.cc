// Fuzzes FlatLayerIndex::DecodeFrom, the decoder of cached indexes (the cache is on local
// disk, so a damaged or planted file must be an error, never a bad access).
//
// Input: a serialized index. The last 32 bytes (the sha256 trailer) are replaced by the
// right checksum before decoding, so mutations reach the body's checks instead of
// stopping at the checksum; the input is also decoded as given. A decoded index is walked
// node by node, re-encoded (EncodeTo must reproduce the bytes), and, when its blob is at
// most 1 MiB, its files are read through ChunkReader from a blob made of the input bytes.

#include <cstdint>
#include <string>

#include "fetch/blob_source.h"
#include "index/coding.h"
#include "index/flat_index.h"
#include "tests/fuzz/fuzz_util.h"
#include "util/file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imagefs;
  using namespace imagefs::fuzz;
  std::string in(AsChars(data, size));
  {
    auto raw = index::FlatLayerIndex::DecodeFrom(in);
    (void)raw;
  }
  if (in.size() >= 32) {
    auto sum = index::Sha256Raw(std::string_view(in).substr(0, in.size() - 32));
    in.replace(in.size() - 32, 32, reinterpret_cast<const char*>(sum.data()), 32);
  }
  auto decoded = index::FlatLayerIndex::DecodeFrom(in);
  if (!decoded.ok()) return 0;
  const index::FlatLayerIndex& idx = **decoded;

  std::string encoded;
  idx.EncodeTo(encoded);
  FUZZ_CHECK(encoded == in, "EncodeTo(DecodeFrom(x)) == x");

  std::unique_ptr<fetch::BlobSource> source;
  // IMAGEFS_FUZZ_NO_READS=1 fuzzes decoding alone (while a read-path bug is open).
  static const bool no_reads = GetEnv("IMAGEFS_FUZZ_NO_READS") == "1";
  if (!no_reads && idx.blob_size() <= (1u << 20)) {
    std::string blob;
    blob.reserve(idx.blob_size());
    while (blob.size() < idx.blob_size()) {
      blob.append(in.data(), std::min<size_t>(in.size(), idx.blob_size() - blob.size()));
    }
    source = fetch::MakeMemoryBlobSource(std::move(blob), "fuzz blob");
  }
  WalkOptions options;
  options.read_budget = 256 << 10;
  WalkIndex(idx, source.get(), options);
  return 0;
}
