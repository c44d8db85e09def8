#pragma once

// CachedFileReader: reads the files of an image's merged tree through the chunk store, so
// each byte crosses the network once and identical bytes are stored once across layers,
// images and formats.
//
// A file is cut into content chunks, each stored under the sha256 of its bytes:
//   - when the layer's index gives a digest for each of the file's own chunks (eStargz and
//     zstd:chunked `chunkDigest`), those chunks;
//   - otherwise (plain gzip, zstd and tar layers, whose digests cover spans of the tar
//     stream) the file's bytes in 4 MiB pieces from offset 0 — the grid `imagefs convert`
//     chunks files on, so an image and its converted twin store the same chunks. Their
//     digests are learnt when first read and remembered as aliases (a key derived from
//     the layer digest and the file's place in the layer -> the chunk digest).
// A read takes what the store has; the missing chunks of the read, neighbours together,
// are read through the merged view in one call (which coalesces their ranges into one
// request and verifies every span), then stored. Concurrent reads of one missing chunk
// share one fill. Stores happen on a background thread so a cold read does not wait for
// fsync; until a chunk is committed it is served from memory. A full disk (or any store
// error) only means the bytes are served uncached, with one warning in the log.
//
// Layers read from local files (a pulled blob, an oci: directory) can be left out of the
// cache (`cache_layer`): their bytes are already on disk.
//
// Thread safety: Read may be called from many threads at once.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "index/merged_view.h"
#include "store/chunk_store.h"
#include "util/digest.h"
#include "util/single_flight.h"
#include "util/status.h"

namespace imagefs::store {

inline constexpr uint64_t kContentChunkSize = 4ull << 20;

struct CachedReadStats {
  uint64_t hit_bytes = 0;      // bytes served from the store (or from a pending store)
  uint64_t filled_bytes = 0;   // bytes of chunks read through the view on a miss
  uint64_t uncached_bytes = 0; // bytes read through the view from layers not cached
  uint64_t stored_chunks = 0;  // chunks committed to the store
  uint64_t store_errors = 0;   // chunks that could not be stored
};

class CachedFileReader {
 public:
  // Borrows view and store (store may be null: every read goes to the view).
  // cache_layer[i] says whether layer i (bottom first) is read through the store; missing
  // entries mean yes.
  CachedFileReader(const index::MergedView& view, ChunkStore* store, std::vector<bool> cache_layer);
  ~CachedFileReader();  // waits for pending stores
  CachedFileReader(const CachedFileReader&) = delete;
  CachedFileReader& operator=(const CachedFileReader&) = delete;

  // As MergedView::ReadFile: up to out.size() bytes at offset, short only at the end.
  Result<size_t> Read(index::Ino ino, uint64_t offset, std::span<uint8_t> out);
  // Whether the calling thread's last Read had to read its layer (a chunk was neither
  // stored nor pending; a layer left out of the cache always does).
  static bool LastReadMissed();
  // Whether every byte of the file would be served without reading its layer (all its
  // chunks stored or pending). False for layers left out of the cache.
  bool IsCached(index::Ino ino);
  // Waits until every chunk read so far has been stored (or failed to be).
  void Flush();
  CachedReadStats Stats() const;

  // Remembers the order in which files are first read (for --record-profile): every file
  // read through Read, cached or not, once.
  void RecordReadOrder();
  std::vector<index::Ino> ReadOrder() const;

 private:
  struct ContentChunk {
    uint64_t file_offset = 0;
    uint64_t length = 0;
    Digest digest;     // known up front (chunkDigest), else empty
    Digest alias_key;  // set when the digest is learnt by reading
  };
  using Bytes = std::shared_ptr<const std::string>;

  // The file's content chunks that overlap [from, to).
  Result<std::vector<ContentChunk>> ChunksOf(const index::MergedView::Origin& origin,
                                             uint64_t size, uint64_t from, uint64_t to) const;
  // Reads chunks [first, last] of the file through the view in one call and queues them
  // for storing; returns their bytes in order.
  Result<std::vector<Bytes>> Fill(index::Ino ino, const std::vector<ContentChunk>& chunks,
                                  size_t first, size_t last);
  void Enqueue(const ContentChunk& chunk, Bytes bytes);
  void StoreLoop();

  const index::MergedView& view_;
  ChunkStore* store_;
  std::vector<bool> cache_layer_;
  SingleFlight<std::string, std::vector<Bytes>> fills_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  struct PendingStore {
    ContentChunk chunk;
    Bytes bytes;
  };
  std::deque<PendingStore> queue_;
  std::map<std::string, Bytes> pending_;  // chunk digest or alias key -> bytes not yet stored
  uint64_t pending_bytes_ = 0;
  bool busy_ = false;
  bool stop_ = false;
  bool warned_ = false;
  CachedReadStats stats_;
  bool recording_ = false;
  std::vector<index::Ino> read_order_;
  std::vector<bool> seen_;  // by inode, while recording
  std::thread writer_;
};

}  // namespace imagefs::store
