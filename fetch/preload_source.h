#pragma once

// PreloadBlobSource: a BlobSource that can fetch one large window of its blob ahead of the
// reads that need it, and serves reads inside the window from memory. Prefetch uses it to
// turn the many small per-file reads of a prefetch set into a few large range requests;
// reads outside the window (a demand read for a file prefetch has not reached) go to the
// inner source at once, never waiting behind the window's fetch.
//
// The window is fetched as parts requested together, the first one small (kHeadPart), and
// each part is served as soon as it has arrived: a read inside a window still being
// fetched waits for the part(s) holding it rather than asking the registry a second time
// (the same link is busy with those bytes anyway), and the first files of a prefetch set —
// the ones a container's start reads first, e.g. /etc/passwd for its user — come one round
// trip after the window was asked for. A part that fails sends its reads to the inner
// source.
//
// Thread safety: every method may be called concurrently.

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

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
  static constexpr uint64_t kHeadPart = 64 << 10;
  // Forgets the window (frees its memory).
  void Drop();
  uint64_t preloaded_bytes() const;

  uint64_t Size() const override { return inner_->Size(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override;
  Status ReadRanges(std::span<const ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override;
  std::string Describe() const override { return inner_->Describe(); }

 private:
  // Copies [offset, offset + out.size()) from the window, waiting for the parts that hold
  // it when the window is still being fetched; false when not inside it (or a part failed).
  bool FromWindow(uint64_t offset, std::span<uint8_t> out) const;

  struct Part {
    uint64_t begin = 0;  // blob offsets
    uint64_t end = 0;
    bool done = false;
    bool failed = false;
  };

  std::unique_ptr<BlobSource> inner_;
  mutable std::mutex mu_;  // guards the window pointer, not its (immutable) bytes
  mutable std::condition_variable loaded_;  // a window fetch, or one of its parts, ended
  bool loading_ = false;            // [loading_begin_, loading_end_) is being fetched
  uint64_t loading_begin_ = 0;
  uint64_t loading_end_ = 0;
  std::shared_ptr<std::string> loading_bytes_;  // the window being fetched, by parts
  std::vector<Part> parts_;                     // of loading_bytes_
  std::shared_ptr<const std::string> window_;
  uint64_t window_offset_ = 0;
  uint64_t total_preloaded_ = 0;
};

}  // namespace imagefs::fetch
