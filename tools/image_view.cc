#include "tools/image_view.h"

#include "index/index_cache.h"
#include "store/blob_store.h"
#include "util/file.h"

namespace imagefs::tools {

Result<ImageView> OpenImageView(const GlobalOptions& global, const std::string& name,
                                const std::string& platform) {
  ImageView out;
  ASSIGN_OR_RETURN(out.opened, OpenImage(global, name, platform));
  std::unique_ptr<index::IndexCache> cache =
      index::MakeDirectoryIndexCache(global.root + "/indexes");
  // Blobs `pull` stored (verified when they were written) spare the network.
  std::unique_ptr<store::BlobStore> blobs;
  if (PathExists(global.root + "/blobs")) {
    auto opened = store::BlobStore::Open(global.root);
    if (opened.ok()) blobs = std::move(*opened);
  }
  std::vector<index::ViewLayer> layers;
  for (const fetch::Descriptor& desc : out.opened.image.parsed.layers) {
    std::unique_ptr<fetch::BlobSource> source;
    if (blobs) {
      auto digest = Digest::Parse(desc.digest);
      if (digest.ok() && PathExists(blobs->PathOf(*digest))) {
        auto local = fetch::OpenFileBlobSource(blobs->PathOf(*digest));
        if (local.ok() && (*local)->Size() == static_cast<uint64_t>(desc.size)) source = std::move(*local);
      }
    }
    if (!source) {
      ASSIGN_OR_RETURN(source, out.opened.source->OpenBlob(desc));
    }
    ASSIGN_OR_RETURN(auto layer_index, index::OpenLayerIndex(*source, desc, cache.get()));
    layers.push_back({std::move(source), std::move(layer_index)});
  }
  ASSIGN_OR_RETURN(out.view, index::MergedView::Build(std::move(layers)));
  return out;
}

}  // namespace imagefs::tools
