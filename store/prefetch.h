#pragma once

// Prefetch: fetches files of a mounted image before anyone asks for them, so that a
// container's first reads find their bytes in the chunk store.
//
// Order: first every layer's prefetch set (the files below its prefetch_end: eStargz's
// landmark, imagefs convert's zstd:chunked boundary — files a recorded profile put first),
// then, with `all`, every other regular file. Within a phase files go in blob order, and
// neighbours are fetched together: a window of up to `window` bytes of the layer blob is
// fetched in one batch of parallel range requests (PreloadBlobSource), the files inside it
// are read through the CachedFileReader (decoded, verified, stored), and the window is
// dropped. Files already cached are skipped, so a remount fetches nothing again.
//
// Without any prefetch set, `auto` prefetches what the container's command needs to start
// instead (store/startup_prefetch.h).
//
// Demand reads are never queued behind prefetch: they go straight to the registry for
// anything outside the current window.

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fetch/preload_source.h"
#include "index/merged_view.h"
#include "store/cached_reader.h"
#include "util/status.h"

namespace imagefs::store {

struct PrefetchOptions {
  bool all = false;                // also every file outside the prefetch sets
  uint64_t window = 32ull << 20;   // bytes of blob fetched per batch
  const std::atomic<bool>* stop = nullptr;  // checked between files
};

struct PrefetchStats {
  uint64_t files = 0;          // files read
  uint64_t bytes = 0;          // their bytes
  uint64_t skipped = 0;        // files already cached
  uint64_t preloaded = 0;      // blob bytes fetched in windows
};

// preload(layer) gives the layer's PreloadBlobSource, or null when the layer is not
// fetched through one (it is then read file by file).
using PreloadFor = std::function<fetch::PreloadBlobSource*(uint32_t layer)>;

// Whether ino is a file of its layer's prefetch set (ends below the layer's prefetch_end).
bool InPrefetchSet(const index::MergedView& view, index::Ino ino);

// Whether any layer has a prefetch set (an eStargz landmark, a convert --prefetch-profile).
bool HasPrefetchSet(const index::MergedView& view);

// The inodes prefetch would read, in order (for tests and `--prefetch` reporting).
std::vector<index::Ino> PrefetchOrder(const index::MergedView& view, bool all);

// A prefetch profile as `imagefs convert --prefetch-profile` reads it: one absolute path
// per line, in the given order (the first name of a hard-linked file).
std::string ProfileText(const index::MergedView& view, const std::vector<index::Ino>& order);

Result<PrefetchStats> Prefetch(const index::MergedView& view, CachedFileReader& reader,
                               const PreloadFor& preload, const PrefetchOptions& options);

}  // namespace imagefs::store
