#pragma once

// LayerIndex: where every file of one layer lives inside the layer blob.
//
// Every layer format (uncompressed tar, plain gzip, plain zstd, and later eStargz and
// zstd:chunked) produces the same thing: a tree of numeric node ids (they become inode
// numbers), their attributes, and for each regular file the list of chunks that hold its
// bytes. A chunk is a range of the compressed blob that decodes to a "span" of bytes,
// verified against its digest, of which a slice belongs to the file.
//
// Whiteouts (".wh.NAME") and opaque markers (".wh..wh..opq") are not files here: a
// whiteout is a node named NAME with attr.whiteout set (typed as overlayfs writes it, a
// char device 0/0), an opaque marker sets attr.opaque on its directory. The merged view
// stacks layers with those flags.
//
// Hard links inside the layer resolve to one node: Lookup of every name of the link
// returns the same id, and attr.nlink counts the names.
//
// Thread safety: a LayerIndex is immutable once opened; every const method may be called
// concurrently. Views (names, link targets, xattrs, chunk spans) point into the index and
// live as long as it does.

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fetch/blob_source.h"
#include "util/digest.h"
#include "util/status.h"

namespace imagefs::fetch {
struct Descriptor;
}

namespace imagefs::index {

class IndexCache;
class GzipCheckpointIndex;
class ScanObserver;

using NodeId = uint32_t;
inline constexpr NodeId kNoNode = std::numeric_limits<NodeId>::max();

struct NodeAttr {
  uint32_t mode = 0;  // file type bits and permissions, as st_mode
  uint32_t uid = 0;
  uint32_t gid = 0;
  // Regular files: bytes of content. Symlinks: length of the target. Otherwise 0.
  uint64_t size = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  // Directories: 2 + subdirectories. Others: names in this layer that resolve to the node.
  uint32_t nlink = 1;
  uint64_t rdev = 0;  // makedev(major, minor) for character and block devices
  // Names linked to this node form a group identified by this id (the node's own id) when
  // nlink > 1 for a non-directory; kNoNode otherwise.
  NodeId hardlink_group = kNoNode;
  bool whiteout = false;  // ".wh.NAME": NAME is deleted from lower layers
  bool opaque = false;    // directory carried ".wh..wh..opq": lower contents hidden
  // A hard link whose target is not in this layer (it names a file of a lower layer).
  // ReadLink returns the target path; the merged view resolves it.
  bool lower_hardlink = false;
};

// The layer descriptor annotation `imagefs convert` writes beside the formats' own when a
// layer has a prefetch set: prefetch_end() as a decimal number, so a mount can start
// fetching [0, end) with the manifest, before the layer's index arrives.
inline constexpr std::string_view kPrefetchEndAnnotation = "io.imagefs.prefetch-end";

enum class Codec : uint8_t {
  kNone = 0,            // the range holds the bytes themselves
  kGzip = 1,            // gzip member(s) decoded from a member header
  kGzipCheckpoint = 2,  // raw deflate resumed at a checkpoint (bit offset + 32 KiB window)
  kZstd = 3,            // zstd frame(s) decoded from a frame header
};
std::string_view CodecName(Codec codec);

// One piece of a file. Decoding [blob_offset, blob_offset + blob_length) of the blob with
// `codec` yields `skip` bytes to discard, then a span of `span_length` bytes, verified
// against `sha256` when has_digest. The file's bytes [file_offset, file_offset + length)
// are the span's bytes from `inner_offset` on. A span may hold bytes of many files.
struct ChunkRef {
  uint64_t blob_offset = 0;
  uint64_t blob_length = 0;
  uint64_t file_offset = 0;
  uint64_t length = 0;
  uint64_t skip = 0;
  uint64_t span_length = 0;
  uint64_t inner_offset = 0;
  uint32_t checkpoint = 0;  // kGzipCheckpoint: index into the layer's checkpoint table
  Codec codec = Codec::kNone;
  bool has_digest = false;
  // false: sha256 is of the whole decoded span. true: of the chunk's own bytes only,
  // span[inner_offset, inner_offset + length) (eStargz's and zstd:chunked's chunkDigest).
  bool chunk_digest = false;
  std::array<uint8_t, 32> sha256{};

  // "sha256:..." of the span (or of the chunk when chunk_digest), or an empty Digest when
  // the format gives none.
  Digest SpanDigest() const;
};

struct XattrView {
  std::string_view name;
  std::string_view value;
};

class LayerIndex {
 public:
  LayerIndex() = default;
  virtual ~LayerIndex() = default;
  LayerIndex(const LayerIndex&) = delete;
  LayerIndex& operator=(const LayerIndex&) = delete;

  virtual NodeId Root() const = 0;
  // kNotFound when parent has no such child; ENOTDIR when parent is not a directory.
  virtual Result<NodeId> Lookup(NodeId parent, std::string_view name) const = 0;
  virtual Result<NodeAttr> Attr(NodeId id) const = 0;
  // Calls fn for each child in name order (bytewise), until fn returns false.
  virtual Status ForEachChild(
      NodeId id, const std::function<bool(std::string_view name, NodeId child)>& fn) const = 0;
  // Symlink target (or the target path of a lower_hardlink). EINVAL for other nodes.
  virtual Result<std::string_view> ReadLink(NodeId id) const = 0;
  virtual Result<std::vector<XattrView>> Xattrs(NodeId id) const = 0;
  // Chunks of a regular file in file order, covering [0, size) without gaps. Empty for
  // other nodes and empty files.
  virtual std::span<const ChunkRef> Chunks(NodeId id) const = 0;

  // Number of node ids: valid ids are [0, NodeCount()).
  virtual NodeId NodeCount() const = 0;
  // "sha256:..." of the layer blob, for error messages; may be empty.
  virtual const std::string& layer_digest() const = 0;
  // The blob offset below which the layer holds its prefetch files (eStargz's
  // ".prefetch.landmark", imagefs's zstd:chunked imagefsPrefetchEndOffset): a file whose
  // chunks all end at or below it is to be fetched first at mount. 0: no prefetch set.
  virtual uint64_t prefetch_end() const { return 0; }
  // Restart points for Codec::kGzipCheckpoint chunks; null for other formats.
  virtual const GzipCheckpointIndex* gzip_checkpoints() const { return nullptr; }
  // Heap bytes held by the index (for budgets and benchmarks).
  virtual size_t MemoryUsage() const = 0;
};

// Which reader built an index (recorded in the cached index).
enum class LayerFormat : uint8_t {
  kTar = 1,
  kGzip = 2,
  kZstd = 3,
  kEstargz = 4,
  kZstdChunked = 5,
};
std::string_view LayerFormatName(LayerFormat format);

struct OpenOptions {
  // Uncompressed bytes between restart points / spans of the plain gzip and zstd readers.
  uint64_t span_size = 4 << 20;
  // A plain gzip or zstd layer is decoded whole, front to back, to build its index. When
  // set, this is called once before that scan and the scan reads the source it returns
  // (e.g. one that streams the blob once into a local file, fetch/streamed_source.h);
  // null or unset: the scan reads `source`. The caller owns the returned source.
  std::function<Result<fetch::BlobSource*>()> scan_source;
  // When set, a plain gzip scan reports its progress here: snapshots of the entries whose
  // bytes have passed (index/progress.h), so a mount can serve them before the end.
  ScanObserver* observer = nullptr;
};

// Opens the index of one layer: a cached index (by layer digest) when `cache` has one,
// else the reader picked by sniffing the blob's first bytes (tar: "ustar" at 257; gzip:
// 1f 8b; zstd: 28 b5 2f fd) and, for a tar without the ustar magic, the media type. A
// built index is put into `cache` (may be null). Errors name the layer digest.
Result<std::unique_ptr<LayerIndex>> OpenLayerIndex(fetch::BlobSource& source,
                                                   std::string_view media_type,
                                                   std::string_view layer_digest,
                                                   IndexCache* cache,
                                                   const OpenOptions& options = {});
Result<std::unique_ptr<LayerIndex>> OpenLayerIndex(fetch::BlobSource& source,
                                                   const fetch::Descriptor& descriptor,
                                                   IndexCache* cache,
                                                   const OpenOptions& options = {});

}  // namespace imagefs::index
