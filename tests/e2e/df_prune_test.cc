// imagefs df and prune against images pulled from a real registry: busybox and "derived"
// (busybox's three layers plus one more), so the base layers are shared.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/e2e/imagefs_runner.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;

// go-units HumanSizeWithPrecision(size, 3), as docker prints sizes.
class DfPruneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
    ASSERT_TRUE(reg.ok()) << reg.status().message();
    registry_ = std::move(*reg);
    auto dir = MakeTempDir("/tmp", "df-prune-test-");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
    auto image = TestImage("busybox");
    ASSERT_TRUE(image.ok());
    const std::string layout = image->substr(0, image->rfind(':'));
    // derived = busybox + one small gzip layer, written with jq beside busybox's blobs.
    Shell("cp -r " + layout + " " + dir_ + "/derived && cd " + dir_ + "/derived && "
          "mkdir -p stage/app && echo derived > stage/app/file && "
          "tar --sort=name --mtime=@0 --owner=0 --group=0 -C stage -cf l.tar app && "
          "diff_id=sha256:$(sha256sum l.tar | cut -d' ' -f1) && gzip -n l.tar && "
          "lhex=$(sha256sum l.tar.gz | cut -d' ' -f1) && lsize=$(stat -c %s l.tar.gz) && "
          "mv l.tar.gz blobs/sha256/$lhex && "
          "mhex=$(jq -r '.manifests[0].digest' index.json | cut -d: -f2) && "
          "chex=$(jq -r .config.digest blobs/sha256/$mhex | cut -d: -f2) && "
          "jq -c --arg d $diff_id '.rootfs.diff_ids += [$d] | .history += [{created_by: \"derived\"}]' "
          "blobs/sha256/$chex > c.json && chex2=$(sha256sum c.json | cut -d' ' -f1) && "
          "csize=$(stat -c %s c.json) && mv c.json blobs/sha256/$chex2 && "
          "jq -c --arg c sha256:$chex2 --argjson cs $csize --arg l sha256:$lhex --argjson ls $lsize "
          "'.config.digest = $c | .config.size = $cs | .layers += [{mediaType: "
          "\"application/vnd.oci.image.layer.v1.tar+gzip\", digest: $l, size: $ls}]' "
          "blobs/sha256/$mhex > m.json && mhex2=$(sha256sum m.json | cut -d' ' -f1) && "
          "msize=$(stat -c %s m.json) && mv m.json blobs/sha256/$mhex2 && "
          "jq -c --arg d sha256:$mhex2 --argjson s $msize '.manifests[0].digest = $d | "
          ".manifests[0].size = $s' index.json > i.json && mv i.json index.json && rm -rf stage");
    ASSERT_TRUE(PushImage(*registry_, *image, "t/busybox:1", false).ok());
    ASSERT_TRUE(PushImage(*registry_, dir_ + "/derived:latest", "t/derived:1", false).ok());
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  ProcessResult Imagefs(std::vector<std::string> args, const std::string& stdin_text = "") {
    args.insert(args.begin(), {"--root", dir_ + "/root"});
    return RunImagefs(args, registry_->client_env(), stdin_text);
  }
  // Sizes of the image's manifest blobs: config + layers, by digest.
  std::map<std::string, int64_t> BlobSizes(const std::string& ref) {
    ProcessResult r = Imagefs({"inspect", "--raw", ref});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    std::map<std::string, int64_t> out;
    Json m = Json::parse(r.stdout_text);
    out[m["config"]["digest"]] = m["config"]["size"];
    for (const Json& l : m["layers"]) out[l["digest"]] = l["size"];
    return out;
  }

  std::unique_ptr<TestRegistry> registry_;
  std::string dir_;
};

TEST_F(DfPruneTest, EmptyRootShowsDockersRowsWithZeros) {
  ProcessResult r = Imagefs({"df"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text,
            "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n"
            "Images          0         0         0B        0B\n"
            "Containers      0         0         0B        0B\n"
            "Layer Indexes   0         0         0B        0B\n"
            "Chunk Cache     0         0         0B        0B\n");
}

TEST_F(DfPruneTest, SharedBaseLayersAreCountedOnce) {
  const std::string busybox = registry_->host() + "/t/busybox:1";
  const std::string derived = registry_->host() + "/t/derived:1";
  ASSERT_EQ(Imagefs({"pull", "-q", busybox}).exit_code, 0);
  ASSERT_EQ(Imagefs({"pull", "-q", derived}).exit_code, 0);
  auto a = BlobSizes(busybox);
  auto b = BlobSizes(derived);
  int64_t distinct = 0, summed = 0, shared = 0;
  std::map<std::string, int64_t> all = a;
  all.insert(b.begin(), b.end());
  for (const auto& [d, s] : all) distinct += s;
  for (const auto& [d, s] : a) summed += s;
  for (const auto& [d, s] : b) summed += s;
  for (const auto& [d, s] : b) {
    if (a.count(d) != 0 && d != b.begin()->first) shared += s;
  }
  ASSERT_GT(summed - distinct, 1000000);  // the 20 MiB base really is shared
  ProcessResult r = Imagefs({"df"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string size = DockerSize(static_cast<double>(distinct));
  EXPECT_NE(r.stdout_text.find("Images          2         0         " + size), std::string::npos)
      << r.stdout_text << "want " << size;
  ProcessResult v = Imagefs({"df", "-v"});
  ASSERT_EQ(v.exit_code, 0) << v.Describe();
  EXPECT_NE(v.stdout_text.find("SHARED SIZE   UNIQUE SIZE   CONTAINERS"), std::string::npos)
      << v.stdout_text;
  EXPECT_NE(v.stdout_text.find(DockerSize(static_cast<double>(shared))), std::string::npos)
      << v.stdout_text;
}

TEST_F(DfPruneTest, PruneRemovesDanglingImagesAndOnlyTheirOwnBlobs) {
  const std::string busybox = registry_->host() + "/t/busybox:1";
  ASSERT_EQ(Imagefs({"pull", "-q", busybox}).exit_code, 0);
  // Pulled by digest only: no tag, so dangling (docker's <none>).
  ProcessResult inspect = Imagefs({"inspect", registry_->host() + "/t/derived:1"});
  const std::string digest = Json::parse(inspect.stdout_text)["Digest"];
  const std::string by_digest = registry_->host() + "/t/derived@" + digest;
  ASSERT_EQ(Imagefs({"pull", "-q", by_digest}).exit_code, 0);
  auto derived_blobs = BlobSizes(by_digest);

  // Without -f it asks; anything but y keeps everything.
  ProcessResult no = Imagefs({"prune"}, "n\n");
  EXPECT_EQ(no.exit_code, 0);
  EXPECT_NE(no.stderr_text.find("WARNING! This will remove all dangling images."),
            std::string::npos);
  EXPECT_EQ(no.stdout_text, "");

  ProcessResult r = Imagefs({"prune", "-f"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text.rfind("Deleted Images:\nuntagged: " + by_digest + "\ndeleted: sha256:", 0),
            0u)
      << r.stdout_text;
  EXPECT_NE(r.stdout_text.find("\n\nTotal reclaimed space: "), std::string::npos);
  ProcessResult images = Imagefs({"images", "-q"});
  EXPECT_EQ(LineCount(images.stdout_text), 1) << images.stdout_text;
  // busybox's layers stay; the derived image's own layer and config are gone.
  auto kept = BlobSizes(busybox);
  for (const auto& [d, s] : derived_blobs) {
    const bool shared = kept.count(d) != 0;
    EXPECT_EQ(PathExists(dir_ + "/root/blobs/sha256/" + d.substr(7)), shared) << d;
  }
  ProcessResult cat = Imagefs({"cat", busybox, "/etc/passwd"});
  EXPECT_EQ(cat.exit_code, 0) << cat.stderr_text;

  ProcessResult all = Imagefs({"prune", "-a", "-f"});
  ASSERT_EQ(all.exit_code, 0) << all.Describe();
  EXPECT_NE(all.stdout_text.find("untagged: " + registry_->host() + "/t/busybox:1"),
            std::string::npos)
      << all.stdout_text;
  EXPECT_EQ(Imagefs({"images", "-q"}).stdout_text, "");
  EXPECT_EQ(Shell("find " + dir_ + "/root/blobs " + dir_ + "/root/indexes -type f | wc -l"), "0\n");
  ProcessResult again = Imagefs({"prune", "-a", "-f"});
  EXPECT_EQ(again.stdout_text, "Total reclaimed space: 0B\n");
}

}  // namespace
}  // namespace imagefs::testing
