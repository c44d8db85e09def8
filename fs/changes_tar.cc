// WriteChangesTar: an upper dir's changes as one layer tar (see fs/changes.h for the rules).

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "fs/changes.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::fs {
namespace {

constexpr size_t kBlock = 512;

// A path for the *at-less xattr calls that never follows the last symlink.
std::string ProcPath(int dirfd, const std::string& rel) {
  return "/proc/self/fd/" + std::to_string(dirfd) + "/" + rel;
}

bool IsOverlayfsXattr(std::string_view name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
}

// The entry's xattrs (overlayfs's own left out), sorted by name.
Result<std::map<std::string, std::string>> ListXattrs(const std::string& path,
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
    if (name.empty() || IsOverlayfsXattr(name)) continue;
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

// Writes `value` as zero-padded octal into field[0..len-1) with a NUL; false when it does
// not fit.
bool PutOctal(char* field, size_t len, uint64_t value) {
  const size_t digits = len - 1;
  if (digits < 22 && value >= (uint64_t{1} << (3 * digits))) return false;
  for (size_t i = digits; i-- > 0;) {
    field[i] = static_cast<char>('0' + (value & 7));
    value >>= 3;
  }
  field[digits] = '\0';
  return true;
}

struct Header {
  std::string name;      // without "./"; directories end in "/"
  char type = '0';
  uint32_t mode = 0;     // permission bits (07777)
  uint64_t uid = 0, gid = 0, size = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  std::string linkname;
  uint32_t devmajor = 0, devminor = 0;
  std::map<std::string, std::string> xattrs;
};

void AppendRecord(std::string& out, const std::string& key, const std::string& value) {
  // "LEN KEY=VALUE\n", LEN counting itself.
  const size_t body = 1 + key.size() + 1 + value.size() + 1;
  size_t len = body + 1;
  while (std::to_string(len).size() + body != len) ++len;
  out += std::to_string(len) + " " + key + "=" + value + "\n";
}

std::string Pad(std::string bytes) {
  bytes.resize((bytes.size() + kBlock - 1) / kBlock * kBlock, '\0');
  return bytes;
}

// One ustar block; false when `name` must go to PAX (the caller decides).
std::string UstarBlock(const Header& h, const std::string& name, const std::string& linkname,
                       char type, uint64_t size, bool* overflow) {
  std::string b(kBlock, '\0');
  // name / prefix split.
  if (name.size() <= 100) {
    std::memcpy(b.data(), name.data(), name.size());
  } else {
    size_t cut = name.rfind('/', std::min<size_t>(name.size() - 1, 155));
    while (cut != std::string::npos && name.size() - cut - 1 > 100) cut = std::string::npos;
    if (cut == std::string::npos || cut == 0) {
      *overflow = true;
      std::memcpy(b.data(), name.data(), 100);
    } else {
      std::memcpy(b.data() + 345, name.data(), cut);
      std::memcpy(b.data(), name.data() + cut + 1, name.size() - cut - 1);
    }
  }
  if (linkname.size() > 100) *overflow = true;
  std::memcpy(b.data() + 157, linkname.data(), std::min<size_t>(linkname.size(), 100));
  PutOctal(b.data() + 100, 8, h.mode & 07777);
  if (!PutOctal(b.data() + 108, 8, h.uid)) *overflow = true;
  if (!PutOctal(b.data() + 116, 8, h.gid)) *overflow = true;
  if (!PutOctal(b.data() + 124, 12, size)) *overflow = true;
  PutOctal(b.data() + 136, 12, static_cast<uint64_t>(std::max<int64_t>(h.mtime_sec, 0)));
  b[156] = type;
  std::memcpy(b.data() + 257, "ustar\0" "00", 8);
  if (type == '3' || type == '4') {
    PutOctal(b.data() + 329, 8, h.devmajor);
    PutOctal(b.data() + 337, 8, h.devminor);
  }
  std::memset(b.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : b) sum += c;
  std::snprintf(b.data() + 148, 8, "%06o", sum);
  b[155] = ' ';
  return b;
}

// The header block(s) of one entry: a PAX extended header first when needed.
std::string EncodeHeader(const Header& h) {
  std::map<std::string, std::string> pax;
  bool overflow = false;
  (void)UstarBlock(h, h.name, h.linkname, h.type, h.size, &overflow);
  if (overflow) {
    pax["path"] = h.name;
    if (h.linkname.size() > 100) pax["linkpath"] = h.linkname;
    if (h.uid > 07777777) pax["uid"] = std::to_string(h.uid);
    if (h.gid > 07777777) pax["gid"] = std::to_string(h.gid);
    if (h.size > 077777777777) pax["size"] = std::to_string(h.size);
  }
  if (h.mtime_nsec != 0 && h.mtime_sec >= 0) {
    char frac[16];
    std::snprintf(frac, sizeof frac, "%09u", h.mtime_nsec);
    std::string f = frac;
    while (!f.empty() && f.back() == '0') f.pop_back();
    pax["mtime"] = std::to_string(h.mtime_sec) + "." + f;
  }
  for (const auto& [k, v] : h.xattrs) pax["SCHILY.xattr." + k] = v;
  std::string out;
  if (!pax.empty()) {
    std::string records;
    for (const auto& [k, v] : pax) AppendRecord(records, k, v);
    std::string short_name = h.name;
    while (!short_name.empty() && short_name.back() == '/') short_name.pop_back();
    short_name = short_name.substr(short_name.rfind('/') + 1);
    if (short_name.size() > 80) short_name.resize(80);
    Header ph;
    ph.mode = 0644;
    bool ignored = false;
    out += UstarBlock(ph, "PaxHeaders/" + short_name, "", 'x', records.size(), &ignored);
    out += Pad(records);
  }
  bool ignored = false;
  out += UstarBlock(h, h.name, h.linkname.size() > 100 ? h.linkname.substr(0, 100) : h.linkname,
                    h.type, h.size > 077777777777 ? 0 : h.size, &ignored);
  return out;
}

std::string Parent(const std::string& path) {  // "a/b/c" -> "a/b", "a" -> ""
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::string Base(const std::string& path) { return path.substr(path.rfind('/') + 1); }

Header Whiteout(const std::string& name) {
  Header h;
  h.name = name;
  h.mode = 0600;
  return h;
}

}  // namespace

Status WriteChangesTar(int upper_dirfd, const std::vector<Change>& changes, int out_fd,
                       const UpperOptions& options) {
  const std::string display = options.display_path.empty() ? "upper dir" : options.display_path;
  // Pass 1: lstat every entry to write; refuse sockets before writing anything.
  std::vector<struct stat> stats(changes.size());
  for (size_t i = 0; i < changes.size(); ++i) {
    const Change& c = changes[i];
    if (c.kind == Change::kDeleted) continue;
    if (::fstatat(upper_dirfd, c.upper_rel.c_str(), &stats[i], AT_SYMLINK_NOFOLLOW) != 0) {
      return Status::FromErrno(errno, display + "/" + c.upper_rel);
    }
    if (S_ISSOCK(stats[i].st_mode)) {
      return Status::InvalidArgument(display + "/" + c.upper_rel + " (" + c.path +
                                     ") is a socket: a layer cannot hold sockets (remove it)");
    }
  }

  std::map<std::pair<dev_t, ino_t>, std::string> linked;  // inode -> first tar name
  std::set<std::string> opaque_dirs;                      // tar names without "/"
  std::vector<char> buf(1 << 20);
  for (size_t i = 0; i < changes.size(); ++i) {
    const Change& c = changes[i];
    const std::string name = c.path.substr(c.path.find_first_not_of('/'));
    if (c.kind == Change::kDeleted) {
      // Lower children of an opaque directory are gone through its marker.
      if (c.upper_rel.empty() || opaque_dirs.count(Parent(name))) continue;
      const std::string parent = Parent(name);
      RETURN_IF_ERROR(WriteAll(
          out_fd, EncodeHeader(Whiteout((parent.empty() ? "" : parent + "/") + ".wh." + Base(name))),
          "layer tar"));
      continue;
    }
    const struct stat& st = stats[i];
    const std::string what = display + "/" + c.upper_rel;
    Header h;
    h.name = name;
    h.mode = st.st_mode & 07777;
    h.uid = st.st_uid;
    h.gid = st.st_gid;
    h.mtime_sec = st.st_mtim.tv_sec;
    h.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    ASSIGN_OR_RETURN(h.xattrs, ListXattrs(ProcPath(upper_dirfd, c.upper_rel), what));
    if (S_ISDIR(st.st_mode)) {
      h.type = '5';
      h.name += "/";
    } else if (S_ISLNK(st.st_mode)) {
      h.type = '2';
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(upper_dirfd, c.upper_rel.c_str(), target.data(), target.size());
      if (n < 0) return Status::FromErrno(errno, what);
      target.resize(static_cast<size_t>(n));
      h.linkname = target;
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      h.type = S_ISCHR(st.st_mode) ? '3' : '4';
      h.devmajor = major(st.st_rdev);
      h.devminor = minor(st.st_rdev);
    } else if (S_ISFIFO(st.st_mode)) {
      h.type = '6';
    } else if (S_ISREG(st.st_mode)) {
      if (st.st_nlink > 1) {
        auto [it, first] = linked.emplace(std::make_pair(st.st_dev, st.st_ino), name);
        if (!first) {
          h.type = '1';
          h.linkname = it->second;
          h.xattrs.clear();
          RETURN_IF_ERROR(WriteAll(out_fd, EncodeHeader(h), "layer tar"));
          continue;
        }
      }
      h.type = '0';
      h.size = static_cast<uint64_t>(st.st_size);
    } else {
      return Status::Unsupported(what + ": a file type a layer cannot hold");
    }
    RETURN_IF_ERROR(WriteAll(out_fd, EncodeHeader(h), "layer tar"));
    if (h.type == '5' && c.opaque) {
      opaque_dirs.insert(name);
      RETURN_IF_ERROR(WriteAll(out_fd, EncodeHeader(Whiteout(name + "/.wh..wh..opq")), "layer tar"));
    }
    if (h.type != '0') continue;
    UniqueFd fd(::openat(upper_dirfd, c.upper_rel.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) return Status::FromErrno(errno, what);
    uint64_t done = 0;
    while (done < h.size) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), h.size - done));
      ssize_t n = ::pread(fd.get(), buf.data(), want, static_cast<off_t>(done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, what);
      }
      if (n == 0) {  // shrank while read: zero-pad to the size in the header
        std::fill(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(want), 0);
        n = static_cast<ssize_t>(want);
      }
      RETURN_IF_ERROR(WriteAll(out_fd, std::string_view(buf.data(), static_cast<size_t>(n)),
                               "layer tar"));
      done += static_cast<uint64_t>(n);
    }
    if (h.size % kBlock != 0) {
      RETURN_IF_ERROR(WriteAll(out_fd, std::string(kBlock - h.size % kBlock, '\0'), "layer tar"));
    }
  }
  return WriteAll(out_fd, std::string(2 * kBlock, '\0'), "layer tar");
}

}  // namespace imagefs::fs
