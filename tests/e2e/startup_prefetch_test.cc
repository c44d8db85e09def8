// The mount's ELF prefetch end to end: an image holding the host's /bin/true and its
// library closure (ldd), converted to zstd:chunked and eStargz and mounted lazily from the
// local registry. Reading the first bytes of /bin/true (what exec does) makes the mount
// fetch its interpreter and libraries before anything reads them: reading them afterwards
// costs the registry nothing. With --prefetch none the same reads are fetched on demand
// (so the check can fail).

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/mounts.h"
#include "tests/e2e/oracle.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

class StartupPrefetchE2eTest : public RegistrySuite {
 protected:
  static void SetUpTestSuite() {
    StartRegistrySuite("startup-prefetch-e2e-");
    if (HasFatalFailure()) return;
    // /bin/true, its closure, and an unrelated file; one layer; an archive to convert.
    libs_ = new std::vector<std::string>;
    const std::string closure =
        Shell("ldd /bin/true | grep -o '/[^ ]*' | sort -u");
    for (size_t at = 0; at < closure.size();) {
      const size_t nl = closure.find('\n', at);
      libs_->push_back(closure.substr(at, nl - at));
      at = nl == std::string::npos ? closure.size() : nl + 1;
    }
    ASSERT_GE(libs_->size(), 2u) << "ldd /bin/true: " << closure;
    std::string script = "set -e; cd " + *dir_ + "; mkdir rootfs; cp -L --parents /bin/true";
    for (const std::string& lib : *libs_) script += " " + lib;
    script += " rootfs/; head -c 3000000 /dev/urandom > rootfs/unrelated; "
              "tar -C rootfs -cf rootfs.tar .";
    Shell(script);
    const std::string root = *dir_ + "/setup-root";
    ProcessResult imported = RunImagefs({"--root", root, "import", *dir_ + "/rootfs.tar", "t:1"});
    ASSERT_EQ(imported.exit_code, 0) << imported.Describe();
    ProcessResult saved =
        RunImagefs({"--root", root, "save", "-o", *dir_ + "/img.tar", "t:1"});
    ASSERT_EQ(saved.exit_code, 0) << saved.Describe();
    for (const std::string format : {"zstd-chunked", "estargz"}) {
      ProcessResult r = RunImagefs(
          {"--root", root, "convert", "--format", format, "docker-archive:" + *dir_ + "/img.tar",
           "docker://" + registry_->host() + "/t/true:" + format},
          registry_->client_env());
      ASSERT_EQ(r.exit_code, 0) << r.Describe();
    }
  }
  static void TearDownTestSuite() {
    delete libs_;
    libs_ = nullptr;
    RegistrySuite::TearDownTestSuite();
  }

  // Registry bytes for reading the libraries whole after the first 64 bytes of /bin/true,
  // on a cold mount with these --prefetch flags.
  uint64_t LibraryBytesAfterExecRead(const std::string& format, const std::string& prefetch) {
    auto cold = MakeTempDir(*dir_, "root-");
    EXPECT_TRUE(cold.ok());
    auto mountpoint = MakeTempDir(*dir_, "mnt-");
    EXPECT_TRUE(mountpoint.ok());
    ScopedMount mnt(*mountpoint);
    ProcessResult r = RunImagefs({"--root", *cold, "mount", "--read-only", "--prefetch", prefetch,
                                  registry_->host() + "/t/true:" + format, mnt.dir()},
                                 registry_->client_env());
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    if (r.exit_code != 0) return 0;
    registry_->SettledBytesSent();
    registry_->ResetCounters();
    EXPECT_EQ(Shell("head -c 4 " + mnt.dir() + "/bin/true | tail -c 3"), "ELF");
    // The libraries, when prefetched, arrive meanwhile: on a loaded machine the first
    // response can take longer than the registry's settle time, so wait for it first.
    for (int i = 0; i < 100 && prefetch != "none" && registry_->BytesSent() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    registry_->SettledBytesSent();
    registry_->ResetCounters();
    std::string cat = "cat";
    for (const std::string& lib : *libs_) cat += " " + mnt.dir() + lib;
    Shell(cat + " >/dev/null");
    const uint64_t bytes = registry_->SettledBytesSent();
    // The unrelated file was not fetched along.
    registry_->ResetCounters();
    Shell("cat " + mnt.dir() + "/unrelated >/dev/null");
    EXPECT_GT(registry_->SettledBytesSent(), 1000000u);
    EXPECT_EQ(RunImagefs({"--root", *cold, "umount", mnt.dir()}).exit_code, 0);
    return bytes;
  }

  inline static std::vector<std::string>* libs_ = nullptr;
};

TEST_F(StartupPrefetchE2eTest, ReadingAnElfFilesHeaderFetchesItsLibraries) {
  for (const std::string format : {"zstd-chunked", "estargz"}) {
    SCOPED_TRACE(format);
    EXPECT_EQ(LibraryBytesAfterExecRead(format, "auto"), 0u)
        << "the libraries of /bin/true should have been prefetched";
  }
}

TEST_F(StartupPrefetchE2eTest, WithoutPrefetchTheLibrariesAreFetchedOnDemand) {
  EXPECT_GT(LibraryBytesAfterExecRead("zstd-chunked", "none"), 100000u);
}

}  // namespace
}  // namespace imagefs::testing
