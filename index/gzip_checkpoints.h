#pragma once

// The checkpoint index of a plain gzip layer (the idea of zlib's zran.c and SOCI's zTOC):
// restart points about every span_size bytes of uncompressed output, each with where
// decoding can resume in the blob and, at a deflate block boundary, the 32 KiB of output
// before it (the window the next blocks may refer back into). The bytes between two
// checkpoints form a span, with a sha256 so that every later read is verified.
//
// A checkpoint is either at the start of a gzip member (decode the member from its header;
// no window needed) or at a deflate block boundary inside a member (raw inflate primed
// with `bits` bits of the byte before in_offset, dictionary = window).
//
// Serialized form: docs/formats.md ("gzip checkpoint index").

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fetch/blob_source.h"
#include "util/status.h"

namespace imagefs::index {

inline constexpr size_t kDeflateWindow = 32 * 1024;

struct GzipCheckpoint {
  // Member start: offset of the member's header. Block boundary: offset of the first byte
  // holding no bit of the previous block; the top `bits` (0-7) bits of the byte before it
  // already belong to the next block (0: the boundary is byte aligned).
  uint64_t in_offset = 0;
  uint64_t out_offset = 0;  // uncompressed stream offset where the span starts
  uint8_t bits = 0;
  bool member_start = false;
  std::string window;  // block boundaries: up to 32 KiB of output before out_offset
  std::array<uint8_t, 32> span_sha256{};  // of [out_offset, next out_offset)
};

class GzipCheckpointIndex {
 public:
  // Checkpoints in stream order; the first one is at (0, 0), a member start.
  std::vector<GzipCheckpoint> checkpoints;
  // Blob bytes consumed by the gzip members (trailing zero padding excluded).
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t span_size = 0;

  size_t span_count() const { return checkpoints.size(); }
  // Blob range to fetch to decode span i, and the span's uncompressed range.
  fetch::ByteRange SpanBlobRange(size_t i) const;
  fetch::ByteRange SpanOutRange(size_t i) const;
  size_t MemoryUsage() const;

  // Appends the serialized index (magic, version, body, sha256 trailer) to out.
  void EncodeTo(std::string& out) const;
  // kCorruption for a bad checksum, truncation or inconsistent offsets; kUnsupported
  // for an unknown version.
  static Result<GzipCheckpointIndex> DecodeFrom(std::string_view in);
};

}  // namespace imagefs::index
