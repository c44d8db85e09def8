// Writable imagefs mounts against kernel overlayfs: the busybox test image (pushed to a
// real registry) is mounted writable, a shell scenario runs inside it, and the same
// scenario runs on kernel overlayfs over the oracle tree (tests/testing/apply-layers). The
// visible trees and the two upper dirs (entries, whiteouts, opaque markers) must match.
// Then: a remount with the same --upper, kernel overlayfs over imagefs's upper dir, kill -9
// of the daemon, and fstat of an unlinked open file.
//
// Every mount is undone by a guard's destructor (umount2 MNT_DETACH), also on failure.

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <dirent.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "fs/kernel_shim.h"
#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/mounts.h"
#include "tests/e2e/oracle.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;


// What the comparison looks at for one entry. Paths may exceed PATH_MAX, so the walk
// goes through dirfds.
struct Node {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  nlink_t nlink = 0;
  off_t size = 0;     // not for directories (filesystems differ)
  dev_t rdev = 0;
  int64_t mtime = 0;  // 0 when changed during the scenario (both sides must agree on that)
  std::string content;  // file bytes (sha-free: files are small) or link target
  std::map<std::string, std::string> xattrs;  // trusted.overlay.* left out unless markers
  bool operator==(const Node&) const = default;
};

std::map<std::string, std::string> XattrsAt(int dirfd, const std::string& name, bool markers) {
  std::map<std::string, std::string> out;
  const std::string path = "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
  char names[4096];
  ssize_t n = ::llistxattr(path.c_str(), names, sizeof names);
  for (ssize_t pos = 0; n > 0 && pos < n;) {
    std::string x = names + pos;
    pos += static_cast<ssize_t>(x.size()) + 1;
    const bool overlay = x.rfind("trusted.overlay.", 0) == 0;
    if (markers ? x != "trusted.overlay.opaque" : overlay) continue;
    char value[4096];
    ssize_t len = ::lgetxattr(path.c_str(), x.c_str(), value, sizeof value);
    out[x] = std::string(value, len > 0 ? static_cast<size_t>(len) : 0);
  }
  return out;
}

// Every entry under dirfd: "rel/path" -> Node. markers: compare as an upper dir (types,
// whiteouts, opaque xattrs only).
void Walk(int dirfd, const std::string& prefix, int64_t changed_after, bool markers,
          std::map<std::string, Node>* out) {
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << prefix << ": " << std::strerror(errno);
  DIR* d = ::fdopendir(fd);
  ASSERT_NE(d, nullptr);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  for (const std::string& name : names) {
    const std::string rel = prefix + name;
    struct stat st;
    ASSERT_EQ(::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW), 0) << rel;
    Node node;
    node.mode = st.st_mode;
    node.xattrs = XattrsAt(::dirfd(d), name, markers);
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) node.rdev = st.st_rdev;
    if (!markers) {
      node.uid = st.st_uid;
      node.gid = st.st_gid;
      node.nlink = st.st_nlink;
      if (!S_ISDIR(st.st_mode)) node.size = st.st_size;
      node.mtime = st.st_mtim.tv_sec >= changed_after ? 0 : st.st_mtim.tv_sec;
      if (S_ISLNK(st.st_mode)) {
        char target[4096];
        ssize_t n = ::readlinkat(::dirfd(d), name.c_str(), target, sizeof target);
        node.content.assign(target, n > 0 ? static_cast<size_t>(n) : 0);
      } else if (S_ISREG(st.st_mode) && st.st_size < (1 << 20)) {
        UniqueFd f(::openat(::dirfd(d), name.c_str(), O_RDONLY | O_CLOEXEC));
        char buf[1 << 16];
        for (ssize_t n; f.valid() && (n = ::read(f.get(), buf, sizeof buf)) > 0;) {
          node.content.append(buf, static_cast<size_t>(n));
        }
      }
    } else if (S_ISREG(st.st_mode)) {
      node.mode = S_IFREG;  // an upper dir: which entries and markers, not their bytes
    } else {
      node.mode = st.st_mode & S_IFMT;
    }
    (*out)[rel] = node;
    if (S_ISDIR(st.st_mode)) {
      int sub = ::openat(::dirfd(d), name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      ASSERT_GE(sub, 0) << rel;
      Walk(sub, rel + "/", changed_after, markers, out);
      ::close(sub);
    }
  }
  ::closedir(d);
}

std::map<std::string, Node> Tree(const std::string& dir, int64_t changed_after, bool markers) {
  std::map<std::string, Node> out;
  UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  EXPECT_TRUE(fd.valid()) << dir;
  if (fd.valid()) Walk(fd.get(), "", changed_after, markers, &out);
  return out;
}

void ExpectSameTrees(const std::map<std::string, Node>& got,
                     const std::map<std::string, Node>& want) {
  for (const auto& [path, node] : want) {
    auto it = got.find(path);
    if (it == got.end()) {
      ADD_FAILURE() << "missing: " << path.substr(0, 200);
      continue;
    }
    const Node& g = it->second;
    EXPECT_EQ(g.mode, node.mode) << path.substr(0, 200);
    EXPECT_EQ(g.uid, node.uid) << path;
    EXPECT_EQ(g.gid, node.gid) << path;
    EXPECT_EQ(g.nlink, node.nlink) << path;
    EXPECT_EQ(g.size, node.size) << path;
    EXPECT_EQ(g.rdev, node.rdev) << path;
    EXPECT_EQ(g.mtime, node.mtime) << path;
    EXPECT_TRUE(g.content == node.content) << path;
    EXPECT_EQ(g.xattrs, node.xattrs) << path;
  }
  for (const auto& [path, node] : got) {
    if (want.count(path) == 0) ADD_FAILURE() << "unexpected: " << path.substr(0, 200);
  }
}

// The scenario, run with the tree as the current directory.
const char kScenario[] = R"SH(
set -eu
echo created > data/created.txt
echo appended >> data/hello.txt
truncate -s 5 'data/with space.txt'
chmod 0600 data/run.sh
chown 1234:5678 data/owned.txt
mkdir -p newdir/sub
echo x > newdir/sub/f
mkdir u3 newdir/sub3
mv u3 u4
mv newdir/sub3 newdir/sub4
rm -r usr/share/doc/busybox
mkdir usr/share/doc/busybox
echo again > usr/share/doc/busybox/NEW
rm bin/false data/rel-link
mv data/run.sh data/run2.sh
mv etc/group etc/group2
mv data/olddir data/movedir
ln data/created.txt data/created-link
ln etc/passwd etc/passwd-link
ln -s ../data/hello.txt newdir/sym
python3 -c "import os; os.setxattr('data/xattr.txt', 'user.x', b'1')"
mkfifo newdir/fifo
name=$(printf 'd%.0s' $(seq 1 200))
(for i in $(seq 1 25); do mkdir "$name"; cd "$name"; done; echo deep > leaf)
)SH";

class UpperTest : public BusyboxOracleTest {
 protected:
  // Kernel overlayfs over the oracle, as imagefs layers it (no redirect_dir: lower dirs
  // are not renamed; no index: copy-up breaks hard links).
  void MountOverlay(const std::string& upper, const std::string& work, const std::string& mnt) {
    Shell("mount -t overlay overlay -o lowerdir=" + *oracle_ + ",upperdir=" + upper +
          ",workdir=" + work + ",redirect_dir=off,index=off,metacopy=off " + mnt);
  }

  pid_t DaemonPid(const std::string& mnt) {
    ProcessResult r = Imagefs({"mounts"});
    for (const std::string& line : Lines(r.stdout_text)) {
      std::istringstream f(line);
      std::string point, field, pid;
      f >> point;
      while (f >> field) pid = field;  // PID is the last column
      if (point == mnt) return std::stoi(pid);
    }
    return 0;
  }
};

TEST_F(UpperTest, AScenarioLeavesTheSameTreeAndUpperDirAsKernelOverlayfs) {
  const int64_t start = static_cast<int64_t>(::time(nullptr)) - 1;
  const std::string upper = Dir("upper");
  ScopedMount mnt(Dir("mnt"));
  ProcessResult r = Imagefs({"mount", "--upper", upper, *busybox_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // origin.json names the base image.
  auto origin = ReadFile(upper + ".work/origin.json");
  ASSERT_TRUE(origin.ok());
  const Json o = Json::parse(*origin);
  EXPECT_EQ(o["image"], *busybox_);
  EXPECT_EQ(o["manifest_digest"].get<std::string>().rfind("sha256:", 0), 0u);
  EXPECT_NE(Imagefs({"mounts"}).stdout_text.find(upper), std::string::npos);
  {
    // One mount per upper dir.
    ScopedMount second(Dir("mnt-second"));
    ProcessResult again = Imagefs({"mount", "--upper", upper, *busybox_, second.dir()});
    EXPECT_EQ(again.exit_code, 1);
    EXPECT_EQ(LineCount(again.stderr_text), 1) << again.stderr_text;
    EXPECT_NE(again.stderr_text.find("is in use by another mount"), std::string::npos)
        << again.stderr_text;
    EXPECT_FALSE(IsMounted(second.dir()));
  }

  ScopedMount ovl(Dir("ovl"));
  const std::string kupper = Dir("kupper"), kwork = Dir("kwork");
  MountOverlay(kupper, kwork, ovl.dir());

  Shell("cd " + mnt.dir() + " && " + kScenario);
  Shell("cd " + ovl.dir() + " && " + kScenario);
  // A lower directory cannot be renamed (EXDEV, as overlayfs without redirect_dir), yet mv
  // got there by copying.
  for (const std::string& m : {mnt.dir(), ovl.dir()}) {
    EXPECT_EQ(Shell("python3 -c \"import os, errno\ntry:\n  os.rename('" + m + "/bin', '" + m +
                    "/bin2')\nexcept OSError as e:\n  print(errno.errorcode[e.errno])\""),
              "EXDEV\n")
        << m;
  }
  ExpectSameTrees(Tree(mnt.dir(), start, false), Tree(ovl.dir(), start, false));
  ExpectSameTrees(Tree(upper, start, true), Tree(kupper, start, true));
  const auto markers = Tree(upper, start, true);
  ASSERT_EQ(markers.count("data/olddir"), 1u);
  EXPECT_EQ(markers.at("data/olddir").mode, S_IFCHR) << "a whiteout";
  ASSERT_EQ(markers.count("usr/share/doc/busybox"), 1u);
  EXPECT_EQ(markers.at("usr/share/doc/busybox").xattrs.count("trusted.overlay.opaque"), 1u);

  // Unmount and mount again with the same upper dir: the same tree.
  ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
  for (int i = 0; i < 50 && DaemonPid(mnt.dir()) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  r = Imagefs({"mount", "--upper", upper, *busybox_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ExpectSameTrees(Tree(mnt.dir(), start, false), Tree(ovl.dir(), start, false));
  ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  // Kernel overlayfs reads imagefs's upper dir the same way.
  ScopedMount ovl2(Dir("ovl2"));
  MountOverlay(upper, upper + ".work", ovl2.dir());
  ExpectSameTrees(Tree(ovl2.dir(), start, false), Tree(ovl.dir(), start, false));
}

TEST_F(UpperTest, AfterKillNineUmountClearsTheMountAndFsyncedDataSurvives) {
  ScopedMount mnt(Dir("mnt"));
  ProcessResult r = Imagefs({"mount", *busybox_, mnt.dir()});  // a new container's upper dir
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ProcessResult list = Imagefs({"mounts"});
  const std::string containers = root_ + "/containers/";
  const size_t at = list.stdout_text.find(containers);
  ASSERT_NE(at, std::string::npos) << list.stdout_text;
  const std::string id = list.stdout_text.substr(at + containers.size(), 64);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
  const std::string upper = containers + id + "/upper";
  EXPECT_EQ(r.stdout_text, upper + "\n") << "a new container's upper dir is printed";
  EXPECT_TRUE(PathExists(upper + ".work/origin.json"));

  Shell("python3 -c \"import os\nfd = os.open('" + mnt.dir() +
        "/data/synced', os.O_CREAT | os.O_WRONLY, 0o644)\nos.write(fd, b'durable')\n"
        "os.fsync(fd)\nos.close(fd)\"");
  const pid_t pid = DaemonPid(mnt.dir());
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);  // the daemon this test started
  for (int i = 0; i < 50 && ::kill(pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(IsMounted(mnt.dir()));
  r = Imagefs({"umount", mnt.dir()});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(IsMounted(mnt.dir()));
  r = Imagefs({"mount", "--upper", upper, *busybox_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Shell("cat " + mnt.dir() + "/data/synced"), "durable");
  EXPECT_EQ(Shell("cat " + mnt.dir() + "/data/hello.txt"), "hello from imagefs\n");
  ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
}

TEST_F(UpperTest, PosixCornersOnTheMount) {
  ScopedMount mnt(Dir("mnt"));
  ProcessResult r = Imagefs({"mount", "--upper", Dir("upper"), *busybox_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string m = mnt.dir();
  // fstat of an unlinked open file: nlink 0.
  EXPECT_EQ(Shell("python3 -c \"import os\nfd = os.open('" + m +
                  "/data/tmpfile', os.O_CREAT | os.O_RDWR, 0o644)\nos.write(fd, b'abc')\n"
                  "os.unlink('" + m + "/data/tmpfile')\nst = os.fstat(fd)\n"
                  "print(st.st_nlink, st.st_size)\""),
            "0 3\n");
  // copy_file_range and O_DIRECT give the right bytes.
  const std::string copied =
      Shell("python3 -c \"import os\nsrc = os.open('" + m + "/data/hello.txt', os.O_RDONLY)\n"
            "dst = os.open('" + m + "/data/copy', os.O_CREAT | os.O_WRONLY, 0o644)\n"
            "n = os.copy_file_range(src, dst, 100)\nprint(n)\"");
  EXPECT_EQ(copied, "19\n");
  EXPECT_EQ(Shell("cat " + m + "/data/copy"), "hello from imagefs\n");
  EXPECT_EQ(Shell("dd if=" + m + "/data/big.bin bs=1M count=2 iflag=direct status=none | sha256sum"),
            Shell("head -c 2097152 " + *oracle_ + "/data/big.bin | sha256sum"));
  Shell("head -c 1048576 " + *oracle_ + "/data/big.bin > " + case_ + "/one-mib && dd if=" + case_ +
        "/one-mib of=" + m + "/data/direct bs=1M oflag=direct status=none");
  EXPECT_EQ(Shell("sha256sum < " + m + "/data/direct"), Shell("sha256sum < " + case_ + "/one-mib"));
  // mknod of a whiteout is refused; long names are ENAMETOOLONG.
  Shell("mknod " + m + "/wh c 0 0 2>/dev/null", &r.exit_code);
  EXPECT_NE(r.exit_code, 0);
  const std::string longname(256, 'n');
  EXPECT_EQ(::mkdir((m + "/" + longname).c_str(), 0755), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  // A non-root writer loses set-uid (the kernel asks for it through setattr).
  Shell("cd " + m + " && echo '#!/bin/sh' > suid && chmod 4777 suid && "
        "setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'echo x >> suid'");
  struct stat st;
  ASSERT_EQ(::stat((m + "/suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0777u);
  // Eight writers at once (the multi-threaded loop, one table lock).
  Shell("mkdir " + m + "/par && seq 1 400 | xargs -P8 -I{} sh -c 'echo {} > " + m +
        "/par/{} && cat " + m + "/par/{} > /dev/null && rm " + m + "/par/{} || exit 255' && "
        "seq 1 400 | xargs -P8 -I{} sh -c 'echo {} > " + m + "/par/f{}'");
  EXPECT_EQ(Shell("ls " + m + "/par | wc -l"), "400\n");
  EXPECT_EQ(Shell("cat " + m + "/par/f123"), "123\n");
  // statfs is the upper dir's filesystem: writable, with free space.
  EXPECT_EQ(Shell("stat -f -c %a " + m + " | awk '{print ($1 > 0)}'"), "1\n");
  ASSERT_EQ(Imagefs({"umount", m}).exit_code, 0);
}

// Under FUSE_HANDLE_KILLPRIV_V2 (fs/kernel_shim.h) the daemon, not the kernel, clears
// set-uid and set-gid: on a write, a truncate and an O_TRUNC open by a caller without
// CAP_FSETID, and on any chown. The same scenario on kernel overlayfs is the oracle.
const char kKillPrivScenario[] = R"SH(
set -eu
as() { setpriv --reuid=1000 --regid=1000 --clear-groups sh -c "$1"; }
mkdir kp
for f in w t o c d r g n m; do echo '#!/bin/sh' > kp/$f; done
chmod 6777 kp/w kp/t kp/o kp/r
chmod 4755 kp/c
chmod 2777 kp/g
chmod 2767 kp/n kp/m
chmod 2775 kp/d
chgrp 1000 kp/m
chmod 4777 data/hello.txt
as 'echo x >> kp/w'
as 'truncate -s 1 kp/t'
as ': > kp/o'
chown 1000:1000 kp/c
chown 1000 kp/d
echo x >> kp/r
as 'echo x >> kp/g'
as 'echo x >> kp/n'
as 'echo x >> kp/m'
as 'echo x >> data/hello.txt'
stat -c '%n %a %s' kp/* data/hello.txt
)SH";

TEST_F(UpperTest, SetUidAndSetGidAreClearedAsOnKernelOverlayfs) {
  ScopedMount mnt(Dir("mnt"));
  ProcessResult r = Imagefs({"mount", "--upper", Dir("upper"), *busybox_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ScopedMount ovl(Dir("ovl"));
  MountOverlay(Dir("kupper"), Dir("kwork"), ovl.dir());
  const std::string got = Shell("cd " + mnt.dir() + " && " + kKillPrivScenario);
  const std::string want = Shell("cd " + ovl.dir() + " && " + kKillPrivScenario);
  EXPECT_EQ(got, want);
  // Spelled out: cleared by non-root changes and by chown; kept for root's write. Set-gid
  // without group-execute stays for a writer in the file's group (m), not for others (n).
  EXPECT_EQ(want,
            "kp/c 755 10\nkp/d 775 10\nkp/g 777 12\nkp/m 2767 12\nkp/n 767 12\n"
            "kp/o 777 0\nkp/r 6777 12\nkp/t 777 1\nkp/w 777 12\ndata/hello.txt 777 21\n");
  // Seen again after the kernel's cached attributes are gone (a remount).
  ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
  r = Imagefs({"mount", "--upper", Dir("upper"), *busybox_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Shell("cd " + mnt.dir() + " && stat -c '%n %a %s' kp/* data/hello.txt"), want);
  ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
}

// Writes do not ask the daemon for security.capability each time (SB_NOSEC, which the
// kernel sets for FUSE_HANDLE_KILLPRIV_V2): 200 write(2)s of one file cost a few
// GETXATTR requests, not 200.
TEST_F(UpperTest, WritesDoNotAskForSecurityCapabilityEachTime) {
  ScopedMount mnt(Dir("mnt"));
  ProcessResult r = Imagefs({"mount", "--upper", Dir("upper"), *busybox_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string count = "python3 -c \"import os; print(os.getxattr('" + mnt.dir() + "', '" +
                            std::string(fs::kGetxattrCountXattr) + "').decode())\"";
  const std::string before = Shell(count);
  Shell("python3 -c \"import os\nfd = os.open('" + mnt.dir() +
        "/data/many', os.O_CREAT | os.O_WRONLY, 0o644)\n"
        "for i in range(200): os.write(fd, b'x' * 100)\n"
        "os.close(fd)\"");
  const std::string after = Shell(count);
  ASSERT_FALSE(before.empty());
  ASSERT_FALSE(after.empty());
  // The count includes the two debug reads themselves.
  EXPECT_LT(std::stoull(after) - std::stoull(before), 10u) << before << " -> " << after;
  EXPECT_EQ(Shell("wc -c < " + mnt.dir() + "/data/many"), "20000\n");
  ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
}

// Directories are read without OPENDIR (fs/fuse_ops.cc ReadDirStateless): a listing that
// runs over several READDIRs while its entries are removed (rm -r, find -delete) must
// still see every entry exactly once, and so must one that runs while others are added.
TEST_F(UpperTest, AListingSeesEveryEntryOnceWhileEntriesComeAndGo) {
  ScopedMount mnt(Dir("mnt"));
  ProcessResult r = Imagefs({"mount", "--upper", Dir("upper"), *busybox_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string d = mnt.dir() + "/data/many";
  const std::string script = R"PY(
import os, sys
d = sys.argv[1]
os.mkdir(d)
names = ['entry-%04d-%s' % (i, 'x' * 40) for i in range(3000)]
for n in names: open(os.path.join(d, n), 'w').close()
seen = []
with os.scandir(d) as it:
    for e in it:
        seen.append(e.name)
        os.unlink(e.path)
print(len(seen), len(set(seen)), sorted(seen) == sorted(names), len(os.listdir(d)))
for n in names[:1000]: open(os.path.join(d, n), 'w').close()
seen = []
with os.scandir(d) as it:
    for i, e in enumerate(it):
        seen.append(e.name)
        if i < 500: open(os.path.join(d, 'added-%d' % i), 'w').close()
print(len(set(seen) & set(names[:1000])), len(seen) == len(set(seen)))
)PY";
  ASSERT_TRUE(WriteFileAtomic(case_ + "/list.py", script).ok());
  EXPECT_EQ(Shell("python3 " + case_ + "/list.py " + d), "3000 3000 True 0\n1000 True\n");
  EXPECT_EQ(Shell("ls " + d + " | wc -l"), "1500\n");
  Shell("rm -r " + d);
  EXPECT_FALSE(PathExists(d));
  ASSERT_EQ(Imagefs({"umount", mnt.dir()}).exit_code, 0);
}

// The kernel caches listings (cache_readdir), entries and attributes long and keeps written
// pages (write-back cache): every change made through the mount must show at once.
TEST_F(UpperTest, CachedListingsEntriesAndPagesFollowChangesThroughTheMount) {
  ScopedMount mnt(Dir("mnt"));
  ProcessResult r = Imagefs({"mount", "--upper", Dir("upper"), *busybox_, mnt.dir()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string m = mnt.dir();
  const std::string listing = Shell("ls -a " + m + "/data");
  ASSERT_EQ(Shell("ls -a " + m + "/data"), listing) << "a second listing (from the cache)";
  ASSERT_NE(listing.find("hello.txt"), std::string::npos) << listing;
  Shell("echo new > " + m + "/data/new.txt");
  EXPECT_NE(Shell("ls " + m + "/data").find("new.txt"), std::string::npos);
  Shell("rm " + m + "/data/hello.txt && mv " + m + "/data/new.txt " + m + "/data/moved.txt");
  std::string now = Shell("ls " + m + "/data");
  EXPECT_EQ(now.find("hello.txt"), std::string::npos) << now;
  EXPECT_EQ(now.find("new.txt"), std::string::npos) << now;
  EXPECT_NE(now.find("moved.txt"), std::string::npos) << now;
  struct stat st;
  EXPECT_EQ(::stat((m + "/data/hello.txt").c_str(), &st), -1);
  Shell("mkdir " + m + "/data/sub-new && touch " + m + "/data/sub-new/f");
  EXPECT_EQ(Shell("ls " + m + "/data/sub-new"), "f\n");
  Shell("rm -r " + m + "/data/sub-new");
  EXPECT_EQ(Shell("ls " + m + "/data").find("sub-new"), std::string::npos);

  // A write-only handle rewriting part of a page: the kernel reads the rest of the page
  // through that handle. O_APPEND placed by the kernel.
  const std::string run = *ReadFile(*oracle_ + "/data/run.sh");
  ASSERT_GT(run.size(), 8u);
  Shell("python3 -c \"import os\nfd = os.open('" + m + "/data/run.sh', os.O_WRONLY)\n"
        "os.pwrite(fd, b'XY', 3)\nos.close(fd)\n"
        "fd = os.open('" + m + "/data/run.sh', os.O_WRONLY | os.O_APPEND)\n"
        "os.write(fd, b'tail')\nos.lseek(fd, 0, 0)\nos.write(fd, b'!')\nos.close(fd)\"");
  std::string want = run;
  want.replace(3, 2, "XY");
  want += "tail!";
  EXPECT_EQ(Shell("cat " + m + "/data/run.sh"), want);
  ASSERT_EQ(::stat((m + "/data/run.sh").c_str(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), want.size());
  const time_t before = st.st_mtime;
  Shell("touch -d @1000000000 " + m + "/data/run.sh");
  ASSERT_EQ(::stat((m + "/data/run.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtime, 1000000000) << "was " << before;
  Shell("chmod 0640 " + m + "/data/run.sh && chown 12:34 " + m + "/data/run.sh");
  ASSERT_EQ(::stat((m + "/data/run.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 12u);
  EXPECT_EQ(st.st_gid, 34u);
  ASSERT_EQ(Imagefs({"umount", m}).exit_code, 0);
  EXPECT_EQ(*ReadFile(case_ + "/upper/data/run.sh"), want) << "written back by umount";
}

TEST_F(UpperTest, AForegroundWritableMountUnmountsCleanlyOnSigterm) {
  ScopedMount mnt(Dir("mnt"));
  const std::string upper = case_ + "/upper";
  ProcessOptions o;
  o.argv = {ImagefsBinary(), "--root", root_, "mount", "-f", "--upper", upper, *busybox_, mnt.dir()};
  o.env_set = registry_->client_env();
  o.env_remove = {"REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF", "IMAGEFS_ROOT"};
  auto proc = BackgroundProcess::Start(o, case_ + "/foreground.log");
  ASSERT_TRUE(proc.ok()) << proc.status().message();
  for (int i = 0; i < 200 && !IsMounted(mnt.dir()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(IsMounted(mnt.dir())) << *ReadFile(proc->log_path());
  Shell("echo kept > " + mnt.dir() + "/data/kept.txt && rm " + mnt.dir() + "/data/hello.txt");
  EXPECT_EQ(proc->Stop(std::chrono::seconds(10)), 0);  // SIGTERM to the process we started
  EXPECT_FALSE(IsMounted(mnt.dir()));
  EXPECT_EQ(*ReadFile(upper + "/data/kept.txt"), "kept\n");
  struct stat st;
  ASSERT_EQ(::lstat((upper + "/data/hello.txt").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) << "a whiteout";
}

// The daemon holds no fd per upper inode (issue 5): under a 256-fd limit it serves 2,000
// new files the kernel keeps (day-long entry timeouts), renames and removals included.
TEST_F(UpperTest, ThousandsOfNewFilesUnderALowFdLimit) {
  ScopedMount mnt(Dir("mnt"));
  const std::string upper = case_ + "/upper";
  ProcessOptions o;
  o.argv = {"prlimit", "--nofile=256:256", ImagefsBinary(), "--root", root_, "mount", "-f",
            "--upper", upper, *busybox_, mnt.dir()};
  o.env_set = registry_->client_env();
  o.env_remove = {"REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF", "IMAGEFS_ROOT"};
  auto proc = BackgroundProcess::Start(o, case_ + "/low-fds.log");  // prlimit execs imagefs
  ASSERT_TRUE(proc.ok()) << proc.status().message();
  for (int i = 0; i < 200 && !IsMounted(mnt.dir()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(IsMounted(mnt.dir())) << *ReadFile(proc->log_path());
  const std::string m = mnt.dir() + "/data/many";
  Shell("set -e; mkdir " + m + "; cd " + m +
        "; for d in 0 1 2 3 4 5 6 7 8 9; do mkdir d$d; for i in $(seq 0 199); do "
        "echo $d-$i > d$d/f$i; done; done; mkdir -p deep/a/b/c/d && echo leaf > deep/a/b/c/d/leaf");
  auto fds = [&] {
    int count = 0;
    if (DIR* d = ::opendir(("/proc/" + std::to_string(proc->pid()) + "/fd").c_str())) {
      while (::readdir(d) != nullptr) ++count;
      ::closedir(d);
    }
    return count - 2;
  };
  EXPECT_LT(fds(), 200) << "fds the daemon holds after 2,000 new files";
  EXPECT_EQ(Shell("cd " + m + " && find . -type f | wc -l && cat d*/f* | wc -l && "
                  "stat -c %i d*/f* | sort -u | wc -l"),
            "2001\n2000\n2000\n");
  EXPECT_EQ(Shell("cd " + m + " && cat d9/f199 d0/f0 deep/a/b/c/d/leaf"), "9-199\n0-0\nleaf\n");
  Shell("set -e; cd " + m + "; for i in $(seq 0 99); do mv d0/f$i d1/g$i; done; "
        "mv d4 d4-moved; rm d2/f*; rmdir d2; rm -r d3; ln d5/f1 d5/link; rm d5/f1");
  EXPECT_EQ(Shell("cd " + m + " && ls | sort | tr '\\n' ' ' && find . -type f | wc -l && "
                  "cat d1/g42 d4-moved/f7 d5/link"),
            "d0 d1 d4-moved d5 d6 d7 d8 d9 deep 1601\n0-42\n4-7\n5-1\n");
  EXPECT_EQ(Shell("ls " + upper + "/data/many/d1 | wc -l"), "300\n");
  EXPECT_TRUE(proc->IsRunning()) << *ReadFile(proc->log_path());
  EXPECT_EQ(proc->Stop(std::chrono::seconds(10)), 0);  // SIGTERM to the process we started
  EXPECT_FALSE(IsMounted(mnt.dir()));
}

}  // namespace
}  // namespace imagefs::testing
