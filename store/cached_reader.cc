#include "store/cached_reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "util/log.h"

namespace imagefs::store {
namespace {

constexpr uint64_t kMaxPendingBytes = 256ull << 20;  // past this, fills are served, not stored

std::string KeyOf(const Digest& digest, const Digest& alias_key) {
  return digest.empty() ? alias_key.String() : digest.String();
}

thread_local bool t_last_read_missed = false;

}  // namespace

bool CachedFileReader::LastReadMissed() { return t_last_read_missed; }

CachedFileReader::CachedFileReader(const index::MergedView& view, ChunkStore* store,
                                   std::vector<bool> cache_layer)
    : view_(view), store_(store), cache_layer_(std::move(cache_layer)) {
  if (store_ != nullptr) writer_ = std::thread([this] { StoreLoop(); });
}

CachedFileReader::~CachedFileReader() {
  if (!writer_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  writer_.join();
}

CachedReadStats CachedFileReader::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachedFileReader::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return (queue_.empty() && !busy_) || !writer_.joinable(); });
}

Result<std::vector<CachedFileReader::ContentChunk>> CachedFileReader::ChunksOf(
    const index::MergedView::Origin& origin, uint64_t size, uint64_t from, uint64_t to) const {
  const index::LayerIndex& layer = *view_.layers()[origin.layer].index;
  std::span<const index::ChunkRef> refs = layer.Chunks(origin.node);
  std::vector<ContentChunk> out;
  if (refs.empty()) return out;
  const bool digested = std::all_of(refs.begin(), refs.end(), [](const index::ChunkRef& r) {
    return r.has_digest && r.chunk_digest;
  });
  if (digested) {
    // Refs are in file order: skip to the first that reaches `from`.
    auto it = std::partition_point(refs.begin(), refs.end(), [&](const index::ChunkRef& r) {
      return r.file_offset + r.length <= from;
    });
    for (; it != refs.end() && it->file_offset < to; ++it) {
      const index::ChunkRef& r = *it;
      ContentChunk c;
      c.file_offset = r.file_offset;
      c.length = r.length;
      c.digest = r.SpanDigest();
      out.push_back(std::move(c));
    }
    return out;
  }
  if (layer.layer_digest().empty()) return Status::NotFound("layer without a digest");
  // The file's place in its (immutable, content-addressed) layer names its bytes.
  const index::ChunkRef& first = refs.front();
  const std::string where = "imagefs-alias-v1\n" + layer.layer_digest() + "\n" +
                            std::to_string(first.blob_offset) + "," + std::to_string(first.skip) +
                            "," + std::to_string(first.inner_offset) + "," +
                            std::to_string(first.checkpoint) + "," + std::to_string(size) + "\n";
  for (uint64_t off = from - from % kContentChunkSize; off < std::min(size, to);
       off += kContentChunkSize) {
    ContentChunk c;
    c.file_offset = off;
    c.length = std::min(kContentChunkSize, size - off);
    c.alias_key = Digest::Sha256Of(where + std::to_string(off) + "+" + std::to_string(c.length));
    out.push_back(std::move(c));
  }
  return out;
}

bool CachedFileReader::IsCached(index::Ino ino) {
  auto origin = view_.OriginOf(ino);
  auto attr = view_.Attr(ino);
  if (!origin.ok() || !attr.ok() || store_ == nullptr ||
      (origin->layer < cache_layer_.size() && !cache_layer_[origin->layer])) {
    return false;
  }
  auto chunks = ChunksOf(*origin, attr->size, 0, attr->size);
  if (!chunks.ok()) return false;
  for (const ContentChunk& c : *chunks) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (pending_.count(KeyOf(c.digest, c.alias_key)) != 0) continue;
    }
    if (c.digest.empty()) {
      if (!store_->LookupAlias(c.alias_key).ok()) return false;
    } else if (!store_->Contains(c.digest)) {
      return false;
    }
  }
  return true;
}

void CachedFileReader::RecordReadOrder() {
  std::lock_guard<std::mutex> lock(mu_);
  recording_ = true;
  seen_.assign(view_.InodeCount() + 1, false);
}

std::vector<index::Ino> CachedFileReader::ReadOrder() const {
  std::lock_guard<std::mutex> lock(mu_);
  return read_order_;
}

Result<size_t> CachedFileReader::Read(index::Ino ino, uint64_t offset, std::span<uint8_t> out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A progressive view hands out numbers as names are found: the table grows.
    if (recording_ && ino >= seen_.size() && ino <= view_.InodeCount()) seen_.resize(ino + 1, false);
    if (recording_ && ino < seen_.size() && !seen_[ino]) {
      seen_[ino] = true;
      read_order_.push_back(ino);
    }
  }
  ASSIGN_OR_RETURN(index::MergedView::Origin origin, view_.OriginOf(ino));
  const bool cached = store_ != nullptr &&
                      (origin.layer >= cache_layer_.size() || cache_layer_[origin.layer]);
  ASSIGN_OR_RETURN(index::NodeAttr attr, view_.Attr(ino));
  t_last_read_missed = false;
  auto uncached = [&]() -> Result<size_t> {
    t_last_read_missed = true;
    ASSIGN_OR_RETURN(size_t n, view_.ReadFile(ino, offset, out));
    std::lock_guard<std::mutex> lock(mu_);
    stats_.uncached_bytes += n;
    return n;
  };
  if (!cached || !S_ISREG(attr.mode)) return uncached();
  if (offset >= attr.size || out.empty()) return size_t{0};
  const uint64_t end = offset + std::min<uint64_t>(out.size(), attr.size - offset);
  // Only the chunks the read touches (a 1 MiB read of a large file names one or two).
  auto touched = ChunksOf(origin, attr.size, offset, end);
  if (!touched.ok()) return uncached();
  std::vector<ContentChunk>& chunks = *touched;
  if (chunks.empty() || chunks.front().file_offset > offset ||
      chunks.back().file_offset + chunks.back().length < end) {
    return Status::Corruption("inode " + std::to_string(ino) + ": chunks do not cover the file");
  }
  auto part = [&](const ContentChunk& c, uint64_t* from, uint64_t* to) {
    *from = std::max(offset, c.file_offset);
    *to = std::min(end, c.file_offset + c.length);
  };

  std::vector<bool> have(chunks.size(), false);
  uint64_t hit = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    uint64_t from, to;
    part(chunks[i], &from, &to);
    std::span<uint8_t> dst = out.subspan(from - offset, to - from);
    const std::string key = KeyOf(chunks[i].digest, chunks[i].alias_key);
    Bytes pending;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = pending_.find(key);
      if (it != pending_.end()) pending = it->second;
    }
    if (pending) {
      std::memcpy(dst.data(), pending->data() + (from - chunks[i].file_offset), dst.size());
      have[i] = true;
    } else {
      Digest digest = chunks[i].digest;
      if (digest.empty()) {
        auto found = store_->LookupAlias(chunks[i].alias_key);
        if (found.ok()) digest = *found;
      }
      if (!digest.empty()) {
        auto n = store_->Read(digest, from - chunks[i].file_offset, dst);
        have[i] = n.ok() && *n == dst.size();
      }
    }
    if (have[i]) hit += dst.size();
  }

  // Runs of missing chunks: one fill each.
  for (size_t i = 0; i < chunks.size();) {
    if (have[i]) {
      ++i;
      continue;
    }
    t_last_read_missed = true;
    size_t last = i;
    while (last + 1 < chunks.size() && !have[last + 1]) ++last;
    const std::string key = KeyOf(chunks[i].digest, chunks[i].alias_key) + "+" +
                            std::to_string(last - i);
    ASSIGN_OR_RETURN(std::vector<Bytes> filled,
                     fills_.Do(key, [&] { return Fill(ino, chunks, i, last); }));
    for (size_t k = i; k <= last; ++k) {
      uint64_t from, to;
      part(chunks[k], &from, &to);
      const std::string& bytes = *filled[k - i];
      std::memcpy(out.data() + (from - offset), bytes.data() + (from - chunks[k].file_offset),
                  to - from);
    }
    i = last + 1;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.hit_bytes += hit;
  }
  return static_cast<size_t>(end - offset);
}

Result<std::vector<CachedFileReader::Bytes>> CachedFileReader::Fill(
    index::Ino ino, const std::vector<ContentChunk>& chunks, size_t first, size_t last) {
  const uint64_t start = chunks[first].file_offset;
  const uint64_t length = chunks[last].file_offset + chunks[last].length - start;
  std::string buffer(length, '\0');
  ASSIGN_OR_RETURN(size_t n, view_.ReadFile(ino, start,
                                            std::span<uint8_t>(reinterpret_cast<uint8_t*>(buffer.data()),
                                                               buffer.size())));
  if (n != length) {
    return Status::Corruption("inode " + std::to_string(ino) + ": short read of " +
                              std::to_string(length) + " bytes at " + std::to_string(start));
  }
  std::vector<Bytes> out;
  for (size_t k = first; k <= last; ++k) {
    auto bytes = std::make_shared<const std::string>(
        buffer.substr(chunks[k].file_offset - start, chunks[k].length));
    Enqueue(chunks[k], bytes);
    out.push_back(std::move(bytes));
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.filled_bytes += length;
  return out;
}

void CachedFileReader::Enqueue(const ContentChunk& chunk, Bytes bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_bytes_ + bytes->size() > kMaxPendingBytes) return;  // served, not stored
    const std::string key = KeyOf(chunk.digest, chunk.alias_key);
    if (!pending_.emplace(key, bytes).second) return;
    pending_bytes_ += bytes->size();
    queue_.push_back({chunk, std::move(bytes)});
  }
  cv_.notify_all();
}

void CachedFileReader::StoreLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, nothing left
    PendingStore job = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();

    const std::span<const uint8_t> data(reinterpret_cast<const uint8_t*>(job.bytes->data()),
                                        job.bytes->size());
    Digest digest = job.chunk.digest.empty() ? Digest::Sha256Of(data) : job.chunk.digest;
    Status st = store_->Put(digest, data);
    if (st.ok() && !job.chunk.alias_key.empty()) st = store_->PutAlias(job.chunk.alias_key, digest);

    lock.lock();
    busy_ = false;
    pending_.erase(KeyOf(job.chunk.digest, job.chunk.alias_key));
    pending_bytes_ -= job.bytes->size();
    if (st.ok()) {
      stats_.stored_chunks += 1;
    } else {
      stats_.store_errors += 1;
      if (!warned_) {
        warned_ = true;
        LOG(kWarn) << "chunk cache: " << st.message() << " (reads are served uncached)";
      }
    }
    cv_.notify_all();
  }
}

}  // namespace imagefs::store
