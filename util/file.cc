#include "util/file.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "util/unique_fd.h"

namespace imagefs {

Result<std::string> ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "reading " + path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "reading " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string Dirname(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status MakeDirs(const std::string& path, int mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Status::FromErrno(ec.value(), "creating directory " + path);
  (void)mode;
  return Status::Ok();
}

Status RemoveAll(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return Status::FromErrno(ec.value(), "removing " + path);
  return Status::Ok();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

Status WriteAll(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "writing " + what);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Result<size_t> ReadSome(int fd, void* buf, size_t n, const std::string& what) {
  while (true) {
    ssize_t r = ::read(fd, buf, n);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno != EINTR) return Status::FromErrno(errno, "reading " + what);
  }
}

Result<size_t> PreadFull(int fd, std::span<uint8_t> out, uint64_t offset, const std::string& what) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "reading " + what);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Status PwriteAll(int fd, std::span<const uint8_t> data, uint64_t offset, const std::string& what) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "writing " + what);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, std::string_view data, int mode) {
  std::string dir = Dirname(path);
  RETURN_IF_ERROR(MakeDirs(dir));
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(std::random_device{}());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) return Status::FromErrno(errno, "writing " + tmp);
  if (Status st = WriteAll(fd.get(), data, path); !st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  if (::fsync(fd.get()) != 0 || ::close(fd.Release()) != 0) {
    Status st = Status::FromErrno(errno, "writing " + path);
    ::unlink(tmp.c_str());
    return st;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status st = Status::FromErrno(errno, "renaming into " + path);
    ::unlink(tmp.c_str());
    return st;
  }
  return Status::Ok();
}

Result<std::string> MakeTempDir(const std::string& parent, const std::string& prefix) {
  RETURN_IF_ERROR(MakeDirs(parent));
  std::string tmpl = parent + "/" + prefix + "XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return Status::FromErrno(errno, "creating temp dir in " + parent);
  }
  return tmpl;
}

std::string GetEnv(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

std::string HomeDir() {
  std::string home = GetEnv("HOME");
  if (!home.empty()) return home;
  struct passwd* pw = ::getpwuid(::getuid());
  return pw != nullptr && pw->pw_dir != nullptr ? pw->pw_dir : "/";
}

}  // namespace imagefs
