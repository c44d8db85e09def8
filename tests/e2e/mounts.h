#pragma once

// Mount helpers shared by the end-to-end tests: is a directory a mountpoint, and a guard
// that detaches whatever is still mounted at a directory when a test ends (also when it
// fails), so no test leaves a mount behind.

#include <sys/mount.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace imagefs::testing {

// Whether mountpoint (absolute, as /proc/self/mountinfo spells it) is a mountpoint.
inline bool IsMounted(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    if (point == mountpoint) return true;
  }
  return false;
}

// Unmounts whatever is still mounted at a directory when it goes out of scope.
class ScopedMount {
 public:
  explicit ScopedMount(std::string dir) : dir_(std::move(dir)) {}
  ~ScopedMount() {
    for (int i = 0; i < 5 && IsMounted(dir_); ++i) {
      if (::umount2(dir_.c_str(), MNT_DETACH) != 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace imagefs::testing
