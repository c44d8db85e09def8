#include "index/gzip_checkpoints.h"

#include "index/coding.h"
#include "util/digest.h"

namespace imagefs::index {
namespace {

constexpr std::string_view kCheckpointsMagic = "IFSGZCK\x01";
constexpr uint32_t kCheckpointsVersion = 1;
constexpr size_t kCheckpointsTrailer = 32;

}  // namespace

fetch::ByteRange GzipCheckpointIndex::SpanBlobRange(size_t i) const {
  const GzipCheckpoint& cp = checkpoints[i];
  uint64_t begin = cp.member_start || cp.bits == 0 ? cp.in_offset : cp.in_offset - 1;
  uint64_t end = i + 1 < checkpoints.size() ? checkpoints[i + 1].in_offset : compressed_size;
  return {begin, end - begin};
}

fetch::ByteRange GzipCheckpointIndex::SpanOutRange(size_t i) const {
  uint64_t begin = checkpoints[i].out_offset;
  uint64_t end =
      i + 1 < checkpoints.size() ? checkpoints[i + 1].out_offset : uncompressed_size;
  return {begin, end - begin};
}

size_t GzipCheckpointIndex::MemoryUsage() const {
  size_t n = checkpoints.capacity() * sizeof(GzipCheckpoint);
  for (const auto& cp : checkpoints) n += cp.window.capacity();
  return n;
}

void GzipCheckpointIndex::EncodeTo(std::string& out) const {
  size_t start = out.size();
  PutBytes(out, kCheckpointsMagic);
  PutU32(out, kCheckpointsVersion);
  PutU32(out, static_cast<uint32_t>(checkpoints.size()));
  PutU64(out, compressed_size);
  PutU64(out, uncompressed_size);
  PutU64(out, span_size);
  for (const auto& cp : checkpoints) {
    PutU64(out, cp.in_offset);
    PutU64(out, cp.out_offset);
    PutU8(out, cp.member_start ? 0 : 1);
    PutU8(out, cp.bits);
    PutU16(out, 0);
    PutU32(out, static_cast<uint32_t>(cp.window.size()));
    PutBytes(out, cp.window);
    PutBytes(out, std::string_view(reinterpret_cast<const char*>(cp.span_sha256.data()), 32));
  }
  auto sum = Sha256Raw(std::string_view(out).substr(start));
  PutBytes(out, std::string_view(reinterpret_cast<const char*>(sum.data()), 32));
}

Result<GzipCheckpointIndex> GzipCheckpointIndex::DecodeFrom(std::string_view in) {
  auto bad = [](std::string_view why) {
    return Status::Corruption("gzip checkpoint index: " + std::string(why));
  };
  if (in.size() < kCheckpointsMagic.size() + 4 + kCheckpointsTrailer) return bad("truncated");
  if (in.substr(0, kCheckpointsMagic.size()) != kCheckpointsMagic) return bad("bad magic");
  std::string_view body = in.substr(0, in.size() - kCheckpointsTrailer);
  auto sum = Sha256Raw(body);
  if (in.substr(in.size() - kCheckpointsTrailer) !=
      std::string_view(reinterpret_cast<const char*>(sum.data()), 32)) {
    return bad("checksum mismatch");
  }
  Decoder dec(body.substr(kCheckpointsMagic.size()));
  uint32_t version, count;
  GzipCheckpointIndex index;
  if (!dec.GetU32(version)) return bad("truncated");
  if (version != kCheckpointsVersion) {
    return Status::Unsupported("gzip checkpoint index: version " + std::to_string(version) +
                               " is not supported");
  }
  if (!dec.GetU32(count) || !dec.GetU64(index.compressed_size) ||
      !dec.GetU64(index.uncompressed_size) || !dec.GetU64(index.span_size)) {
    return bad("truncated");
  }
  if (count == 0 || count > dec.remaining() / 56) return bad("bad checkpoint count");
  index.checkpoints.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    GzipCheckpoint& cp = index.checkpoints[i];
    uint8_t kind;
    uint16_t reserved;
    uint32_t window_len;
    std::string_view window, sha;
    if (!dec.GetU64(cp.in_offset) || !dec.GetU64(cp.out_offset) || !dec.GetU8(kind) ||
        !dec.GetU8(cp.bits) || !dec.GetU16(reserved) || !dec.GetU32(window_len) ||
        !dec.GetBytes(window_len, window) || !dec.GetBytes(32, sha)) {
      return bad("truncated checkpoint");
    }
    if (kind > 1 || cp.bits > 7 || reserved != 0 || window_len > kDeflateWindow) {
      return bad("bad checkpoint " + std::to_string(i));
    }
    cp.member_start = kind == 0;
    if (cp.member_start && (cp.bits != 0 || window_len != 0)) {
      return bad("bad checkpoint " + std::to_string(i));
    }
    if (!cp.member_start && cp.bits != 0 && cp.in_offset == 0) {
      return bad("bad checkpoint " + std::to_string(i));
    }
    cp.window.assign(window);
    std::copy(sha.begin(), sha.end(), cp.span_sha256.begin());
    if (i == 0 ? (cp.in_offset != 0 || cp.out_offset != 0 || !cp.member_start)
               : (cp.in_offset <= index.checkpoints[i - 1].in_offset ||
                  cp.out_offset <= index.checkpoints[i - 1].out_offset)) {
      return bad("checkpoint " + std::to_string(i) + " out of order");
    }
  }
  if (dec.remaining() != 0) return bad("trailing bytes");
  const GzipCheckpoint& last = index.checkpoints.back();
  if (index.compressed_size < last.in_offset || index.uncompressed_size < last.out_offset) {
    return bad("sizes before the last checkpoint");
  }
  return index;
}

}  // namespace imagefs::index
