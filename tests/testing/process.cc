#include "tests/testing/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "util/unique_fd.h"

extern char** environ;

namespace imagefs::testing {
namespace {

using Clock = std::chrono::steady_clock;

// argv/envp as the exec family wants them, built before fork so the child only makes
// async-signal-safe calls.
struct CStringArray {
  std::vector<std::string> storage;
  std::vector<char*> pointers;

  void Seal() {
    pointers.clear();
    for (std::string& s : storage) pointers.push_back(s.data());
    pointers.push_back(nullptr);
  }
};

bool IsRemoved(std::string_view name, const std::vector<std::string>& removals) {
  for (const std::string& r : removals) {
    if (!r.empty() && r.back() == '*') {
      if (name.substr(0, r.size() - 1) == std::string_view(r).substr(0, r.size() - 1)) {
        return true;
      }
    } else if (name == r) {
      return true;
    }
  }
  return false;
}

CStringArray BuildEnv(const ProcessOptions& options) {
  CStringArray env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    std::string_view name = entry.substr(0, entry.find('='));
    if (IsRemoved(name, options.env_remove)) continue;
    bool overridden = false;
    for (const auto& [k, v] : options.env_set) overridden |= (k == name);
    if (!overridden) env.storage.emplace_back(entry);
  }
  for (const auto& [k, v] : options.env_set) env.storage.push_back(k + "=" + v);
  env.Seal();
  return env;
}

// Finds argv0 in $PATH (as execvp would), so the child can call plain execve.
Result<std::string> ResolveProgram(const std::string& argv0) {
  if (argv0.empty()) return Status::InvalidArgument("empty argv");
  if (argv0.find('/') != std::string::npos) return argv0;
  std::string path = ::getenv("PATH") != nullptr ? ::getenv("PATH") : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + argv0;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return Status::NotFound("starting " + argv0 + ": not found in $PATH");
}

struct ChildFds {
  int in = -1;
  int out = -1;
  int err = -1;
};

// fork + execve. In the child: the given fds become 0/1/2, the signal mask and SIGPIPE
// are reset, and with die_with_parent the child gets SIGTERM when this process dies (so a
// crashed test leaves no registry behind). Exec failures come back through a CLOEXEC pipe.
Result<pid_t> Spawn(const ProcessOptions& options, ChildFds fds, bool die_with_parent) {
  ASSIGN_OR_RETURN(std::string program, ResolveProgram(options.argv.empty() ? "" : options.argv[0]));
  CStringArray argv;
  argv.storage = options.argv;
  argv.Seal();
  CStringArray envp = BuildEnv(options);
  const char* cwd = options.cwd.empty() ? nullptr : options.cwd.c_str();

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd report_read(report[0]);
  UniqueFd report_write(report[1]);
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork for " + options.argv[0]);
  if (pid == 0) {
    int err = 0;
    if (die_with_parent) {
      if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(127);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    // Move the fds above 2 first so dup2 order cannot clobber one with another.
    int in = ::fcntl(fds.in, F_DUPFD_CLOEXEC, 3);
    int out = ::fcntl(fds.out, F_DUPFD_CLOEXEC, 3);
    int errfd = ::fcntl(fds.err, F_DUPFD_CLOEXEC, 3);
    if (in < 0 || out < 0 || errfd < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 ||
        ::dup2(errfd, 2) < 0 || (cwd != nullptr && ::chdir(cwd) != 0)) {
      err = errno;
    } else {
      ::execve(program.c_str(), argv.pointers.data(), envp.pointers.data());
      err = errno;
    }
    ssize_t ignored = ::write(report[1], &err, sizeof err);
    (void)ignored;
    ::_exit(127);
  }
  report_write.Reset();
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report_read.get(), &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    int status;
    ::waitpid(pid, &status, 0);
    return Status::FromErrno(child_errno, "starting " + program);
  }
  return pid;
}

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Blocks SIGPIPE in the calling thread while alive, so writing to a pipe whose reader
// exited fails with EPIPE instead of killing the test; swallows a pending one at the end.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~ScopedSigpipeBlock() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    struct timespec zero = {0, 0};
    while (::sigtimedwait(&set, nullptr, &zero) > 0) {
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t old_;
};

}  // namespace

std::string ProcessResult::Describe() const {
  std::string out = "exit " + std::to_string(exit_code);
  if (!stderr_text.empty()) out += ": " + stderr_text;
  if (!stdout_text.empty()) out += " (stdout: " + stdout_text + ")";
  return out;
}

std::string ShellQuote(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() && a.find_first_not_of(
                                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789-_./:=+@,%") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) {
      if (c == '\'') out += "'\\''";
      else out += c;
    }
    out += '\'';
  }
  return out;
}

Result<ProcessResult> RunProcess(const ProcessOptions& options) {
  ScopedSigpipeBlock no_sigpipe;
  int out_pipe[2], err_pipe[2], in_pipe[2] = {-1, -1};
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd err_read(err_pipe[0]), err_write(err_pipe[1]);
  UniqueFd in_read, in_write;
  if (options.use_stdin) {
    if (::pipe2(in_pipe, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
    in_read.Reset(in_pipe[0]);
    in_write.Reset(in_pipe[1]);
  } else {
    in_read.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!in_read) return Status::FromErrno(errno, "opening /dev/null");
  }

  ASSIGN_OR_RETURN(pid_t pid, Spawn(options, {in_read.get(), out_write.get(), err_write.get()},
                                    /*die_with_parent=*/true));
  in_read.Reset();
  out_write.Reset();
  err_write.Reset();
  for (int fd : {out_read.get(), err_read.get(), in_write.get()}) {
    if (fd >= 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }

  ProcessResult result;
  size_t stdin_done = 0;
  if (in_write && options.stdin_text.empty()) in_write.Reset();
  const auto deadline = Clock::now() + options.timeout;
  bool timed_out = false;
  while (out_read || err_read || in_write) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    struct pollfd pfds[3];
    int n = 0;
    UniqueFd* owners[3];
    std::string* sinks[3];
    auto add = [&](UniqueFd& fd, short events, std::string* sink) {
      if (!fd) return;
      pfds[n] = {fd.get(), events, 0};
      owners[n] = &fd;
      sinks[n] = sink;
      ++n;
    };
    add(out_read, POLLIN, &result.stdout_text);
    add(err_read, POLLIN, &result.stderr_text);
    add(in_write, POLLOUT, nullptr);
    int ready = ::poll(pfds, n, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0) {
      if (errno == EINTR) continue;
      Status st = Status::FromErrno(errno, "poll");
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return st;
    }
    for (int i = 0; i < n; ++i) {
      if (pfds[i].revents == 0) continue;
      if (sinks[i] != nullptr) {
        char buf[65536];
        ssize_t got = ::read(pfds[i].fd, buf, sizeof buf);
        if (got > 0) {
          sinks[i]->append(buf, static_cast<size_t>(got));
        } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
          owners[i]->Reset();
        }
      } else {
        ssize_t put = ::write(pfds[i].fd, options.stdin_text.data() + stdin_done,
                              options.stdin_text.size() - stdin_done);
        if (put > 0) stdin_done += static_cast<size_t>(put);
        if ((put < 0 && errno != EAGAIN && errno != EINTR) ||
            stdin_done == options.stdin_text.size()) {
          owners[i]->Reset();  // done, or the child closed its stdin
        }
      }
    }
  }

  int status = 0;
  while (!timed_out) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return Status::FromErrno(errno, "waitpid");
    if (Clock::now() >= deadline) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (timed_out) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return Status::Timeout(ShellQuote(options.argv) + ": still running after " +
                           std::to_string(options.timeout.count()) + " ms; stderr: " +
                           result.stderr_text);
  }
  result.exit_code = DecodeWaitStatus(status);
  return result;
}

Result<BackgroundProcess> BackgroundProcess::Start(const ProcessOptions& options,
                                                   const std::string& log_path) {
  UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!log) return Status::FromErrno(errno, "opening " + log_path);
  UniqueFd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null_in) return Status::FromErrno(errno, "opening /dev/null");
  ASSIGN_OR_RETURN(pid_t pid, Spawn(options, {null_in.get(), log.get(), log.get()},
                                    /*die_with_parent=*/true));
  BackgroundProcess process;
  process.pid_ = pid;
  process.log_path_ = log_path;
  return process;
}

BackgroundProcess::~BackgroundProcess() { Stop(); }

BackgroundProcess::BackgroundProcess(BackgroundProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      exit_code_(other.exit_code_),
      log_path_(std::move(other.log_path_)) {}

BackgroundProcess& BackgroundProcess::operator=(BackgroundProcess&& other) noexcept {
  if (this != &other) {
    Stop();
    pid_ = std::exchange(other.pid_, -1);
    exit_code_ = other.exit_code_;
    log_path_ = std::move(other.log_path_);
  }
  return *this;
}

bool BackgroundProcess::IsRunning() {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_code_ = DecodeWaitStatus(status);
    pid_ = -1;
    return false;
  }
  return true;
}

int BackgroundProcess::Stop(std::chrono::milliseconds stop_grace) {
  if (pid_ <= 0) return exit_code_;
  if (!IsRunning()) return exit_code_;
  ::kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + stop_grace;
  while (Clock::now() < deadline) {
    if (!IsRunning()) return exit_code_;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  int status;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_code_ = DecodeWaitStatus(status);
  pid_ = -1;
  return exit_code_;
}

}  // namespace imagefs::testing
