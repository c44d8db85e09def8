// WriteChangesTar: an upper dir's changes as a layer tar, read back with GNU tar.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "fs/changes.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::fs {
namespace changes_tar_test {
namespace {

std::string Sh(const std::string& script) {
  std::string out;
  FILE* p = ::popen(script.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

class ChangesTarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("/tmp", "changes-tar-");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
    up_ = dir_ + "/up";
    ASSERT_EQ(Sh("set -e; cd " + dir_ + "; mkdir -p up/etc up/d up/new; echo changed >up/etc/a;"
                  " mknod up/old c 0 0; echo z >up/d/h; echo n >up/new/f; ln up/new/f up/new/hl;"
                  " ln -s ../etc/a up/new/sl; mkfifo up/new/fifo; mknod up/new/null c 1 3;"
                  " touch -d @1000000000 up/etc up/d up/new up/etc/a; echo ok"),
              "ok\n");
    ASSERT_EQ(::setxattr((up_ + "/d").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
    ASSERT_EQ(::setxattr((up_ + "/new/f").c_str(), "user.x", "val", 3, 0), 0);
    ASSERT_EQ(::setxattr((up_ + "/new/f").c_str(), "trusted.overlay.origin", "o", 1, 0), 0);
    auto add = [&](Change::Kind kind, const std::string& rel, bool opaque = false) {
      Change c;
      c.kind = kind;
      c.path = "/" + rel;
      c.upper_rel = rel;
      c.opaque = opaque;
      changes_.push_back(c);
    };
    add(Change::kChanged, "d", true);
    add(Change::kAdded, "d/h");
    Change lower_child;  // a lower child of the opaque dir: covered by its marker
    lower_child.kind = Change::kDeleted;
    lower_child.path = "/d/sub";
    changes_.push_back(lower_child);
    add(Change::kChanged, "etc");
    add(Change::kChanged, "etc/a");
    add(Change::kAdded, "new");
    add(Change::kAdded, "new/f");
    add(Change::kAdded, "new/fifo");
    add(Change::kAdded, "new/hl");
    add(Change::kAdded, "new/null");
    add(Change::kAdded, "new/sl");
    add(Change::kDeleted, "old");
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  std::string Write(const std::string& name, Status* status = nullptr) {
    UniqueFd up(::open(up_.c_str(), O_RDONLY | O_DIRECTORY));
    const std::string path = dir_ + "/" + name;
    UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600));
    Status st = WriteChangesTar(up.get(), changes_, out.get());
    if (status) *status = st;
    else EXPECT_TRUE(st.ok()) << st.ToString();
    return path;
  }

  std::string dir_, up_;
  std::vector<Change> changes_;
};

TEST_F(ChangesTarTest, GnuTarListsEveryEntryWithWhiteoutsLinksAndDevices) {
  const std::string tar = Write("l.tar");
  const std::string listing = Sh("tar --numeric-owner -tvf " + tar + " | awk '{print $1, $6, $7, $8}'");
  EXPECT_EQ(listing,
            "drwxr-xr-x d/  \n"
            "-rw------- d/.wh..wh..opq  \n"
            "-rw-r--r-- d/h  \n"
            "drwxr-xr-x etc/  \n"
            "-rw-r--r-- etc/a  \n"
            "drwxr-xr-x new/  \n"
            "-rw-r--r-- new/f  \n"
            "prw-r--r-- new/fifo  \n"
            "hrw-r--r-- new/hl link to\n"
            "crw-r--r-- new/null  \n"
            "lrwxrwxrwx new/sl -> ../etc/a\n"
            "-rw------- .wh.old  \n")
      << listing;
  EXPECT_NE(Sh("tar --numeric-owner -tvf " + tar + " new/null").find(" 1,3 "), std::string::npos);
}

TEST_F(ChangesTarTest, ExtractsWithXattrsButNoOverlayXattrs) {
  const std::string tar = Write("l.tar");
  EXPECT_EQ(Sh("set -e; mkdir " + dir_ + "/x; tar --xattrs --xattrs-include='*' -xf " + tar +
               " -C " + dir_ + "/x; cat " + dir_ + "/x/new/hl; stat -c %h " + dir_ +
               "/x/new/f; stat -c %Y " + dir_ + "/x/etc/a; readlink " + dir_ + "/x/new/sl"),
            "n\n2\n1000000000\n../etc/a\n");
  char value[16] = {};
  EXPECT_EQ(::getxattr((dir_ + "/x/new/f").c_str(), "user.x", value, sizeof value), 3);
  EXPECT_STREQ(value, "val");
  EXPECT_LT(::getxattr((dir_ + "/x/new/f").c_str(), "trusted.overlay.origin", value, sizeof value), 0);
  EXPECT_EQ(Sh("tar -tvf " + tar + " --xattrs 2>&1 | grep -c overlay"), "0\n");
}

TEST_F(ChangesTarTest, SameUpperDirGivesSameBytes) {
  auto a = ReadFile(Write("a.tar"));
  auto b = ReadFile(Write("b.tar"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(a->size() % 512, 0u);
}

TEST_F(ChangesTarTest, SocketIsRefusedByNameBeforeWriting) {
  int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  const std::string sock = up_ + "/new/sock";
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock.c_str());
  ASSERT_EQ(::bind(s, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr), 0);
  ::close(s);
  Change c;
  c.kind = Change::kAdded;
  c.path = "/new/sock";
  c.upper_rel = "new/sock";
  changes_.insert(changes_.begin() + 9, c);
  Status st;
  const std::string tar = Write("s.tar", &st);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("new/sock"), std::string::npos) << st.ToString();
  struct stat sb;
  ASSERT_EQ(::stat(tar.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_size, 0);
}

}  // namespace
}  // namespace changes_tar_test
}  // namespace imagefs::fs
