#pragma once

// fs::Filesystem: what a mounted image answers, as plain C++ calls returning Result, so the
// logic is tested without a mount. fs/fuse_ops.cc only unpacks FUSE requests, calls one
// method and replies once with the value or with Status::ToErrno().
//
// Two modes:
//   - read-only (Filesystem(view)): the image's merged lower tree (index::MergedView);
//     every call that would change the tree fails with EROFS;
//   - writable (Filesystem::OpenWritable(view, upper, work)): a union like kernel overlayfs
//     with one upper dir over the view. Every change lands in the upper dir (copy-up of
//     lower nodes built in the work dir and renamed into place; whiteouts are char devices
//     0/0, opaque dirs carry trusted.overlay.opaque=y), so kernel overlayfs reads the same
//     upper dir the same way. See docs/architecture.md, "fs/".
//
// Inode numbers: lower nodes keep the view's (dense, root = 1 = FUSE_ROOT_ID); upper-only
// nodes get numbers above MergedView::InodeCount(); a copy-up keeps the lower number. A
// node is kept while the kernel holds lookups on it (Lookup counts one, Forget drops
// them), a handle is open on it or an upper node names it as its parent; numbers are
// stable for the mount's life while known.
//
// Upper-dir access never builds full paths: calls go through *at() syscalls relative to
// O_PATH fds on upper nodes (or "/proc/self/fd/N" for the few calls without an *at()
// form), so trees deeper than PATH_MAX work and symlinks inside the upper dir are never
// followed. A node does not hold its fd for life (the kernel may remember millions of
// nodes, the fd limit is far lower): each upper node knows its parent node and name, and
// its fd is reopened from the parent's on demand (checked against the inode it was). Fds
// are held only by the root, by nodes that lost the name they were known by (an open
// unlinked file), and by a bounded cache of the most recently used nodes.
//
// Thread safety: every method may be called concurrently. Metadata calls take one mutex
// (mu_); Read/Write/Fsync on an open FileHandle do not. A DirHandle belongs to one open
// directory and the kernel serializes readdir on it.

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "index/merged_view.h"
#include "util/status.h"
#include "util/unique_fd.h"

namespace imagefs::fs {

using Ino = index::Ino;
inline constexpr Ino kRootIno = index::kRootIno;

// A lookup's answer: the node and its attributes (the kernel caches both). `cacheable`:
// every change to the name and the attributes goes through the mount (the kernel then
// updates or drops what it cached, or Filesystem tells it), so the kernel may cache them
// long; false only for a lower file with several names, which a copy-up through another
// name splits into a new node behind the kernel's back (it gets timeout 0).
struct Entry {
  Ino ino = 0;
  struct stat attr {};
  bool cacheable = false;
};

// getxattr/listxattr answer the way the syscalls do: asked with a buffer of size 0 they
// give only the size; a buffer too small is ERANGE.
// The debug attribute on a mount's root that reads Filesystem::NodeCount().
inline constexpr std::string_view kNodesXattr = "user.imagefs.debug.nodes";

struct XattrReply {
  size_t size = 0;    // bytes of the value (or of the "name\0name\0" list)
  std::string data;   // the bytes; empty when the caller asked for the size only
};

// Who asks (fuse_req_ctx): new nodes are owned by the caller, as on a local filesystem.
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
};

// setattr(2)-like request: only the fields whose flag is set change.
struct SetAttrRequest {
  bool set_mode = false, set_uid = false, set_gid = false, set_size = false;
  bool set_atime = false, set_mtime = false;  // with *_now: the current time
  bool atime_now = false, mtime_now = false;
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  off_t size = 0;
  struct timespec atime {}, mtime {};
};

// An open directory: its entries taken once at OpenDir, so readdir offsets stay valid
// however the caller pages through it. Offset k resumes after entry k - 1; "." and ".."
// come first. Hand it back to Filesystem::ReleaseDir.
class DirHandle {
 public:
  struct Item {
    std::string name;
    Ino ino = 0;
    uint32_t mode = 0;  // file type bits (st_mode & S_IFMT) for d_type
  };
  explicit DirHandle(std::vector<Item> items) : items_(std::move(items)) {}
  const std::vector<Item>& items() const { return items_; }

 private:
  friend class Filesystem;
  std::vector<Item> items_;
  Ino dir_ = 0;
  std::vector<Ino> pinned_;  // upper nodes kept alive so that item inos stay valid
};

// An open file: an fd on the upper file, or (fd invalid) the lower node read through the
// view. Hand it back to Filesystem::Release.
class FileHandle {
 public:
  Ino ino() const { return ino_; }
  bool reads_lower() const { return !fd_.valid(); }
  int fd() const { return fd_.get(); }

 private:
  friend class Filesystem;
  Ino ino_ = 0;
  Ino lower_ = 0;
  UniqueFd fd_;
};

class Filesystem {
 public:
  // Read-only: borrows the view, which must outlive the Filesystem.
  explicit Filesystem(const index::MergedView& view);
  // Writable: `upper` (created if missing) holds the changes; `work` (created if missing)
  // must be on the same filesystem and not inside `upper`; copies are built in it.
  static Result<std::unique_ptr<Filesystem>> OpenWritable(const index::MergedView& view,
                                                          const std::string& upper,
                                                          const std::string& work);
  ~Filesystem();
  Filesystem(const Filesystem&) = delete;
  Filesystem& operator=(const Filesystem&) = delete;

  bool writable() const { return upper_root_.valid(); }

  // ENOENT (kNotFound) when parent has no such child, ENOTDIR when parent is no directory,
  // ENAMETOOLONG past 255 bytes. Counts one kernel lookup on the node.
  Result<Entry> Lookup(Ino parent, std::string_view name);
  // Drops n kernel lookups; a node nobody references any more is freed.
  void Forget(Ino ino, uint64_t n);
  // st_ino = ino; st_blocks in 512-byte units of the size; st_blksize 4096; for lower
  // nodes atime and ctime are the mtime (an image carries only that) and directories
  // report size 4096. Merged directories (upper over lower) report nlink 1, as overlayfs.
  Result<struct stat> GetAttr(Ino ino);
  // The same with the caching verdict; with an open handle, the attributes of its fd (an
  // unlinked open file reports nlink 0).
  Result<Entry> GetEntry(Ino ino, const FileHandle* fh = nullptr);
  Result<struct stat> SetAttr(Ino ino, const SetAttrRequest& req, const FileHandle* fh,
                              const Caller& caller);

  Result<std::unique_ptr<DirHandle>> OpenDir(Ino ino);
  // Calls fn for the entries from `offset` on, with the offset that resumes after each,
  // until fn returns false (the reply buffer is full) or the directory ends.
  using DirFiller = std::function<bool(const DirHandle::Item& item, uint64_t next_offset)>;
  void ReadDir(const DirHandle& dir, uint64_t offset, const DirFiller& fn) const;
  void ReleaseDir(std::unique_ptr<DirHandle> dir);
  Status FsyncDir(Ino ino, bool datasync);

  // open(2) flags. Read-only mode: EROFS when they ask to write. EISDIR for a directory.
  // Writing (O_WRONLY, O_RDWR, O_TRUNC) copies a lower file up first.
  Result<std::unique_ptr<FileHandle>> Open(Ino ino, int flags);
  // create(2): the new (or, without O_EXCL, existing) file, open with flags.
  struct Created {
    Entry entry;
    std::unique_ptr<FileHandle> handle;
  };
  Result<Created> Create(Ino parent, std::string_view name, mode_t mode, int flags,
                         const Caller& caller);
  // Up to out.size() bytes from offset; short only at the end of the file; 0 past it.
  Result<size_t> Read(const FileHandle& fh, uint64_t offset, std::span<uint8_t> out) const;
  // By node, without a handle (tests, tools).
  Result<size_t> Read(Ino ino, uint64_t offset, std::span<uint8_t> out);
  Result<size_t> Write(const FileHandle& fh, uint64_t offset, std::span<const uint8_t> data);
  Status Fsync(const FileHandle& fh, bool datasync);
  Status Fallocate(const FileHandle& fh, int mode, off_t offset, off_t length);
  void Release(std::unique_ptr<FileHandle> fh);

  Result<Entry> Mkdir(Ino parent, std::string_view name, mode_t mode, const Caller& caller);
  // EPERM for a character device 0/0 (that is a whiteout).
  Result<Entry> Mknod(Ino parent, std::string_view name, mode_t mode, dev_t rdev,
                      const Caller& caller);
  Result<Entry> Symlink(Ino parent, std::string_view name, std::string_view target,
                        const Caller& caller);
  Result<Entry> Link(Ino ino, Ino new_parent, std::string_view new_name);
  Status Unlink(Ino parent, std::string_view name);
  // ENOTEMPTY while the union directory has visible children.
  Status Rmdir(Ino parent, std::string_view name);
  // flags: 0, RENAME_NOREPLACE or RENAME_EXCHANGE (EINVAL otherwise). A directory that
  // exists in the lower tree answers EXDEV (as overlayfs without redirect_dir): mv copies.
  Status Rename(Ino parent, std::string_view name, Ino new_parent, std::string_view new_name,
                unsigned flags);

  // EINVAL for anything but a symlink.
  Result<std::string> ReadLink(Ino ino);
  // ENODATA when the node has no such attribute. trusted.overlay.* is never shown.
  Result<XattrReply> GetXattr(Ino ino, std::string_view name, size_t buffer_size);
  Result<XattrReply> ListXattr(Ino ino, size_t buffer_size);
  Status SetXattr(Ino ino, std::string_view name, std::string_view value, int flags);
  Status RemoveXattr(Ino ino, std::string_view name);
  // Read-only: f_blocks are the image's file bytes (hard links once), nothing free.
  // Writable: the upper dir's filesystem.
  struct statvfs StatFs() const;

  // What every call that would change a read-only tree answers (EROFS).
  static Status ReadOnly();

  // Called (under the table lock) with the number of a node whose attributes changed
  // without the kernel asking (a directory copied up as a parent): the session tells the
  // kernel to drop its cached attributes. Set before serving.
  void SetAttrInvalidator(std::function<void(Ino)> fn) { invalidate_ = std::move(fn); }
  // How lower file bytes are read (default: the view's ReadFile); the mount reads through
  // the chunk cache (store::CachedFileReader). Set before serving.
  using LowerReader = std::function<Result<size_t>(Ino, uint64_t, std::span<uint8_t>)>;
  void SetLowerReader(LowerReader fn) { read_lower_ = std::move(fn); }

  // The parent directory of a directory (the root's is itself), for "..".
  Ino ParentOf(Ino dir) const;
  // Nodes in the table (tests: forget frees them). A mount answers it, in decimal, as the
  // root's extended attribute kNodesXattr (never listed): tests/e2e/stress_test checks
  // that the count returns to its baseline once the kernel forgets everything.
  size_t NodeCount() const;
  // The upper-node fd cache's bound (default: a quarter of RLIMIT_NOFILE, 16..4096; files
  // are dropped before directories, which reopens walk through) and the fds held on upper
  // nodes now (root and nameless nodes included). Tests: bound 0 drops every fd that can
  // be reopened as soon as each call returns.
  void SetUpperFdCache(size_t max_fds);
  size_t UpperFdCount() const;
  const index::MergedView& view() const { return view_; }

 private:
  struct Node;
  class TableLock;
  Filesystem(const index::MergedView& view, bool scan);
  // Upper-only nodes of a progressive view (whose lower numbers grow while it is used)
  // are numbered from here on.
  static constexpr Ino kFirstUpperOnlyIno = Ino{1} << 40;
  void ScanLowerTree();
  // With a progressive view: waits, outside the table lock, until the lower tree can
  // answer a lookup of `name` in `dir` (or, name null, list `dir`), so that a lookup the
  // scan has not reached yet does not hold up every other request.
  // kTimeout when the wait ran out (the answer is then not awaited under the lock).
  Status WaitForLowerAnswer(Ino dir, const std::string_view* name) const;
  bool IsLowerIno(Ino ino) const;
  // The parent of a lower directory (the root for the root and for unknown numbers).
  Ino LowerParent(Ino dir) const;

  // The one place lower file bytes are read (copy-up and lower reads).
  Result<size_t> ReadLower(Ino lower_ino, uint64_t offset, std::span<uint8_t> out) const;
  LowerReader read_lower_;

  // All below: mu_ held.
  Node* Find(Ino ino) const;
  Result<Node*> Need(Ino ino) const;
  Result<Node*> ResolveChild(Node* dir, std::string_view name);
  Node* NodeForLower(Ino lower, Ino parent, std::string_view name);
  Result<Node*> NodeForUpper(Node* dir, std::string_view name, const struct stat& st);
  void Attach(Node* n, UniqueFd fd, const struct stat& st);
  void MaybeFree(Node* n);
  // The upper fd cache. UpperFd: an O_PATH fd on an upper node, reopened from its parent
  // (recursively) when dropped; valid until the call that asked returns (fds are closed
  // only by TrimUpperFds, when a TableLock is released), ESTALE if the name no longer
  // leads to the node's inode.
  Result<int> UpperFd(Node* n);
  void CacheUpperFd(Node* n, UniqueFd fd);
  // fstatat of a node without an fd by its name in its parent's cached fd (what StatNode
  // does first: a listing's attributes open nothing); false when that does not answer.
  bool StatByName(Node* n, struct stat* st);
  void TrimUpperFds();
  std::list<Node*>& LruOf(const Node* n);
  size_t CachedUpperFds() const;
  // Where an upper node is reached (its parent is kept in the table while it is).
  void SetName(Node* n, Ino parent, std::string_view name);
  void KeepParent(Node* n);
  // Around removing the entry (dir, name) that leads to n: HoldForRemoval keeps
  // n's fd out of the cache first; LoseName, once removed, keeps it for good when that was n's known name;
  // ReleaseHold puts it back in the cache (the removal failed, or n got a name again).
  Status HoldForRemoval(Node* n, const Node* dir, std::string_view name);
  void LoseName(Node* n);
  void ReleaseHold(Node* n);
  Result<struct stat> StatNode(Node* n);
  // The path xattr calls take for an upper node ("/proc/self/fd/N", or the parent's and
  // the name for a symlink).
  Result<std::string> UpperXattrPath(Node* n);
  bool LowerHas(const Node* dir, std::string_view name) const;
  Status CopyUp(Node* n, bool with_data);
  Status CopyLowerData(Ino lower, const std::string& tmp, bool with_data) const;
  // Without mu_: copies a lower-only file's bytes into the work dir ahead of its copy-up,
  // so that a slow lazy fetch does not hold the table lock. Best effort.
  void StageCopyUp(Ino ino);
  Status CopyUpDir(Node* n);
  Status SetLowerMetadata(int dirfd, const std::string& name, Ino lower, bool is_link);
  std::string NewTempName();
  Result<Entry> CreateNode(Ino parent, std::string_view name, mode_t mode, dev_t rdev,
                           std::string_view link_target, Node* link_source,
                           const Caller& caller, int open_flags, UniqueFd* opened);
  Result<bool> UnionDirEmpty(Node* dir);
  Status RemoveEntry(Ino parent, std::string_view name, bool dir);
  Result<Entry> EntryOf(Node* n, bool count);
  Status CheckWritable() const;

  const index::MergedView& view_;
  std::vector<Ino> parent_;   // parent_[ino - 1] for lower directories, 0 for other nodes
  uint64_t total_bytes_ = 0;  // regular file bytes, each inode once

  UniqueFd upper_root_;  // O_PATH on the upper dir; invalid when read-only
  UniqueFd work_;        // O_PATH on <work>/tmp: copies and temporary names
  std::function<void(Ino)> invalidate_;

  mutable std::mutex mu_;  // guards everything below; never held across a FUSE reply
  std::unordered_map<Ino, std::unique_ptr<Node>> nodes_;
  std::map<std::pair<dev_t, ino_t>, Ino> upper_inos_;  // upper inode -> our number
  // A lower node copied up through one name: the number its other (lower) names show.
  std::unordered_map<Ino, Ino> lower_aliases_;
  // Upper nodes whose fd may be dropped, most recent first (files are dropped first).
  std::list<Node*> dir_lru_, file_lru_;
  size_t fd_cache_max_ = 4096;
  std::vector<Ino> unkept_;  // nodes that lost a kid or a name in this call: MaybeFree at its end
  Ino next_ino_ = 0;
  uint64_t temp_counter_ = 0;
};

}  // namespace imagefs::fs
