// imagefs images / tag / rmi / history against images pulled from a real docker-registry:
// the busybox and multiarch test images plus a copy of busybox re-dated to 2025 ("newbox"),
// so that ordering and the before/since filters have something to tell apart. Output is
// compared with docker's layout (tabwriter columns: width = max(10, longest cell + 3), last
// column unpadded).

#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/e2e/imagefs_runner.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/digest.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;
using Table = std::vector<std::vector<std::string>>;

// docker's table layout for rows of equal length.
std::string Layout(const Table& rows) {
  std::vector<size_t> widths(rows[0].size(), 10);
  auto runes = [](const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  };
  for (const auto& r : rows) {
    for (size_t i = 0; i + 1 < r.size(); ++i) widths[i] = std::max(widths[i], runes(r[i]) + 3);
  }
  std::string out;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      out += r[i];
      if (i + 1 < r.size()) out += std::string(widths[i] - runes(r[i]), ' ');
    }
    out += "\n";
  }
  return out;
}

struct LayoutImage {
  std::string manifest_digest;
  std::string config_digest;
  int64_t size = 0;  // config + layers
  std::vector<int64_t> layer_sizes;
  Json config;
};

Json ReadJson(const std::string& path) {
  auto text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << path;
  return Json::parse(text.ok() ? *text : "{}", nullptr, false);
}

std::string BlobPath(const std::string& dir, const std::string& digest) {
  return dir + "/blobs/sha256/" + digest.substr(7);
}

LayoutImage ReadManifest(const std::string& dir, const std::string& manifest_digest) {
  LayoutImage out;
  out.manifest_digest = manifest_digest;
  Json m = ReadJson(BlobPath(dir, manifest_digest));
  out.config_digest = m["config"]["digest"];
  out.size = m["config"]["size"].get<int64_t>();
  for (const auto& l : m["layers"]) {
    out.layer_sizes.push_back(l["size"].get<int64_t>());
    out.size += out.layer_sizes.back();
  }
  out.config = ReadJson(BlobPath(dir, out.config_digest));
  return out;
}

std::string PutBlob(const std::string& dir, const std::string& bytes) {
  std::string digest = Digest::Sha256Of(std::string_view(bytes)).String();
  EXPECT_TRUE(WriteFileAtomic(BlobPath(dir, digest), bytes).ok());
  return digest;
}

// A copy of a single-manifest layout whose config says it was created at `created`.
Status Redate(const std::string& src, const std::string& dst, const std::string& created) {
  RETURN_IF_ERROR(MakeDirs(dst + "/blobs/sha256"));
  Json index = ReadJson(src + "/index.json");
  std::string manifest_digest = index["manifests"][0]["digest"];
  Json manifest = ReadJson(BlobPath(src, manifest_digest));
  Json config = ReadJson(BlobPath(src, manifest["config"]["digest"]));
  config["created"] = created;
  for (auto& h : config["history"]) h["created"] = created;
  std::string config_bytes = config.dump();
  manifest["config"]["digest"] = PutBlob(dst, config_bytes);
  manifest["config"]["size"] = config_bytes.size();
  for (const auto& l : manifest["layers"]) {
    ASSIGN_OR_RETURN(std::string bytes, ReadFile(BlobPath(src, l["digest"])));
    PutBlob(dst, bytes);
  }
  std::string manifest_bytes = manifest.dump();
  index["manifests"][0]["digest"] = PutBlob(dst, manifest_bytes);
  index["manifests"][0]["size"] = manifest_bytes.size();
  RETURN_IF_ERROR(WriteFileAtomic(dst + "/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}"));
  return WriteFileAtomic(dst + "/index.json", index.dump());
}

int BlobCount(const std::string& root) {
  DIR* d = ::opendir((root + "/blobs/sha256").c_str());
  if (d == nullptr) return 0;
  int n = 0;
  while (struct dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

class ImagesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = TestImagesDir();
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    auto tmp = MakeTempDir("/tmp", "imagefs-images-suite-");
    ASSERT_TRUE(tmp.ok());
    suite_tmp_ = new std::string(*tmp);
    auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    reg_ = reg->release();
    std::string newbox = *suite_tmp_ + "/newbox";
    ASSERT_TRUE(Redate(*dir + "/busybox", newbox, "2025-01-01T00:00:00Z").ok());
    ASSERT_TRUE(PushImage(*reg_, *dir + "/busybox:latest", "test/busybox:latest", false).ok());
    ASSERT_TRUE(PushImage(*reg_, *dir + "/multiarch:latest", "test/multiarch:latest", true).ok());
    ASSERT_TRUE(PushImage(*reg_, newbox + ":latest", "test/newbox:latest", false).ok());

    Json bi = ReadJson(*dir + "/busybox/index.json");
    busybox_ = new LayoutImage(ReadManifest(*dir + "/busybox", bi["manifests"][0]["digest"]));
    Json ni = ReadJson(newbox + "/index.json");
    newbox_ = new LayoutImage(ReadManifest(newbox, ni["manifests"][0]["digest"]));
    Json mi = ReadJson(*dir + "/multiarch/index.json");
    multiarch_index_ = new std::string(mi["manifests"][0]["digest"]);
    Json idx = ReadJson(BlobPath(*dir + "/multiarch", *multiarch_index_));
    for (const auto& m : idx["manifests"]) {
      if (m["platform"]["architecture"] == "amd64") {
        multiarch_ = new LayoutImage(ReadManifest(*dir + "/multiarch", m["digest"]));
      }
    }
    ASSERT_NE(multiarch_, nullptr);
  }
  static void TearDownTestSuite() {
    delete reg_;
    if (suite_tmp_) (void)RemoveAll(*suite_tmp_);
    delete suite_tmp_;
    delete busybox_;
    delete newbox_;
    delete multiarch_;
    delete multiarch_index_;
  }
  void SetUp() override {
    ASSERT_NE(reg_, nullptr);
    auto tmp = MakeTempDir("/tmp", "imagefs-images-");
    ASSERT_TRUE(tmp.ok());
    tmp_ = *tmp;
    root_ = tmp_ + "/root";
    ASSERT_TRUE(WriteFileAtomic(tmp_ + "/registries.conf", "").ok());
    env_ = {{"REGISTRY_AUTH_FILE", tmp_ + "/auth.json"},
            {"CONTAINERS_REGISTRIES_CONF", tmp_ + "/registries.conf"},
            {"TZ", "UTC"}};
  }
  void TearDown() override { (void)RemoveAll(tmp_); }

  ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--root", root_});
    return RunImagefs(args, env_);
  }
  std::string Ok(std::vector<std::string> args) {
    ProcessResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << ShellQuote(args) << ": " << r.Describe();
    return r.stdout_text;
  }
  std::string Repo(const std::string& name) const { return reg_->host() + "/test/" + name; }
  static std::string Id(const LayoutImage& i) { return i.config_digest.substr(7, 12); }

  // multiarch (amd64), then busybox a second later, then newbox: busybox and multiarch share
  // a created time, so the later pull comes first, as ties are ordered.
  void PullAll() {
    Ok({"pull", "-q", "--platform", "linux/amd64", Repo("multiarch:latest")});
    ::usleep(1100 * 1000);
    Ok({"pull", "-q", Repo("busybox:latest")});
    Ok({"pull", "-q", Repo("newbox:latest")});
  }
  std::string Since(const std::string& image) {
    std::string s = Ok({"images", "--format", "{{.CreatedSince}}", image});
    if (!s.empty()) s.pop_back();
    EXPECT_TRUE(std::regex_match(s, std::regex("[0-9]+ (months|years) ago"))) << s;
    return s;
  }

  static TestRegistry* reg_;
  static std::string* suite_tmp_;
  static LayoutImage* busybox_;
  static LayoutImage* newbox_;
  static LayoutImage* multiarch_;
  static std::string* multiarch_index_;
  std::string tmp_;
  std::string root_;
  std::vector<std::pair<std::string, std::string>> env_;
};
TestRegistry* ImagesTest::reg_ = nullptr;
std::string* ImagesTest::suite_tmp_ = nullptr;
LayoutImage* ImagesTest::busybox_ = nullptr;
LayoutImage* ImagesTest::newbox_ = nullptr;
LayoutImage* ImagesTest::multiarch_ = nullptr;
std::string* ImagesTest::multiarch_index_ = nullptr;

TEST_F(ImagesTest, EmptyStoreShowsOnlyTheHeader) {
  EXPECT_EQ(Ok({"images"}), Layout({{"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"}}));
}

TEST_F(ImagesTest, ListsPulledImagesNewestFirstInDockersLayout) {
  PullAll();
  std::string old_since = Since(Repo("busybox"));
  std::string new_since = Since(Repo("newbox"));
  EXPECT_EQ(Ok({"images"}),
            Layout({{"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"},
                    {Repo("newbox"), "latest", Id(*newbox_), new_since, DockerSize(newbox_->size)},
                    {Repo("busybox"), "latest", Id(*busybox_), old_since, DockerSize(busybox_->size)},
                    {Repo("multiarch"), "latest", Id(*multiarch_), old_since,
                     DockerSize(multiarch_->size)}}));
  EXPECT_EQ(Ok({"images", "-q"}), Id(*newbox_) + "\n" + Id(*busybox_) + "\n" + Id(*multiarch_) + "\n");
  EXPECT_EQ(Ok({"images", "-a", "-q", "--no-trunc"}),
            newbox_->config_digest + "\n" + busybox_->config_digest + "\n" +
                multiarch_->config_digest + "\n");
  // --digests: what each name was pulled as (the index for the multi-arch image).
  EXPECT_EQ(Ok({"images", "--digests"}),
            Layout({{"REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"},
                    {Repo("newbox"), "latest", newbox_->manifest_digest, Id(*newbox_), new_since,
                     DockerSize(newbox_->size)},
                    {Repo("busybox"), "latest", busybox_->manifest_digest, Id(*busybox_), old_since,
                     DockerSize(busybox_->size)},
                    {Repo("multiarch"), "latest", *multiarch_index_, Id(*multiarch_), old_since,
                     DockerSize(multiarch_->size)}}));
  EXPECT_EQ(Ok({"images", "--no-trunc", Repo("busybox")}),
            Layout({{"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"},
                    {Repo("busybox"), "latest", busybox_->config_digest, old_since,
                     DockerSize(busybox_->size)}}));
}

TEST_F(ImagesTest, FiltersSelectAsDockersDo) {
  PullAll();
  auto ids = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"images", "-q"});
    return Ok(args);
  };
  std::string nb = Id(*newbox_) + "\n", bb = Id(*busybox_) + "\n", ma = Id(*multiarch_) + "\n";
  EXPECT_EQ(ids({"--filter", "dangling=true"}), "");
  EXPECT_EQ(ids({"--filter", "dangling=false"}), nb + bb + ma);
  EXPECT_EQ(ids({"--filter", "before=" + Repo("newbox")}), bb + ma);
  EXPECT_EQ(ids({"--filter", "since=" + Repo("multiarch:latest")}), nb);
  EXPECT_EQ(ids({"--filter", "since=" + Id(*busybox_)}), nb);  // by short ID
  EXPECT_EQ(ids({"--filter", "reference=" + Repo("*box")}), nb + bb);
  EXPECT_EQ(ids({"--filter", "reference=" + Repo("*box:latest")}), nb + bb);
  EXPECT_EQ(ids({"--filter", "reference=*box"}), "");  // '*' does not cross '/'
  EXPECT_EQ(ids({Repo("multiarch")}), ma);
  EXPECT_EQ(ids({Repo("multiarch:nope")}), "");
  ProcessResult bad = Run({"images", "--filter", "label=x"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.stderr_text, "imagefs: images: invalid filter 'label'\n");
}

TEST_F(ImagesTest, FormatTemplatesTableAndJson) {
  PullAll();
  EXPECT_EQ(Ok({"images", "--format", "{{.Repository}}:{{.Tag}} {{ .ID }} {{.Size}}", Repo("busybox")}),
            Repo("busybox") + ":latest " + Id(*busybox_) + " " + DockerSize(busybox_->size) + "\n");
  EXPECT_EQ(Ok({"images", "--format", "{{.Digest}} {{.CreatedAt}}", Repo("multiarch")}),
            *multiarch_index_ + " 2024-01-01 00:00:00 +0000 UTC\n");
  EXPECT_EQ(Ok({"images", "--format", "table {{.ID}}\\t{{.Repository}}", Repo("busybox")}),
            Layout({{"IMAGE ID", "REPOSITORY"}, {Id(*busybox_), Repo("busybox")}}));
  EXPECT_EQ(Ok({"images", "--format", "table", Repo("busybox")}),
            Ok({"images", Repo("busybox")}));
  std::string json = Ok({"images", "--format", "json"});
  EXPECT_EQ(LineCount(json), 3) << json;
  Json first = Json::parse(json.substr(0, json.find('\n')), nullptr, false);
  ASSERT_TRUE(first.is_object()) << json;
  EXPECT_EQ(first["ID"], Id(*newbox_));
  EXPECT_EQ(first["Repository"], Repo("newbox"));
  EXPECT_EQ(first["Tag"], "latest");
  EXPECT_EQ(first["Digest"], newbox_->manifest_digest);
  EXPECT_EQ(first["Size"], DockerSize(newbox_->size));
  EXPECT_EQ(first["CreatedAt"], "2025-01-01 00:00:00 +0000 UTC");
  EXPECT_EQ(first["Containers"], "N/A");
  ProcessResult bad = Run({"images", "--format", "{{.Nope}}"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.stderr_text.find("can't evaluate field Nope"), std::string::npos) << bad.stderr_text;
}

TEST_F(ImagesTest, RepullOfATagToANewDigestLeavesTheOldImageDangling) {
  Ok({"pull", "-q", Repo("busybox:latest")});
  ASSERT_TRUE(PushImage(*reg_, *suite_tmp_ + "/newbox:latest", "test/busybox:latest", false).ok());
  Ok({"pull", "-q", Repo("busybox:latest")});
  // As docker: the old image keeps its repo digest, so it shows as REPO <none>.
  EXPECT_EQ(Ok({"images", "--format", "{{.Repository}} {{.Tag}} {{.ID}}"}),
            Repo("busybox") + " latest " + Id(*newbox_) + "\n" + Repo("busybox") + " <none> " +
                Id(*busybox_) + "\n");
  EXPECT_EQ(Ok({"images", "-q", "--filter", "dangling=true"}), Id(*busybox_) + "\n");
  EXPECT_EQ(Ok({"images", "-q", "--filter", "dangling=false"}), Id(*newbox_) + "\n" + Id(*busybox_) + "\n");
  // Put the registry back as the other tests expect it.
  ASSERT_TRUE(PushImage(*reg_, *TestImagesDir() + "/busybox:latest", "test/busybox:latest", false).ok());
}

TEST_F(ImagesTest, TagAddsANameWithTheSameId) {
  PullAll();
  Ok({"tag", Repo("busybox"), "mine/box:v1"});
  Ok({"tag", Id(*multiarch_), "mine/arch:1"});                 // by short ID
  Ok({"tag", busybox_->config_digest, "example.com/x/box:2"});  // by long ID
  EXPECT_EQ(Ok({"images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "--filter",
                "before=" + Repo("newbox")}),
            Repo("busybox") + ":latest " + Id(*busybox_) + "\n" + "example.com/x/box:2 " +
                Id(*busybox_) + "\n" + "mine/box:v1 " + Id(*busybox_) + "\n" +
                Repo("multiarch") + ":latest " + Id(*multiarch_) + "\n" + "mine/arch:1 " +
                Id(*multiarch_) + "\n");
  ProcessResult missing = Run({"tag", "nope:1", "x:1"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.stderr_text, "imagefs: tag: no such image: nope:1\n");
}

TEST_F(ImagesTest, RmiUntagsThenDeletesTheLastNameWithItsBlobs) {
  PullAll();
  int before = BlobCount(root_);
  Ok({"tag", Repo("busybox"), "mine/box:v1"});
  EXPECT_EQ(Ok({"rmi", "mine/box:v1"}), "Untagged: mine/box:v1\n");
  EXPECT_EQ(BlobCount(root_), before);
  EXPECT_EQ(Ok({"rmi", Repo("busybox:latest")}),
            "Untagged: " + Repo("busybox:latest") + "\nUntagged: " + Repo("busybox") + "@" +
                busybox_->manifest_digest + "\nDeleted: " + busybox_->config_digest + "\n");
  // busybox's config and manifest go; its layers are shared with newbox and stay.
  EXPECT_EQ(BlobCount(root_), before - 2);
  EXPECT_FALSE(PathExists(root_ + "/blobs/sha256/" + busybox_->config_digest.substr(7)));
  EXPECT_FALSE(PathExists(root_ + "/blobs/sha256/" + busybox_->manifest_digest.substr(7)));
  // The last image with those layers takes them along.
  EXPECT_EQ(Ok({"rmi", Repo("newbox")}),
            "Untagged: " + Repo("newbox:latest") + "\nUntagged: " + Repo("newbox") + "@" +
                newbox_->manifest_digest + "\nDeleted: " + newbox_->config_digest + "\n");
  // Left: multiarch's manifest, index, config and layer.
  EXPECT_EQ(BlobCount(root_), 4);
  EXPECT_EQ(Ok({"images", "-q"}), Id(*multiarch_) + "\n");
}

TEST_F(ImagesTest, RmiByIdNeedsForceWhenNamedInSeveralRepositories) {
  Ok({"pull", "-q", Repo("busybox:latest")});
  Ok({"tag", Repo("busybox"), "mine/box:v1"});
  ProcessResult refused = Run({"rmi", Id(*busybox_)});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(refused.stderr_text, "imagefs: rmi: conflict: unable to delete " + Id(*busybox_) +
                                     " (must be forced) - image is referenced in multiple repositories\n");
  EXPECT_EQ(BlobCount(root_), 5);
  ProcessResult forced = Run({"rmi", "-f", Id(*busybox_)});
  EXPECT_EQ(forced.exit_code, 0) << forced.Describe();
  EXPECT_EQ(forced.stdout_text, "Untagged: " + Repo("busybox:latest") + "\nUntagged: " + Repo("busybox") +
                                    "@" + busybox_->manifest_digest + "\nUntagged: mine/box:v1\nDeleted: " +
                                    busybox_->config_digest + "\n");
  EXPECT_EQ(BlobCount(root_), 0);
  EXPECT_EQ(Ok({"images", "-q"}), "");
}

TEST_F(ImagesTest, RmiOfAnUnknownImageFailsAndGoesOnWithTheRest) {
  Ok({"pull", "-q", Repo("busybox:latest")});
  ProcessResult r = Run({"rmi", "nope", busybox_->manifest_digest});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stderr_text, "imagefs: rmi: no such image: nope\n");
  EXPECT_NE(r.stdout_text.find("Deleted: " + busybox_->config_digest + "\n"), std::string::npos)
      << r.stdout_text;
}

TEST_F(ImagesTest, HistoryShowsTheConfigHistoryNewestFirst) {
  Ok({"pull", "-q", Repo("busybox:latest")});
  std::string since = Since(Repo("busybox"));
  const Json& h = busybox_->config["history"];
  ASSERT_EQ(h.size(), 3u);
  Table want = {{"IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"}};
  for (int i = 2; i >= 0; --i) {
    want.push_back({i == 2 ? Id(*busybox_) : "<missing>", since, h[i]["created_by"],
                    DockerSize(static_cast<double>(busybox_->layer_sizes[i])), "imagefs test image"});
  }
  EXPECT_EQ(Ok({"history", Repo("busybox")}), Layout(want));
  std::string full = Ok({"history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}|{{.CreatedAt}}",
                         busybox_->manifest_digest});
  EXPECT_EQ(full, busybox_->config_digest + "|layer 3: whiteouts and opaque dir|2024-01-01T00:00:00Z\n"
                  "<missing>|layer 2: data files|2024-01-01T00:00:00Z\n"
                  "<missing>|layer 1: busybox base|2024-01-01T00:00:00Z\n");
  EXPECT_EQ(Ok({"history", "--format", "table {{.Size}}", Id(*busybox_)}),
            Layout({{"SIZE"}, {DockerSize(static_cast<double>(busybox_->layer_sizes[2]))},
                    {DockerSize(static_cast<double>(busybox_->layer_sizes[1]))},
                    {DockerSize(static_cast<double>(busybox_->layer_sizes[0]))}}));
  ProcessResult missing = Run({"history", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.stderr_text, "imagefs: history: no such image: nope\n");
}

TEST_F(ImagesTest, HistoryTruncatesCreatedByTo45Characters) {
  // A long created_by, in an image made for this test.
  std::string dir = tmp_ + "/long";
  ASSERT_TRUE(Redate(*TestImagesDir() + "/busybox", dir, "2024-06-01T00:00:00Z").ok());
  Json index = ReadJson(dir + "/index.json");
  std::string m = index["manifests"][0]["digest"];
  Json manifest = ReadJson(BlobPath(dir, m));
  Json config = ReadJson(BlobPath(dir, manifest["config"]["digest"]));
  std::string long_by = "/bin/sh -c #(nop) COPY file:0123456789abcdef0123456789 in /usr/share/x";
  config["history"][2]["created_by"] = long_by;
  std::string cb = config.dump();
  manifest["config"]["digest"] = PutBlob(dir, cb);
  manifest["config"]["size"] = cb.size();
  std::string mb = manifest.dump();
  index["manifests"][0]["digest"] = PutBlob(dir, mb);
  index["manifests"][0]["size"] = mb.size();
  ASSERT_TRUE(WriteFileAtomic(dir + "/index.json", index.dump()).ok());
  ASSERT_TRUE(PushImage(*reg_, dir + ":latest", "test/long:latest", false).ok());
  Ok({"pull", "-q", Repo("long:latest")});
  EXPECT_EQ(Ok({"history", "--format", "{{.CreatedBy}}", Repo("long")}),
            long_by.substr(0, 44) + "…\nlayer 2: data files\nlayer 1: busybox base\n");
  EXPECT_EQ(Ok({"history", "--no-trunc", "--format", "{{.CreatedBy}}", Repo("long")}),
            long_by + "\nlayer 2: data files\nlayer 1: busybox base\n");
}

TEST_F(ImagesTest, FailedPullRecordsNothing) {
  ProcessResult r = Run({"pull", Repo("busybox:nope")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Ok({"images", "-q"}), "");
}

}  // namespace
}  // namespace imagefs::testing
