#include "fs/session.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "fs/fuse_ops.h"
#include "fs/kernel_shim.h"
#include "util/log.h"

namespace imagefs::fs {
namespace {

// libfuse's own messages ("fuse: ...") go to our log; the last error is kept so that a
// failed mount can say why in its one line.
std::mutex g_fuse_error_mu;
std::string g_last_fuse_error;  // guarded by g_fuse_error_mu

void FuseLog(enum fuse_log_level level, const char* fmt, va_list ap) {
  char line[512];
  std::vsnprintf(line, sizeof line, fmt, ap);
  std::string text(line);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (level <= FUSE_LOG_ERR) {
    {
      std::lock_guard<std::mutex> lock(g_fuse_error_mu);
      g_last_fuse_error = text;
    }
    LOG(kError) << "libfuse: " << text;
  } else if (level <= FUSE_LOG_NOTICE) {
    LOG(kWarn) << "libfuse: " << text;
  } else {
    LOG(kDebug) << "libfuse: " << text;
  }
}

std::string TakeFuseError() {
  std::lock_guard<std::mutex> lock(g_fuse_error_mu);
  std::string e = std::move(g_last_fuse_error);
  g_last_fuse_error.clear();
  if (e.rfind("fuse: ", 0) == 0) e = e.substr(6);
  return e;
}

// A mount option value: libfuse splits options at commas (a backslash escapes one).
std::string OptionValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == ',' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountField(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out.push_back(static_cast<char>(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// The kernel caps FUSE readahead at the mount's bdi read_ahead_kb (128 KiB), so a
// sequential read arrives in 128 KiB requests whatever max_read says. Raising it to
// max_read lets one request cover 1 MiB (measured: 20 MiB cold read 23 -> 124 MB/s).
// Best effort: only root may write it; the mount works either way.
void RaiseReadahead(const std::string& mountpoint, unsigned bytes) {
  std::ifstream in("/proc/self/mountinfo");
  std::string device;
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    if (UnescapeMountField(point) == mountpoint) device = dev;  // the last one is on top
  }
  if (device.empty()) return;
  std::ofstream out("/sys/class/bdi/" + device + "/read_ahead_kb");
  out << bytes / 1024;
  out.flush();
  if (!out) LOG(kDebug) << "cannot raise read_ahead_kb of " << mountpoint << " (" << device << ")";
}

}  // namespace

bool IsImagefsMount(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype, source;
    tail >> fstype >> source;
    if (UnescapeMountField(point) == mountpoint && fstype.rfind("fuse", 0) == 0 &&
        source == "imagefs") {
      return true;
    }
  }
  return false;
}

int ReplyErrno(const Status& status) {
  int err = status.ToErrno();
  return err > 0 ? err : EIO;
}

struct Session::Context {
  FuseContext fuse;
  fuse_lowlevel_ops ops;
  KernelShim shim;
};

Result<std::unique_ptr<Session>> Session::Mount(Filesystem& filesystem,
                                                const SessionOptions& options) {
  struct stat st;
  if (::stat(options.mountpoint.c_str(), &st) != 0) {
    return Status::FromErrno(errno, "mountpoint " + options.mountpoint);
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::FromErrno(ENOTDIR, "mountpoint " + options.mountpoint);
  }
  fuse_set_log_func(FuseLog);

  std::unique_ptr<Session> s(new Session());
  s->options_ = options;
  s->context_ = std::make_unique<Context>();
  s->context_->fuse.filesystem = &filesystem;
  s->context_->fuse.entry_timeout_sec = options.entry_timeout_sec;
  s->context_->fuse.attr_timeout_sec = options.attr_timeout_sec;
  s->context_->fuse.max_read = options.max_read;
  s->context_->fuse.writeback_cache = options.writeback_cache;
  s->context_->ops = MakeFuseOps();

  std::string opts = "fsname=" + OptionValue(options.fsname) +
                     ",max_read=" + std::to_string(options.max_read);
  if (!options.subtype.empty()) opts += ",subtype=" + OptionValue(options.subtype);
  if (options.read_only) opts += ",ro";
  if (options.allow_other) opts += ",allow_other,default_permissions";
  std::vector<std::string> argv_storage = {"imagefs", "-o", opts};
  if (options.debug) argv_storage.push_back("-d");
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  TakeFuseError();
  s->session_ = fuse_session_new(&args, &s->context_->ops, sizeof(s->context_->ops),
                                 &s->context_->fuse);
  if (s->session_ == nullptr) {
    return Status::Internal("mounting " + options.mountpoint + ": " + TakeFuseError());
  }
  // Installed before the mount exists, so SIGTERM never leaves a dead mount behind.
  if (fuse_set_signal_handlers(s->session_) != 0) {
    return Status::Internal("mounting " + options.mountpoint + ": cannot install signal handlers");
  }
  if (fuse_session_mount(s->session_, options.mountpoint.c_str()) != 0) {
    std::string why = TakeFuseError();
    return Status::FromErrno(EIO, "mounting " + options.mountpoint +
                                      (why.empty() ? "" : ": " + why));
  }
  s->mounted_ = true;
  // Writable mounts: FUSE_HANDLE_KILLPRIV_V2 through the /dev/fuse shim (one GETXATTR of
  // security.capability per write(2) less; fs/kernel_shim.h).
  s->context_->fuse.session = s->session_;
  if (!options.read_only) {
    s->context_->fuse.shim = &s->context_->shim;
    Status st = s->context_->shim.Install(s->session_, /*handle_killpriv_v2=*/true);
    if (!st.ok()) return Status::Internal("mounting " + options.mountpoint + ": " + st.message());
  }
  // A directory copied up as a parent changes attributes (nlink) the kernel may hold for
  // long: drop them. Attributes only (offset < 0), which takes no inode lock.
  fuse_session* se = s->session_;
  filesystem.SetAttrInvalidator([se](Ino ino) {
    (void)fuse_lowlevel_notify_inval_inode(se, ino, -1, 0);
  });
  return s;
}

Session::~Session() {
  if (session_ == nullptr) return;
  if (context_ != nullptr && context_->fuse.filesystem != nullptr) {
    context_->fuse.filesystem->SetAttrInvalidator(nullptr);
  }
  fuse_remove_signal_handlers(session_);
  if (mounted_) fuse_session_unmount(session_);
  fuse_session_destroy(session_);
}

Status Session::Run() {
  fuse_loop_config* config = fuse_loop_cfg_create();
  if (config == nullptr) return Status::Internal("fuse_loop_cfg_create failed");
  fuse_loop_cfg_set_max_threads(config, options_.max_threads);
  fuse_loop_cfg_set_clone_fd(config, 0);
  // The kernel sets the readahead window when it gets the INIT reply, so raise it once the
  // mount has answered a request. Detached with copies: if the loop never serves, the stat
  // fails when the connection goes away, and nothing waits for it.
  std::thread([mountpoint = options_.mountpoint, bytes = options_.max_read] {
    struct stat st;
    if (::stat(mountpoint.c_str(), &st) == 0) RaiseReadahead(mountpoint, bytes);
  }).detach();
  int rc = fuse_session_loop_mt(session_, config);
  fuse_loop_cfg_destroy(config);
  // 0: unmounted from outside. A signal that ended the loop comes back as its number
  // (libfuse 3.14 stores it as the session's error); that is a clean stop too.
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    if (rc == sig || rc == -sig) return Status::Ok();
  }
  if (rc == 0) return Status::Ok();
  return Status::FromErrno(rc < 0 ? -rc : EIO, "serving " + options_.mountpoint);
}

}  // namespace imagefs::fs
