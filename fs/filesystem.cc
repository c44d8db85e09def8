#include "fs/filesystem.h"

#include <fcntl.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstring>

namespace imagefs::fs {
namespace {

constexpr uint32_t kBlockSize = 4096;
constexpr uint32_t kNameMax = 255;

std::string InoText(Ino ino) { return "inode " + std::to_string(ino); }

}  // namespace

Filesystem::Filesystem(const index::MergedView& view) : view_(view) {
  // One pass over the tree: the parent of every directory (for ".."), and the bytes the
  // image holds (for statfs), each hard-linked inode counted once.
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

Status Filesystem::ReadOnly() {
  return Status::FromErrno(EROFS, "the image is mounted read-only");
}

Ino Filesystem::ParentOf(Ino dir) const {
  if (dir == 0 || dir > parent_.size() || parent_[dir - 1] == 0) return kRootIno;
  return parent_[dir - 1];
}

Result<Entry> Filesystem::Lookup(Ino parent, std::string_view name) const {
  if (name.size() > kNameMax) return Status::FromErrno(ENAMETOOLONG, std::string(name));
  ASSIGN_OR_RETURN(Ino ino, view_.Lookup(parent, name));
  Entry e;
  e.ino = ino;
  ASSIGN_OR_RETURN(e.attr, GetAttr(ino));
  return e;
}

Result<struct stat> Filesystem::GetAttr(Ino ino) const {
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(ino));
  struct stat st;
  std::memset(&st, 0, sizeof st);
  st.st_ino = ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
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

Result<std::unique_ptr<DirHandle>> Filesystem::OpenDir(Ino ino) const {
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(ino));
  if (!S_ISDIR(a.mode)) return Status::FromErrno(ENOTDIR, InoText(ino));
  std::vector<DirHandle::Item> items;
  items.push_back({".", ino, S_IFDIR});
  items.push_back({"..", ParentOf(ino), S_IFDIR});
  Status inner = Status::Ok();
  RETURN_IF_ERROR(view_.ForEachChild(ino, [&](std::string_view name, Ino child) {
    auto attr = view_.Attr(child);
    if (!attr.ok()) {
      inner = attr.status();
      return false;
    }
    items.push_back({std::string(name), child, attr->mode & S_IFMT});
    return true;
  }));
  RETURN_IF_ERROR(inner);
  return std::make_unique<DirHandle>(std::move(items));
}

void Filesystem::ReadDir(const DirHandle& dir, uint64_t offset, const DirFiller& fn) const {
  const auto& items = dir.items();
  for (uint64_t i = offset; i < items.size(); ++i) {
    if (!fn(items[i], i + 1)) return;
  }
}

Status Filesystem::Open(Ino ino, int flags) const {
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(ino));
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_TRUNC | O_APPEND | O_CREAT)) != 0) {
    return ReadOnly();
  }
  if (S_ISDIR(a.mode)) return Status::FromErrno(EISDIR, InoText(ino));
  return Status::Ok();
}

Result<size_t> Filesystem::Read(Ino ino, uint64_t offset, std::span<uint8_t> out) const {
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(ino));
  if (S_ISDIR(a.mode)) return Status::FromErrno(EISDIR, InoText(ino));
  if (!S_ISREG(a.mode)) return Status::FromErrno(EINVAL, InoText(ino) + " is not a regular file");
  if (offset >= a.size || out.empty()) return size_t{0};
  const uint64_t want = std::min<uint64_t>(out.size(), a.size - offset);
  size_t done = 0;
  while (done < want) {
    ASSIGN_OR_RETURN(size_t n, view_.ReadFile(ino, offset + done, out.subspan(done, want - done)));
    if (n == 0) break;
    done += n;
  }
  return done;
}

Result<std::string_view> Filesystem::ReadLink(Ino ino) const {
  ASSIGN_OR_RETURN(index::NodeAttr a, view_.Attr(ino));
  if (!S_ISLNK(a.mode)) return Status::FromErrno(EINVAL, InoText(ino) + " is not a symlink");
  return view_.ReadLink(ino);
}

Result<XattrReply> Filesystem::GetXattr(Ino ino, std::string_view name,
                                        size_t buffer_size) const {
  ASSIGN_OR_RETURN(std::vector<index::XattrView> xattrs, view_.Xattrs(ino));
  for (const index::XattrView& x : xattrs) {
    if (x.name != name) continue;
    XattrReply reply;
    reply.size = x.value.size();
    if (buffer_size == 0) return reply;
    if (buffer_size < x.value.size()) return Status::FromErrno(ERANGE, std::string(name));
    reply.data = std::string(x.value);
    return reply;
  }
  return Status::FromErrno(ENODATA, std::string(name));
}

Result<XattrReply> Filesystem::ListXattr(Ino ino, size_t buffer_size) const {
  ASSIGN_OR_RETURN(std::vector<index::XattrView> xattrs, view_.Xattrs(ino));
  std::string list;
  for (const index::XattrView& x : xattrs) {
    list += x.name;
    list.push_back('\0');
  }
  XattrReply reply;
  reply.size = list.size();
  if (buffer_size == 0) return reply;
  if (buffer_size < list.size()) return Status::FromErrno(ERANGE, InoText(ino) + " xattr list");
  reply.data = std::move(list);
  return reply;
}

struct statvfs Filesystem::StatFs() const {
  struct statvfs s;
  std::memset(&s, 0, sizeof s);
  s.f_bsize = kBlockSize;
  s.f_frsize = kBlockSize;
  s.f_blocks = (total_bytes_ + kBlockSize - 1) / kBlockSize;
  s.f_files = view_.InodeCount();
  s.f_namemax = kNameMax;
  s.f_flag = ST_RDONLY;
  return s;
}

}  // namespace imagefs::fs
