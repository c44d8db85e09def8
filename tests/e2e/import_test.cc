// imagefs import: a rootfs tarball built on the spot (the host's static /bin/busybox, as
// scripts/build-test-images uses) becomes a one-layer image, from a gzip file, zstd on
// standard input and a plain tar served over HTTP by a loopback python3 http.server. The
// image runs (runc, as root), reads back with cat, shows docker's "Imported from" history
// comment, takes -c/-m; bad input is one error line and stores no image.

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/e2e/imagefs_runner.h"
#include "tests/testing/process.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;

// Serves argv[1] on a free loopback port, written to argv[2] once listening.
const char* kServer = R"PY(
import functools, http.server, os, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
with open(sys.argv[2] + '.tmp', 'w') as f:
    f.write(str(server.server_address[1]))
os.rename(sys.argv[2] + '.tmp', sys.argv[2])
server.serve_forever()
)PY";

class ImportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = MakeTempDir("/tmp", "import-test-");
    ASSERT_TRUE(dir.ok());
    dir_ = new std::string(*dir);
    // rootfs: bin/busybox + bin/sh, etc/hello.txt, a 0700 dir owned by 1000.
    Shell("set -e; cd " + *dir_ + "; mkdir -p rootfs/bin rootfs/etc rootfs/home/u; "
          "cp /bin/busybox rootfs/bin/; ln -s busybox rootfs/bin/sh; "
          "echo 'hello import' > rootfs/etc/hello.txt; chown 1000:1000 rootfs/home/u; "
          "chmod 700 rootfs/home/u; tar -C rootfs -cf rootfs.tar .; "
          "gzip -k rootfs.tar; zstd -q -k rootfs.tar; mkdir www; cp rootfs.tar www/");
  }
  static void TearDownTestSuite() {
    if (dir_ != nullptr) (void)RemoveAll(*dir_);
    delete dir_;
  }
  void SetUp() override {
    auto d = MakeTempDir(*dir_, "case-");
    ASSERT_TRUE(d.ok());
    root_ = *d + "/root";
  }

  ProcessResult Imagefs(std::vector<std::string> args) {
    args.insert(args.begin(), {"--root", root_});
    return RunImagefs(args);
  }
  std::string Images() {
    return Imagefs({"images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"}).stdout_text;
  }
  std::string History(const std::string& image) {
    return Imagefs({"history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Comment}}", image})
        .stdout_text;
  }

  // The image's config, read from `imagefs save`'s archive.
  Json Config(const std::string& image) {
    const std::string archive = root_ + ".saved.tar";
    ProcessResult r = Imagefs({"save", "-o", archive, image});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    const Json manifest = Json::parse(Shell("tar -xOf " + archive + " manifest.json"));
    return Json::parse(Shell("tar -xOf " + archive + " " + manifest[0]["Config"].get<std::string>()));
  }

  static std::string* dir_;
  std::string root_;
};

std::string* ImportTest::dir_ = nullptr;

TEST_F(ImportTest, AGzipTarballBecomesAOneLayerImageThatRuns) {
  const std::string tarball = *dir_ + "/rootfs.tar.gz";
  ProcessResult r = Imagefs({"import", tarball, "myimg:1"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_EQ(r.stdout_text.size(), 72u) << r.stdout_text;
  EXPECT_EQ(r.stdout_text.rfind("sha256:", 0), 0u);
  const std::string id = r.stdout_text.substr(7, 12);
  EXPECT_EQ(Images(), "myimg:1 " + id + "\n");
  EXPECT_EQ(History("myimg:1"), "|Imported from " + tarball + "\n");

  // One plain-tar layer whose digest is the sha256 of the uncompressed tarball (read back
  // through save: inspect asks the registry).
  const Json config = Config("myimg:1");
  const std::string tar_sha = Shell("sha256sum " + *dir_ + "/rootfs.tar | cut -d' ' -f1");
  EXPECT_EQ(config["rootfs"]["diff_ids"], Json({"sha256:" + tar_sha.substr(0, 64)}));
  EXPECT_EQ(config["os"], "linux");

  r = Imagefs({"cat", "myimg:1", "etc/hello.txt"});
  EXPECT_EQ(r.stdout_text, "hello import\n") << r.Describe();
  r = Imagefs({"ls", "-l", "myimg:1", "home"});
  EXPECT_NE(r.stdout_text.find("1000"), std::string::npos) << r.Describe();

  if (::geteuid() != 0) GTEST_SKIP() << "run needs root";
  r = Imagefs({"run", "--rm", "myimg:1", "busybox", "echo", "hello"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "hello\n");
}

TEST_F(ImportTest, ZstdFromStdinAndPlainTarFromAnHttpUrlWithChangesAndMessage) {
  int rc = 0;
  std::string out = Shell(ImagefsBinary() + " --root " + root_ + " import -m 'from stdin' - " +
                              "piped < " + *dir_ + "/rootfs.tar.zst",
                          &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(Imagefs({"cat", "piped", "etc/hello.txt"}).stdout_text, "hello import\n");
  EXPECT_EQ(History("piped:latest"), "|from stdin\n");

  const std::string port_file = *dir_ + "/port-" + std::to_string(::getpid());
  ASSERT_TRUE(WriteFileAtomic(*dir_ + "/server.py", kServer).ok());
  ProcessOptions o;
  o.argv = {"python3", *dir_ + "/server.py", *dir_ + "/www", port_file};
  auto server = BackgroundProcess::Start(o, *dir_ + "/server.log");
  ASSERT_TRUE(server.ok()) << server.status().message();
  for (int i = 0; i < 100 && !PathExists(port_file); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto port = ReadFile(port_file);
  ASSERT_TRUE(port.ok()) << Shell("cat " + *dir_ + "/server.log");
  const std::string url = "http://127.0.0.1:" + *port + "/rootfs.tar";
  ProcessResult r = Imagefs({"import", "-c", "ENV A=b", "-c", "CMD [\"busybox\", \"sh\"]",
                             "-c", "WORKDIR /etc", url, "web:2"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(History("web:2"), "|Imported from " + url + "\n");
  const Json config = Config("web:2");
  EXPECT_EQ(config["config"]["Env"], Json({"A=b"}));
  EXPECT_EQ(config["config"]["Cmd"], Json({"busybox", "sh"}));
  EXPECT_EQ(config["config"]["WorkingDir"], "/etc");
  EXPECT_EQ(Imagefs({"cat", "web:2", "etc/hello.txt"}).stdout_text, "hello import\n");

  // The same tarball three ways is one layer blob.
  EXPECT_EQ(Imagefs({"images", "-q"}).stdout_text.size(), 2 * 13u);
  r = Imagefs({"import", url + ".missing", "web:3"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("404"), std::string::npos) << r.stderr_text;
  server->Stop();
}

TEST_F(ImportTest, BadInputIsOneLineAndStoresNoImage) {
  Shell("cd " + *dir_ + " && head -c 4096 /bin/busybox | gzip > notatar.gz && "
        "head -c 30000 rootfs.tar.gz > short.tar.gz && xz -k -c rootfs.tar > rootfs.tar.xz "
        "2>/dev/null || cp rootfs.tar.gz rootfs.tar.xz");
  struct Case {
    std::vector<std::string> args;
    std::string mentions;
  };
  const std::vector<Case> cases = {
      {{"import", *dir_ + "/missing.tar", "x:1"}, "no such file"},
      {{"import", *dir_ + "/notatar.gz", "x:1"}, "not a tar archive"},
      {{"import", *dir_ + "/short.tar.gz", "x:1"}, "short.tar.gz"},
      {{"import", *dir_ + "/rootfs.tar.gz", "Bad Name"}, "Bad Name"},
      {{"import", "-c", "FROM x", *dir_ + "/rootfs.tar.gz", "x:1"}, "FROM x"},
      {{"import", "http://127.0.0.1:1/rootfs.tar", "x:1"}, "127.0.0.1:1"},
  };
  for (const Case& c : cases) {
    ProcessResult r = Imagefs(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.mentions;
    EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
    EXPECT_NE(r.stderr_text.find(c.mentions), std::string::npos) << r.stderr_text;
  }
  if (Shell("xz --version >/dev/null 2>&1 && echo yes || true") == "yes\n") {
    ProcessResult r = Imagefs({"import", *dir_ + "/rootfs.tar.xz", "x:1"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.stderr_text.find("xz -dk"), std::string::npos) << r.stderr_text;
  }
  EXPECT_EQ(Images(), "");
}

}  // namespace
}  // namespace imagefs::testing
