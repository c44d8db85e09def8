// imagefs mount / umount against a real registry and real FUSE mounts: the busybox test
// image (gzip layers, as pushed), imagefs's own zstd:chunked and eStargz conversions of it
// and skopeo's zstd:chunked copy are mounted read-only and compared, path by path, with
// the oracle tree (the same layers
// applied by skopeo + GNU tar: tests/testing/apply-layers).
//
// Every mount is undone by a ScopedMount destructor (umount2 with MNT_DETACH), also when
// an assertion fails; the detached mount processes then exit on their own.

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
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


// The mountinfo line's fields for `mountpoint`, or "" when nothing is mounted there.
std::string MountInfo(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    if (point == mountpoint) return line;
  }
  return "";
}

std::map<std::string, std::string> Xattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
  EXPECT_GE(n, 0) << path << ": " << std::strerror(errno);
  if (n <= 0) return out;
  std::string names(static_cast<size_t>(n), '\0');
  n = ::llistxattr(path.c_str(), names.data(), names.size());
  EXPECT_GE(n, 0);
  names.resize(n < 0 ? 0 : static_cast<size_t>(n));
  for (size_t pos = 0; pos < names.size();) {
    std::string name = names.c_str() + pos;
    pos += name.size() + 1;
    ssize_t len = ::lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    EXPECT_GE(len, 0) << path << " " << name;
    std::string value(len < 0 ? 0 : static_cast<size_t>(len), '\0');
    if (len > 0) {
      // A buffer one byte short is ERANGE, as on any filesystem.
      EXPECT_EQ(::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size() - 1), -1);
      EXPECT_EQ(errno, ERANGE);
      len = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    }
    out[name] = value;
  }
  return out;
}

struct Variant {
  std::string format;  // "gzip", "imagefs zstd-chunked", "imagefs estargz", "zstd:chunked"
  std::string ref;
};

class MountTest : public BusyboxOracleTest {
 protected:
  static void SetUpTestSuite() {
    StartBusyboxSuite("mount-test-");
    if (HasFatalFailure()) return;
    variants_ = new std::vector<Variant>;
    auto image = TestImage("busybox");
    ASSERT_TRUE(image.ok()) << image.status().message();

    variants_->push_back(Variant{"gzip", *busybox_});
    for (const std::string format : {"zstd-chunked", "estargz"}) {
      Variant v{"imagefs " + format, registry_->host() + "/t/busybox:imagefs-" + format};
      Convert(format, "oci:" + *image, v.ref);
      if (HasFatalFailure()) return;
      variants_->push_back(v);
    }
    // skopeo's zstd:chunked (through dir:, as MACHINE-NOTES says), pushed as is.
    Variant v{"zstd:chunked", registry_->host() + "/t/busybox:zstd-chunked"};
    const std::string zdir = *dir_ + "/busybox-zstd-chunked";
    auto c = registry_->RunSkopeo({"copy", "--quiet", "--dest-compress", "--dest-compress-format",
                                   "zstd:chunked", "oci:" + *image, "dir:" + zdir});
    ASSERT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : "");
    PushDir(zdir, v.ref);
    if (HasFatalFailure()) return;
    variants_->push_back(v);
  }
  static void TearDownTestSuite() {
    delete variants_;
    variants_ = nullptr;
    BusyboxOracleTest::TearDownTestSuite();
  }

  void SetUp() override {
    BusyboxOracleTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_EQ(variants_->size(), 4u);
  }

  // A fresh empty directory to mount on.
  std::string NewMountpoint() {
    auto d = MakeTempDir(*dir_, "mnt-");
    EXPECT_TRUE(d.ok());
    return d.ok() ? *d : "";
  }

  // The mounted tree against the oracle: paths, lstat fields, link targets, xattrs, bytes.
  void ExpectSameAsOracle(const std::string& mnt) {
    const std::string& oracle = *oracle_;
    std::set<std::string> want_paths, got_paths;
    for (auto it = std::filesystem::recursive_directory_iterator(oracle);
         it != std::filesystem::recursive_directory_iterator(); ++it) {
      want_paths.insert(it->path().string().substr(oracle.size()));
    }
    for (auto it = std::filesystem::recursive_directory_iterator(mnt);
         it != std::filesystem::recursive_directory_iterator(); ++it) {
      got_paths.insert(it->path().string().substr(mnt.size()));
    }
    EXPECT_EQ(got_paths, want_paths);
    EXPECT_GT(want_paths.size(), 25u);

    std::map<ino_t, ino_t> inode_pairs;  // oracle st_ino -> mounted st_ino
    int xattr_files = 0, hard_links = 0;
    for (const std::string& rel : want_paths) {
      SCOPED_TRACE(rel);
      const std::string want_path = oracle + rel, got_path = mnt + rel;
      struct stat want, got;
      ASSERT_EQ(::lstat(want_path.c_str(), &want), 0);
      ASSERT_EQ(::lstat(got_path.c_str(), &got), 0) << std::strerror(errno);
      EXPECT_EQ(got.st_mode, want.st_mode);
      EXPECT_EQ(got.st_uid, want.st_uid);
      EXPECT_EQ(got.st_gid, want.st_gid);
      EXPECT_EQ(got.st_nlink, want.st_nlink);
      auto xattrs = Xattrs(want_path);
      EXPECT_EQ(Xattrs(got_path), xattrs);
      xattr_files += !xattrs.empty();
      if (S_ISDIR(want.st_mode)) continue;
      EXPECT_EQ(got.st_size, want.st_size);
      EXPECT_EQ(got.st_mtim.tv_sec, want.st_mtim.tv_sec);
      auto [pair, inserted] = inode_pairs.try_emplace(want.st_ino, got.st_ino);
      EXPECT_EQ(pair->second, got.st_ino) << "hard links must share st_ino";
      hard_links += !inserted;
      if (S_ISLNK(want.st_mode)) {
        EXPECT_EQ(std::filesystem::read_symlink(got_path), std::filesystem::read_symlink(want_path));
      } else if (S_ISREG(want.st_mode)) {
        auto want_bytes = ReadFile(want_path);
        auto got_bytes = ReadFile(got_path);
        ASSERT_TRUE(want_bytes.ok() && got_bytes.ok()) << got_bytes.status().message();
        EXPECT_TRUE(*got_bytes == *want_bytes) << got_bytes->size() << " vs " << want_bytes->size();
      }
    }
    EXPECT_GE(xattr_files, 1);
    EXPECT_GE(hard_links, 1);
  }

  inline static std::vector<Variant>* variants_ = nullptr;
};

TEST_F(MountTest, MountedTreeOfEachFormatEqualsTheOracle) {
  for (const Variant& v : *variants_) {
    SCOPED_TRACE(v.format);
    ScopedMount mnt(NewMountpoint());
    ProcessResult r = Imagefs({"mount", "--read-only", v.ref, mnt.dir()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_EQ(r.stderr_text, "");
    // The command returned with the mount already serving.
    const std::string info = MountInfo(mnt.dir());
    ASSERT_NE(info, "");
    EXPECT_NE(info.find(" - fuse.") , std::string::npos) << info;
    EXPECT_NE(info.find(" imagefs "), std::string::npos) << info;
    EXPECT_NE(info.find(" ro"), std::string::npos) << info;
    ExpectSameAsOracle(mnt.dir());
    r = Imagefs({"umount", mnt.dir()});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_FALSE(IsMounted(mnt.dir()));
  }
}

TEST_F(MountTest, ShellToolsWorkOnTheMount) {
  const Variant& v = variants_->front();
  ScopedMount mnt(NewMountpoint());
  ProcessResult r = Imagefs({"mount", "--read-only", v.ref, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Shell("cat " + mnt.dir() + "/data/hello.txt"), "hello from imagefs\n");
  EXPECT_EQ(Shell("cat " + mnt.dir() + "/data/rel-link"), "hello from imagefs\n");
  EXPECT_EQ(Shell("cd " + mnt.dir() + " && find . | sort"),
            Shell("cd " + *oracle_ + " && find . | sort"));
  EXPECT_EQ(Shell("ls " + mnt.dir() + "/etc"), "group\npasswd\n");
  EXPECT_EQ(Shell("ls " + mnt.dir() + "/data/olddir"), "new.txt\n");
  const std::string long_listing = Shell("ls -la " + mnt.dir() + "/data");
  EXPECT_NE(long_listing.find("hello-link"), std::string::npos) << long_listing;
  EXPECT_NE(long_listing.find(" .."), std::string::npos) << long_listing;
  EXPECT_EQ(Shell("sha256sum < " + mnt.dir() + "/data/big.bin"),
            Shell("sha256sum < " + *oracle_ + "/data/big.bin"));
  const std::string df = Shell("df -P " + mnt.dir() + " | tail -1");
  EXPECT_EQ(df.rfind("imagefs ", 0), 0u) << df;
}

TEST_F(MountTest, ParallelReadersGetTheOraclesBytes) {
  for (const Variant& v : *variants_) {
    SCOPED_TRACE(v.format);
    ScopedMount mnt(NewMountpoint());
    ProcessResult r = Imagefs({"mount", "--read-only", v.ref, mnt.dir()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    // Eight readers at once over every file (the multi-threaded loop, cold chunks).
    const std::string sums = "find . -type f -print0 | xargs -0 -P8 -n1 sha256sum | sort";
    EXPECT_EQ(Shell("cd " + mnt.dir() + " && " + sums), Shell("cd " + *oracle_ + " && " + sums));
  }
}

// Lazy: mounting fetches manifest, config and indexes; reading a small file fetches its
// chunk, not the 20 MiB layer beside it.
TEST_F(MountTest, MountAndASmallReadFetchLittleOfTheImage) {
  const Variant& v = (*variants_)[1];  // imagefs zstd:chunked: TOC per layer
  registry_->SettledBytesSent();
  registry_->ResetCounters();
  ScopedMount mnt(NewMountpoint());
  ProcessResult r = Imagefs({"mount", "--read-only", v.ref, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Shell("cat " + mnt.dir() + "/data/hello.txt"), "hello from imagefs\n");
  const uint64_t sent = registry_->SettledBytesSent();
  EXPECT_LT(sent, 2u << 20) << "mount + one small read sent " << sent << " bytes";
  std::printf("mount + cat of 19 bytes sent %llu bytes (image holds a 20 MiB file)\n",
              static_cast<unsigned long long>(sent));
}

// The requests a cold lazy mount of a zstd:chunked image sends, from the registry's log:
// the manifest (no /v2/ ping before it, no HEAD), the config, and each layer's TOC by one
// range request (its offset from the layer's annotation; no footer read first).
TEST_F(MountTest, ColdMountOfZstdChunkedSendsOneRequestPerManifestConfigAndToc) {
  const Variant& v = (*variants_)[1];  // imagefs zstd:chunked
  auto cold = MakeTempDir(*dir_, "cold-root-");
  ASSERT_TRUE(cold.ok());
  registry_->SettledBytesSent();
  registry_->ResetCounters();
  ScopedMount mnt(NewMountpoint());
  ProcessResult r = RunImagefs({"--root", *cold, "mount", "--read-only", "--prefetch", "none",
                                v.ref, mnt.dir()},
                               registry_->client_env());
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  registry_->SettledBytesSent();
  int manifests = 0, blobs = 0;
  std::map<std::string, int> per_blob;
  std::string log;
  for (const RegistryRequest& req : registry_->Requests()) {
    log += req.method + " " + req.uri + " " + std::to_string(req.status) + "\n";
    EXPECT_EQ(req.method, "GET") << req.uri;
    if (req.uri.find("/manifests/") != std::string::npos) ++manifests;
    if (req.uri.find("/blobs/") != std::string::npos) {
      ++blobs;
      ++per_blob[req.uri];
    }
  }
  EXPECT_EQ(manifests, 1) << log;
  EXPECT_GE(blobs, 2) << log;  // the config and at least one layer
  EXPECT_EQ(manifests + blobs, static_cast<int>(registry_->Requests().size())) << log;
  for (const auto& [uri, n] : per_blob) EXPECT_EQ(n, 1) << uri << " requested " << n << " times\n" << log;
}

TEST_F(MountTest, MountsListsLiveMountsAndRmiRefusesAMountedImage) {
  const Variant& v = variants_->front();
  ASSERT_EQ(Imagefs({"pull", "-q", v.ref}).exit_code, 0);
  ScopedMount mnt(NewMountpoint());
  ProcessResult r = Imagefs({"mount", "--read-only", v.ref, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ProcessResult list = Imagefs({"mounts"});
  ASSERT_EQ(list.exit_code, 0) << list.Describe();
  EXPECT_EQ(list.stdout_text.rfind("MOUNTPOINT", 0), 0u) << list.stdout_text;
  EXPECT_NE(list.stdout_text.find(mnt.dir()), std::string::npos) << list.stdout_text;
  EXPECT_NE(list.stdout_text.find(v.ref), std::string::npos) << list.stdout_text;
  EXPECT_EQ(Imagefs({"mounts", "-q"}).stdout_text, mnt.dir() + "\n");
  ProcessResult rmi = Imagefs({"rmi", v.ref});
  EXPECT_EQ(rmi.exit_code, 1);
  EXPECT_NE(rmi.stderr_text.find("being used by the mount at " + mnt.dir()), std::string::npos)
      << rmi.stderr_text;
  ProcessResult df = Imagefs({"df"});
  EXPECT_NE(df.stdout_text.find("Images          1         1 "), std::string::npos)
      << df.stdout_text;
  ProcessResult prune = Imagefs({"prune", "-a", "-f"});
  EXPECT_EQ(prune.stdout_text, "Total reclaimed space: 0B\n");
  ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
  EXPECT_EQ(Imagefs({"mounts", "-q"}).stdout_text, "");
  rmi = Imagefs({"rmi", v.ref});
  EXPECT_EQ(rmi.exit_code, 0) << rmi.Describe();
}

// Reads through the mount land in the chunk cache (a second mount of the image reads the
// 20 MiB file without fetching it again), and `imagefs mounts` shows the bytes fetched.
TEST_F(MountTest, MountReadsFillTheChunkCacheAndMountsShowsBytesFetched) {
  const Variant& v = (*variants_)[1];  // imagefs zstd:chunked
  const std::string want = *ReadFile(*oracle_ + "/data/big.bin");
  registry_->SettledBytesSent();
  registry_->ResetCounters();
  uint64_t first_sent = 0;
  {
    ScopedMount mnt(NewMountpoint());
    ProcessResult r = Imagefs({"mount", "--read-only", v.ref, mnt.dir()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_TRUE(Shell("cmp " + mnt.dir() + "/data/big.bin " + *oracle_ + "/data/big.bin && echo same") ==
                "same\n");
    std::string fetched;
    // The record starts with the index bytes and is refreshed every second.
    for (int i = 0; i < 50 && fetched.find("MB") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      for (const std::string& line : Lines(Imagefs({"mounts"}).stdout_text)) {
        std::istringstream fields(line);
        std::string point, image, upper, bytes;
        fields >> point >> image >> upper >> bytes;
        if (point == mnt.dir()) fetched = bytes;
      }
    }
    EXPECT_EQ(fetched.find("MB"), fetched.size() - 2) << "FETCHED " << fetched;
    ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
    first_sent = registry_->SettledBytesSent();
  }
  EXPECT_GT(first_sent, 20u << 20);
  registry_->ResetCounters();
  ScopedMount again(NewMountpoint());
  ProcessResult r = Imagefs({"mount", "--read-only", v.ref, again.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(Shell("cmp " + again.dir() + "/data/big.bin " + *oracle_ + "/data/big.bin && echo same") ==
              "same\n");
  const uint64_t second_sent = registry_->SettledBytesSent();
  EXPECT_LT(second_sent, 64u << 10) << "the second mount should read the file from the cache";
  std::printf("mount + read of a 20 MiB file: %llu bytes from the registry; again: %llu\n",
              static_cast<unsigned long long>(first_sent),
              static_cast<unsigned long long>(second_sent));
}

// --record-profile writes the first-read order; convert puts those files first; a cold
// mount of the converted image prefetches them, so reading them afterwards costs nothing.
TEST_F(MountTest, RecordedProfileConvertedImagePrefetchesItsFiles) {
  const Variant& v = (*variants_)[1];  // imagefs zstd:chunked
  const std::string profile = root_ + "/profile.txt";
  {
    ScopedMount mnt(NewMountpoint());
    ProcessResult r = Imagefs({"mount", "--read-only", "--record-profile", profile, v.ref, mnt.dir()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    Shell("cat " + mnt.dir() + "/etc/passwd " + mnt.dir() + "/data/run.sh " + mnt.dir() +
          "/usr/share/doc/busybox/README >/dev/null");
    ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
    for (int i = 0; i < 50 && !PathExists(profile); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  auto text = ReadFile(profile);
  ASSERT_TRUE(text.ok()) << text.status().message();
  EXPECT_EQ(*text, "/etc/passwd\n/data/run.sh\n/usr/share/doc/busybox/README\n");

  const std::string dst = registry_->host() + "/t/busybox:profiled";
  ProcessResult c = Imagefs({"convert", "--prefetch-profile", profile, v.ref, dst});
  ASSERT_EQ(c.exit_code, 0) << c.Describe();
  auto cold = MakeTempDir(*dir_, "cold-root-");
  ASSERT_TRUE(cold.ok());
  auto cold_imagefs = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--root", *cold});
    return RunImagefs(args, registry_->client_env());
  };
  ScopedMount mnt(NewMountpoint());
  ProcessResult r = cold_imagefs({"--log-level", "info", "mount", "--read-only", dst, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // Prefetch runs in the background: wait until it has ended and the registry has sent all.
  EXPECT_TRUE(WaitForDaemonLog(*cold, "phase prefetched"));
  registry_->SettledBytesSent();
  registry_->ResetCounters();
  EXPECT_EQ(Shell("cat " + mnt.dir() + "/data/run.sh"), *ReadFile(*oracle_ + "/data/run.sh"));
  Shell("cat " + mnt.dir() + "/etc/passwd " + mnt.dir() + "/usr/share/doc/busybox/README >/dev/null");
  EXPECT_EQ(registry_->SettledBytesSent(), 0u) << "the profile's files should have been prefetched";
  // A file outside the profile is still fetched on demand.
  Shell("cat " + mnt.dir() + "/data/owned.txt >/dev/null");
  EXPECT_GT(registry_->SettledBytesSent(), 0u);
}

// --prefetch all: once the background fetch has settled, every file of the image is local
// (the registry sends nothing more while the whole tree is read and compared).
TEST_F(MountTest, PrefetchAllMakesTheWholeImageLocal) {
  for (size_t i : {size_t{0}, size_t{1}}) {  // plain gzip, imagefs zstd:chunked
    const Variant& v = (*variants_)[i];
    SCOPED_TRACE(v.format);
    auto cold = MakeTempDir(*dir_, "all-root-");
    ASSERT_TRUE(cold.ok());
    ScopedMount mnt(NewMountpoint());
    ProcessResult r = RunImagefs({"--root", *cold, "--log-level", "info", "mount", "--read-only",
                                  "--prefetch", "all",
                                  v.ref, mnt.dir()},
                                 registry_->client_env());
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    // The background fetch can pause longer than the registry's settle time on a loaded
    // machine: wait for the daemon to say it has ended.
    EXPECT_TRUE(WaitForDaemonLog(*cold, "phase prefetched"));
    registry_->SettledBytesSent();
    registry_->ResetCounters();
    EXPECT_EQ(Shell("cd " + mnt.dir() + " && find . -type f -print0 | sort -z | "
                    "xargs -0 cat | sha256sum"),
              Shell("cd " + *oracle_ + " && find . -type f -print0 | sort -z | "
                    "xargs -0 cat | sha256sum"));
    EXPECT_EQ(registry_->SettledBytesSent(), 0u) << "prefetch all left files to fetch";
    EXPECT_EQ(RunImagefs({"--root", *cold, "umount", mnt.dir()}).exit_code, 0);
  }
}

TEST_F(MountTest, AProcessStartsFromTheMount) {
  if (::geteuid() != 0) GTEST_SKIP() << "chroot needs root";
  const Variant& v = (*variants_)[1];  // the zstd:chunked conversion
  ScopedMount mnt(NewMountpoint());
  ProcessResult r = Imagefs({"mount", "--read-only", v.ref, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Shell("chroot " + mnt.dir() + " /bin/sh -c 'echo ok'"), "ok\n");
  EXPECT_EQ(Shell("chroot " + mnt.dir() + " /bin/cat /etc/passwd"),
            *ReadFile(*oracle_ + "/etc/passwd"));
}

TEST_F(MountTest, WritesFailWithEROFS) {
  const Variant& v = variants_->front();
  ScopedMount mnt(NewMountpoint());
  ProcessResult r = Imagefs({"mount", "--read-only", v.ref, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string hello = mnt.dir() + "/data/hello.txt";
  EXPECT_EQ(::open(hello.c_str(), O_WRONLY), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::open(hello.c_str(), O_RDWR), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::open((mnt.dir() + "/data/new.txt").c_str(), O_WRONLY | O_CREAT, 0644), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::mkdir((mnt.dir() + "/newdir").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::unlink(hello.c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::rename(hello.c_str(), (mnt.dir() + "/data/moved").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::chmod(hello.c_str(), 0600), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::lsetxattr(hello.c_str(), "user.x", "1", 1, 0), -1);
  EXPECT_EQ(errno, EROFS);
  int fd = ::open(hello.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  char buf[64];
  EXPECT_EQ(::read(fd, buf, sizeof buf), 19);
  ::close(fd);
  int rc = 0;
  Shell("echo x > " + hello + " 2>/dev/null", &rc);
  EXPECT_NE(rc, 0);
}

TEST_F(MountTest, MountFailuresPrintOneLineAndLeaveNothingMounted) {
  const Variant& v = variants_->front();
  const std::string missing = *dir_ + "/no-such-dir";
  ProcessResult r = Imagefs({"mount", "--read-only", v.ref, missing});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find(missing), std::string::npos) << r.stderr_text;
  EXPECT_FALSE(IsMounted(missing));

  const std::string mnt = NewMountpoint();
  ScopedMount guard(mnt);
  r = Imagefs({"mount", "--read-only", registry_->host() + "/t/nosuchimage:latest", mnt});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_FALSE(IsMounted(mnt));

  r = Imagefs({"mount", "--read-only", "127.0.0.1:1/t/dead:latest", mnt});  // nothing listens
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_FALSE(IsMounted(mnt));

  r = Imagefs({"mount", "--read-only", "--upper", *dir_ + "/upper", v.ref, mnt});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stderr_text, "imagefs: mount: --upper and --read-only exclude each other\n");
  EXPECT_FALSE(IsMounted(mnt));
}

TEST_F(MountTest, UmountOfSomethingElseNamesTheMountpoint) {
  const std::string plain = NewMountpoint();
  ProcessResult r = Imagefs({"umount", plain});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stderr_text, "imagefs: umount: " + plain + ": not an imagefs mount\n");
  r = Imagefs({"umount", "/proc"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
}

TEST_F(MountTest, ForegroundMountUnmountsCleanlyOnSigterm) {
  const Variant& v = variants_->front();
  ScopedMount mnt(NewMountpoint());
  ProcessOptions o;
  o.argv = {ImagefsBinary(), "--root", root_, "mount", "--read-only", "-f", v.ref, mnt.dir()};
  o.env_set = registry_->client_env();
  o.env_remove = {"REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF", "IMAGEFS_ROOT"};
  auto proc = BackgroundProcess::Start(o, *dir_ + "/foreground.log");
  ASSERT_TRUE(proc.ok()) << proc.status().message();
  for (int i = 0; i < 200 && !IsMounted(mnt.dir()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(IsMounted(mnt.dir())) << *ReadFile(proc->log_path());
  EXPECT_EQ(Shell("cat " + mnt.dir() + "/data/hello.txt"), "hello from imagefs\n");
  EXPECT_EQ(proc->Stop(std::chrono::seconds(10)), 0);  // SIGTERM to the process we started
  EXPECT_FALSE(IsMounted(mnt.dir()));
}

}  // namespace
}  // namespace imagefs::testing
