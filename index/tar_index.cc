#include <algorithm>

#include "index/readers.h"
#include "index/coding.h"
#include "index/toc_util.h"

namespace imagefs::index::internal {

Status MapToSpans(const std::vector<Span>& spans, uint64_t data_offset, uint64_t size,
                  std::vector<ChunkRef>& out) {
  auto it = std::upper_bound(spans.begin(), spans.end(), data_offset,
                             [](uint64_t off, const Span& s) { return off < s.out_offset; });
  if (it == spans.begin()) return Status::Internal("layer index: no span before a file");
  --it;
  uint64_t pos = data_offset;
  const uint64_t end = data_offset + size;
  for (; pos < end; ++it) {
    if (it == spans.end() || it->out_offset > pos ||
        pos >= it->out_offset + it->out_length) {
      return Status::Corruption("layer data ends inside a file (at stream offset " +
                                std::to_string(pos) + ")");
    }
    uint64_t take = std::min(end, it->out_offset + it->out_length) - pos;
    ChunkRef c;
    c.codec = it->codec;
    c.blob_offset = it->blob_offset;
    c.blob_length = it->blob_length;
    c.skip = it->skip;
    c.span_length = it->out_length;
    c.inner_offset = pos - it->out_offset;
    c.file_offset = pos - data_offset;
    c.length = take;
    c.checkpoint = it->checkpoint;
    c.has_digest = true;
    c.sha256 = it->sha256;
    out.push_back(c);
    pos += take;
  }
  return Status::Ok();
}

std::array<uint8_t, 32> FinishRaw(std::unique_ptr<Sha256>& hash) {
  auto raw = RawSha256(hash->Finish());
  hash = std::make_unique<Sha256>();
  return raw;
}

Result<std::unique_ptr<FlatLayerIndex>> BuildTarIndex(fetch::BlobSource& source,
                                                      const std::string& layer_digest) {
  constexpr size_t kMinRead = 64 << 10;
  constexpr size_t kMaxRead = 1 << 20;
  TreeBuilder builder;
  TarScanner scanner([&](const TarEntry& e) { return builder.Add(e); });
  const uint64_t size = source.Size();
  RETURN_IF_ERROR(ScanTarHeaders(scanner, size, {kMinRead, kMaxRead},
                                 [&](uint64_t pos, std::span<uint8_t> buf) {
                                   return source.ReadAt(pos, buf);
                                 }));
  auto map = [size](uint64_t data_offset, uint64_t len, std::vector<ChunkRef>& out) -> Status {
    if (data_offset > size || len > size - data_offset) {
      return Status::Corruption("tar data of a file runs past the end of the blob");
    }
    ChunkRef c;
    c.codec = Codec::kNone;
    c.blob_offset = data_offset;
    c.blob_length = len;
    c.span_length = len;
    c.length = len;
    out.push_back(c);
    return Status::Ok();
  };
  return builder.Finish(map, LayerFormat::kTar, size, layer_digest, nullptr);
}

Status PendingEntries::Admit(const TarEntry& entry) {
  RETURN_IF_ERROR(builder_.Add(entry));
  // Whiteouts and opaque markers sit where their writer puts them (at NAME's place, or
  // where ".wh.NAME" sorts): they neither move the frontier nor break the order.
  const size_t slash = entry.path.rfind('/');
  const std::string_view base =
      slash == std::string::npos ? std::string_view(entry.path)
                                 : std::string_view(entry.path).substr(slash + 1);
  if (base.starts_with(".wh.")) return Status::Ok();
  if (any_ && CompareWalkOrder(entry.path, frontier_.last) <= 0) frontier_.walk_order = false;
  if (any_ && entry.path.compare(frontier_.last) <= 0) frontier_.path_order = false;
  frontier_.last = entry.path;
  any_ = true;
  return Status::Ok();
}

Status PendingEntries::Add(const TarEntry& entry) {
  if (!hold_back_) return builder_.Add(entry);
  held_.push_back(entry);
  return Status::Ok();
}

Status PendingEntries::Release(uint64_t passed) {
  while (!held_.empty() && held_.front().data_offset + held_.front().size <= passed) {
    RETURN_IF_ERROR(Admit(held_.front()));
    held_.pop_front();
  }
  return Status::Ok();
}

}  // namespace imagefs::index::internal
