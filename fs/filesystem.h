#pragma once

// fs::Filesystem: what a mounted image answers, as plain C++ calls returning Result, so the
// logic is tested without a mount. fs/fuse_ops.cc only unpacks FUSE requests, calls one
// method and replies once with the value or with Status::ToErrno().
//
// This first cut serves the image's merged lower tree (index::MergedView) read-only:
// inode numbers are the view's (dense, root = 1 = FUSE_ROOT_ID, stable for the mount's
// life), and every call that would change the tree fails with EROFS. The writable upper
// dir will sit in front of the view here: a lookup asks the upper dir first, an upper-only
// node gets an inode number above the view's range, and a copy-up keeps the lower
// node's number (see docs/architecture.md, "fs/").
//
// Thread safety: every method may be called concurrently (the view is immutable; a
// DirHandle belongs to one open directory and the kernel serializes readdir on it).
// Views returned (link targets) live as long as the Filesystem.

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "index/merged_view.h"
#include "util/status.h"

namespace imagefs::fs {

using Ino = index::Ino;
inline constexpr Ino kRootIno = index::kRootIno;

// A lookup's answer: the node and its attributes (the kernel caches both).
struct Entry {
  Ino ino = 0;
  struct stat attr {};
};

// getxattr/listxattr answer the way the syscalls do: asked with a buffer of size 0 they
// give only the size; a buffer too small is ERANGE.
struct XattrReply {
  size_t size = 0;    // bytes of the value (or of the "name\0name\0" list)
  std::string data;   // the bytes; empty when the caller asked for the size only
};

// An open directory: its entries taken once at OpenDir, so readdir offsets stay valid
// however the caller pages through it. Offset k resumes after entry k - 1; "." and ".."
// come first.
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
  std::vector<Item> items_;
};

class Filesystem {
 public:
  // Borrows the view, which must outlive the Filesystem.
  explicit Filesystem(const index::MergedView& view);
  Filesystem(const Filesystem&) = delete;
  Filesystem& operator=(const Filesystem&) = delete;

  // ENOENT (kNotFound) when parent has no such child, ENOTDIR when parent is no directory.
  Result<Entry> Lookup(Ino parent, std::string_view name) const;
  // st_ino = ino; st_blocks in 512-byte units of the size; st_blksize 4096; atime and
  // ctime are the mtime (an image carries only that). Directories report size 4096.
  Result<struct stat> GetAttr(Ino ino) const;

  Result<std::unique_ptr<DirHandle>> OpenDir(Ino ino) const;
  // Calls fn for the entries from `offset` on, with the offset that resumes after each,
  // until fn returns false (the reply buffer is full) or the directory ends.
  using DirFiller = std::function<bool(const DirHandle::Item& item, uint64_t next_offset)>;
  void ReadDir(const DirHandle& dir, uint64_t offset, const DirFiller& fn) const;

  // open(2) flags: EROFS when they ask to write (O_WRONLY, O_RDWR, O_TRUNC, O_APPEND,
  // O_CREAT), EISDIR for a directory.
  Status Open(Ino ino, int flags) const;
  // Up to out.size() bytes from offset; short only at the end of the file; 0 past it.
  Result<size_t> Read(Ino ino, uint64_t offset, std::span<uint8_t> out) const;
  // EINVAL for anything but a symlink.
  Result<std::string_view> ReadLink(Ino ino) const;
  // ENODATA when the node has no such attribute.
  Result<XattrReply> GetXattr(Ino ino, std::string_view name, size_t buffer_size) const;
  Result<XattrReply> ListXattr(Ino ino, size_t buffer_size) const;
  // f_blocks: the image's file bytes (hard links once) in f_bsize units; nothing free.
  struct statvfs StatFs() const;

  // Every call that would change the tree answers this (EROFS), until the upper dir.
  static Status ReadOnly();

  // The parent directory of a directory (the root's is itself), for "..".
  Ino ParentOf(Ino dir) const;
  const index::MergedView& view() const { return view_; }

 private:
  const index::MergedView& view_;
  std::vector<Ino> parent_;   // parent_[ino - 1] for directories, 0 for other nodes
  uint64_t total_bytes_ = 0;  // regular file bytes, each inode once
};

}  // namespace imagefs::fs
