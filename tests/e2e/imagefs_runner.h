#pragma once

// Runs the real imagefs binary (IMAGEFS_BIN, set by ctest) for end-to-end tests.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/testing/process.h"
#include "util/file.h"

namespace imagefs::testing {

inline std::string ImagefsBinary() {
  std::string bin = GetEnv("IMAGEFS_BIN");
  return bin.empty() ? std::string(IMAGEFS_BINARY_DIR) + "/tools/imagefs" : bin;
}

// Runs `imagefs ARGS...` with extra environment; a failure to start is a test failure.
inline ProcessResult RunImagefs(const std::vector<std::string>& args,
                                std::vector<std::pair<std::string, std::string>> env = {},
                                const std::string& stdin_text = "",
                                std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  ProcessOptions options;
  options.argv.push_back(ImagefsBinary());
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.env_set = std::move(env);
  options.env_remove = {"REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF", "IMAGEFS_ROOT"};
  if (!stdin_text.empty()) {
    options.stdin_text = stdin_text;
    options.use_stdin = true;
  }
  options.timeout = timeout;
  auto r = RunProcess(options);
  if (!r.ok()) {
    ProcessResult failed;
    failed.exit_code = -1;
    failed.stderr_text = r.status().ToString();
    return failed;
  }
  return *r;
}

// Runs `bash -c script`; with exit_code, hands back its exit code, else a non-zero exit is
// a test failure. Returns standard output.
inline std::string Shell(const std::string& script, int* exit_code = nullptr) {
  ProcessOptions o;
  o.argv = {"bash", "-c", script};
  o.timeout = std::chrono::minutes(5);
  auto r = RunProcess(o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return "";
  if (exit_code != nullptr) {
    *exit_code = r->exit_code;
  } else {
    EXPECT_EQ(r->exit_code, 0) << script << "\n" << r->Describe();
  }
  return r->stdout_text;
}

// Waits (up to `timeout`) until a mount daemon's log under ROOT/logs/ holds `needle`, e.g.
// "phase prefetched" once the background prefetch has ended. Returns whether it did.
inline bool WaitForDaemonLog(const std::string& root, const std::string& needle,
                             std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    ProcessOptions o;
    o.argv = {"grep", "-rqF", "--", needle, root + "/logs"};
    auto r = RunProcess(o);
    if (r.ok() && r->exit_code == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (std::chrono::steady_clock::now() < deadline);
  return false;
}

// The lines of text, without their newlines.
inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    out.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

// docker's sizes (go-units HumanSizeWithPrecision(size, 3)): "512B", "1.23MB".
inline std::string DockerSize(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB"};
  int u = 0;
  while (bytes >= 1000 && u < 3) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g%s", bytes, units[u]);
  return buf;
}

// Number of lines in text (a trailing newline does not start a new line).
inline int LineCount(const std::string& text) {
  int n = 0;
  for (char c : text) n += c == '\n';
  if (!text.empty() && text.back() != '\n') ++n;
  return n;
}

}  // namespace imagefs::testing
