#pragma once

// MergedView: the root filesystem of an image, its layers stacked as overlayfs stacks
// them, usable without FUSE (`imagefs ls`, `cat` and `diff` read it directly; the mount
// serves it as its lower tree).
//
// Rules (the OCI image spec's "applying changesets", which is what overlayfs does):
//   - a name in a higher layer hides the same name below it;
//   - a whiteout hides the name in every lower layer;
//   - a directory present in several layers merges their children, down to the first
//     layer (from the top) where it is opaque, a whiteout or not a directory;
//   - a hard link names the node of its target (within a layer the index already shares
//     one node; a link to a lower layer's file is resolved against the layers below it),
//     so every name of a hard-linked file has the same inode number, and nlink counts the
//     names visible in the merged tree.
//
// The tree is merged once, eagerly, when the view is built: about 48 bytes per visible
// node on top of the layer indexes. Inode numbers are dense, root = 1 (FUSE's root id),
// assigned breadth-first, stable for the life of the view; children come in bytewise name
// order.
//
// Thread safety: immutable once built; every const method may be called concurrently.
// ReadFile calls the layers' BlobSources, which are thread-safe by contract.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fetch/blob_source.h"
#include "index/layer_index.h"
#include "index/span_cache.h"
#include "util/status.h"

namespace imagefs::index {

using Ino = uint64_t;
inline constexpr Ino kRootIno = 1;

// One layer of the image: its blob and its index.
struct ViewLayer {
  std::unique_ptr<fetch::BlobSource> source;
  std::unique_ptr<LayerIndex> index;
};

class MergedView {
 public:
  // Layers bottom first (the manifest's order).
  static Result<std::unique_ptr<MergedView>> Build(std::vector<ViewLayer> layers);

  virtual ~MergedView() = default;
  MergedView(const MergedView&) = delete;
  MergedView& operator=(const MergedView&) = delete;

  // kNotFound when there is no such child; ENOTDIR when parent is not a directory.
  virtual Result<Ino> Lookup(Ino parent, std::string_view name) const;
  // A path like "/usr/bin/env" or "usr/bin" ("" and "/" are the root). Symlinks are not
  // followed.
  Result<Ino> Resolve(std::string_view path) const;
  // The attributes of the serving layer's node; nlink is the merged tree's (directories:
  // 2 + subdirectories; files: visible names).
  virtual Result<NodeAttr> Attr(Ino ino) const;
  // Children in bytewise name order, until fn returns false.
  virtual Status ForEachChild(
      Ino ino, const std::function<bool(std::string_view name, Ino child)>& fn) const;
  virtual Result<std::string_view> ReadLink(Ino ino) const;
  virtual Result<std::vector<XattrView>> Xattrs(Ino ino) const;

  // Which layer serves a node, and its id there (for chunk-level access by the mount).
  struct Origin {
    uint32_t layer = 0;  // index into layers(), bottom first
    NodeId node = 0;
  };
  virtual Result<Origin> OriginOf(Ino ino) const;

  // Reads up to out.size() bytes of a regular file at offset (short only at its end);
  // every byte verified against its chunk digest where the format has one.
  Result<size_t> ReadFile(Ino ino, uint64_t offset, std::span<uint8_t> out) const;

  // Number of inodes: valid numbers are [1, InodeCount()].
  virtual Ino InodeCount() const { return nodes_.size(); }

  // A view over layers still being scanned (index/progressive_view.h): its methods wait
  // until their answer is certain, inode numbers are handed out as names are found (so
  // InodeCount() grows until WaitComplete()), and ParentOf() knows each node's parent.
  virtual bool progressive() const { return false; }
  // The directory a node was found in (progressive views; 0 otherwise).
  virtual Ino ParentOf(Ino) const { return 0; }
  // Waits until every layer is indexed and every name has its number; InodeCount() is
  // final afterwards. An error when a layer failed.
  virtual Status WaitComplete() const { return Status::Ok(); }
  const std::vector<ViewLayer>& layers() const { return layers_; }
  // Heap bytes of the merged tree plus every layer index.
  virtual size_t MemoryUsage() const;

 protected:
  explicit MergedView(std::vector<ViewLayer> layers) : layers_(std::move(layers)) {}

  // One layer's copy of a directory, in top-to-bottom order within a merged directory.
  struct Instance {
    uint32_t layer = 0;
    NodeId node = 0;
  };
  // What a name means in a merged directory: the entry that serves it (the topmost one)
  // and, for a directory, every layer's copy that merges into it.
  struct Step {
    uint32_t layer = 0;
    NodeId node = 0;
    NodeAttr attr;
    std::vector<Instance> dirs;  // when a directory
  };
  // The non-empty components of a slash-separated path.
  static std::vector<std::string_view> PathParts(std::string_view path);

 private:
  struct Node {
    uint32_t layer = 0;
    NodeId node = 0;
    uint32_t first_child = 0;  // into dirents_
    uint32_t child_count = 0;
    uint32_t nlink = 1;
    uint32_t subdirs = 0;
  };
  struct Dirent {
    std::string_view name;  // points into a layer index
    Ino ino = 0;
  };
  class Builder;

  static constexpr size_t kSpanCacheBytes = 64 << 20;

  Result<const Node*> Get(Ino ino) const;

  std::vector<ViewLayer> layers_;
  // Decoded spans of plain gzip / zstd layers shared by several files (index/span_cache.h).
  std::unique_ptr<SpanCache> spans_ = std::make_unique<SpanCache>(kSpanCacheBytes);
  std::vector<Node> nodes_;  // nodes_[ino - 1]
  std::vector<Dirent> dirents_;
};

}  // namespace imagefs::index
