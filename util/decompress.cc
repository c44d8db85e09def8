#include "util/decompress.h"

#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <string>
#include <vector>

namespace imagefs {
namespace {

constexpr size_t kIoBlock = 1 << 20;

class CopyDecompressor final : public Decompressor {
 public:
  Status Feed(const char* data, size_t n, const DecompressSink& out) override { return out(data, n); }
  Status Finish() override { return Status::Ok(); }
};

// gzip, including several concatenated members (pigz, some layer builders).
class GzipDecompressor final : public Decompressor {
 public:
  GzipDecompressor() : out_buf_(kIoBlock) {
    std::memset(&z_, 0, sizeof(z_));
    ok_ = inflateInit2(&z_, 15 + 16) == Z_OK;
  }
  ~GzipDecompressor() override {
    if (ok_) inflateEnd(&z_);
  }

  Status Feed(const char* data, size_t n, const DecompressSink& out) override {
    if (!ok_) return Status::Internal("zlib: inflateInit2 failed");
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
    z_.avail_in = static_cast<uInt>(n);
    while (z_.avail_in > 0) {
      if (ended_) {  // another gzip member follows
        if (inflateReset(&z_) != Z_OK) return Status::Corruption("gzip: cannot restart");
        ended_ = false;
      }
      z_.next_out = reinterpret_cast<Bytef*>(out_buf_.data());
      z_.avail_out = static_cast<uInt>(out_buf_.size());
      int rc = inflate(&z_, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
        return Status::Corruption(std::string("gzip: ") + (z_.msg ? z_.msg : "corrupt data"));
      }
      size_t produced = out_buf_.size() - z_.avail_out;
      if (produced > 0) RETURN_IF_ERROR(out(out_buf_.data(), produced));
      if (rc == Z_STREAM_END) ended_ = true;
      if (rc == Z_BUF_ERROR && produced == 0) break;
    }
    return Status::Ok();
  }
  Status Finish() override {
    if (!ended_) return Status::Corruption("gzip: the stream is truncated");
    return Status::Ok();
  }

 private:
  z_stream z_;
  bool ok_ = false;
  bool ended_ = false;
  std::vector<char> out_buf_;
};

class ZstdDecompressor final : public Decompressor {
 public:
  ZstdDecompressor() : ds_(ZSTD_createDStream()), out_buf_(kIoBlock) {
    if (ds_ != nullptr) ZSTD_initDStream(ds_);
  }
  ~ZstdDecompressor() override {
    if (ds_ != nullptr) ZSTD_freeDStream(ds_);
  }

  Status Feed(const char* data, size_t n, const DecompressSink& out) override {
    if (ds_ == nullptr) return Status::Internal("zstd: cannot create a decompression stream");
    ZSTD_inBuffer in{data, n, 0};
    while (in.pos < in.size || pending_) {
      ZSTD_outBuffer ob{out_buf_.data(), out_buf_.size(), 0};
      size_t rc = ZSTD_decompressStream(ds_, &ob, &in);
      if (ZSTD_isError(rc)) {
        return Status::Corruption(std::string("zstd: ") + ZSTD_getErrorName(rc));
      }
      frame_done_ = rc == 0;
      pending_ = ob.pos == ob.size;  // the output may hold more: call again
      if (ob.pos > 0) RETURN_IF_ERROR(out(out_buf_.data(), ob.pos));
      if (ob.pos == 0 && in.pos == in.size) break;
    }
    return Status::Ok();
  }
  Status Finish() override {
    if (!frame_done_) return Status::Corruption("zstd: the stream is truncated");
    return Status::Ok();
  }

 private:
  ZSTD_DStream* ds_;
  std::vector<char> out_buf_;
  bool frame_done_ = false;
  bool pending_ = false;
};

}  // namespace

std::unique_ptr<Decompressor> MakeDecompressor(std::span<const uint8_t> head) {
  if (head.size() >= 2 && head[0] == 0x1f && head[1] == 0x8b) {
    return std::make_unique<GzipDecompressor>();
  }
  if (head.size() >= 4 && std::memcmp(head.data(), "\x28\xb5\x2f\xfd", 4) == 0) {
    return std::make_unique<ZstdDecompressor>();
  }
  return std::make_unique<CopyDecompressor>();
}

}  // namespace imagefs
