#include "util/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace imagefs {
namespace {
std::atomic<LogLevel> g_level{LogLevel::kWarn};
std::mutex g_mu;
FILE* g_out = nullptr;  // guarded by g_mu; nullptr means stderr
}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(level); }
LogLevel GetLogLevel() { return g_level.load(std::memory_order_relaxed); }

Result<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  if (name == "off" || name == "none") return LogLevel::kOff;
  return Status::InvalidArgument("log level \"" + std::string(name) +
                                 "\": use debug, info, warn, error or off");
}

Status SetLogFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "ae");
  if (f == nullptr) return Status::FromErrno(errno, "opening log file " + path);
  std::setvbuf(f, nullptr, _IOLBF, 0);
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_out != nullptr) std::fclose(g_out);
  g_out = f;
  return Status::Ok();
}

namespace internal {
LogLine::LogLine(LogLevel level, const char* file, int line) : level_(level) {
  static const char* const kNames[] = {"debug", "info", "warn", "error", "off"};
  const char* base = file;
  for (const char* p = file; *p != '\0'; ++p) {
    if (*p == '/') base = p + 1;
  }
  out_ << kNames[static_cast<int>(level_)] << " " << base << ":" << line << ": ";
}

LogLine::~LogLine() {
  out_ << '\n';
  std::string text = out_.str();
  std::lock_guard<std::mutex> lock(g_mu);
  FILE* f = g_out != nullptr ? g_out : stderr;
  if (g_out != nullptr) {
    char stamp[32];
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    std::fputs(stamp, f);
  }
  std::fwrite(text.data(), 1, text.size(), f);
}
}  // namespace internal

}  // namespace imagefs
