// Plain gzip layers: one streaming pass decodes the blob, feeds the tar scanner, and
// leaves a restart point about every span_size bytes of output (see gzip_checkpoints.h).
//
// Checkpoints sit where zlib's Z_BLOCK flush stops: after a deflate block's end code
// (zs.data_type & 128) of a block that is not the member's last (& 64), with the count of
// bits of the last byte read that belong to the next block (& 7). Where a new gzip member
// begins and the span is long enough, a member-start checkpoint needs no window at all.

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "index/coding.h"
#include "index/progress.h"
#include "index/readers.h"

namespace imagefs::index::internal {
namespace {

constexpr size_t kInChunk = 1 << 20;
constexpr size_t kOutChunk = 256 << 10;

class InflateStream {
 public:
  InflateStream() = default;
  ~InflateStream() {
    if (live_) inflateEnd(&zs_);
  }
  InflateStream(const InflateStream&) = delete;
  InflateStream& operator=(const InflateStream&) = delete;
  Status Init(int window_bits) {
    if (inflateInit2(&zs_, window_bits) != Z_OK) return Status::Internal("inflateInit2 failed");
    live_ = true;
    return Status::Ok();
  }
  z_stream* get() { return &zs_; }

 private:
  z_stream zs_{};
  bool live_ = false;
};

}  // namespace

Result<std::unique_ptr<FlatLayerIndex>> BuildGzipIndex(fetch::BlobSource& source,
                                                       const std::string& layer_digest,
                                                       uint64_t span_size,
                                                       ScanObserver* observer) {
  auto fail = [&](std::string why) {
    return Status::Corruption("gzip layer " + layer_digest + ": " + why);
  };
  TreeBuilder builder;
  PendingEntries pending(builder, observer != nullptr);
  TarScanner scanner([&](const TarEntry& e) { return pending.Add(e); });
  auto cps = std::make_unique<GzipCheckpointIndex>();
  cps->span_size = span_size;
  GzipCheckpoint first;
  first.member_start = true;
  cps->checkpoints.push_back(std::move(first));

  InflateStream stream;
  RETURN_IF_ERROR(stream.Init(15 + 16));  // gzip only
  z_stream* zs = stream.get();
  std::vector<uint8_t> in(kInChunk), out(kOutChunk);
  std::vector<uint8_t> window;  // the last <= 32 KiB of output
  window.reserve(2 * kDeflateWindow + kOutChunk);
  auto hash = std::make_unique<Sha256>();
  const uint64_t blob_size = source.Size();
  uint64_t read_pos = 0;  // blob offset of the end of `in`
  uint64_t total_out = 0;
  uint64_t members_end = 0;
  bool in_member = true;
  bool padding = false;  // zero bytes after the last member (tolerated, like gzip -d)

  auto blob_pos = [&]() { return read_pos - zs->avail_in; };
  auto consume = [&](const uint8_t* p, size_t n) -> Status {
    if (n == 0) return Status::Ok();
    RETURN_IF_ERROR(scanner.Feed(std::span<const uint8_t>(p, n)));
    hash->Update(std::span<const uint8_t>(p, n));
    total_out += n;
    if (n >= kDeflateWindow) {
      window.assign(p + n - kDeflateWindow, p + n);
    } else {
      window.insert(window.end(), p, p + n);
      if (window.size() > kDeflateWindow) {
        window.erase(window.begin(), window.end() - kDeflateWindow);
      }
    }
    return Status::Ok();
  };
  // Spans [0, count) as the chunk mapper wants them.
  auto spans_of = [&](size_t count) {
    std::vector<Span> spans;
    spans.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      const GzipCheckpoint& cp = cps->checkpoints[i];
      Span s;
      fetch::ByteRange blob = cps->SpanBlobRange(i);
      fetch::ByteRange out_range = cps->SpanOutRange(i);
      s.codec = cp.member_start ? Codec::kGzip : Codec::kGzipCheckpoint;
      s.blob_offset = blob.offset;
      s.blob_length = blob.length;
      s.out_offset = out_range.offset;
      s.out_length = out_range.length;
      s.checkpoint = static_cast<uint32_t>(i);
      s.sha256 = cp.span_sha256;
      spans.push_back(s);
    }
    return spans;
  };
  // The entries whose bytes all lie in complete spans, as an index with the builder's
  // node ids (index/progress.h). The newest checkpoint starts the span being decoded.
  auto publish = [&]() -> Status {
    auto table = std::make_unique<GzipCheckpointIndex>();
    table->checkpoints = cps->checkpoints;
    table->span_size = span_size;
    table->compressed_size = table->checkpoints.back().in_offset;
    table->uncompressed_size = table->checkpoints.back().out_offset;
    std::vector<Span> spans = spans_of(table->checkpoints.size() - 1);
    auto map = [&spans](uint64_t data_offset, uint64_t len, std::vector<ChunkRef>& chunks) {
      return MapToSpans(spans, data_offset, len, chunks);
    };
    ASSIGN_OR_RETURN(auto snapshot, builder.Snapshot(map, LayerFormat::kGzip, blob_size,
                                                     layer_digest, std::move(table)));
    observer->Published(std::move(snapshot), pending.frontier());
    return Status::Ok();
  };
  auto add_checkpoint = [&](bool member_start, uint8_t bits) -> Status {
    cps->checkpoints.back().span_sha256 = FinishRaw(hash);
    GzipCheckpoint cp;
    cp.in_offset = blob_pos();
    cp.out_offset = total_out;
    cp.member_start = member_start;
    cp.bits = bits;
    if (!member_start) cp.window.assign(window.begin(), window.end());
    cps->checkpoints.push_back(std::move(cp));
    if (observer == nullptr) return Status::Ok();
    RETURN_IF_ERROR(pending.Release(total_out));
    return observer->WantSnapshot() ? publish() : Status::Ok();
  };

  for (;;) {
    if (zs->avail_in == 0) {
      if (read_pos >= blob_size) break;
      ASSIGN_OR_RETURN(size_t n, source.ReadAt(read_pos, std::span<uint8_t>(in)));
      if (n == 0) break;
      read_pos += n;
      zs->next_in = in.data();
      zs->avail_in = static_cast<uInt>(n);
    }
    if (!in_member) {
      // Between members: another member, or zero padding to the end.
      if (padding || zs->next_in[0] == 0) {
        padding = true;
        if (std::any_of(zs->next_in, zs->next_in + zs->avail_in, [](uint8_t b) { return b; })) {
          return fail("garbage after the gzip data at offset " + std::to_string(blob_pos()));
        }
        zs->avail_in = 0;
        continue;
      }
      if (zs->next_in[0] != 0x1f) {
        return fail("garbage after the gzip data at offset " + std::to_string(blob_pos()));
      }
      if (total_out - cps->checkpoints.back().out_offset >= span_size) {
        RETURN_IF_ERROR(add_checkpoint(/*member_start=*/true, 0));
      }
      if (inflateReset(zs) != Z_OK) return Status::Internal("inflateReset failed");
      in_member = true;
      continue;
    }
    zs->next_out = out.data();
    zs->avail_out = static_cast<uInt>(out.size());
    int ret = inflate(zs, Z_BLOCK);
    size_t produced = out.size() - zs->avail_out;
    if (ret == Z_NEED_DICT || ret == Z_DATA_ERROR || ret == Z_MEM_ERROR ||
        ret == Z_STREAM_ERROR) {
      return fail(std::string("corrupt deflate data near offset ") +
                  std::to_string(blob_pos()) + ": " + (zs->msg ? zs->msg : "inflate error"));
    }
    RETURN_IF_ERROR(consume(out.data(), produced));
    if (ret == Z_STREAM_END) {
      in_member = false;
      members_end = blob_pos();
      continue;
    }
    if (ret == Z_BUF_ERROR && produced == 0 && zs->avail_in != 0) {
      return fail("inflate made no progress at offset " + std::to_string(blob_pos()));
    }
    if ((zs->data_type & 128) && !(zs->data_type & 64) &&
        total_out - cps->checkpoints.back().out_offset >= span_size) {
      RETURN_IF_ERROR(
          add_checkpoint(/*member_start=*/false, static_cast<uint8_t>(zs->data_type & 7)));
    }
  }
  if (in_member) {
    return fail(read_pos == 0 ? "empty blob" : "truncated (the last gzip member does not end)");
  }
  cps->checkpoints.back().span_sha256 = FinishRaw(hash);
  cps->compressed_size = members_end;
  cps->uncompressed_size = total_out;
  // The last span cannot be empty unless the stream is: drop such a checkpoint.
  if (cps->checkpoints.size() > 1 && cps->checkpoints.back().out_offset == total_out) {
    cps->checkpoints.pop_back();
  }
  RETURN_IF_ERROR(scanner.Finish());
  RETURN_IF_ERROR(pending.Release(total_out));

  std::vector<Span> spans = spans_of(cps->span_count());
  auto map = [&spans](uint64_t data_offset, uint64_t len, std::vector<ChunkRef>& chunks) {
    return MapToSpans(spans, data_offset, len, chunks);
  };
  if (observer != nullptr) {
    // The last snapshot, with the builder's ids, is what the mount keeps reading.
    auto table = std::make_unique<GzipCheckpointIndex>(*cps);
    ASSIGN_OR_RETURN(auto last, builder.Snapshot(map, LayerFormat::kGzip, blob_size,
                                                 layer_digest, std::move(table)));
    observer->Published(std::move(last), pending.frontier());
  }
  return builder.Finish(map, LayerFormat::kGzip, blob_size, layer_digest, std::move(cps));
}

}  // namespace imagefs::index::internal
