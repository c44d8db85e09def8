#pragma once

// The index builders of the layer formats that carry no index of their own. Internal to
// index/: OpenLayerIndex picks one by sniffing the blob.

#include <array>
#include <map>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "fetch/blob_source.h"
#include "index/flat_index.h"
#include "index/progress.h"
#include "index/tar_scanner.h"

namespace imagefs::index::internal {

// Uncompressed tar: reads headers only (jumping over file data); chunks are the files'
// ranges of the blob itself, with no digest.
Result<std::unique_ptr<FlatLayerIndex>> BuildTarIndex(fetch::BlobSource& source,
                                                      const std::string& layer_digest);
// Plain gzip (one or more members): one streaming pass that scans the tar and records
// checkpoints and span digests every `span_size` bytes of output. With an observer, it
// publishes snapshots of the entries whose bytes have passed as it goes (index/progress.h).
Result<std::unique_ptr<FlatLayerIndex>> BuildGzipIndex(fetch::BlobSource& source,
                                                       const std::string& layer_digest,
                                                       uint64_t span_size,
                                                       ScanObserver* observer = nullptr);

// Holds scanned tar entries back until every byte of theirs has been decoded (their spans
// are complete), then adds them to the builder in archive order and moves the frontier.
// Without holding back (a scan nobody watches) entries go to the builder at once.
class PendingEntries {
 public:
  PendingEntries(TreeBuilder& builder, bool hold_back) : builder_(builder), hold_back_(hold_back) {}
  Status Add(const TarEntry& entry);
  // Adds the held entries whose data ends at or before stream offset `passed`.
  Status Release(uint64_t passed);
  const ScanFrontier& frontier() const { return frontier_; }

 private:
  Status Admit(const TarEntry& entry);

  TreeBuilder& builder_;
  bool hold_back_;
  bool any_ = false;  // an entry moved the frontier
  std::deque<TarEntry> held_;
  ScanFrontier frontier_;
};
// Plain zstd: one streaming pass; spans start at every frame and every `span_size` bytes
// within a frame.
Result<std::unique_ptr<FlatLayerIndex>> BuildZstdIndex(fetch::BlobSource& source,
                                                       const std::string& layer_digest,
                                                       uint64_t span_size);

// Seekable formats with their own TOC. Each returns a null index when the blob is not in
// its format (no footer and no annotation of its own), an error naming the layer when it
// is but the footer, TOC or blob is damaged.
//   eStargz: 51-byte footer (or the legacy 47-byte one), stargz.index.json TOC, checked
//   against the containerd.io/snapshot/stargz/toc.digest annotation when present.
//   zstd:chunked: TOC located by the io.github.containers.zstd-chunked.manifest-position
//   annotation (checked against ...manifest-checksum) or by one of the three footers.
Result<std::unique_ptr<FlatLayerIndex>> TryOpenEstargz(
    fetch::BlobSource& source, const std::map<std::string, std::string>& annotations,
    const std::string& layer_digest);
Result<std::unique_ptr<FlatLayerIndex>> TryOpenZstdChunked(
    fetch::BlobSource& source, const std::map<std::string, std::string>& annotations,
    const std::string& layer_digest);

// A decodable span of the uncompressed stream and where its compressed bytes are.
struct Span {
  uint64_t out_offset = 0;
  uint64_t out_length = 0;
  Codec codec = Codec::kNone;
  uint64_t blob_offset = 0;
  uint64_t blob_length = 0;
  uint64_t skip = 0;
  uint32_t checkpoint = 0;
  std::array<uint8_t, 32> sha256{};
};

// Appends the chunks of the stream range [data_offset, data_offset + size): one per span
// it overlaps. Spans are sorted, contiguous and cover the stream.
Status MapToSpans(const std::vector<Span>& spans, uint64_t data_offset, uint64_t size,
                  std::vector<ChunkRef>& out);

// Raw digest of an incremental hash, ready for the next span.
std::array<uint8_t, 32> FinishRaw(std::unique_ptr<Sha256>& hash);

}  // namespace imagefs::index::internal
