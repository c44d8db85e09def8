#include "fs/changes.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "util/unique_fd.h"

namespace imagefs::fs {
namespace {

using index::Ino;
using index::MergedView;
using index::NodeAttr;

constexpr size_t kCompareBlock = 1 << 20;

// The overlayfs marker `what` ("opaque", "redirect"...) under either namespace
// (trusted.overlay.* for a root mount, user.overlay.* for a userxattr mount).
const char* const kTrustedPrefix = "trusted.overlay.";
const char* const kUserPrefix = "user.overlay.";

// An xattr of an open file; nullopt when it has none of that name.
Result<std::optional<std::string>> FGetXattr(int fd, const std::string& name) {
  for (int attempt = 0; attempt < 4; ++attempt) {
    ssize_t n = ::fgetxattr(fd, name.c_str(), nullptr, 0);
    if (n < 0) {
      if (errno == ENODATA || errno == ENOTSUP) return std::optional<std::string>();
      return Status::FromErrno(errno, "reading xattr " + name);
    }
    std::string value(static_cast<size_t>(n), '\0');
    n = ::fgetxattr(fd, name.c_str(), value.data(), value.size());
    if (n >= 0) {
      value.resize(static_cast<size_t>(n));
      return std::optional<std::string>(std::move(value));
    }
    if (errno == ENODATA) return std::optional<std::string>();
    if (errno != ERANGE) return Status::FromErrno(errno, "reading xattr " + name);
  }
  return Status::FromErrno(ERANGE, "reading xattr " + name);
}

Result<std::optional<std::string>> OverlayXattr(int fd, const std::string& what) {
  ASSIGN_OR_RETURN(auto v, FGetXattr(fd, kTrustedPrefix + what));
  if (v) return v;
  return FGetXattr(fd, kUserPrefix + what);
}

// An entry's xattrs in a view, overlayfs's own left out.
Result<std::map<std::string, std::string>> ViewXattrs(const MergedView& view, Ino ino) {
  std::map<std::string, std::string> out;
  ASSIGN_OR_RETURN(auto xattrs, view.Xattrs(ino));
  for (const index::XattrView& x : xattrs) {
    if (!IsOverlayXattr(x.name)) out.emplace(x.name, x.value);
  }
  return out;
}

Result<bool> ViewXattrsDiffer(const MergedView& a, Ino ai, const MergedView& b, Ino bi) {
  ASSIGN_OR_RETURN(auto x, ViewXattrs(a, ai));
  ASSIGN_OR_RETURN(auto y, ViewXattrs(b, bi));
  return x != y;
}

}  // namespace

bool IsOverlayXattr(std::string_view name) {
  return name.starts_with(kTrustedPrefix) || name.starts_with(kUserPrefix);
}

Result<std::map<std::string, std::string>> ReadXattrs(const std::string& path,
                                                      const std::string& what) {
  std::map<std::string, std::string> out;
  std::string names;
  for (int attempt = 0;; ++attempt) {
    ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
    if (n < 0) {
      if (errno == ENOTSUP) return out;
      return Status::FromErrno(errno, what + ": listing xattrs");
    }
    names.assign(static_cast<size_t>(n), '\0');
    n = ::llistxattr(path.c_str(), names.data(), names.size());
    if (n >= 0) {
      names.resize(static_cast<size_t>(n));
      break;
    }
    if (errno != ERANGE || attempt > 4) return Status::FromErrno(errno, what + ": listing xattrs");
  }
  for (size_t pos = 0; pos < names.size();) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty() || IsOverlayXattr(name)) continue;
    ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (n < 0) {
      if (errno == ENODATA) continue;
      return Status::FromErrno(errno, what + ": reading xattr " + name);
    }
    std::string value(static_cast<size_t>(n), '\0');
    n = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (n < 0) return Status::FromErrno(errno, what + ": reading xattr " + name);
    value.resize(static_cast<size_t>(n));
    out[name] = std::move(value);
  }
  return out;
}

namespace {

// docker's sameFsTime: equal, or equal seconds when either side has no nanoseconds.
bool SameTime(int64_t a_sec, uint32_t a_nsec, int64_t b_sec, uint32_t b_nsec) {
  if (a_sec != b_sec) return false;
  return a_nsec == b_nsec || a_nsec == 0 || b_nsec == 0;
}

bool SameMeta(const NodeAttr& a, const NodeAttr& b) {
  if (a.mode != b.mode || a.uid != b.uid || a.gid != b.gid) return false;
  if ((S_ISCHR(a.mode) || S_ISBLK(a.mode)) && a.rdev != b.rdev) return false;
  if (!S_ISDIR(a.mode) && a.size != b.size) return false;
  return SameTime(a.mtime_sec, a.mtime_nsec, b.mtime_sec, b.mtime_nsec);
}

NodeAttr AttrOfStat(const struct stat& st) {
  NodeAttr a;
  a.mode = st.st_mode;
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.size = S_ISREG(st.st_mode) || S_ISLNK(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
  a.mtime_sec = st.st_mtim.tv_sec;
  a.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  a.rdev = st.st_rdev;
  return a;
}

std::string Join(const std::string& rel, std::string_view name) {
  return rel.empty() ? std::string(name) : rel + "/" + std::string(name);
}

// Names in a directory fd (not . and ..), bytewise sorted. The fd stays open.
Result<std::vector<std::string>> ListDir(int dirfd, const std::string& what) {
  int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return Status::FromErrno(errno, what);
  DIR* dir = ::fdopendir(dup);
  if (dir == nullptr) {
    int err = errno;
    ::close(dup);
    return Status::FromErrno(err, what);
  }
  ::rewinddir(dir);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      names.emplace_back(e->d_name);
    }
    errno = 0;
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) return Status::FromErrno(err, what);
  std::sort(names.begin(), names.end());
  return names;
}

// ---------------------------------------------------------------------------------------
// Upper dir against its lower tree.

class UpperWalker {
 public:
  UpperWalker(const MergedView& lower, const UpperOptions& options)
      : lower_(lower), options_(options) {}

  // Walks the upper directory open at dirfd (rel "" for the upper dir itself) over the
  // lower directory `lower` (0: none, every entry is added). True when it recorded a change.
  Result<bool> WalkDir(int dirfd, const std::string& rel, Ino lower);

  std::vector<Change> changes;

 private:
  struct Entry {
    std::string name;
    struct stat st;
    UniqueFd fd;  // regular files and directories only
    bool whiteout = false;
  };
  Result<Entry> OpenEntry(int dirfd, const std::string& rel, const std::string& name);
  Status Refuse() const {
    return Status::Unsupported(
        options_.display_path +
        ": upper dir uses overlayfs redirect_dir/metacopy, which imagefs diff cannot read "
        "(mount overlayfs without redirect_dir/metacopy)");
  }
  std::string Where(const std::string& rel) const {
    return options_.display_path + (rel.empty() ? "" : "/" + rel);
  }
  void Record(Change::Kind kind, const std::string& rel, uint32_t mode, bool opaque = false,
              bool has_entry = true) {
    changes.push_back({kind, "/" + rel, has_entry ? rel : "", opaque, mode});
  }
  // Mode, owner, rdev, size, mtime or xattrs (overlayfs's own left out) differ. dirfd
  // holds the entry.
  Result<bool> MetaDiffers(int dirfd, const std::string& rel, const Entry& e, Ino low,
                           const NodeAttr& la);

  const MergedView& lower_;
  const UpperOptions& options_;
};

Result<UpperWalker::Entry> UpperWalker::OpenEntry(int dirfd, const std::string& rel,
                                                  const std::string& name) {
  Entry e;
  e.name = name;
  if (::fstatat(dirfd, name.c_str(), &e.st, AT_SYMLINK_NOFOLLOW) != 0) {
    return Status::FromErrno(errno, Where(rel));
  }
  if (S_ISCHR(e.st.st_mode) && e.st.st_rdev == makedev(0, 0)) {
    e.whiteout = true;
    return e;
  }
  if (!S_ISREG(e.st.st_mode) && !S_ISDIR(e.st.st_mode)) return e;
  int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  if (S_ISDIR(e.st.st_mode)) flags |= O_DIRECTORY;
  e.fd.Reset(::openat(dirfd, name.c_str(), flags));
  if (e.fd.get() < 0) return Status::FromErrno(errno, Where(rel));
  if (S_ISDIR(e.st.st_mode)) {
    ASSIGN_OR_RETURN(auto redirect, OverlayXattr(e.fd.get(), "redirect"));
    if (redirect) return Refuse();
  } else {
    ASSIGN_OR_RETURN(auto metacopy, OverlayXattr(e.fd.get(), "metacopy"));
    if (metacopy) return Refuse();
    if (e.st.st_size == 0) {
      ASSIGN_OR_RETURN(auto whiteout, OverlayXattr(e.fd.get(), "whiteout"));
      e.whiteout = whiteout.has_value();
    }
  }
  return e;
}

Result<bool> UpperWalker::MetaDiffers(int dirfd, const std::string& rel, const Entry& e,
                                       Ino low, const NodeAttr& la) {
  if (!SameMeta(AttrOfStat(e.st), la)) return true;
  ASSIGN_OR_RETURN(auto mine,
                   ReadXattrs("/proc/self/fd/" + std::to_string(dirfd) + "/" + e.name, Where(rel)));
  ASSIGN_OR_RETURN(auto theirs, ViewXattrs(lower_, low));
  return mine != theirs;
}

Result<bool> UpperWalker::WalkDir(int dirfd, const std::string& rel, Ino lower) {
  ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(dirfd, Where(rel)));
  bool any = false;
  for (const std::string& name : names) {
    const std::string child = Join(rel, name);
    if (!options_.ignore.empty() && options_.ignore.count("/" + child) != 0) continue;
    ASSIGN_OR_RETURN(Entry e, OpenEntry(dirfd, child, name));
    Ino low = 0;
    NodeAttr la;
    if (lower != 0) {
      auto found = lower_.Lookup(lower, name);
      if (found.ok()) {
        low = *found;
        ASSIGN_OR_RETURN(la, lower_.Attr(low));
      } else if (!found.status().IsNotFound()) {
        return found.status().WithContext(child);
      }
    }
    const uint32_t mode = e.st.st_mode;
    if (e.whiteout) {
      if (low != 0) {
        Record(Change::kDeleted, child, 0);
        any = true;
      }
      continue;
    }
    if (low == 0) {
      Record(Change::kAdded, child, mode);
      if (S_ISDIR(mode)) RETURN_IF_ERROR(WalkDir(e.fd.get(), child, 0).status());
      any = true;
      continue;
    }
    if ((mode & S_IFMT) != (la.mode & S_IFMT)) {
      Record(Change::kChanged, child, mode, S_ISDIR(mode));
      if (S_ISDIR(mode)) RETURN_IF_ERROR(WalkDir(e.fd.get(), child, 0).status());
      any = true;
      continue;
    }
    if (S_ISDIR(mode)) {
      ASSIGN_OR_RETURN(auto opaque, OverlayXattr(e.fd.get(), "opaque"));
      if (opaque && *opaque == "y") {
        Record(Change::kChanged, child, mode, true);
        // Lower children the opaque dir does not re-create are deleted.
        ASSIGN_OR_RETURN(std::vector<std::string> upper_names, ListDir(e.fd.get(), Where(child)));
        std::set<std::string> recreated;
        for (const std::string& n : upper_names) {
          ASSIGN_OR_RETURN(Entry inner, OpenEntry(e.fd.get(), Join(child, n), n));
          if (!inner.whiteout) recreated.insert(n);
        }
        RETURN_IF_ERROR(lower_.ForEachChild(low, [&](std::string_view n, Ino) {
          if (!recreated.count(std::string(n))) {
            Record(Change::kDeleted, Join(child, n), 0, false, false);
          }
          return true;
        }));
        RETURN_IF_ERROR(WalkDir(e.fd.get(), child, 0).status());
        any = true;
        continue;
      }
      ASSIGN_OR_RETURN(bool inner, WalkDir(e.fd.get(), child, low));
      ASSIGN_OR_RETURN(bool own, MetaDiffers(dirfd, child, e, low, la));
      if (inner || own) {
        Record(Change::kChanged, child, mode);
        any = true;
      }
      continue;
    }
    ASSIGN_OR_RETURN(bool differs, MetaDiffers(dirfd, child, e, low, la));
    if (!differs && S_ISLNK(mode)) {
      std::string target(static_cast<size_t>(e.st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
      if (n < 0) return Status::FromErrno(errno, Where(child));
      target.resize(static_cast<size_t>(n));
      ASSIGN_OR_RETURN(std::string_view want, lower_.ReadLink(low));
      differs = target != want;
    }
    if (!differs && S_ISREG(mode) && e.st.st_size > 0) {
      std::vector<uint8_t> mine(kCompareBlock), theirs(kCompareBlock);
      const uint64_t size = static_cast<uint64_t>(e.st.st_size);
      for (uint64_t off = 0; off < size && !differs;) {
        const size_t want = static_cast<size_t>(std::min<uint64_t>(kCompareBlock, size - off));
        ssize_t got = ::pread(e.fd.get(), mine.data(), want, static_cast<off_t>(off));
        if (got < 0) {
          if (errno == EINTR) continue;
          return Status::FromErrno(errno, Where(child));
        }
        if (got == 0) {
          differs = true;  // shrank while we read: not the lower file
          break;
        }
        size_t n = static_cast<size_t>(got);
        ASSIGN_OR_RETURN(size_t lower_n,
                         lower_.ReadFile(low, off, std::span<uint8_t>(theirs.data(), n)));
        differs = lower_n != n || std::memcmp(mine.data(), theirs.data(), n) != 0;
        off += n;
      }
    }
    if (differs) {
      Record(Change::kChanged, child, mode);
      any = true;
    }
  }
  return any;
}

// ---------------------------------------------------------------------------------------
// Image against image.

enum class Same { kYes, kNo, kUnknown };

// Whether two files' chunk lists prove their bytes equal or different without reading.
Same CompareChunks(std::span<const index::ChunkRef> a, std::span<const index::ChunkRef> b) {
  if (a.empty() || a.size() != b.size()) return Same::kUnknown;
  bool all_same = true;
  for (size_t i = 0; i < a.size(); ++i) {
    const index::ChunkRef& x = a[i];
    const index::ChunkRef& y = b[i];
    if (!x.has_digest || !y.has_digest || x.chunk_digest != y.chunk_digest ||
        x.file_offset != y.file_offset || x.length != y.length) {
      return Same::kUnknown;
    }
    if (!x.chunk_digest &&
        (x.inner_offset != y.inner_offset || x.span_length != y.span_length)) {
      return Same::kUnknown;
    }
    if (x.sha256 != y.sha256) {
      // A chunk digest covers exactly these bytes; a span digest covers more than them.
      if (!x.chunk_digest) return Same::kUnknown;
      all_same = false;
    }
  }
  return all_same ? Same::kYes : Same::kNo;
}

class ImageWalker {
 public:
  ImageWalker(const MergedView& from, const MergedView& to) : from_(from), to_(to) {}

  // Compares directory a of `from` with directory b of `to` (a == 0: every entry added).
  Result<bool> WalkDir(Ino a, Ino b, const std::string& rel);

  std::vector<Change> changes;

 private:
  Result<bool> Differs(Ino a, const NodeAttr& aa, Ino b, const NodeAttr& ba);
  Result<std::span<const index::ChunkRef>> ChunksOf(const MergedView& view, Ino ino) {
    ASSIGN_OR_RETURN(MergedView::Origin o, view.OriginOf(ino));
    return view.layers()[o.layer].index->Chunks(o.node);
  }

  const MergedView& from_;
  const MergedView& to_;
};

Result<bool> ImageWalker::Differs(Ino a, const NodeAttr& aa, Ino b, const NodeAttr& ba) {
  // The same entry of the same layer blob (images sharing base layers): nothing to compare.
  ASSIGN_OR_RETURN(MergedView::Origin ao, from_.OriginOf(a));
  ASSIGN_OR_RETURN(MergedView::Origin bo, to_.OriginOf(b));
  const std::string& a_layer = from_.layers()[ao.layer].index->layer_digest();
  if (!a_layer.empty() && ao.node == bo.node &&
      a_layer == to_.layers()[bo.layer].index->layer_digest()) {
    return false;
  }
  if (!SameMeta(aa, ba)) return true;
  ASSIGN_OR_RETURN(bool xattrs_differ, ViewXattrsDiffer(from_, a, to_, b));
  if (xattrs_differ) return true;
  if (S_ISLNK(aa.mode)) {
    ASSIGN_OR_RETURN(std::string_view x, from_.ReadLink(a));
    ASSIGN_OR_RETURN(std::string_view y, to_.ReadLink(b));
    return x != y;
  }
  if (!S_ISREG(aa.mode) || aa.size == 0) return false;
  ASSIGN_OR_RETURN(auto ac, ChunksOf(from_, a));
  ASSIGN_OR_RETURN(auto bc, ChunksOf(to_, b));
  Same same = CompareChunks(ac, bc);
  if (same != Same::kUnknown) return same == Same::kNo;
  std::vector<uint8_t> x(kCompareBlock), y(kCompareBlock);
  for (uint64_t off = 0; off < aa.size;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kCompareBlock, aa.size - off));
    ASSIGN_OR_RETURN(size_t xn, from_.ReadFile(a, off, std::span<uint8_t>(x.data(), want)));
    ASSIGN_OR_RETURN(size_t yn, to_.ReadFile(b, off, std::span<uint8_t>(y.data(), want)));
    if (xn != yn || std::memcmp(x.data(), y.data(), xn) != 0) return true;
    if (xn == 0) break;
    off += xn;
  }
  return false;
}

Result<bool> ImageWalker::WalkDir(Ino a, Ino b, const std::string& rel) {
  std::vector<std::pair<std::string, Ino>> from_children, to_children;
  if (a != 0) {
    RETURN_IF_ERROR(from_.ForEachChild(a, [&](std::string_view n, Ino i) {
      from_children.emplace_back(std::string(n), i);
      return true;
    }));
  }
  RETURN_IF_ERROR(to_.ForEachChild(b, [&](std::string_view n, Ino i) {
    to_children.emplace_back(std::string(n), i);
    return true;
  }));
  bool any = false;
  size_t i = 0, j = 0;
  while (i < from_children.size() || j < to_children.size()) {
    const bool take_from = j == to_children.size() ||
                           (i < from_children.size() && from_children[i].first < to_children[j].first);
    const bool take_to = i == from_children.size() ||
                         (j < to_children.size() && to_children[j].first < from_children[i].first);
    if (take_from) {
      changes.push_back({Change::kDeleted, "/" + Join(rel, from_children[i].first), "", false, 0});
      any = true;
      ++i;
      continue;
    }
    const std::string child = Join(rel, to_children[j].first);
    const Ino bi = to_children[j].second;
    ASSIGN_OR_RETURN(NodeAttr ba, to_.Attr(bi));
    if (take_to) {
      changes.push_back({Change::kAdded, "/" + child, "", false, ba.mode});
      if (S_ISDIR(ba.mode)) RETURN_IF_ERROR(WalkDir(0, bi, child).status());
      any = true;
      ++j;
      continue;
    }
    const Ino ai = from_children[i].second;
    ++i;
    ++j;
    ASSIGN_OR_RETURN(NodeAttr aa, from_.Attr(ai));
    if ((aa.mode & S_IFMT) != (ba.mode & S_IFMT)) {
      changes.push_back({Change::kChanged, "/" + child, "", S_ISDIR(ba.mode), ba.mode});
      if (S_ISDIR(ba.mode)) RETURN_IF_ERROR(WalkDir(0, bi, child).status());
      any = true;
      continue;
    }
    bool differs = false;
    if (S_ISDIR(ba.mode)) {
      ASSIGN_OR_RETURN(bool inner, WalkDir(ai, bi, child));
      differs = inner || !SameMeta(aa, ba);
      if (!differs) {
        ASSIGN_OR_RETURN(differs, ViewXattrsDiffer(from_, ai, to_, bi));
      }
    } else {
      ASSIGN_OR_RETURN(differs, Differs(ai, aa, bi, ba));
    }
    if (differs) {
      changes.push_back({Change::kChanged, "/" + child, "", false, ba.mode});
      any = true;
    }
  }
  return any;
}

void SortChanges(std::vector<Change>& changes) {
  std::sort(changes.begin(), changes.end(),
            [](const Change& x, const Change& y) { return x.path < y.path; });
}

}  // namespace

char KindLetter(Change::Kind kind) {
  switch (kind) {
    case Change::kAdded: return 'A';
    case Change::kChanged: return 'C';
    case Change::kDeleted: return 'D';
  }
  return '?';
}

std::string FormatChanges(const std::vector<Change>& changes) {
  std::string out;
  for (const Change& c : changes) {
    out += KindLetter(c.kind);
    out += ' ';
    out += c.path;
    out += '\n';
  }
  return out;
}

Result<std::vector<Change>> ComputeUpperChanges(int upper_dirfd, const MergedView& lower,
                                                const UpperOptions& options) {
  UpperWalker walker(lower, options);
  RETURN_IF_ERROR(walker.WalkDir(upper_dirfd, "", index::kRootIno).status());
  SortChanges(walker.changes);
  return std::move(walker.changes);
}

Result<std::vector<Change>> ComputeImageChanges(const MergedView& from, const MergedView& to) {
  ImageWalker walker(from, to);
  RETURN_IF_ERROR(walker.WalkDir(index::kRootIno, index::kRootIno, "").status());
  SortChanges(walker.changes);
  return std::move(walker.changes);
}

}  // namespace imagefs::fs
