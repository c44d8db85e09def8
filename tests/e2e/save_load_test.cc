// imagefs save and load against a real registry: the busybox test image under two tags and
// a child image sharing its three layers (committed from an upper dir) are saved into one
// docker-archive, checked with skopeo as the oracle, loaded into fresh roots (plain, gzip,
// from stdin, and skopeo's own docker-archive output), read back by cat and a mount, and
// pushed again. A corrupt or missing archive is one error line and leaves `images` as it
// was.

#include <gtest/gtest.h>
#include <sys/mount.h>

#include <nlohmann/json.hpp>
#include <set>

#include "tests/e2e/imagefs_runner.h"
#include "tests/e2e/mounts.h"
#include "tests/e2e/oracle.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;

constexpr char kHello[] = "hello from imagefs\n";

// Flips one byte in the middle of the archive's largest member.
const char* kCorrupt = R"PY(
import sys, tarfile
t = tarfile.open(sys.argv[1])
m = max(t.getmembers(), key=lambda m: m.size)
with open(sys.argv[1], 'r+b') as f:
    f.seek(m.offset_data + m.size // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 0xff]))
)PY";

class SaveLoadTest : public RegistrySuite {
 protected:
  static void SetUpTestSuite() {
    StartRegistrySuite("save-load-test-");
    if (HasFatalFailure()) return;
    const std::string host = registry_->host();
    busybox_ = new std::string(PushBusybox("t/busybox:gzip"));
    busybox2_ = new std::string(host + "/t/busybox:v2");
    child_ = new std::string(host + "/t/child:1");
    // The child: busybox's layers plus one zstd:chunked layer holding /child.txt.
    const std::string root = *dir_ + "/origin";
    Shell("mkdir -p " + *dir_ + "/upper && echo child > " + *dir_ + "/upper/child.txt");
    ProcessResult r = RunImagefs({"--root", root, "commit", "--image", *busybox_,
                                  *dir_ + "/upper", *child_},
                                 registry_->client_env());
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    for (const std::string& ref : {*busybox_, *child_}) {
      r = RunImagefs({"--root", root, "pull", ref}, registry_->client_env());
      ASSERT_EQ(r.exit_code, 0) << r.Describe();
    }
    r = RunImagefs({"--root", root, "tag", *busybox_, *busybox2_});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    ASSERT_TRUE(WriteFileAtomic(*dir_ + "/corrupt.py", kCorrupt).ok());
  }
  static void TearDownTestSuite() {
    delete busybox_;
    busybox_ = nullptr;
    delete busybox2_;
    busybox2_ = nullptr;
    delete child_;
    child_ = nullptr;
    RegistrySuite::TearDownTestSuite();
  }

  // imagefs --root DIR/ROOT ARGS...
  ProcessResult In(const std::string& root, std::vector<std::string> args) {
    args.insert(args.begin(), {"--root", *dir_ + "/" + root});
    return RunImagefs(args, registry_->client_env());
  }
  // imagefs in a shell, for redirections.
  std::string Sh(const std::string& root, const std::string& rest, int* rc = nullptr) {
    return Shell(ImagefsBinary() + " --root " + *dir_ + "/" + root + " " + rest, rc);
  }
  // The image config's diff_ids, from the registry.
  std::vector<std::string> DiffIds(const std::string& ref) {
    auto r = registry_->RunSkopeo({"inspect", "--tls-verify=false", "--config", "docker://" + ref});
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->Describe() : r.status().message());
    if (!r.ok()) return {};
    return Json::parse(r->stdout_text)["rootfs"]["diff_ids"].get<std::vector<std::string>>();
  }
  // What `load` of a root printed must name, and that cat reads the loaded images.
  void ExpectLoaded(const std::string& root, const ProcessResult& r) {
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_EQ(r.stdout_text, "Loaded image: " + *busybox_ + "\nLoaded image: " + *busybox2_ +
                                 "\nLoaded image: " + *child_ + "\n");
    ProcessResult cat = In(root, {"cat", *busybox2_, "data/hello.txt"});
    EXPECT_EQ(cat.stdout_text, kHello) << cat.Describe();
    cat = In(root, {"cat", *child_, "child.txt"});
    EXPECT_EQ(cat.stdout_text, "child\n") << cat.Describe();
  }
  std::string Images(const std::string& root) {
    return In(root, {"images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"}).stdout_text;
  }

  inline static std::string* busybox_ = nullptr;
  inline static std::string* busybox2_ = nullptr;
  inline static std::string* child_ = nullptr;
};


TEST_F(SaveLoadTest, SavedArchiveHoldsBothImagesWithSharedLayersOnceAndSkopeoReadsIt) {
  const std::string archive = *dir_ + "/a.tar";
  ProcessResult r = In("origin", {"save", "-o", archive, *busybox_, *busybox2_, *child_});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "");
  // No temp file is left beside it.
  EXPECT_EQ(Shell("ls -A " + *dir_ + " | grep -c imagefs-tmp || true"), "0\n");

  const std::vector<std::string> busybox_ids = DiffIds(*busybox_);
  const std::vector<std::string> child_ids = DiffIds(*child_);
  ASSERT_EQ(busybox_ids.size(), 3u);
  ASSERT_EQ(child_ids.size(), 4u);
  // Members: one .tar per distinct layer (4, not 7), two configs, manifest.json, repositories.
  std::set<std::string> members;
  for (const std::string& m : Lines(Shell("tar -tf " + archive))) members.insert(m);
  std::set<std::string> want = {"manifest.json", "repositories"};
  for (const std::string& id : child_ids) want.insert(id.substr(7) + ".tar");
  EXPECT_EQ(Shell("tar -tf " + archive + " | grep -c '\\.json$'"), "3\n");
  for (const std::string& w : want) EXPECT_EQ(members.count(w), 1u) << w;
  EXPECT_EQ(members.size(), want.size() + 2) << Shell("tar -tf " + archive);

  // manifest.json: two entries (the two tags share one), the legacy repositories file.
  const Json manifest = Json::parse(Shell("tar -xOf " + archive + " manifest.json"));
  ASSERT_EQ(manifest.size(), 2u) << manifest.dump();
  EXPECT_EQ(manifest[0]["RepoTags"], Json({*busybox_, *busybox2_}));
  EXPECT_EQ(manifest[1]["RepoTags"], Json({*child_}));
  const Json repositories = Json::parse(Shell("tar -xOf " + archive + " repositories"));
  EXPECT_EQ(repositories[registry_->host() + "/t/busybox"]["v2"], busybox_ids.back().substr(7));

  // skopeo: inspect names the diff_ids as layers, copy to an OCI layout works.
  for (const auto& [ref, ids] : {std::pair{*busybox2_, busybox_ids}, std::pair{*child_, child_ids}}) {
    auto c = registry_->RunSkopeo({"inspect", "docker-archive:" + archive + ":" + ref});
    ASSERT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : "");
    EXPECT_EQ(Json::parse(c->stdout_text)["Layers"].get<std::vector<std::string>>(), ids);
  }
  auto c = registry_->RunSkopeo({"copy", "--quiet", "docker-archive:" + archive + ":" + *child_,
                                 "oci:" + *dir_ + "/oci:child"});
  EXPECT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : "");

  // Standard output: the same archive (layers are written reproducibly).
  Sh("origin", "save " + *busybox_ + " " + *busybox2_ + " " + *child_ + " > " + *dir_ +
                   "/stdout.tar");
  EXPECT_EQ(Shell("cmp " + archive + " " + *dir_ + "/stdout.tar && echo same"), "same\n");
}

TEST_F(SaveLoadTest, LoadStoresEveryTagAndTheImagesMountPushAndReadAsTheOriginals) {
  const std::string archive = *dir_ + "/b.tar";
  ASSERT_EQ(In("origin", {"save", "-o", archive, *busybox_, *busybox2_, *child_}).exit_code, 0);
  ProcessResult r = In("loaded", {"load", "-i", archive});
  ExpectLoaded("loaded", r);
  const std::string images = Images("loaded");
  EXPECT_NE(images.find(*busybox_ + " "), std::string::npos) << images;
  EXPECT_NE(images.find(*busybox2_ + " "), std::string::npos) << images;
  EXPECT_NE(images.find(*child_ + " "), std::string::npos) << images;
  // Same image IDs as the originals.
  EXPECT_EQ(In("loaded", {"images", "-q", "--no-trunc", *child_}).stdout_text,
            In("origin", {"images", "-q", "--no-trunc", *child_}).stdout_text);

  // A mount of a loaded image reads the same tree as the original's mount.
  const std::string mnt = *dir_ + "/mnt-loaded";
  const std::string mnt0 = *dir_ + "/mnt-origin";
  Shell("mkdir -p " + mnt + " " + mnt0);
  ScopedMount guard(mnt);
  ScopedMount guard0(mnt0);
  r = In("loaded", {"mount", *child_, mnt});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = In("origin", {"mount", *child_, mnt0});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto dump = [&](const std::string& d) {
    return Shell("cd " + d + " && find . -printf '%p %M %U %s %l\\n' | sort && "
                 "find . -type f -print0 | sort -z | xargs -0 sha256sum");
  };
  EXPECT_EQ(dump(mnt), dump(mnt0));
  In("loaded", {"umount", mnt});
  In("origin", {"umount", mnt0});

  // Push: the loaded (plain tar) image to the registry, pulled into a third root.
  const std::string pushed = registry_->host() + "/t/reloaded:1";
  r = In("loaded", {"push", *child_, pushed});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(DiffIds(pushed), DiffIds(*child_));
  r = In("third", {"cat", pushed, "data/hello.txt"});
  EXPECT_EQ(r.stdout_text, kHello) << r.Describe();

  // Loading again changes nothing.
  r = In("loaded", {"load", "-i", archive});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Images("loaded"), images);
}

TEST_F(SaveLoadTest, LoadReadsGzipAndZstdArchivesFromFilesAndStdin) {
  const std::string archive = *dir_ + "/c.tar";
  ASSERT_EQ(In("origin", {"save", "-o", archive, *busybox_, *busybox2_, *child_}).exit_code, 0);
  Shell("gzip -1 -k " + archive + " && zstd -q -1 -k " + archive);
  ExpectLoaded("gz", In("gz", {"load", "-i", archive + ".gz"}));
  int rc = 0;
  std::string out = Sh("zst", "load < " + archive + ".zst", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(Lines(out).size(), 3u) << out;
  EXPECT_EQ(In("zst", {"cat", *busybox_, "data/hello.txt"}).stdout_text, kHello);
  out = Sh("stdin", "load < " + archive, &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("Loaded image: " + *child_), std::string::npos) << out;
}

TEST_F(SaveLoadTest, LoadReadsSkopeosDockerArchiveAndAnUntaggedImage) {
  const std::string archive = *dir_ + "/skopeo.tar";
  const std::string name = registry_->host() + "/t/from-skopeo:7";
  auto c = registry_->RunSkopeo({"copy", "--quiet", "--src-tls-verify=false",
                                 "docker://" + *busybox_, "docker-archive:" + archive + ":" + name});
  ASSERT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : "");
  ProcessResult r = In("skopeo", {"load", "-i", archive});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "Loaded image: " + name + "\n");
  EXPECT_EQ(In("skopeo", {"cat", name, "data/hello.txt"}).stdout_text, kHello);

  // Saved by ID: no RepoTags; load prints the ID.
  const std::string id = In("origin", {"images", "-q", "--no-trunc", *child_}).stdout_text;
  ASSERT_EQ(id.size(), 72u) << id;
  const std::string untagged = *dir_ + "/untagged.tar";
  r = In("origin", {"save", "-o", untagged, id.substr(7, 12)});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = In("untagged", {"load", "-i", untagged});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text, "Loaded image ID: " + id);
  EXPECT_EQ(In("untagged", {"cat", id.substr(7, 12), "child.txt"}).stdout_text, "child\n");
}

TEST_F(SaveLoadTest, BadArchivesAndNamesAreOneLineAndStoreNothing) {
  const std::string archive = *dir_ + "/d.tar";
  ASSERT_EQ(In("origin", {"save", "-o", archive, *busybox_, *child_}).exit_code, 0);
  ASSERT_EQ(In("bad", {"load", "-i", archive}).exit_code, 0);
  const std::string before = Images("bad");
  ASSERT_NE(before, "");

  // A flipped byte in the biggest layer: its digest no longer matches the diff_id.
  const std::string flipped = *dir_ + "/flipped.tar";
  Shell("cp " + archive + " " + flipped + " && python3 " + *dir_ + "/corrupt.py " + flipped);
  ASSERT_EQ(In("fresh", {"load", "-i", flipped}).exit_code, 1);
  ProcessResult r = In("bad", {"load", "-i", flipped});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("diff_id"), std::string::npos) << r.stderr_text;
  EXPECT_EQ(r.stdout_text, "");
  EXPECT_EQ(Images("fresh"), "");

  // Truncated, not a tar, gzip cut short, missing: one line each.
  Shell("head -c 5000 " + archive + " > " + *dir_ + "/short.tar; head -c 7000 /bin/busybox > " +
        *dir_ + "/elf.bin; gzip -c " + archive + " | head -c 100000 > " + *dir_ + "/short.tar.gz");
  for (const char* bad : {"short.tar", "elf.bin", "short.tar.gz", "missing.tar"}) {
    r = In("bad", {"load", "-i", *dir_ + "/" + bad});
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_EQ(LineCount(r.stderr_text), 1) << bad << ": " << r.stderr_text;
    EXPECT_NE(r.stderr_text.find(bad), std::string::npos) << r.stderr_text;
  }
  EXPECT_EQ(Images("bad"), before);

  // save: an unknown image, a bad name; nothing is written.
  r = In("origin", {"save", "-o", *dir_ + "/none.tar", *busybox_, "nosuch:1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("nosuch:1"), std::string::npos) << r.stderr_text;
  EXPECT_FALSE(PathExists(*dir_ + "/none.tar"));
  EXPECT_EQ(Shell("ls -A " + *dir_ + " | grep -c imagefs-tmp || true"), "0\n");
  r = In("origin", {"save", "-o", *dir_ + "/none.tar", "Bad//Name"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
}

}  // namespace
}  // namespace imagefs::testing
