#include "tools/image_view.h"

#include <algorithm>
#include <chrono>
#include <future>

#include "fetch/streamed_source.h"
#include "index/index_cache.h"
#include "index/progress.h"
#include "index/progressive_view.h"
#include "store/blob_store.h"
#include "store/metadata_store.h"
#include "tools/local_images.h"
#include "util/ascii.h"
#include "util/file.h"
#include "util/log.h"

namespace imagefs::tools {
namespace {

// A pulled image named by `name`, with every blob in the store: read without asking the
// registry (as docker run uses a stored image). nullopt when it is not stored whole.
Result<std::optional<OpenedImage>> StoredImage(const GlobalOptions& global,
                                               const std::string& name,
                                               store::BlobStore& blobs) {
  if (!PathExists(global.root + "/metadata.db")) return std::optional<OpenedImage>();
  auto ref = fetch::ParseImageRef(name);
  if (!ref.ok() || ref->transport != fetch::Transport::kDocker) {
    return std::optional<OpenedImage>();
  }
  ASSIGN_OR_RETURN(auto meta, store::MetadataStore::Open(global.root));
  auto local = FindLocalImage(*meta, name);
  if (!local.ok()) {
    if (local.status().IsNotFound()) return std::optional<OpenedImage>();
    return local.status();
  }
  OpenedImage out;
  out.ref = *ref;
  ASSIGN_OR_RETURN(out.options, MakeFetchOptions(global, ""));
  ASSIGN_OR_RETURN(auto image, ReadStoredImage(blobs, local->manifest_digests.front()));
  if (!image) return std::optional<OpenedImage>();
  out.image = std::move(*image);
  out.image.name = local->by_name ? local->name.repository : "";
  return std::optional<OpenedImage>(std::move(out));
}

// Counts the bytes a registry blob source delivers (for `imagefs mounts`).
class CountingBlobSource final : public fetch::BlobSource {
 public:
  CountingBlobSource(std::unique_ptr<fetch::BlobSource> inner,
                     std::shared_ptr<std::atomic<uint64_t>> counter)
      : inner_(std::move(inner)), counter_(std::move(counter)) {}
  uint64_t Size() const override { return inner_->Size(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    ASSIGN_OR_RETURN(size_t n, inner_->ReadAt(offset, out));
    *counter_ += n;
    return n;
  }
  Status ReadRanges(std::span<const fetch::ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override {
    RETURN_IF_ERROR(inner_->ReadRanges(ranges, outs));
    for (const fetch::ByteRange& r : ranges) *counter_ += r.length;
    return Status::Ok();
  }
  std::string Describe() const override { return inner_->Describe(); }

 private:
  std::unique_ptr<fetch::BlobSource> inner_;
  std::shared_ptr<std::atomic<uint64_t>> counter_;
};

// Reads through another source and says when the first read has come back (or when it
// goes, if nothing was read): the layer index's own fetch (footer, TOC) is done.
class FirstReadSignal final : public fetch::BlobSource {
 public:
  FirstReadSignal(fetch::BlobSource& inner, std::shared_ptr<std::promise<void>> done)
      : inner_(inner), done_(std::move(done)) {}
  ~FirstReadSignal() override { Signal(); }
  uint64_t Size() const override { return inner_.Size(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    auto n = inner_.ReadAt(offset, out);
    Signal();
    return n;
  }
  Status ReadRanges(std::span<const fetch::ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override {
    Status st = inner_.ReadRanges(ranges, outs);
    Signal();
    return st;
  }
  std::string Describe() const override { return inner_.Describe(); }

 private:
  void Signal() {
    if (!signalled_.exchange(true)) done_->set_value();
  }
  fetch::BlobSource& inner_;
  std::shared_ptr<std::promise<void>> done_;
  std::atomic<bool> signalled_{false};
};

// The most an early preload holds in memory for one layer.
constexpr uint64_t kEarlyPreloadMax = 64ull << 20;

// Starts fetching [0, prefetch end) of a converted layer into its preloader, when its
// descriptor says where the prefetch set ends (a number the registry's manifest gives:
// clamped to the layer and to kEarlyPreloadMax; the bytes are verified as any read's when
// the files are decoded). It starts once the layer's index has fetched its own bytes
// (index_fetched; at most a second later): sharing the link with the TOC would delay the
// index, which the container's start waits for, while the TOC's decode overlaps the
// window's transfer. Returns the promise to keep when it started a preload, else null.
std::shared_ptr<std::promise<void>> StartEarlyPreload(const fetch::Descriptor& desc,
                                                      fetch::PreloadBlobSource* preload,
                                                      std::vector<std::future<Status>>& started) {
  auto it = desc.annotations.find(std::string(index::kPrefetchEndAnnotation));
  if (it == desc.annotations.end()) return nullptr;
  const std::optional<uint64_t> given = ParseAsciiU64(it->second);
  if (!given || *given == 0) return nullptr;
  const uint64_t end = std::min({*given, static_cast<uint64_t>(desc.size), kEarlyPreloadMax});
  auto index_fetched = std::make_shared<std::promise<void>>();
  std::shared_future<void> ready = index_fetched->get_future().share();
  started.push_back(std::async(std::launch::async, [preload, end, ready] {
    ready.wait_for(std::chrono::seconds(1));
    Status st = preload->Preload({0, end});
    if (!st.ok()) LOG(kWarn) << "early prefetch: " << st.message();
    return st;
  }));
  return index_fetched;
}

// A source shared by the view and a layer's background scan (the scan's local copy, or the
// layer itself). With a scan, a layer whose scan failed serves nothing more: its bytes
// may have failed their digest.
class SharedBlobSource final : public fetch::BlobSource {
 public:
  SharedBlobSource(std::shared_ptr<fetch::BlobSource> inner,
                   std::shared_ptr<const index::ImageScan> scan, size_t layer)
      : inner_(std::move(inner)), scan_(std::move(scan)), layer_(layer) {}
  uint64_t Size() const override { return inner_->Size(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    RETURN_IF_ERROR(Usable());
    return inner_->ReadAt(offset, out);
  }
  Status ReadRanges(std::span<const fetch::ByteRange> ranges,
                    std::span<const std::span<uint8_t>> outs) override {
    RETURN_IF_ERROR(Usable());
    return inner_->ReadRanges(ranges, outs);
  }
  std::string Describe() const override { return inner_->Describe(); }

 private:
  Status Usable() const {
    return scan_ ? scan_->State(layer_).error : Status::Ok();
  }
  std::shared_ptr<fetch::BlobSource> inner_;
  std::shared_ptr<const index::ImageScan> scan_;
  size_t layer_;
};

// What every layer's opening shares (copied into each task, so that a scan that goes on
// in the background holds what it uses).
struct LayerTaskContext {
  std::shared_ptr<index::ImageScan> scan;  // null: wait for every index
  std::shared_ptr<index::IndexCache> cache;
  std::shared_ptr<std::atomic<uint64_t>> fetched_bytes;
  fetch::ImageSource* registry = nullptr;  // owned by the ImageView, outlives its scans
  std::string root;
  std::shared_ptr<std::atomic<bool>> stopping;  // BackgroundScans::stopping
};

struct LayerTask {
  size_t layer = 0;
  fetch::Descriptor desc;
  bool remote = false;  // read from a registry: a layer scanned whole is streamed locally
  std::shared_ptr<fetch::BlobSource> source;
  std::shared_ptr<std::promise<void>> index_fetched;
  std::unique_ptr<index::LayerIndex> index;             // opened here (not in the background)
  std::shared_ptr<fetch::StreamedBlobSource> scan_copy;  // the layer's local copy, if any
  // true once the layer is scanned in the background; false when OpenLayer is over.
  std::promise<bool> started;
  bool background = false;
};

// Opens one layer's index (OpenImageView's parallel part).
Status OpenLayer(const LayerTaskContext& context, LayerTask& t) {
  index::OpenOptions options;
  if (context.scan) options.observer = context.scan->Observer(t.layer);
  auto go_background = [&] {
    if (context.scan && !t.background) {
      t.background = true;
      t.started.set_value(true);
    }
  };
  if (t.remote) {
    // A layer that must be decoded whole is streamed once into a local copy that the
    // scan and every later read of the mount use (fetch/streamed_source.h).
    options.scan_source = [&]() -> Result<fetch::BlobSource*> {
      ASSIGN_OR_RETURN(auto inner, context.registry->OpenBlob(t.desc));
      auto counted = std::make_unique<CountingBlobSource>(std::move(inner), context.fetched_bytes);
      auto started = fetch::StreamedBlobSource::Start(
          std::move(counted), Digest::Parse(t.desc.digest).value_or(Digest()), context.root + "/tmp",
          /*keep_trying=*/context.scan != nullptr);
      if (!started.ok()) {
        LOG(kWarn) << "layer " << t.desc.digest << ": " << started.status().message()
                   << " (scanning it by range reads instead)";
        go_background();
        return nullptr;
      }
      t.scan_copy = std::shared_ptr<fetch::StreamedBlobSource>(std::move(*started));
      go_background();
      return t.scan_copy.get();
    };
  } else if (context.scan) {
    options.scan_source = [&]() -> Result<fetch::BlobSource*> {
      go_background();
      return nullptr;
    };
  }
  Result<std::unique_ptr<index::LayerIndex>> opened = Status::Internal("not opened");
  if (t.index_fetched) {
    FirstReadSignal signal(*t.source, t.index_fetched);
    opened = index::OpenLayerIndex(signal, t.desc, context.cache.get(), options);
  } else {
    opened = index::OpenLayerIndex(*t.source, t.desc, context.cache.get(), options);
  }
  Status st = opened.status();
  if (st.ok() && t.scan_copy) st = t.scan_copy->Wait();
  if (t.background) {
    if (!st.ok() && !context.stopping->load()) LOG(kError) << st.message();
    context.scan->Finish(t.layer, st,
                         opened.ok() ? std::shared_ptr<const index::LayerIndex>(std::move(*opened))
                                     : nullptr);
    if (context.scan->AllDone()) LogPhase("scanned");
    return st;
  }
  if (st.ok()) t.index = std::move(*opened);
  t.started.set_value(false);
  return st;
}

}  // namespace

BackgroundScans::~BackgroundScans() {
  if (stopping) stopping->store(true);
  for (auto& stream : streams_) {
    if (stream) stream->Cancel();
  }
  for (auto& scan : scans_) {
    if (scan.valid()) (void)scan.get();
  }
}

void BackgroundScans::Add(std::future<Status> scan,
                          std::shared_ptr<fetch::StreamedBlobSource> stream) {
  scans_.push_back(std::move(scan));
  streams_.push_back(std::move(stream));
}

Result<std::unique_ptr<store::ChunkStore>> OpenChunkStore(const GlobalOptions& global) {
  store::ChunkStoreOptions options;
  options.dir = global.root + "/chunks";
  options.capacity_bytes = global.cache_size;
  return store::ChunkStore::Open(options);
}

Result<PullPolicy> ParsePullPolicy(const std::string& text) {
  if (text == "missing") return PullPolicy::kMissing;
  if (text == "always") return PullPolicy::kAlways;
  if (text == "never") return PullPolicy::kNever;
  return Status::InvalidArgument("invalid --pull \"" + text + "\": use missing, always or never");
}

Result<ImageView> OpenImageView(const GlobalOptions& global, const std::string& name,
                                const std::string& platform, PullPolicy policy,
                                bool early_preload, bool progressive) {
  ImageView out;
  std::shared_ptr<index::IndexCache> cache =
      index::MakeDirectoryIndexCache(global.root + "/indexes");
  // Blobs `pull` stored (verified when they were written) spare the network.
  std::unique_ptr<store::BlobStore> blobs;
  if (PathExists(global.root + "/blobs")) {
    auto opened = store::BlobStore::Open(global.root);
    if (opened.ok()) blobs = std::move(*opened);
  }
  std::optional<OpenedImage> stored;
  if (blobs && platform.empty() && policy != PullPolicy::kAlways) {
    ASSIGN_OR_RETURN(stored, StoredImage(global, name, *blobs));
  }
  if (!stored && policy == PullPolicy::kNever) {
    return Status::NotFound("no such image: " + name + " (imagefs pull " + name +
                            " first, or use --pull missing)");
  }
  // The config is fetched while the layer indexes open (it writes only image.config and
  // image.config_bytes, which nothing here reads): one round trip off the start. Declared
  // after `out`, so an early return waits for it before `out` goes.
  std::future<Status> config;
  if (stored) {
    out.opened = std::move(*stored);
  } else {
    ASSIGN_OR_RETURN(out.opened, OpenImage(global, name, platform, /*with_config=*/false));
    config = std::async(std::launch::async, [&out]() {
      return fetch::ResolveConfig(*out.opened.source, out.opened.image);
    });
  }
  LogPhase("manifest");  // manifest resolved (the config is on its way)
  std::vector<index::ViewLayer> layers;
  std::vector<bool> remote;  // per layer: read from the registry (so worth caching)
  const bool from_registry = out.opened.ref.transport == fetch::Transport::kDocker;
  const auto& descs = out.opened.image.parsed.layers;
  // Per layer: set once its index has fetched what it needs (for an early preload).
  std::vector<std::shared_ptr<std::promise<void>>> index_fetched;
  for (const fetch::Descriptor& desc : descs) {
    index_fetched.push_back(nullptr);
    std::unique_ptr<fetch::BlobSource> source;
    remote.push_back(false);
    out.preloaders.push_back(nullptr);
    if (blobs) {
      auto digest = Digest::Parse(desc.digest);
      if (digest.ok() && PathExists(blobs->PathOf(*digest))) {
        auto local = fetch::OpenFileBlobSource(blobs->PathOf(*digest));
        if (local.ok() && (*local)->Size() == static_cast<uint64_t>(desc.size)) source = std::move(*local);
      }
    }
    if (!source) {
      if (!out.opened.source) return Status::Internal("stored layer " + desc.digest + " vanished");
      ASSIGN_OR_RETURN(source, out.opened.source->OpenBlob(desc));
      remote.back() = from_registry;
      if (from_registry) {
        source = std::make_unique<CountingBlobSource>(std::move(source), out.fetched_bytes);
        auto preload = std::make_unique<fetch::PreloadBlobSource>(std::move(source));
        out.preloaders.back() = preload.get();
        if (early_preload) {
          index_fetched.back() = StartEarlyPreload(desc, preload.get(), out.early_preloads);
        }
        source = std::move(preload);
      }
    }
    layers.push_back({std::move(source), nullptr});
  }
  // Layer indexes are opened in parallel: for a plain gzip layer that means its download.
  // With `progressive`, a layer that must be scanned whole does not hold the view up: the
  // view answers from the scan's snapshots while it goes on (index/progressive_view.h).
  std::shared_ptr<index::ImageScan> scan;
  if (progressive) scan = std::make_shared<index::ImageScan>(layers.size());
  std::vector<std::shared_ptr<LayerTask>> tasks;
  std::vector<std::future<Status>> opening;
  LayerTaskContext context{scan, cache, out.fetched_bytes, out.opened.source.get(), global.root,
                           out.background_scans.stopping};
  for (size_t i = 0; i < layers.size(); ++i) {
    auto task = std::make_shared<LayerTask>();
    task->layer = i;
    task->desc = descs[i];
    task->remote = remote[i];
    task->source = std::shared_ptr<fetch::BlobSource>(std::move(layers[i].source));
    task->index_fetched = index_fetched[i];
    tasks.push_back(task);
    opening.push_back(std::async(std::launch::async, [context, task] { return OpenLayer(context, *task); }));
  }
  Status first_error;
  std::vector<size_t> background;  // layers scanned on, behind the view
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i]->started.get_future().get()) {
      background.push_back(i);
      continue;
    }
    Status st = opening[i].get();
    if (!st.ok() && first_error.ok()) first_error = std::move(st);
  }
  // A layer scanned in the background is served once its first snapshot is out.
  for (size_t i = 0; i < tasks.size() && first_error.ok() && !background.empty(); ++i) {
    for (;;) {
      const uint64_t seen = scan->version();
      index::ImageScan::LayerState state = scan->State(i);
      if (!state.error.ok()) {
        first_error = state.error;
        break;
      }
      if (state.index || tasks[i]->index) break;
      scan->WaitChange(seen, std::chrono::milliseconds(500));
    }
  }
  if (config.valid()) {
    Status st = config.get();
    if (first_error.ok()) first_error = std::move(st);
  }
  for (size_t i : background) out.background_scans.Add(std::move(opening[i]), tasks[i]->scan_copy);
  if (!first_error.ok()) return first_error;  // (the scans stop with `out`)
  for (size_t i = 0; i < tasks.size(); ++i) {
    LayerTask& t = *tasks[i];
    if (t.scan_copy) out.preloaders[i] = nullptr;  // read from the local copy
    std::shared_ptr<fetch::BlobSource> source =
        t.scan_copy ? std::shared_ptr<fetch::BlobSource>(t.scan_copy) : t.source;
    layers[i].source = std::make_unique<SharedBlobSource>(std::move(source), scan, i);
    if (background.empty()) {
      layers[i].index = std::move(t.index);
      continue;
    }
    if (t.index) scan->Complete(i, std::shared_ptr<const index::LayerIndex>(std::move(t.index)));
    layers[i].index = std::make_unique<index::GrowingLayerIndex>(scan, i, t.desc.digest);
  }
  if (background.empty()) {
    ASSIGN_OR_RETURN(out.view, index::MergedView::Build(std::move(layers)));
  } else {
    ASSIGN_OR_RETURN(out.view,
                     index::ProgressiveView::Create(std::move(layers), scan, global.fetch_timeout));
  }
  LogPhase("indexes");
  if (std::find(remote.begin(), remote.end(), true) != remote.end()) {
    auto chunks = OpenChunkStore(global);
    if (chunks.ok()) {
      out.chunks = std::move(*chunks);
    } else {
      LOG(kWarn) << "chunk cache: " << chunks.status().message() << " (reads are served uncached)";
    }
  }
  out.reader = std::make_unique<store::CachedFileReader>(*out.view, out.chunks.get(), remote);
  return out;
}

}  // namespace imagefs::tools
