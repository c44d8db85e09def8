#pragma once

// ProgressiveView: the merged tree of an image while some of its layers are still being
// scanned (plain gzip layers nobody indexed; index/progress.h), so a mount answers before
// the scans end and serves each file as soon as the scan has passed it.
//
// The rules are MergedView's (whiteouts, opaque directories, hard links); what differs is
// when an answer may be given. Every question is answered from the layers' newest
// snapshots and only when no later entry can change the answer:
//   - a name is found in the topmost layer that has it once every layer above it has
//     settled the name (ImageScan::Settled: the scan ended, or is in walk order and has
//     passed NAME and ".wh.NAME"), and a directory's copies below are known once those
//     layers have settled it too (and its opaque marker);
//   - "no such name" needs every layer to have settled it;
//   - a directory's listing needs every layer holding a copy of it to have passed the
//     whole directory (or ended).
// Until then the call waits for the next snapshot. A layer whose scan failed makes every
// question fail with its error (the mount then answers EIO, never unverified bytes).
//
// Inode numbers are handed out as names are found (root = 1), one per path, and the names
// of a hard link in one layer share one; they never change. InodeCount() counts those
// handed out; WaitComplete() numbers the rest once every scan has ended.
//
// What is looser than MergedView, until the answer is known: a directory's nlink is its
// serving layer's (2 + that layer's subdirectories) until it has been listed, and a
// hard-linked file's is its layer's count of names until WaitComplete() has numbered
// every name.
//
// Thread safety: every const method may be called concurrently.

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "index/merged_view.h"
#include "index/progress.h"

namespace imagefs::index {

class ProgressiveView final : public MergedView {
 public:
  // Layers bottom first, each with a GrowingLayerIndex over `scan` (or any index answering
  // from the same snapshots).
  // stall_bound: a call that has waited this long with no scan advancing fails with
  // kTimeout (the mount answers EIO and stays up; later calls wait again); 0: no bound.
  static Result<std::unique_ptr<ProgressiveView>> Create(
      std::vector<ViewLayer> layers, std::shared_ptr<const ImageScan> scan,
      std::chrono::milliseconds stall_bound = std::chrono::milliseconds(0));

  Result<Ino> Lookup(Ino parent, std::string_view name) const override;
  Result<NodeAttr> Attr(Ino ino) const override;
  Status ForEachChild(
      Ino ino, const std::function<bool(std::string_view name, Ino child)>& fn) const override;
  Result<std::string_view> ReadLink(Ino ino) const override;
  Result<std::vector<XattrView>> Xattrs(Ino ino) const override;
  Result<Origin> OriginOf(Ino ino) const override;
  Ino InodeCount() const override;
  bool progressive() const override { return true; }
  Ino ParentOf(Ino ino) const override;
  Status WaitComplete() const override;
  size_t MemoryUsage() const override;

 private:
  struct PNode {
    Ino parent = 0;
    std::string path;  // "" for the root, else "a/b/c"
    uint32_t layer = 0;
    NodeId node = 0;
    uint32_t names = 1;    // names numbered so far that lead here (hard links)
    uint32_t subdirs = 0;  // directories: subdirectories, once listed
    bool listed = false;
  };
  enum class Answer { kFound, kAbsent, kUnsure };
  struct Found {
    Answer answer = Answer::kUnsure;
    Step step;
  };
  using States = std::vector<ImageScan::LayerState>;

  ProgressiveView(std::vector<ViewLayer> layers, std::shared_ptr<const ImageScan> scan,
                  std::chrono::milliseconds stall_bound);
  // The layers' states, or the first failed scan's error.
  Result<States> Snapshot() const;
  // `path` among layers [0, top), from the root down.
  Result<Found> Eval(const States& st, std::string_view path, size_t top) const;
  // The topmost meaning of `name` in the directory `dir_path` with copies `dirs`.
  Result<Found> FindIn(const States& st, const std::vector<Instance>& dirs, std::string_view dir_path,
                       std::string_view name) const;
  // The number of `path` (found as `step`, in directory `parent`), handed out once.
  Ino NumberFor(Ino parent, const std::string& path, const Step& step) const;
  Result<PNode> NodeOf(Ino ino) const;
  // Waits for the scans to advance past version `seen`; kTimeout once nothing has
  // advanced for stall_bound_ since `since` (which an advance moves on).
  Status Wait(uint64_t seen, std::chrono::steady_clock::time_point& since) const;

  std::shared_ptr<const ImageScan> scan_;
  const std::chrono::milliseconds stall_bound_;
  mutable std::mutex mu_;
  mutable std::deque<PNode> pnodes_;  // pnodes_[ino - 1]
  mutable std::unordered_map<std::string, Ino> by_path_;
  mutable std::unordered_map<uint64_t, Ino> by_link_;  // (layer << 32 | node) of hard links
  mutable bool complete_ = false;  // WaitComplete() has numbered every name
};

}  // namespace imagefs::index
