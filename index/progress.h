#pragma once

// A layer index that grows while its layer is scanned, for mounts of plain gzip layers
// nobody indexed yet (docs/architecture.md, "Plain gzip layers: serving during the pass").
//
// The scan (index/gzip_index.cc) adds a tar entry to its tree only once every byte of the
// entry has passed the decoder (its spans are complete and hashed), and now and then
// publishes a snapshot of the tree: an immutable FlatLayerIndex whose node ids are the
// builder's, so a node keeps its id in every later snapshot. With each snapshot comes the
// scan's frontier: the greatest path seen so far in walk order (a directory, then its
// children by bytewise name, depth first — how Docker, BuildKit, umoci and Go's
// filepath.Walk write layers — or the bytewise order of whole paths, what `find | sort`
// feeds tar) and whether every entry so far came in that order.
//
// What a snapshot proves: a name it holds is there for good (the scan never takes an entry
// back); a name it lacks is absent for good only when the scan is done, or when the layer
// is in order and the frontier has passed both the name and its whiteout ".wh.NAME"
// (writers put a whiteout either where NAME sorts or where ".wh.NAME" sorts). One entry out
// of order turns the proofs off for that layer: its absences then wait for the end.
//
// Thread safety: all methods may be called concurrently. Snapshots are kept for the life
// of the ImageScan, so the views a GrowingLayerIndex returns stay valid.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "index/layer_index.h"
#include "util/status.h"

namespace imagefs::index {

// <0, 0, >0 as a sorts before, with or after b in walk order (paths without leading "/";
// "" is the root and sorts first).
int CompareWalkOrder(std::string_view a, std::string_view b);
// Whether `path` is `dir` or below it.
bool PathIsUnder(std::string_view path, std::string_view dir);

// Where a scan stands. Two orders are recognized: walk order, and the bytewise order of
// whole paths (what `find | sort` feeds tar; "a.b" before "a/x"). Each holds while every
// entry (whiteouts and opaque markers aside) came after the one before it in that order.
struct ScanFrontier {
  std::string last;           // the path of the last non-".wh." entry added
  bool walk_order = true;
  bool path_order = true;
  bool in_order() const { return walk_order || path_order; }
  // Whether every entry still to come lies after `path` in each order that still holds.
  bool Passed(std::string_view path) const;
  // Whether every entry still to come lies outside directory `dir` ("" is the root: never).
  bool PassedDir(std::string_view dir) const;
};

// What a layer scan reports to (OpenOptions::observer).
class ScanObserver {
 public:
  virtual ~ScanObserver() = default;
  // Whether to build a snapshot now (someone waits for one, or a while has passed).
  virtual bool WantSnapshot() = 0;
  // A snapshot of the entries added so far and the frontier they reach.
  virtual void Published(std::shared_ptr<const LayerIndex> partial, ScanFrontier frontier) = 0;
};

// The scans of one image's layers, as the mount sees them.
class ImageScan {
 public:
  // idle_interval: how long a scan nobody waits for goes between snapshots (0: a snapshot
  // at every span, for tests).
  explicit ImageScan(size_t layers,
                     std::chrono::milliseconds idle_interval = std::chrono::seconds(1));
  ~ImageScan();
  ImageScan(const ImageScan&) = delete;
  ImageScan& operator=(const ImageScan&) = delete;

  // Scanner side. A layer that is not scanned (its index was complete at once) is given
  // with Complete; a scanned one reports through Observer(layer) and ends with Finish.
  void Complete(size_t layer, std::shared_ptr<const LayerIndex> index);
  ScanObserver* Observer(size_t layer);
  // The scan ended: ok (the last snapshot is final; `final_index` is used only when no
  // snapshot was published) or failed (every later question about the layer gets `status`).
  void Finish(size_t layer, Status status, std::shared_ptr<const LayerIndex> final_index);

  // Reader side.
  struct LayerState {
    std::shared_ptr<const LayerIndex> index;  // null until the first snapshot
    ScanFrontier frontier;
    bool done = false;
    Status error;  // set when the scan failed
  };
  LayerState State(size_t layer) const;
  // The newest snapshot alone (cheaper than State); the scan's error when it failed,
  // EAGAIN before the first snapshot.
  Result<std::shared_ptr<const LayerIndex>> IndexOf(size_t layer) const;
  // Whether the layer will never add `path` (or change it): done, or in an order with the
  // frontier past it.
  static bool Settled(const LayerState& state, std::string_view path);
  size_t layer_count() const { return layers_.size(); }
  bool AllDone() const;
  // A counter that grows with every snapshot and every end of a scan.
  uint64_t version() const;
  // Waits until version() != seen (or `timeout`), counting as someone who wants a
  // snapshot meanwhile.
  void WaitChange(uint64_t seen, std::chrono::milliseconds timeout) const;
  // Heap bytes of every snapshot kept.
  size_t MemoryUsage() const;

 private:
  class LayerObserver;
  struct Layer {
    std::shared_ptr<const LayerIndex> index;
    std::vector<std::shared_ptr<const LayerIndex>> kept;  // every snapshot, for its views
    ScanFrontier frontier;
    bool done = false;
    Status error;
    std::chrono::steady_clock::time_point last_snapshot{};
  };
  bool WantSnapshot(size_t layer);
  void Publish(size_t layer, std::shared_ptr<const LayerIndex> index, ScanFrontier frontier);

  const std::chrono::milliseconds idle_interval_;
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  mutable int waiters_ = 0;
  uint64_t version_ = 0;
  std::vector<Layer> layers_;
  std::vector<std::unique_ptr<LayerObserver>> observers_;
};

// The LayerIndex of a layer while (and after) it is scanned: every method answers from the
// newest snapshot (empty root before the first). Node ids are stable across snapshots.
class GrowingLayerIndex final : public LayerIndex {
 public:
  GrowingLayerIndex(std::shared_ptr<const ImageScan> scan, size_t layer, std::string layer_digest);

  NodeId Root() const override { return 0; }
  Result<NodeId> Lookup(NodeId parent, std::string_view name) const override;
  Result<NodeAttr> Attr(NodeId id) const override;
  Status ForEachChild(
      NodeId id,
      const std::function<bool(std::string_view name, NodeId child)>& fn) const override;
  Result<std::string_view> ReadLink(NodeId id) const override;
  Result<std::vector<XattrView>> Xattrs(NodeId id) const override;
  std::span<const ChunkRef> Chunks(NodeId id) const override;
  NodeId NodeCount() const override;
  const std::string& layer_digest() const override { return layer_digest_; }
  const GzipCheckpointIndex* gzip_checkpoints() const override;
  size_t MemoryUsage() const override;

 private:
  Result<std::shared_ptr<const LayerIndex>> Current() const;

  std::shared_ptr<const ImageScan> scan_;
  size_t layer_;
  std::string layer_digest_;
};

}  // namespace imagefs::index
