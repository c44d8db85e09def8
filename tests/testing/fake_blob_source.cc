#include "tests/testing/fake_blob_source.h"

#include <algorithm>
#include <cstring>

namespace imagefs::testing {

FakeBlobSource::FakeBlobSource(std::string data, std::string name)
    : data_(std::move(data)), name_(std::move(name)) {}

uint64_t FakeBlobSource::Size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_.size();
}

Result<size_t> FakeBlobSource::ReadAt(uint64_t offset, std::span<uint8_t> out) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.push_back({false, {{offset, out.size()}}});
  if (fail_next_ > 0) {
    --fail_next_;
    return fail_status_;
  }
  if (offset >= data_.size()) return size_t{0};
  size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), data_.size() - offset));
  std::memcpy(out.data(), data_.data() + offset, n);
  bytes_served_ += n;
  return n;
}

Status FakeBlobSource::ReadRanges(std::span<const fetch::ByteRange> ranges,
                                  std::span<const std::span<uint8_t>> outs) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.push_back({true, std::vector<fetch::ByteRange>(ranges.begin(), ranges.end())});
  if (fail_next_ > 0) {
    --fail_next_;
    return fail_status_;
  }
  if (ranges.size() != outs.size()) return Status::Internal("ReadRanges: size mismatch");
  for (size_t i = 0; i < ranges.size(); ++i) {
    const fetch::ByteRange& r = ranges[i];
    if (r.offset > data_.size() || r.length > data_.size() - r.offset ||
        outs[i].size() != r.length) {
      return Status::Corruption(name_ + ": range " + std::to_string(r.offset) + "+" +
                                std::to_string(r.length) + " is past the end");
    }
  }
  for (size_t i = 0; i < ranges.size(); ++i) {
    std::memcpy(outs[i].data(), data_.data() + ranges[i].offset, ranges[i].length);
    bytes_served_ += ranges[i].length;
  }
  return Status::Ok();
}

void FakeBlobSource::FailNextReads(int n, Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_next_ = n;
  fail_status_ = std::move(status);
}

void FakeBlobSource::FlipByte(uint64_t offset, uint8_t mask) {
  std::lock_guard<std::mutex> lock(mu_);
  data_.at(offset) = static_cast<char>(data_.at(offset) ^ mask);
}

std::vector<FakeBlobSource::Call> FakeBlobSource::calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_;
}

size_t FakeBlobSource::call_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

uint64_t FakeBlobSource::bytes_served() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_served_;
}

void FakeBlobSource::ResetCounters() {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.clear();
  bytes_served_ = 0;
}

}  // namespace imagefs::testing
