#pragma once

// Subprocesses for tests: run a command to completion capturing its output, or keep one
// running in the background (a registry) and stop it by PID when done.
//
// Only processes started here are ever signalled, always by the PID posix_spawn returned,
// and they are reaped by this process, so a PID is never reused while we hold it.

#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "util/status.h"

namespace imagefs::testing {

struct ProcessOptions {
  // argv[0] is looked up in $PATH when it has no slash.
  std::vector<std::string> argv;
  // Variables to set (or override) in the child's environment, which starts as ours.
  std::vector<std::pair<std::string, std::string>> env_set;
  // Variables to remove. An entry ending in '*' removes every variable with that prefix
  // ("REGISTRY_*"). Removals apply before env_set.
  std::vector<std::string> env_remove;
  // Written to the child's stdin, which is then closed. Without it stdin is /dev/null.
  std::string stdin_text;
  bool use_stdin = false;
  // Working directory; empty keeps ours.
  std::string cwd;
  // The child is killed (SIGKILL) when it runs longer; RunProcess then returns kTimeout.
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};
};

struct ProcessResult {
  int exit_code = -1;  // exit status, or 128 + signal number when killed by a signal
  std::string stdout_text;
  std::string stderr_text;

  bool ok() const { return exit_code == 0; }
  // "exit 1: <stderr>" for assertion messages.
  std::string Describe() const;
};

// Runs a command to completion. A non-zero exit is not an error here (look at exit_code);
// failing to start it or a timeout is. Thread-safe.
Result<ProcessResult> RunProcess(const ProcessOptions& options);

// "a b 'c d'": a command line for messages.
std::string ShellQuote(const std::vector<std::string>& argv);

// A child running in the background with stdout and stderr appended to a log file.
// The destructor stops it: SIGTERM, up to `stop_grace` for it to exit, then SIGKILL; it
// always reaps the child. Not thread-safe; move-only.
// Children also get SIGTERM when the thread that started them exits (PR_SET_PDEATHSIG), so
// a crashed test leaves nothing running: start long-lived ones from a long-lived thread.
class BackgroundProcess {
 public:
  // options.stdin_text, use_stdin and timeout are ignored (stdin is /dev/null).
  static Result<BackgroundProcess> Start(const ProcessOptions& options,
                                         const std::string& log_path);

  BackgroundProcess() = default;
  ~BackgroundProcess();
  BackgroundProcess(BackgroundProcess&& other) noexcept;
  BackgroundProcess& operator=(BackgroundProcess&& other) noexcept;
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // True while the child has not exited. Reaps it when it has (exit_code() then tells).
  bool IsRunning();
  int exit_code() const { return exit_code_; }
  // Stops the child as the destructor does. Returns its exit code (128 + signal).
  int Stop(std::chrono::milliseconds stop_grace = std::chrono::seconds(5));

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  std::string log_path_;
};

}  // namespace imagefs::testing
