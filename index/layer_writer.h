#pragma once

// Writers of seekable layers (what `imagefs convert` and `imagefs commit` produce).
//
// Input: an uncompressed tar (a layer's diff) in a file, so entries can be reordered for a
// prefetch profile and re-read without holding them in memory. Output: the new layer blob,
// streamed to a sink. The output is a function of the input bytes and the options only
// (no timestamps, no map iteration order, fixed compression parameters): the same input
// gives identical bytes.
//
// Both writers keep the layer an ordinary tar stream once decompressed (gzip -dc / zstd -dc
// | tar -x reproduces the input tree, plus eStargz's own TOC and landmark entries).

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "util/status.h"

namespace imagefs::index {

enum class SeekableFormat { kZstdChunked, kEstargz };

struct LayerWriteOptions {
  // Regular files larger than this are split into chunks of this size.
  uint64_t chunk_size = 4 << 20;
  // Paths (as in the tar, without a leading "/" or "./") in first-access order. Those
  // files are written first, then a landmark marks the boundary (eStargz's
  // ".prefetch.landmark"; without a profile ".no.prefetch.landmark"); zstd:chunked
  // records the same boundary (see docs/formats.md).
  std::vector<std::string> prefetch_paths;
  // Compression level (gzip 1-9, zstd 1-19); 0 picks the writer's default.
  int level = 0;
};

struct WrittenLayer {
  std::string digest;      // "sha256:..." of the blob written to the sink
  uint64_t size = 0;       // bytes written to the sink
  std::string diff_id;     // "sha256:..." of the decompressed stream (the new tar)
  std::string media_type;  // application/vnd.oci.image.layer.v1.tar+gzip / +zstd
  // Annotations for the manifest's layer descriptor (TOC digest / manifest position).
  std::map<std::string, std::string> annotations;
};

// Receives the output in order; an error aborts the write.
using ByteSink = std::function<Status(std::span<const uint8_t>)>;

// Rewrites the tar at `tar_path` as a seekable layer. Errors (unreadable tar, sparse
// entries, path escapes) name the input path.
Result<WrittenLayer> WriteEstargzLayer(const std::string& tar_path, const ByteSink& sink,
                                       const LayerWriteOptions& options);
Result<WrittenLayer> WriteZstdChunkedLayer(const std::string& tar_path, const ByteSink& sink,
                                           const LayerWriteOptions& options);

inline Result<WrittenLayer> WriteSeekableLayer(SeekableFormat format,
                                               const std::string& tar_path,
                                               const ByteSink& sink,
                                               const LayerWriteOptions& options) {
  return format == SeekableFormat::kEstargz ? WriteEstargzLayer(tar_path, sink, options)
                                            : WriteZstdChunkedLayer(tar_path, sink, options);
}

}  // namespace imagefs::index
