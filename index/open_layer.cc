// OpenLayerIndex: the one place where a layer's format is decided and its reader chosen.
//
// Order: (1) a cached index for the layer digest; (2) seekable formats that carry their
// own index (eStargz, zstd:chunked: found by footer or annotations; their readers come
// next and plug into TrySeekableFormats); (3) layers without an index, by sniffing the
// first bytes, each scanned once and cached.

#include <algorithm>
#include <cstring>

#include "fetch/manifest.h"
#include "index/flat_index.h"
#include "index/index_cache.h"
#include "index/readers.h"
#include "util/log.h"

namespace imagefs::index {
namespace {

enum class Sniffed { kUnknown, kTar, kGzip, kZstd };

Sniffed Sniff(std::span<const uint8_t> head) {
  if (head.size() >= 2 && head[0] == 0x1f && head[1] == 0x8b) return Sniffed::kGzip;
  if (head.size() >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f &&
      head[3] == 0xfd) {
    return Sniffed::kZstd;
  }
  if (head.size() >= 262 && std::memcmp(head.data() + 257, "ustar", 5) == 0) {
    return Sniffed::kTar;
  }
  return Sniffed::kUnknown;
}

// Media types of uncompressed layers, for tars the magic does not identify (pre-POSIX
// headers, or an empty layer that is only the end-of-archive blocks).
bool IsTarMediaType(std::string_view media_type) {
  return media_type == "application/vnd.oci.image.layer.v1.tar" ||
         media_type == "application/vnd.oci.image.layer.nondistributable.v1.tar" ||
         media_type == "application/vnd.docker.image.rootfs.diff.tar" ||
         media_type == "application/x-tar";
}

// Seekable formats with their own TOC; each reader returns null when the blob is not its
// format. The media type does not decide: both are ordinary gzip / zstd layers.
Result<std::unique_ptr<FlatLayerIndex>> TrySeekableFormats(
    fetch::BlobSource& source, std::string_view media_type,
    const std::map<std::string, std::string>& annotations, std::string_view layer_digest) {
  const std::string digest(layer_digest);
  if (media_type.find("zstd") == std::string_view::npos) {
    ASSIGN_OR_RETURN(auto estargz, internal::TryOpenEstargz(source, annotations, digest));
    if (estargz) return estargz;
  }
  if (media_type.find("gzip") == std::string_view::npos) {
    ASSIGN_OR_RETURN(auto chunked, internal::TryOpenZstdChunked(source, annotations, digest));
    if (chunked) return chunked;
  }
  return std::unique_ptr<FlatLayerIndex>();
}

void SaveToCache(IndexCache* cache, const std::string& digest, const FlatLayerIndex& index) {
  if (cache == nullptr || digest.empty()) return;
  std::string bytes;
  index.EncodeTo(bytes);
  Status st = cache->Put(digest, bytes);
  if (!st.ok()) {
    LOG(kWarn) << "layer " << digest << ": saving its index: " << st.message();
  }
}

Result<std::unique_ptr<LayerIndex>> Open(fetch::BlobSource& source, std::string_view media_type,
                                         const std::map<std::string, std::string>& annotations,
                                         std::string_view layer_digest, IndexCache* cache,
                                         const OpenOptions& options) {
  const std::string digest(layer_digest);
  const std::string name = digest.empty() ? source.Describe() : digest;
  if (options.span_size == 0) return Status::InvalidArgument("span size must not be 0");

  if (cache != nullptr && !digest.empty()) {
    auto bytes = cache->Get(digest);
    if (bytes.ok()) {
      auto cached = FlatLayerIndex::DecodeFrom(*bytes);
      if (cached.ok() && (*cached)->blob_size() == source.Size() &&
          (*cached)->layer_digest() == digest) {
        return std::unique_ptr<LayerIndex>(std::move(*cached));
      }
      LOG(kWarn) << "layer " << digest << ": ignoring cached index ("
                 << (cached.ok() ? "it describes another blob" : cached.status().message())
                 << "); rebuilding it";
    } else if (!bytes.status().IsNotFound()) {
      LOG(kWarn) << "layer " << digest << ": index cache: " << bytes.status().message();
    }
  }

  ASSIGN_OR_RETURN(auto seekable, TrySeekableFormats(source, media_type, annotations, digest));
  if (seekable) {
    // Kept too, so a mount or cat of a stored image needs no TOC fetch.
    SaveToCache(cache, digest, *seekable);
    return std::unique_ptr<LayerIndex>(std::move(seekable));
  }

  std::vector<uint8_t> head(512);
  ASSIGN_OR_RETURN(size_t n, source.ReadAt(0, std::span<uint8_t>(head)));
  head.resize(n);
  Sniffed kind = Sniff(head);
  if (kind == Sniffed::kUnknown && IsTarMediaType(media_type)) kind = Sniffed::kTar;

  // A tar is scanned by its headers alone (sparse reads); gzip and zstd streams whole.
  fetch::BlobSource* scan = &source;
  if ((kind == Sniffed::kGzip || kind == Sniffed::kZstd) && options.scan_source) {
    ASSIGN_OR_RETURN(fetch::BlobSource* chosen, options.scan_source());
    if (chosen != nullptr) scan = chosen;
  }
  Result<std::unique_ptr<FlatLayerIndex>> built = Status::Internal("no reader");
  switch (kind) {
    case Sniffed::kTar:
      built = internal::BuildTarIndex(source, digest);
      break;
    case Sniffed::kGzip:
      built = internal::BuildGzipIndex(*scan, digest, options.span_size, options.observer);
      break;
    case Sniffed::kZstd:
      built = internal::BuildZstdIndex(*scan, digest, options.span_size);
      break;
    case Sniffed::kUnknown:
      return Status::Unsupported("layer " + name + ": unrecognized layer format (media type \"" +
                                 std::string(media_type) +
                                 "\"; not a tar, gzip or zstd stream)");
  }
  if (!built.ok()) {
    // Messages of the format readers already name the layer; tar errors do not.
    const std::string& msg = built.status().message();
    if (msg.find(name) != std::string::npos) return built.status();
    return built.status().WithContext("layer " + name);
  }
  std::unique_ptr<FlatLayerIndex> index = std::move(*built);
  SaveToCache(cache, digest, *index);
  return std::unique_ptr<LayerIndex>(std::move(index));
}

}  // namespace

Result<std::unique_ptr<LayerIndex>> OpenLayerIndex(fetch::BlobSource& source,
                                                   std::string_view media_type,
                                                   std::string_view layer_digest,
                                                   IndexCache* cache,
                                                   const OpenOptions& options) {
  return Open(source, media_type, {}, layer_digest, cache, options);
}

Result<std::unique_ptr<LayerIndex>> OpenLayerIndex(fetch::BlobSource& source,
                                                   const fetch::Descriptor& descriptor,
                                                   IndexCache* cache,
                                                   const OpenOptions& options) {
  return Open(source, descriptor.media_type, descriptor.annotations, descriptor.digest, cache,
              options);
}

}  // namespace imagefs::index
