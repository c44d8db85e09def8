#pragma once

// Content-addressed chunk cache: a chunk is the uncompressed bytes of one piece of a file,
// named by their sha256, so identical bytes are stored once across layers, images and
// formats. Layout under the store's dir:
//   sha256/<2 hex>/<64 hex>   committed chunks (visible only once complete and verified)
//   wip/                      chunks being written, named <hex>.<pid>.<n> (a writer's leftovers
//                             are removed at Open once its process is gone: a crash leaves nothing)
//   aliases/<2 hex>/<64 hex>  "sha256:<hex>\n": which chunk holds the bytes a key names, for
//                             formats that give no chunk digest (see store/cached_reader.h).
//                             Not fsync'ed: a lost alias only costs a refetch.
//
// Writes are transactions: Begin -> Write... -> Commit (verify the digest, fsync, rename).
// Size is bounded: past the capacity the least recently used unpinned chunks are evicted.
// A Pin keeps a chunk from eviction while a read or copy-up uses it.
// Restart cost is one stat per chunk (no rehash); LRU order survives restarts through
// mtimes, refreshed at most once a minute per chunk.
//
// Several processes may share one store (a mount and a `cat`): each keeps its own LRU
// accounting of what it saw at Open and wrote since, so a chunk another process evicted
// reads as kNotFound (callers refetch) and the bound is kept per process.
//
// Thread safety: every method may be called from many threads. Lock order: mu_ only.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "store/file_io.h"
#include "util/digest.h"
#include "util/status.h"

namespace imagefs::store {

struct ChunkStoreOptions {
  std::string dir;
  uint64_t capacity_bytes = 10ull << 30;  // --cache-size; 10 GiB by default
  IoEngine io = IoEngine::kAuto;
};

struct ChunkStoreStats {
  uint64_t chunks = 0;
  uint64_t bytes = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
};

class ChunkWriter {
 public:
  virtual ~ChunkWriter() = default;  // aborts unless committed
  ChunkWriter(const ChunkWriter&) = delete;
  ChunkWriter& operator=(const ChunkWriter&) = delete;
  virtual Status Write(std::span<const uint8_t> data) = 0;
  // Verifies the sha256, fsyncs, renames into place. On mismatch nothing becomes visible.
  virtual Status Commit() = 0;

 protected:
  ChunkWriter() = default;
};

class ChunkStore;

// Keeps one chunk from eviction while alive. Move-only.
class ChunkPin {
 public:
  ChunkPin() = default;
  ChunkPin(ChunkPin&& other) noexcept;
  ChunkPin& operator=(ChunkPin&& other) noexcept;
  ChunkPin(const ChunkPin&) = delete;
  ChunkPin& operator=(const ChunkPin&) = delete;
  ~ChunkPin();

 private:
  friend class ChunkStore;
  ChunkPin(ChunkStore* store, std::string hex) : store_(store), hex_(std::move(hex)) {}
  ChunkStore* store_ = nullptr;
  std::string hex_;
};

class ChunkStore {
 public:
  static Result<std::unique_ptr<ChunkStore>> Open(const ChunkStoreOptions& options);
  ~ChunkStore();
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  bool Contains(const Digest& digest);
  // The whole chunk; kNotFound when absent.
  Result<std::string> Get(const Digest& digest);
  // Part of a chunk; returns the count read (short only at the chunk's end).
  Result<size_t> Read(const Digest& digest, uint64_t offset, std::span<uint8_t> out);
  Result<std::unique_ptr<ChunkWriter>> Begin(const Digest& digest);
  // Begin + Write + Commit. Already present: ok, nothing written.
  Status Put(const Digest& digest, std::span<const uint8_t> data);
  // kNotFound when absent.
  Result<ChunkPin> Pin(const Digest& digest);
  Status Remove(const Digest& digest);
  ChunkStoreStats Stats();
  // Evicts unpinned chunks, least recently used first, until at most target_bytes remain
  // (prune: 0). Returns the bytes freed.
  // With target 0 the aliases go too.
  uint64_t Trim(uint64_t target_bytes);

  // Aliases: `key` names bytes stored as chunk `target` (written atomically).
  Status PutAlias(const Digest& key, const Digest& target);
  // kNotFound when there is no alias (or it names a chunk no longer stored).
  Result<Digest> LookupAlias(const Digest& key);
  const char* io_engine() const;

 private:
  friend class ChunkPin;
  friend class ChunkWriterImpl;
  struct Impl;
  explicit ChunkStore(std::unique_ptr<Impl> impl);
  void Unpin(const std::string& hex);
  std::unique_ptr<Impl> impl_;
};

}  // namespace imagefs::store
