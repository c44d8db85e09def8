#include "index/flat_index.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "index/coding.h"

namespace imagefs::index {
namespace {

constexpr std::string_view kMagic = "IFSLIDX\x01";
// 2 added prefetch_end after blob_size. Other versions are kUnsupported: the cache then
// rebuilds the index (decode and encode stay exact inverses).
constexpr uint32_t kVersion = 2;
constexpr size_t kTrailer = 32;
constexpr size_t kNodeBytes = 80;
constexpr size_t kDirentBytes = 12;
constexpr size_t kXattrBytes = 16;
constexpr size_t kChunkBytes = 96;

bool IsDir(uint32_t mode) { return (mode & S_IFMT) == S_IFDIR; }
bool IsReg(uint32_t mode) { return (mode & S_IFMT) == S_IFREG; }

bool InRange(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

}  // namespace

std::string_view CodecName(Codec codec) {
  switch (codec) {
    case Codec::kNone: return "none";
    case Codec::kGzip: return "gzip";
    case Codec::kGzipCheckpoint: return "gzip-checkpoint";
    case Codec::kZstd: return "zstd";
  }
  return "unknown";
}

std::string_view LayerFormatName(LayerFormat format) {
  switch (format) {
    case LayerFormat::kTar: return "tar";
    case LayerFormat::kGzip: return "gzip";
    case LayerFormat::kZstd: return "zstd";
    case LayerFormat::kEstargz: return "estargz";
    case LayerFormat::kZstdChunked: return "zstd:chunked";
  }
  return "unknown";
}

Digest ChunkRef::SpanDigest() const {
  return has_digest ? Digest::FromSha256Raw(sha256) : Digest();
}

// ---------------------------------------------------------------------------------------
// FlatLayerIndex

Status FlatLayerIndex::CheckId(NodeId id) const {
  if (id >= nodes_.size()) {
    return Status::NotFound("node " + std::to_string(id) + " is not in layer " + layer_digest_);
  }
  return Status::Ok();
}

Result<NodeId> FlatLayerIndex::Lookup(NodeId parent, std::string_view name) const {
  RETURN_IF_ERROR(CheckId(parent));
  const Node& p = nodes_[parent];
  if (!IsDir(p.mode)) return Status::FromErrno(ENOTDIR, "lookup of " + std::string(name));
  auto begin = dirents_.begin() + p.first_dirent;
  auto end = begin + p.dirent_count;
  auto it = std::lower_bound(begin, end, name, [&](const Dirent& d, std::string_view n) {
    return ArenaView(d.name_off, d.name_len) < n;
  });
  if (it == end || ArenaView(it->name_off, it->name_len) != name) {
    return Status::NotFound(std::string(name) + ": no such file in layer");
  }
  return it->node;
}

Result<NodeAttr> FlatLayerIndex::Attr(NodeId id) const {
  RETURN_IF_ERROR(CheckId(id));
  const Node& n = nodes_[id];
  NodeAttr a;
  a.mode = n.mode;
  a.uid = n.uid;
  a.gid = n.gid;
  a.size = n.size;
  a.mtime_sec = n.mtime_sec;
  a.mtime_nsec = n.mtime_nsec;
  a.nlink = n.nlink;
  a.rdev = n.rdev;
  a.hardlink_group = !IsDir(n.mode) && n.nlink > 1 ? id : kNoNode;
  a.whiteout = (n.flags & kWhiteout) != 0;
  a.opaque = (n.flags & kOpaque) != 0;
  a.lower_hardlink = (n.flags & kLowerHardlink) != 0;
  return a;
}

Status FlatLayerIndex::ForEachChild(
    NodeId id, const std::function<bool(std::string_view name, NodeId child)>& fn) const {
  RETURN_IF_ERROR(CheckId(id));
  const Node& n = nodes_[id];
  if (!IsDir(n.mode)) return Status::FromErrno(ENOTDIR, "listing node " + std::to_string(id));
  for (uint32_t i = 0; i < n.dirent_count; ++i) {
    const Dirent& d = dirents_[n.first_dirent + i];
    if (!fn(ArenaView(d.name_off, d.name_len), d.node)) break;
  }
  return Status::Ok();
}

Result<std::string_view> FlatLayerIndex::ReadLink(NodeId id) const {
  RETURN_IF_ERROR(CheckId(id));
  const Node& n = nodes_[id];
  if ((n.mode & S_IFMT) != S_IFLNK && !(n.flags & kLowerHardlink)) {
    return Status::FromErrno(EINVAL, "readlink of node " + std::to_string(id));
  }
  return ArenaView(n.target_off, n.target_len);
}

Result<std::vector<XattrView>> FlatLayerIndex::Xattrs(NodeId id) const {
  RETURN_IF_ERROR(CheckId(id));
  const Node& n = nodes_[id];
  std::vector<XattrView> out;
  out.reserve(n.xattr_count);
  for (uint32_t i = 0; i < n.xattr_count; ++i) {
    const Xattr& x = xattrs_[n.first_xattr + i];
    out.push_back({ArenaView(x.name_off, x.name_len), ArenaView(x.value_off, x.value_len)});
  }
  return out;
}

std::span<const ChunkRef> FlatLayerIndex::Chunks(NodeId id) const {
  if (id >= nodes_.size()) return {};
  const Node& n = nodes_[id];
  return std::span<const ChunkRef>(chunks_).subspan(n.first_chunk, n.chunk_count);
}

size_t FlatLayerIndex::MemoryUsage() const {
  return sizeof(*this) + nodes_.capacity() * sizeof(Node) +
         dirents_.capacity() * sizeof(Dirent) + xattrs_.capacity() * sizeof(Xattr) +
         chunks_.capacity() * sizeof(ChunkRef) + arena_.capacity() + layer_digest_.capacity() +
         (checkpoints_ ? checkpoints_->MemoryUsage() : 0);
}

void FlatLayerIndex::EncodeTo(std::string& out) const {
  size_t start = out.size();
  PutBytes(out, kMagic);
  PutU32(out, kVersion);
  PutU8(out, static_cast<uint8_t>(format_));
  PutU8(out, checkpoints_ ? 1 : 0);
  PutU16(out, 0);
  PutU64(out, blob_size_);
  PutU64(out, prefetch_end_);
  PutU32(out, static_cast<uint32_t>(layer_digest_.size()));
  PutBytes(out, layer_digest_);
  PutU32(out, static_cast<uint32_t>(nodes_.size()));
  PutU32(out, static_cast<uint32_t>(dirents_.size()));
  PutU32(out, static_cast<uint32_t>(xattrs_.size()));
  PutU32(out, static_cast<uint32_t>(chunks_.size()));
  PutU64(out, arena_.size());
  for (const Node& n : nodes_) {
    PutU32(out, n.mode);
    PutU32(out, n.uid);
    PutU32(out, n.gid);
    PutU32(out, n.nlink);
    PutU64(out, n.size);
    PutU64(out, static_cast<uint64_t>(n.mtime_sec));
    PutU64(out, n.rdev);
    for (uint32_t v : {n.mtime_nsec, n.flags, n.first_dirent, n.dirent_count, n.target_off,
                       n.target_len, n.first_xattr, n.xattr_count, n.first_chunk,
                       n.chunk_count}) {
      PutU32(out, v);
    }
  }
  for (const Dirent& d : dirents_) {
    PutU32(out, d.name_off);
    PutU32(out, d.name_len);
    PutU32(out, d.node);
  }
  for (const Xattr& x : xattrs_) {
    PutU32(out, x.name_off);
    PutU32(out, x.name_len);
    PutU32(out, x.value_off);
    PutU32(out, x.value_len);
  }
  for (const ChunkRef& c : chunks_) {
    for (uint64_t v : {c.blob_offset, c.blob_length, c.file_offset, c.length, c.skip,
                       c.span_length, c.inner_offset}) {
      PutU64(out, v);
    }
    PutU32(out, c.checkpoint);
    PutU8(out, static_cast<uint8_t>(c.codec));
    PutU8(out, c.has_digest ? (c.chunk_digest ? 2 : 1) : 0);
    PutU16(out, 0);
    PutBytes(out, std::string_view(reinterpret_cast<const char*>(c.sha256.data()), 32));
  }
  PutBytes(out, arena_);
  if (checkpoints_) {
    std::string cp;
    checkpoints_->EncodeTo(cp);
    PutU64(out, cp.size());
    PutBytes(out, cp);
  }
  auto sum = Sha256Raw(std::string_view(out).substr(start));
  PutBytes(out, std::string_view(reinterpret_cast<const char*>(sum.data()), 32));
}

Result<std::unique_ptr<FlatLayerIndex>> FlatLayerIndex::DecodeFrom(std::string_view in) {
  auto bad = [](std::string_view why) {
    return Status::Corruption("layer index: " + std::string(why));
  };
  if (in.size() < kMagic.size() + 4 + kTrailer) return bad("truncated");
  if (in.substr(0, kMagic.size()) != kMagic) return bad("bad magic");
  std::string_view body = in.substr(0, in.size() - kTrailer);
  auto sum = Sha256Raw(body);
  if (in.substr(in.size() - kTrailer) !=
      std::string_view(reinterpret_cast<const char*>(sum.data()), 32)) {
    return bad("checksum mismatch");
  }
  Decoder dec(body.substr(kMagic.size()));
  uint32_t version;
  if (!dec.GetU32(version)) return bad("truncated");
  if (version != kVersion) {
    return Status::Unsupported("layer index: version " + std::to_string(version) +
                               " is not supported");
  }
  auto index = std::make_unique<FlatLayerIndex>();
  uint8_t format, has_checkpoints;
  uint16_t reserved;
  uint32_t digest_len, node_count, dirent_count, xattr_count, chunk_count;
  uint64_t arena_len;
  std::string_view digest;
  if (!dec.GetU8(format) || !dec.GetU8(has_checkpoints) || !dec.GetU16(reserved) ||
      !dec.GetU64(index->blob_size_) || !dec.GetU64(index->prefetch_end_) ||
      !dec.GetU32(digest_len) ||
      !dec.GetBytes(digest_len, digest) || !dec.GetU32(node_count) ||
      !dec.GetU32(dirent_count) || !dec.GetU32(xattr_count) || !dec.GetU32(chunk_count) ||
      !dec.GetU64(arena_len)) {
    return bad("truncated header");
  }
  if (format < 1 || format > 5 || has_checkpoints > 1 || reserved != 0) {
    return bad("bad header fields");
  }
  index->format_ = static_cast<LayerFormat>(format);
  index->layer_digest_.assign(digest);
  uint64_t need = uint64_t{node_count} * kNodeBytes + uint64_t{dirent_count} * kDirentBytes +
                  uint64_t{xattr_count} * kXattrBytes + uint64_t{chunk_count} * kChunkBytes;
  if (node_count == 0 || need > dec.remaining() || arena_len > dec.remaining() - need) {
    return bad("counts larger than the file");
  }
  index->nodes_.resize(node_count);
  for (Node& n : index->nodes_) {
    uint64_t mtime;
    bool ok = dec.GetU32(n.mode) && dec.GetU32(n.uid) && dec.GetU32(n.gid) &&
              dec.GetU32(n.nlink) && dec.GetU64(n.size) && dec.GetU64(mtime) &&
              dec.GetU64(n.rdev);
    for (uint32_t* v : {&n.mtime_nsec, &n.flags, &n.first_dirent, &n.dirent_count,
                        &n.target_off, &n.target_len, &n.first_xattr, &n.xattr_count,
                        &n.first_chunk, &n.chunk_count}) {
      ok = ok && dec.GetU32(*v);
    }
    if (!ok) return bad("truncated nodes");
    n.mtime_sec = static_cast<int64_t>(mtime);
  }
  index->dirents_.resize(dirent_count);
  for (Dirent& d : index->dirents_) {
    if (!dec.GetU32(d.name_off) || !dec.GetU32(d.name_len) || !dec.GetU32(d.node)) {
      return bad("truncated dirents");
    }
  }
  index->xattrs_.resize(xattr_count);
  for (Xattr& x : index->xattrs_) {
    if (!dec.GetU32(x.name_off) || !dec.GetU32(x.name_len) || !dec.GetU32(x.value_off) ||
        !dec.GetU32(x.value_len)) {
      return bad("truncated xattrs");
    }
  }
  index->chunks_.resize(chunk_count);
  for (ChunkRef& c : index->chunks_) {
    bool ok = true;
    for (uint64_t* v : {&c.blob_offset, &c.blob_length, &c.file_offset, &c.length, &c.skip,
                        &c.span_length, &c.inner_offset}) {
      ok = ok && dec.GetU64(*v);
    }
    uint8_t codec, has_digest;
    uint16_t pad;
    std::string_view sha;
    if (!ok || !dec.GetU32(c.checkpoint) || !dec.GetU8(codec) || !dec.GetU8(has_digest) ||
        !dec.GetU16(pad) || !dec.GetBytes(32, sha)) {
      return bad("truncated chunks");
    }
    if (codec > 3 || has_digest > 2 || pad != 0) return bad("bad chunk record");
    c.codec = static_cast<Codec>(codec);
    c.has_digest = has_digest != 0;
    c.chunk_digest = has_digest == 2;
    std::copy(sha.begin(), sha.end(), c.sha256.begin());
  }
  std::string_view arena;
  if (!dec.GetBytes(arena_len, arena)) return bad("truncated arena");
  index->arena_.assign(arena);
  if (has_checkpoints) {
    uint64_t len;
    std::string_view cp;
    if (!dec.GetU64(len) || !dec.GetBytes(len, cp)) return bad("truncated checkpoints");
    ASSIGN_OR_RETURN(auto checkpoints, GzipCheckpointIndex::DecodeFrom(cp));
    index->checkpoints_ = std::make_unique<GzipCheckpointIndex>(std::move(checkpoints));
  }
  if (dec.remaining() != 0) return bad("trailing bytes");

  // Every reference must land inside the index.
  const uint64_t arena_size = index->arena_.size();
  const size_t checkpoint_count = index->checkpoints_ ? index->checkpoints_->span_count() : 0;
  if (!IsDir(index->nodes_[0].mode)) return bad("root is not a directory");
  for (size_t i = 0; i < index->nodes_.size(); ++i) {
    const Node& n = index->nodes_[i];
    if (!InRange(n.first_dirent, n.dirent_count, dirent_count) ||
        (!IsDir(n.mode) && n.dirent_count != 0) ||
        !InRange(n.target_off, n.target_len, arena_size) ||
        !InRange(n.first_xattr, n.xattr_count, xattr_count) ||
        !InRange(n.first_chunk, n.chunk_count, chunk_count) ||
        (!IsReg(n.mode) && n.chunk_count != 0) || n.mtime_nsec >= 1000000000) {
      return bad("node " + std::to_string(i) + " refers outside the index");
    }
  }
  for (const Dirent& d : index->dirents_) {
    if (!InRange(d.name_off, d.name_len, arena_size) || d.node >= node_count || d.node == 0) {
      return bad("directory entry refers outside the index");
    }
  }
  for (const Xattr& x : index->xattrs_) {
    if (!InRange(x.name_off, x.name_len, arena_size) ||
        !InRange(x.value_off, x.value_len, arena_size)) {
      return bad("xattr refers outside the index");
    }
  }
  for (const ChunkRef& c : index->chunks_) {
    if (!InRange(c.inner_offset, c.length, c.span_length) ||
        (c.codec == Codec::kGzipCheckpoint && c.checkpoint >= checkpoint_count) ||
        (c.codec == Codec::kNone && !InRange(c.skip, c.span_length, c.blob_length)) ||
        !InRange(c.blob_offset, c.blob_length, index->blob_size_)) {
      return bad("chunk refers outside the blob or its span");
    }
  }
  return index;
}

// ---------------------------------------------------------------------------------------
// TreeBuilder

TreeBuilder::TreeBuilder() {
  BuildNode root;
  root.mode = S_IFDIR | 0755;
  nodes_.push_back(std::move(root));
}

Result<uint32_t> TreeBuilder::AddString(std::string_view s) {
  if (arena_.size() + s.size() > UINT32_MAX) {
    return Status::Unsupported("layer index: more than 4 GiB of names");
  }
  uint32_t off = static_cast<uint32_t>(arena_.size());
  arena_.append(s);
  return off;
}

void TreeBuilder::SetAttrs(BuildNode& node, const TarEntry& entry, uint32_t type_bits) {
  node.mode = type_bits | (entry.mode & 07777);
  node.uid = entry.uid;
  node.gid = entry.gid;
  node.mtime_sec = entry.mtime_sec;
  node.mtime_nsec = entry.mtime_nsec;
}

NodeId TreeBuilder::NewNode(const TarEntry* entry, uint32_t type_bits) {
  BuildNode n;
  if (entry != nullptr) {
    SetAttrs(n, *entry, type_bits);
  } else {
    n.mode = type_bits | 0755;
  }
  nodes_.push_back(std::move(n));
  return static_cast<NodeId>(nodes_.size() - 1);
}

static std::string DirentKey(NodeId parent, std::string_view name) {
  std::string key(sizeof(parent) + name.size(), '\0');
  std::memcpy(key.data(), &parent, sizeof(parent));
  std::memcpy(key.data() + sizeof(parent), name.data(), name.size());
  return key;
}

NodeId TreeBuilder::Child(NodeId parent, std::string_view name) const {
  auto it = dirent_by_key_.find(DirentKey(parent, name));
  return it == dirent_by_key_.end() ? kNoNode : dirents_[it->second].child;
}

Status TreeBuilder::SetChild(NodeId parent, std::string_view name, NodeId child) {
  std::string key = DirentKey(parent, name);
  auto it = dirent_by_key_.find(key);
  if (it != dirent_by_key_.end()) {
    dirents_[it->second].child = child;
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(uint32_t off, AddString(name));
  dirents_.push_back({parent, off, static_cast<uint32_t>(name.size()), child});
  uint32_t idx = static_cast<uint32_t>(dirents_.size() - 1);
  dirent_by_key_.emplace(std::move(key), idx);
  nodes_[parent].children.push_back(idx);
  return Status::Ok();
}

Result<NodeId> TreeBuilder::EnsureDir(std::string_view path) {
  NodeId cur = 0;
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    NodeId child = Child(cur, part);
    if (child == kNoNode || !IsDir(nodes_[child].mode) || (nodes_[child].flags & FlatLayerIndex::kWhiteout)) {
      child = NewNode(nullptr, S_IFDIR);
      RETURN_IF_ERROR(SetChild(cur, part, child));
    }
    cur = child;
  }
  return cur;
}

NodeId TreeBuilder::Resolve(std::string_view path) const {
  NodeId cur = 0;
  while (!path.empty()) {
    if (!IsDir(nodes_[cur].mode)) return kNoNode;
    size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    cur = Child(cur, part);
    if (cur == kNoNode) return kNoNode;
  }
  return cur;
}

Status TreeBuilder::Add(const TarEntry& entry) {
  if (nodes_.size() >= kNoNode - 1) {
    return Status::Unsupported("layer index: too many entries in one layer");
  }
  if (entry.path.empty()) {
    if (entry.type != TarType::kDirectory) {
      return Status::Corruption("tar entry for the layer root is not a directory");
    }
    SetAttrs(nodes_[0], entry, S_IFDIR);
    return Status::Ok();
  }
  size_t slash = entry.path.rfind('/');
  std::string_view path = entry.path;
  std::string_view parent_path = slash == std::string::npos ? "" : path.substr(0, slash);
  std::string_view base = slash == std::string::npos ? path : path.substr(slash + 1);
  ASSIGN_OR_RETURN(NodeId parent, EnsureDir(parent_path));

  constexpr std::string_view kWh = ".wh.";
  if (base.starts_with(kWh)) {
    if (base == ".wh..wh..opq") {
      nodes_[parent].flags |= FlatLayerIndex::kOpaque;
      return Status::Ok();
    }
    if (base.starts_with(".wh..wh.")) return Status::Ok();  // aufs metadata
    std::string_view name = base.substr(kWh.size());
    if (name.empty() || name == "." || name == "..") {
      return Status::Corruption("tar entry \"" + entry.path + "\": bad whiteout name");
    }
    NodeId w = NewNode(&entry, S_IFCHR);
    nodes_[w].mode = S_IFCHR;  // as overlayfs writes a whiteout: char device 0/0, no perms
    nodes_[w].flags = FlatLayerIndex::kWhiteout;
    return SetChild(parent, name, w);
  }

  NodeId node = kNoNode;
  switch (entry.type) {
    case TarType::kHardLink: {
      NodeId target = Resolve(entry.linkname);
      if (target != kNoNode) {
        if (IsDir(nodes_[target].mode)) {
          return Status::Corruption("tar entry \"" + entry.path + "\": hard link to directory \"" +
                                    entry.linkname + "\"");
        }
        if (nodes_[target].flags & FlatLayerIndex::kWhiteout) {
          return Status::Corruption("tar entry \"" + entry.path + "\": hard link to whiteout \"" +
                                    entry.linkname + "\"");
        }
        return SetChild(parent, base, target);
      }
      node = NewNode(&entry, S_IFREG);
      nodes_[node].flags = FlatLayerIndex::kLowerHardlink;
      ASSIGN_OR_RETURN(nodes_[node].target_off, AddString(entry.linkname));
      nodes_[node].target_len = static_cast<uint32_t>(entry.linkname.size());
      break;
    }
    case TarType::kDirectory: {
      NodeId existing = Child(parent, base);
      if (existing != kNoNode && IsDir(nodes_[existing].mode)) {
        SetAttrs(nodes_[existing], entry, S_IFDIR);
        node = existing;
      } else {
        node = NewNode(&entry, S_IFDIR);
      }
      break;
    }
    case TarType::kSymlink: {
      node = NewNode(&entry, S_IFLNK);
      ASSIGN_OR_RETURN(nodes_[node].target_off, AddString(entry.linkname));
      nodes_[node].target_len = static_cast<uint32_t>(entry.linkname.size());
      nodes_[node].size = entry.linkname.size();
      break;
    }
    case TarType::kCharDevice:
    case TarType::kBlockDevice:
      node = NewNode(&entry, entry.type == TarType::kCharDevice ? S_IFCHR : S_IFBLK);
      nodes_[node].rdev = makedev(entry.dev_major, entry.dev_minor);
      break;
    case TarType::kFifo:
      node = NewNode(&entry, S_IFIFO);
      break;
    case TarType::kRegular:
      node = NewNode(&entry, S_IFREG);
      nodes_[node].size = entry.size;
      nodes_[node].data_offset = entry.data_offset;
      break;
  }
  BuildNode& n = nodes_[node];
  n.first_xattr = static_cast<uint32_t>(xattrs_.size());
  n.xattr_count = 0;
  for (const auto& [name, value] : entry.xattrs) {
    FlatLayerIndex::Xattr x;
    ASSIGN_OR_RETURN(x.name_off, AddString(name));
    x.name_len = static_cast<uint32_t>(name.size());
    ASSIGN_OR_RETURN(x.value_off, AddString(value));
    x.value_len = static_cast<uint32_t>(value.size());
    xattrs_.push_back(x);
    ++nodes_[node].xattr_count;
  }
  return SetChild(parent, base, node);
}

Result<std::unique_ptr<FlatLayerIndex>> TreeBuilder::Finish(
    const ChunkMapper& map_chunks, LayerFormat format, uint64_t blob_size,
    std::string layer_digest, std::unique_ptr<GzipCheckpointIndex> checkpoints) {
  auto name_of = [&](uint32_t dirent) {
    const BuildDirent& d = dirents_[dirent];
    return std::string_view(arena_).substr(d.name_off, d.name_len);
  };
  // Breadth-first from the root: ids of siblings are contiguous, replaced nodes that no
  // name reaches any more are dropped, and each name of a hard link counts once.
  std::vector<NodeId> new_id(nodes_.size(), kNoNode);
  std::vector<uint32_t> names(nodes_.size(), 0);
  std::vector<NodeId> order{0};
  new_id[0] = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    BuildNode& b = nodes_[order[k]];
    std::sort(b.children.begin(), b.children.end(),
              [&](uint32_t x, uint32_t y) { return name_of(x) < name_of(y); });
    for (uint32_t d : b.children) {
      NodeId child = dirents_[d].child;
      if (new_id[child] == kNoNode) {
        new_id[child] = static_cast<NodeId>(order.size());
        order.push_back(child);
      }
      ++names[child];
    }
  }

  ASSIGN_OR_RETURN(std::unique_ptr<FlatLayerIndex> index,
                   Layout(order, new_id, names, map_chunks, format, blob_size,
                          std::move(layer_digest), std::move(checkpoints)));
  // The builder is spent.
  nodes_.clear();
  dirents_.clear();
  xattrs_.clear();
  arena_.clear();
  dirent_by_key_.clear();
  return index;
}

Result<std::unique_ptr<FlatLayerIndex>> TreeBuilder::Snapshot(
    const ChunkMapper& map_chunks, LayerFormat format, uint64_t blob_size,
    std::string layer_digest, std::unique_ptr<GzipCheckpointIndex> checkpoints) {
  // Every node keeps its builder id, so ids agree between snapshots of one builder;
  // nodes no name reaches any more stay (unreachable, harmless).
  std::vector<NodeId> order(nodes_.size());
  std::vector<uint32_t> names(nodes_.size(), 0);
  for (NodeId id = 0; id < nodes_.size(); ++id) {
    order[id] = id;
    BuildNode& b = nodes_[id];
    std::sort(b.children.begin(), b.children.end(), [&](uint32_t x, uint32_t y) {
      return std::string_view(arena_).substr(dirents_[x].name_off, dirents_[x].name_len) <
             std::string_view(arena_).substr(dirents_[y].name_off, dirents_[y].name_len);
    });
    for (uint32_t d : b.children) ++names[dirents_[d].child];
  }
  return Layout(order, order, names, map_chunks, format, blob_size, std::move(layer_digest),
                std::move(checkpoints));
}

Result<std::unique_ptr<FlatLayerIndex>> TreeBuilder::Layout(
    const std::vector<NodeId>& order, const std::vector<NodeId>& new_id,
    const std::vector<uint32_t>& names, const ChunkMapper& map_chunks, LayerFormat format,
    uint64_t blob_size, std::string layer_digest,
    std::unique_ptr<GzipCheckpointIndex> checkpoints) const {
  auto index = std::make_unique<FlatLayerIndex>();
  index->format_ = format;
  index->blob_size_ = blob_size;
  index->layer_digest_ = std::move(layer_digest);
  index->checkpoints_ = std::move(checkpoints);
  index->nodes_.reserve(order.size());
  index->dirents_.reserve(order.size() > 0 ? order.size() - 1 : 0);
  std::string& arena = index->arena_;
  auto copy_string = [&](uint32_t off, uint32_t len) -> Result<uint32_t> {
    if (arena.size() + len > UINT32_MAX) {
      return Status::Unsupported("layer index: more than 4 GiB of names");
    }
    uint32_t at = static_cast<uint32_t>(arena.size());
    arena.append(arena_, off, len);
    return at;
  };
  for (NodeId old : order) {
    const BuildNode& b = nodes_[old];
    FlatLayerIndex::Node n;
    n.mode = b.mode;
    n.uid = b.uid;
    n.gid = b.gid;
    n.size = b.size;
    n.mtime_sec = b.mtime_sec;
    n.mtime_nsec = b.mtime_nsec;
    n.rdev = b.rdev;
    n.flags = b.flags;
    n.nlink = names[old];
    if (IsDir(b.mode)) {
      n.first_dirent = static_cast<uint32_t>(index->dirents_.size());
      n.dirent_count = static_cast<uint32_t>(b.children.size());
      n.nlink = 2;
      for (uint32_t d : b.children) {
        const BuildDirent& bd = dirents_[d];
        FlatLayerIndex::Dirent fd;
        ASSIGN_OR_RETURN(fd.name_off, copy_string(bd.name_off, bd.name_len));
        fd.name_len = bd.name_len;
        fd.node = new_id[bd.child];
        index->dirents_.push_back(fd);
        if (IsDir(nodes_[bd.child].mode)) ++n.nlink;
      }
    }
    if (b.target_len > 0) {
      ASSIGN_OR_RETURN(n.target_off, copy_string(b.target_off, b.target_len));
      n.target_len = b.target_len;
    }
    n.first_xattr = static_cast<uint32_t>(index->xattrs_.size());
    n.xattr_count = b.xattr_count;
    for (uint32_t i = 0; i < b.xattr_count; ++i) {
      const FlatLayerIndex::Xattr& x = xattrs_[b.first_xattr + i];
      FlatLayerIndex::Xattr fx;
      ASSIGN_OR_RETURN(fx.name_off, copy_string(x.name_off, x.name_len));
      fx.name_len = x.name_len;
      ASSIGN_OR_RETURN(fx.value_off, copy_string(x.value_off, x.value_len));
      fx.value_len = x.value_len;
      index->xattrs_.push_back(fx);
    }
    n.first_chunk = static_cast<uint32_t>(index->chunks_.size());
    if (IsReg(b.mode) && !(b.flags & FlatLayerIndex::kLowerHardlink) && b.size > 0) {
      RETURN_IF_ERROR(map_chunks(b.data_offset, b.size, index->chunks_));
      uint64_t covered = 0;
      for (size_t i = n.first_chunk; i < index->chunks_.size(); ++i) {
        if (index->chunks_[i].file_offset != covered) break;
        covered += index->chunks_[i].length;
      }
      if (covered != b.size) {
        return Status::Internal("layer index: chunks of a file do not cover it");
      }
      if (index->chunks_.size() > UINT32_MAX) {
        return Status::Unsupported("layer index: too many chunks in one layer");
      }
    }
    n.chunk_count = static_cast<uint32_t>(index->chunks_.size() - n.first_chunk);
    index->nodes_.push_back(n);
  }
  index->nodes_.shrink_to_fit();
  index->dirents_.shrink_to_fit();
  index->xattrs_.shrink_to_fit();
  index->chunks_.shrink_to_fit();
  arena.shrink_to_fit();
  return index;
}

}  // namespace imagefs::index
