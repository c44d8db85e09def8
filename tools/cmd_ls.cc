// imagefs ls [-l] [-R] IMAGE [PATH] and imagefs cat IMAGE PATH: an image's merged root
// filesystem read straight from its source, without pulling or mounting it. For seekable
// layers (eStargz, zstd:chunked) only the footers, TOCs and the file's own chunks are
// fetched; other layers are scanned once and their index cached under --root.
//
// ls prints names one per line (with -R, paths from the image root, depth first in name
// order); -l gives `ls -ln` columns: mode, links, uid, gid, size (or "major, minor"),
// mtime (local time, "YYYY-MM-DD HH:MM"), name, and "-> target" for symlinks.

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>

#include "tools/image_view.h"

namespace imagefs::tools {
namespace {

std::string ModeString(uint32_t mode) {
  std::string s(10, '-');
  switch (mode & S_IFMT) {
    case S_IFDIR: s[0] = 'd'; break;
    case S_IFLNK: s[0] = 'l'; break;
    case S_IFCHR: s[0] = 'c'; break;
    case S_IFBLK: s[0] = 'b'; break;
    case S_IFIFO: s[0] = 'p'; break;
    case S_IFSOCK: s[0] = 's'; break;
    default: break;
  }
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) {
    if (mode & (0400u >> i)) s[1 + i] = rwx[i];
  }
  if (mode & S_ISUID) s[3] = (mode & S_IXUSR) ? 's' : 'S';
  if (mode & S_ISGID) s[6] = (mode & S_IXGRP) ? 's' : 'S';
  if (mode & S_ISVTX) s[9] = (mode & S_IXOTH) ? 't' : 'T';
  return s;
}

struct LsRow {
  std::vector<std::string> cells;  // mode, nlink, uid, gid, size, time
  std::string name;
};

Result<LsRow> MakeRow(const index::MergedView& view, index::Ino ino, std::string name, bool lng) {
  LsRow row;
  row.name = std::move(name);
  if (!lng) return row;
  ASSIGN_OR_RETURN(index::NodeAttr a, view.Attr(ino));
  std::string size = std::to_string(a.size);
  if (S_ISCHR(a.mode) || S_ISBLK(a.mode)) {
    size = std::to_string(major(a.rdev)) + ", " + std::to_string(minor(a.rdev));
  }
  char when[32] = "?";
  time_t t = static_cast<time_t>(a.mtime_sec);
  struct tm tm;
  if (localtime_r(&t, &tm) != nullptr) std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
  row.cells = {ModeString(a.mode), std::to_string(a.nlink), std::to_string(a.uid),
               std::to_string(a.gid), size, when};
  if (S_ISLNK(a.mode)) {
    ASSIGN_OR_RETURN(std::string_view target, view.ReadLink(ino));
    row.name += " -> " + std::string(target);
  }
  return row;
}

void PrintRows(const std::vector<LsRow>& rows) {
  std::vector<size_t> width;
  for (const LsRow& r : rows) {
    width.resize(std::max(width.size(), r.cells.size()));
    for (size_t i = 0; i < r.cells.size(); ++i) width[i] = std::max(width[i], r.cells[i].size());
  }
  std::string out;
  for (const LsRow& r : rows) {
    for (size_t i = 0; i < r.cells.size(); ++i) {
      // Mode and time left-aligned, numbers right-aligned, as ls does.
      const bool left = i == 0 || i == 5;
      const std::string pad(width[i] - r.cells[i].size(), ' ');
      out += left ? r.cells[i] + pad : pad + r.cells[i];
      out += ' ';
    }
    out += r.name;
    out += '\n';
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

// Resolves a path inside the image, following symlinks (absolute ones from the image's
// root) like the kernel would in a chroot; at most 40 of them.
Result<index::Ino> FollowPath(const index::MergedView& view, std::string path) {
  for (int hops = 0; hops <= 40; ++hops) {
    std::string done;
    index::Ino ino = index::kRootIno;
    bool restarted = false;
    size_t pos = 0;
    while (pos < path.size() && !restarted) {
      size_t slash = path.find('/', pos);
      if (slash == std::string::npos) slash = path.size();
      std::string part = path.substr(pos, slash - pos);
      std::string rest = path.substr(std::min(slash, path.size()));
      pos = slash + 1;
      if (part.empty() || part == ".") continue;
      if (part == "..") {
        size_t cut = done.rfind('/');
        done = cut == std::string::npos ? "" : done.substr(0, cut);
        ASSIGN_OR_RETURN(ino, view.Resolve(done));
        continue;
      }
      ASSIGN_OR_RETURN(ino, view.Lookup(ino, part));
      ASSIGN_OR_RETURN(index::NodeAttr a, view.Attr(ino));
      if (S_ISLNK(a.mode)) {
        ASSIGN_OR_RETURN(std::string_view target, view.ReadLink(ino));
        path = (target.starts_with("/") ? std::string(target)
                                        : done + "/" + std::string(target)) + rest;
        restarted = true;
        break;
      }
      done += "/" + part;
    }
    if (!restarted) return ino;
  }
  return Status::FromErrno(ELOOP, "too many levels of symbolic links");
}

// Maps a lookup failure onto the words ls(1) and cat(1) use.
Status PathError(const Status& st, const std::string& image, const std::string& path) {
  if (st.IsNotFound()) {
    return Status::NotFound(image + ": " + path + ": no such file or directory");
  }
  if (st.ToErrno() == ENOTDIR) return Status::FromErrno(ENOTDIR, image + ": " + path);
  return st.WithContext(image + ": " + path);
}

}  // namespace

int RunLs(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("List a directory of an image's merged root filesystem without pulling it.",
               "imagefs ls");
  std::string image_name, path = "/", platform;
  bool lng = false, recursive = false;
  app.add_flag("-l", lng, "Long format: mode, links, uid, gid, size, mtime, name");
  app.add_flag("-R,--recursive", recursive, "List subdirectories too (paths from the image root)");
  app.add_option("--platform", platform, "os/arch[/variant] to pick from a multi-arch image");
  app.add_option("IMAGE", image_name, "The image")->required();
  app.add_option("PATH", path, "A path inside the image (default /)");
  if (int rc = ParseCommandLine(app, "ls", args); rc >= 0) return rc;

  auto opened = OpenImageView(global, image_name, platform);
  if (!opened.ok()) return Fail(opened.status());
  const index::MergedView& view = *opened->view;
  auto ino = view.Resolve(path);
  if (!ino.ok()) return Fail(PathError(ino.status(), image_name, path));
  auto attr = view.Attr(*ino);
  if (!attr.ok()) return Fail(attr.status());

  std::vector<LsRow> rows;
  Status st = Status::Ok();
  if (!S_ISDIR(attr->mode)) {
    auto row = MakeRow(view, *ino, path, lng);
    if (!row.ok()) return Fail(row.status());
    rows.push_back(std::move(*row));
  } else {
    std::string base = path;
    while (!base.empty() && base.back() == '/') base.pop_back();
    if (!base.empty() && base.front() != '/') base = "/" + base;
    std::function<void(index::Ino, const std::string&)> walk = [&](index::Ino dir,
                                                                   const std::string& prefix) {
      Status inner = view.ForEachChild(dir, [&](std::string_view name, index::Ino child) {
        std::string shown = recursive ? prefix + "/" + std::string(name) : std::string(name);
        auto row = MakeRow(view, child, shown, lng);
        if (!row.ok()) {
          st = row.status();
          return false;
        }
        rows.push_back(std::move(*row));
        if (recursive) {
          auto a = view.Attr(child);
          if (a.ok() && S_ISDIR(a->mode)) walk(child, prefix + "/" + std::string(name));
        }
        return true;
      });
      if (!inner.ok()) st = inner;
    };
    walk(*ino, base);
  }
  if (!st.ok()) return Fail(st);
  PrintRows(rows);
  return 0;
}

int RunCat(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Print a file of an image without pulling the image. Symlinks are followed\n"
               "inside the image; only the file's chunks are fetched from seekable layers.",
               "imagefs cat");
  std::string image_name, path, platform;
  app.add_option("--platform", platform, "os/arch[/variant] to pick from a multi-arch image");
  app.add_option("IMAGE", image_name, "The image")->required();
  app.add_option("PATH", path, "The file inside the image")->required();
  if (int rc = ParseCommandLine(app, "cat", args); rc >= 0) return rc;

  auto opened = OpenImageView(global, image_name, platform);
  if (!opened.ok()) return Fail(opened.status());
  const index::MergedView& view = *opened->view;
  auto ino = FollowPath(view, path);
  if (!ino.ok()) return Fail(PathError(ino.status(), image_name, path));
  auto attr = view.Attr(*ino);
  if (!attr.ok()) return Fail(attr.status());
  if (S_ISDIR(attr->mode)) {
    return Fail(Status::FromErrno(EISDIR, image_name + ": " + path + ": is a directory"));
  }
  if (!S_ISREG(attr->mode)) {
    return Fail(Status::InvalidArgument(image_name + ": " + path + ": not a regular file"));
  }
  std::vector<uint8_t> buf(4 << 20);
  for (uint64_t offset = 0; offset < attr->size;) {
    auto n = opened->reader->Read(*ino, offset, buf);
    if (!n.ok()) return Fail(n.status().WithContext(image_name + ": " + path));
    if (*n == 0) break;
    for (size_t done = 0; done < *n;) {
      ssize_t w = ::write(STDOUT_FILENO, buf.data() + done, *n - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return Fail(Status::FromErrno(errno, "writing to standard output"));
      }
      done += static_cast<size_t>(w);
    }
    offset += *n;
  }
  return 0;
}

}  // namespace imagefs::tools
