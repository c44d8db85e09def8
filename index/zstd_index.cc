// Plain zstd layers: one streaming pass decodes the blob, feeds the tar scanner and cuts
// the output into spans.
//
// A zstd decoder cannot resume in the middle of a frame: there is no equivalent of
// deflate's block boundary plus 32 KiB window (a frame's window may be far larger, and the
// entropy tables carry over between blocks). So spans are of two kinds:
//  - a new span starts at every frame: when a layer has many frames (pieces compressed
//    separately and concatenated, as zstd:chunked and pzstd do), reads seek to the frame;
//  - inside one frame, a span ends about every span_size bytes of output, but decoding it
//    starts at the frame's first byte (ChunkRef.skip = output to discard). For a layer
//    that is a single frame (what `zstd` writes) reading a file near the end decodes
//    almost the whole layer. Later work can do better (recompress into frames at convert
//    time, or cache decoded spans).
// The compressed end of an in-frame span is the input consumed when its output was
// complete, an upper bound of what decoding it needs.
// Frame ends are where ZSTD_decompressStream returns 0: it stops at each frame's end, so
// the input consumed then is the frame's exact compressed end (the size
// ZSTD_findFrameCompressedSize gives; tests check the two agree).

#include <zstd.h>

#include "index/readers.h"

namespace imagefs::index::internal {
namespace {

constexpr size_t kInChunk = 1 << 20;

struct DCtxFree {
  void operator()(ZSTD_DCtx* p) const { ZSTD_freeDCtx(p); }
};

}  // namespace

Result<std::unique_ptr<FlatLayerIndex>> BuildZstdIndex(fetch::BlobSource& source,
                                                       const std::string& layer_digest,
                                                       uint64_t span_size) {
  auto fail = [&](std::string why) {
    return Status::Corruption("zstd layer " + layer_digest + ": " + why);
  };
  std::unique_ptr<ZSTD_DCtx, DCtxFree> dctx(ZSTD_createDCtx());
  if (!dctx) return Status::Internal("ZSTD_createDCtx failed");
  TreeBuilder builder;
  TarScanner scanner([&](const TarEntry& e) { return builder.Add(e); });
  std::vector<uint8_t> in(kInChunk), out(ZSTD_DStreamOutSize());
  auto hash = std::make_unique<Sha256>();
  std::vector<Span> spans;
  const uint64_t blob_size = source.Size();
  uint64_t read_pos = 0;
  uint64_t total_out = 0;
  uint64_t frame_blob_start = 0;
  uint64_t frame_out_start = 0;
  uint64_t span_out_start = 0;
  bool in_frame = false;

  auto close_span = [&](uint64_t blob_end) {
    if (total_out == span_out_start) return;  // skippable frames and empty frames
    Span s;
    s.codec = Codec::kZstd;
    s.out_offset = span_out_start;
    s.out_length = total_out - span_out_start;
    s.blob_offset = frame_blob_start;
    s.blob_length = blob_end - frame_blob_start;
    s.skip = span_out_start - frame_out_start;
    s.sha256 = FinishRaw(hash);
    spans.push_back(s);
    span_out_start = total_out;
  };

  while (read_pos < blob_size) {
    ASSIGN_OR_RETURN(size_t n, source.ReadAt(read_pos, std::span<uint8_t>(in)));
    if (n == 0) break;
    const uint64_t piece_start = read_pos;
    read_pos += n;
    ZSTD_inBuffer input{in.data(), n, 0};
    for (;;) {
      ZSTD_outBuffer output{out.data(), out.size(), 0};
      size_t r = ZSTD_decompressStream(dctx.get(), &output, &input);
      if (ZSTD_isError(r)) {
        return fail("corrupt zstd data near offset " + std::to_string(piece_start + input.pos) +
                    ": " + ZSTD_getErrorName(r));
      }
      if (output.pos > 0) {
        std::span<const uint8_t> produced(out.data(), output.pos);
        RETURN_IF_ERROR(scanner.Feed(produced));
        hash->Update(produced);
        total_out += output.pos;
      }
      const uint64_t consumed_to = piece_start + input.pos;
      if (r == 0) {
        close_span(consumed_to);
        frame_blob_start = consumed_to;
        frame_out_start = total_out;
        in_frame = false;
      } else {
        in_frame = true;
        if (total_out - span_out_start >= span_size) close_span(consumed_to);
      }
      // After a frame's end everything is flushed: only more input means more work.
      bool out_full = r != 0 && output.pos == output.size;
      if (input.pos == input.size && !out_full) break;
    }
  }
  if (in_frame) return fail("truncated (the last frame does not end)");
  if (read_pos == 0) return fail("empty blob");
  RETURN_IF_ERROR(scanner.Finish());
  auto map = [&spans](uint64_t data_offset, uint64_t len, std::vector<ChunkRef>& chunks) {
    return MapToSpans(spans, data_offset, len, chunks);
  };
  return builder.Finish(map, LayerFormat::kZstd, blob_size, layer_digest, nullptr);
}

}  // namespace imagefs::index::internal
