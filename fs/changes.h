#pragma once

// Changes: what an upper dir (kernel overlayfs markers) changes in an image's merged tree,
// or what one image's merged tree changes in another's, as `docker diff` prints it:
// one "A PATH", "C PATH" or "D PATH" per change, sorted bytewise by absolute path.
//
// Upper dir against its lower tree (ComputeUpperChanges). The rules, per upper entry:
//   - whiteout (char device 0/0, or a zero-size regular file carrying the xattr
//     trusted.overlay.whiteout): D when the lower tree has the name (a deleted directory
//     is one D line, not its children); ignored when nothing is below it.
//   - no lower entry at the path (or the parent is added, or opaque): A. An added
//     directory lists itself and everything in it as A.
//   - a lower entry of another type (file replaced by a dir, dir by a file or symlink...):
//     C for the path, and every upper entry inside it A.
//   - a regular file, symlink or special file over one of the same type: C when the
//     content (size, then bytes; symlink target), mode, uid, gid, rdev, mtime or the set
//     of xattrs (names and values, overlayfs's own left out) differ, else nothing: a
//     copied-up but unchanged file is not a change (docker's overlay2 driver would print
//     C for it). mtimes are equal as
//     docker's sameFsTime says: same nanoseconds, or same seconds when either side has no
//     nanoseconds (tar headers carry whole seconds).
//   - a directory over a directory: C when anything inside changed at any depth, or its
//     own mode, uid, gid, mtime or xattrs changed; so every directory on the
//     way to a change is C (docker prints `C /usr` ... `C /usr/share/nginx/html` before
//     `C /usr/share/nginx/html/index.html`).
//   - an opaque directory (trusted.overlay.opaque = "y"; "x" only says it holds
//     whiteouts) over a lower directory: C; every lower child that the upper dir does not
//     re-create is D; every upper child is A, re-created names included (as docker's
//     archive diff treats an opaque directory's lower children as deleted).
// Every xattr is compared, not only security.capability as docker does: an xattr-only
// change (setfattr -n user.x on a lower file) is a change, and commit carries it. The
// overlayfs markers (trusted.overlay.*, user.overlay.*: origin, impure, nlink, uuid,
// opaque...; imagefs's own bookkeeping is the same trusted.overlay.opaque) are never
// changes and never in a layer. An upper dir written with redirect_dir (trusted.overlay.redirect) or
// metacopy (trusted.overlay.metacopy) cannot be read without the lower layers' file
// handles: it is refused with kUnsupported, never answered with a partial result.
//
// Image against image (ComputeImageChanges): the same rules with the second image's
// tree as the upper tree, without markers: names only in the first are D, only in the
// second A. Regular files are compared by attributes and size first, then by chunk
// digests where both indexes have comparable ones (no fetch at all), then bytes.
//
// The upper dir is read through a dirfd with *at() calls that never follow symlinks; the
// output paths are built from names, so the walk does not depend on where the upper dir
// lives. Not thread-safe per call; calls on different upper dirs may run concurrently.

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "index/merged_view.h"
#include "util/status.h"

namespace imagefs::fs {

struct Change {
  enum Kind { kAdded, kChanged, kDeleted };
  Kind kind = kAdded;
  std::string path;  // absolute: "/etc/passwd"
  // Upper dir: the path of the upper entry relative to the upper dir ("etc/passwd"), or
  // "" for a kDeleted that has no upper entry (a lower child of an opaque directory).
  // A kDeleted with an entry points at its whiteout. Image diffs leave it "".
  std::string upper_rel;
  bool opaque = false;  // a directory that hides its lower contents (an opaque upper dir)
  uint32_t mode = 0;    // st_mode of the new entry (0 for kDeleted)
};

// overlayfs's (and imagefs's) own xattrs: trusted.overlay.*, user.overlay.*.
bool IsOverlayXattr(std::string_view name);

// The xattrs of the entry at `path` (the last component is not followed), overlayfs's own
// left out, by name. `what` names the entry in errors. None on a filesystem without xattrs.
Result<std::map<std::string, std::string>> ReadXattrs(const std::string& path,
                                                      const std::string& what);

// 'A', 'C' or 'D'.
char KindLetter(Change::Kind kind);
// "A /path\n" per change.
std::string FormatChanges(const std::vector<Change>& changes);

struct UpperOptions {
  // How error messages name the upper dir ("imagefs: <display>: ...").
  std::string display_path;
  // Absolute paths ("/proc", "/etc/hosts") whose upper entries are not changes and are
  // not walked: what a container runtime created in the rootfs (mount points), as docker's
  // init layer hides them. A lower entry at such a path is untouched by the ignore.
  std::set<std::string> ignore;
};

// The changes an upper dir (an open directory fd; borrowed) makes to `lower`, sorted by
// path. kUnsupported for redirect_dir / metacopy upper dirs.
Result<std::vector<Change>> ComputeUpperChanges(int upper_dirfd, const index::MergedView& lower,
                                                const UpperOptions& options = {});

// The changes that turn `from` into `to`, sorted by path.
Result<std::vector<Change>> ComputeImageChanges(const index::MergedView& from,
                                                const index::MergedView& to);

}  // namespace imagefs::fs

namespace imagefs::fs {

// The layer tar of an upper dir's changes (what `imagefs commit` turns into one layer),
// written to out_fd. `changes` is ComputeUpperChanges's list for the same upper dir. Rules:
//   - A and C entries are written from the upper dir in the list's order (bytewise by path,
//     so every directory precedes its contents; every directory on the way to a change is
//     itself a C entry, so parents carry their upper metadata, as docker's layers do).
//   - names without "./" and a trailing "/" on directories; mode (with setuid/setgid/
//     sticky), numeric uid/gid, no user/group names, mtime; no atime/ctime.
//   - a PAX header only where ustar cannot say it: a long path or link target, an mtime
//     with nanoseconds, xattrs (SCHILY.xattr.*, never trusted.overlay.* / user.overlay.*),
//     sizes or ids too large for octal fields. PAX records are sorted by key.
//   - entries of the upper dir sharing an inode: the first (in order) is the file, later
//     ones are tar hard links to it.
//   - a D with an upper whiteout, or a deleted lower dir: ".wh.NAME" (an empty regular
//     file, mode 0600, uid/gid 0, mtime 0); an opaque directory: its entry, then
//     "DIR/.wh..wh..opq" (same header) right after it; the lower children of an opaque
//     directory are covered by that marker and get no whiteout of their own.
// The same upper dir and list give the same bytes. A socket cannot be in a layer: it is
// refused with kInvalidArgument naming it before anything is written. A file that grows
// or shrinks while it is read is cut or zero-padded to the size first seen.
Status WriteChangesTar(int upper_dirfd, const std::vector<Change>& changes, int out_fd,
                       const UpperOptions& options = {});

}  // namespace imagefs::fs
