#include "store/prefetch.h"

#include <sys/stat.h>

#include <algorithm>
#include <vector>

namespace imagefs::store {
namespace {

struct FileInfo {
  index::Ino ino = 0;
  uint32_t layer = 0;
  uint64_t first = 0;     // lowest blob offset of its chunks
  uint64_t last_end = 0;  // highest end of its chunks
  uint64_t size = 0;
  bool in_set = false;    // below its layer's prefetch_end
};

std::vector<FileInfo> Plan(const index::MergedView& view, bool all) {
  std::vector<FileInfo> files;
  for (index::Ino ino = 1; ino <= view.InodeCount(); ++ino) {
    auto attr = view.Attr(ino);
    if (!attr.ok() || !S_ISREG(attr->mode) || attr->size == 0) continue;
    auto origin = view.OriginOf(ino);
    if (!origin.ok()) continue;
    const index::LayerIndex& layer = *view.layers()[origin->layer].index;
    std::span<const index::ChunkRef> chunks = layer.Chunks(origin->node);
    if (chunks.empty()) continue;
    FileInfo f;
    f.ino = ino;
    f.layer = origin->layer;
    f.size = attr->size;
    f.first = UINT64_MAX;
    for (const index::ChunkRef& c : chunks) {
      f.first = std::min(f.first, c.blob_offset);
      f.last_end = std::max(f.last_end, c.blob_offset + c.blob_length);
    }
    f.in_set = layer.prefetch_end() > 0 && f.last_end <= layer.prefetch_end();
    if (f.in_set || all) files.push_back(f);
  }
  // The prefetch sets first, then the rest; by layer and blob offset within each.
  std::sort(files.begin(), files.end(), [](const FileInfo& a, const FileInfo& b) {
    if (a.in_set != b.in_set) return a.in_set;
    if (a.layer != b.layer) return a.layer < b.layer;
    if (a.first != b.first) return a.first < b.first;
    return a.ino < b.ino;
  });
  return files;
}

Status ReadWhole(CachedFileReader& reader, const FileInfo& f, std::vector<uint8_t>& buf) {
  for (uint64_t off = 0; off < f.size;) {
    ASSIGN_OR_RETURN(size_t n, reader.Read(f.ino, off, buf));
    if (n == 0) break;
    off += n;
  }
  return Status::Ok();
}

}  // namespace

bool InPrefetchSet(const index::MergedView& view, index::Ino ino) {
  auto origin = view.OriginOf(ino);
  if (!origin.ok()) return false;
  const index::LayerIndex& layer = *view.layers()[origin->layer].index;
  std::span<const index::ChunkRef> chunks = layer.Chunks(origin->node);
  if (layer.prefetch_end() == 0 || chunks.empty()) return false;
  for (const index::ChunkRef& c : chunks) {
    if (c.blob_offset + c.blob_length > layer.prefetch_end()) return false;
  }
  return true;
}

bool HasPrefetchSet(const index::MergedView& view) {
  for (const index::ViewLayer& layer : view.layers()) {
    if (layer.index->prefetch_end() > 0) return true;
  }
  return false;
}

std::string ProfileText(const index::MergedView& view, const std::vector<index::Ino>& order) {
  // Paths of every node, breadth-first from the root (names sorted, so the first name of a
  // hard link is the bytewise first path at the shallowest depth).
  std::vector<std::string> path(view.InodeCount() + 1);
  std::vector<index::Ino> queue = {index::kRootIno};
  for (size_t q = 0; q < queue.size(); ++q) {
    const index::Ino dir = queue[q];
    (void)view.ForEachChild(dir, [&](std::string_view name, index::Ino child) {
      if (child >= path.size() || !path[child].empty()) return true;
      path[child] = (dir == index::kRootIno ? "" : path[dir]) + "/" + std::string(name);
      auto attr = view.Attr(child);
      if (attr.ok() && S_ISDIR(attr->mode)) queue.push_back(child);
      return true;
    });
  }
  std::string out;
  for (index::Ino ino : order) {
    if (ino < path.size() && !path[ino].empty()) out += path[ino] + "\n";
  }
  return out;
}

std::vector<index::Ino> PrefetchOrder(const index::MergedView& view, bool all) {
  std::vector<index::Ino> out;
  for (const FileInfo& f : Plan(view, all)) out.push_back(f.ino);
  return out;
}

Result<PrefetchStats> Prefetch(const index::MergedView& view, CachedFileReader& reader,
                               const PreloadFor& preload, const PrefetchOptions& options) {
  PrefetchStats stats;
  std::vector<FileInfo> files;
  for (const FileInfo& f : Plan(view, options.all)) {
    if (reader.IsCached(f.ino)) {
      stats.skipped += 1;
    } else {
      files.push_back(f);
    }
  }
  std::vector<uint8_t> buf(1 << 20);
  auto stopped = [&] { return options.stop != nullptr && options.stop->load(); };
  for (size_t i = 0; i < files.size() && !stopped();) {
    const FileInfo& f = files[i];
    fetch::PreloadBlobSource* source = preload ? preload(f.layer) : nullptr;
    size_t j = i;
    uint64_t end = f.last_end;
    if (source != nullptr && f.last_end - f.first <= options.window) {
      while (j + 1 < files.size() && files[j + 1].layer == f.layer &&
             files[j + 1].in_set == f.in_set && files[j + 1].first >= f.first &&
             files[j + 1].last_end - f.first <= options.window) {
        ++j;
        end = std::max(end, files[j].last_end);
      }
      // A window that cannot be fetched only means the files are read one by one.
      if (source->Preload({f.first, end - f.first}).ok()) {
        stats.preloaded += end - f.first;
      }
    }
    for (size_t k = i; k <= j && !stopped(); ++k) {
      Status st = ReadWhole(reader, files[k], buf);
      if (!st.ok()) {
        if (source != nullptr) source->Drop();
        return st;
      }
      stats.files += 1;
      stats.bytes += files[k].size;
    }
    if (source != nullptr) source->Drop();
    i = j + 1;
  }
  return stats;
}

}  // namespace imagefs::store
