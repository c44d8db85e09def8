// Fuzzes OpenLayerIndex end to end: the input is a layer blob (MakeMemoryBlobSource) opened
// under one of a few media types, which reaches the eStargz and zstd:chunked footer and TOC
// parsers, the gzip / zstd / tar sniffing and index builders, and TarScanner. When a layer
// opens, its index must hold together (fuzz_util.h, strict mode; files of a scanned tar /
// gzip / zstd layer must all read back exactly their size through ChunkReader, files of a
// seekable layer may fail their lazy digest check), and opening it again from the index
// cache must give the same tree and contents.

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "fetch/blob_source.h"
#include "fetch/manifest.h"
#include "index/flat_index.h"
#include "index/index_cache.h"
#include "index/layer_index.h"
#include "tests/fuzz/fuzz_util.h"

namespace imagefs::fuzz {
namespace {

class MemoryIndexCache final : public index::IndexCache {
 public:
  Result<std::string> Get(std::string_view layer_digest) override {
    auto it = entries_.find(std::string(layer_digest));
    if (it == entries_.end()) return Status::NotFound("no cached index");
    return it->second;
  }
  Status Put(std::string_view layer_digest, std::string_view bytes) override {
    entries_[std::string(layer_digest)] = std::string(bytes);
    ++puts_;
    return Status::Ok();
  }
  int puts() const { return puts_; }

 private:
  std::map<std::string, std::string, std::less<>> entries_;
  int puts_ = 0;
};

constexpr const char* kMediaTypes[] = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
};

}  // namespace
}  // namespace imagefs::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imagefs;
  using namespace imagefs::fuzz;
  std::string blob(AsChars(data, size));
  std::unique_ptr<fetch::BlobSource> source = fetch::MakeMemoryBlobSource(blob, "fuzz layer");

  fetch::Descriptor desc;
  // The media type comes from the size so that it costs no input bytes.
  desc.media_type = kMediaTypes[size % std::size(kMediaTypes)];
  desc.digest = Digest::Sha256Of(std::string_view(blob)).String();
  desc.size = static_cast<int64_t>(size);
  index::OpenOptions options;
  options.span_size = 4096;  // several spans even in small inputs

  MemoryIndexCache cache;
  auto opened = index::OpenLayerIndex(*source, desc, &cache, options);
  if (!opened.ok()) {
    FUZZ_CHECK(opened.status().code() != Code::kInternal,
               "OpenLayerIndex: internal error: " + opened.status().ToString());
    return 0;
  }
  WalkOptions walk;
  walk.strict = true;
  if (const auto* flat = dynamic_cast<const index::FlatLayerIndex*>(opened->get())) {
    walk.reads_succeed = flat->format() == index::LayerFormat::kTar ||
                         flat->format() == index::LayerFormat::kGzip ||
                         flat->format() == index::LayerFormat::kZstd;
  }
  WalkSummary first = WalkIndex(**opened, source.get(), walk);

  if (cache.puts() > 0) {
    // Second open: from the cached, serialized form.
    auto again = index::OpenLayerIndex(*source, desc, &cache, options);
    FUZZ_CHECK(again.ok(), "reopening from the cache: " + again.status().ToString());
    WalkSummary second = WalkIndex(**again, source.get(), walk);
    FUZZ_CHECK(first.digest == second.digest, "cached index describes the same tree");
    FUZZ_CHECK(cache.puts() == 1, "a cached index is not rebuilt");
  }
  return 0;
}
