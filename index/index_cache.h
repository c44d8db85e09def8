#pragma once

// IndexCache: where built layer indexes are kept, by layer digest, so a layer without an
// index of its own (plain gzip, zstd, tar) is scanned once. store/ will implement it in
// its metadata store; MakeDirectoryIndexCache serves until then (and in tests).
//
// The cache holds opaque bytes (FlatLayerIndex::EncodeTo); the reader checks them, so a
// damaged entry is rebuilt, never trusted.
//
// Thread safety: implementations must allow concurrent calls.

#include <memory>
#include <string>
#include <string_view>

#include "util/status.h"

namespace imagefs::index {

class IndexCache {
 public:
  IndexCache() = default;
  virtual ~IndexCache() = default;
  IndexCache(const IndexCache&) = delete;
  IndexCache& operator=(const IndexCache&) = delete;

  // The bytes stored for the layer, or kNotFound.
  virtual Result<std::string> Get(std::string_view layer_digest) = 0;
  // Stores (or replaces) the bytes; readers never see a half-written entry.
  virtual Status Put(std::string_view layer_digest, std::string_view bytes) = 0;
};

// One file per layer, "<dir>/<algorithm>/<hex>.index", written to a temporary name and
// renamed in. The directory is created on first Put.
std::unique_ptr<IndexCache> MakeDirectoryIndexCache(std::string dir);

}  // namespace imagefs::index
