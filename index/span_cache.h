#pragma once

// SpanCache: decoded, verified spans of plain gzip and zstd layers, kept for the next read.
//
// Such a span (~4 MiB of tar between two restart points) holds the bytes of many files.
// Without a cache, the first read of each file in it, and each 128 KiB-1 MiB FUSE read of
// a pulled gzip layer's file, fetched and decoded the whole span again (python's ~170
// imports decoded the same few spans over and over). Every compressed span a read decodes
// is kept (an eStargz or zstd:chunked chunk too: a pulled layer's 4 MiB chunk read in
// 1 MiB pieces was decoded four times); files of registry layers are also kept, by their
// content, in the chunk cache (store/cached_reader.h), which this does not replace.
//
// LRU, bounded in decoded bytes. A span is immutable once put; readers share it.
// Thread safety: every method may be called concurrently.

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace imagefs::index {

class SpanCache {
 public:
  using Span = std::shared_ptr<const std::vector<uint8_t>>;

  explicit SpanCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}
  SpanCache(const SpanCache&) = delete;
  SpanCache& operator=(const SpanCache&) = delete;

  // The span of layer `layer` that starts at `blob_offset`, or null.
  Span Get(uint32_t layer, uint64_t blob_offset);
  // Keeps `span`, evicting the least recently used ones beyond the capacity (a span larger
  // than the capacity is not kept).
  void Put(uint32_t layer, uint64_t blob_offset, Span span);

  uint64_t hits() const;
  uint64_t misses() const;

 private:
  using Key = std::pair<uint32_t, uint64_t>;
  struct Entry {
    Span span;
    std::list<Key>::iterator lru;
  };

  const size_t capacity_;
  mutable std::mutex mu_;
  std::map<Key, Entry> entries_;
  std::list<Key> lru_;  // front: most recently used
  size_t bytes_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace imagefs::index
