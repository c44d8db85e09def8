#include "fetch/preload_source.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace imagefs::fetch {

Status PreloadBlobSource::Preload(ByteRange range, uint64_t part) {
  const uint64_t size = inner_->Size();
  const uint64_t begin = std::min(range.offset, size);
  const uint64_t end = std::min(range.end(), size);
  {
    // A window that holds the range already (or is being fetched and will) serves it: an
    // early preload started before the index was open is not fetched again.
    std::unique_lock<std::mutex> lock(mu_);
    if (loading_ && loading_begin_ <= begin && end <= loading_end_) {
      loaded_.wait(lock, [this] { return !loading_; });
    }
    if (window_ && window_offset_ <= begin && end <= window_offset_ + window_->size()) {
      return Status::Ok();
    }
    loading_ = true;
    loading_begin_ = begin;
    loading_end_ = end;
    window_.reset();
  }
  auto bytes = std::make_shared<std::string>(end - begin, '\0');
  std::vector<ByteRange> parts;
  std::vector<std::span<uint8_t>> outs;
  for (uint64_t off = begin; off < end; off += part) {
    const uint64_t len = std::min(part, end - off);
    parts.push_back({off, len});
    outs.emplace_back(reinterpret_cast<uint8_t*>(bytes->data()) + (off - begin), len);
  }
  Status st = parts.empty() ? Status::Ok() : inner_->ReadRanges(parts, outs);
  std::lock_guard<std::mutex> lock(mu_);
  loading_ = false;
  loaded_.notify_all();
  RETURN_IF_ERROR(st);
  window_ = std::move(bytes);
  window_offset_ = begin;
  total_preloaded_ += end - begin;
  return Status::Ok();
}

void PreloadBlobSource::Drop() {
  std::lock_guard<std::mutex> lock(mu_);
  window_.reset();
}

uint64_t PreloadBlobSource::preloaded_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_preloaded_;
}

bool PreloadBlobSource::FromWindow(uint64_t offset, std::span<uint8_t> out) const {
  std::shared_ptr<const std::string> window;
  uint64_t start;
  {
    std::lock_guard<std::mutex> lock(mu_);
    window = window_;
    start = window_offset_;
  }
  if (!window || offset < start || offset + out.size() > start + window->size()) return false;
  std::memcpy(out.data(), window->data() + (offset - start), out.size());
  return true;
}

Result<size_t> PreloadBlobSource::ReadAt(uint64_t offset, std::span<uint8_t> out) {
  const uint64_t size = inner_->Size();
  if (offset >= size) return size_t{0};
  std::span<uint8_t> want = out.first(std::min<uint64_t>(out.size(), size - offset));
  if (FromWindow(offset, want)) return want.size();
  return inner_->ReadAt(offset, out);
}

Status PreloadBlobSource::ReadRanges(std::span<const ByteRange> ranges,
                                     std::span<const std::span<uint8_t>> outs) {
  std::vector<ByteRange> rest;
  std::vector<std::span<uint8_t>> rest_outs;
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (!FromWindow(ranges[i].offset, outs[i])) {
      rest.push_back(ranges[i]);
      rest_outs.push_back(outs[i]);
    }
  }
  if (rest.empty()) return Status::Ok();
  return inner_->ReadRanges(rest, rest_outs);
}

}  // namespace imagefs::fetch
