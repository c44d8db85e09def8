#pragma once

// Small filesystem helpers. All return errors as values naming the path.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "util/status.h"

namespace imagefs {

Result<std::string> ReadFile(const std::string& path);
// Writes data to a temporary name in the same directory, fsyncs it and renames it over
// path, so readers see either the old or the whole new file. Creates parent dirs.
// Writes all of data to fd (retrying short writes and EINTR); errors say "writing <what>".
Status WriteAll(int fd, std::string_view data, const std::string& what);
// Reads up to n bytes from fd's position (retrying EINTR); 0 at the end of the file.
Result<size_t> ReadSome(int fd, void* buf, size_t n, const std::string& what);
// Reads at offset until out is full or the file ends (retrying short reads and EINTR);
// returns the count.
Result<size_t> PreadFull(int fd, std::span<uint8_t> out, uint64_t offset, const std::string& what);
// Writes all of data at offset (retrying short writes and EINTR).
Status PwriteAll(int fd, std::span<const uint8_t> data, uint64_t offset, const std::string& what);
Status WriteFileAtomic(const std::string& path, std::string_view data, int mode = 0644);
// mkdir -p.
Status MakeDirs(const std::string& path, int mode = 0755);
// rm -rf; missing is fine.
Status RemoveAll(const std::string& path);
bool PathExists(const std::string& path);
// A fresh directory "<parent>/<prefix>XXXXXX".
Result<std::string> MakeTempDir(const std::string& parent, const std::string& prefix);
// Parent directory of a path ("a/b" -> "a", "b" -> ".").
std::string Dirname(const std::string& path);
// $NAME or "" when unset.
std::string GetEnv(const char* name);
// The user's home: $HOME, else the passwd entry.
std::string HomeDir();

}  // namespace imagefs
