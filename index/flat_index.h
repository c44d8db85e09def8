#pragma once

// FlatLayerIndex: the in-memory LayerIndex every reader produces, and TreeBuilder, which
// turns scanned tar entries into one.
//
// Memory layout (the budget: an image of 100k files well under 100 MB):
//   nodes_    one fixed-size record per node, indexed by NodeId (root = 0, breadth-first)
//   dirents_  (name, child) records; a directory's children are one contiguous range,
//             sorted bytewise by name, so Lookup is a binary search
//   xattrs_   (name, value) records, a contiguous range per node
//   chunks_   ChunkRefs, a contiguous range per regular file
//   arena_    one string holding every name, link target and xattr
// There is no std::string, map or vector per node.
//
// Serialized form (for IndexCache): docs/formats.md ("layer index").

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "index/gzip_checkpoints.h"
#include "index/layer_index.h"
#include "index/tar_scanner.h"

namespace imagefs::index {

class FlatLayerIndex final : public LayerIndex {
 public:
  struct Node {
    uint32_t mode = 0;
    uint32_t uid = 0;
    uint32_t gid = 0;
    uint32_t nlink = 1;
    uint64_t size = 0;
    int64_t mtime_sec = 0;
    uint64_t rdev = 0;
    uint32_t mtime_nsec = 0;
    uint32_t flags = 0;  // kWhiteout | kOpaque | kLowerHardlink
    uint32_t first_dirent = 0;
    uint32_t dirent_count = 0;
    uint32_t target_off = 0;  // symlink target / lower hard link path, in arena_
    uint32_t target_len = 0;
    uint32_t first_xattr = 0;
    uint32_t xattr_count = 0;
    uint32_t first_chunk = 0;
    uint32_t chunk_count = 0;
  };
  static constexpr uint32_t kWhiteout = 1;
  static constexpr uint32_t kOpaque = 2;
  static constexpr uint32_t kLowerHardlink = 4;
  struct Dirent {
    uint32_t name_off = 0;
    uint32_t name_len = 0;
    NodeId node = 0;
  };
  struct Xattr {
    uint32_t name_off = 0;
    uint32_t name_len = 0;
    uint32_t value_off = 0;
    uint32_t value_len = 0;
  };

  FlatLayerIndex() = default;

  NodeId Root() const override { return 0; }
  Result<NodeId> Lookup(NodeId parent, std::string_view name) const override;
  Result<NodeAttr> Attr(NodeId id) const override;
  Status ForEachChild(
      NodeId id,
      const std::function<bool(std::string_view name, NodeId child)>& fn) const override;
  Result<std::string_view> ReadLink(NodeId id) const override;
  Result<std::vector<XattrView>> Xattrs(NodeId id) const override;
  std::span<const ChunkRef> Chunks(NodeId id) const override;
  NodeId NodeCount() const override { return static_cast<NodeId>(nodes_.size()); }
  const std::string& layer_digest() const override { return layer_digest_; }
  const GzipCheckpointIndex* gzip_checkpoints() const override { return checkpoints_.get(); }
  size_t MemoryUsage() const override;

  uint64_t prefetch_end() const override { return prefetch_end_; }
  void set_prefetch_end(uint64_t end) { prefetch_end_ = end; }

  LayerFormat format() const { return format_; }
  uint64_t blob_size() const { return blob_size_; }

  // Appends the serialized index (with its checkpoint table, if any) to out.
  void EncodeTo(std::string& out) const;
  // Checks the checksum and every internal reference, so a damaged cache file is an
  // error, never an out-of-range access. kUnsupported for another version.
  static Result<std::unique_ptr<FlatLayerIndex>> DecodeFrom(std::string_view in);

 private:
  friend class TreeBuilder;
  Status CheckId(NodeId id) const;
  std::string_view ArenaView(uint32_t off, uint32_t len) const {
    return std::string_view(arena_).substr(off, len);
  }

  LayerFormat format_ = LayerFormat::kTar;
  uint64_t blob_size_ = 0;
  uint64_t prefetch_end_ = 0;
  std::string layer_digest_;
  std::vector<Node> nodes_;
  std::vector<Dirent> dirents_;
  std::vector<Xattr> xattrs_;
  std::vector<ChunkRef> chunks_;
  std::string arena_;
  std::unique_ptr<GzipCheckpointIndex> checkpoints_;
};

// Builds a FlatLayerIndex from tar entries in archive order, as extracting the tar would:
// missing parent directories are implied (0755, root-owned, mtime 0); a later entry for
// the same path replaces the earlier one (a directory replacing a directory keeps its
// children); a hard link names its target's node (nlink counts the names; a target not in
// this layer becomes a lower_hardlink node); ".wh.NAME" becomes a whiteout node NAME and
// ".wh..wh..opq" marks its directory opaque (other ".wh..wh." names are aufs metadata and
// are dropped). Not thread-safe.
class TreeBuilder {
 public:
  TreeBuilder();
  TreeBuilder(const TreeBuilder&) = delete;
  TreeBuilder& operator=(const TreeBuilder&) = delete;

  Status Add(const TarEntry& entry);

  // Appends the chunks holding a regular file's bytes: the file's data is
  // [data_offset, data_offset + size) of the uncompressed stream.
  using ChunkMapper =
      std::function<Status(uint64_t data_offset, uint64_t size, std::vector<ChunkRef>& out)>;
  // Lays out the final index (unreachable replaced nodes dropped). The builder is spent.
  Result<std::unique_ptr<FlatLayerIndex>> Finish(
      const ChunkMapper& map_chunks, LayerFormat format, uint64_t blob_size,
      std::string layer_digest, std::unique_ptr<GzipCheckpointIndex> checkpoints);
  // An index of the entries added so far that keeps the builder's node ids (creation
  // order, root = 0), so ids agree between snapshots and a node's id never changes: what
  // a mount reads while the layer is still being scanned (index/progress.h). Every added
  // regular file must already be mappable. The builder stays usable.
  Result<std::unique_ptr<FlatLayerIndex>> Snapshot(
      const ChunkMapper& map_chunks, LayerFormat format, uint64_t blob_size,
      std::string layer_digest, std::unique_ptr<GzipCheckpointIndex> checkpoints);

 private:
  // Lays out nodes_[order[k]] as node k; new_id maps a builder id to its laid-out id and
  // names counts the names of each builder node.
  Result<std::unique_ptr<FlatLayerIndex>> Layout(
      const std::vector<NodeId>& order, const std::vector<NodeId>& new_id,
      const std::vector<uint32_t>& names, const ChunkMapper& map_chunks, LayerFormat format,
      uint64_t blob_size, std::string layer_digest,
      std::unique_ptr<GzipCheckpointIndex> checkpoints) const;
  struct BuildNode {
    uint32_t mode = 0;
    uint32_t uid = 0;
    uint32_t gid = 0;
    uint32_t flags = 0;
    uint64_t size = 0;
    int64_t mtime_sec = 0;
    uint64_t rdev = 0;
    uint64_t data_offset = 0;
    uint32_t mtime_nsec = 0;
    uint32_t target_off = 0;
    uint32_t target_len = 0;
    uint32_t first_xattr = 0;
    uint32_t xattr_count = 0;
    std::vector<uint32_t> children;  // indices into dirents_ (directories only)
  };
  struct BuildDirent {
    NodeId parent = 0;
    uint32_t name_off = 0;
    uint32_t name_len = 0;
    NodeId child = 0;
  };

  Result<uint32_t> AddString(std::string_view s);
  NodeId NewNode(const TarEntry* entry, uint32_t type_bits);
  // The child named `name` of directory `parent`, or kNoNode.
  NodeId Child(NodeId parent, std::string_view name) const;
  Status SetChild(NodeId parent, std::string_view name, NodeId child);
  // Walks/creates the directories of `path`; a non-directory in the way is replaced by
  // an implied directory.
  Result<NodeId> EnsureDir(std::string_view path);
  NodeId Resolve(std::string_view path) const;
  void SetAttrs(BuildNode& node, const TarEntry& entry, uint32_t type_bits);

  std::vector<BuildNode> nodes_;
  std::vector<BuildDirent> dirents_;
  std::vector<FlatLayerIndex::Xattr> xattrs_;
  std::string arena_;
  // (parent id bytes + name) -> index into dirents_.
  std::unordered_map<std::string, uint32_t> dirent_by_key_;
};

}  // namespace imagefs::index
