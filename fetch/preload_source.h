#pragma once

// PreloadBlobSource: a BlobSource that can fetch one large window of its blob ahead of the
// reads that need it, and serves reads inside the window from memory. Prefetch uses it to
// turn the many small per-file reads of a prefetch set into a few large range requests;
// reads outside the window (a demand read for a file prefetch has not reached) go to the
// inner source at once, never waiting behind the window's fetch.
//
// Thread safety: every method may be called concurrently.

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "fetch/blob_source.h"

namespace imagefs::fetch {

class PreloadBlobSource final : public BlobSource {
 public:
  explicit PreloadBlobSource(std::unique_ptr<BlobSource> inner) : inner_(std::move(inner)) {}

  // Fetches [range.offset, range.end()) (clamped to the blob) in parts of `part` bytes
  // requested together, replacing the previous window. On error the window is empty. A
  // range the window holds already costs nothing; one inside a window being fetched by
  // another call waits for that fetch (so a window started early, before the layer's
  // index was open, is not fetched twice).
  Status Preload(ByteRange range, uint64_t part = 4 << 20);
  // Forgets the window (frees its memory).
  void Drop();
  uint64_t preloaded_bytes() const;

  uint64_t Size() const override { return inner_->Size(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override;
  Status ReadRanges(std::span<const ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override;
  std::string Describe() const override { return inner_->Describe(); }

 private:
  // Copies [offset, offset + out.size()) from the window; false when not inside it.
  bool FromWindow(uint64_t offset, std::span<uint8_t> out) const;

  std::unique_ptr<BlobSource> inner_;
  mutable std::mutex mu_;  // guards the window pointer, not its (immutable) bytes
  std::condition_variable loaded_;  // a window fetch ended
  bool loading_ = false;            // [loading_begin_, loading_end_) is being fetched
  uint64_t loading_begin_ = 0;
  uint64_t loading_end_ = 0;
  std::shared_ptr<const std::string> window_;
  uint64_t window_offset_ = 0;
  uint64_t total_preloaded_ = 0;
};

}  // namespace imagefs::fetch
