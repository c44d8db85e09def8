#pragma once

// A seekable (zstd:chunked / eStargz) layer blob written from a tar in memory, for the
// prefetch tests.

#include <string>

#include "index/layer_writer.h"
#include "util/file.h"
#include "util/status.h"

namespace imagefs::store::test {

inline const char* SeekableMediaType(index::SeekableFormat format) {
  return format == index::SeekableFormat::kEstargz ? "application/vnd.oci.image.layer.v1.tar+gzip"
                                                   : "application/vnd.oci.image.layer.v1.tar+zstd";
}

// Writes tar to tar_path and returns the layer blob made from it (and, with `layer`, what
// the writer said of it).
inline Result<std::string> WriteSeekableBlob(index::SeekableFormat format, const std::string& tar,
                                             const std::string& tar_path,
                                             const index::LayerWriteOptions& options,
                                             index::WrittenLayer* layer = nullptr) {
  RETURN_IF_ERROR(WriteFileAtomic(tar_path, tar));
  std::string blob;
  auto written = index::WriteSeekableLayer(
      format, tar_path,
      [&](std::span<const uint8_t> data) {
        blob.append(reinterpret_cast<const char*>(data.data()), data.size());
        return Status::Ok();
      },
      options);
  if (!written.ok()) return written.status();
  if (layer != nullptr) *layer = std::move(*written);
  return blob;
}

}  // namespace imagefs::store::test
