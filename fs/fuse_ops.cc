// Thin libfuse callbacks: unpack the request, call fs::Filesystem, reply exactly once.
// Errors become errnos in one place (ReplyError -> ReplyErrno -> Status::ToErrno).

#include "fs/fuse_ops.h"

#include <cerrno>
#include <cstring>
#include <vector>

#include "fs/session.h"
#include "util/log.h"

namespace imagefs::fs {
namespace {

FuseContext& Ctx(fuse_req_t req) { return *static_cast<FuseContext*>(fuse_req_userdata(req)); }
const Filesystem& Fs(fuse_req_t req) { return *Ctx(req).filesystem; }

void ReplyError(fuse_req_t req, const Status& status) { fuse_reply_err(req, ReplyErrno(status)); }

fuse_entry_param MakeEntry(fuse_req_t req, const Entry& entry) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof e);
  e.ino = entry.ino;
  e.generation = 1;
  e.attr = entry.attr;
  e.attr_timeout = Ctx(req).attr_timeout_sec;
  e.entry_timeout = Ctx(req).entry_timeout_sec;
  return e;
}

void OnInit(void* userdata, fuse_conn_info* conn) {
  auto* ctx = static_cast<FuseContext*>(userdata);
  conn->max_read = ctx->max_read;
  // The lower tree never changes: let the kernel cache symlink targets and directory
  // listings too (file pages are kept by keep_cache at open).
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  // No write-back, no locks served by us (the kernel's local locks suffice read-only).
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto entry = Fs(req).Lookup(parent, name);
  if (entry.ok()) {
    fuse_entry_param e = MakeEntry(req, *entry);
    fuse_reply_entry(req, &e);
  } else if (ReplyErrno(entry.status()) == ENOENT) {
    // A negative entry (ino 0) the kernel caches as long as a positive one.
    fuse_entry_param e;
    std::memset(&e, 0, sizeof e);
    e.entry_timeout = Ctx(req).entry_timeout_sec;
    fuse_reply_entry(req, &e);
  } else {
    ReplyError(req, entry.status());
  }
}

// Inode numbers are the view's, valid for the mount's life: nothing to count or free.
void OnForget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }
void OnForgetMulti(fuse_req_t req, size_t, fuse_forget_data*) { fuse_reply_none(req); }

void OnGetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  auto st = Fs(req).GetAttr(ino);
  if (!st.ok()) return ReplyError(req, st.status());
  fuse_reply_attr(req, &*st, Ctx(req).attr_timeout_sec);
}

void OnReadLink(fuse_req_t req, fuse_ino_t ino) {
  auto target = Fs(req).ReadLink(ino);
  if (!target.ok()) return ReplyError(req, target.status());
  fuse_reply_readlink(req, std::string(*target).c_str());
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Status st = Fs(req).Open(ino, fi->flags);
  if (!st.ok()) return ReplyError(req, st);
  fi->keep_cache = 1;  // immutable: pages read once stay valid across opens
  fi->noflush = 1;
  fuse_reply_open(req, fi);
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < size) buffer.resize(size);
  auto n = Fs(req).Read(ino, static_cast<uint64_t>(off), std::span<uint8_t>(buffer.data(), size));
  if (!n.ok()) {
    // Log once, where we give up: the reader below already named the chunk.
    LOG(kError) << "read of inode " << ino << " [" << off << ", +" << size
                << ") failed: " << n.status().message();
    return ReplyError(req, n.status());
  }
  fuse_reply_buf(req, reinterpret_cast<const char*>(buffer.data()), *n);
}

void OnOpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto dir = Fs(req).OpenDir(ino);
  if (!dir.ok()) return ReplyError(req, dir.status());
  fi->fh = reinterpret_cast<uint64_t>(dir->release());  // owned until releasedir
  fi->keep_cache = 1;
  fi->cache_readdir = 1;
  if (fuse_reply_open(req, fi) != 0) delete reinterpret_cast<DirHandle*>(fi->fh);
}

void ReadDirCommon(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  const auto* dir = reinterpret_cast<const DirHandle*>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  Status failed = Status::Ok();
  Fs(req).ReadDir(*dir, static_cast<uint64_t>(off), [&](const DirHandle::Item& item,
                                                         uint64_t next) {
    size_t need;
    if (plus) {
      Entry entry;
      entry.ino = item.ino;
      auto attr = Fs(req).GetAttr(item.ino);
      if (!attr.ok()) {
        failed = attr.status();
        return false;
      }
      entry.attr = *attr;
      fuse_entry_param e = MakeEntry(req, entry);
      need = fuse_add_direntry_plus(req, buf.data() + used, size - used, item.name.c_str(), &e,
                                    static_cast<off_t>(next));
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof st);
      st.st_ino = item.ino;
      st.st_mode = item.mode;
      need = fuse_add_direntry(req, buf.data() + used, size - used, item.name.c_str(), &st,
                               static_cast<off_t>(next));
    }
    if (need > size - used) return false;  // full: the kernel asks again from `next`
    used += need;
    return true;
  });
  if (!failed.ok() && used == 0) return ReplyError(req, failed);
  fuse_reply_buf(req, buf.data(), used);
}

void OnReadDir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  ReadDirCommon(req, size, off, fi, false);
}
void OnReadDirPlus(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  ReadDirCommon(req, size, off, fi, true);
}

void OnReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void OnStatFs(fuse_req_t req, fuse_ino_t) {
  struct statvfs s = Fs(req).StatFs();
  fuse_reply_statfs(req, &s);
}

// getxattr/listxattr: size 0 asks for the length, which is a fuse_reply_xattr.
void ReplyXattr(fuse_req_t req, const Result<XattrReply>& reply, size_t size) {
  if (!reply.ok()) return ReplyError(req, reply.status());
  if (size == 0) {
    fuse_reply_xattr(req, reply->size);
  } else {
    fuse_reply_buf(req, reply->data.data(), reply->data.size());
  }
}

void OnGetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  ReplyXattr(req, Fs(req).GetXattr(ino, name, size), size);
}
void OnListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  ReplyXattr(req, Fs(req).ListXattr(ino, size), size);
}

// Everything that would change the tree, until the writable upper dir lands.
void OnSetAttr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) {
  ReplyError(req, Filesystem::ReadOnly());
}
void OnMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) {
  ReplyError(req, Filesystem::ReadOnly());
}
void OnMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) {
  ReplyError(req, Filesystem::ReadOnly());
}
void OnUnlink(fuse_req_t req, fuse_ino_t, const char*) { ReplyError(req, Filesystem::ReadOnly()); }
void OnSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) {
  ReplyError(req, Filesystem::ReadOnly());
}
void OnRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  ReplyError(req, Filesystem::ReadOnly());
}
void OnLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) {
  ReplyError(req, Filesystem::ReadOnly());
}
void OnCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) {
  ReplyError(req, Filesystem::ReadOnly());
}
void OnSetXattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
  ReplyError(req, Filesystem::ReadOnly());
}

}  // namespace

fuse_lowlevel_ops MakeFuseOps() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = OnInit;
  ops.lookup = OnLookup;
  ops.forget = OnForget;
  ops.forget_multi = OnForgetMulti;
  ops.getattr = OnGetAttr;
  ops.readlink = OnReadLink;
  ops.open = OnOpen;
  ops.read = OnRead;
  ops.opendir = OnOpenDir;
  ops.readdir = OnReadDir;
  ops.readdirplus = OnReadDirPlus;
  ops.releasedir = OnReleaseDir;
  ops.statfs = OnStatFs;
  ops.getxattr = OnGetXattr;
  ops.listxattr = OnListXattr;
  ops.setattr = OnSetAttr;
  ops.mknod = OnMknod;
  ops.mkdir = OnMkdir;
  ops.unlink = OnUnlink;
  ops.rmdir = OnUnlink;
  ops.symlink = OnSymlink;
  ops.rename = OnRename;
  ops.link = OnLink;
  ops.create = OnCreate;
  ops.setxattr = OnSetXattr;
  ops.removexattr = OnUnlink;
  return ops;
}

}  // namespace imagefs::fs
