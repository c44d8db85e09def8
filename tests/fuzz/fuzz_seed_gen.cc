// Makes the seed corpora of the index decoders from real layers: for each layer file given
// (tar, tar.gz, tar.zst made by scripts/fuzz with the real tools), opens its index and
// writes the serialized FlatLayerIndex to <out>/index_decode_fuzz/ and, for gzip layers,
// the serialized checkpoint table to <out>/gzip_index_fuzz/. With the seekable layer
// writers linked (IMAGEFS_HAVE_LAYER_WRITERS), tar inputs are also converted to eStargz
// and zstd:chunked blobs in <out>/open_layer_fuzz/.
//
//   fuzz_seed_gen OUT_DIR LAYER...

#include <cstdio>
#include <string>

#include "fetch/blob_source.h"
#include "index/flat_index.h"
#include "index/layer_index.h"
#include "index/layer_writer.h"
#include "util/file.h"

namespace imagefs::fuzz {
namespace {

Status Write(const std::string& path, std::string_view bytes) {
  return WriteFileAtomic(path, bytes);
}

Status SeedsOf(const std::string& layer, const std::string& out) {
  const std::string base = layer.substr(layer.rfind('/') + 1);
  for (uint64_t span : {uint64_t{4096}, uint64_t{4} << 20}) {
    ASSIGN_OR_RETURN(auto source, fetch::OpenFileBlobSource(layer));
    index::OpenOptions options;
    options.span_size = span;
    // Without a magic number (v7 headers, an empty tar) only the media type says "tar".
    const bool tar = base.size() > 4 && base.substr(base.size() - 4) == ".tar";
    ASSIGN_OR_RETURN(auto opened,
                     index::OpenLayerIndex(*source,
                                           tar ? "application/vnd.oci.image.layer.v1.tar" : "",
                                           "", nullptr, options));
    const auto* flat = dynamic_cast<const index::FlatLayerIndex*>(opened.get());
    if (flat == nullptr) continue;
    const std::string name = base + "." + std::to_string(span);
    std::string bytes;
    flat->EncodeTo(bytes);
    RETURN_IF_ERROR(Write(out + "/index_decode_fuzz/" + name + ".idx", bytes));
    if (const auto* cps = flat->gzip_checkpoints()) {
      std::string cp;
      cps->EncodeTo(cp);
      RETURN_IF_ERROR(Write(out + "/gzip_index_fuzz/" + name + ".gzck", cp));
    }
  }
#ifdef IMAGEFS_HAVE_LAYER_WRITERS
  if (base.size() > 4 && base.substr(base.size() - 4) == ".tar") {
    for (auto format : {index::SeekableFormat::kEstargz, index::SeekableFormat::kZstdChunked}) {
      std::string blob;
      index::LayerWriteOptions options;
      options.chunk_size = 4096;
      auto written = index::WriteSeekableLayer(
          format, layer,
          [&](std::span<const uint8_t> bytes) {
            blob.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
            return Status::Ok();
          },
          options);
      if (!written.ok()) {
        std::fprintf(stderr, "fuzz_seed_gen: %s: %s (no seed)\n", layer.c_str(),
                     written.status().message().c_str());
        continue;
      }
      const char* ext = format == index::SeekableFormat::kEstargz ? ".estargz" : ".zstdchunked";
      RETURN_IF_ERROR(Write(out + "/open_layer_fuzz/" + base + ext, blob));
    }
  }
#endif
  return Status::Ok();
}

}  // namespace
}  // namespace imagefs::fuzz

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: fuzz_seed_gen OUT_DIR LAYER...\n");
    return 2;
  }
  int failures = 0;
  for (int i = 2; i < argc; ++i) {
    imagefs::Status st = imagefs::fuzz::SeedsOf(argv[i], argv[1]);
    if (!st.ok()) {
      std::fprintf(stderr, "fuzz_seed_gen: %s: %s\n", argv[i], st.message().c_str());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}
