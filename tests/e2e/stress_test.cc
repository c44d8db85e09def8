// Concurrency stress on a real writable mount (the busybox test image, gzip layers):
// writer threads create, write, read back, rename, unlink, mkdir and rmdir in shared
// directories while reader threads check lower files byte for byte, for
// IMAGEFS_STRESS_SECONDS (default 120). Every syscall must succeed and every read must
// return the bytes written. At the end everything made is removed, the kernel is told to
// drop its dentries and inodes (echo 2 > /proc/sys/vm/drop_caches: FUSE forgets), and the
// daemon's node count (the root's user.imagefs.debug.nodes) must be back at its baseline.
//
// The mount is undone by a ScopedMount destructor (umount2 with MNT_DETACH), also when an
// assertion fails.

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/mounts.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Clock = std::chrono::steady_clock;


// Collects the failures of many threads; keeps the first few messages.
class Failures {
 public:
  void Add(const std::string& what) {
    count_.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);
    if (messages_.size() < 10) messages_.push_back(what);
  }
  void Errno(const std::string& what) { Add(what + ": " + std::strerror(errno)); }
  int count() const { return count_.load(); }
  std::string Describe() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& m : messages_) out += m + "\n";
    return out;
  }

 private:
  std::atomic<int> count_{0};
  std::mutex mu_;
  std::vector<std::string> messages_;
};

bool WriteWhole(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) {
      ::close(fd);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return ::close(fd) == 0;
}

bool ReadWhole(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out->clear();
  char buf[1 << 15];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  return ::close(fd) == 0;
}

// The debug node count of the mount's daemon.
long NodeCount(const std::string& mnt) {
  char buf[32] = {};
  ssize_t n = ::getxattr(mnt.c_str(), "user.imagefs.debug.nodes", buf, sizeof buf - 1);
  if (n < 0) return -1;
  return std::atol(buf);
}

void DropCaches() {
  std::ofstream("/proc/sys/vm/drop_caches") << "2\n";
}

// Polls until the node count is `want` (forgets arrive asynchronously); returns the last.
long SettledNodeCount(const std::string& mnt, long want) {
  long got = -1;
  for (int i = 0; i < 50; ++i) {
    ::sync();
    DropCaches();
    got = NodeCount(mnt);
    if (got == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return got;
}

TEST(StressTest, ParallelWritersAndReadersKeepContentsAndLeakNoNodes) {
  int seconds = 120;
  if (const char* env = std::getenv("IMAGEFS_STRESS_SECONDS"); env != nullptr && *env != '\0') {
    seconds = std::atoi(env);
  }
  auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
  ASSERT_TRUE(reg.ok()) << reg.status().message();
  auto dir = MakeTempDir("/tmp", "stress-test-");
  ASSERT_TRUE(dir.ok());
  struct Cleanup {
    std::string dir;
    ~Cleanup() { (void)RemoveAll(dir); }
  } cleanup{*dir};
  auto image = TestImage("busybox");
  ASSERT_TRUE(image.ok()) << image.status().message();
  ASSERT_TRUE(PushImage(**reg, *image, "t/busybox:gzip", false).ok());
  const std::string ref = (*reg)->host() + "/t/busybox:gzip";
  // data/big.bin as scripts/build-test-images makes it.
  Shell("head -c $((20 << 20)) /dev/zero | openssl enc -aes-128-ctr -nosalt -K "
        "000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 > " +
        *dir + "/big.bin");
  auto big = ReadFile(*dir + "/big.bin");
  ASSERT_TRUE(big.ok());
  ASSERT_EQ(big->size(), 20u << 20);

  ScopedMount mnt(*dir + "/mnt");
  ASSERT_TRUE(MakeDirs(mnt.dir()).ok());
  ProcessResult r = RunImagefs({"--root", *dir + "/root", "mount", "--upper", *dir + "/upper",
                                ref, mnt.dir()},
                               (*reg)->client_env());
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  constexpr int kSharedDirs = 4;
  for (int d = 0; d < kSharedDirs; ++d) {
    ASSERT_EQ(::mkdir((mnt.dir() + "/s" + std::to_string(d)).c_str(), 0755), 0);
  }
  ::sync();
  DropCaches();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  DropCaches();
  const long baseline = NodeCount(mnt.dir());
  ASSERT_GT(baseline, 0);

  Failures failures;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0}, verified_bytes{0};
  const std::string root = mnt.dir();
  auto shared = [&](int d) { return root + "/s" + std::to_string(d); };

  // Writers: each owns the names it makes ("w<T>-<N>"), in shared directories.
  auto writer = [&](int t) {
    std::mt19937 rng(1234 + t);
    struct File {
      std::string path, bytes;
    };
    std::vector<File> files;
    std::vector<std::string> dirs;
    uint64_t next = 0;
    while (!stop.load()) {
      const int op = static_cast<int>(rng() % 10);
      const std::string name = "w" + std::to_string(t) + "-" + std::to_string(next++);
      const std::string dir_path = shared(static_cast<int>(rng() % kSharedDirs));
      if (op < 4 || files.empty()) {  // create + write + read back
        std::string bytes(1 + rng() % 200000, '\0');
        for (size_t i = 0; i < bytes.size(); i += 4096) bytes[i] = static_cast<char>(rng());
        bytes.back() = static_cast<char>(t);
        File f{dir_path + "/" + name, bytes};
        std::string back;
        if (!WriteWhole(f.path, f.bytes)) failures.Errno("create " + f.path);
        else if (!ReadWhole(f.path, &back)) failures.Errno("read back " + f.path);
        else if (back != f.bytes) failures.Add("read back " + f.path + ": other bytes");
        else files.push_back(std::move(f));
      } else if (op < 6) {  // rename one of ours into another shared dir, then verify
        File& f = files[rng() % files.size()];
        const std::string to = dir_path + "/" + name;
        std::string back;
        if (::rename(f.path.c_str(), to.c_str()) != 0) {
          failures.Errno("rename " + f.path + " " + to);
        } else {
          f.path = to;
          if (!ReadWhole(f.path, &back) || back != f.bytes) failures.Add("after rename " + to);
        }
      } else if (op < 8) {  // unlink one of ours
        size_t i = rng() % files.size();
        if (::unlink(files[i].path.c_str()) != 0) failures.Errno("unlink " + files[i].path);
        files.erase(files.begin() + static_cast<ptrdiff_t>(i));
      } else if (op < 9) {  // mkdir, or rmdir one of ours
        if (dirs.size() < 8 && rng() % 2 == 0) {
          const std::string d = dir_path + "/" + name + ".d";
          if (::mkdir(d.c_str(), 0755) != 0) failures.Errno("mkdir " + d);
          else dirs.push_back(d);
        } else if (!dirs.empty()) {
          if (::rmdir(dirs.back().c_str()) != 0) failures.Errno("rmdir " + dirs.back());
          dirs.pop_back();
        }
      } else {  // list a shared dir
        std::error_code ec;
        for (auto it = std::filesystem::directory_iterator(dir_path, ec);
             !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        }
        if (ec) failures.Add("listing " + dir_path + ": " + ec.message());
      }
      ops.fetch_add(1);
    }
    for (const File& f : files) {
      std::string back;
      if (!ReadWhole(f.path, &back) || back != f.bytes) failures.Add("at the end: " + f.path);
      if (::unlink(f.path.c_str()) != 0) failures.Errno("unlink " + f.path);
    }
    for (const std::string& d : dirs) {
      if (::rmdir(d.c_str()) != 0) failures.Errno("rmdir " + d);
    }
  };
  // Readers: random ranges of the lower data/big.bin and the small lower files.
  auto reader = [&](int t) {
    std::mt19937 rng(99 + t);
    const std::string path = root + "/data/big.bin";
    while (!stop.load()) {
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        failures.Errno("open " + path);
        continue;
      }
      for (int i = 0; i < 64; ++i) {
        const size_t len = 1 + rng() % (256 << 10);
        const size_t off = rng() % (big->size() - len);
        std::string buf(len, '\0');
        ssize_t n = ::pread(fd, buf.data(), len, static_cast<off_t>(off));
        if (n != static_cast<ssize_t>(len)) failures.Errno("pread " + path);
        else if (buf.compare(0, len, *big, off, len) != 0) failures.Add("other bytes in " + path);
        else verified_bytes.fetch_add(len);
      }
      ::close(fd);
      std::string hello;
      if (!ReadWhole(root + "/data/hello.txt", &hello) || hello != "hello from imagefs\n") {
        failures.Add("data/hello.txt");
      }
      ops.fetch_add(1);
    }
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(writer, t);
  for (int t = 0; t < 2; ++t) threads.emplace_back(reader, t);
  const auto until = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < until && failures.count() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.count(), 0) << failures.Describe();
  EXPECT_GT(ops.load(), 100u);
  std::printf("stress: %d s, %llu operations, %llu lower bytes verified\n", seconds,
              static_cast<unsigned long long>(ops.load()),
              static_cast<unsigned long long>(verified_bytes.load()));

  // Everything made is gone: the shared dirs are empty and the nodes are forgotten.
  for (int d = 0; d < kSharedDirs; ++d) {
    EXPECT_EQ(Shell("ls -A " + shared(d)), "") << shared(d);
  }
  const long peak = NodeCount(mnt.dir());
  EXPECT_EQ(SettledNodeCount(mnt.dir(), baseline), baseline) << "peak " << peak;
  std::printf("stress: daemon nodes %ld before the cleanup's forgets, %ld at baseline\n", peak,
              baseline);
  EXPECT_EQ(RunImagefs({"--root", *dir + "/root", "umount", mnt.dir()}).exit_code, 0);
}

}  // namespace
}  // namespace imagefs::testing
