#include "fetch/preload_source.h"

#include <algorithm>
#include <cstring>
#include <future>
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
  std::vector<Part> parts;
  for (uint64_t off = begin; off < end;) {
    const uint64_t len = std::min(parts.empty() ? std::min(kHeadPart, part) : part, end - off);
    parts.push_back({off, off + len, false, false});
    off += len;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    loading_bytes_ = bytes;
    parts_ = parts;
  }
  // Each part is its own request, all at once, and is served as soon as it is in.
  auto fetch_part = [this, bytes, begin](size_t k, Part p) {
    const ByteRange range{p.begin, p.end - p.begin};
    const std::span<uint8_t> out(reinterpret_cast<uint8_t*>(bytes->data()) + (p.begin - begin),
                                 p.end - p.begin);
    Status st = inner_->ReadRanges(std::span<const ByteRange>(&range, 1),
                                   std::span<const std::span<uint8_t>>(&out, 1));
    std::lock_guard<std::mutex> lock(mu_);
    if (loading_bytes_ == bytes && k < parts_.size()) {
      parts_[k].done = true;
      parts_[k].failed = !st.ok();
    }
    loaded_.notify_all();
    return st;
  };
  std::vector<std::future<Status>> pending;
  for (size_t k = 1; k < parts.size(); ++k) {
    pending.push_back(std::async(std::launch::async, fetch_part, k, parts[k]));
  }
  Status st = parts.empty() ? Status::Ok() : fetch_part(0, parts[0]);
  for (auto& f : pending) {
    Status part_status = f.get();
    if (st.ok()) st = std::move(part_status);
  }
  std::lock_guard<std::mutex> lock(mu_);
  loading_ = false;
  loading_bytes_.reset();
  parts_.clear();
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
  const uint64_t end = offset + out.size();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (window_ && offset >= window_offset_ && end <= window_offset_ + window_->size()) {
      std::memcpy(out.data(), window_->data() + (offset - window_offset_), out.size());
      return true;
    }
    if (!loading_ || !loading_bytes_ || offset < loading_begin_ || end > loading_end_) return false;
    // Inside the window being fetched: served once the parts holding it are in.
    bool ready = true;
    for (const Part& p : parts_) {
      if (p.end <= offset || p.begin >= end) continue;
      if (p.failed) return false;
      ready = ready && p.done;
    }
    if (ready) {
      std::memcpy(out.data(), loading_bytes_->data() + (offset - loading_begin_), out.size());
      return true;
    }
    loaded_.wait(lock);
  }
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
