// Faults under a real mount (the busybox test image converted to imagefs zstd:chunked):
//   - the registry goes away (stopped: connections refused) or hangs (SIGSTOP): a read
//     fails with EIO within about --fetch-timeout, the mount stays up and reads work again
//     once the registry is back on the same port;
//   - a layer blob's bytes change after the index was read: the read fails with EIO, the
//     daemon logs a line naming the layer and no file bytes, and nothing corrupt is cached
//     (with the blob restored the same read returns the right bytes);
//   - the chunk cache's disk is full: reads are served uncached, with one warning;
//   - the upper dir's disk is full: writes fail with ENOSPC, the mount goes on serving.
//
// Every mount (imagefs and the tmpfs ones made here) is undone by a ScopedMount destructor
// (umount2 with MNT_DETACH), also when an assertion fails; a stopped registry is continued.

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/mounts.h"
#include "tests/e2e/oracle.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Clock = std::chrono::steady_clock;


// Reads a whole file with read(2); on failure returns the errno (0 on success).
int ReadAll(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  out->clear();
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return e;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return 0;
}

// Writes `size` bytes to a new file and closes it; returns the first errno (0 on success).
int WriteNew(const std::string& path, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  std::string block(1 << 16, 'x');
  int err = 0;
  for (size_t done = 0; done < size && err == 0;) {
    size_t n = std::min(block.size(), size - done);
    ssize_t w = ::write(fd, block.data(), n);
    if (w < 0) err = errno;
    else done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 && err == 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

std::string Sha256Hex(const std::string& bytes, const std::string& dir) {
  const std::string tmp = dir + "/sha-input";
  EXPECT_TRUE(WriteFileAtomic(tmp, bytes).ok());
  std::string out = Shell("sha256sum < " + tmp + " | cut -c1-64");
  ::unlink(tmp.c_str());
  return out;
}

class MountFaultsTest : public RegistrySuite {
 protected:
  static void SetUpTestSuite() {
    StartRegistrySuite("mount-faults-test-");
    if (HasFatalFailure()) return;
    auto image = TestImage("busybox");
    ASSERT_TRUE(image.ok()) << image.status().message();
    ref_ = new std::string(registry_->host() + "/t/busybox:zc");
    Convert("zstd-chunked", "oci:" + *image, *ref_);
    // data/big.bin as scripts/build-test-images makes it.
    big_sha_ = new std::string(Shell(
        "head -c $((20 << 20)) /dev/zero | openssl enc -aes-128-ctr -nosalt -K "
        "000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 | "
        "sha256sum | cut -c1-64"));
  }
  static void TearDownTestSuite() {
    delete ref_;
    ref_ = nullptr;
    delete big_sha_;
    big_sha_ = nullptr;
    RegistrySuite::TearDownTestSuite();
  }

  std::string NewDir(const std::string& prefix) {
    auto d = MakeTempDir(*dir_, prefix);
    EXPECT_TRUE(d.ok());
    return d.ok() ? *d : "";
  }

  // The mount daemon's log (root_/logs/mount-PID.log; one mount per root here).
  std::string MountLog() {
    std::string all;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root_ + "/logs", ec)) {
      all += ReadFile(e.path().string()).value_or("");
    }
    return all;
  }

  // The largest blob file in the registry's storage: the layer holding data/big.bin.
  std::string LargestBlobFile() {
    std::string best;
    uintmax_t best_size = 0;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(
             registry_->storage_dir() + "/docker/registry/v2/blobs", ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file() || it->path().filename() != "data") continue;
      if (it->file_size() > best_size) best = it->path().string(), best_size = it->file_size();
    }
    return best;
  }

  inline static std::string* ref_ = nullptr;
  inline static std::string* big_sha_ = nullptr;
};

TEST_F(MountFaultsTest, ReadsFailWithinTheFetchTimeoutWhileTheRegistryIsGoneThenRecover) {
  ScopedMount mnt(NewDir("mnt-"));
  ProcessResult r = Imagefs({"mount", "--read-only", "--prefetch", "none", "--fetch-timeout",
                             "3s", *ref_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  // Gone: connections are refused until the deadline.
  registry_->Stop();
  std::string bytes;
  auto start = Clock::now();
  EXPECT_EQ(ReadAll(mnt.dir() + "/data/hello.txt", &bytes), EIO);
  auto took = Clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(2500));
  EXPECT_LE(took, std::chrono::seconds(10));
  // The mount is up: metadata comes from the index.
  struct stat st;
  EXPECT_EQ(::stat((mnt.dir() + "/data/big.bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 20 << 20);

  // Back on the same port: the same read succeeds.
  ASSERT_TRUE(registry_->Restart().ok());
  EXPECT_EQ(ReadAll(mnt.dir() + "/data/hello.txt", &bytes), 0);
  EXPECT_EQ(bytes, "hello from imagefs\n");

  // Hung (accepts connections, never answers): the stall is cut to the same bound.
  const pid_t pid = registry_->pid();
  ASSERT_EQ(::kill(pid, SIGSTOP), 0);
  struct Continue {
    pid_t pid;
    ~Continue() { ::kill(pid, SIGCONT); }
  } cont{pid};
  start = Clock::now();
  EXPECT_EQ(ReadAll(mnt.dir() + "/data/big.bin", &bytes), EIO);
  took = Clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(2500));
  EXPECT_LE(took, std::chrono::seconds(15));
  ::kill(pid, SIGCONT);
  EXPECT_EQ(ReadAll(mnt.dir() + "/data/big.bin", &bytes), 0);
  EXPECT_EQ(Sha256Hex(bytes, *dir_), *big_sha_);
  EXPECT_TRUE(IsMounted(mnt.dir()));
  EXPECT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
}

TEST_F(MountFaultsTest, ACorruptChunkIsEioLoggedByLayerAndNeverCached) {
  ScopedMount mnt(NewDir("mnt-"));
  ProcessResult r = Imagefs({"mount", "--read-only", "--prefetch", "none", *ref_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  // The index is read; now flip one byte in the middle of the largest layer (inside
  // data/big.bin's incompressible bytes, stored as raw zstd blocks).
  const std::string biggest = LargestBlobFile();
  const uint64_t biggest_size = biggest.empty() ? 0 : std::filesystem::file_size(biggest);
  ASSERT_GT(biggest_size, 10u << 20);
  auto original = ReadFile(biggest);
  ASSERT_TRUE(original.ok());
  std::string corrupt = *original;
  corrupt[corrupt.size() / 2] ^= 0x5a;
  ASSERT_TRUE(WriteFileAtomic(biggest, corrupt).ok());
  struct Restore {
    std::string path, bytes;
    ~Restore() { (void)WriteFileAtomic(path, bytes); }
  } restore{biggest, *original};

  std::string bytes;
  EXPECT_EQ(ReadAll(mnt.dir() + "/data/big.bin", &bytes), EIO);
  const std::string log = MountLog();
  EXPECT_NE(log.find("read of inode"), std::string::npos) << log;
  std::istringstream lines(log);
  int failures = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("failed") == std::string::npos) continue;
    ++failures;
    EXPECT_NE(line.find("layer sha256:"), std::string::npos) << line;
    EXPECT_TRUE(line.find("digest mismatch") != std::string::npos ||
                line.find("corrupt") != std::string::npos) << line;
    EXPECT_LT(line.size(), 600u) << "a log line must not carry file bytes";
  }
  EXPECT_GE(failures, 1) << log;

  // Blob restored: the same read is served right (no corrupt chunk was cached), while
  // the small file of another layer was never affected.
  ASSERT_TRUE(WriteFileAtomic(biggest, *original).ok());
  EXPECT_EQ(ReadAll(mnt.dir() + "/data/big.bin", &bytes), 0);
  EXPECT_EQ(Sha256Hex(bytes, *dir_), *big_sha_);
  EXPECT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
}

TEST_F(MountFaultsTest, AFullCacheDiskServesReadsUncachedWithOneWarning) {
  // The chunk store on a 1 MiB tmpfs: no 4 MiB chunk of data/big.bin fits.
  ScopedMount chunks(root_ + "/chunks");
  ASSERT_TRUE(MakeDirs(chunks.dir()).ok());
  ASSERT_EQ(::mount("tmpfs", chunks.dir().c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  ScopedMount mnt(NewDir("mnt-"));
  ProcessResult r = Imagefs({"mount", "--read-only", "--prefetch", "none", *ref_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  for (int i = 0; i < 2; ++i) {
    std::string bytes;
    ASSERT_EQ(ReadAll(mnt.dir() + "/data/big.bin", &bytes), 0);
    EXPECT_EQ(Sha256Hex(bytes, *dir_), *big_sha_);
    Shell("echo 1 > /proc/sys/vm/drop_caches");
  }
  EXPECT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
  // The store thread logs the warning; the daemon may still be finishing.
  std::string log = MountLog();
  for (int i = 0; i < 50 && log.find("chunk cache:") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    log = MountLog();
  }
  size_t first = log.find("chunk cache:");
  ASSERT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find("chunk cache:", first + 1), std::string::npos) << "one warning only:\n" << log;
  EXPECT_EQ(log.find("read of inode"), std::string::npos) << log;
}

TEST_F(MountFaultsTest, AFullUpperDirFailsWritesWithEnospcAndTheMountGoesOn) {
  ScopedMount disk(NewDir("upper-disk-"));
  ASSERT_EQ(::mount("tmpfs", disk.dir().c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  ScopedMount mnt(NewDir("mnt-"));
  ProcessResult r = Imagefs({"mount", "--prefetch", "none", "--upper", disk.dir() + "/upper",
                             *ref_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  EXPECT_EQ(WriteNew(mnt.dir() + "/too-big", 4 << 20), ENOSPC);
  EXPECT_EQ(::unlink((mnt.dir() + "/too-big").c_str()), 0) << std::strerror(errno);
  // Space again: writes and reads go on. FUSE sends RELEASE after close() returns, so the
  // daemon may hold the unlinked file's upper fd (and its blocks) a moment longer.
  int small = ENOSPC;
  for (int i = 0; i < 50 && small == ENOSPC; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::unlink((mnt.dir() + "/small").c_str());
    small = WriteNew(mnt.dir() + "/small", 4096);
  }
  EXPECT_EQ(small, 0) << std::strerror(small);
  std::string bytes;
  EXPECT_EQ(ReadAll(mnt.dir() + "/small", &bytes), 0);
  EXPECT_EQ(bytes, std::string(4096, 'x'));
  EXPECT_EQ(ReadAll(mnt.dir() + "/data/hello.txt", &bytes), 0);
  EXPECT_EQ(bytes, "hello from imagefs\n");
  EXPECT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
}

}  // namespace
}  // namespace imagefs::testing
