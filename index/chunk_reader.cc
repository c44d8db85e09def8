#include "index/chunk_reader.h"

#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "index/coding.h"
#include "index/gzip_checkpoints.h"

namespace imagefs::index {
namespace {

constexpr size_t kScratch = 256 << 10;
constexpr uint64_t kMaxReserve = 64 << 20;

// Collects decoded output: drops the first `skip` bytes, keeps the next `want`.
class Sink {
 public:
  // The span length comes from the layer (a TOC or a cached index), so it is reserved up to
  // a bound only: the buffer grows with bytes actually decoded, never with a claim.
  Sink(uint64_t skip, uint64_t want) : skip_(skip), want_(want) {
    bytes_.reserve(static_cast<size_t>(std::min<uint64_t>(want, kMaxReserve)));
  }
  void Take(const uint8_t* p, size_t n) {
    if (skip_ > 0) {
      size_t drop = static_cast<size_t>(std::min<uint64_t>(skip_, n));
      skip_ -= drop;
      p += drop;
      n -= drop;
    }
    size_t keep = static_cast<size_t>(std::min<uint64_t>(n, want_ - bytes_.size()));
    bytes_.insert(bytes_.end(), p, p + keep);
  }
  bool full() const { return skip_ == 0 && bytes_.size() == want_; }
  std::vector<uint8_t> Release() { return std::move(bytes_); }

 private:
  uint64_t skip_;
  uint64_t want_;
  std::vector<uint8_t> bytes_;
};

class Inflater {
 public:
  Inflater() = default;
  ~Inflater() {
    if (live_) inflateEnd(&zs_);
  }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  bool Init(int window_bits) {
    live_ = inflateInit2(&zs_, window_bits) == Z_OK;
    return live_;
  }
  z_stream* get() { return &zs_; }

 private:
  z_stream zs_{};
  bool live_ = false;
};

struct DCtxFree {
  void operator()(ZSTD_DCtx* p) const { ZSTD_freeDCtx(p); }
};

// Gzip from a member header (raw == false) or raw deflate from a checkpoint. Crosses into
// later members as the span requires.
Status InflateInto(Sink& sink, std::span<const uint8_t> in, const GzipCheckpoint* checkpoint) {
  Inflater inflater;
  bool raw = checkpoint != nullptr;
  if (!inflater.Init(raw ? -15 : 15 + 16)) return Status::Internal("inflateInit2 failed");
  z_stream* zs = inflater.get();
  if (raw && checkpoint->bits > 0) {
    if (in.empty()) return Status::Corruption("empty range");
    int bits = checkpoint->bits;
    if (inflatePrime(zs, bits, in[0] >> (8 - bits)) != Z_OK) {
      return Status::Internal("inflatePrime failed");
    }
    in = in.subspan(1);
  }
  if (raw && !checkpoint->window.empty()) {
    if (inflateSetDictionary(zs, reinterpret_cast<const Bytef*>(checkpoint->window.data()),
                             static_cast<uInt>(checkpoint->window.size())) != Z_OK) {
      return Status::Internal("inflateSetDictionary failed");
    }
  }
  zs->next_in = const_cast<Bytef*>(in.data());
  zs->avail_in = static_cast<uInt>(in.size());
  std::vector<uint8_t> scratch(kScratch);
  while (!sink.full()) {
    zs->next_out = scratch.data();
    zs->avail_out = static_cast<uInt>(scratch.size());
    int ret = inflate(zs, Z_NO_FLUSH);
    sink.Take(scratch.data(), scratch.size() - zs->avail_out);
    if (sink.full()) break;
    if (ret == Z_STREAM_END) {
      // The member ended before the span did: the span goes on in the next member.
      if (raw) {
        if (zs->avail_in < 8) return Status::Corruption("truncated gzip member trailer");
        zs->next_in += 8;
        zs->avail_in -= 8;
      }
      if (zs->avail_in == 0) return Status::Corruption("compressed range ends early");
      if (inflateReset2(zs, 15 + 16) != Z_OK) return Status::Internal("inflateReset2 failed");
      raw = false;
      continue;
    }
    if (ret == Z_BUF_ERROR) return Status::Corruption("compressed range ends early");
    if (ret != Z_OK) {
      return Status::Corruption(std::string("corrupt deflate data: ") +
                                (zs->msg ? zs->msg : "inflate error"));
    }
  }
  return Status::Ok();
}

Status ZstdInto(Sink& sink, std::span<const uint8_t> in) {
  std::unique_ptr<ZSTD_DCtx, DCtxFree> dctx(ZSTD_createDCtx());
  if (!dctx) return Status::Internal("ZSTD_createDCtx failed");
  std::vector<uint8_t> scratch(ZSTD_DStreamOutSize());
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  while (!sink.full()) {
    ZSTD_outBuffer output{scratch.data(), scratch.size(), 0};
    size_t before = input.pos;
    size_t r = ZSTD_decompressStream(dctx.get(), &output, &input);
    if (ZSTD_isError(r)) {
      return Status::Corruption(std::string("corrupt zstd data: ") + ZSTD_getErrorName(r));
    }
    sink.Take(scratch.data(), output.pos);
    if (!sink.full() && output.pos == 0 && input.pos == before) {
      return Status::Corruption("compressed range ends early");
    }
  }
  return Status::Ok();
}

}  // namespace

std::string ChunkReader::Where(const ChunkRef& chunk) const {
  return "layer " + (index_.layer_digest().empty() ? source_.Describe() : index_.layer_digest()) +
         ": " + std::string(CodecName(chunk.codec)) + " chunk at blob range " +
         std::to_string(chunk.blob_offset) + "+" + std::to_string(chunk.blob_length);
}

Result<std::vector<uint8_t>> ChunkReader::DecodeSpan(const ChunkRef& chunk,
                                                     std::span<const uint8_t> compressed) const {
  if (compressed.size() != chunk.blob_length) {
    return Status::Internal(Where(chunk) + ": wrong compressed size");
  }
  Sink sink(chunk.skip, chunk.span_length);
  Status st;
  switch (chunk.codec) {
    case Codec::kNone:
      if (chunk.skip > compressed.size() || chunk.span_length > compressed.size() - chunk.skip) {
        st = Status::Corruption("span larger than its range");
      } else {
        sink.Take(compressed.data(), compressed.size());
      }
      break;
    case Codec::kGzip:
      st = InflateInto(sink, compressed, nullptr);
      break;
    case Codec::kGzipCheckpoint: {
      const GzipCheckpointIndex* cps = index_.gzip_checkpoints();
      if (cps == nullptr || chunk.checkpoint >= cps->span_count()) {
        st = Status::Corruption("no such gzip checkpoint " + std::to_string(chunk.checkpoint));
      } else {
        st = InflateInto(sink, compressed, &cps->checkpoints[chunk.checkpoint]);
      }
      break;
    }
    case Codec::kZstd:
      st = ZstdInto(sink, compressed);
      break;
  }
  if (!st.ok()) return st.WithContext(Where(chunk));
  if (!sink.full()) return Status::Corruption(Where(chunk) + ": decodes to fewer bytes than its span");
  std::vector<uint8_t> span = sink.Release();
  if (chunk.has_digest) {
    std::string_view covered(reinterpret_cast<const char*>(span.data()), span.size());
    if (chunk.chunk_digest) {
      if (chunk.inner_offset > span.size() || chunk.length > span.size() - chunk.inner_offset) {
        return Status::Corruption(Where(chunk) + ": file bytes outside the span");
      }
      covered = covered.substr(chunk.inner_offset, chunk.length);
    }
    auto got = Sha256Raw(covered);
    if (got != chunk.sha256) {
      return Status::Corruption(Where(chunk) + ": " +
                                (chunk.chunk_digest ? "chunk" : "span") +
                                " digest mismatch (want " +
                                chunk.SpanDigest().String() + ", got " +
                                Digest::FromSha256Raw(got).String() + ")");
    }
  }
  return span;
}

Result<std::vector<uint8_t>> ChunkReader::ReadSpan(const ChunkRef& chunk) const {
  std::vector<uint8_t> compressed(chunk.blob_length);
  fetch::ByteRange range{chunk.blob_offset, chunk.blob_length};
  std::span<uint8_t> out(compressed);
  RETURN_IF_ERROR(source_.ReadRanges(std::span<const fetch::ByteRange>(&range, 1),
                                     std::span<const std::span<uint8_t>>(&out, 1)));
  return DecodeSpan(chunk, compressed);
}

Result<std::vector<uint8_t>> ChunkReader::ReadChunk(const ChunkRef& chunk) const {
  ASSIGN_OR_RETURN(std::vector<uint8_t> span, ReadSpan(chunk));
  if (chunk.inner_offset > span.size() || chunk.length > span.size() - chunk.inner_offset) {
    return Status::Corruption(Where(chunk) + ": file bytes outside the span");
  }
  return std::vector<uint8_t>(span.begin() + static_cast<ptrdiff_t>(chunk.inner_offset),
                              span.begin() + static_cast<ptrdiff_t>(chunk.inner_offset + chunk.length));
}

Result<size_t> ChunkReader::ReadFile(NodeId id, uint64_t offset, std::span<uint8_t> out) const {
  ASSIGN_OR_RETURN(NodeAttr attr, index_.Attr(id));
  if ((attr.mode & S_IFMT) == S_IFDIR) return Status::FromErrno(EISDIR, "reading a directory");
  if ((attr.mode & S_IFMT) != S_IFREG || attr.whiteout || attr.lower_hardlink) {
    return Status::FromErrno(EINVAL, "reading node " + std::to_string(id) + " (not a file)");
  }
  if (offset >= attr.size || out.empty()) return size_t{0};
  const uint64_t end = offset + std::min<uint64_t>(out.size(), attr.size - offset);
  std::span<const ChunkRef> chunks = index_.Chunks(id);
  auto first = std::upper_bound(chunks.begin(), chunks.end(), offset,
                                [](uint64_t off, const ChunkRef& c) { return off < c.file_offset; });
  if (first == chunks.begin()) return Status::Internal("file has no chunk at its start");
  --first;

  // Plan: one compressed range per chunk; a chunk without digest and codec is read in
  // just the part that is wanted.
  struct Piece {
    const ChunkRef* chunk;
    uint64_t begin;  // file offsets wanted from this chunk
    uint64_t end;
    bool direct;
    bool keep;              // a compressed span: worth keeping decoded for the next read
    SpanCache::Span span;   // already decoded (from the span cache)
    size_t range = 0;       // index into ranges when fetched
  };
  std::vector<Piece> pieces;
  std::vector<fetch::ByteRange> ranges;
  uint64_t covered = offset;
  for (auto it = first; it != chunks.end() && it->file_offset < end; ++it) {
    Piece p{&*it, std::max(offset, it->file_offset), std::min(end, it->file_offset + it->length),
            it->codec == Codec::kNone && !it->has_digest, it->codec != Codec::kNone, nullptr};
    if (p.begin != covered || p.end <= p.begin) break;  // a gap: reported below
    covered = p.end;
    if (p.keep && spans_ != nullptr) p.span = spans_->Get(layer_, it->blob_offset);
    if (!p.span) {
      p.range = ranges.size();
      if (p.direct) {
        ranges.push_back({it->blob_offset + it->skip + it->inner_offset + (p.begin - it->file_offset),
                          p.end - p.begin});
      } else {
        ranges.push_back({it->blob_offset, it->blob_length});
      }
    }
    pieces.push_back(std::move(p));
  }
  if (covered != end) {
    return Status::Corruption("layer " + index_.layer_digest() + ": chunks of node " +
                              std::to_string(id) + " do not cover its size");
  }
  std::vector<std::vector<uint8_t>> buffers(ranges.size());
  std::vector<std::span<uint8_t>> outs;
  outs.reserve(ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    buffers[i].resize(ranges[i].length);
    outs.push_back(buffers[i]);
  }
  if (!ranges.empty()) RETURN_IF_ERROR(source_.ReadRanges(ranges, outs));
  for (Piece& p : pieces) {
    uint8_t* dst = out.data() + (p.begin - offset);
    if (p.direct) {
      std::memcpy(dst, buffers[p.range].data(), buffers[p.range].size());
      continue;
    }
    if (!p.span) {
      ASSIGN_OR_RETURN(std::vector<uint8_t> decoded, DecodeSpan(*p.chunk, buffers[p.range]));
      p.span = std::make_shared<const std::vector<uint8_t>>(std::move(decoded));
      if (p.keep && spans_ != nullptr) spans_->Put(layer_, p.chunk->blob_offset, p.span);
    }
    const uint64_t from = p.chunk->inner_offset + (p.begin - p.chunk->file_offset);
    if (from > p.span->size() || p.end - p.begin > p.span->size() - from) {
      return Status::Corruption(Where(*p.chunk) + ": file bytes outside the span");
    }
    std::memcpy(dst, p.span->data() + from, p.end - p.begin);
  }
  return static_cast<size_t>(end - offset);
}

Result<size_t> ReadFile(fetch::BlobSource& source, const LayerIndex& index, NodeId id,
                        uint64_t offset, std::span<uint8_t> out) {
  return ChunkReader(source, index).ReadFile(id, offset, out);
}

}  // namespace imagefs::index
