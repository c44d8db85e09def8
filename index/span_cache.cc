#include "index/span_cache.h"

namespace imagefs::index {

SpanCache::Span SpanCache::Get(uint32_t layer, uint64_t blob_offset) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find({layer, blob_offset});
  if (it == entries_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return it->second.span;
}

void SpanCache::Put(uint32_t layer, uint64_t blob_offset, Span span) {
  if (!span || span->size() > capacity_) return;
  std::lock_guard<std::mutex> lock(mu_);
  const Key key{layer, blob_offset};
  if (entries_.count(key) != 0) return;  // another reader decoded it too
  lru_.push_front(key);
  bytes_ += span->size();
  entries_.emplace(key, Entry{std::move(span), lru_.begin()});
  while (bytes_ > capacity_ && !lru_.empty()) {
    auto victim = entries_.find(lru_.back());
    bytes_ -= victim->second.span->size();
    entries_.erase(victim);
    lru_.pop_back();
  }
}

uint64_t SpanCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

uint64_t SpanCache::misses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return misses_;
}

}  // namespace imagefs::index
