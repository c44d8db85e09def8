// Manifests, indexes and configs as registries and umoci write them; platform choice.

#include <gtest/gtest.h>

#include "fetch/manifest.h"

namespace imagefs::fetch {
namespace manifest_parse_test {
namespace {

constexpr char kOciManifestJson[] = R"({
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
             "digest": "sha256:aaaa", "size": 1234},
  "layers": [
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:bbbb",
     "size": 100, "annotations": {"containerd.io/snapshot/stargz/toc.digest": "sha256:cccc"}},
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": "sha256:dddd", "size": 200}
  ],
  "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
})";

// umoci leaves out mediaType; the registry's Content-Type tells.
constexpr char kNoMediaType[] = R"({"schemaVersion": 2,
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:aa", "size": 1},
  "layers": []})";

constexpr char kDockerList[] = R"({
  "schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "manifests": [
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": "sha256:a1",
     "size": 10, "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": "sha256:a2",
     "size": 10, "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": "sha256:a3",
     "size": 10, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:a4",
     "size": 10, "platform": {"architecture": "unknown", "os": "unknown"}}
  ]})";

constexpr char kConfig[] = R"({
  "created": "2024-01-01T00:00:00Z", "author": "me", "architecture": "amd64", "os": "linux",
  "config": {"Env": ["PATH=/bin"], "Cmd": ["sh", "-c", "echo hi"], "Entrypoint": null,
             "WorkingDir": "/app", "User": "1000:1000", "Labels": {"a": "b"},
             "ExposedPorts": {"80/tcp": {}}},
  "rootfs": {"type": "layers", "diff_ids": ["sha256:11", "sha256:22"]},
  "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD file", "comment": "c"},
              {"created_by": "ENV x", "empty_layer": true}]
})";

TEST(ManifestParseTest, OciManifestKeepsDescriptorsAndAnnotations) {
  auto kind = SniffManifest(kOciManifestJson, "application/vnd.oci.image.manifest.v1+json");
  ASSERT_TRUE(kind.ok());
  EXPECT_EQ(*kind, ManifestKind::kImage);
  auto m = ParseImageManifest(kOciManifestJson, "");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->media_type, kOciManifest);
  EXPECT_EQ(m->config.digest, "sha256:aaaa");
  EXPECT_EQ(m->config.size, 1234);
  ASSERT_EQ(m->layers.size(), 2u);
  EXPECT_EQ(m->layers[0].annotations.at("containerd.io/snapshot/stargz/toc.digest"), "sha256:cccc");
  EXPECT_EQ(m->layers[1].media_type, kOciLayerZstd);
  EXPECT_EQ(m->annotations.at("org.opencontainers.image.created"), "2024-01-01T00:00:00Z");
}

TEST(ManifestParseTest, MissingMediaTypeFallsBackToContentTypeThenShape) {
  auto with_ct = ParseImageManifest(kNoMediaType, "application/vnd.oci.image.manifest.v1+json; charset=utf-8");
  ASSERT_TRUE(with_ct.ok());
  EXPECT_EQ(with_ct->media_type, kOciManifest);
  EXPECT_EQ(*SniffManifest(kNoMediaType, ""), ManifestKind::kImage);
  EXPECT_EQ(*SniffManifest(kNoMediaType, "application/json"), ManifestKind::kImage);
  EXPECT_EQ(*SniffManifest(R"({"schemaVersion":2,"manifests":[]})", "text/plain"), ManifestKind::kIndex);
}

TEST(ManifestParseTest, SchemaOneIsRejectedWithTheFix) {
  auto s = SniffManifest(R"({"schemaVersion":1,"name":"x","fsLayers":[]})", "");
  EXPECT_EQ(s.status().code(), Code::kUnsupported);
  EXPECT_NE(s.status().message().find("schema 1"), std::string::npos);
  EXPECT_NE(s.status().message().find("re-push"), std::string::npos);
  EXPECT_EQ(SniffManifest("{}", kDockerManifestV1Signed).status().code(), Code::kUnsupported);
}

TEST(ManifestParseTest, MalformedInputIsAnErrorNotACrash) {
  const char* bad[] = {
      "", "[]", "{", "not json",
      R"({"config": 5, "layers": []})",
      R"({"config": {"digest": "sha256:a"}, "layers": []})",              // no size
      R"({"config": {"digest": "sha256:a", "size": -1}, "layers": []})",  // negative size
      R"({"config": {"digest": 7, "size": 1}, "layers": []})",
      R"({"config": {"digest": "sha256:a", "size": 1}, "layers": {}})",
      R"({"config": {"digest": "sha256:a", "size": 1}, "layers": [1]})",
      R"({"config": {"digest": "sha256:a", "size": 1}, "annotations": {"a": 1}})",
  };
  for (const char* b : bad) {
    auto m = ParseImageManifest(b, "");
    EXPECT_FALSE(m.ok()) << b;
    EXPECT_EQ(m.status().code(), Code::kCorruption) << b;
  }
  EXPECT_FALSE(ParseImageIndex(R"({"manifests": 3})", "").ok());
  EXPECT_FALSE(ParseImageConfig(R"({"config": {"Env": "x", "Cmd": [1]}})").ok());
}

TEST(ManifestParseTest, PlatformSelectionFollowsDockersRules) {
  auto index = ParseImageIndex(kDockerList, "");
  ASSERT_TRUE(index.ok()) << index.status().message();
  EXPECT_EQ(SelectPlatform(*index, *Platform::Parse("linux/amd64"))->digest, "sha256:a1");
  EXPECT_EQ(SelectPlatform(*index, *Platform::Parse("linux/arm64"))->digest, "sha256:a3");
  EXPECT_EQ(SelectPlatform(*index, *Platform::Parse("linux/arm64/v8"))->digest, "sha256:a3");
  EXPECT_EQ(SelectPlatform(*index, *Platform::Parse("linux/arm/v7"))->digest, "sha256:a2");
  EXPECT_EQ(SelectPlatform(*index, *Platform::Parse("aarch64"))->digest, "sha256:a3");
  auto none = SelectPlatform(*index, *Platform::Parse("linux/s390x"));
  EXPECT_TRUE(none.status().IsNotFound());
  EXPECT_NE(none.status().message().find("available: linux/amd64, linux/arm/v7, linux/arm64/v8"),
            std::string::npos)
      << none.status().message();
  EXPECT_FALSE(Platform::Parse("linux//x").ok());
  EXPECT_FALSE(Platform::Parse("a/b/c/d").ok());
  EXPECT_EQ(Platform::Host().os, "linux");
}

TEST(ManifestParseTest, ConfigFieldsAreRead) {
  auto c = ParseImageConfig(kConfig);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->architecture, "amd64");
  EXPECT_EQ(c->author, "me");
  EXPECT_EQ(c->env, std::vector<std::string>{"PATH=/bin"});
  EXPECT_EQ(c->cmd, (std::vector<std::string>{"sh", "-c", "echo hi"}));
  EXPECT_TRUE(c->entrypoint.empty());
  EXPECT_EQ(c->working_dir, "/app");
  EXPECT_EQ(c->user, "1000:1000");
  EXPECT_EQ(c->labels.at("a"), "b");
  EXPECT_EQ(c->exposed_ports, std::vector<std::string>{"80/tcp"});
  EXPECT_EQ(c->diff_ids, (std::vector<std::string>{"sha256:11", "sha256:22"}));
  ASSERT_EQ(c->history.size(), 2u);
  EXPECT_EQ(c->history[0].created_by, "ADD file");
  EXPECT_TRUE(c->history[1].empty_layer);
}

TEST(ManifestParseTest, AcceptHeaderListsEveryManifestTypeWeRead) {
  std::string accept = ManifestAcceptHeader();
  for (std::string_view t : {kOciIndex, kOciManifest, kDockerManifestList, kDockerManifest}) {
    EXPECT_NE(accept.find(t), std::string::npos) << t;
  }
}

}  // namespace
}  // namespace manifest_parse_test
}  // namespace imagefs::fetch
