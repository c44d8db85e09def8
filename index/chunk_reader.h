#pragma once

// ChunkReader: a ChunkRef's compressed range -> decoded span -> digest check -> bytes.
// A span that fails its digest is kCorruption naming the layer digest and blob range;
// its bytes are never returned. Reading a file maps the wanted range onto its chunks and
// fetches all their compressed ranges in one ReadRanges call (neighbours are contiguous,
// so the source can coalesce them into one request).
//
// Thread safety: const methods may run concurrently (if the BlobSource allows it, which
// BlobSource requires). The reader borrows the source and the index; both must outlive it.

#include <cstdint>
#include <span>
#include <vector>

#include "fetch/blob_source.h"
#include "index/layer_index.h"
#include "index/span_cache.h"

namespace imagefs::index {

class ChunkReader {
 public:
  ChunkReader(fetch::BlobSource& source, const LayerIndex& index)
      : source_(source), index_(index) {}
  // ReadFile keeps the spans it decodes that hold more than one chunk in `spans` (under
  // `layer`, the layer's place in its image) and takes them from there next time.
  ChunkReader(fetch::BlobSource& source, const LayerIndex& index, SpanCache* spans,
              uint32_t layer)
      : source_(source), index_(index), spans_(spans), layer_(layer) {}
  ChunkReader(const ChunkReader&) = delete;
  ChunkReader& operator=(const ChunkReader&) = delete;

  // The whole verified span the chunk lies in (span_length bytes).
  Result<std::vector<uint8_t>> ReadSpan(const ChunkRef& chunk) const;
  // The chunk's own bytes of its file (chunk.length bytes).
  Result<std::vector<uint8_t>> ReadChunk(const ChunkRef& chunk) const;
  // Reads up to out.size() bytes of regular file `id` at `offset`; returns the count,
  // short only at the end of the file (0 at or past it).
  Result<size_t> ReadFile(NodeId id, uint64_t offset, std::span<uint8_t> out) const;

  // Decodes a chunk's compressed bytes (exactly its blob range) into its verified span.
  Result<std::vector<uint8_t>> DecodeSpan(const ChunkRef& chunk,
                                          std::span<const uint8_t> compressed) const;

 private:
  std::string Where(const ChunkRef& chunk) const;

  fetch::BlobSource& source_;
  const LayerIndex& index_;
  SpanCache* const spans_ = nullptr;
  const uint32_t layer_ = 0;
};

// One-shot form of ChunkReader::ReadFile.
Result<size_t> ReadFile(fetch::BlobSource& source, const LayerIndex& index, NodeId id,
                        uint64_t offset, std::span<uint8_t> out);

}  // namespace imagefs::index
