#include "fs/filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>

#include "util/file.h"

namespace imagefs::fs {
namespace {

constexpr uint32_t kBlockSize = 4096;
constexpr uint32_t kNameMax = 255;
constexpr char kOpaqueXattr[] = "trusted.overlay.opaque";
constexpr std::string_view kOverlayPrefix = "trusted.overlay.";
constexpr size_t kCopyChunk = 1 << 20;

std::string InoText(Ino ino) { return "inode " + std::to_string(ino); }

Status Errno(std::string_view what) { return Status::FromErrno(errno, what); }

// "/proc/self/fd/N[/name]": a short path to an fd's object (or a name in an fd's dir), for
// the calls that have no *at() form (xattrs, truncate, reopen).
std::string FdPath(int fd, std::string_view name = {}) {
  std::string p = "/proc/self/fd/" + std::to_string(fd);
  if (!name.empty()) {
    p += '/';
    p += name;
  }
  return p;
}

bool IsWhiteout(const struct stat& st) { return S_ISCHR(st.st_mode) && st.st_rdev == 0; }

Status CheckName(std::string_view name) {
  if (name.size() > kNameMax) return Status::FromErrno(ENAMETOOLONG, std::string(name.substr(0, 32)) + "...");
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos) {
    return Status::FromErrno(EINVAL, "name \"" + std::string(name) + "\"");
  }
  return Status::Ok();
}

bool IsTrustedOverlayXattr(std::string_view name) { return name.substr(0, kOverlayPrefix.size()) == kOverlayPrefix; }

bool HasOpaqueXattr(int dirfd, std::string_view name) {
  char v[4];
  ssize_t n = ::getxattr(FdPath(dirfd, name).c_str(), kOpaqueXattr, v, sizeof v);
  return n == 1 && v[0] == 'y';
}

Result<UniqueFd> OpenPath(int dirfd, std::string_view name) {
  int fd = ::openat(dirfd, std::string(name).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Errno("opening upper entry " + std::string(name));
  return UniqueFd(fd);
}

Result<struct stat> StatFd(int fd) {
  struct stat st;
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return Errno("fstat");
  return st;
}

// Removes the whiteouts a directory of the upper dir holds (nothing else may be there).
Status ClearWhiteouts(int parent_fd, const std::string& name) {
  int fd = ::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Errno("opening upper dir " + name);
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return Errno("reading upper dir " + name);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  Status st = Status::Ok();
  for (const std::string& n : names) {
    struct stat s;
    if (::fstatat(::dirfd(d), n.c_str(), &s, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!IsWhiteout(s)) {
      st = Status::FromErrno(ENOTEMPTY, "upper dir " + name);
      break;
    }
    if (::unlinkat(::dirfd(d), n.c_str(), 0) != 0) {
      st = Errno("removing whiteout " + n);
      break;
    }
  }
  ::closedir(d);
  return st;
}

// Runs fn when the scope ends (declared after the lock_guard, so the lock is still held).
template <typename Fn>
class ScopeExit {
 public:
  explicit ScopeExit(Fn fn) : fn_(std::move(fn)) {}
  ~ScopeExit() { fn_(); }
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;

 private:
  Fn fn_;
};

// Puts a directory's times back after a copy-up linked a child into it (as overlayfs
// does): a copy-up is not a change the user made.
void RestoreTimes(int dirfd, const struct stat& before) {
  struct timespec ts[2] = {before.st_atim, before.st_mtim};
  (void)::utimensat(AT_FDCWD, FdPath(dirfd).c_str(), ts, 0);
}

}  // namespace

struct Filesystem::Node {
  Ino ino = 0;
  // The lower node: for a file, what it was (or still is) served from; for a directory,
  // the lower directory merged under it (0: upper-only or opaque).
  Ino lower = 0;
  uint32_t type = 0;  // S_IFMT bits
  bool in_upper = false;  // served by the upper dir (upper_key is its inode)
  std::pair<dev_t, ino_t> upper_key{0, 0};
  // O_PATH on the upper entry, or invalid (dropped: Filesystem::UpperFd reopens it). Kept
  // out of the cache's LRU (never dropped) while `held`.
  UniqueFd upper;
  bool held = false;
  bool nameless = false;  // in the upper dir, but no name of it is known (held)
  // A nameless node whose inode is gone (nlink 0) and that nobody has open: its last
  // attributes answer, and it holds no fd.
  bool gone = false;
  struct stat gone_attr {};
  bool in_lru = false;
  std::list<Node*>::iterator lru_pos;
  // A directory holding this node as `name` (copy-up goes there; an upper node's fd is
  // reopened from there). kept_parent: the parent whose `kids` count this node.
  Ino parent = 0;
  std::string name;
  Ino kept_parent = 0;
  uint64_t kids = 0;  // upper nodes naming this one as parent: it stays in the table
  uint64_t nlookup = 0;     // the kernel's references
  uint64_t pins = 0;        // open file handles (and a copy-up staging its bytes)
  uint64_t listed = 0;      // open directory handles listing it (their items' numbers)
  uint32_t lower_unlinked = 0;  // names of a lower-only node removed since the mount
  std::string staged;  // work-dir file holding this lower file's bytes (StageCopyUp)
};

// mu_ for one call. Leaving, it frees the nodes the call left unreferenced and then drops
// the cache's fds beyond its bound: an fd UpperFd handed out stays open for the whole call.
class Filesystem::TableLock {
 public:
  explicit TableLock(Filesystem* fs) : fs_(fs) { fs_->mu_.lock(); }
  ~TableLock() { Unlock(); }
  TableLock(const TableLock&) = delete;
  TableLock& operator=(const TableLock&) = delete;
  void Unlock() {
    if (fs_ == nullptr) return;
    while (!fs_->unkept_.empty()) {
      const Ino ino = fs_->unkept_.back();
      fs_->unkept_.pop_back();
      fs_->MaybeFree(fs_->Find(ino));
    }
    fs_->TrimUpperFds();
    fs_->mu_.unlock();
    fs_ = nullptr;
  }

 private:
  Filesystem* fs_;
};

Filesystem::Filesystem(const index::MergedView& view) : Filesystem(view, true) {}

Filesystem::Filesystem(const index::MergedView& view, bool) : view_(view) {
  // One pass over the tree: the parent of every directory (for ".."), and the bytes the
  // image holds (for statfs), each hard-linked inode counted once. A progressive view
  // (layers still being scanned) knows each node's parent itself, and has no whole tree
  // to walk yet.
  if (!view_.progressive()) ScanLowerTree();
  next_ino_ = view_.progressive() ? kFirstUpperOnlyIno : view_.InodeCount() + 1;
  auto root = std::make_unique<Node>();
  root->ino = kRootIno;
  root->lower = view_.progressive() || view_.InodeCount() >= kRootIno ? kRootIno : 0;
  root->type = S_IFDIR;
  root->parent = kRootIno;
  root->nlookup = std::numeric_limits<uint64_t>::max() / 2;  // never freed
  nodes_[kRootIno] = std::move(root);
}

void Filesystem::ScanLowerTree() {
  parent_.assign(view_.InodeCount(), 0);
  if (!parent_.empty()) parent_[kRootIno - 1] = kRootIno;
  std::vector<bool> counted(view_.InodeCount(), false);
  std::vector<Ino> pending = {kRootIno};
  while (!pending.empty()) {
    Ino dir = pending.back();
    pending.pop_back();
    (void)view_.ForEachChild(dir, [&](std::string_view, Ino child) {
      auto attr = view_.Attr(child);
      if (!attr.ok()) return true;
      if (S_ISDIR(attr->mode)) {
        parent_[child - 1] = dir;
        pending.push_back(child);
      } else if (S_ISREG(attr->mode) && !counted[child - 1]) {
        counted[child - 1] = true;
        total_bytes_ += attr->size;
      }
      return true;
    });
  }
}

Status Filesystem::WaitForLowerAnswer(Ino dir, const std::string_view* name) const {
  if (!view_.progressive()) return Status::Ok();
  Ino lower = dir;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (const Node* n = Find(dir); n != nullptr) lower = n->lower;
  }
  if (lower == 0 || !IsLowerIno(lower)) return Status::Ok();
  // The answer itself is ignored: the call under the lock gets it again, at once. A wait
  // that ran out (the download stalled) ends the request here.
  Status st = name != nullptr
                  ? view_.Lookup(lower, *name).status()
                  : view_.ForEachChild(lower, [](std::string_view, Ino) { return false; });
  return st.code() == Code::kTimeout ? st : Status::Ok();
}

bool Filesystem::IsLowerIno(Ino ino) const { return ino >= 1 && ino <= view_.InodeCount(); }

Ino Filesystem::LowerParent(Ino dir) const {
  if (view_.progressive()) {
    Ino parent = view_.ParentOf(dir);
    return parent != 0 ? parent : kRootIno;
  }
  if (dir == 0 || dir > parent_.size() || parent_[dir - 1] == 0) return kRootIno;
  return parent_[dir - 1];
}

Filesystem::~Filesystem() = default;

Result<std::unique_ptr<Filesystem>> Filesystem::OpenWritable(const index::MergedView& view,
                                                            const std::string& upper,
                                                            const std::string& work) {
  RETURN_IF_ERROR(MakeDirs(upper, 0755));
  RETURN_IF_ERROR(MakeDirs(work + "/tmp", 0700));
  std::unique_ptr<Filesystem> fs(new Filesystem(view, true));
  int fd = ::open(upper.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("upper dir " + upper);
  fs->upper_root_.Reset(fd);
  fd = ::open((work + "/tmp").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("work dir " + work);
  fs->work_.Reset(fd);
  ASSIGN_OR_RETURN(struct stat ust, StatFd(fs->upper_root_.get()));
  ASSIGN_OR_RETURN(struct stat wst, StatFd(fs->work_.get()));
  if (ust.st_dev != wst.st_dev) {
    return Status::InvalidArgument("work dir " + work + " is not on the upper dir's filesystem");
  }
  // Leftovers of an interrupted copy-up are never visible; clear them.
  (void)RemoveAll(work + "/tmp");
  RETURN_IF_ERROR(MakeDirs(work + "/tmp", 0700));
  fd = ::open((work + "/tmp").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("work dir " + work);
  fs->work_.Reset(fd);

  Node* root = fs->nodes_[kRootIno].get();
  if (HasOpaqueXattr(fs->upper_root_.get(), "")) root->lower = 0;
  UniqueFd rootfd(::fcntl(fs->upper_root_.get(), F_DUPFD_CLOEXEC, 0));
  root->held = true;
  fs->Attach(root, std::move(rootfd), ust);
  // The cache leaves most of the fd limit to open files, the store and libfuse.
  struct rlimit lim;
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    fs->fd_cache_max_ = std::clamp<size_t>(lim.rlim_cur / 4, 16, 4096);
  }
  return fs;
}

Status Filesystem::ReadOnly() {
  return Status::FromErrno(EROFS, "the image is mounted read-only");
}

Status Filesystem::CheckWritable() const { return writable() ? Status::Ok() : ReadOnly(); }

Ino Filesystem::ParentOf(Ino dir) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (const Node* n = Find(dir); n != nullptr && n->parent != 0) return n->parent;
  }
  return LowerParent(dir);
}

size_t Filesystem::NodeCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return nodes_.size();
}

void Filesystem::SetUpperFdCache(size_t max_fds) {
  TableLock lock(this);
  fd_cache_max_ = max_fds;
}

size_t Filesystem::UpperFdCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t held = 0;
  for (const auto& [ino, n] : nodes_) held += n->upper.valid() ? 1 : 0;
  return held;
}

// ---- the node table -------------------------------------------------------------------

Filesystem::Node* Filesystem::Find(Ino ino) const {
  auto it = nodes_.find(ino);
  return it == nodes_.end() ? nullptr : it->second.get();
}

Result<Filesystem::Node*> Filesystem::Need(Ino ino) const {
  Node* n = Find(ino);
  if (n == nullptr) return Status::FromErrno(ESTALE, InoText(ino) + " is not known");
  return n;
}

void Filesystem::Attach(Node* n, UniqueFd fd, const struct stat& st) {
  n->in_upper = true;
  n->upper_key = {st.st_dev, st.st_ino};
  n->type = st.st_mode & S_IFMT;
  upper_inos_[n->upper_key] = n->ino;
  KeepParent(n);
  if (fd.valid()) CacheUpperFd(n, std::move(fd));
}

void Filesystem::MaybeFree(Node* n) {
  while (n != nullptr) {
    if (n->nameless && n->pins == 0 && n->upper.valid()) {
      // Removed and not open: once no name is left, its fd is of no more use.
      auto st = StatFd(n->upper.get());
      if (st.ok() && st->st_nlink == 0) {
        n->gone = true;
        n->gone_attr = *st;
        n->upper.Reset();
        upper_inos_.erase(n->upper_key);
      }
    }
    if (n->ino == kRootIno || n->nlookup > 0 || n->pins > 0 || n->listed > 0 || n->kids > 0) return;
    if (!n->staged.empty()) (void)::unlinkat(work_.get(), n->staged.c_str(), 0);
    if (n->upper.valid()) {
      // Forget the upper inode's number once the inode itself is gone (its st_ino may be
      // reused by a new file); while it has names, a later lookup finds the same number.
      // (A node with a known name and no fd still has that name.)
      auto st = StatFd(n->upper.get());
      if (!st.ok() || st->st_nlink == 0) upper_inos_.erase(n->upper_key);
    }
    if (n->in_lru) LruOf(n).erase(n->lru_pos);
    const Ino parent = n->kept_parent;
    nodes_.erase(n->ino);
    n = nullptr;
    if (parent != 0 && (n = Find(parent)) != nullptr) --n->kids;  // and maybe free it too
  }
}

// ---- the upper fd cache ---------------------------------------------------------------

std::list<Filesystem::Node*>& Filesystem::LruOf(const Node* n) {
  return n->type == S_IFDIR ? dir_lru_ : file_lru_;
}

size_t Filesystem::CachedUpperFds() const { return dir_lru_.size() + file_lru_.size(); }

void Filesystem::CacheUpperFd(Node* n, UniqueFd fd) {
  n->upper = std::move(fd);
  if (n->held) return;
  std::list<Node*>& lru = LruOf(n);
  if (n->in_lru) {
    lru.splice(lru.begin(), lru, n->lru_pos);
  } else {
    lru.push_front(n);
    n->lru_pos = lru.begin();
    n->in_lru = true;
  }
}

void Filesystem::TrimUpperFds() {
  // Files go first: every reopen walks through directories, and a file whose directory is
  // cached is one openat away.
  while (CachedUpperFds() > fd_cache_max_) {
    std::list<Node*>& lru = file_lru_.empty() ? dir_lru_ : file_lru_;
    Node* n = lru.back();
    lru.pop_back();
    n->in_lru = false;
    n->upper.Reset();
  }
}

Result<int> Filesystem::UpperFd(Node* n) {
  if (n->upper.valid()) {
    if (n->in_lru) LruOf(n).splice(LruOf(n).begin(), LruOf(n), n->lru_pos);
    return n->upper.get();
  }
  if (!n->in_upper) return Status::Internal(InoText(n->ino) + " is not in the upper dir");
  if (n->gone) return Status::FromErrno(ENOENT, InoText(n->ino) + " was removed");
  // Up to the nearest node that holds an fd, then down by name, each step checked.
  std::vector<Node*> chain;
  Node* top = n;
  while (!top->upper.valid()) {
    if (top->nameless || top->parent == 0 || top->parent == top->ino || chain.size() > nodes_.size()) {
      return Status::FromErrno(ESTALE, InoText(top->ino) + " has no known name");
    }
    chain.push_back(top);
    top = Find(top->parent);
    if (top == nullptr || !top->in_upper) {
      return Status::FromErrno(ESTALE, "the upper parent of " + InoText(chain.back()->ino) + " is gone");
    }
  }
  ASSIGN_OR_RETURN(int dirfd, UpperFd(top));
  UniqueFd passing;  // an ancestor's fd used for one step only (the cache is full)
  for (size_t i = chain.size(); i-- > 0;) {
    Node* c = chain[i];
    UniqueFd fd(::openat(dirfd, c->name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) {
      return Status::FromErrno(errno == ENOENT ? ESTALE : errno, "reopening upper entry " + c->name);
    }
    ASSIGN_OR_RETURN(struct stat st, StatFd(fd.get()));
    if (std::pair<dev_t, ino_t>{st.st_dev, st.st_ino} != c->upper_key) {
      return Status::FromErrno(ESTALE, "upper entry " + c->name + " is no longer " + InoText(c->ino));
    }
    if (i == 0 || dir_lru_.size() < fd_cache_max_) {  // (ancestors are directories)
      CacheUpperFd(c, std::move(fd));
      dirfd = c->upper.get();
      passing.Reset();
    } else {
      passing = std::move(fd);
      dirfd = passing.get();
    }
  }
  return n->upper.get();
}

bool Filesystem::StatByName(Node* n, struct stat* st) {
  if (n->upper.valid() || n->nameless || n->parent == 0 || n->parent == n->ino) return false;
  Node* parent = Find(n->parent);
  if (parent == nullptr || !parent->upper.valid()) return false;
  auto dirfd = UpperFd(parent);  // it has one: this marks it used
  if (!dirfd.ok() || ::fstatat(*dirfd, n->name.c_str(), st, AT_SYMLINK_NOFOLLOW) != 0) return false;
  return std::pair<dev_t, ino_t>{st->st_dev, st->st_ino} == n->upper_key;
}

void Filesystem::KeepParent(Node* n) {
  Ino want = n->in_upper && !n->nameless && n->parent != n->ino ? n->parent : 0;
  if (want != 0 && Find(want) == nullptr) want = 0;
  if (n->kept_parent == want) return;
  if (Node* old = Find(n->kept_parent); old != nullptr && n->kept_parent != 0) {
    --old->kids;
    unkept_.push_back(old->ino);  // freed when the call ends, if nothing else keeps it
  }
  if (want != 0) ++Find(want)->kids;
  n->kept_parent = want;
}

void Filesystem::SetName(Node* n, Ino parent, std::string_view name) {
  n->parent = parent;
  n->name = std::string(name);
  if (n->nameless && parent != 0) {
    n->nameless = false;
    ReleaseHold(n);
  }
  KeepParent(n);
}

Status Filesystem::HoldForRemoval(Node* n, const Node* dir, std::string_view name) {
  if (!n->in_upper || n->held || n->parent != dir->ino || n->name != name) return Status::Ok();
  RETURN_IF_ERROR(UpperFd(n).status());
  if (n->in_lru) {
    LruOf(n).erase(n->lru_pos);
    n->in_lru = false;
  }
  n->held = true;
  return Status::Ok();
}

void Filesystem::LoseName(Node* n) {
  if (!n->held || n->nameless || n->ino == kRootIno || !n->upper.valid()) return;
  n->nameless = true;
  n->parent = 0;
  n->name.clear();
  KeepParent(n);
  unkept_.push_back(n->ino);  // MaybeFree when the call ends drops its fd if it is gone
}

void Filesystem::ReleaseHold(Node* n) {
  if (!n->held || n->nameless || n->ino == kRootIno) return;
  n->held = false;
  if (n->upper.valid()) {
    UniqueFd fd = std::move(n->upper);
    CacheUpperFd(n, std::move(fd));
  }
}

Filesystem::Node* Filesystem::NodeForLower(Ino lower, Ino parent, std::string_view name) {
  Node* n = Find(lower);
  if (n == nullptr) {
    auto owned = std::make_unique<Node>();
    owned->ino = lower;
    owned->lower = lower;
    auto attr = view_.Attr(lower);
    owned->type = attr.ok() ? (attr->mode & S_IFMT) : S_IFREG;
    n = owned.get();
    nodes_[lower] = std::move(owned);
  }
  if (!n->in_upper) SetName(n, parent, name);
  return n;
}

bool Filesystem::LowerHas(const Node* dir, std::string_view name) const {
  return dir->lower != 0 && view_.Lookup(dir->lower, name).ok();
}

Result<Filesystem::Node*> Filesystem::NodeForUpper(Node* dir, std::string_view name,
                                                   const struct stat& st) {
  const std::pair<dev_t, ino_t> key{st.st_dev, st.st_ino};
  Ino known = 0;
  Node* n = nullptr;
  bool taken = false;  // the number is held by a node the lower tree serves (a hard link)
  if (auto it = upper_inos_.find(key); it != upper_inos_.end()) {
    known = it->second;
    n = Find(known);
    if (n != nullptr && !n->in_upper) {
      n = nullptr;
      known = 0;
      taken = true;
    }
  }
  if (n == nullptr) {
    // Not in the table: a number this mount gave the upper inode before stays; else a
    // copy-up keeps the lower number (same kind at the same place, and a directory only
    // when merged, i.e. not opaque); anything else is upper-only.
    Ino ino = 0, lower = 0;
    if (known != 0) {
      ino = known;
      lower = IsLowerIno(known) ? known : 0;
    } else if (dir->lower != 0) {
      auto l = view_.Lookup(dir->lower, name);
      if (l.ok()) {
        auto la = view_.Attr(*l);
        bool same_kind = la.ok() && (S_ISDIR(la->mode) == S_ISDIR(st.st_mode));
        if (same_kind && S_ISDIR(st.st_mode)) {
          ASSIGN_OR_RETURN(int dirfd, UpperFd(dir));
          if (HasOpaqueXattr(dirfd, name)) same_kind = false;
        }
        if (same_kind) {
          lower = *l;
          if (!taken && Find(*l) == nullptr) ino = *l;
        }
      }
    }
    if (ino == 0) ino = next_ino_++;
    if (!S_ISDIR(st.st_mode) && ino != lower) lower = 0;
    n = Find(ino);
    if (n == nullptr) {
      auto owned = std::make_unique<Node>();
      owned->ino = ino;
      owned->lower = lower;
      n = owned.get();
      nodes_[ino] = std::move(owned);
    }
  }
  // A name the node is known by stays (any name reaches it); a node without one gets this.
  if (!n->in_upper || n->nameless || n->parent == 0) SetName(n, dir->ino, name);
  if (!n->in_upper) Attach(n, UniqueFd(), st);  // no fd: opened when first needed
  return n;
}

Result<Filesystem::Node*> Filesystem::ResolveChild(Node* dir, std::string_view name) {
  RETURN_IF_ERROR(CheckName(name));
  if (dir->type != S_IFDIR) return Status::FromErrno(ENOTDIR, InoText(dir->ino));
  if (dir->in_upper) {
    ASSIGN_OR_RETURN(int dirfd, UpperFd(dir));
    struct stat st;
    const std::string n(name);
    if (::fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (IsWhiteout(st)) return Status::FromErrno(ENOENT, n);
      return NodeForUpper(dir, name, st);
    }
    if (errno != ENOENT) return Errno("upper entry " + n);
  }
  if (dir->lower == 0) return Status::FromErrno(ENOENT, std::string(name));
  ASSIGN_OR_RETURN(Ino lower, view_.Lookup(dir->lower, name));
  Node* n = Find(lower);
  if (n == nullptr || !n->in_upper) return NodeForLower(lower, dir->ino, name);
  // The lower node was copied up through another of its names: as in overlayfs, the copy
  // breaks the hard link, and this name still shows the lower file, as its own node.
  Ino alias = 0;
  if (auto it = lower_aliases_.find(lower); it != lower_aliases_.end()) {
    Node* a = Find(it->second);
    if (a == nullptr || !a->in_upper) alias = it->second;
  }
  if (alias == 0) alias = lower_aliases_[lower] = next_ino_++;
  Node* a = Find(alias);
  if (a == nullptr) {
    auto owned = std::make_unique<Node>();
    owned->ino = alias;
    owned->lower = lower;
    owned->type = n->type;
    a = owned.get();
    nodes_[alias] = std::move(owned);
  }
  SetName(a, dir->ino, name);
  return a;
}

Result<struct stat> Filesystem::StatNode(Node* n) {
  if (n->gone) {
    struct stat st = n->gone_attr;
    st.st_ino = n->ino;
    return st;
  }
  if (n->in_upper) {
    struct stat st;
    if (!StatByName(n, &st)) {
      ASSIGN_OR_RETURN(int fd, UpperFd(n));
      ASSIGN_OR_RETURN(st, StatFd(fd));
    }
    st.st_ino = n->ino;
    if (S_ISDIR(st.st_mode) && n->lower != 0) st.st_nlink = 1;  // merged, as overlayfs
    return st;
  }
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(n->lower));
  struct stat st;
  std::memset(&st, 0, sizeof st);
  st.st_ino = n->ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink > n->lower_unlinked ? a.nlink - n->lower_unlinked : 0;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_rdev = static_cast<dev_t>(a.rdev);
  st.st_size = S_ISDIR(a.mode) ? kBlockSize : static_cast<off_t>(a.size);
  st.st_blksize = kBlockSize;
  st.st_blocks = S_ISREG(a.mode) ? static_cast<blkcnt_t>((a.size + 511) / 512) : 0;
  st.st_mtim.tv_sec = a.mtime_sec;
  st.st_mtim.tv_nsec = a.mtime_nsec;
  st.st_atim = st.st_mtim;
  st.st_ctim = st.st_mtim;
  return st;
}

Result<Entry> Filesystem::EntryOf(Node* n, bool count) {
  Entry e;
  e.ino = n->ino;
  ASSIGN_OR_RETURN(e.attr, StatNode(n));
  // The lower tree never changes, and the upper dir changes only through this mount (its
  // lock keeps other mounts out; like overlayfs, changing it behind the mount is not
  // supported). A hard-linked lower file is the exception: a copy-up through one name
  // breaks the link, and the kernel must then look the other names up again (they get
  // their own number).
  e.cacheable = !writable() || n->in_upper ||
                (n->lower_unlinked == 0 && (n->type == S_IFDIR || e.attr.st_nlink <= 1));
  if (count) ++n->nlookup;
  return e;
}

// ---- lookups and attributes -----------------------------------------------------------

Result<Entry> Filesystem::Lookup(Ino parent, std::string_view name) {
  if (name.size() > kNameMax) return Status::FromErrno(ENAMETOOLONG, std::string(name.substr(0, 32)));
  RETURN_IF_ERROR(WaitForLowerAnswer(parent, &name));
  TableLock lock(this);
  Node* dir = Find(parent);
  if (dir == nullptr) {
    // A lower directory the table does not hold (callers that skip lookups, as tools and
    // tests do): its number is the view's.
    if (!IsLowerIno(parent)) return Status::FromErrno(ESTALE, InoText(parent));
    dir = NodeForLower(parent, LowerParent(parent), "");
  }
  const Ino dir_ino = dir->ino;
  ASSIGN_OR_RETURN(Node * n, ResolveChild(dir, name));
  auto e = EntryOf(n, true);
  if (!e.ok()) MaybeFree(n);  // may free dir too (its last kid)
  MaybeFree(Find(dir_ino));
  return e;
}

void Filesystem::Forget(Ino ino, uint64_t count) {
  TableLock lock(this);
  Node* n = Find(ino);
  if (n == nullptr) return;
  n->nlookup -= std::min(n->nlookup, count);
  MaybeFree(n);
}

Result<struct stat> Filesystem::GetAttr(Ino ino) {
  ASSIGN_OR_RETURN(Entry e, GetEntry(ino));
  return e.attr;
}

Result<Entry> Filesystem::GetEntry(Ino ino, const FileHandle* fh) {
  if (fh != nullptr && fh->fd_.valid()) {
    ASSIGN_OR_RETURN(struct stat st, StatFd(fh->fd_.get()));
    TableLock lock(this);
    Node* n = Find(ino);
    st.st_ino = ino;
    if (n != nullptr && S_ISDIR(st.st_mode) && n->lower != 0) st.st_nlink = 1;
    return Entry{ino, st, true};  // an upper file: changed only through the mount
  }
  TableLock lock(this);
  Node* n = Find(ino);
  if (n == nullptr) {
    // Lower nodes are valid without a lookup (their numbers are the view's).
    if (!IsLowerIno(ino)) return Status::FromErrno(ENOENT, InoText(ino));
    Node tmp;
    tmp.ino = ino;
    tmp.lower = ino;
    ASSIGN_OR_RETURN(struct stat st, StatNode(&tmp));
    return Entry{ino, st, true};
  }
  return EntryOf(n, false);
}

// ---- copy-up --------------------------------------------------------------------------

std::string Filesystem::NewTempName() { return "#imagefs-" + std::to_string(++temp_counter_); }

Result<size_t> Filesystem::ReadLower(Ino lower_ino, uint64_t offset, std::span<uint8_t> out) const {
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(lower_ino));
  if (S_ISDIR(a.mode)) return Status::FromErrno(EISDIR, InoText(lower_ino));
  if (!S_ISREG(a.mode)) return Status::FromErrno(EINVAL, InoText(lower_ino) + " is not a regular file");
  if (offset >= a.size || out.empty()) return size_t{0};
  const uint64_t want = std::min<uint64_t>(out.size(), a.size - offset);
  size_t done = 0;
  while (done < want) {
    std::span<uint8_t> rest = out.subspan(done, want - done);
    ASSIGN_OR_RETURN(size_t n, read_lower_ ? read_lower_(lower_ino, offset + done, rest)
                                           : view_.ReadFile(lower_ino, offset + done, rest));
    if (n == 0) break;
    done += n;
  }
  return done;
}

// Owner, mode, xattrs and times of a lower node onto `name` in dirfd (in that order: chown
// clears set-id bits, times last).
Status Filesystem::SetLowerMetadata(int dirfd, const std::string& name, Ino lower, bool is_link) {
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(lower));
  if (::fchownat(dirfd, name.c_str(), a.uid, a.gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return Errno("chown of copy " + name);
  }
  if (!is_link && ::fchmodat(dirfd, name.c_str(), a.mode & 07777, 0) != 0) {
    return Errno("chmod of copy " + name);
  }
  ASSIGN_OR_RETURN(std::vector<index::XattrView> xattrs, view_.Xattrs(lower));
  const std::string path = FdPath(dirfd, name);
  for (const index::XattrView& x : xattrs) {
    if (IsTrustedOverlayXattr(x.name)) continue;
    const std::string xname(x.name);
    if (::lsetxattr(path.c_str(), xname.c_str(), x.value.data(), x.value.size(), 0) != 0) {
      if (is_link && (errno == EPERM || errno == ENOTSUP)) continue;
      return Errno("copying xattr " + xname + " to " + name);
    }
  }
  struct timespec times[2];
  times[0].tv_sec = a.mtime_sec;
  times[0].tv_nsec = a.mtime_nsec;
  times[1] = times[0];
  if (::utimensat(dirfd, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    return Errno("times of copy " + name);
  }
  return Status::Ok();
}

// A new file `tmp` in the work dir with the lower file's bytes (none unless with_data).
// Needs no lock: the lower tree is immutable and tmp is this caller's.
Status Filesystem::CopyLowerData(Ino lower, const std::string& tmp, bool with_data) const {
  int fd = ::openat(work_.get(), tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("creating copy in work dir");
  UniqueFd out(fd);
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(lower));
  if (!with_data || a.size == 0) return Status::Ok();
  std::vector<uint8_t> buf(std::min<uint64_t>(a.size, kCopyChunk));
  for (uint64_t off = 0; off < a.size;) {
    ASSIGN_OR_RETURN(size_t got, ReadLower(lower, off, buf));
    if (got == 0) break;
    RETURN_IF_ERROR(WriteAll(out.get(), std::string_view(reinterpret_cast<const char*>(buf.data()), got),
                             "copy-up of " + InoText(lower)));
    off += got;
  }
  return Status::Ok();
}

void Filesystem::StageCopyUp(Ino ino) {
  if (!writable()) return;
  Ino lower = 0;
  std::string tmp;
  {
    TableLock lock(this);
    Node* n = Find(ino);
    if (n == nullptr || n->in_upper || n->type != S_IFREG || n->lower == 0 ||
        !n->staged.empty()) {
      return;
    }
    lower = n->lower;
    tmp = NewTempName();
    ++n->pins;  // kept while unlocked
  }
  Status st = CopyLowerData(lower, tmp, true);  // the slow part (a lazy fetch), unlocked
  TableLock lock(this);
  Node* n = Find(ino);
  --n->pins;
  if (st.ok() && !n->in_upper && n->staged.empty() && n->lower == lower) {
    n->staged = std::move(tmp);
  } else {
    (void)::unlinkat(work_.get(), tmp.c_str(), 0);  // failed, or someone was quicker
  }
  MaybeFree(n);
}

Status Filesystem::CopyUpDir(Node* n) {
  if (n->in_upper) return Status::Ok();
  if (n->ino == kRootIno) return Status::Internal("the upper root is missing");
  ASSIGN_OR_RETURN(Node * parent, Need(n->parent));
  RETURN_IF_ERROR(CopyUpDir(parent));
  ASSIGN_OR_RETURN(const int pfd, UpperFd(parent));
  ASSIGN_OR_RETURN(struct stat pstat, StatFd(pfd));
  const std::string tmp = NewTempName();
  if (::mkdirat(work_.get(), tmp.c_str(), 0700) != 0) return Errno("mkdir in work dir");
  Status st = SetLowerMetadata(work_.get(), tmp, n->lower, false);
  if (st.ok() && ::renameat2(work_.get(), tmp.c_str(), pfd, n->name.c_str(), RENAME_NOREPLACE) != 0) {
    st = Errno("copy-up of directory " + n->name);
  }
  if (st.ok()) RestoreTimes(pfd, pstat);
  if (!st.ok()) {
    (void)::unlinkat(work_.get(), tmp.c_str(), AT_REMOVEDIR);
    return st;
  }
  ASSIGN_OR_RETURN(UniqueFd fd, OpenPath(pfd, n->name));
  ASSIGN_OR_RETURN(struct stat now, StatFd(fd.get()));
  Attach(n, std::move(fd), now);
  if (invalidate_) invalidate_(n->ino);
  return Status::Ok();
}

Status Filesystem::CopyUp(Node* n, bool with_data) {
  if (n->in_upper) return Status::Ok();
  if (n->type == S_IFDIR) return CopyUpDir(n);
  if (n->lower == 0) return Status::Internal(InoText(n->ino) + " has neither upper nor lower");
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(n->lower));
  if (n->lower_unlinked >= a.nlink) return Status::FromErrno(ESTALE, InoText(n->ino) + " was removed");
  ASSIGN_OR_RETURN(Node * parent, Need(n->parent));
  RETURN_IF_ERROR(CopyUpDir(parent));
  ASSIGN_OR_RETURN(const int pfd, UpperFd(parent));
  ASSIGN_OR_RETURN(struct stat pstat, StatFd(pfd));
  std::string tmp = NewTempName();
  Status st = Status::Ok();
  const mode_t type = a.mode & S_IFMT;
  if (type == S_IFREG) {
    if (!n->staged.empty()) {
      // The bytes were copied outside the lock (StageCopyUp): only metadata and the rename.
      tmp = std::move(n->staged);
      n->staged.clear();
      if (!with_data && ::truncate(FdPath(work_.get(), tmp).c_str(), 0) != 0) {
        st = Errno("truncating copy of " + n->name);
      }
    } else {
      st = CopyLowerData(n->lower, tmp, with_data);
      if (!st.ok()) {
        (void)::unlinkat(work_.get(), tmp.c_str(), 0);
        return st;
      }
    }
  } else if (type == S_IFLNK) {
    ASSIGN_OR_RETURN(std::string_view target, view_.ReadLink(n->lower));
    if (::symlinkat(std::string(target).c_str(), work_.get(), tmp.c_str()) != 0) {
      return Errno("creating symlink copy");
    }
  } else {
    if (::mknodat(work_.get(), tmp.c_str(), type | 0600, static_cast<dev_t>(a.rdev)) != 0) {
      return Errno("creating node copy");
    }
  }
  if (st.ok()) st = SetLowerMetadata(work_.get(), tmp, n->lower, type == S_IFLNK);
  if (st.ok() && ::renameat(work_.get(), tmp.c_str(), pfd, n->name.c_str()) != 0) {
    st = Errno("copy-up of " + n->name);
  }
  if (st.ok()) RestoreTimes(pfd, pstat);
  if (!st.ok()) {
    (void)::unlinkat(work_.get(), tmp.c_str(), 0);
    return st;
  }
  ASSIGN_OR_RETURN(UniqueFd fd, OpenPath(pfd, n->name));
  ASSIGN_OR_RETURN(struct stat now, StatFd(fd.get()));
  Attach(n, std::move(fd), now);
  if (invalidate_) invalidate_(n->ino);
  return Status::Ok();
}

// ---- directories ----------------------------------------------------------------------

Result<std::unique_ptr<DirHandle>> Filesystem::OpenDir(Ino ino) {
  RETURN_IF_ERROR(WaitForLowerAnswer(ino, nullptr));
  TableLock lock(this);
  Node* n = Find(ino);
  Node tmp;
  if (n == nullptr) {
    if (!IsLowerIno(ino)) return Status::FromErrno(ENOENT, InoText(ino));
    tmp.ino = ino;
    tmp.lower = ino;
    ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(ino));
    tmp.type = a.mode & S_IFMT;
    n = &tmp;
  }
  if (n->type != S_IFDIR) return Status::FromErrno(ENOTDIR, InoText(ino));
  Ino parent = n->parent;
  if (parent == 0) parent = LowerParent(ino);
  std::vector<DirHandle::Item> items;
  items.push_back({".", ino, S_IFDIR});
  items.push_back({"..", parent, S_IFDIR});
  std::set<std::string> hidden;  // upper names and whiteouts: the lower's are not shown
  std::vector<DirHandle::Item> upper_items;
  std::vector<Ino> pinned;
  if (n->in_upper && !n->gone) {  // a removed directory lists only "." and ".."
    ASSIGN_OR_RETURN(const int dirfd, UpperFd(n));
    int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Errno("opening upper dir of " + InoText(ino));
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      ::close(fd);
      return Errno("reading upper dir of " + InoText(ino));
    }
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(std::move(name));
    }
    ::closedir(d);
    for (const std::string& name : names) {
      hidden.insert(name);
      struct stat st;
      if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (IsWhiteout(st)) continue;
      auto child = NodeForUpper(n, name, st);
      if (!child.ok()) continue;
      ++(*child)->listed;
      pinned.push_back((*child)->ino);
      upper_items.push_back({name, (*child)->ino, st.st_mode & S_IFMT});
    }
  }
  if (n->lower != 0) {
    Status inner = Status::Ok();
    Status walked = view_.ForEachChild(n->lower, [&](std::string_view name, Ino child) {
      if (hidden.count(std::string(name)) != 0) return true;
      auto attr = view_.Attr(child);
      if (!attr.ok()) {
        inner = attr.status();
        return false;
      }
      upper_items.push_back({std::string(name), child, attr->mode & S_IFMT});
      return true;
    });
    if (walked.ok()) walked = inner;
    if (!walked.ok()) {
      for (Ino p : pinned) {
        if (Node* c = Find(p)) {
          --c->listed;
          MaybeFree(c);
        }
      }
      return walked;
    }
  }
  std::sort(upper_items.begin(), upper_items.end(),
            [](const DirHandle::Item& a, const DirHandle::Item& b) { return a.name < b.name; });
  for (auto& item : upper_items) items.push_back(std::move(item));
  auto handle = std::make_unique<DirHandle>(std::move(items));
  handle->dir_ = ino;
  handle->pinned_ = std::move(pinned);
  return handle;
}

void Filesystem::ReadDir(const DirHandle& dir, uint64_t offset, const DirFiller& fn) const {
  const auto& items = dir.items();
  for (uint64_t i = offset; i < items.size(); ++i) {
    if (!fn(items[i], i + 1)) return;
  }
}

void Filesystem::ReleaseDir(std::unique_ptr<DirHandle> dir) {
  if (dir == nullptr) return;
  TableLock lock(this);
  for (Ino p : dir->pinned_) {
    if (Node* c = Find(p)) {
      --c->listed;
      MaybeFree(c);
    }
  }
}

Status Filesystem::FsyncDir(Ino ino, bool datasync) {
  TableLock lock(this);
  Node* n = Find(ino);
  if (n == nullptr || !n->in_upper) return Status::Ok();
  ASSIGN_OR_RETURN(const int dirfd, UpperFd(n));
  UniqueFd fd(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Errno("fsyncdir");
  if ((datasync ? ::fdatasync(fd.get()) : ::fsync(fd.get())) != 0) return Errno("fsyncdir");
  return Status::Ok();
}

Result<bool> Filesystem::UnionDirEmpty(Node* dir) {
  std::set<std::string> hidden;
  if (dir->in_upper) {
    ASSIGN_OR_RETURN(const int dirfd, UpperFd(dir));
    int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Errno("opening upper dir");
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      ::close(fd);
      return Errno("reading upper dir");
    }
    bool empty = true;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      struct stat st;
      if (::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && IsWhiteout(st)) {
        hidden.insert(name);
        continue;
      }
      empty = false;
      break;
    }
    ::closedir(d);
    if (!empty) return false;
  }
  if (dir->lower == 0) return true;
  bool empty = true;
  RETURN_IF_ERROR(view_.ForEachChild(dir->lower, [&](std::string_view name, Ino) {
    if (hidden.count(std::string(name)) != 0) return true;
    empty = false;
    return false;
  }));
  return empty;
}

// ---- files ----------------------------------------------------------------------------

Result<std::unique_ptr<FileHandle>> Filesystem::Open(Ino ino, int flags) {
  const bool writing = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0;
  if (!writable() && (writing || (flags & (O_APPEND | O_CREAT)) != 0)) return ReadOnly();
  if (writing && (flags & O_TRUNC) == 0) StageCopyUp(ino);
  TableLock lock(this);
  Node* n = Find(ino);
  auto fh = std::make_unique<FileHandle>();
  fh->ino_ = ino;
  if (n == nullptr) {
    if (writing || !IsLowerIno(ino)) return Status::FromErrno(ESTALE, InoText(ino));
    ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(ino));
    if (S_ISDIR(a.mode)) return Status::FromErrno(EISDIR, InoText(ino));
    fh->lower_ = ino;
    return fh;
  }
  if (n->type == S_IFDIR) return Status::FromErrno(EISDIR, InoText(ino));
  if (writing) RETURN_IF_ERROR(CopyUp(n, (flags & O_TRUNC) == 0));
  if (n->in_upper) {
    if (n->type == S_IFLNK) return Status::FromErrno(ELOOP, InoText(ino));
    const int reopen = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT | O_NOFOLLOW)) | O_CLOEXEC;
    ASSIGN_OR_RETURN(const int path_fd, UpperFd(n));
    int fd = ::open(FdPath(path_fd).c_str(), reopen);
    if (fd < 0) return Errno("opening upper file of " + InoText(ino));
    fh->fd_.Reset(fd);
  } else {
    fh->lower_ = n->lower;
  }
  ++n->pins;
  return fh;
}

Result<size_t> Filesystem::Read(const FileHandle& fh, uint64_t offset, std::span<uint8_t> out) const {
  if (fh.reads_lower()) return ReadLower(fh.lower_, offset, out);
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fh.fd_.get(), out.data() + done, out.size() - done,
                        static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("reading " + InoText(fh.ino_));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Result<size_t> Filesystem::Read(Ino ino, uint64_t offset, std::span<uint8_t> out) {
  ASSIGN_OR_RETURN(std::unique_ptr<FileHandle> fh, Open(ino, O_RDONLY));
  auto n = Read(*fh, offset, out);
  Release(std::move(fh));
  return n;
}

Result<size_t> Filesystem::Write(const FileHandle& fh, uint64_t offset, std::span<const uint8_t> data) {
  if (fh.reads_lower()) return Status::FromErrno(EBADF, InoText(fh.ino_) + " is not open for writing");
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fh.fd_.get(), data.data() + done, data.size() - done,
                         static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (done > 0) break;
      return Errno("writing " + InoText(fh.ino_));
    }
    done += static_cast<size_t>(n);
  }
  return done;
}

Status Filesystem::Fsync(const FileHandle& fh, bool datasync) {
  if (fh.reads_lower()) return Status::Ok();
  if ((datasync ? ::fdatasync(fh.fd_.get()) : ::fsync(fh.fd_.get())) != 0) return Errno("fsync");
  return Status::Ok();
}

Status Filesystem::Fallocate(const FileHandle& fh, int mode, off_t offset, off_t length) {
  if (fh.reads_lower()) return Status::FromErrno(EBADF, InoText(fh.ino_) + " is not open for writing");
  if (::fallocate(fh.fd_.get(), mode, offset, length) != 0) return Errno("fallocate");
  return Status::Ok();
}

void Filesystem::Release(std::unique_ptr<FileHandle> fh) {
  if (fh == nullptr) return;
  const Ino ino = fh->ino_;
  fh.reset();
  TableLock lock(this);
  if (Node* n = Find(ino); n != nullptr && n->pins > 0) {
    --n->pins;
    MaybeFree(n);
  }
}

// ---- creating -------------------------------------------------------------------------

Result<Entry> Filesystem::CreateNode(Ino parent, std::string_view name, mode_t mode, dev_t rdev,
                                     std::string_view link_target, Node* link_source,
                                     const Caller& caller, int open_flags, UniqueFd* opened) {
  RETURN_IF_ERROR(CheckName(name));
  ASSIGN_OR_RETURN(Node * dir, Need(parent));
  if (dir->type != S_IFDIR) return Status::FromErrno(ENOTDIR, InoText(parent));
  auto existing = ResolveChild(dir, name);
  if (existing.ok()) return Status::FromErrno(EEXIST, std::string(name));
  if (existing.status().ToErrno() != ENOENT) return existing.status();
  RETURN_IF_ERROR(CopyUpDir(dir));
  ASSIGN_OR_RETURN(const int dirfd, UpperFd(dir));
  const std::string n(name);
  struct stat wst;
  const bool over_whiteout =
      ::fstatat(dirfd, n.c_str(), &wst, AT_SYMLINK_NOFOLLOW) == 0 && IsWhiteout(wst);

  // Built in the work dir with its final owner and mode, then renamed into place.
  ASSIGN_OR_RETURN(struct stat dst, StatFd(dirfd));
  const gid_t gid = (dst.st_mode & S_ISGID) ? dst.st_gid : caller.gid;
  const mode_t type = mode & S_IFMT;
  const std::string tmp = NewTempName();
  int rc = 0;
  UniqueFd fd;
  if (link_source != nullptr) {
    ASSIGN_OR_RETURN(const int source_fd, UpperFd(link_source));
    rc = ::linkat(source_fd, "", work_.get(), tmp.c_str(), AT_EMPTY_PATH);
  } else if (type == S_IFDIR) {
    rc = ::mkdirat(work_.get(), tmp.c_str(), 0700);
  } else if (type == S_IFLNK) {
    rc = ::symlinkat(std::string(link_target).c_str(), work_.get(), tmp.c_str());
  } else if (type == S_IFREG && opened != nullptr) {
    int acc = open_flags & (O_ACCMODE | O_APPEND | O_SYNC | O_DSYNC | O_NOATIME);
    int f = ::openat(work_.get(), tmp.c_str(), acc | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    rc = f < 0 ? -1 : 0;
    fd.Reset(f);
  } else {
    rc = ::mknodat(work_.get(), tmp.c_str(), type | 0600, rdev);
  }
  if (rc != 0) return Errno("creating " + n);
  auto undo = [&] { (void)::unlinkat(work_.get(), tmp.c_str(), type == S_IFDIR ? AT_REMOVEDIR : 0); };
  Status st = Status::Ok();
  if (link_source == nullptr) {
    mode_t perms = mode & 07777;
    if (type == S_IFDIR && (dst.st_mode & S_ISGID)) perms |= S_ISGID;
    if (::fchownat(work_.get(), tmp.c_str(), caller.uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
      st = Errno("chown of " + n);
    } else if (type != S_IFLNK && ::fchmodat(work_.get(), tmp.c_str(), perms, 0) != 0) {
      st = Errno("chmod of " + n);
    }
  }
  if (st.ok() && type == S_IFDIR && over_whiteout &&
      ::setxattr(FdPath(work_.get(), tmp).c_str(), kOpaqueXattr, "y", 1, 0) != 0) {
    st = Errno("marking " + n + " opaque");
  }
  if (st.ok()) {
    if (!over_whiteout) {
      if (::renameat2(work_.get(), tmp.c_str(), dirfd, n.c_str(), RENAME_NOREPLACE) != 0) {
        st = Errno("creating " + n);
      }
    } else if (type == S_IFDIR) {
      // A directory cannot replace a char device: swap them, then drop the whiteout.
      if (::renameat2(work_.get(), tmp.c_str(), dirfd, n.c_str(), RENAME_EXCHANGE) != 0) {
        st = Errno("creating " + n);
      } else {
        (void)::unlinkat(work_.get(), tmp.c_str(), 0);
      }
    } else if (::renameat(work_.get(), tmp.c_str(), dirfd, n.c_str()) != 0) {
      st = Errno("creating " + n);
    }
  }
  if (!st.ok()) {
    undo();
    return st;
  }
  ASSIGN_OR_RETURN(UniqueFd path, OpenPath(dirfd, n));
  ASSIGN_OR_RETURN(struct stat now, StatFd(path.get()));
  Node* node = nullptr;
  if (link_source != nullptr) {
    node = link_source;
    SetName(node, dir->ino, n);
  } else {
    auto owned = std::make_unique<Node>();
    owned->ino = next_ino_++;
    node = owned.get();
    nodes_[node->ino] = std::move(owned);
    SetName(node, dir->ino, n);
    Attach(node, std::move(path), now);
  }
  if (opened != nullptr) *opened = std::move(fd);
  return EntryOf(node, true);
}

Result<Filesystem::Created> Filesystem::Create(Ino parent, std::string_view name, mode_t mode,
                                               int flags, const Caller& caller) {
  RETURN_IF_ERROR(CheckWritable());
  Created out;
  {
    TableLock lock(this);
    ASSIGN_OR_RETURN(Node * dir, Need(parent));
    auto existing = ResolveChild(dir, name);
    if (!existing.ok() && existing.status().ToErrno() != ENOENT) return existing.status();
    if (!existing.ok()) {
      UniqueFd fd;
      ASSIGN_OR_RETURN(out.entry, CreateNode(parent, name, S_IFREG | (mode & 07777), 0, {}, nullptr,
                                             caller, flags, &fd));
      out.handle = std::make_unique<FileHandle>();
      out.handle->ino_ = out.entry.ino;
      out.handle->fd_ = std::move(fd);
      if (Node* n = Find(out.entry.ino)) ++n->pins;
      return out;
    }
    if (flags & O_EXCL) return Status::FromErrno(EEXIST, std::string(name));
    ASSIGN_OR_RETURN(out.entry, EntryOf(*existing, true));
  }
  auto fh = Open(out.entry.ino, flags & ~(O_CREAT | O_EXCL));
  if (!fh.ok()) {
    Forget(out.entry.ino, 1);
    return fh.status();
  }
  out.handle = std::move(*fh);
  if (flags & O_TRUNC) {
    auto e = GetEntry(out.entry.ino, out.handle.get());
    if (e.ok()) out.entry.attr = e->attr;
  }
  return out;
}

Result<Entry> Filesystem::Mkdir(Ino parent, std::string_view name, mode_t mode, const Caller& caller) {
  RETURN_IF_ERROR(CheckWritable());
  TableLock lock(this);
  return CreateNode(parent, name, S_IFDIR | (mode & 07777), 0, {}, nullptr, caller, 0, nullptr);
}

Result<Entry> Filesystem::Mknod(Ino parent, std::string_view name, mode_t mode, dev_t rdev,
                                const Caller& caller) {
  RETURN_IF_ERROR(CheckWritable());
  if (S_ISCHR(mode) && rdev == 0) {
    return Status::FromErrno(EPERM, "a character device 0/0 is a whiteout");
  }
  const mode_t type = mode & S_IFMT;
  if (type != S_IFREG && type != S_IFCHR && type != S_IFBLK && type != S_IFIFO && type != S_IFSOCK) {
    return Status::FromErrno(EINVAL, "mknod type");
  }
  TableLock lock(this);
  return CreateNode(parent, name, mode, rdev, {}, nullptr, caller, 0, nullptr);
}

Result<Entry> Filesystem::Symlink(Ino parent, std::string_view name, std::string_view target,
                                  const Caller& caller) {
  RETURN_IF_ERROR(CheckWritable());
  TableLock lock(this);
  return CreateNode(parent, name, S_IFLNK | 0777, 0, target, nullptr, caller, 0, nullptr);
}

Result<Entry> Filesystem::Link(Ino ino, Ino new_parent, std::string_view new_name) {
  RETURN_IF_ERROR(CheckWritable());
  StageCopyUp(ino);
  TableLock lock(this);
  ASSIGN_OR_RETURN(Node * n, Need(ino));
  if (n->type == S_IFDIR) return Status::FromErrno(EPERM, "hard link to a directory");
  RETURN_IF_ERROR(CopyUp(n, true));
  return CreateNode(new_parent, new_name, n->type, 0, {}, n, Caller{}, 0, nullptr);
}

// ---- removing and renaming ------------------------------------------------------------

Status Filesystem::RemoveEntry(Ino parent, std::string_view name, bool want_dir) {
  RETURN_IF_ERROR(CheckWritable());
  TableLock lock(this);
  ASSIGN_OR_RETURN(Node * dir, Need(parent));
  ASSIGN_OR_RETURN(Node * n, ResolveChild(dir, name));
  ScopeExit free_unused([this, ino = n->ino] {
    if (Node* left = Find(ino)) {
      ReleaseHold(left);  // a removal that failed: its name stays
      MaybeFree(left);    // callers that skip lookups
    }
  });
  const std::string nm(name);
  if (want_dir && n->type != S_IFDIR) return Status::FromErrno(ENOTDIR, nm);
  if (!want_dir && n->type == S_IFDIR) return Status::FromErrno(EISDIR, nm);
  if (want_dir) {
    ASSIGN_OR_RETURN(bool empty, UnionDirEmpty(n));
    if (!empty) return Status::FromErrno(ENOTEMPTY, nm);
  }
  const bool lower_here = LowerHas(dir, name);
  struct stat st;
  int dirfd = -1;
  if (dir->in_upper) {
    ASSIGN_OR_RETURN(dirfd, UpperFd(dir));
  }
  const bool upper_here = dirfd >= 0 && ::fstatat(dirfd, nm.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!upper_here) {
    // Only the lower tree has it: a whiteout hides it.
    RETURN_IF_ERROR(CopyUpDir(dir));
    ASSIGN_OR_RETURN(dirfd, UpperFd(dir));
    if (::mknodat(dirfd, nm.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0) {
      return Errno("whiteout " + nm);
    }
    ++n->lower_unlinked;
    return Status::Ok();
  }
  // The entry goes: if it was n's known name, n keeps its fd from now on (fstat of an open
  // unlinked file still answers; a hard link's other names are found by a later lookup).
  RETURN_IF_ERROR(HoldForRemoval(n, dir, nm));
  if (lower_here) {
    // Replace the upper entry with a whiteout in one step (a directory is swapped out and
    // then removed from the work dir).
    const std::string tmp = NewTempName();
    if (::mknodat(work_.get(), tmp.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0) {
      return Errno("whiteout " + nm);
    }
    if (want_dir) {
      if (::renameat2(work_.get(), tmp.c_str(), dirfd, nm.c_str(), RENAME_EXCHANGE) != 0) {
        Status failed = Errno("removing " + nm);
        (void)::unlinkat(work_.get(), tmp.c_str(), 0);
        return failed;
      }
      LoseName(n);  // in the work dir now
      RETURN_IF_ERROR(ClearWhiteouts(work_.get(), tmp));
      if (::unlinkat(work_.get(), tmp.c_str(), AT_REMOVEDIR) != 0) return Errno("removing " + nm);
      unkept_.push_back(n->ino);  // gone now: MaybeFree drops its fd
    } else if (::renameat(work_.get(), tmp.c_str(), dirfd, nm.c_str()) != 0) {
      Status failed = Errno("removing " + nm);
      (void)::unlinkat(work_.get(), tmp.c_str(), 0);
      return failed;
    }
    LoseName(n);
    return Status::Ok();
  }
  if (want_dir) RETURN_IF_ERROR(ClearWhiteouts(dirfd, nm));
  if (::unlinkat(dirfd, nm.c_str(), want_dir ? AT_REMOVEDIR : 0) != 0) {
    return Errno("removing " + nm);
  }
  LoseName(n);
  return Status::Ok();
}

Status Filesystem::Unlink(Ino parent, std::string_view name) { return RemoveEntry(parent, name, false); }
Status Filesystem::Rmdir(Ino parent, std::string_view name) { return RemoveEntry(parent, name, true); }

Status Filesystem::Rename(Ino parent, std::string_view name, Ino new_parent,
                          std::string_view new_name, unsigned flags) {
  RETURN_IF_ERROR(CheckWritable());
  if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0 ||
      (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE)) {
    return Status::FromErrno(EINVAL, "rename flags");
  }
  RETURN_IF_ERROR(CheckName(new_name));
  {
    // A lower file moved is copied up first: its bytes are staged without the lock.
    Ino src_ino = 0;
    {
      TableLock lock(this);
      Node* dir = Find(parent);
      auto src = dir != nullptr ? ResolveChild(dir, name) : Result<Node*>(Status::NotFound(""));
      if (src.ok()) src_ino = (*src)->ino;
    }
    if (src_ino != 0) StageCopyUp(src_ino);
  }
  TableLock lock(this);
  ASSIGN_OR_RETURN(Node * dir, Need(parent));
  ASSIGN_OR_RETURN(Node * new_dir, Need(new_parent));
  if (new_dir->type != S_IFDIR) return Status::FromErrno(ENOTDIR, InoText(new_parent));
  ASSIGN_OR_RETURN(Node * src, ResolveChild(dir, name));
  auto dst_or = ResolveChild(new_dir, new_name);
  if (!dst_or.ok() && dst_or.status().ToErrno() != ENOENT) return dst_or.status();
  Node* dst = dst_or.ok() ? *dst_or : nullptr;
  ScopeExit free_unused([this, a = src->ino, b = dst != nullptr ? dst->ino : 0] {
    MaybeFree(Find(a));
    if (Node* left = b != 0 ? Find(b) : nullptr) {
      ReleaseHold(left);  // not replaced after all: its name stays
      MaybeFree(left);
    }
  });
  const std::string from(name), to(new_name);
  if (src->type == S_IFDIR && src->lower != 0) {
    return Status::FromErrno(EXDEV, "renaming directory " + from + " of the image");
  }
  if (flags & RENAME_NOREPLACE && dst != nullptr) return Status::FromErrno(EEXIST, to);
  if (flags & RENAME_EXCHANGE) {
    if (dst == nullptr) return Status::FromErrno(ENOENT, to);
    if (dst->type == S_IFDIR && dst->lower != 0) {
      return Status::FromErrno(EXDEV, "renaming directory " + to + " of the image");
    }
    if (src->type == S_IFDIR || dst->type == S_IFDIR) {
      return Status::FromErrno(EINVAL, "exchanging directories");
    }
    RETURN_IF_ERROR(CopyUp(src, true));
    RETURN_IF_ERROR(CopyUp(dst, true));
    RETURN_IF_ERROR(CopyUpDir(new_dir));
    ASSIGN_OR_RETURN(const int from_fd, UpperFd(dir));
    ASSIGN_OR_RETURN(const int to_fd, UpperFd(new_dir));
    if (::renameat2(from_fd, from.c_str(), to_fd, to.c_str(), RENAME_EXCHANGE) != 0) {
      return Errno("exchanging " + from + " and " + to);
    }
    // (Not a swap of the known names: a hard-linked file may be known by another name.)
    SetName(src, new_dir->ino, to);
    SetName(dst, dir->ino, from);
    return Status::Ok();
  }
  if (dst != nullptr) {
    if (dst == src) return Status::Ok();  // two names of one file: nothing happens
    if (src->type == S_IFDIR && dst->type != S_IFDIR) return Status::FromErrno(ENOTDIR, to);
    if (src->type != S_IFDIR && dst->type == S_IFDIR) return Status::FromErrno(EISDIR, to);
    if (dst->type == S_IFDIR) {
      ASSIGN_OR_RETURN(bool empty, UnionDirEmpty(dst));
      if (!empty) return Status::FromErrno(ENOTEMPTY, to);
    }
  }
  RETURN_IF_ERROR(CopyUp(src, true));
  RETURN_IF_ERROR(CopyUpDir(new_dir));
  ASSIGN_OR_RETURN(const int from_fd, UpperFd(dir));
  ASSIGN_OR_RETURN(const int to_fd, UpperFd(new_dir));
  const bool lower_at_from = LowerHas(dir, from);
  struct stat tst;
  const bool upper_at_to = ::fstatat(to_fd, to.c_str(), &tst, AT_SYMLINK_NOFOLLOW) == 0;
  const bool whiteout_at_to = upper_at_to && IsWhiteout(tst);
  if (src->type == S_IFDIR) {
    // A directory moved over a lower name must hide the lower one's children (overlayfs
    // also marks any directory moved into a merged directory).
    if (new_dir->lower != 0 && !HasOpaqueXattr(from_fd, from) &&
        ::setxattr(FdPath(from_fd, from).c_str(), kOpaqueXattr, "y", 1, 0) != 0) {
      return Errno("marking " + from + " opaque");
    }
    if (upper_at_to && !whiteout_at_to) {
      // The target is an empty union dir; what its upper part holds are whiteouts, which
      // the source (opaque) no longer needs.
      RETURN_IF_ERROR(ClearWhiteouts(to_fd, to));
    }
  }
  if (dst != nullptr) RETURN_IF_ERROR(HoldForRemoval(dst, new_dir, to));  // replaced below
  if (src->type == S_IFDIR && whiteout_at_to) {
    // A directory cannot replace the whiteout: swap, then the whiteout is at the old name.
    if (::renameat2(from_fd, from.c_str(), to_fd, to.c_str(), RENAME_EXCHANGE) != 0) {
      return Errno("renaming " + from + " to " + to);
    }
    if (!lower_at_from) (void)::unlinkat(from_fd, from.c_str(), 0);
  } else {
    const unsigned rflags = lower_at_from ? RENAME_WHITEOUT : 0;
    if (::renameat2(from_fd, from.c_str(), to_fd, to.c_str(), rflags) != 0) {
      return Errno("renaming " + from + " to " + to);
    }
  }
  if (dst != nullptr && !dst->in_upper) ++dst->lower_unlinked;
  // A replaced upper entry lost a name: fstat of its node tells (nlink).
  if (dst != nullptr) LoseName(dst);
  SetName(src, new_dir->ino, to);
  return Status::Ok();
}

// ---- attributes -----------------------------------------------------------------------

Result<struct stat> Filesystem::SetAttr(Ino ino, const SetAttrRequest& req, const FileHandle* fh,
                                        const Caller&) {
  RETURN_IF_ERROR(CheckWritable());
  if (req.set_mtime && !req.mtime_now && !req.set_atime && !req.set_mode && !req.set_uid &&
      !req.set_gid && !req.set_size) {
    // The kernel's write-back cache flushes an inode's times after a change of its ctime
    // alone (unlink or link of another name): for a node the lower tree still serves that
    // repeats the lower mtime, and must not copy it up (it would bring back the removed
    // name). Setting a lower file's mtime to what it already is is the one call that
    // differs from overlayfs: no copy-up.
    TableLock lock(this);
    ASSIGN_OR_RETURN(Node * n, Need(ino));
    if (!n->in_upper && n->lower != 0) {
      ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(n->lower));
      if (a.mtime_sec == req.mtime.tv_sec && a.mtime_nsec == req.mtime.tv_nsec) return StatNode(n);
    }
  }
  const bool data_needed = !(req.set_size && req.size == 0);
  if (data_needed) StageCopyUp(ino);
  TableLock lock(this);
  ASSIGN_OR_RETURN(Node * n, Need(ino));
  RETURN_IF_ERROR(CopyUp(n, data_needed));
  ASSIGN_OR_RETURN(const int fd, UpperFd(n));
  const std::string path = FdPath(fd);
  if (req.set_uid || req.set_gid) {
    uid_t uid = req.set_uid ? req.uid : static_cast<uid_t>(-1);
    gid_t gid = req.set_gid ? req.gid : static_cast<gid_t>(-1);
    if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return Errno("chown");
  }
  if (req.set_mode) {
    if (n->type == S_IFLNK) return Status::FromErrno(EOPNOTSUPP, "chmod of a symlink");
    if (::chmod(path.c_str(), req.mode & 07777) != 0) return Errno("chmod");
  }
  if (req.set_size) {
    if (n->type == S_IFDIR) return Status::FromErrno(EISDIR, InoText(ino));
    if (n->type != S_IFREG) return Status::FromErrno(EINVAL, "truncate");
    int rc = (fh != nullptr && fh->fd_.valid()) ? ::ftruncate(fh->fd_.get(), req.size)
                                                : ::truncate(path.c_str(), req.size);
    if (rc != 0) return Errno("truncate");
  }
  if (req.set_atime || req.set_mtime) {
    struct timespec ts[2];
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1].tv_nsec = UTIME_OMIT;
    if (req.set_atime) ts[0] = req.atime_now ? timespec{0, UTIME_NOW} : req.atime;
    if (req.set_mtime) ts[1] = req.mtime_now ? timespec{0, UTIME_NOW} : req.mtime;
    int rc;
    if (n->type == S_IFLNK) {
      ASSIGN_OR_RETURN(Node * parent, Need(n->parent));
      ASSIGN_OR_RETURN(const int dirfd, UpperFd(parent));
      rc = ::utimensat(dirfd, n->name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    } else {
      rc = ::utimensat(AT_FDCWD, path.c_str(), ts, 0);
    }
    if (rc != 0) return Errno("utimens");
  }
  lock.Unlock();
  ASSIGN_OR_RETURN(Entry e, GetEntry(ino, fh));
  return e.attr;
}

Result<std::string> Filesystem::ReadLink(Ino ino) {
  TableLock lock(this);
  Node* n = Find(ino);
  if (n != nullptr && n->in_upper) {
    if (n->type != S_IFLNK) return Status::FromErrno(EINVAL, InoText(ino) + " is not a symlink");
    ASSIGN_OR_RETURN(const int fd, UpperFd(n));
    std::string buf(4096, '\0');
    ssize_t len = ::readlinkat(fd, "", buf.data(), buf.size());
    if (len < 0) return Errno("readlink");
    buf.resize(static_cast<size_t>(len));
    return buf;
  }
  const Ino lower = n != nullptr ? n->lower : ino;
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(lower));
  if (!S_ISLNK(a.mode)) return Status::FromErrno(EINVAL, InoText(ino) + " is not a symlink");
  ASSIGN_OR_RETURN(std::string_view target, view_.ReadLink(lower));
  return std::string(target);
}

// xattrs of an upper node go through a path: the file itself via /proc/self/fd, or a
// symlink by name in its parent (not followed: the l*xattr calls).
Result<std::string> Filesystem::UpperXattrPath(Node* n) {
  if (n->type != S_IFLNK) {
    ASSIGN_OR_RETURN(const int fd, UpperFd(n));
    return FdPath(fd);
  }
  ASSIGN_OR_RETURN(Node * parent, Need(n->parent));
  ASSIGN_OR_RETURN(const int dirfd, UpperFd(parent));
  return FdPath(dirfd, n->name);
}

Result<XattrReply> Filesystem::GetXattr(Ino ino, std::string_view name, size_t buffer_size) {
  if (IsTrustedOverlayXattr(name)) return Status::FromErrno(ENODATA, std::string(name));
  TableLock lock(this);
  Node* n = Find(ino);
  const std::string xname(name);
  if (n != nullptr && n->in_upper) {
    const bool link = n->type == S_IFLNK;
    ASSIGN_OR_RETURN(const std::string path, UpperXattrPath(n));
    ssize_t len = link ? ::lgetxattr(path.c_str(), xname.c_str(), nullptr, 0)
                         : ::getxattr(path.c_str(), xname.c_str(), nullptr, 0);
    if (len < 0) return Errno(xname);
    XattrReply reply;
    reply.size = static_cast<size_t>(len);
    if (buffer_size == 0) return reply;
    if (buffer_size < reply.size) return Status::FromErrno(ERANGE, xname);
    reply.data.resize(buffer_size);
    len = link ? ::lgetxattr(path.c_str(), xname.c_str(), reply.data.data(), buffer_size)
                 : ::getxattr(path.c_str(), xname.c_str(), reply.data.data(), buffer_size);
    if (len < 0) return Errno(xname);
    reply.data.resize(static_cast<size_t>(len));
    reply.size = reply.data.size();
    return reply;
  }
  const Ino lower = n != nullptr ? n->lower : ino;
  ASSIGN_OR_RETURN(std::vector<index::XattrView> xattrs, view_.Xattrs(lower));
  for (const index::XattrView& x : xattrs) {
    if (x.name != name) continue;
    XattrReply reply;
    reply.size = x.value.size();
    if (buffer_size == 0) return reply;
    if (buffer_size < x.value.size()) return Status::FromErrno(ERANGE, xname);
    reply.data = std::string(x.value);
    return reply;
  }
  return Status::FromErrno(ENODATA, xname);
}

Result<XattrReply> Filesystem::ListXattr(Ino ino, size_t buffer_size) {
  std::string list;
  {
    TableLock lock(this);
    Node* n = Find(ino);
    if (n != nullptr && n->in_upper) {
      const bool link = n->type == S_IFLNK;
      ASSIGN_OR_RETURN(const std::string path, UpperXattrPath(n));
      ssize_t len = link ? ::llistxattr(path.c_str(), nullptr, 0)
                           : ::listxattr(path.c_str(), nullptr, 0);
      if (len < 0) return Errno("listxattr");
      std::string raw(static_cast<size_t>(len), '\0');
      len = link ? ::llistxattr(path.c_str(), raw.data(), raw.size())
                   : ::listxattr(path.c_str(), raw.data(), raw.size());
      if (len < 0) return Errno("listxattr");
      raw.resize(static_cast<size_t>(len));
      for (size_t pos = 0; pos < raw.size();) {
        std::string_view one(raw.c_str() + pos);
        pos += one.size() + 1;
        if (IsTrustedOverlayXattr(one)) continue;
        list += one;
        list.push_back('\0');
      }
    } else {
      const Ino lower = n != nullptr ? n->lower : ino;
      ASSIGN_OR_RETURN(std::vector<index::XattrView> xattrs, view_.Xattrs(lower));
      for (const index::XattrView& x : xattrs) {
        if (IsTrustedOverlayXattr(x.name)) continue;
        list += x.name;
        list.push_back('\0');
      }
    }
  }
  XattrReply reply;
  reply.size = list.size();
  if (buffer_size == 0) return reply;
  if (buffer_size < list.size()) return Status::FromErrno(ERANGE, InoText(ino) + " xattr list");
  reply.data = std::move(list);
  return reply;
}

Status Filesystem::SetXattr(Ino ino, std::string_view name, std::string_view value, int flags) {
  RETURN_IF_ERROR(CheckWritable());
  if (IsTrustedOverlayXattr(name)) return Status::FromErrno(EPERM, std::string(name));
  StageCopyUp(ino);
  TableLock lock(this);
  ASSIGN_OR_RETURN(Node * n, Need(ino));
  RETURN_IF_ERROR(CopyUp(n, true));
  const std::string xname(name);
  ASSIGN_OR_RETURN(const std::string path, UpperXattrPath(n));
  const int rc = n->type == S_IFLNK
                     ? ::lsetxattr(path.c_str(), xname.c_str(), value.data(), value.size(), flags)
                     : ::setxattr(path.c_str(), xname.c_str(), value.data(), value.size(), flags);
  if (rc != 0) return Errno(xname);
  return Status::Ok();
}

Status Filesystem::RemoveXattr(Ino ino, std::string_view name) {
  RETURN_IF_ERROR(CheckWritable());
  if (IsTrustedOverlayXattr(name)) return Status::FromErrno(ENODATA, std::string(name));
  {
    // Removing what a lower node does not have copies nothing up (as overlayfs).
    TableLock lock(this);
    ASSIGN_OR_RETURN(Node * n, Need(ino));
    if (!n->in_upper) {
      ASSIGN_OR_RETURN(std::vector<index::XattrView> xattrs, view_.Xattrs(n->lower));
      bool found = false;
      for (const index::XattrView& x : xattrs) found = found || x.name == name;
      if (!found) return Status::FromErrno(ENODATA, std::string(name));
    }
  }
  StageCopyUp(ino);
  TableLock lock(this);
  ASSIGN_OR_RETURN(Node * n, Need(ino));
  RETURN_IF_ERROR(CopyUp(n, true));
  const std::string xname(name);
  ASSIGN_OR_RETURN(const std::string path, UpperXattrPath(n));
  const int rc = n->type == S_IFLNK ? ::lremovexattr(path.c_str(), xname.c_str())
                                    : ::removexattr(path.c_str(), xname.c_str());
  if (rc != 0) return Errno(xname);
  return Status::Ok();
}

struct statvfs Filesystem::StatFs() const {
  struct statvfs s;
  std::memset(&s, 0, sizeof s);
  if (writable() && ::statvfs(FdPath(upper_root_.get()).c_str(), &s) == 0) {
    s.f_namemax = kNameMax;
    return s;
  }
  s.f_bsize = kBlockSize;
  s.f_frsize = kBlockSize;
  s.f_blocks = (total_bytes_ + kBlockSize - 1) / kBlockSize;
  s.f_files = view_.InodeCount();
  s.f_namemax = kNameMax;
  s.f_flag = ST_RDONLY;
  return s;
}

}  // namespace imagefs::fs
