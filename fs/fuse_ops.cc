// Thin libfuse callbacks: unpack the request, call fs::Filesystem, reply exactly once.
// Errors become errnos in one place (ReplyError -> ReplyErrno -> Status::ToErrno). A
// read-only Filesystem answers EROFS to every write itself.

#include "fs/fuse_ops.h"

#include <cerrno>
#include <fcntl.h>

#include <cstring>
#include <vector>

#include "fs/session.h"
#include "util/log.h"

namespace imagefs::fs {
namespace {

FuseContext& Ctx(fuse_req_t req) { return *static_cast<FuseContext*>(fuse_req_userdata(req)); }
Filesystem& Fs(fuse_req_t req) { return *Ctx(req).filesystem; }

void ReplyError(fuse_req_t req, const Status& status) { fuse_reply_err(req, ReplyErrno(status)); }
void ReplyStatus(fuse_req_t req, const Status& status) {
  fuse_reply_err(req, status.ok() ? 0 : ReplyErrno(status));
}

Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  return Caller{c->uid, c->gid};
}

// Entries and attributes are cached long unless Filesystem says a node may change behind
// the kernel's back (Entry::cacheable; docs/architecture.md, "Kernel caching").
double Timeout(const Entry& entry, double sec) { return entry.cacheable ? sec : 0; }

fuse_entry_param MakeEntry(fuse_req_t req, const Entry& entry) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof e);
  e.ino = entry.ino;
  e.generation = 1;
  e.attr = entry.attr;
  e.attr_timeout = Timeout(entry, Ctx(req).attr_timeout_sec);
  e.entry_timeout = Timeout(entry, Ctx(req).entry_timeout_sec);
  return e;
}

void ReplyEntry(fuse_req_t req, const Result<Entry>& entry) {
  if (!entry.ok()) return ReplyError(req, entry.status());
  fuse_entry_param e = MakeEntry(req, *entry);
  if (fuse_reply_entry(req, &e) != 0) Fs(req).Forget(entry->ino, 1);  // the kernel never got it
}

FileHandle* Handle(fuse_file_info* fi) {
  return fi == nullptr ? nullptr : reinterpret_cast<FileHandle*>(fi->fh);
}

void OnInit(void* userdata, fuse_conn_info* conn) {
  auto* ctx = static_cast<FuseContext*>(userdata);
  conn->max_read = ctx->max_read;
  auto want = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  // The lower tree never changes: let the kernel cache symlink targets (read-only mounts)
  // and use readdirplus. Lookups and readdirs in one directory may run in parallel
  // (Filesystem is thread-safe).
  if (!ctx->filesystem->writable()) want(FUSE_CAP_CACHE_SYMLINKS);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_PARALLEL_DIROPS);
  // Write-back cache on writable mounts: the kernel gathers small writes (tar's 10 KiB
  // blocks) into page-sized and larger WRITEs, keeps size and mtime itself, and writes the
  // pages back at the latest on close(2) and fsync(2) (so what a kill -9 of the daemon can
  // lose is what an open file had not yet flushed, as a local filesystem loses unsynced
  // pages on a crash). It may READ through a handle opened write-only, and it does
  // O_APPEND itself: ctx->writeback makes OnOpen/OnCreate open the upper file so.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  if (ctx->filesystem->writable() && ctx->writeback_cache) want(FUSE_CAP_WRITEBACK_CACHE);
  ctx->writeback = (conn->want & FUSE_CAP_WRITEBACK_CACHE) != 0;
  // No handle_killpriv: the kernel clears set-uid/set-gid itself with a setattr before a
  // write, truncate or chown by a caller without CAP_FSETID, as on a local filesystem.
  conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
}

// With the write-back cache the kernel reads pages through any handle (a partial page
// write) and places every write itself, O_APPEND ones included: the upper file is opened
// read-write and without O_APPEND (pwrite on an O_APPEND fd ignores the offset).
int UpperOpenFlags(fuse_req_t req, int flags) {
  if (!Ctx(req).writeback) return flags;
  if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
  return flags & ~O_APPEND;
}

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto entry = Fs(req).Lookup(parent, name);
  if (entry.ok()) {
    ReplyEntry(req, entry);
  } else if (ReplyErrno(entry.status()) == ENOENT) {
    // A negative entry (ino 0), cached as long as a lower one: every later creation of the
    // name goes through the kernel, which drops it.
    fuse_entry_param e;
    std::memset(&e, 0, sizeof e);
    e.entry_timeout = Ctx(req).entry_timeout_sec;
    fuse_reply_entry(req, &e);
  } else {
    ReplyError(req, entry.status());
  }
}

void OnForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Fs(req).Forget(ino, nlookup);
  fuse_reply_none(req);
}
void OnForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) Fs(req).Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void OnGetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto entry = Fs(req).GetEntry(ino, Handle(fi));
  if (!entry.ok()) return ReplyError(req, entry.status());
  fuse_reply_attr(req, &entry->attr, Timeout(*entry, Ctx(req).attr_timeout_sec));
}

void OnSetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  SetAttrRequest r;
  r.set_mode = to_set & FUSE_SET_ATTR_MODE;
  r.set_uid = to_set & FUSE_SET_ATTR_UID;
  r.set_gid = to_set & FUSE_SET_ATTR_GID;
  r.set_size = to_set & FUSE_SET_ATTR_SIZE;
  r.set_atime = to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW);
  r.set_mtime = to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW);
  r.atime_now = to_set & FUSE_SET_ATTR_ATIME_NOW;
  r.mtime_now = to_set & FUSE_SET_ATTR_MTIME_NOW;
  r.mode = attr->st_mode;
  r.uid = attr->st_uid;
  r.gid = attr->st_gid;
  r.size = attr->st_size;
  r.atime = attr->st_atim;
  r.mtime = attr->st_mtim;
  auto st = Fs(req).SetAttr(ino, r, Handle(fi), CallerOf(req));
  if (!st.ok()) return ReplyError(req, st.status());
  // SetAttr copied the node up: it changes only through the mount from now on.
  fuse_reply_attr(req, &*st, Ctx(req).attr_timeout_sec);
}

void OnReadLink(fuse_req_t req, fuse_ino_t ino) {
  auto target = Fs(req).ReadLink(ino);
  if (!target.ok()) return ReplyError(req, target.status());
  fuse_reply_readlink(req, target->c_str());
}

// Open file flags the kernel should know: pages of a lower file stay valid across opens;
// O_DIRECT opens bypass the page cache (direct_io). Pages of an upper file are dropped at
// open (it may have been copied up or truncated since they were read).
void SetOpenFlags(fuse_file_info* fi, const FileHandle& fh) {
  fi->fh = reinterpret_cast<uint64_t>(&fh);
  fi->keep_cache = fh.reads_lower() ? 1 : 0;
  fi->direct_io = (fi->flags & O_DIRECT) ? 1 : 0;
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto fh = Fs(req).Open(ino, UpperOpenFlags(req, fi->flags));
  if (!fh.ok() && ReplyErrno(fh.status()) == EACCES && UpperOpenFlags(req, fi->flags) != fi->flags) {
    // A daemon without root may not read a write-only file: the kernel's partial-page
    // reads through this handle then fail, its writes do not.
    fh = Fs(req).Open(ino, fi->flags & ~O_APPEND);
  }
  if (!fh.ok()) return ReplyError(req, fh.status());
  SetOpenFlags(fi, **fh);
  FileHandle* raw = fh->release();  // owned until release
  if (fuse_reply_open(req, fi) != 0) Fs(req).Release(std::unique_ptr<FileHandle>(raw));
}

void OnCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  auto created = Fs(req).Create(parent, name, mode, UpperOpenFlags(req, fi->flags), CallerOf(req));
  if (!created.ok()) return ReplyError(req, created.status());
  SetOpenFlags(fi, *created->handle);
  fuse_entry_param e = MakeEntry(req, created->entry);
  FileHandle* raw = created->handle.release();
  if (fuse_reply_create(req, &e, fi) != 0) {
    Fs(req).Release(std::unique_ptr<FileHandle>(raw));
    Fs(req).Forget(e.ino, 1);
  }
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < size) buffer.resize(size);
  auto n = Fs(req).Read(*Handle(fi), static_cast<uint64_t>(off),
                        std::span<uint8_t>(buffer.data(), size));
  if (!n.ok()) {
    // Log once, where we give up: the reader below already named the chunk.
    LOG(kError) << "read of inode " << ino << " [" << off << ", +" << size
                << ") failed: " << n.status().message();
    return ReplyError(req, n.status());
  }
  fuse_reply_buf(req, reinterpret_cast<const char*>(buffer.data()), *n);
}

void OnWrite(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
             fuse_file_info* fi) {
  auto n = Fs(req).Write(*Handle(fi), static_cast<uint64_t>(off),
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(buf), size));
  if (!n.ok()) return ReplyError(req, n.status());
  fuse_reply_write(req, *n);
}

void OnRelease(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Fs(req).Release(std::unique_ptr<FileHandle>(Handle(fi)));
  fuse_reply_err(req, 0);
}

void OnFsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  ReplyStatus(req, Fs(req).Fsync(*Handle(fi), datasync != 0));
}

void OnFallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length,
                 fuse_file_info* fi) {
  ReplyStatus(req, Fs(req).Fallocate(*Handle(fi), mode, offset, length));
}

void OnOpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto dir = Fs(req).OpenDir(ino);
  if (!dir.ok()) return ReplyError(req, dir.status());
  fi->fh = reinterpret_cast<uint64_t>(dir->release());  // owned until releasedir
  // The kernel keeps the listing across opens. Every change to a directory goes through
  // the mount, and the kernel then drops its cached listing (fuse_dir_changed bumps the
  // directory's i_version, which the cache is checked against at offset 0).
  fi->keep_cache = 1;
  fi->cache_readdir = 1;
  if (fuse_reply_open(req, fi) != 0) {
    Fs(req).ReleaseDir(std::unique_ptr<DirHandle>(reinterpret_cast<DirHandle*>(fi->fh)));
  }
}

void ReadDirCommon(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                   bool plus) {
  const auto* dir = reinterpret_cast<const DirHandle*>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  Filesystem& fs = Fs(req);
  fs.ReadDir(*dir, static_cast<uint64_t>(off), [&](const DirHandle::Item& item, uint64_t next) {
    size_t need;
    if (plus) {
      // Every entry but "." and ".." counts as a lookup in the kernel: take one, and give
      // it back when the entry does not fit. A name gone since opendir is skipped.
      const bool dots = item.name == "." || item.name == "..";
      Result<Entry> entry = dots ? fs.GetEntry(item.ino) : fs.Lookup(ino, item.name);
      if (!entry.ok()) {
        if (!dots) return true;
        Entry bare;
        bare.ino = item.ino;
        bare.attr.st_ino = item.ino;
        bare.attr.st_mode = item.mode;
        entry = bare;
      }
      fuse_entry_param e = MakeEntry(req, *entry);
      need = fuse_add_direntry_plus(req, buf.data() + used, size - used, item.name.c_str(), &e,
                                    static_cast<off_t>(next));
      if (need > size - used) {
        if (!dots) fs.Forget(entry->ino, 1);
        return false;
      }
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof st);
      st.st_ino = item.ino;
      st.st_mode = item.mode;
      need = fuse_add_direntry(req, buf.data() + used, size - used, item.name.c_str(), &st,
                               static_cast<off_t>(next));
      if (need > size - used) return false;  // full: the kernel asks again from `next`
    }
    used += need;
    return true;
  });
  fuse_reply_buf(req, buf.data(), used);
}

void OnReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReadDirCommon(req, ino, size, off, fi, false);
}
void OnReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReadDirCommon(req, ino, size, off, fi, true);
}

void OnReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Fs(req).ReleaseDir(std::unique_ptr<DirHandle>(reinterpret_cast<DirHandle*>(fi->fh)));
  fuse_reply_err(req, 0);
}

void OnFsyncDir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  ReplyStatus(req, Fs(req).FsyncDir(ino, datasync != 0));
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
  if (ino == FUSE_ROOT_ID && std::string_view(name) == kNodesXattr) {
    // Debug: the node table's size, for leak checks (tests/e2e/stress_test). Not listed.
    const std::string count = std::to_string(Fs(req).NodeCount());
    if (size != 0 && size < count.size()) return ReplyError(req, Status::FromErrno(ERANGE, name));
    return ReplyXattr(req, XattrReply{count.size(), size == 0 ? "" : count}, size);
  }
  ReplyXattr(req, Fs(req).GetXattr(ino, name, size), size);
}
void OnListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  ReplyXattr(req, Fs(req).ListXattr(ino, size), size);
}
void OnSetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  ReplyStatus(req, Fs(req).SetXattr(ino, name, std::string_view(value, size), flags));
}
void OnRemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  ReplyStatus(req, Fs(req).RemoveXattr(ino, name));
}

void OnMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  ReplyEntry(req, Fs(req).Mknod(parent, name, mode, rdev, CallerOf(req)));
}
void OnMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  ReplyEntry(req, Fs(req).Mkdir(parent, name, mode, CallerOf(req)));
}
void OnSymlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  ReplyEntry(req, Fs(req).Symlink(parent, name, target, CallerOf(req)));
}
void OnLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  ReplyEntry(req, Fs(req).Link(ino, new_parent, new_name));
}
void OnUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReplyStatus(req, Fs(req).Unlink(parent, name));
}
void OnRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReplyStatus(req, Fs(req).Rmdir(parent, name));
}
void OnRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
              const char* new_name, unsigned flags) {
  ReplyStatus(req, Fs(req).Rename(parent, name, new_parent, new_name, flags));
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
  ops.setattr = OnSetAttr;
  ops.readlink = OnReadLink;
  ops.open = OnOpen;
  ops.create = OnCreate;
  ops.read = OnRead;
  ops.write = OnWrite;
  // No flush: the daemon holds nothing for close(2) to push (the kernel writes its cached
  // pages back before it would send FLUSH); left out, the first FLUSH gets ENOSYS and the
  // kernel stops sending one per close.
  ops.release = OnRelease;
  ops.fsync = OnFsync;
  ops.fallocate = OnFallocate;
  ops.opendir = OnOpenDir;
  ops.readdir = OnReadDir;
  ops.readdirplus = OnReadDirPlus;
  ops.releasedir = OnReleaseDir;
  ops.fsyncdir = OnFsyncDir;
  ops.statfs = OnStatFs;
  ops.getxattr = OnGetXattr;
  ops.listxattr = OnListXattr;
  ops.setxattr = OnSetXattr;
  ops.removexattr = OnRemoveXattr;
  ops.mknod = OnMknod;
  ops.mkdir = OnMkdir;
  ops.symlink = OnSymlink;
  ops.link = OnLink;
  ops.unlink = OnUnlink;
  ops.rmdir = OnRmdir;
  ops.rename = OnRename;
  return ops;
}

}  // namespace imagefs::fs
