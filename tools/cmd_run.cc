// imagefs run, ps and rm: containers over lazily mounted images, run by runc.
//
// run mounts the image writable (tools/mount.h, as `imagefs mount`) at
// --root/containers/<id>/rootfs with a new upper dir beside it, writes the OCI bundle's
// config.json there, and runs `runc run --bundle DIR <id>` in the foreground: stdio pass
// through (stdin only with -i, else /dev/null, as docker), SIGINT/SIGTERM/SIGHUP/SIGQUIT
// are forwarded to runc (which forwards them to the container), and the container's exit
// code is imagefs's. imagefs's own failures exit 125, as docker run's. When the container
// exits the mount is unmounted; --rm then deletes the container's directory. With -d a
// monitor process (its own session) does the waiting and prints nothing; run prints the id.
//
// imagefs reads the rootfs's /etc/passwd and /etc/group through the mount to resolve the
// user, so a --record-profile lists them first.
//
// Before runc starts, imagefs creates the mount points runc needs (/proc, /sys, /dev,
// /etc/resolv.conf, /etc/hosts, /etc/hostname, and missing parents) through the mount and
// restores their parents' times; container.json records them ("init_paths") so that diff
// (fs/changes' ignore set) hides them, as docker's init layer does.
//
// When runc cannot run containers here (not root, no runc, no writable cgroup hierarchy,
// or IMAGEFS_RUNTIME=chroot), run says so in one line and runs the process chrooted in new
// mount, pid, uts and ipc namespaces instead (no cgroups, no capability drop, no bind
// mounts but /proc).

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "fetch/manifest.h"
#include "fs/session.h"
#include "tools/containers.h"
#include "tools/format.h"
#include "tools/image_view.h"
#include "tools/mount.h"
#include "tools/mount_table.h"
#include "util/file.h"
#include "util/unique_fd.h"

extern char** environ;

namespace imagefs::tools {
namespace {

constexpr int kRunFailure = 125;  // docker run's exit code for its own failures
constexpr const char* kDefaultPath =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

int RunFail(const Status& st) {
  Fail(st);
  return kRunFailure;
}

struct ResolvedUser {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> additional;
  std::string home = "/";
};

bool ParseNumber(const std::string& s, uint32_t* out) {
  if (s.empty() || s.size() > 10) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > 0xffffffffu) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

std::vector<std::vector<std::string>> ReadColonFile(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  auto text = ReadFile(path);
  if (!text.ok()) return rows;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields;
    size_t pos = 0;
    for (;;) {
      size_t c = line.find(':', pos);
      fields.push_back(line.substr(pos, c == std::string::npos ? std::string::npos : c - pos));
      if (c == std::string::npos) break;
      pos = c + 1;
    }
    rows.push_back(std::move(fields));
  }
  return rows;
}

// docker's user resolution (moby/sys/user GetExecUser) against the rootfs's own
// /etc/passwd and /etc/group: USER, UID, USER:GROUP, UID:GID.
Result<ResolvedUser> ResolveUser(const std::string& rootfs, const std::string& spec) {
  ResolvedUser out;
  std::string user = spec, group;
  if (size_t c = spec.find(':'); c != std::string::npos) {
    user = spec.substr(0, c);
    group = spec.substr(c + 1);
  }
  if (user.empty()) user = "0";
  // Both files are read at once: on a lazy mount each read of a file not yet cached
  // waits for a registry round trip, and these come before the container starts.
  auto group_file = std::async(std::launch::async, ReadColonFile, rootfs + "/etc/group");
  const auto passwd = ReadColonFile(rootfs + "/etc/passwd");
  std::string user_name;
  uint32_t number = 0;
  const bool numeric = ParseNumber(user, &number);
  bool found = false;
  for (const auto& f : passwd) {
    if (f.size() < 4) continue;
    uint32_t uid = 0, gid = 0;
    if (!ParseNumber(f[2], &uid) || !ParseNumber(f[3], &gid)) continue;
    if (numeric ? uid == number : f[0] == user) {
      out.uid = uid;
      out.gid = gid;
      if (f.size() >= 6 && !f[5].empty()) out.home = f[5];
      user_name = f[0];
      found = true;
      break;
    }
  }
  if (!found) {
    if (!numeric) {
      return Status::NotFound("unable to find user " + user + ": no matching entries in passwd file");
    }
    out.uid = number;
    out.gid = 0;
  }
  const auto groups = group_file.get();
  if (!group.empty()) {
    uint32_t gid = 0;
    bool group_found = false;
    for (const auto& f : groups) {
      uint32_t g = 0;
      if (f.size() >= 3 && ParseNumber(f[2], &g) && (f[0] == group || (ParseNumber(group, &gid) && g == gid))) {
        out.gid = g;
        group_found = true;
        break;
      }
    }
    if (!group_found) {
      if (!ParseNumber(group, &gid)) {
        return Status::NotFound("unable to find group " + group + ": no matching entries in group file");
      }
      out.gid = gid;
    }
  }
  if (!user_name.empty()) {
    for (const auto& f : groups) {
      uint32_t g = 0;
      if (f.size() < 4 || !ParseNumber(f[2], &g) || g == out.gid) continue;
      std::istringstream members(f[3]);
      for (std::string m; std::getline(members, m, ',');) {
        if (m == user_name) {
          out.additional.push_back(g);
          break;
        }
      }
    }
  }
  return out;
}

struct RunOptions {
  std::string name;
  std::vector<std::string> env;
  std::string workdir;
  std::string user;
  std::string net = "host";
  std::string platform;
  bool rm = false;
  bool detach = false;
  bool interactive = false;
  std::string pull = "missing";
  std::string prefetch = "auto";
  std::string record_profile;
  std::string image;
  std::vector<std::string> command;
};

// Creates the runtime's mount points through the mount, restoring each touched parent's
// times (so the copied-up parent is not a change). Returns the paths it created.
Result<std::vector<std::string>> MakeInitPaths(const std::string& rootfs) {
  struct Want {
    const char* path;
    bool dir;
  };
  static const Want kWants[] = {{"/proc", true},  {"/sys", true},
                                {"/dev", true},   {"/etc", true},
                                {"/etc/resolv.conf", false}, {"/etc/hosts", false},
                                {"/etc/hostname", false}};
  std::vector<std::string> created;
  std::vector<std::pair<std::string, struct stat>> parents;  // times to restore, deepest last
  for (const Want& w : kWants) {
    const std::string path = rootfs + w.path;
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) continue;
    const std::string parent = Dirname(path);
    struct stat pst;
    if (::stat(parent.c_str(), &pst) != 0) return Status::FromErrno(errno, parent);
    bool seen = false;
    for (const auto& p : parents) seen = seen || p.first == parent;
    if (!seen) parents.emplace_back(parent, pst);
    if (w.dir) {
      if (::mkdir(path.c_str(), 0755) != 0) return Status::FromErrno(errno, "mkdir " + path);
    } else {
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) return Status::FromErrno(errno, "creating " + path);
      ::close(fd);
    }
    created.push_back(w.path);
  }
  // Deepest first, so restoring a child's parent does not move the grandparent again.
  for (auto it = parents.rbegin(); it != parents.rend(); ++it) {
    struct timespec times[2] = {it->second.st_atim, it->second.st_mtim};
    if (::utimensat(AT_FDCWD, it->first.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      return Status::FromErrno(errno, "restoring the times of " + it->first);
    }
  }
  return created;
}

nlohmann::json Mount(const std::string& dest, const std::string& type, const std::string& source,
                     std::vector<std::string> options) {
  return {{"destination", dest}, {"type", type}, {"source", source}, {"options", options}};
}

// The OCI runtime config, as docker's defaults (oci.DefaultSpec) make it.
nlohmann::json BundleConfig(const std::string& dir, const std::string& hostname,
                            const std::vector<std::string>& args,
                            const std::vector<std::string>& env, const std::string& cwd,
                            const ResolvedUser& user, const std::string& net) {
  static const std::vector<std::string> kCaps = {
      "CAP_CHOWN",  "CAP_DAC_OVERRIDE", "CAP_FSETID",     "CAP_FOWNER",
      "CAP_MKNOD",  "CAP_NET_RAW",      "CAP_SETGID",     "CAP_SETUID",
      "CAP_SETFCAP", "CAP_SETPCAP",     "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
      "CAP_KILL",   "CAP_AUDIT_WRITE"};
  nlohmann::json process;
  process["terminal"] = false;
  process["user"] = {{"uid", user.uid}, {"gid", user.gid}};
  if (!user.additional.empty()) process["user"]["additionalGids"] = user.additional;
  process["args"] = args;
  process["env"] = env;
  process["cwd"] = cwd;
  process["capabilities"] = {{"bounding", kCaps}, {"effective", kCaps}, {"permitted", kCaps}};
  process["noNewPrivileges"] = false;
  nlohmann::json mounts = nlohmann::json::array();
  mounts.push_back(Mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}));
  mounts.push_back(Mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}));
  mounts.push_back(Mount("/dev/pts", "devpts", "devpts",
                         {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}));
  mounts.push_back(Mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}));
  mounts.push_back(Mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}));
  mounts.push_back(Mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=67108864"}));
  for (const char* f : {"resolv.conf", "hostname", "hosts"}) {
    mounts.push_back(Mount(std::string("/etc/") + f, "bind", dir + "/" + f, {"rbind", "rprivate"}));
  }
  nlohmann::json namespaces = nlohmann::json::array();
  for (const char* ns : {"mount", "uts", "pid", "ipc"}) namespaces.push_back({{"type", ns}});
  if (net == "none") namespaces.push_back({{"type", "network"}});
  nlohmann::json linux_;
  linux_["namespaces"] = namespaces;
  linux_["maskedPaths"] = {"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                           "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                           "/proc/sched_debug", "/proc/scsi", "/sys/firmware"};
  linux_["readonlyPaths"] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                             "/proc/sysrq-trigger"};
  nlohmann::json config;
  config["ociVersion"] = "1.0.2";
  config["process"] = process;
  config["root"] = {{"path", "rootfs"}, {"readonly", false}};
  config["hostname"] = hostname;
  config["mounts"] = mounts;
  config["linux"] = linux_;
  return config;
}

// Why runc cannot run containers here, or "" when it can.
std::string RuncUnusable() {
  const std::string forced = GetEnv("IMAGEFS_RUNTIME");
  if (forced == "chroot") return "IMAGEFS_RUNTIME=chroot";
  if (::geteuid() != 0) return "not running as root";
  bool found = false;
  std::string path = GetEnv("PATH");
  if (path.empty()) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  std::istringstream dirs(path + ":/usr/sbin:/sbin");
  for (std::string d; std::getline(dirs, d, ':');) {
    if (!d.empty() && ::access((d + "/runc").c_str(), X_OK) == 0) {
      found = true;
      break;
    }
  }
  if (!found) return "runc is not installed";
  if (::access("/sys/fs/cgroup", W_OK) != 0) return "/sys/fs/cgroup is not writable";
  return "";
}

std::string RuncRoot(const std::string& root) { return root + "/runc"; }

volatile sig_atomic_t g_child = 0;

void ForwardSignal(int sig) {
  if (g_child > 0) ::kill(g_child, sig);
}

// Runs argv (execvp) as a child with stdin from /dev/null unless keep_stdin, forwarding
// the usual termination signals to it; returns its exit code (128+signal when killed).
int RunChild(const std::vector<std::string>& argv, bool keep_stdin,
             const std::function<void()>& in_child = nullptr) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return RunFail(Status::FromErrno(errno, "fork"));
  if (pid == 0) {
    if (!keep_stdin) {
      int null_fd = ::open("/dev/null", O_RDONLY);
      if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
      // Its own process group: a terminal's Ctrl-C reaches it once, through imagefs's
      // forwarding, not twice. (With -i it stays in the terminal's foreground group to
      // read it.)
      (void)::setpgid(0, 0);
    }
    if (in_child) in_child();
    std::vector<char*> cargv;
    for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    ::execvp(cargv[0], cargv.data());
    std::fprintf(stderr, "imagefs: exec %s: %s\n", cargv[0], std::strerror(errno));
    std::_Exit(127);
  }
  g_child = pid;
  struct sigaction sa {};
  sa.sa_handler = ForwardSignal;
  ::sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(sig, &sa, nullptr);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  sa.sa_handler = SIG_DFL;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(sig, &sa, nullptr);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kRunFailure;
}

// runc --root <--root>/runc ARGS with its output discarded; its exit code.
int RuncQuiet(const GlobalOptions& global, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"runc", "--root", RuncRoot(global.root)};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunChild(argv, false, [] {
    int null_fd = ::open("/dev/null", O_WRONLY);
    if (null_fd >= 0) {
      ::dup2(null_fd, STDOUT_FILENO);
      ::dup2(null_fd, STDERR_FILENO);
    }
  });
}

// The fallback runtime: the process chrooted into rootfs in new mount, pid, uts and ipc
// namespaces (pid 1 of its namespace), /proc mounted.
[[noreturn]] void ExecChrooted(const std::string& rootfs, const std::string& hostname,
                               const std::vector<std::string>& args,
                               const std::vector<std::string>& env, const std::string& cwd,
                               const ResolvedUser& user) {
  auto die = [](const std::string& what) {
    std::fprintf(stderr, "imagefs: %s: %s\n", what.c_str(), std::strerror(errno));
    std::_Exit(kRunFailure);
  };
  if (::unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC) != 0) die("unshare");
  pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid > 0) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::_Exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("making / private");
  (void)::sethostname(hostname.data(), hostname.size());
  if (::mount("proc", (rootfs + "/proc").c_str(), "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV,
              nullptr) != 0) {
    die("mounting /proc");
  }
  if (::chroot(rootfs.c_str()) != 0) die("chroot " + rootfs);
  if (::chdir(cwd.c_str()) != 0) die("chdir " + cwd);
  std::vector<gid_t> groups(user.additional.begin(), user.additional.end());
  if (::setgroups(groups.size(), groups.data()) != 0) die("setgroups");
  if (::setgid(user.gid) != 0) die("setgid");
  if (::setuid(user.uid) != 0) die("setuid");
  std::vector<char*> cenv;
  for (const std::string& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  environ = cenv.data();
  std::vector<char*> cargv;
  for (const std::string& a : args) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  ::execvp(cargv[0], cargv.data());
  std::fprintf(stderr, "imagefs: exec %s: %s\n", cargv[0], std::strerror(errno));
  std::_Exit(127);
}

// Unmounts a container's rootfs and waits (bounded) for its serving daemon to end.
void UnmountRootfs(const std::string& root, const std::string& mountpoint) {
  pid_t daemon = 0;
  if (auto mounts = LiveMounts(root); mounts.ok()) {
    for (const MountRecord& m : *mounts) {
      if (m.mountpoint == mountpoint) daemon = m.pid;
    }
  }
  if (fs::IsImagefsMount(mountpoint) && ::umount2(mountpoint.c_str(), 0) != 0) {
    (void)::umount2(mountpoint.c_str(), MNT_DETACH);
  }
  if (daemon <= 0) return;
  for (int i = 0; i < 500; ++i) {
    int status = 0;
    if (::waitpid(daemon, &status, WNOHANG) == daemon) return;
    if (::kill(daemon, 0) != 0 && errno == ESRCH) return;
    // It forgets its record once done (profile written); a reaper may hold its zombie.
    if (!PathExists(root + "/mounts/" + std::to_string(daemon) + ".json")) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Everything after the mount: run the process, record its end, unmount, remove with --rm.
int Supervise(const GlobalOptions& global, ContainerRecord record, const RunOptions& opts,
              const std::string& dir, const std::string& hostname, const ResolvedUser& user,
              const std::vector<std::string>& env, const std::string& cwd,
              const std::string& unusable) {
  record.status = "running";
  record.started = static_cast<int64_t>(::time(nullptr));
  record.monitor_pid = ::getpid();
  (void)WriteContainer(global.root, record);
  int code;
  if (unusable.empty()) {
    code = RunChild({"runc", "--root", RuncRoot(global.root), "run", "--bundle", dir, record.id},
                    opts.interactive || opts.detach);
    (void)RuncQuiet(global, {"delete", "-f", record.id});
  } else {
    code = RunChild({"chroot"}, opts.interactive || opts.detach, [&] {
                      ExecChrooted(record.mountpoint, hostname, record.args, env, cwd, user);
                    });
  }
  record.status = "exited";
  record.exit_code = code;
  record.finished = static_cast<int64_t>(::time(nullptr));
  UnmountRootfs(global.root, record.mountpoint);
  if (opts.rm) {
    (void)RemoveAll(dir);
  } else {
    (void)WriteContainer(global.root, record);
  }
  return code;
}

std::vector<std::string> MergeEnv(const std::vector<std::string>& image_env,
                                  const std::vector<std::string>& flags,
                                  const std::string& hostname, const std::string& home) {
  std::vector<std::string> env;
  auto key_of = [](const std::string& kv) { return kv.substr(0, kv.find('=')); };
  auto set = [&](const std::string& kv) {
    const std::string key = key_of(kv);
    for (std::string& e : env) {
      if (key_of(e) == key) {
        e = kv;
        return;
      }
    }
    env.push_back(kv);
  };
  set(kDefaultPath);
  set("HOSTNAME=" + hostname);
  for (const std::string& e : image_env) set(e);
  for (const std::string& e : flags) {
    if (e.find('=') != std::string::npos) {
      set(e);
    } else if (const char* v = ::getenv(e.c_str()); v != nullptr) {
      set(e + "=" + v);  // docker: -e KEY takes the value from imagefs's environment
    }
  }
  bool has_home = false;
  for (const std::string& e : env) has_home = has_home || key_of(e) == "HOME";
  if (!has_home) env.push_back("HOME=" + home);
  return env;
}

Status WriteEtcFiles(const std::string& dir, const std::string& hostname, const std::string& net) {
  std::string resolv = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";
  if (auto host = ReadFile("/etc/resolv.conf"); host.ok() && net == "host") resolv = *host;
  RETURN_IF_ERROR(WriteFileAtomic(dir + "/resolv.conf", resolv));
  std::string hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  if (auto host = ReadFile("/etc/hosts"); host.ok() && net == "host") hosts = *host;
  hosts += "127.0.1.1\t" + hostname + "\n";
  RETURN_IF_ERROR(WriteFileAtomic(dir + "/hosts", hosts));
  return WriteFileAtomic(dir + "/hostname", hostname + "\n");
}

// docker's container name rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+
bool ValidName(const std::string& name) {
  if (name.size() < 2) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))) return false;
  }
  return true;
}

int DoRun(const GlobalOptions& global, RunOptions opts) {
  auto policy = ParsePullPolicy(opts.pull);
  if (!policy.ok()) return RunFail(policy.status().WithContext("run"));
  if (!opts.record_profile.empty()) opts.record_profile = AbsolutePath(opts.record_profile);
  const std::string unusable = RuncUnusable();
  if (!unusable.empty()) {
    std::fprintf(stderr,
                 "imagefs: runc cannot run containers here (%s); falling back to chroot in new "
                 "mount/pid/uts/ipc namespaces\n",
                 unusable.c_str());
  }
  if (Status made = MakeDirs(ContainersDir(global.root), 0700); !made.ok()) return RunFail(made);

  ContainerRecord record;
  {
    auto id = NewContainerId();
    if (!id.ok()) return RunFail(id.status());
    record.id = *id;
  }
  record.name = opts.name.empty() ? record.id.substr(0, 12) : opts.name;
  if (!opts.name.empty() && opts.name[0] == '/') record.name = opts.name.substr(1);
  if (!ValidName(record.name)) {
    return RunFail(Status::InvalidArgument("Invalid container name (" + opts.name +
                                           "), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"));
  }
  const std::string dir = ContainerDir(global.root, record.id);
  // Names are claimed under a lock on the containers dir.
  {
    UniqueFd lock(::open((ContainersDir(global.root) + "/.lock").c_str(),
                         O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock.valid() || ::flock(lock.get(), LOCK_EX) != 0) {
      return RunFail(Status::FromErrno(errno, "locking " + ContainersDir(global.root)));
    }
    for (const ContainerRecord& c : ListContainers(global.root)) {
      if (c.name == record.name) {
        return RunFail(Status::AlreadyExists(
            "Conflict. The container name \"/" + record.name +
            "\" is already in use by container \"" + c.id +
            "\". You have to remove (or rename) that container to be able to reuse that name."));
      }
    }
    record.image = opts.image;
    record.created = static_cast<int64_t>(::time(nullptr));
    record.upper = dir + "/upper";
    record.mountpoint = dir + "/rootfs";
    record.runtime = unusable.empty() ? "runc" : "chroot";
    if (Status st = MakeDirs(record.upper, 0755); !st.ok()) return RunFail(st);
    if (Status st = MakeDirs(record.mountpoint, 0755); !st.ok()) return RunFail(st);
    if (Status st = WriteContainer(global.root, record); !st.ok()) return RunFail(st);
  }
  auto abandon = [&](const Status& st) {
    UnmountRootfs(global.root, record.mountpoint);
    (void)RemoveAll(dir);
    return RunFail(st.WithContext("run"));
  };

  MountRequest req;
  req.image = opts.image;
  req.mountpoint = record.mountpoint;
  req.upper = record.upper;
  req.platform = opts.platform;
  req.pull = *policy;
  req.prefetch = opts.prefetch;
  req.record_profile = opts.record_profile;
  req.run = true;
  req.run_command = opts.command;
  req.run_env = opts.env;
  auto daemon = StartMount(global, req);
  if (!daemon.ok()) return abandon(daemon.status());
  // What the mount resolved the image to (origin.json, written before it mounted).
  {
    auto origin = ReadFile(record.upper + ".work/origin.json");
    if (origin.ok()) {
      const auto j = nlohmann::json::parse(*origin, nullptr, false);
      if (j.is_object()) record.manifest_digest = j.value("manifest_digest", "");
    }
  }
  // The config the mount resolved (its daemon wrote it beside origin.json): no second
  // round of registry requests, and the config always matches the mounted manifest.
  auto config_bytes = ReadFile(record.upper + ".work/image-config.json");
  if (!config_bytes.ok()) return abandon(config_bytes.status());
  auto parsed_config = fetch::ParseImageConfig(*config_bytes);
  if (!parsed_config.ok()) return abandon(parsed_config.status());
  const fetch::ImageConfig& config = *parsed_config;

  std::vector<std::string> args = config.entrypoint;
  if (!opts.command.empty()) {
    args.insert(args.end(), opts.command.begin(), opts.command.end());
  } else {
    args.insert(args.end(), config.cmd.begin(), config.cmd.end());
  }
  if (args.empty()) return abandon(Status::InvalidArgument("No command specified"));
  record.args = args;
  auto user = ResolveUser(record.mountpoint, opts.user.empty() ? config.user : opts.user);
  if (!user.ok()) return abandon(user.status());
  std::string cwd = opts.workdir.empty() ? config.working_dir : opts.workdir;
  if (cwd.empty()) cwd = "/";
  if (cwd[0] != '/') return abandon(Status::InvalidArgument("the working directory '" + cwd +
                                                            "' is invalid, it needs to be an absolute path"));
  const std::string hostname = record.id.substr(0, 12);
  const std::vector<std::string> env = MergeEnv(config.env, opts.env, hostname, user->home);

  auto init = MakeInitPaths(record.mountpoint);
  if (!init.ok()) return abandon(init.status());
  record.init_paths = *init;
  if (Status st = WriteEtcFiles(dir, hostname, opts.net); !st.ok()) return abandon(st);
  const std::string config_json =
      BundleConfig(dir, hostname, args, env, cwd, *user, opts.net).dump(2) + "\n";
  if (Status st = WriteFileAtomic(dir + "/config.json", config_json); !st.ok()) return abandon(st);
  if (Status st = WriteContainer(global.root, record); !st.ok()) return abandon(st);

  LogPhase("runtime-start");  // the bundle is ready; runc (or chroot) starts next
  if (!opts.detach) {
    return Supervise(global, record, opts, dir, hostname, *user, env, cwd, unusable);
  }
  // -d: a monitor in its own session waits for the container; print the id.
  std::fflush(nullptr);
  pid_t monitor = ::fork();
  if (monitor < 0) return abandon(Status::FromErrno(errno, "fork"));
  if (monitor == 0) {
    ::setsid();
    const std::string log_path = dir + "/container.log";
    int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
    std::_Exit(Supervise(global, record, opts, dir, hostname, *user, env, cwd, unusable));
  }
  // Return once runc knows the container (so rm -f, ps and runc see it), or the monitor
  // has ended.
  for (int i = 0; i < 500; ++i) {
    if (!unusable.empty() || RuncQuiet(global, {"state", record.id}) == 0) break;
    int status = 0;
    if (::waitpid(monitor, &status, WNOHANG) == monitor) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::printf("%s\n", record.id.c_str());
  return 0;
}

std::string PsStatus(const ContainerRecord& r, int64_t now) {
  if (ContainerRunning(r)) {
    if (r.status == "created") return "Created";
    return "Up " + HumanDuration(now - r.started);
  }
  if (r.status == "created") return "Created";
  if (r.finished == 0) return "Exited (" + std::to_string(r.exit_code) + ")";
  return "Exited (" + std::to_string(r.exit_code) + ") " + HumanDuration(now - r.finished) + " ago";
}

// Kills a running container and waits (bounded) for its monitor to record the end.
Status StopContainer(const GlobalOptions& global, const ContainerRecord& r) {
  for (int i = 0; i < 500; ++i) {
    if (i % 25 == 0) {  // again every half second: runc may not have created it yet
      if (r.runtime == "runc") {
        (void)RuncQuiet(global, {"kill", r.id, "KILL"});
      } else if (r.monitor_pid > 0) {
        (void)::kill(r.monitor_pid, SIGKILL);
      }
    }
    auto now = ReadContainer(global.root, r.id);
    if (!now.ok() || !ContainerRunning(*now)) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (r.monitor_pid > 0) (void)::kill(r.monitor_pid, SIGKILL);
  return Status::Ok();
}

}  // namespace

int RunRun(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("imagefs run [OPTIONS] IMAGE [COMMAND [ARG...]]\n"
               "Run a command in a new container over IMAGE, mounted lazily and writable\n"
               "(runc; the container's changes stay for imagefs diff unless --rm).\n"
               "Exit code: the container's, or 125 when imagefs itself fails.",
               "imagefs run");
  RunOptions opts;
  app.add_flag("--rm", opts.rm, "Remove the container (unmount, delete its dir) when it exits");
  app.add_option("--name", opts.name, "Assign a name to the container");
  app.add_option("-e,--env", opts.env, "Set environment variables (KEY=VALUE, or KEY)");
  app.add_option("-w,--workdir", opts.workdir, "Working directory inside the container");
  app.add_option("-u,--user", opts.user, "Username or UID (format: <name|uid>[:<group|gid>])");
  app.add_option("--net,--network", opts.net,
                 "host: the host's network (default; there is no docker bridge here); none: "
                 "a new, empty network namespace")
      ->check(CLI::IsMember({"host", "none"}));
  app.add_flag("-d,--detach", opts.detach, "Run in the background and print the container id");
  app.add_flag("-i,--interactive", opts.interactive, "Keep STDIN attached");
  app.add_option("--platform", opts.platform, "os/arch[/variant] to pick from a multi-arch image");
  app.add_option("--pull", opts.pull, "Pull image before running: missing (default), always, never");
  app.add_option("--prefetch", opts.prefetch, "As imagefs mount: auto (default), none, all")
      ->check(CLI::IsMember({"auto", "none", "all"}));
  app.add_option("--record-profile", opts.record_profile,
                 "At exit, write lower file paths in first-read order (imagefs mount's)");
  app.add_option("IMAGE", opts.image, "The image")->required();
  // Everything after IMAGE is the command: find IMAGE, the first word that is neither a
  // flag nor a flag's value.
  static const std::set<std::string> kTakesValue = {
      "--name", "-e", "--env", "-w", "--workdir", "-u", "--user", "--net", "--network",
      "--platform", "--pull", "--prefetch", "--record-profile"};
  size_t image_at = args.size();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      image_at = i + 1 < args.size() ? i + 1 : args.size();
      break;
    }
    if (a.size() > 1 && a[0] == '-') {
      if (kTakesValue.count(a) != 0) ++i;
      continue;
    }
    image_at = i;
    break;
  }
  std::vector<std::string> cli_args(args.begin(),
                                    args.begin() + static_cast<std::ptrdiff_t>(
                                                       std::min(image_at + 1, args.size())));
  if (image_at < args.size()) {
    opts.command.assign(args.begin() + static_cast<std::ptrdiff_t>(image_at) + 1, args.end());
  }
  if (int rc = ParseCommandLine(app, "run", cli_args); rc >= 0) return rc == 0 ? 0 : kRunFailure;
  return DoRun(global, std::move(opts));
}

int RunPs(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("List containers, as docker ps.", "imagefs ps");
  bool all = false, quiet = false;
  app.add_flag("-a,--all", all, "Show all containers (default shows just running)");
  app.add_flag("-q,--quiet", quiet, "Only display container IDs");
  if (int rc = ParseCommandLine(app, "ps", args); rc >= 0) return rc;
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  std::string table = quiet ? "" : "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tPORTS\tNAMES\n";
  for (const ContainerRecord& r : ListContainers(global.root)) {
    if (!all && !ContainerRunning(r)) continue;
    const std::string short_id = r.id.substr(0, 12);
    if (quiet) {
      table += short_id + "\n";
      continue;
    }
    std::string quoted = "\"";  // Go's strconv.Quote of printable text
    for (char c : Ellipsis(ContainerCommand(r), 20)) {
      if (c == '"' || c == '\\') quoted += '\\';
      quoted += c;
    }
    quoted += '"';
    table += short_id + "\t" + r.image + "\t" + quoted + "\t" +
             CreatedSince(r.created, now) + "\t" + PsStatus(r, now) + "\t\t" + r.name + "\n";
  }
  std::fputs(quiet ? table.c_str() : TabWrite(table).c_str(), stdout);
  return 0;
}

int RunRm(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Remove containers: unmount and delete their dirs.", "imagefs rm");
  bool force = false;
  std::vector<std::string> names;
  app.add_flag("-f,--force", force, "Kill running containers first");
  app.add_option("CONTAINER", names, "Container names or ids")->required();
  if (int rc = ParseCommandLine(app, "rm", args); rc >= 0) return rc;
  int rc = 0;
  for (const std::string& name : names) {
    auto r = FindContainer(global.root, name);
    if (!r.ok()) {
      rc = Fail(Status::NotFound("Error response from daemon: " + r.status().message()));
      continue;
    }
    if (ContainerRunning(*r)) {
      if (!force) {
        rc = Fail(Status::InvalidArgument(
            "Error response from daemon: You cannot remove a running container " + r->id +
            ". Stop the container before attempting removal or force remove"));
        continue;
      }
      (void)StopContainer(global, *r);
    }
    // A monitor killed with -9 leaves runc's container behind: take it down first.
    if (r->runtime == "runc") (void)RuncQuiet(global, {"delete", "-f", r->id});
    UnmountRootfs(global.root, r->mountpoint);
    if (Status st = RemoveAll(ContainerDir(global.root, r->id)); !st.ok()) {
      rc = Fail(st);
      continue;
    }
    std::printf("%s\n", name.c_str());
  }
  return rc;
}

}  // namespace imagefs::tools
