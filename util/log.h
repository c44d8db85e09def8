#pragma once

// Minimal leveled logging to stderr (or a file once SetLogFile is called).
// Log once, where you give up: include the digest, range and errno. No info-level
// logging on the read path.
//   LOG(kWarn) << "chunk " << digest << " failed: " << st.message();

#include <sstream>
#include <string>
#include <string_view>

#include "util/status.h"

namespace imagefs {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "debug", "info", "warn"/"warning", "error", "off".
Result<LogLevel> ParseLogLevel(std::string_view name);
// Redirects log lines to a file (append). Used by the detached mount daemon.
Status SetLogFile(const std::string& path);

namespace internal {
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  std::ostream& stream() { return out_; }

 private:
  LogLevel level_;
  std::ostringstream out_;
};
struct Voidify {
  void operator&(std::ostream&) {}
};
}  // namespace internal

}  // namespace imagefs

// An expression, not an if/else, so `if (c) LOG(kWarn) << x;` needs no braces under any
// compiler's -Wdangling-else: `&` binds looser than `<<`, so the whole line is streamed
// first, and Voidify turns it into void for the conditional.
#define LOG(level)                                                              \
  (::imagefs::LogLevel::level < ::imagefs::GetLogLevel())                       \
      ? (void)0                                                                 \
      : ::imagefs::internal::Voidify() &                                        \
            ::imagefs::internal::LogLine(::imagefs::LogLevel::level, __FILE__, __LINE__).stream()
