#include "index/progressive_view.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "util/log.h"

namespace imagefs::index {
namespace {

bool IsDirAttr(const NodeAttr& a) { return (a.mode & S_IFMT) == S_IFDIR; }

std::string JoinPath(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (!out.empty()) out += '/';
  out += name;
  return out;
}

constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr auto kWaitSlice = std::chrono::milliseconds(500);

}  // namespace

ProgressiveView::ProgressiveView(std::vector<ViewLayer> layers,
                                 std::shared_ptr<const ImageScan> scan,
                                 std::chrono::milliseconds stall_bound)
    : MergedView(std::move(layers)), scan_(std::move(scan)), stall_bound_(stall_bound) {}

Result<std::unique_ptr<ProgressiveView>> ProgressiveView::Create(
    std::vector<ViewLayer> layers, std::shared_ptr<const ImageScan> scan,
    std::chrono::milliseconds stall_bound) {
  if (layers.empty()) return Status::InvalidArgument("an image needs at least one layer");
  if (!scan || scan->layer_count() != layers.size()) {
    return Status::InvalidArgument("a progressive view needs one scan per layer");
  }
  for (const ViewLayer& l : layers) {
    if (!l.index || !l.source) return Status::InvalidArgument("a layer without index or blob");
  }
  const uint32_t top = static_cast<uint32_t>(layers.size() - 1);
  std::unique_ptr<ProgressiveView> view(
      new ProgressiveView(std::move(layers), std::move(scan), stall_bound));
  view->pnodes_.push_back(PNode{kRootIno, "", top, 0});
  view->by_path_.emplace("", kRootIno);
  return view;
}

Result<ProgressiveView::States> ProgressiveView::Snapshot() const {
  States st;
  st.reserve(scan_->layer_count());
  for (size_t l = 0; l < scan_->layer_count(); ++l) {
    st.push_back(scan_->State(l));
    if (!st.back().error.ok()) return st.back().error;
  }
  return st;
}

Status ProgressiveView::Wait(uint64_t seen, std::chrono::steady_clock::time_point& since) const {
  scan_->WaitChange(seen, kWaitSlice);
  const auto now = std::chrono::steady_clock::now();
  if (scan_->version() != seen) {
    since = now;
  } else if (stall_bound_.count() > 0 && now - since >= stall_bound_) {
    return Status::Timeout(
        "the image's layer download has not advanced for " +
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - since).count()) +
        " s (is the registry reachable?); the mount answers again once it does");
  }
  return Status::Ok();
}

Result<ProgressiveView::Found> ProgressiveView::FindIn(const States& st,
                                                       const std::vector<Instance>& dirs,
                                                       std::string_view dir_path,
                                                       std::string_view name) const {
  const std::string path = JoinPath(dir_path, name);
  Found out;
  bool have = false;
  for (const Instance& d : dirs) {
    const ImageScan::LayerState& s = st[d.layer];
    Result<NodeId> child = s.index->Lookup(d.node, name);
    if (!child.ok()) {
      if (!child.status().IsNotFound()) return child.status();
      // Absent here for good only when settled (and no whiteout can still come).
      if (!ImageScan::Settled(s, path) ||
          !ImageScan::Settled(s, JoinPath(dir_path, ".wh." + std::string(name)))) {
        return Found{};
      }
      continue;
    }
    // A name a snapshot holds stays, unless the layer is out of order (a later entry for
    // the same path may replace it).
    if (!s.done && !s.frontier.in_order()) return Found{};
    ASSIGN_OR_RETURN(NodeAttr attr, s.index->Attr(*child));
    const bool opaque_settled = ImageScan::Settled(s, JoinPath(path, kOpaqueMarker));
    if (!have) {
      if (attr.whiteout) return Found{Answer::kAbsent, {}};
      have = true;
      out.answer = Answer::kFound;
      out.step = Step{d.layer, *child, attr, {}};
      if (!IsDirAttr(attr)) break;
      out.step.dirs.push_back({d.layer, *child});
      if (!opaque_settled) return Found{};
      if (attr.opaque) break;
      continue;
    }
    // A lower copy merges into the directory found above, until something stops it.
    if (attr.whiteout || !IsDirAttr(attr)) break;
    out.step.dirs.push_back({d.layer, *child});
    if (!opaque_settled) return Found{};
    if (attr.opaque) break;
  }
  if (!have) return Found{Answer::kAbsent, {}};
  if (out.step.attr.lower_hardlink) {
    // A hard link to a file of a lower layer: its target as seen from below.
    const ImageScan::LayerState& s = st[out.step.layer];
    ASSIGN_OR_RETURN(std::string_view target, s.index->ReadLink(out.step.node));
    ASSIGN_OR_RETURN(Found resolved, Eval(st, target, out.step.layer));
    if (resolved.answer == Answer::kUnsure) return resolved;
    if (resolved.answer == Answer::kAbsent || IsDirAttr(resolved.step.attr)) {
      LOG(kWarn) << "layer " << s.index->layer_digest() << ": hard link " << path << " names "
                 << target << ", which no lower layer has as a file; left out";
      return Found{Answer::kAbsent, {}};
    }
    return resolved;
  }
  return out;
}

Result<ProgressiveView::Found> ProgressiveView::Eval(const States& st, std::string_view path,
                                                     size_t top) const {
  Found cur;
  cur.answer = Answer::kFound;
  for (size_t l = top; l-- > 0;) {
    const ImageScan::LayerState& s = st[l];
    if (!s.index) return Found{};
    ASSIGN_OR_RETURN(NodeAttr attr, s.index->Attr(s.index->Root()));
    if (cur.step.dirs.empty()) cur.step = Step{static_cast<uint32_t>(l), s.index->Root(), attr, {}};
    cur.step.dirs.push_back({static_cast<uint32_t>(l), s.index->Root()});
    if (!ImageScan::Settled(s, kOpaqueMarker)) return Found{};
    if (attr.opaque) break;
  }
  if (cur.step.dirs.empty()) return Found{Answer::kAbsent, {}};
  std::string dir_path;
  for (std::string_view part : PathParts(path)) {
    if (part == ".") continue;
    if (!IsDirAttr(cur.step.attr)) {
      return Status::FromErrno(ENOTDIR, std::string(path) + ": not a directory");
    }
    ASSIGN_OR_RETURN(Found next, FindIn(st, cur.step.dirs, dir_path, part));
    if (next.answer != Answer::kFound) return next;
    cur = std::move(next);
    dir_path = JoinPath(dir_path, part);
  }
  return cur;
}

Ino ProgressiveView::NumberFor(Ino parent, const std::string& path, const Step& step) const {
  std::lock_guard lock(mu_);
  if (auto it = by_path_.find(path); it != by_path_.end()) return it->second;
  const bool linked = !IsDirAttr(step.attr) &&
                      (step.attr.hardlink_group != kNoNode || step.attr.nlink > 1);
  const uint64_t key = (uint64_t{step.layer} << 32) | step.node;
  if (linked) {
    if (auto it = by_link_.find(key); it != by_link_.end()) {
      by_path_.emplace(path, it->second);
      ++pnodes_[it->second - 1].names;
      return it->second;
    }
  }
  pnodes_.push_back(PNode{parent, path, step.layer, step.node});
  const Ino ino = pnodes_.size();
  by_path_.emplace(path, ino);
  if (linked) by_link_.emplace(key, ino);
  return ino;
}

Result<ProgressiveView::PNode> ProgressiveView::NodeOf(Ino ino) const {
  std::lock_guard lock(mu_);
  if (ino < 1 || ino > pnodes_.size()) {
    return Status::FromErrno(ENOENT, "no inode " + std::to_string(ino));
  }
  return pnodes_[ino - 1];
}

Result<Ino> ProgressiveView::Lookup(Ino parent, std::string_view name) const {
  ASSIGN_OR_RETURN(PNode dir, NodeOf(parent));
  const std::string path = JoinPath(dir.path, name);
  auto since = std::chrono::steady_clock::now();
  for (;;) {
    const uint64_t seen = scan_->version();
    ASSIGN_OR_RETURN(States st, Snapshot());
    // The parent itself is certain (it was found before); check it is a directory.
    ASSIGN_OR_RETURN(Found d, Eval(st, dir.path, st.size()));
    if (d.answer == Answer::kFound && !IsDirAttr(d.step.attr)) {
      return Status::FromErrno(ENOTDIR, std::string(name));
    }
    if (d.answer == Answer::kFound) {
      ASSIGN_OR_RETURN(Found f, FindIn(st, d.step.dirs, dir.path, name));
      if (f.answer == Answer::kFound) return NumberFor(parent, path, f.step);
      if (f.answer == Answer::kAbsent) return Status::NotFound(std::string(name));
    } else if (d.answer == Answer::kAbsent) {
      return Status::FromErrno(ESTALE, "inode " + std::to_string(parent));
    }
    RETURN_IF_ERROR(Wait(seen, since));
  }
}

Status ProgressiveView::ForEachChild(
    Ino ino, const std::function<bool(std::string_view name, Ino child)>& fn) const {
  ASSIGN_OR_RETURN(PNode dir, NodeOf(ino));
  std::vector<std::pair<std::string, Ino>> children;
  auto since = std::chrono::steady_clock::now();
  for (;;) {
    const uint64_t seen = scan_->version();
    ASSIGN_OR_RETURN(States st, Snapshot());
    ASSIGN_OR_RETURN(Found d, Eval(st, dir.path, st.size()));
    if (d.answer == Answer::kAbsent) return Status::FromErrno(ESTALE, "inode " + std::to_string(ino));
    bool complete = d.answer == Answer::kFound;
    if (complete && !IsDirAttr(d.step.attr)) return Status::FromErrno(ENOTDIR, dir.path);
    // Every copy's layer must have passed the whole directory.
    for (const Instance& c : d.step.dirs) {
      if (!complete) break;
      const ImageScan::LayerState& s = st[c.layer];
      complete = s.done || s.frontier.PassedDir(dir.path);
    }
    if (complete) {
      std::vector<std::string> names;
      for (const Instance& c : d.step.dirs) {
        RETURN_IF_ERROR(st[c.layer].index->ForEachChild(c.node, [&](std::string_view n, NodeId) {
          names.emplace_back(n);
          return true;
        }));
      }
      std::sort(names.begin(), names.end());
      names.erase(std::unique(names.begin(), names.end()), names.end());
      children.clear();
      uint32_t subdirs = 0;
      for (const std::string& name : names) {
        ASSIGN_OR_RETURN(Found f, FindIn(st, d.step.dirs, dir.path, name));
        if (f.answer == Answer::kUnsure) {
          complete = false;
          break;
        }
        if (f.answer == Answer::kFound) {
          children.emplace_back(name, NumberFor(ino, JoinPath(dir.path, name), f.step));
          if (IsDirAttr(f.step.attr)) ++subdirs;
        }
      }
      if (complete) {
        std::lock_guard lock(mu_);
        pnodes_[ino - 1].subdirs = subdirs;
        pnodes_[ino - 1].listed = true;
      }
    }
    if (complete) break;
    RETURN_IF_ERROR(Wait(seen, since));
  }
  for (const auto& [name, child] : children) {
    if (!fn(name, child)) break;
  }
  return Status::Ok();
}

Result<NodeAttr> ProgressiveView::Attr(Ino ino) const {
  ASSIGN_OR_RETURN(PNode n, NodeOf(ino));
  ASSIGN_OR_RETURN(auto index, scan_->IndexOf(n.layer));
  ASSIGN_OR_RETURN(NodeAttr attr, index->Attr(n.node));
  attr.opaque = false;
  if (IsDirAttr(attr) && n.listed) attr.nlink = 2 + n.subdirs;
  if (!IsDirAttr(attr) && attr.nlink > 1) {
    std::lock_guard lock(mu_);
    if (complete_) attr.nlink = n.names;
  }
  return attr;
}

Result<std::string_view> ProgressiveView::ReadLink(Ino ino) const {
  ASSIGN_OR_RETURN(PNode n, NodeOf(ino));
  ASSIGN_OR_RETURN(auto index, scan_->IndexOf(n.layer));
  return index->ReadLink(n.node);
}

Result<std::vector<XattrView>> ProgressiveView::Xattrs(Ino ino) const {
  ASSIGN_OR_RETURN(PNode n, NodeOf(ino));
  ASSIGN_OR_RETURN(auto index, scan_->IndexOf(n.layer));
  return index->Xattrs(n.node);
}

Result<MergedView::Origin> ProgressiveView::OriginOf(Ino ino) const {
  ASSIGN_OR_RETURN(PNode n, NodeOf(ino));
  RETURN_IF_ERROR(scan_->IndexOf(n.layer).status());
  return Origin{n.layer, n.node};
}

Ino ProgressiveView::InodeCount() const {
  std::lock_guard lock(mu_);
  return pnodes_.size();
}

Ino ProgressiveView::ParentOf(Ino ino) const {
  std::lock_guard lock(mu_);
  return ino >= 1 && ino <= pnodes_.size() ? pnodes_[ino - 1].parent : 0;
}

Status ProgressiveView::WaitComplete() const {
  while (!scan_->AllDone()) {  // no bound: this is background work
    const uint64_t seen = scan_->version();
    if (scan_->AllDone()) break;
    scan_->WaitChange(seen, kWaitSlice);
  }
  RETURN_IF_ERROR(Snapshot().status());
  // Number every name, breadth-first, so the numbers handed out are all there are.
  std::vector<Ino> queue{kRootIno};
  for (size_t k = 0; k < queue.size(); ++k) {
    RETURN_IF_ERROR(ForEachChild(queue[k], [&](std::string_view, Ino child) {
      auto attr = Attr(child);
      if (attr.ok() && IsDirAttr(*attr)) queue.push_back(child);
      return true;
    }));
  }
  std::lock_guard lock(mu_);
  complete_ = true;
  return Status::Ok();
}

size_t ProgressiveView::MemoryUsage() const {
  size_t bytes = scan_->MemoryUsage();
  std::lock_guard lock(mu_);
  for (const PNode& n : pnodes_) bytes += sizeof(PNode) + n.path.capacity();
  return bytes + by_path_.size() * 64 + by_link_.size() * 32;
}

}  // namespace imagefs::index
