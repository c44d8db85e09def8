#include "index/progress.h"

#include <cerrno>

namespace imagefs::index {
namespace {

// The next component of `path` from `pos` on; npos-safe.
std::string_view NextPart(std::string_view path, size_t& pos) {
  size_t slash = path.find('/', pos);
  if (slash == std::string_view::npos) slash = path.size();
  std::string_view part = path.substr(pos, slash - pos);
  pos = slash + 1;
  return part;
}

// The least time between two snapshots somebody waits for.
constexpr auto kWaitedSnapshotInterval = std::chrono::milliseconds(20);

}  // namespace

int CompareWalkOrder(std::string_view a, std::string_view b) {
  size_t pa = 0, pb = 0;
  for (;;) {
    const bool a_end = pa > a.size() || a.empty();
    const bool b_end = pb > b.size() || b.empty();
    if (a_end || b_end) return a_end == b_end ? 0 : (a_end ? -1 : 1);
    std::string_view x = NextPart(a, pa);
    std::string_view y = NextPart(b, pb);
    if (int c = x.compare(y); c != 0) return c < 0 ? -1 : 1;
  }
}

bool PathIsUnder(std::string_view path, std::string_view dir) {
  if (dir.empty()) return true;
  if (!path.starts_with(dir)) return false;
  return path.size() == dir.size() || path[dir.size()] == '/';
}

class ImageScan::LayerObserver final : public ScanObserver {
 public:
  LayerObserver(ImageScan& scan, size_t layer) : scan_(scan), layer_(layer) {}
  bool WantSnapshot() override { return scan_.WantSnapshot(layer_); }
  void Published(std::shared_ptr<const LayerIndex> partial, ScanFrontier frontier) override {
    scan_.Publish(layer_, std::move(partial), std::move(frontier));
  }

 private:
  ImageScan& scan_;
  size_t layer_;
};

ImageScan::ImageScan(size_t layers, std::chrono::milliseconds idle_interval)
    : idle_interval_(idle_interval), layers_(layers) {
  for (size_t i = 0; i < layers; ++i) observers_.push_back(std::make_unique<LayerObserver>(*this, i));
}

ImageScan::~ImageScan() = default;

void ImageScan::Complete(size_t layer, std::shared_ptr<const LayerIndex> index) {
  std::lock_guard lock(mu_);
  Layer& l = layers_[layer];
  l.index = index;
  l.kept.push_back(std::move(index));
  l.done = true;
  ++version_;
  changed_.notify_all();
}

ScanObserver* ImageScan::Observer(size_t layer) { return observers_[layer].get(); }

bool ImageScan::WantSnapshot(size_t layer) {
  std::lock_guard lock(mu_);
  const auto since = std::chrono::steady_clock::now() - layers_[layer].last_snapshot;
  return since >= idle_interval_ || (waiters_ > 0 && since >= kWaitedSnapshotInterval);
}

void ImageScan::Publish(size_t layer, std::shared_ptr<const LayerIndex> index,
                        ScanFrontier frontier) {
  std::lock_guard lock(mu_);
  Layer& l = layers_[layer];
  l.index = index;
  l.kept.push_back(std::move(index));
  l.frontier = std::move(frontier);
  l.last_snapshot = std::chrono::steady_clock::now();
  ++version_;
  changed_.notify_all();
}

void ImageScan::Finish(size_t layer, Status status, std::shared_ptr<const LayerIndex> final_index) {
  std::lock_guard lock(mu_);
  Layer& l = layers_[layer];
  if (!status.ok()) {
    l.error = std::move(status);
  } else if (!l.index && final_index) {
    l.index = final_index;
    l.kept.push_back(std::move(final_index));
  } else if (!l.index) {
    l.error = Status::Internal("layer scan ended without an index");
  }
  l.done = true;
  ++version_;
  changed_.notify_all();
}

ImageScan::LayerState ImageScan::State(size_t layer) const {
  std::lock_guard lock(mu_);
  const Layer& l = layers_[layer];
  return LayerState{l.index, l.frontier, l.done, l.error};
}

Result<std::shared_ptr<const LayerIndex>> ImageScan::IndexOf(size_t layer) const {
  std::lock_guard lock(mu_);
  const Layer& l = layers_[layer];
  if (!l.error.ok()) return l.error;
  if (!l.index) return Status::FromErrno(EAGAIN, "layer not scanned yet");
  return l.index;
}

bool ScanFrontier::Passed(std::string_view path) const {
  if (!in_order()) return false;
  if (walk_order && CompareWalkOrder(last, path) <= 0) return false;
  if (path_order && std::string_view(last).compare(path) <= 0) return false;
  return true;
}

bool ScanFrontier::PassedDir(std::string_view dir) const {
  if (!in_order() || dir.empty()) return false;
  if (walk_order && (CompareWalkOrder(last, dir) <= 0 || PathIsUnder(last, dir))) return false;
  if (path_order) {
    // Paths below dir are the strings that start with "dir/": one run in bytewise order.
    const std::string prefix = std::string(dir) + "/";
    if (std::string_view(last).compare(prefix) <= 0 || std::string_view(last).starts_with(prefix)) {
      return false;
    }
  }
  return true;
}

bool ImageScan::Settled(const LayerState& state, std::string_view path) {
  return state.done || state.frontier.Passed(path);
}

bool ImageScan::AllDone() const {
  std::lock_guard lock(mu_);
  for (const Layer& l : layers_) {
    if (!l.done) return false;
  }
  return true;
}

uint64_t ImageScan::version() const {
  std::lock_guard lock(mu_);
  return version_;
}

void ImageScan::WaitChange(uint64_t seen, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  ++waiters_;
  changed_.wait_for(lock, timeout, [&] { return version_ != seen; });
  --waiters_;
}

size_t ImageScan::MemoryUsage() const {
  std::lock_guard lock(mu_);
  size_t bytes = 0;
  for (const Layer& l : layers_) {
    for (const auto& kept : l.kept) bytes += kept->MemoryUsage();
  }
  return bytes;
}

// ---- GrowingLayerIndex ------------------------------------------------------------------

GrowingLayerIndex::GrowingLayerIndex(std::shared_ptr<const ImageScan> scan, size_t layer,
                                     std::string layer_digest)
    : scan_(std::move(scan)), layer_(layer), layer_digest_(std::move(layer_digest)) {}

Result<std::shared_ptr<const LayerIndex>> GrowingLayerIndex::Current() const {
  return scan_->IndexOf(layer_);
}

Result<NodeId> GrowingLayerIndex::Lookup(NodeId parent, std::string_view name) const {
  ASSIGN_OR_RETURN(auto index, Current());
  return index->Lookup(parent, name);
}

Result<NodeAttr> GrowingLayerIndex::Attr(NodeId id) const {
  ASSIGN_OR_RETURN(auto index, Current());
  return index->Attr(id);
}

Status GrowingLayerIndex::ForEachChild(
    NodeId id, const std::function<bool(std::string_view name, NodeId child)>& fn) const {
  ASSIGN_OR_RETURN(auto index, Current());
  return index->ForEachChild(id, fn);
}

Result<std::string_view> GrowingLayerIndex::ReadLink(NodeId id) const {
  ASSIGN_OR_RETURN(auto index, Current());
  return index->ReadLink(id);
}

Result<std::vector<XattrView>> GrowingLayerIndex::Xattrs(NodeId id) const {
  ASSIGN_OR_RETURN(auto index, Current());
  return index->Xattrs(id);
}

std::span<const ChunkRef> GrowingLayerIndex::Chunks(NodeId id) const {
  auto index = Current();
  if (!index.ok()) return {};
  return (*index)->Chunks(id);
}

NodeId GrowingLayerIndex::NodeCount() const {
  auto index = Current();
  return index.ok() ? (*index)->NodeCount() : 0;
}

const GzipCheckpointIndex* GrowingLayerIndex::gzip_checkpoints() const {
  auto index = Current();
  return index.ok() ? (*index)->gzip_checkpoints() : nullptr;
}

size_t GrowingLayerIndex::MemoryUsage() const {
  auto index = Current();
  return index.ok() ? (*index)->MemoryUsage() : 0;
}

}  // namespace imagefs::index
