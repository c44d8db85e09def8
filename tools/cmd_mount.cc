// imagefs mount [--upper DIR] [--read-only] [--fetch-timeout 30s] [-f] IMAGE MOUNTPOINT and imagefs umount MOUNTPOINT.
//
// mount opens the image (manifest, config, each layer's index: nothing else is fetched)
// and serves its merged tree through FUSE; file bytes are fetched when read. Writable
// unless --read-only: changes go to an upper dir (--upper DIR, reused or created; by
// default a new --root/containers/<64 hex>/upper), its work dir is the sibling
// <upper>.work, which also holds origin.json naming the base image and image-config.json
// (the image config's bytes, for imagefs run).
// By default it detaches: it forks first (before any thread or connection exists), the
// child opens the image, mounts and reports through a pipe; the parent returns 0 only
// once a stat of the mountpoint is answered by the new mount, else prints the child's one
// line and returns 1 (nothing is left mounted). The child logs to --root/logs/. With -f it
// serves in the foreground. SIGTERM, SIGINT and SIGHUP unmount cleanly.
//
// umount unmounts an imagefs mount (umount2 as root, else fusermount3 -u); the serving
// process then sees the end of its connection and exits.

#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <nlohmann/json.hpp>
#include <string>

#include "fs/filesystem.h"
#include "fetch/manifest.h"
#include "store/prefetch.h"
#include "store/startup_prefetch.h"
#include "fs/session.h"
#include "tools/format.h"
#include "tools/image_view.h"
#include "tools/mount.h"
#include "tools/mount_table.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::tools {
namespace {


// The argv[0] and PATH of the command imagefs run starts: the image's entrypoint and
// command (or the run's command line), the image's PATH unless -e sets one.
std::pair<std::string, std::string> RunCommand(const MountRequest& req,
                                               const std::string& config_bytes) {
  auto config = fetch::ParseImageConfig(config_bytes);
  if (!config.ok()) return {};
  std::vector<std::string> args = config->entrypoint;
  const std::vector<std::string>& rest = req.run_command.empty() ? config->cmd : req.run_command;
  args.insert(args.end(), rest.begin(), rest.end());
  if (args.empty()) return {};
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const std::vector<std::string>& env : {config->env, req.run_env}) {
    for (const std::string& e : env) {
      if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
    }
  }
  return {args[0], path};
}

// Runs beside the session: prefetch (store/prefetch.h; without a prefetch set, what the
// run's command needs to start, store/startup_prefetch.h), and the mount record's
// fetched-bytes count refreshed every second while it changes.
class Background {
 public:
  Background(const GlobalOptions& global, const MountRequest& req, ImageView& image,
             MountRecord record, store::StartupPrefetcher* startup)
      : global_(global), req_(req), image_(image), record_(std::move(record)), startup_(startup) {}
  ~Background() { Stop(); }

  void Start() {
    if (req_.prefetch != "none") {
      prefetch_ = std::thread([this] {
        if (startup_ != nullptr && req_.run && !store::HasPrefetchSet(*image_.view)) {
          auto [argv0, path] = RunCommand(req_, image_.opened.image.config_bytes);
          startup_->AddCommand(argv0, path);
          startup_->Wait();
          const store::StartupPrefetchStats s = startup_->Stats();
          LOG(kInfo) << "startup prefetch for " << argv0 << ": " << s.files << " files ("
                     << s.bytes << " bytes) fetched, " << s.skipped << " already cached, "
                     << s.elf << " ELF files, " << s.dirs << " directories read ahead";
        }
        // Layers still scanned: prefetch plans from the whole tree, so it waits for it.
        if (Status st = image_.view->WaitComplete(); !st.ok()) {
          LOG(kWarn) << "prefetch: " << st.message();
          return;
        }
        store::PrefetchOptions options;
        options.all = req_.prefetch == "all";
        options.stop = &stop_;
        auto stats = store::Prefetch(
            *image_.view, *image_.reader,
            [this](uint32_t layer) { return image_.preloaders[layer]; }, options);
        LogPhase("prefetched");
        if (!stats.ok()) {
          LOG(kWarn) << "prefetch: " << stats.status().message();
        } else {
          LOG(kInfo) << "prefetch: " << stats->files << " files (" << stats->bytes
                     << " bytes) fetched, " << stats->skipped << " already cached";
        }
      });
    }
    stats_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_.load(); })) {
        const uint64_t fetched = image_.fetched_bytes->load();
        if (fetched == record_.fetched_bytes) continue;
        record_.fetched_bytes = fetched;
        (void)RecordMount(global_.root, record_);
      }
    });
  }

  // Ends prefetch and the stats thread; stores what was read and writes the profile.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopped_ = true;
      stop_ = true;
    }
    cv_.notify_all();
    if (startup_ != nullptr) startup_->Stop();
    if (prefetch_.joinable()) prefetch_.join();
    if (stats_.joinable()) stats_.join();
    image_.reader->Flush();
    if (!req_.record_profile.empty()) {
      const std::string text = store::ProfileText(*image_.view, image_.reader->ReadOrder());
      if (Status st = WriteFileAtomic(req_.record_profile, text); !st.ok()) {
        LOG(kError) << "--record-profile: " << st.message();
      }
    }
  }

 private:
  const GlobalOptions& global_;
  const MountRequest& req_;
  ImageView& image_;
  MountRecord record_;
  store::StartupPrefetcher* startup_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stop_{false};
  bool stopped_ = false;
  std::thread prefetch_;
  std::thread stats_;
};

// Tells the waiting parent (a pipe) how mounting went; it reads until EOF, so a failed
// write only means it has gone.
void Notify(int fd, const std::string& text) { (void)WriteAll(fd, text, "the mount pipe"); }

// Opens the image, mounts it and serves until unmounted. `notify_fd` (>= 0 when detached)
// gets "OK\n" once the kernel mount exists, or "ERR <message>" when mounting failed.
int Serve(const GlobalOptions& global, const MountRequest& req, int notify_fd) {
  auto report_failure = [&](const Status& st) {
    if (notify_fd >= 0) {
      Notify(notify_fd, "ERR " + st.message());
      LOG(kError) << st.message();
      return 1;
    }
    return Fail(st);
  };
  auto opened = OpenImageView(global, req.image, req.platform, req.pull,
                              /*early_preload=*/req.prefetch != "none", /*progressive=*/true);
  if (!opened.ok()) return report_failure(opened.status());
  if (!req.record_profile.empty()) opened->reader->RecordReadOrder();
  std::unique_ptr<fs::Filesystem> filesystem;
  UniqueFd upper_lock;  // held while serving: one mount per upper dir (freed even by kill -9)
  if (req.upper.empty()) {
    filesystem = std::make_unique<fs::Filesystem>(*opened->view);
  } else {
    const std::string work = req.upper + ".work";
    if (Status made = MakeDirs(work, 0700); !made.ok()) return report_failure(made);
    upper_lock.Reset(::open((work + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!upper_lock.valid()) return report_failure(Status::FromErrno(errno, work + "/lock"));
    if (::flock(upper_lock.get(), LOCK_EX | LOCK_NB) != 0) {
      return report_failure(
          Status::FromErrno(EBUSY, "mount: upper dir " + req.upper + " is in use by another mount"));
    }
    // Every file the kernel holds open holds an fd here, and the Filesystem sizes its cache
    // of upper-node fds by the limit it finds.
    struct rlimit lim;
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
      lim.rlim_cur = lim.rlim_max;
      (void)::setrlimit(RLIMIT_NOFILE, &lim);
    }
    auto writable = fs::Filesystem::OpenWritable(*opened->view, req.upper, work);
    if (!writable.ok()) return report_failure(writable.status());
    filesystem = std::move(*writable);
    // What `imagefs diff UPPERDIR` reads to know the base image.
    nlohmann::ordered_json origin;
    origin["image"] = req.image;
    origin["manifest_digest"] = opened->opened.image.manifest.digest;
    if (Status st = WriteFileAtomic(work + "/origin.json", origin.dump() + "\n"); !st.ok()) {
      return report_failure(st);
    }
    // The image config as resolved (imagefs run reads it instead of resolving the image
    // a second time).
    if (Status st = WriteFileAtomic(work + "/image-config.json", opened->opened.image.config_bytes);
        !st.ok()) {
      return report_failure(st);
    }
  }

  store::CachedFileReader* reader = opened->reader.get();
  // Bytes of lower files served to FUSE reads (what the workload read, kernel readahead
  // included), logged at the end beside the bytes fetched.
  auto served = std::make_shared<std::atomic<uint64_t>>(0);
  auto first_read = std::make_shared<std::atomic<bool>>(false);
  // Any ELF file the workload starts reading has its libraries queued (unless --prefetch
  // none); imagefs run also queues its command's startup files (Background). Not while
  // recording a profile: it reads through the same reader, and the profile must hold
  // what the workload read, in its order.
  std::shared_ptr<store::StartupPrefetcher> startup;
  // Nor while a layer is still scanned whole: its bytes all arrive anyway, in order.
  if (req.prefetch != "none" && req.record_profile.empty() && !opened->view->progressive()) {
    startup = std::make_shared<store::StartupPrefetcher>(
        *opened->view, *opened->reader, store::StartupPrefetchOptions{},
        [preloaders = opened->preloaders](uint32_t layer) {
          return layer < preloaders.size() ? preloaders[layer] : nullptr;
        });
  }
  filesystem->SetLowerReader([reader, served, first_read, startup](
                                 fs::Ino ino, uint64_t offset, std::span<uint8_t> out) {
    if (!first_read->load(std::memory_order_relaxed) && !first_read->exchange(true)) {
      LogPhase("first-read");
    }
    auto n = reader->Read(ino, offset, out);
    if (n.ok()) {
      *served += *n;
      if (offset == 0 && startup != nullptr) {
        startup->Observe(ino, out.first(*n), store::CachedFileReader::LastReadMissed());
      }
    }
    return n;
  });

  fs::SessionOptions options;
  options.mountpoint = req.mountpoint;
  options.subtype = req.image;
  options.allow_other = ::geteuid() == 0;
  options.read_only = req.upper.empty();
  options.debug = req.debug;
  auto session = fs::Session::Mount(*filesystem, options);
  if (!session.ok()) return report_failure(session.status());
  MountRecord record;
  record.pid = ::getpid();
  record.image = req.image;
  record.manifest_digest = opened->opened.image.manifest.digest;
  record.mountpoint = req.mountpoint;
  record.upper = req.upper;
  record.started = static_cast<int64_t>(::time(nullptr));
  record.fetched_bytes = opened->fetched_bytes->load();  // the indexes (a gzip layer: all of it)
  if (Status recorded = RecordMount(global.root, record); !recorded.ok()) {
    LOG(kWarn) << "recording the mount: " << recorded.message();
  }
  Background background(global, req, *opened, record, startup.get());
  background.Start();
  LogPhase("mounted");
  if (notify_fd >= 0) {
    Notify(notify_fd, "OK\n");
    ::close(notify_fd);
  } else if (req.new_upper) {
    std::printf("%s\n", req.upper.c_str());
    std::fflush(stdout);
  }
  Status st = (*session)->Run();
  session->reset();  // unmounts if the loop ended by a signal
  background.Stop();
  {
    const store::CachedReadStats stats = opened->reader->Stats();
    LOG(kInfo) << "reads: " << served->load() << " bytes of lower files read, "
               << opened->fetched_bytes->load() << " bytes fetched from the registry ("
               << stats.hit_bytes << " served from the chunk cache, " << stats.filled_bytes
               << " filled)";
  }
  ForgetMount(global.root, record.pid);
  if (!st.ok()) {
    LOG(kError) << st.message();
    return notify_fd >= 0 ? 1 : Fail(st);
  }
  return 0;
}

// The detached child: its own session, output to a log file, then Serve.
[[noreturn]] void RunDaemon(const GlobalOptions& global, const MountRequest& req, int notify_fd) {
  ::setsid();
  const std::string logs = global.root + "/logs";
  const std::string log_path = logs + "/mount-" + std::to_string(::getpid()) + ".log";
  Status made = MakeDirs(logs, 0700);
  int log_fd = made.ok() ? ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)
                         : -1;
  if (log_fd < 0) {
    Notify(notify_fd, "ERR cannot open the log file " + log_path + ": " +
                            (made.ok() ? std::string(std::strerror(errno)) : made.message()));
    std::_Exit(1);
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
  ::dup2(log_fd, STDOUT_FILENO);
  ::dup2(log_fd, STDERR_FILENO);
  if (::chdir("/") != 0) {
    // Not fatal: the mountpoint is absolute.
  }
  std::fprintf(stderr, "imagefs mount %s %s: pid %d\n", req.image.c_str(),
               req.mountpoint.c_str(), static_cast<int>(::getpid()));
  std::fflush(stderr);
  int rc = Serve(global, req, notify_fd);
  std::fflush(nullptr);
  std::_Exit(rc);
}

}  // namespace

Result<pid_t> StartMount(const GlobalOptions& global, const MountRequest& req) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    read_end.Reset();
    RunDaemon(global, req, write_end.Release());
  }
  write_end.Reset();
  std::string message;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    message.append(buf, static_cast<size_t>(n));
  }
  if (message.rfind("OK\n", 0) == 0) {
    // The mount exists; this stat is answered once the child's loop serves it.
    struct stat st;
    if (::stat(req.mountpoint.c_str(), &st) == 0) return pid;
    return Status::FromErrno(errno, "mount at " + req.mountpoint + " does not answer");
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (message.rfind("ERR ", 0) == 0) return Status::Unavailable(message.substr(4));
  return Status::Internal("the mount process exited before mounting; see " + global.root +
                          "/logs/mount-" + std::to_string(pid) + ".log");
}

namespace {

// "30s", "500ms", "2m" or a plain number of seconds; at least 1 ms.
Result<std::chrono::milliseconds> ParseTimeout(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::string unit = text.substr(digits);
  if (digits == 0 || digits > 9) {
    return Status::InvalidArgument("--fetch-timeout " + text + ": expected e.g. 30s, 500ms, 2m");
  }
  const int64_t n = std::stoll(text.substr(0, digits));
  int64_t ms = 0;
  if (unit.empty() || unit == "s") {
    ms = n * 1000;
  } else if (unit == "ms") {
    ms = n;
  } else if (unit == "m") {
    ms = n * 60000;
  } else {
    return Status::InvalidArgument("--fetch-timeout " + text + ": expected e.g. 30s, 500ms, 2m");
  }
  if (ms < 1) return Status::InvalidArgument("--fetch-timeout must be positive");
  return std::chrono::milliseconds(ms);
}

}  // namespace

// 64 random hex digits, as a docker container id.
Result<std::string> NewContainerId() {
  UniqueFd fd(::open("/dev/urandom", O_RDONLY | O_CLOEXEC));
  unsigned char bytes[32];
  if (!fd.valid() || ::read(fd.get(), bytes, sizeof bytes) != static_cast<ssize_t>(sizeof bytes)) {
    return Status::FromErrno(errno, "reading /dev/urandom");
  }
  static const char kHex[] = "0123456789abcdef";
  std::string id;
  for (unsigned char b : bytes) {
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 15]);
  }
  return id;
}

// An absolute form of path without touching the filesystem beyond getcwd (a dead FUSE
// mountpoint cannot be stat'ed).
std::string AbsolutePath(const std::string& path) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) != nullptr) return resolved;
  if (!path.empty() && path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
  std::string out = std::string(cwd) + "/" + path;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}


int RunMount(const GlobalOptions& global_flags, const std::vector<std::string>& args) {
  GlobalOptions global = global_flags;
  CLI::App app("Mount an image's root filesystem at MOUNTPOINT. Only the manifest, config and\n"
               "layer indexes are fetched before the mount answers; file bytes are fetched\n"
               "when read. Detaches once the mount serves (logs under --root/logs/).",
               "imagefs mount");
  MountRequest req;
  bool read_only = false, foreground = false;
  std::string upper;
  app.add_flag("--read-only", read_only, "Mount read-only (writes fail with EROFS)");
  app.add_option("--upper", upper,
                 "Upper dir for changes (reused, or created); default: a new "
                 "--root/containers/<id>/upper. Its work dir is <upper>.work");
  app.add_flag("-f,--foreground", foreground, "Serve in the foreground; Ctrl-C unmounts");
  app.add_flag("--debug", req.debug, "Log every FUSE request (with -f: to stderr)");
  app.add_option("--platform", req.platform, "os/arch[/variant] to pick from a multi-arch image");
  std::string pull = "missing";
  app.add_option("--pull", pull,
                 "missing: use a stored (pulled) image as is, else the registry's (default); "
                 "always: ask the registry; never: only a stored image");
  app.add_option("--prefetch", req.prefetch,
                 "auto: fetch the image's prefetch files (eStargz landmark, imagefs convert "
                 "--prefetch-profile) first (default; without them, imagefs run fetches its "
                 "command, the command's libraries and small config files first); any ELF "
                 "file read has its libraries fetched at once; all: then every other file "
                 "in the background; none: nothing ahead of reads")
      ->check(CLI::IsMember({"auto", "none", "all"}));
  app.add_option("--record-profile", req.record_profile,
                 "At unmount, write the paths of lower files in first-read order (for "
                 "imagefs convert --prefetch-profile); no startup/ELF prefetch meanwhile");
  std::string fetch_timeout = "30s";
  app.add_option("--fetch-timeout", fetch_timeout,
                 "How long a read may wait for the registry (retries included) before it "
                 "fails with EIO; the mount stays up (e.g. 10s, 500ms; default 30s)");
  app.add_option("IMAGE", req.image, "The image")->required();
  app.add_option("MOUNTPOINT", req.mountpoint, "An existing directory")->required();
  if (int rc = ParseCommandLine(app, "mount", args); rc >= 0) return rc;
  auto policy = ParsePullPolicy(pull);
  if (!policy.ok()) return Fail(policy.status().WithContext("mount"));
  req.pull = *policy;
  auto timeout = ParseTimeout(fetch_timeout);
  if (!timeout.ok()) return Fail(timeout.status().WithContext("mount"));
  global.fetch_timeout = *timeout;
  if (!req.record_profile.empty()) req.record_profile = AbsolutePath(req.record_profile);

  if (read_only && !upper.empty()) {
    return Fail(Status::InvalidArgument("mount: --upper and --read-only exclude each other"));
  }
  struct stat st;
  if (::stat(req.mountpoint.c_str(), &st) != 0) {
    return Fail(Status::FromErrno(errno, "mount: " + req.mountpoint));
  }
  if (!S_ISDIR(st.st_mode)) {
    return Fail(Status::FromErrno(ENOTDIR, "mount: " + req.mountpoint));
  }
  req.mountpoint = AbsolutePath(req.mountpoint);
  if (!read_only) {
    if (upper.empty()) {
      auto id = NewContainerId();
      if (!id.ok()) return Fail(id.status());
      upper = global.root + "/containers/" + *id + "/upper";
      req.new_upper = true;
    }
    while (upper.size() > 1 && upper.back() == '/') upper.pop_back();
    if (Status made = MakeDirs(upper, 0755); !made.ok()) return Fail(made.WithContext("mount"));
    req.upper = AbsolutePath(upper);
    if (req.upper == req.mountpoint || req.upper.rfind(req.mountpoint + "/", 0) == 0) {
      return Fail(Status::InvalidArgument("mount: the upper dir cannot be inside the mountpoint"));
    }
  }
  if (foreground) return Serve(global, req, -1);
  auto started = StartMount(global, req);
  if (!started.ok()) return Fail(started.status());
  // A new container's upper dir: `mount --upper DIR` continues it.
  if (req.new_upper) std::printf("%s\n", req.upper.c_str());
  return 0;
}

int RunMounts(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("List live imagefs mounts.", "imagefs mounts");
  bool quiet = false;
  app.add_flag("-q,--quiet", quiet, "Print mountpoints only");
  if (int rc = ParseCommandLine(app, "mounts", args); rc >= 0) return rc;
  auto mounts = LiveMounts(global.root);
  if (!mounts.ok()) return Fail(mounts.status());
  std::string table = quiet ? "" : "MOUNTPOINT\tIMAGE\tUPPER\tFETCHED\tPID\n";
  for (const MountRecord& m : *mounts) {
    if (quiet) {
      table += m.mountpoint + "\n";
      continue;
    }
    table += m.mountpoint + "\t" + m.image + "\t" + (m.upper.empty() ? "(read-only)" : m.upper) +
             "\t" + HumanSize(static_cast<double>(m.fetched_bytes)) + "\t" +
             std::to_string(m.pid) + "\n";
  }
  std::fputs(quiet ? table.c_str() : TabWrite(table).c_str(), stdout);
  return 0;
}

int RunUmount(const GlobalOptions&, const std::vector<std::string>& args) {
  CLI::App app("Unmount an imagefs mount; the process serving it exits.", "imagefs umount");
  std::string mountpoint;
  bool lazy = false;
  app.add_flag("-l,--lazy", lazy, "Detach now, clean up when no longer busy");
  app.add_option("MOUNTPOINT", mountpoint, "Where the image is mounted")->required();
  if (int rc = ParseCommandLine(app, "umount", args); rc >= 0) return rc;

  const std::string path = AbsolutePath(mountpoint);
  if (!fs::IsImagefsMount(path)) {
    return Fail(Status::InvalidArgument("umount: " + mountpoint + ": not an imagefs mount"));
  }
  if (::geteuid() == 0) {
    if (::umount2(path.c_str(), lazy ? MNT_DETACH : 0) != 0) {
      return Fail(Status::FromErrno(errno, "umount: " + mountpoint));
    }
    return 0;
  }
  // Unprivileged: the setuid helper that mounted it unmounts it.
  pid_t pid = ::fork();
  if (pid < 0) return Fail(Status::FromErrno(errno, "fork"));
  if (pid == 0) {
    if (lazy) {
      ::execlp("fusermount3", "fusermount3", "-u", "-z", "--", path.c_str(), nullptr);
    } else {
      ::execlp("fusermount3", "fusermount3", "-u", "--", path.c_str(), nullptr);
    }
    std::_Exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Fail(Status::FromErrno(EBUSY, "umount: " + mountpoint + ": fusermount3 -u failed"));
  }
  return 0;
}

}  // namespace imagefs::tools
