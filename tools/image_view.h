#pragma once

// An image's merged root filesystem, opened for the commands that read it without a mount
// (ls, cat; later diff). An image `pull` stored whole is read from the store without asking
// the registry (so it works offline); otherwise the manifest comes from the source and each
// layer from the blob store when it is there, else from the source by range reads; layer
// indexes that had to be built (plain gzip / zstd / tar layers) are cached under
// --root/indexes. File bytes of layers read from a registry go through the chunk cache
// (store/cached_reader.h): read once, kept, shared with every image holding the same bytes.

#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "fetch/preload_source.h"
#include "index/merged_view.h"
#include "store/cached_reader.h"
#include "store/chunk_store.h"
#include "tools/command.h"

namespace imagefs::fetch {
class StreamedBlobSource;
}

namespace imagefs::tools {

// Layer scans that go on behind a progressive view. Going away, it stops their streams
// (so a scan waiting for a registry that does not answer ends) and waits for them.
class BackgroundScans {
 public:
  BackgroundScans() = default;
  BackgroundScans(BackgroundScans&&) = default;
  BackgroundScans& operator=(BackgroundScans&&) = default;
  ~BackgroundScans();
  void Add(std::future<Status> scan, std::shared_ptr<fetch::StreamedBlobSource> stream);
  // Set before the streams are stopped, so a scan ending then does not log an error.
  std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);

 private:
  std::vector<std::future<Status>> scans_;
  std::vector<std::shared_ptr<fetch::StreamedBlobSource>> streams_;
};

// Members are destroyed bottom up: the reader (which flushes its pending stores) before
// the chunk store and the view it borrows.
struct ImageView {
  OpenedImage opened;
  std::unique_ptr<index::MergedView> view;
  std::unique_ptr<store::ChunkStore> chunks;       // --root/chunks; null if it can't open
  std::unique_ptr<store::CachedFileReader> reader;  // reads files; registry layers via chunks
  // Bytes read from the registry through the layers' sources since the view was opened
  // (the indexes' footers and TOCs included).
  std::shared_ptr<std::atomic<uint64_t>> fetched_bytes = std::make_shared<std::atomic<uint64_t>>(0);
  // Per layer, bottom first: the registry layer's source, able to fetch a window ahead for
  // prefetch (store/prefetch.h); null for layers read from local files.
  std::vector<fetch::PreloadBlobSource*> preloaders;
  // Windows fetched from the start, before the indexes were open (OpenImageView's
  // early_preload); last, so they end before anything they use goes.
  std::vector<std::future<Status>> early_preloads;
  // Scans of layers the view serves while they go on (OpenImageView's progressive); last,
  // so they end first.
  BackgroundScans background_scans;
};

// The chunk cache under --root/chunks, bounded by --cache-size.
Result<std::unique_ptr<store::ChunkStore>> OpenChunkStore(const GlobalOptions& global);

// Which copy of an image to use, as docker run's --pull: kMissing uses a stored (pulled)
// image without asking the registry, else the registry's; kAlways asks the registry even
// when the image is stored (its stored layers are still read locally); kNever uses only
// a stored image and fails when there is none.
enum class PullPolicy { kMissing, kAlways, kNever };
// "missing", "always", "never" (docker's words).
Result<PullPolicy> ParsePullPolicy(const std::string& text);

// progressive (mounts): a plain gzip layer nobody indexed is served while it is scanned
// (index/progressive_view.h): the view is returned once each such layer has a first
// snapshot, and the scans go on in ImageView::background_scans.
// early_preload: a registry layer whose descriptor names where its prefetch set ends
// (index::kPrefetchEndAnnotation, written by `imagefs convert`) starts fetching that range
// into its preloader at once, beside its index (the mount's prefetch then finds it there).
Result<ImageView> OpenImageView(const GlobalOptions& global, const std::string& name,
                                const std::string& platform,
                                PullPolicy policy = PullPolicy::kMissing,
                                bool early_preload = false, bool progressive = false);

}  // namespace imagefs::tools
