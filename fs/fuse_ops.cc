// Thin libfuse callbacks: unpack the request, call fs::Filesystem, reply exactly once.
// Errors become errnos in one place (ReplyError -> ReplyErrno -> Status::ToErrno). A
// read-only Filesystem answers EROFS to every write itself.

#include "fs/fuse_ops.h"

#include <cerrno>
#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "fs/kernel_shim.h"
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

// Whether the caller is outside group `gid` (neither its own nor a supplementary group;
// outside when the kernel will not say). Only asked for a set-gid file without
// group-execute, which is rare: fuse_req_getgroups reads /proc.
bool CallerOutsideGroup(fuse_req_t req, gid_t gid) {
  if (fuse_req_ctx(req)->gid == gid) return false;
  std::vector<gid_t> groups(64);
  int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
  if (n > static_cast<int>(groups.size())) {
    groups.resize(static_cast<size_t>(n));
    n = fuse_req_getgroups(req, n, groups.data());
  }
  for (int i = 0; i < n && i < static_cast<int>(groups.size()); ++i) {
    if (groups[static_cast<size_t>(i)] == gid) return false;
  }
  return true;
}

// The mode after the kill a WRITE, OPEN or truncate asks for (the caller lacks
// CAP_FSETID): set-gid without group-execute goes for a caller outside the group.
mode_t KilledMode(fuse_req_t req, const struct stat& st) {
  const mode_t mode = st.st_mode & 07777;
  const bool lock_marker = (mode & S_ISGID) && !(mode & S_IXGRP);
  return KillSuidSgid(mode, lock_marker && CallerOutsideGroup(req, st.st_gid));
}

// FUSE_HANDLE_KILLPRIV_V2 (fs/kernel_shim.h): the kernel leaves clearing set-uid/set-gid
// to the daemon and says when (a write, truncate or O_TRUNC open by a caller without
// CAP_FSETID; a chown). The daemon runs as root, so the upper file's own kernel would
// keep the bits on a write: clear them here, before the change, and drop the kernel's
// cached mode.
Status KillSuidSgidOf(fuse_req_t req, Ino ino, const FileHandle* fh) {
  auto entry = Fs(req).GetEntry(ino, fh);
  if (!entry.ok()) return entry.status();
  const mode_t mode = entry->attr.st_mode & 07777;
  const mode_t killed = KilledMode(req, entry->attr);
  if (killed == mode) return Status::Ok();
  SetAttrRequest r;
  r.set_mode = true;
  r.mode = killed;
  auto st = Fs(req).SetAttr(ino, r, fh, CallerOf(req));
  if (!st.ok()) return st.status();
  if (fuse_session* se = Ctx(req).session; se != nullptr) {
    (void)fuse_lowlevel_notify_inval_inode(se, ino, -1, 0);
  }
  return Status::Ok();
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
  // Directories without OPENDIR/RELEASEDIR (two requests per directory of a walk), when
  // the kernel can (OnOpenDir answers ENOSYS once; readdir stays cached).
  ctx->stateless_dirs = ctx->stateless_dirs_wanted && (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT);
  // Write-back cache on writable mounts: the kernel gathers small writes (tar's 10 KiB
  // blocks) into page-sized and larger WRITEs, keeps size and mtime itself, and writes the
  // pages back at the latest on close(2) and fsync(2) (so what a kill -9 of the daemon can
  // lose is what an open file had not yet flushed, as a local filesystem loses unsynced
  // pages on a crash). It may READ through a handle opened write-only, and it does
  // O_APPEND itself: ctx->writeback makes OnOpen/OnCreate open the upper file so.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  if (ctx->filesystem->writable() && ctx->writeback_cache) want(FUSE_CAP_WRITEBACK_CACHE);
  ctx->writeback = (conn->want & FUSE_CAP_WRITEBACK_CACHE) != 0;
  // No handle_killpriv (v1): the kernel would then clear set-uid/set-gid only through
  // the daemon. Writable mounts ask for FUSE_HANDLE_KILLPRIV_V2 instead, through the shim
  // (libfuse 3.14 has no capability for it): see KillSuidSgidOf.
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
  // FATTR_KILL_SUIDGID (libfuse 3.14 passes it as FUSE_SET_ATTR_KILL_SUID) under
  // FUSE_HANDLE_KILLPRIV_V2: a chown (any caller: set-gid without group-execute stays, as
  // the VFS keeps it for a caller in the group or with CAP_FSETID, and a chown's caller is
  // one of them), or a truncate by a caller without CAP_FSETID.
  if (to_set & FUSE_SET_ATTR_KILL_SUID) {
    auto entry = Fs(req).GetEntry(ino, Handle(fi));
    if (!entry.ok()) return ReplyError(req, entry.status());
    struct stat now = entry->attr;
    if (r.set_mode) now.st_mode = r.mode;
    const mode_t mode = now.st_mode & 07777;
    const mode_t killed =
        (r.set_uid || r.set_gid) ? KillSuidSgid(mode, false) : KilledMode(req, now);
    if (killed != mode) {
      r.set_mode = true;
      r.mode = killed;
    }
  }
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
  if (CurrentRequestKillsSuidSgid()) {  // O_TRUNC by a caller without CAP_FSETID
    Status killed = KillSuidSgidOf(req, ino, fh->get());
    if (!killed.ok()) {
      Fs(req).Release(std::move(*fh));
      return ReplyError(req, killed);
    }
  }
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

void OnWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info* fi) {
  if (CurrentRequestKillsSuidSgid()) {
    Status killed = KillSuidSgidOf(req, ino, Handle(fi));
    if (!killed.ok()) return ReplyError(req, killed);
  }
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
  if (Ctx(req).stateless_dirs) {
    // No OPENDIR/RELEASEDIR per directory from now on (FUSE_NO_OPENDIR_SUPPORT): the
    // kernel opens directories itself with keep_cache and cache_readdir, as below, and
    // READDIRs come without a handle (ReadDirStateless).
    fuse_reply_err(req, ENOSYS);
    return;
  }
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

// Fills one READDIR(PLUS) reply of at most `size` bytes from `each` (which calls its
// argument per entry in order with the entry's offset cookie, until it returns false).
template <typename ForEach>
void ReplyDirEntries(fuse_req_t req, fuse_ino_t ino, size_t size, bool plus, const ForEach& each) {
  std::vector<char> buf(size);
  size_t used = 0;
  Filesystem& fs = Fs(req);
  each([&](const DirHandle::Item& item, uint64_t next) {
    size_t need;
    if (plus) {
      // Every entry but "." and ".." counts as a lookup in the kernel: take one, and give
      // it back when the entry does not fit. A name gone since the listing is skipped.
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

// Stateless offsets: a READDIR may find its pass's snapshot gone (DirListings pushed it
// out, or another reader restarted the directory) and continue in a new one, so an offset
// cannot be a position in one listing (a name removed in between, as `rm -r` does, would
// shift the rest and skip one). The cookie is a hash of the name instead, and entries go
// out in cookie order: a cookie keeps its place whatever else comes and goes (ext4's hash
// cookies do the same). "." is 1, ".." 2, names 3 to 2^63-1 (loff_t). Two names with one
// 63-bit hash could lose one at a reply boundary; at 2^-63 per pair that is accepted.
uint64_t DirCookie(std::string_view name) {
  if (name == ".") return 1;
  if (name == "..") return 2;
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  h &= (1ull << 63) - 1;
  return h < 3 ? h + 3 : h;
}

}  // namespace

DirListings::Listing::Listing(Filesystem& f, Ino i, std::unique_ptr<DirHandle> d)
    : fs(f), ino(i), dir(std::move(d)) {
  order.reserve(dir->items().size());
  for (const DirHandle::Item& item : dir->items()) order.emplace_back(DirCookie(item.name), &item);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
}

DirListings::Listing::~Listing() { fs.ReleaseDir(std::move(dir)); }

std::shared_ptr<DirListings::Listing> DirListings::Find(Ino ino) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = recent_.rbegin(); it != recent_.rend(); ++it) {
    if ((*it)->ino == ino) return *it;
  }
  return nullptr;
}

void DirListings::Put(std::shared_ptr<Listing> listing) {
  std::vector<std::shared_ptr<Listing>> gone;  // released outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = recent_.begin(); it != recent_.end();) {
    if ((*it)->ino == listing->ino) {
      gone.push_back(std::move(*it));
      it = recent_.erase(it);
    } else {
      ++it;
    }
  }
  recent_.push_back(std::move(listing));
  if (recent_.size() > kMax) {
    gone.push_back(std::move(recent_.front()));
    recent_.erase(recent_.begin());
  }
}

void DirListings::Drop(const Listing* listing) {
  std::shared_ptr<Listing> gone;  // released outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = recent_.begin(); it != recent_.end(); ++it) {
    if (it->get() == listing) {
      gone = std::move(*it);
      recent_.erase(it);
      return;
    }
  }
}

namespace {

void ReadDirStateless(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  FuseContext& ctx = Ctx(req);  // req is gone once replied to
  std::shared_ptr<DirListings::Listing> listing =
      off == 0 ? nullptr : ctx.listings.Find(ino);
  if (listing == nullptr) {
    auto dir = ctx.filesystem->OpenDir(ino);
    if (!dir.ok()) return ReplyError(req, dir.status());
    listing = std::make_shared<DirListings::Listing>(*ctx.filesystem, ino, std::move(*dir));
    ctx.listings.Put(listing);
  }
  const auto& order = listing->order;
  bool at_end = true;
  ReplyDirEntries(req, ino, size, plus, [&](const auto& emit) {
    auto it = std::upper_bound(order.begin(), order.end(), static_cast<uint64_t>(off),
                               [](uint64_t o, const auto& e) { return o < e.first; });
    for (; it != order.end(); ++it) {
      if (!emit(*it->second, it->first)) {
        at_end = false;
        return;
      }
    }
  });
  if (at_end) ctx.listings.Drop(listing.get());
}

void ReadDirCommon(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                   bool plus) {
  const auto* dir = reinterpret_cast<const DirHandle*>(fi->fh);
  if (dir == nullptr) return ReadDirStateless(req, ino, size, off, plus);
  ReplyDirEntries(req, ino, size, plus, [&](const auto& emit) {
    Fs(req).ReadDir(*dir, static_cast<uint64_t>(off), emit);
  });
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
  const uint64_t getxattrs = ++Ctx(req).getxattrs;
  // Debug, not listed: the node table's size, for leak checks (tests/e2e/stress_test), and
  // the GETXATTR requests so far (tests/e2e/upper_test).
  const bool nodes = std::string_view(name) == kNodesXattr;
  if (ino == FUSE_ROOT_ID && (nodes || std::string_view(name) == kGetxattrCountXattr)) {
    const std::string count = std::to_string(nodes ? Fs(req).NodeCount() : getxattrs);
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
