#pragma once

// FakeBlobSource: a BlobSource over bytes in memory that records every read, can fail the
// next N reads with a given Status, and counts the bytes it served, so tests assert what
// was fetched ("one request for two adjacent chunks", "nothing read on a cache hit").
// Thread-safe.

#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "fetch/blob_source.h"

namespace imagefs::testing {

class FakeBlobSource final : public fetch::BlobSource {
 public:
  struct Call {
    bool ranges = false;  // a ReadRanges call (else ReadAt)
    std::vector<fetch::ByteRange> requested;
  };

  explicit FakeBlobSource(std::string data, std::string name = "fake blob");

  uint64_t Size() const override;
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override;
  // Served directly (not through ReadAt) and recorded as one call.
  Status ReadRanges(std::span<const fetch::ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override;
  std::string Describe() const override { return name_; }

  // The next n calls (ReadAt or ReadRanges) fail with `status` and serve nothing.
  void FailNextReads(int n, Status status);
  // Changes one byte of the blob (to corrupt it under an index built earlier).
  void FlipByte(uint64_t offset, uint8_t mask = 0xff);

  std::vector<Call> calls() const;
  size_t call_count() const;
  uint64_t bytes_served() const;
  void ResetCounters();

 private:
  mutable std::mutex mu_;
  std::string data_;  // guarded by mu_ (FlipByte)
  const std::string name_;
  std::vector<Call> calls_;
  uint64_t bytes_served_ = 0;
  int fail_next_ = 0;
  Status fail_status_;
};

}  // namespace imagefs::testing
