#include "index/merged_view.h"

#include <sys/stat.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <unordered_map>

#include "index/chunk_reader.h"
#include "util/log.h"

namespace imagefs::index {
namespace {

bool IsDir(const NodeAttr& a) { return (a.mode & S_IFMT) == S_IFDIR; }

}  // namespace

std::vector<std::string_view> MergedView::PathParts(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > pos) parts.push_back(path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return parts;
}

class MergedView::Builder {
 public:
  explicit Builder(MergedView& view) : view_(view) {}

  Status Run() {
    std::vector<Instance> root;
    for (uint32_t l = static_cast<uint32_t>(view_.layers_.size()); l-- > 0;) {
      const LayerIndex& index = *view_.layers_[l].index;
      ASSIGN_OR_RETURN(NodeAttr attr, index.Attr(index.Root()));
      root.push_back({l, index.Root()});
      if (attr.opaque) break;
    }
    if (root.empty()) return Status::InvalidArgument("an image needs at least one layer");
    view_.nodes_.push_back({root.front().layer, root.front().node, 0, 0, 2, 0});
    std::deque<std::pair<Ino, std::vector<Instance>>> queue;
    queue.emplace_back(kRootIno, std::move(root));
    while (!queue.empty()) {
      auto [ino, dirs] = std::move(queue.front());
      queue.pop_front();
      RETURN_IF_ERROR(MergeDir(ino, dirs, queue));
    }
    return Status::Ok();
  }

 private:
  // The topmost meaning of `name` among `dirs` (top first), or nullopt when no layer has
  // it or a whiteout hides it.
  Result<std::optional<Step>> Find(const std::vector<Instance>& dirs, std::string_view name) {
    std::optional<Step> found;
    for (const Instance& d : dirs) {
      const LayerIndex& index = *view_.layers_[d.layer].index;
      Result<NodeId> child = index.Lookup(d.node, name);
      if (!child.ok()) {
        if (child.status().IsNotFound()) continue;
        return child.status();
      }
      ASSIGN_OR_RETURN(NodeAttr attr, index.Attr(*child));
      if (!found) {
        if (attr.whiteout) return std::optional<Step>();
        found = Step{d.layer, *child, attr, {}};
        if (!IsDir(attr)) return found;
        found->dirs.push_back({d.layer, *child});
        if (attr.opaque) return found;
        continue;
      }
      // A lower copy merges into the directory found above, until something stops it.
      if (attr.whiteout || !IsDir(attr)) break;
      found->dirs.push_back({d.layer, *child});
      if (attr.opaque) break;
    }
    return found;
  }

  // A hard link to a file of a lower layer: its target as seen from below `layer`.
  Result<std::optional<Step>> ResolveBelow(std::string_view path, uint32_t layer) {
    std::vector<Instance> dirs;
    for (uint32_t l = layer; l-- > 0;) {
      const LayerIndex& index = *view_.layers_[l].index;
      ASSIGN_OR_RETURN(NodeAttr attr, index.Attr(index.Root()));
      dirs.push_back({l, index.Root()});
      if (attr.opaque) break;
    }
    std::optional<Step> step;
    for (std::string_view part : PathParts(path)) {
      if (step && !IsDir(step->attr)) return std::optional<Step>();
      ASSIGN_OR_RETURN(step, Find(dirs, part));
      if (!step) return step;
      dirs = step->dirs;
    }
    return step;
  }

  Status MergeDir(Ino ino, const std::vector<Instance>& dirs,
                  std::deque<std::pair<Ino, std::vector<Instance>>>& queue) {
    std::vector<std::string_view> names;
    for (const Instance& d : dirs) {
      RETURN_IF_ERROR(view_.layers_[d.layer].index->ForEachChild(
          d.node, [&](std::string_view name, NodeId) {
            names.push_back(name);
            return true;
          }));
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());

    const uint32_t first = static_cast<uint32_t>(view_.dirents_.size());
    uint32_t subdirs = 0;
    for (std::string_view name : names) {
      ASSIGN_OR_RETURN(std::optional<Step> step, Find(dirs, name));
      if (!step) continue;
      if (step->attr.lower_hardlink) {
        const LayerIndex& index = *view_.layers_[step->layer].index;
        ASSIGN_OR_RETURN(std::string_view target, index.ReadLink(step->node));
        ASSIGN_OR_RETURN(std::optional<Step> resolved, ResolveBelow(target, step->layer));
        if (!resolved || IsDir(resolved->attr)) {
          LOG(kWarn) << "layer " << index.layer_digest() << ": hard link " << name
                     << " names " << target
                     << ", which no lower layer has as a file; left out";
          continue;
        }
        step = std::move(resolved);
      }
      Ino child = 0;
      if (IsDir(step->attr)) {
        ++subdirs;
        child = NewNode(*step);
        queue.emplace_back(child, std::move(step->dirs));
      } else if (step->attr.hardlink_group != kNoNode || step->attr.nlink > 1) {
        const uint64_t key = (uint64_t{step->layer} << 32) | step->node;
        auto [it, inserted] = shared_.try_emplace(key, 0);
        if (inserted) {
          it->second = NewNode(*step);
        } else {
          ++view_.nodes_[it->second - 1].nlink;
        }
        child = it->second;
      } else {
        child = NewNode(*step);
      }
      view_.dirents_.push_back({name, child});
    }
    Node& dir = view_.nodes_[ino - 1];
    dir.first_child = first;
    dir.child_count = static_cast<uint32_t>(view_.dirents_.size()) - first;
    dir.subdirs = subdirs;
    dir.nlink = 2 + subdirs;
    return Status::Ok();
  }

  Ino NewNode(const Step& step) {
    view_.nodes_.push_back({step.layer, step.node, 0, 0, 1, 0});
    return view_.nodes_.size();
  }

  MergedView& view_;
  std::unordered_map<uint64_t, Ino> shared_;  // (layer << 32 | node) -> ino of hard links
};

Result<std::unique_ptr<MergedView>> MergedView::Build(std::vector<ViewLayer> layers) {
  for (const ViewLayer& l : layers) {
    if (!l.index || !l.source) return Status::InvalidArgument("a layer without index or blob");
  }
  std::unique_ptr<MergedView> view(new MergedView(std::move(layers)));
  Builder builder(*view);
  RETURN_IF_ERROR(builder.Run());
  view->nodes_.shrink_to_fit();
  view->dirents_.shrink_to_fit();
  return view;
}

Result<const MergedView::Node*> MergedView::Get(Ino ino) const {
  if (ino < 1 || ino > nodes_.size()) {
    return Status::FromErrno(ENOENT, "no inode " + std::to_string(ino));
  }
  return &nodes_[ino - 1];
}

Result<Ino> MergedView::Lookup(Ino parent, std::string_view name) const {
  ASSIGN_OR_RETURN(const Node* dir, Get(parent));
  ASSIGN_OR_RETURN(NodeAttr attr, layers_[dir->layer].index->Attr(dir->node));
  if (!IsDir(attr)) return Status::FromErrno(ENOTDIR, std::string(name));
  auto begin = dirents_.begin() + dir->first_child;
  auto end = begin + dir->child_count;
  auto it = std::lower_bound(begin, end, name,
                             [](const Dirent& d, std::string_view n) { return d.name < n; });
  if (it == end || it->name != name) return Status::NotFound(std::string(name));
  return it->ino;
}

Result<Ino> MergedView::Resolve(std::string_view path) const {
  Ino ino = kRootIno;
  for (std::string_view part : PathParts(path)) {
    if (part == ".") continue;
    if (part == "..") return Status::InvalidArgument("\"..\" in a path inside the image");
    auto next = Lookup(ino, part);
    if (!next.ok()) {
      if (next.status().IsNotFound()) {
        return Status::NotFound(std::string(path) + ": no such file or directory");
      }
      if (next.status().ToErrno() == ENOTDIR) {
        return Status::FromErrno(ENOTDIR, std::string(path) + ": not a directory");
      }
      return next.status();
    }
    ino = *next;
  }
  return ino;
}

Result<NodeAttr> MergedView::Attr(Ino ino) const {
  ASSIGN_OR_RETURN(const Node* n, Get(ino));
  ASSIGN_OR_RETURN(NodeAttr attr, layers_[n->layer].index->Attr(n->node));
  attr.nlink = n->nlink;
  attr.opaque = false;
  return attr;
}

Status MergedView::ForEachChild(
    Ino ino, const std::function<bool(std::string_view name, Ino child)>& fn) const {
  ASSIGN_OR_RETURN(const Node* dir, Get(ino));
  for (uint32_t i = 0; i < dir->child_count; ++i) {
    const Dirent& d = dirents_[dir->first_child + i];
    if (!fn(d.name, d.ino)) break;
  }
  return Status::Ok();
}

Result<std::string_view> MergedView::ReadLink(Ino ino) const {
  ASSIGN_OR_RETURN(const Node* n, Get(ino));
  return layers_[n->layer].index->ReadLink(n->node);
}

Result<std::vector<XattrView>> MergedView::Xattrs(Ino ino) const {
  ASSIGN_OR_RETURN(const Node* n, Get(ino));
  return layers_[n->layer].index->Xattrs(n->node);
}

Result<MergedView::Origin> MergedView::OriginOf(Ino ino) const {
  ASSIGN_OR_RETURN(const Node* n, Get(ino));
  return Origin{n->layer, n->node};
}

Result<size_t> MergedView::ReadFile(Ino ino, uint64_t offset, std::span<uint8_t> out) const {
  ASSIGN_OR_RETURN(Origin o, OriginOf(ino));
  const ViewLayer& layer = layers_[o.layer];
  return ChunkReader(*layer.source, *layer.index, spans_.get(), o.layer)
      .ReadFile(o.node, offset, out);
}

size_t MergedView::MemoryUsage() const {
  size_t bytes = nodes_.capacity() * sizeof(Node) + dirents_.capacity() * sizeof(Dirent);
  for (const ViewLayer& l : layers_) bytes += l.index->MemoryUsage();
  return bytes;
}

}  // namespace imagefs::index
