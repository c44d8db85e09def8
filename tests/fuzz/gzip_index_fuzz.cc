// Fuzzes GzipCheckpointIndex::DecodeFrom (the checkpoint table stored inside a cached gzip
// layer index). As in index_decode_fuzz, the sha256 trailer is fixed up before decoding
// so mutations reach the body; a decoded table must re-encode to the same bytes and its
// span ranges must be computable for every checkpoint.

#include <cstdint>
#include <string>

#include "index/coding.h"
#include "index/gzip_checkpoints.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imagefs;
  using namespace imagefs::fuzz;
  std::string in(AsChars(data, size));
  (void)index::GzipCheckpointIndex::DecodeFrom(in);
  if (in.size() >= 32) {
    auto sum = index::Sha256Raw(std::string_view(in).substr(0, in.size() - 32));
    in.replace(in.size() - 32, 32, reinterpret_cast<const char*>(sum.data()), 32);
  }
  auto decoded = index::GzipCheckpointIndex::DecodeFrom(in);
  if (!decoded.ok()) return 0;
  std::string encoded;
  decoded->EncodeTo(encoded);
  FUZZ_CHECK(encoded == in, "EncodeTo(DecodeFrom(x)) == x");
  for (size_t i = 0; i < decoded->span_count(); ++i) {
    fetch::ByteRange blob = decoded->SpanBlobRange(i);
    fetch::ByteRange out = decoded->SpanOutRange(i);
    FUZZ_CHECK(blob.offset <= blob.end() && blob.end() <= decoded->compressed_size,
               "span's blob range inside the gzip stream");
    FUZZ_CHECK(out.offset <= out.end() && out.end() <= decoded->uncompressed_size,
               "span's output range inside the stream");
  }
  (void)decoded->MemoryUsage();
  return 0;
}
