#pragma once

// Streaming decompression of whole layer blobs (gzip with any number of members, zstd with
// any number of frames and skippable frames, or no compression), for the paths that turn
// a layer into its tar: convert, docker-archive output. Random access into compressed
// layers is index/'s business, not this.
//
// Not thread-safe; one stream per object.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "util/status.h"

namespace imagefs {

using DecompressSink = std::function<Status(const char* data, size_t n)>;

class Decompressor {
 public:
  virtual ~Decompressor() = default;
  // Decodes the next compressed bytes, passing the output to `out` in pieces.
  // Corrupt input is kCorruption.
  virtual Status Feed(const char* data, size_t n, const DecompressSink& out) = 0;
  // kCorruption when the stream ended in the middle of a member or frame.
  virtual Status Finish() = 0;
};

// Picks the decoder by the stream's first bytes: 1f 8b gzip, 28 b5 2f fd zstd, else a
// pass-through (an uncompressed tar).
std::unique_ptr<Decompressor> MakeDecompressor(std::span<const uint8_t> head);

}  // namespace imagefs
