#pragma once

// Content-addressed blob directory under --root: blobs/sha256/<hex>. Whole blobs
// (manifests, configs, pulled layers) live here; chunks get their own store later.
//
// Writes are transactions: bytes go to tmp/<random>, are hashed as they arrive, and are
// renamed into blobs/ only after the size and digest match, so a reader never sees a
// partial or unverified blob. Stale tmp/ files from a killed process are removed at Open.
// Thread safety: Open'd stores may be used from many threads; each BlobWriter by one.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "util/digest.h"
#include "util/status.h"

namespace imagefs::store {

class BlobWriter {
 public:
  virtual ~BlobWriter() = default;  // aborts when not committed
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;
  virtual Status Write(std::span<const uint8_t> data) = 0;
  // Verifies size and digest, fsyncs, renames into place. On mismatch the temp file is
  // removed and kCorruption names both digests.
  virtual Status Commit() = 0;
  virtual uint64_t written() const = 0;

 protected:
  BlobWriter() = default;
};

class BlobStore {
 public:
  // Creates <root>/blobs/sha256 and <root>/tmp as needed.
  static Result<std::unique_ptr<BlobStore>> Open(const std::string& root);
  virtual ~BlobStore() = default;
  BlobStore(const BlobStore&) = delete;
  BlobStore& operator=(const BlobStore&) = delete;

  virtual bool Has(const Digest& digest) const = 0;
  virtual std::string PathOf(const Digest& digest) const = 0;
  // expected_size < 0: not checked.
  virtual Result<std::unique_ptr<BlobWriter>> Begin(const Digest& expected,
                                                    int64_t expected_size) = 0;
  // Convenience: writes a small blob in one go (verifying it).
  Status Put(const Digest& expected, std::string_view bytes);
  virtual Result<std::string> Get(const Digest& digest) const = 0;
  // Unlinks a blob; a missing one is fine. Names live in the metadata store
  // (store/metadata_store.h), which says which blobs no image uses any more.
  virtual Status Remove(const Digest& digest) = 0;

 protected:
  BlobStore() = default;
};

}  // namespace imagefs::store
