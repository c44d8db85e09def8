// Manifests, indexes and configs as registries, docker, buildkit and umoci write them;
// Content-Type sniffing; platform parsing, matching and selection. No network.

#include "fetch/manifest.h"

#include <sys/utsname.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace imagefs::fetch {
namespace manifest_test {
namespace {

// docker.io/library/alpine:3.19 for amd64, as Docker Hub serves it (Docker schema 2).
constexpr char kDockerV2[] = R"({
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1471,
      "digest": "sha256:05455a08881ea9cf0e752bc48e61bbd71a34c029bb13df01e40e3e70e0d007bd"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 3408729,
         "digest": "sha256:4abcf20661432fb2d719aaf90656f55c287f8ca915dc1c92ec14ff61e67fbaf8"
      }
   ]
})";

// An OCI manifest with an eStargz layer, a zstd layer and a foreign (urls) layer.
constexpr char kOciManifestJson[] = R"({
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7",
    "size": 7023
  },
  "layers": [
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "digest": "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0",
      "size": 32654,
      "annotations": {
        "containerd.io/snapshot/stargz/toc.digest": "sha256:2e9f1c1d3b53ccf07e9a8c8c2e4b6c2b52a0d2e7f55d7e1c9a3bb2f1c8f2ad11",
        "io.containers.estargz.uncompressed-size": "71680"
      }
    },
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
      "digest": "sha256:ec4b8955958665577945c89419d1af06b5f7636b4ac3da7f12184802ad867736",
      "size": 16724
    },
    {
      "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
      "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f",
      "size": 73109,
      "urls": ["https://mcr.microsoft.com/v2/windows/blobs/sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f"]
    }
  ],
  "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
})";

// umoci writes no mediaType in manifests; only the registry's Content-Type tells.
constexpr char kUmociManifest[] = R"({"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa11","size":1201},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:bb22","size":3456}]})";
constexpr char kUmociIndex[] = R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc33","size":400,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]})";

// A buildkit multi-platform OCI index with provenance attestations (unknown/unknown).
constexpr char kBuildkitIndex[] = R"({
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
     "size": 1000, "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222",
     "size": 1001, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333",
     "size": 566, "platform": {"architecture": "unknown", "os": "unknown"},
     "annotations": {"vnd.docker.reference.digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                     "vnd.docker.reference.type": "attestation-manifest"}}
  ],
  "annotations": {"org.opencontainers.image.ref.name": "demo"}
})";

// A Docker manifest list with the ARM zoo (like docker.io/library/busybox).
constexpr char kDockerListArm[] = R"({
  "schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "manifests": [
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
     "digest": "sha256:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
     "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
     "digest": "sha256:a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
     "platform": {"architecture": "arm", "os": "linux", "variant": "v5"}},
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
     "digest": "sha256:a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6",
     "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}},
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
     "digest": "sha256:a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7",
     "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
     "digest": "sha256:a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8",
     "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
     "digest": "sha256:a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3",
     "platform": {"architecture": "386", "os": "linux"}},
    {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
     "digest": "sha256:a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9",
     "platform": {"architecture": "ppc64le", "os": "linux"}}
  ]
})";

// What `docker build` writes (Docker config, nulls included, bare-string Cmd of old images).
constexpr char kDockerConfigJson[] = R"({
  "architecture": "amd64",
  "config": {
    "Hostname": "", "Domainname": "", "User": "nginx", "AttachStdin": false,
    "ExposedPorts": {"443/tcp": {}, "80/tcp": {}},
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NGINX_VERSION=1.25.3"],
    "Cmd": ["nginx", "-g", "daemon off;"],
    "Image": "sha256:0f0a9f2b3f9b6c6e0f5d8a7e0f6b2d5c9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c",
    "Volumes": null, "WorkingDir": "", "Entrypoint": ["/docker-entrypoint.sh"],
    "OnBuild": null, "Labels": {"maintainer": "NGINX Docker Maintainers"},
    "StopSignal": "SIGQUIT"
  },
  "container": "7f1b3f4b2a0e",
  "created": "2023-12-19T03:28:41.360386416Z",
  "docker_version": "20.10.23",
  "history": [
    {"created": "2023-12-19T01:20:31.2Z", "created_by": "/bin/sh -c #(nop) ADD file:a in / "},
    {"created": "2023-12-19T01:20:31.6Z", "created_by": "/bin/sh -c #(nop)  CMD [\"bash\"]", "empty_layer": true},
    {"created": "2023-12-19T03:28:40.1Z", "created_by": "/bin/sh -c set -x && apt-get update", "author": "NGINX", "comment": "buildkit.dockerfile.v0"}
  ],
  "os": "linux",
  "rootfs": {"type": "layers", "diff_ids": [
    "sha256:1111111111111111111111111111111111111111111111111111111111111111",
    "sha256:2222222222222222222222222222222222222222222222222222222222222222"]}
})";

// A minimal OCI config as umoci writes it (arm64 with variant).
constexpr char kOciConfigJson[] = R"({"created":"2024-02-02T10:00:00Z","author":"umoci","architecture":"arm64","variant":"v8","os":"linux","config":{"Entrypoint":["/bin/app"],"Cmd":null,"WorkingDir":"/srv"},"rootfs":{"type":"layers","diff_ids":["sha256:3333333333333333333333333333333333333333333333333333333333333333"]}})";

// --- Accept header and sniffing ---

TEST(ManifestTest, AcceptHeaderListsOciThenDockerTypesInOrder) {
  EXPECT_EQ(ManifestAcceptHeader(),
            "application/vnd.oci.image.index.v1+json, "
            "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.list.v2+json, "
            "application/vnd.docker.distribution.manifest.v2+json");
}

TEST(ManifestTest, SniffUsesContentTypeThenMediaTypeThenShape) {
  struct Case {
    const char* bytes;
    const char* content_type;
    ManifestKind want;
  } cases[] = {
      {kDockerV2, "application/vnd.docker.distribution.manifest.v2+json", ManifestKind::kImage},
      {kDockerV2, "", ManifestKind::kImage},
      {kOciManifestJson, "application/json", ManifestKind::kImage},
      {kBuildkitIndex, "application/vnd.oci.image.index.v1+json", ManifestKind::kIndex},
      {kBuildkitIndex, "text/plain; charset=utf-8", ManifestKind::kIndex},
      {kDockerListArm, "", ManifestKind::kIndex},
      // umoci: no mediaType in the JSON.
      {kUmociManifest, "application/vnd.oci.image.manifest.v1+json", ManifestKind::kImage},
      {kUmociManifest, "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
       ManifestKind::kImage},
      {kUmociManifest, "", ManifestKind::kImage},
      {kUmociManifest, "application/json", ManifestKind::kImage},
      {kUmociManifest, "text/plain", ManifestKind::kImage},
      {kUmociManifest, "application/octet-stream", ManifestKind::kImage},
      {kUmociIndex, "", ManifestKind::kIndex},
      {kUmociIndex, "application/vnd.oci.image.index.v1+json", ManifestKind::kIndex},
      {R"({"config": {"digest": "sha256:a", "size": 1}})", "", ManifestKind::kImage},
      {R"({"schemaVersion": 2, "manifests": []})", "text/plain", ManifestKind::kIndex},
  };
  for (const Case& c : cases) {
    auto kind = SniffManifest(c.bytes, c.content_type);
    ASSERT_TRUE(kind.ok()) << c.content_type << ": " << kind.status().ToString();
    EXPECT_EQ(*kind, c.want) << c.content_type << " " << std::string(c.bytes).substr(0, 80);
  }
}

TEST(ManifestTest, SniffRejectsUnknownTypesAndShapelessJson) {
  auto artifact = SniffManifest(R"({"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[]})", "");
  EXPECT_EQ(artifact.status().code(), Code::kUnsupported);
  EXPECT_NE(artifact.status().message().find("application/vnd.oci.artifact.manifest.v1+json"),
            std::string::npos);
  auto helm = SniffManifest(kUmociManifest, "application/vnd.cncf.helm.chart.content.v1.tar+gzip");
  EXPECT_EQ(helm.status().code(), Code::kUnsupported);
  EXPECT_EQ(SniffManifest(R"({"schemaVersion": 2})", "").status().code(), Code::kCorruption);
  EXPECT_EQ(SniffManifest(R"({"schemaVersion": 3, "layers": []})", "").status().code(),
            Code::kUnsupported);
}

TEST(ManifestTest, SchemaOneIsRejectedWithTheFix) {
  constexpr char kSchema1[] = R"({
   "schemaVersion": 1, "name": "library/busybox", "tag": "1.0", "architecture": "amd64",
   "fsLayers": [{"blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],
   "history": [{"v1Compatibility": "{}"}],
   "signatures": [{"header": {"alg": "ES256"}, "signature": "x", "protected": "y"}]})";
  const std::string want =
      "is a Docker schema 1 manifest, which imagefs does not support; re-push it with a current "
      "docker or skopeo";
  std::vector<Result<ManifestKind>> results;
  results.push_back(SniffManifest(kSchema1, ""));
  results.push_back(SniffManifest(kSchema1, "application/json"));
  results.push_back(SniffManifest(kSchema1, kDockerManifestV1Signed));
  results.push_back(SniffManifest("{}", kDockerManifestV1));
  results.push_back(SniffManifest("not even json", std::string(kDockerManifestV1Signed) + "; charset=utf-8"));
  results.push_back(SniffManifest(R"({"mediaType":"application/vnd.docker.distribution.manifest.v1+json"})", ""));
  results.push_back(SniffManifest(R"({"name":"x","fsLayers":[]})", ""));
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_FALSE(results[i].ok()) << i;
    EXPECT_EQ(results[i].status().code(), Code::kUnsupported) << i;
    EXPECT_NE(results[i].status().message().find(want), std::string::npos)
        << i << ": " << results[i].status().message();
  }
  EXPECT_EQ(ParseImageManifest(kSchema1, "").status().code(), Code::kUnsupported);
}

// --- Manifests and indexes ---

TEST(ManifestTest, DockerV2ManifestIsRead) {
  auto m = ParseImageManifest(kDockerV2, "application/vnd.docker.distribution.manifest.v2+json");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->media_type, kDockerManifest);
  EXPECT_EQ(m->config.media_type, kDockerConfig);
  EXPECT_EQ(m->config.size, 1471);
  EXPECT_EQ(m->config.digest,
            "sha256:05455a08881ea9cf0e752bc48e61bbd71a34c029bb13df01e40e3e70e0d007bd");
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_EQ(m->layers[0].media_type, kDockerLayerGzip);
  EXPECT_EQ(m->layers[0].size, 3408729);
  EXPECT_FALSE(m->layers[0].platform.has_value());
}

TEST(ManifestTest, OciManifestKeepsAnnotationsAndForeignUrls) {
  auto m = ParseImageManifest(kOciManifestJson, "");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->media_type, kOciManifest);
  ASSERT_EQ(m->layers.size(), 3u);
  EXPECT_EQ(m->layers[0].annotations.at("io.containers.estargz.uncompressed-size"), "71680");
  EXPECT_EQ(m->layers[1].media_type, kOciLayerZstd);
  ASSERT_EQ(m->layers[2].urls.size(), 1u);
  EXPECT_EQ(m->layers[2].urls[0].rfind("https://mcr.microsoft.com/", 0), 0u);
  EXPECT_EQ(m->annotations.at("org.opencontainers.image.created"), "2024-01-01T00:00:00Z");
}

TEST(ManifestTest, MediaTypeComesFromJsonElseContentTypeElseOci) {
  EXPECT_EQ(ParseImageManifest(kUmociManifest, "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8")
                ->media_type,
            kDockerManifest);
  EXPECT_EQ(ParseImageManifest(kUmociManifest, "text/plain")->media_type, kOciManifest);
  EXPECT_EQ(ParseImageManifest(kUmociManifest, "")->media_type, kOciManifest);
  // The JSON's own type wins over a generic or even a different Content-Type.
  EXPECT_EQ(ParseImageManifest(kDockerV2, "application/json")->media_type, kDockerManifest);
  EXPECT_EQ(ParseImageIndex(kUmociIndex, "")->media_type, kOciIndex);
  EXPECT_EQ(ParseImageIndex(kDockerListArm, "")->media_type, kDockerManifestList);
}

TEST(ManifestTest, IndexAndManifestAreNotConfused) {
  EXPECT_EQ(ParseImageManifest(kBuildkitIndex, "").status().code(), Code::kCorruption);
  EXPECT_EQ(ParseImageIndex(kDockerV2, "").status().code(), Code::kCorruption);
  // An index without "manifests" is broken, not empty.
  auto idx = ParseImageIndex(R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"})", "");
  EXPECT_EQ(idx.status().code(), Code::kCorruption);
  EXPECT_NE(idx.status().message().find("manifests"), std::string::npos);
}

TEST(ManifestTest, IndexEntriesKeepPlatformsAndAnnotations) {
  auto idx = ParseImageIndex(kBuildkitIndex, "application/vnd.oci.image.index.v1+json");
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  ASSERT_EQ(idx->manifests.size(), 3u);
  ASSERT_TRUE(idx->manifests[1].platform.has_value());
  EXPECT_EQ(idx->manifests[1].platform->String(), "linux/arm64/v8");
  EXPECT_EQ(idx->manifests[2].annotations.at("vnd.docker.reference.type"), "attestation-manifest");
  EXPECT_EQ(idx->annotations.at("org.opencontainers.image.ref.name"), "demo");
  auto umoci = ParseImageIndex(kUmociIndex, "");
  ASSERT_TRUE(umoci.ok());
  EXPECT_FALSE(umoci->manifests[0].platform.has_value());
}

TEST(ManifestTest, MalformedJsonIsAnErrorNotACrash) {
  const char* bad[] = {"", " ", "{", "}", "nul", "null", "[]", "42", "\"str\"", "{\"a\":",
                       "{\"config\": {\"digest\": \"sha256:a\", \"size\": 1}", "\xff\xfe{}",
                       "{\"a\": 1} trailing"};
  for (const char* b : bad) {
    auto m = ParseImageManifest(b, "");
    EXPECT_EQ(m.status().code(), Code::kCorruption) << b;
    EXPECT_EQ(ParseImageIndex(b, "").status().code(), Code::kCorruption) << b;
    EXPECT_EQ(ParseImageConfig(b).status().code(), Code::kCorruption) << b;
    EXPECT_EQ(SniffManifest(b, "").status().code(), Code::kCorruption) << b;
  }
}

TEST(ManifestTest, WrongTypedFieldsAreCorruptionNamingTheField) {
  struct Case {
    const char* json;
    const char* field;
  } manifests[] = {
      {R"({"schemaVersion": "2", "config": {"digest": "sha256:a", "size": 1}})", "schemaVersion"},
      {R"({"mediaType": 5, "config": {"digest": "sha256:a", "size": 1}})", "mediaType"},
      {R"({"config": "sha256:a"})", "descriptor"},
      {R"({"config": {"digest": ["sha256:a"], "size": 1}})", "digest"},
      {R"({"config": {"digest": "sha256:a", "size": "1"}})", "size"},
      {R"({"config": {"digest": "sha256:a", "size": 1.5}})", "size"},
      {R"({"config": {"digest": "sha256:a", "size": -3}})", "size"},
      {R"({"config": {"digest": "sha256:a", "size": 18446744073709551615}})", "size"},
      {R"({"config": {"digest": "sha256:a", "size": 1, "mediaType": {}}})", "mediaType"},
      {R"({"config": {"digest": "sha256:a", "size": 1}, "layers": {}})", "layers"},
      {R"({"config": {"digest": "sha256:a", "size": 1}, "layers": [null]})", "layers[0]"},
      {R"({"config": {"digest": "sha256:a", "size": 1}, "layers": [{"digest": "sha256:b", "size": 2, "urls": "x"}]})", "urls"},
      {R"({"config": {"digest": "sha256:a", "size": 1}, "layers": [{"digest": "sha256:b", "size": 2, "annotations": []}]})", "annotations"},
      {R"({"config": {"digest": "sha256:a", "size": 1}, "annotations": {"k": 1}})", "annotations.k"},
      {R"({"config": {"digest": "sha256:a", "size": 1, "platform": "linux"}})", "platform"},
  };
  for (const Case& c : manifests) {
    auto m = ParseImageManifest(c.json, "");
    ASSERT_FALSE(m.ok()) << c.json;
    EXPECT_EQ(m.status().code(), Code::kCorruption) << c.json;
    EXPECT_NE(m.status().message().find(c.field), std::string::npos)
        << c.json << " -> " << m.status().message();
  }
  Case indexes[] = {
      {R"({"manifests": 3})", "manifests"},
      {R"({"manifests": [{"digest": "sha256:a", "size": 1, "platform": {"os": 1}}]})", "os"},
      {R"({"manifests": [{"digest": "sha256:a", "size": 1, "platform": {"architecture": null, "variant": 8}}]})", "variant"},
      {R"({"manifests": [], "annotations": "x"})", "annotations"},
  };
  for (const Case& c : indexes) {
    auto i = ParseImageIndex(c.json, "");
    ASSERT_FALSE(i.ok()) << c.json;
    EXPECT_EQ(i.status().code(), Code::kCorruption) << c.json;
    EXPECT_NE(i.status().message().find(c.field), std::string::npos)
        << c.json << " -> " << i.status().message();
  }
  Case configs[] = {
      {R"({"architecture": 64})", "architecture"},
      {R"({"config": []})", "config"},
      {R"({"config": {"Env": "PATH=/bin"}})", "Env"},
      {R"({"config": {"Cmd": [1]}})", "Cmd"},
      {R"({"config": {"Entrypoint": {"a": 1}}})", "Entrypoint"},
      {R"({"config": {"Labels": {"a": 1}}})", "Labels.a"},
      {R"({"config": {"ExposedPorts": ["80/tcp"]}})", "ExposedPorts"},
      {R"({"config": {"User": 0}})", "User"},
      {R"({"rootfs": "layers"})", "rootfs"},
      {R"({"rootfs": {"diff_ids": [1]}})", "diff_ids"},
      {R"({"history": {}})", "history"},
      {R"({"history": ["x"]})", "history[0]"},
      {R"({"history": [{"empty_layer": "true"}]})", "empty_layer"},
      {R"({"history": [{}, {"created_by": 1}]})", "created_by"},
  };
  for (const Case& c : configs) {
    auto cfg = ParseImageConfig(c.json);
    ASSERT_FALSE(cfg.ok()) << c.json;
    EXPECT_EQ(cfg.status().code(), Code::kCorruption) << c.json;
    EXPECT_NE(cfg.status().message().find(c.field), std::string::npos)
        << c.json << " -> " << cfg.status().message();
  }
}

TEST(ManifestTest, MissingRequiredDescriptorFieldsAreErrors) {
  EXPECT_EQ(ParseImageManifest(R"({"layers": []})", "").status().code(), Code::kCorruption);
  EXPECT_EQ(ParseImageManifest(R"({"config": null, "layers": []})", "").status().code(),
            Code::kCorruption);
  EXPECT_EQ(ParseImageManifest(R"({"config": {"size": 1}})", "").status().code(), Code::kCorruption);
  EXPECT_EQ(ParseImageManifest(R"({"config": {"digest": "sha256:a"}})", "").status().code(),
            Code::kCorruption);
  // Absent optional parts are fine: no layers at all, null annotations.
  auto m = ParseImageManifest(R"({"config": {"digest": "sha256:a", "size": 0}, "annotations": null})", "");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->layers.empty());
  EXPECT_EQ(m->config.size, 0);
}

// --- Configs ---

TEST(ManifestTest, DockerConfigIsRead) {
  auto c = ParseImageConfig(kDockerConfigJson);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->architecture, "amd64");
  EXPECT_EQ(c->os, "linux");
  EXPECT_EQ(c->created, "2023-12-19T03:28:41.360386416Z");
  EXPECT_EQ(c->user, "nginx");
  EXPECT_EQ(c->env.size(), 2u);
  EXPECT_EQ(c->env[1], "NGINX_VERSION=1.25.3");
  EXPECT_EQ(c->cmd, (std::vector<std::string>{"nginx", "-g", "daemon off;"}));
  EXPECT_EQ(c->entrypoint, std::vector<std::string>{"/docker-entrypoint.sh"});
  EXPECT_EQ(c->working_dir, "");
  EXPECT_EQ(c->labels.at("maintainer"), "NGINX Docker Maintainers");
  EXPECT_EQ(c->exposed_ports, (std::vector<std::string>{"443/tcp", "80/tcp"}));
  EXPECT_EQ(c->diff_ids.size(), 2u);
  ASSERT_EQ(c->history.size(), 3u);
  EXPECT_FALSE(c->history[0].empty_layer);
  EXPECT_TRUE(c->history[1].empty_layer);
  EXPECT_EQ(c->history[2].author, "NGINX");
  EXPECT_EQ(c->history[2].comment, "buildkit.dockerfile.v0");
}

TEST(ManifestTest, OciConfigWithNullsAndVariantIsRead) {
  auto c = ParseImageConfig(kOciConfigJson);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->architecture, "arm64");
  EXPECT_EQ(c->variant, "v8");
  EXPECT_EQ(c->author, "umoci");
  EXPECT_TRUE(c->cmd.empty());
  EXPECT_EQ(c->entrypoint, std::vector<std::string>{"/bin/app"});
  EXPECT_EQ(c->working_dir, "/srv");
  EXPECT_TRUE(c->history.empty());
  EXPECT_TRUE(c->env.empty());
}

TEST(ManifestTest, OldConfigsWithABareStringCmdAreAccepted) {
  auto c = ParseImageConfig(R"({"config": {"Cmd": "/bin/sh", "Entrypoint": "/init"}})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->cmd, std::vector<std::string>{"/bin/sh"});
  EXPECT_EQ(c->entrypoint, std::vector<std::string>{"/init"});
  auto empty = ParseImageConfig("{}");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->architecture.empty());
}

// --- Platforms ---

TEST(ManifestTest, PlatformParseNormalizesDockerAliases) {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {"linux/amd64", "linux/amd64"},     {"amd64", "linux/amd64"},
      {"x86_64", "linux/amd64"},          {"linux/x86-64", "linux/amd64"},
      {"linux/aarch64", "linux/arm64"},   {"linux/arm64/v8", "linux/arm64/v8"},
      {"linux/arm64/8", "linux/arm64/v8"}, {"linux/arm/v7", "linux/arm/v7"},
      {"linux/arm/6", "linux/arm/v6"},    {"linux/armhf", "linux/arm/v7"},
      {"linux/armel", "linux/arm/v6"},    {"linux/i686", "linux/386"},
      {"Linux/AMD64", "linux/amd64"},     {"windows/amd64", "windows/amd64"},
      {"linux/s390x", "linux/s390x"},     {"linux/ppc64le", "linux/ppc64le"},
  };
  for (const Case& c : cases) {
    auto p = Platform::Parse(c.text);
    ASSERT_TRUE(p.ok()) << c.text << ": " << p.status().ToString();
    EXPECT_EQ(p->String(), c.want) << c.text;
  }
  for (const char* bad : {"", "/", "linux/", "/amd64", "linux//v7", "a/b/c/d", "linux/arm/v7/"}) {
    auto p = Platform::Parse(bad);
    EXPECT_EQ(p.status().code(), Code::kInvalidArgument) << bad;
  }
  EXPECT_NE(Platform::Parse("a/b/c/d").status().message().find("os/arch[/variant]"),
            std::string::npos);
}

TEST(ManifestTest, HostIsLinuxWithAGoArchName) {
  struct utsname u {};
  ASSERT_EQ(::uname(&u), 0);
  std::string machine = u.machine;
  Platform host = Platform::Host();
  EXPECT_EQ(host.os, "linux");
  if (machine == "x86_64") {
    EXPECT_EQ(host.String(), "linux/amd64");
  } else if (machine == "aarch64") {
    EXPECT_EQ(host.architecture, "arm64");
  } else if (machine == "armv7l") {
    EXPECT_EQ(host.String(), "linux/arm/v7");
  }
  EXPECT_NE(host.architecture, "x86_64");
  EXPECT_NE(host.architecture, "aarch64");
  EXPECT_FALSE(host.architecture.empty());
}

TEST(ManifestTest, PlatformMatchingFollowsVariantRules) {
  auto p = [](const char* text) { return *Platform::Parse(text); };
  struct Case {
    const char* want;
    const char* image;
    bool matches;
  } cases[] = {
      {"linux/amd64", "linux/amd64", true},
      {"linux/amd64", "linux/arm64", false},
      {"linux/amd64", "windows/amd64", false},
      {"linux/arm64", "linux/arm64/v8", true},     // no variant matches v8
      {"linux/arm64/v8", "linux/arm64", true},
      {"linux/arm64/v8", "linux/arm64/v8", true},
      {"linux/arm64/v8", "linux/arm64/v9", false},
      {"linux/arm/v7", "linux/arm/v7", true},
      {"linux/arm/v7", "linux/arm/v6", true},      // a v7 CPU runs v6 code
      {"linux/arm/v7", "linux/arm/v5", true},
      {"linux/arm/v6", "linux/arm/v7", false},
      {"linux/arm/v7", "linux/arm64/v8", false},
      {"linux/arm/v7", "linux/arm", true},
      {"linux/arm", "linux/arm/v6", true},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(p(c.want).Matches(p(c.image)), c.matches) << c.want << " runs " << c.image;
  }
  // Image platforms straight from JSON are normalized too.
  Platform raw_image{"linux", "aarch64", ""};
  EXPECT_TRUE(p("linux/arm64").Matches(raw_image));
}

TEST(ManifestTest, SelectPlatformPicksTheBestArmVariant) {
  auto idx = ParseImageIndex(kDockerListArm, "");
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  auto pick = [&](const char* want) -> std::string {
    auto d = SelectPlatform(*idx, *Platform::Parse(want));
    return d.ok() ? d->digest.substr(7, 2) : d.status().ToString();
  };
  EXPECT_EQ(pick("linux/amd64"), "a1");
  EXPECT_EQ(pick("linux/arm64"), "a8");
  EXPECT_EQ(pick("linux/arm64/v8"), "a8");
  EXPECT_EQ(pick("aarch64"), "a8");
  EXPECT_EQ(pick("linux/arm/v7"), "a7");  // exact, though v5 and v6 come first and also run
  EXPECT_EQ(pick("linux/arm"), "a7");     // arm means v7
  EXPECT_EQ(pick("linux/arm/v6"), "a6");
  EXPECT_EQ(pick("linux/arm/v5"), "a5");
  EXPECT_EQ(pick("linux/386"), "a3");
  EXPECT_EQ(pick("linux/ppc64le"), "a9");
}

TEST(ManifestTest, SelectPlatformFallsBackToAnOlderArmVariantNewestFirst) {
  constexpr char kIndex[] = R"({"manifests": [
    {"digest": "sha256:v5", "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v5"}},
    {"digest": "sha256:v6", "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
    {"digest": "sha256:a64", "size": 1, "platform": {"os": "linux", "architecture": "arm64"}}]})";
  auto idx = ParseImageIndex(kIndex, "");
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(SelectPlatform(*idx, *Platform::Parse("linux/arm/v7"))->digest, "sha256:v6");
  // arm64 without a variant in the index is the v8 image.
  EXPECT_EQ(SelectPlatform(*idx, *Platform::Parse("linux/arm64/v8"))->digest, "sha256:a64");
  EXPECT_TRUE(SelectPlatform(*idx, *Platform::Parse("linux/arm64/v9")).ok())
      << "an index entry naming no variant runs on any";
}

TEST(ManifestTest, SelectPlatformNeverPicksAttestationsAndListsWhatExists) {
  auto idx = ParseImageIndex(kBuildkitIndex, "");
  ASSERT_TRUE(idx.ok());
  EXPECT_EQ(SelectPlatform(*idx, *Platform::Parse("linux/amd64"))->digest.substr(7, 4), "1111");
  EXPECT_EQ(SelectPlatform(*idx, *Platform::Parse("linux/arm64"))->digest.substr(7, 4), "2222");
  auto none = SelectPlatform(*idx, *Platform::Parse("linux/s390x"),
                             "docker://docker.io/library/demo:1");
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_EQ(none.status().message(),
            "no image for linux/s390x in docker://docker.io/library/demo:1: available: "
            "linux/amd64, linux/arm64/v8");
  auto unknown = SelectPlatform(*idx, Platform{"unknown", "unknown", ""});
  EXPECT_FALSE(unknown.ok());
  auto plain = SelectPlatform(*idx, *Platform::Parse("linux/s390x"));
  EXPECT_NE(plain.status().message().find("in the image index: available: linux/amd64"),
            std::string::npos)
      << plain.status().message();
}

TEST(ManifestTest, SelectPlatformTakesAnEntryWithoutPlatformOnlyAsALastResort) {
  auto umoci = ParseImageIndex(kUmociIndex, "");
  ASSERT_TRUE(umoci.ok());
  auto d = SelectPlatform(*umoci, *Platform::Parse("linux/amd64"));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->digest, "sha256:cc33");
  auto empty = ParseImageIndex(R"({"manifests": []})", "");
  ASSERT_TRUE(empty.ok());
  auto none = SelectPlatform(*empty, *Platform::Parse("linux/amd64"));
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_NE(none.status().message().find("available: none"), std::string::npos);
}

}  // namespace
}  // namespace manifest_test
}  // namespace imagefs::fetch
