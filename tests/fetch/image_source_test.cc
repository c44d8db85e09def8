// Transports without a network: the ParseImageRef table, OCI layouts the test writes blob by
// blob, and docker-archive tars laid out as `docker save` does and packed with GNU tar.

#include "fetch/image_source.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/testing/process.h"
#include "util/digest.h"
#include "util/file.h"

namespace imagefs::fetch {
namespace image_source_test {
namespace {

using Json = nlohmann::json;

std::string Sha(std::string_view bytes) { return Digest::Sha256Of(bytes).String(); }

class TempDir {
 public:
  TempDir() {
    auto dir = MakeTempDir(::testing::TempDir().empty() ? "/tmp" : ::testing::TempDir(),
                           "imagefs-source-test-");
    EXPECT_TRUE(dir.ok()) << dir.status().ToString();
    path_ = dir.ok() ? *dir : "/nonexistent";
  }
  ~TempDir() { (void)RemoveAll(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void Write(const std::string& path, std::string_view data) {
  ASSERT_TRUE(WriteFileAtomic(path, data).ok()) << path;
}

Status RunTool(std::vector<std::string> argv, const std::string& cwd = "") {
  testing::ProcessOptions options;
  options.argv = std::move(argv);
  options.cwd = cwd;
  ASSIGN_OR_RETURN(testing::ProcessResult r, testing::RunProcess(options));
  if (!r.ok()) return Status::Internal(options.argv[0] + ": " + r.Describe());
  return Status::Ok();
}

// A tiny real layer: a tar of one file, made by GNU tar.
std::string MakeLayerTar(const std::string& scratch, const std::string& content) {
  std::string src = scratch + "/layer-src";
  EXPECT_TRUE(RemoveAll(src).ok());
  EXPECT_TRUE(WriteFileAtomic(src + "/etc/hello", content).ok());
  std::string out = scratch + "/layer.tar";
  EXPECT_TRUE(RunTool({"tar", "--format=gnu", "--mtime=@0", "--owner=0", "--group=0",
                       "--numeric-owner", "-cf", out, "-C", src, "etc"})
                  .ok());
  auto bytes = ReadFile(out);
  EXPECT_TRUE(bytes.ok());
  return bytes.ok() ? *bytes : "";
}

FetchOptions OptionsFor(const char* platform) {
  FetchOptions options;
  if (platform != nullptr) options.platform = *Platform::Parse(platform);
  return options;
}

Result<ResolvedImage> Resolve(const std::string& text, const char* platform = nullptr) {
  ASSIGN_OR_RETURN(ImageRef ref, ParseImageRef(text));
  FetchOptions options = OptionsFor(platform);
  ASSIGN_OR_RETURN(auto source, OpenImageSource(ref, options));
  return ResolveImage(*source, options);
}

// ---------------------------------------------------------------------------------------
// ParseImageRef

TEST(ImageSourceTest, ParseImageRefTable) {
  constexpr char kHex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  struct Case {
    std::string text;
    Transport transport;
    std::string path;     // kOci / kDockerArchive
    std::string tag;      // kOci / kDockerArchive
    std::string ref;      // kDocker: Reference::String()
    bool short_name;
    std::string canonical;
  } cases[] = {
      {"busybox", Transport::kDocker, "", "", "docker.io/library/busybox:latest", true,
       "docker://docker.io/library/busybox:latest"},
      {"docker://busybox:1.36", Transport::kDocker, "", "", "docker.io/library/busybox:1.36",
       true, "docker://docker.io/library/busybox:1.36"},
      {"user/app:1", Transport::kDocker, "", "", "docker.io/user/app:1", true,
       "docker://docker.io/user/app:1"},
      {"docker://localhost:5000/a/b:t", Transport::kDocker, "", "", "localhost:5000/a/b:t",
       false, "docker://localhost:5000/a/b:t"},
      {std::string("quay.io/x/y@sha256:") + kHex, Transport::kDocker, "", "",
       std::string("quay.io/x/y@sha256:") + kHex, false,
       std::string("docker://quay.io/x/y@sha256:") + kHex},
      // "foo:bar" is a perfectly good reference (docker.io/library/foo:bar).
      {"foo:bar", Transport::kDocker, "", "", "docker.io/library/foo:bar", true,
       "docker://docker.io/library/foo:bar"},
      {"oci:/tmp/layout", Transport::kOci, "/tmp/layout", "", "", false, "oci:/tmp/layout"},
      {"oci:/tmp/layout:latest", Transport::kOci, "/tmp/layout", "latest", "", false,
       "oci:/tmp/layout:latest"},
      {"oci:layout:v1.2", Transport::kOci, "layout", "v1.2", "", false, "oci:layout:v1.2"},
      // The last ':' splits only when no '/' follows it: colons in directories survive.
      {"oci:/tmp/a:b/layout", Transport::kOci, "/tmp/a:b/layout", "", "", false,
       "oci:/tmp/a:b/layout"},
      {"oci:/tmp/a:b/layout:t", Transport::kOci, "/tmp/a:b/layout", "t", "", false,
       "oci:/tmp/a:b/layout:t"},
      {"oci:dir:", Transport::kOci, "dir", "", "", false, "oci:dir"},
      {"docker-archive:/tmp/x.tar", Transport::kDockerArchive, "/tmp/x.tar", "", "", false,
       "docker-archive:/tmp/x.tar"},
      {"docker-archive:/tmp/x.tar:busybox:latest", Transport::kDockerArchive, "/tmp/x.tar",
       "busybox:latest", "", false, "docker-archive:/tmp/x.tar:busybox:latest"},
      {"docker-archive:x.tar:quay.io/a/b:1", Transport::kDockerArchive, "x.tar",
       "quay.io/a/b:1", "", false, "docker-archive:x.tar:quay.io/a/b:1"},
      {"docker-archive:x.tar:@1", Transport::kDockerArchive, "x.tar", "@1", "", false,
       "docker-archive:x.tar:@1"},
  };
  for (const Case& c : cases) {
    auto r = ParseImageRef(c.text);
    ASSERT_TRUE(r.ok()) << c.text << ": " << r.status().ToString();
    EXPECT_EQ(r->transport, c.transport) << c.text;
    EXPECT_EQ(r->text, c.text);
    if (c.transport == Transport::kDocker) {
      EXPECT_EQ(r->ref.String(), c.ref) << c.text;
      EXPECT_EQ(r->short_name, c.short_name) << c.text;
    } else {
      EXPECT_EQ(r->path, c.path) << c.text;
      EXPECT_EQ(r->tag, c.tag) << c.text;
    }
    EXPECT_EQ(r->String(), c.canonical) << c.text;
  }
}

TEST(ImageSourceTest, ParseImageRefErrorsSayWhatIsWrong) {
  constexpr char kHex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  struct Case {
    std::string text;
    Code code;
    std::string says;  // substring of the message
  } cases[] = {
      {"oci:", Code::kInvalidArgument, "directory is empty"},
      {"oci::tag", Code::kInvalidArgument, "directory is empty"},
      {"docker-archive:", Code::kInvalidArgument, "archive file is empty"},
      {"docker-archive::@0", Code::kInvalidArgument, "archive file is empty"},
      {"docker-archive:x.tar:@x", Code::kInvalidArgument, "@0, @1"},
      {"docker-archive:x.tar:@", Code::kInvalidArgument, "@0, @1"},
      {"docker-archive:x.tar:Bad/Name", Code::kInvalidArgument, "docker-archive:x.tar:Bad/Name"},
      {std::string("docker-archive:x.tar:busybox@sha256:") + kHex, Code::kInvalidArgument,
       "not by digest"},
      {"containers-storage:x", Code::kUnsupported, "not supported"},
      {"oci-archive:/tmp/x.tar", Code::kUnsupported, "docker://REF, oci:DIR[:TAG]"},
      {"dir:/tmp/x", Code::kUnsupported, "transport \"dir\""},
      {"foo:/some/path", Code::kInvalidArgument, "unknown transport \"foo\""},
      {"ftp://host/x", Code::kInvalidArgument, "docker-archive:FILE"},
      {"docker://", Code::kInvalidArgument, "docker://"},
  };
  for (const Case& c : cases) {
    auto r = ParseImageRef(c.text);
    ASSERT_FALSE(r.ok()) << c.text << " parsed as " << r->String();
    EXPECT_EQ(r.status().code(), c.code) << c.text << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.says), std::string::npos)
        << c.text << ": " << r.status().message();
  }
  // A bad reference that does not look like a transport keeps the reference's own error.
  auto empty_tag = ParseImageRef("busybox:");
  ASSERT_FALSE(empty_tag.ok());
  EXPECT_EQ(empty_tag.status().message().find("transport"), std::string::npos)
      << empty_tag.status().message();
  EXPECT_FALSE(ParseImageRef("Busybox").ok());
}

// ---------------------------------------------------------------------------------------
// OCI layout

// Writes an OCI image layout blob by blob, the way skopeo and umoci lay one out.
class OciLayoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path() + "/layout";
    Write(dir_ + "/oci-layout", R"({"imageLayoutVersion": "1.0.0"})");
  }

  Json AddBlob(const std::string& bytes, std::string_view media_type) {
    std::string digest = Sha(bytes);
    Write(dir_ + "/blobs/sha256/" + digest.substr(7), bytes);
    return Json{{"mediaType", std::string(media_type)}, {"digest", digest}, {"size", bytes.size()}};
  }

  // Config + one layer + manifest; returns the manifest's descriptor.
  Json AddImage(const std::string& arch, const std::string& layer_bytes, bool omit_media_type = false) {
    Json layer = AddBlob(layer_bytes, kOciLayerTar);
    Json config_json = {{"architecture", arch}, {"os", "linux"},
                        {"config", {{"Cmd", Json::array({"/bin/sh"})},
                                    {"Env", Json::array({"A=" + arch})}}},
                        {"rootfs", {{"type", "layers"},
                                    {"diff_ids", Json::array({Sha(layer_bytes)})}}}};
    Json config = AddBlob(config_json.dump(), kOciConfig);
    Json manifest = {{"schemaVersion", 2}, {"config", config}, {"layers", Json::array({layer})}};
    if (!omit_media_type) manifest["mediaType"] = std::string(kOciManifest);
    Json desc = AddBlob(manifest.dump(), kOciManifest);
    desc["platform"] = {{"os", "linux"}, {"architecture", arch}};
    return desc;
  }

  void WriteIndex(const std::vector<Json>& manifests) {
    Json index = {{"schemaVersion", 2}, {"mediaType", std::string(kOciIndex)},
                  {"manifests", Json(manifests)}};
    Write(dir_ + "/index.json", index.dump(2));
  }

  static Json Tagged(Json desc, const std::string& tag) {
    desc.erase("platform");
    desc["annotations"] = {{"org.opencontainers.image.ref.name", tag}};
    return desc;
  }

  std::string BlobPath(const std::string& digest) { return dir_ + "/blobs/sha256/" + digest.substr(7); }

  TempDir tmp_;
  std::string dir_;
};

TEST_F(OciLayoutTest, ResolvesTheOnlyImageAndVerifiesBlobs) {
  std::string layer = MakeLayerTar(tmp_.path(), "hello\n");
  Json desc = AddImage("amd64", layer, /*omit_media_type=*/true);  // umoci style
  WriteIndex({Tagged(desc, "latest")});

  for (std::string text : {"oci:" + dir_, "oci:" + dir_ + ":latest"}) {
    auto image = Resolve(text);
    ASSERT_TRUE(image.ok()) << text << ": " << image.status().ToString();
    EXPECT_EQ(image->manifest.digest, desc["digest"].get<std::string>());
    EXPECT_EQ(image->manifest.media_type, kOciManifest);
    EXPECT_FALSE(image->index.has_value());
    EXPECT_EQ(image->name, "");
    EXPECT_EQ(image->config.architecture, "amd64");
    EXPECT_EQ(image->config.env, std::vector<std::string>{"A=amd64"});
    ASSERT_EQ(image->parsed.layers.size(), 1u);
    EXPECT_EQ(image->parsed.layers[0].digest, Sha(layer));
    EXPECT_EQ(Sha(image->config_bytes), image->parsed.config.digest);
  }

  auto ref = ParseImageRef("oci:" + dir_ + ":latest");
  ASSERT_TRUE(ref.ok());
  auto source = OpenImageSource(*ref, FetchOptions());
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  EXPECT_EQ((*source)->Describe(), "oci:" + dir_ + ":latest");
  auto image = ResolveImage(**source, FetchOptions());
  ASSERT_TRUE(image.ok());
  auto bytes = FetchVerifiedBlob(**source, image->parsed.layers[0]);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, layer);
  // Random access to the same blob.
  auto blob = (*source)->OpenBlob(image->parsed.layers[0]);
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ((*blob)->Size(), layer.size());
  std::string part(10, '\0');
  auto n = (*blob)->ReadAt(512, std::span<uint8_t>(reinterpret_cast<uint8_t*>(part.data()), part.size()));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(part, layer.substr(512, 10));
  auto tags = (*source)->ListTags();
  ASSERT_TRUE(tags.ok());
  EXPECT_EQ(*tags, std::vector<std::string>{"latest"});
}

TEST_F(OciLayoutTest, TagPicksTheImageAndUnknownTagsListTheNames) {
  Json amd = AddImage("amd64", "layer-amd64");
  Json arm = AddImage("arm64", "layer-arm64");
  WriteIndex({Tagged(amd, "v1"), Tagged(arm, "v2")});

  auto v2 = Resolve("oci:" + dir_ + ":v2");
  ASSERT_TRUE(v2.ok()) << v2.status().ToString();
  EXPECT_EQ(v2->manifest.digest, arm["digest"].get<std::string>());
  EXPECT_EQ(v2->config.architecture, "arm64");
  auto v1 = Resolve("oci:" + dir_ + ":v1");
  ASSERT_TRUE(v1.ok()) << v1.status().ToString();
  EXPECT_EQ(v1->config.architecture, "amd64");

  auto nope = Resolve("oci:" + dir_ + ":nope");
  EXPECT_EQ(nope.status().code(), Code::kNotFound);
  EXPECT_NE(nope.status().message().find("no image tagged \"nope\" (available: v1, v2)"),
            std::string::npos)
      << nope.status().message();

  auto untagged = Resolve("oci:" + dir_);
  EXPECT_EQ(untagged.status().code(), Code::kInvalidArgument);
  EXPECT_NE(untagged.status().message().find("holds 2 images"), std::string::npos)
      << untagged.status().message();
  EXPECT_NE(untagged.status().message().find("v1, v2"), std::string::npos);
}

TEST_F(OciLayoutTest, MultiPlatformIndexSelectsThePlatform) {
  Json amd = AddImage("amd64", "layer-amd64");
  Json arm = AddImage("arm64", "layer-arm64");
  arm["platform"]["variant"] = "v8";
  Json inner = {{"schemaVersion", 2}, {"mediaType", std::string(kOciIndex)},
                {"manifests", Json::array({amd, arm})}};
  Json index_desc = AddBlob(inner.dump(), kOciIndex);
  WriteIndex({Tagged(index_desc, "multi")});

  auto arm_image = Resolve("oci:" + dir_ + ":multi", "linux/arm64");
  ASSERT_TRUE(arm_image.ok()) << arm_image.status().ToString();
  ASSERT_TRUE(arm_image->index.has_value());
  EXPECT_EQ(arm_image->index->digest, index_desc["digest"].get<std::string>());
  EXPECT_EQ(arm_image->manifest.digest, arm["digest"].get<std::string>());
  EXPECT_EQ(arm_image->config.architecture, "arm64");

  auto amd_image = Resolve("oci:" + dir_ + ":multi", "linux/amd64");
  ASSERT_TRUE(amd_image.ok()) << amd_image.status().ToString();
  EXPECT_EQ(amd_image->manifest.digest, amd["digest"].get<std::string>());

  auto none = Resolve("oci:" + dir_ + ":multi", "linux/s390x");
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_EQ(none.status().message(), "no image for linux/s390x in oci:" + dir_ +
                                         ":multi: available: linux/amd64, linux/arm64/v8");
}

TEST_F(OciLayoutTest, TamperedBlobsAreCorruption) {
  std::string layer = MakeLayerTar(tmp_.path(), "original\n");
  Json desc = AddImage("amd64", layer);
  WriteIndex({Tagged(desc, "latest")});
  auto ref = ParseImageRef("oci:" + dir_ + ":latest");
  ASSERT_TRUE(ref.ok());
  auto source = OpenImageSource(*ref, FetchOptions());
  ASSERT_TRUE(source.ok());
  auto image = ResolveImage(**source, FetchOptions());
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  const Descriptor layer_desc = image->parsed.layers[0];

  // Same size, one byte flipped.
  std::string flipped = layer;
  flipped[600] ^= 0x20;
  Write(BlobPath(layer_desc.digest), flipped);
  auto bad = FetchVerifiedBlob(**source, layer_desc);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kCorruption);
  EXPECT_NE(bad.status().message().find("blob " + layer_desc.digest + " from oci:" + dir_ +
                                        ":latest: digest mismatch (got " + Sha(flipped) + ")"),
            std::string::npos)
      << bad.status().message();

  // Shorter than the manifest says.
  Write(BlobPath(layer_desc.digest), layer.substr(0, 100));
  auto short_blob = FetchVerifiedBlob(**source, layer_desc);
  EXPECT_EQ(short_blob.status().code(), Code::kCorruption);
  Write(BlobPath(layer_desc.digest), layer);
  EXPECT_TRUE(FetchVerifiedBlob(**source, layer_desc).ok());

  // A changed config fails resolution.
  std::string config_path = BlobPath(image->parsed.config.digest);
  std::string config = image->config_bytes;
  config[config.find("amd64")] = 'A';
  Write(config_path, config);
  auto bad_config = Resolve("oci:" + dir_ + ":latest");
  EXPECT_EQ(bad_config.status().code(), Code::kCorruption);
  EXPECT_NE(bad_config.status().message().find("digest mismatch"), std::string::npos);
  Write(config_path, image->config_bytes);

  // A changed manifest (still valid JSON) fails against index.json's digest.
  std::string manifest_path = BlobPath(desc["digest"].get<std::string>());
  std::string manifest = image->manifest.bytes;
  manifest.insert(manifest.size() - 1, " ");
  Write(manifest_path, manifest);
  auto bad_manifest = Resolve("oci:" + dir_ + ":latest");
  EXPECT_EQ(bad_manifest.status().code(), Code::kCorruption);
  EXPECT_NE(bad_manifest.status().message().find("manifest"), std::string::npos)
      << bad_manifest.status().message();
  manifest.erase(manifest.size() - 2, 1);
  manifest[manifest.find("sha256:") + 7] ^= 1;  // same size, different digest
  Write(manifest_path, manifest);
  bad_manifest = Resolve("oci:" + dir_ + ":latest");
  EXPECT_EQ(bad_manifest.status().code(), Code::kCorruption);
  EXPECT_NE(bad_manifest.status().message().find("manifest digest mismatch: wanted " +
                                                 desc["digest"].get<std::string>()),
            std::string::npos)
      << bad_manifest.status().message();
}

TEST_F(OciLayoutTest, BrokenLayoutsAreClearErrors) {
  Json desc = AddImage("amd64", "layer");
  WriteIndex({Tagged(desc, "latest")});
  auto missing_dir = Resolve("oci:" + tmp_.path() + "/nothing-here");
  EXPECT_EQ(missing_dir.status().code(), Code::kNotFound);
  EXPECT_NE(missing_dir.status().message().find("no such directory"), std::string::npos);

  Write(dir_ + "/oci-layout", R"({"imageLayoutVersion": "2.0.0"})");
  EXPECT_EQ(Resolve("oci:" + dir_).status().code(), Code::kUnsupported);
  Write(dir_ + "/oci-layout", R"({"imageLayoutVersion": 1})");
  EXPECT_EQ(Resolve("oci:" + dir_).status().code(), Code::kCorruption);
  Write(dir_ + "/oci-layout", "garbage");
  EXPECT_EQ(Resolve("oci:" + dir_).status().code(), Code::kCorruption);
  ASSERT_EQ(::unlink((dir_ + "/oci-layout").c_str()), 0);
  auto no_layout = Resolve("oci:" + dir_);
  EXPECT_EQ(no_layout.status().code(), Code::kNotFound);
  EXPECT_NE(no_layout.status().message().find("not an OCI image layout"), std::string::npos);
  Write(dir_ + "/oci-layout", R"({"imageLayoutVersion": "1.0.0"})");

  Write(dir_ + "/index.json", R"({"manifests": "nope"})");
  auto bad_index = Resolve("oci:" + dir_);
  EXPECT_EQ(bad_index.status().code(), Code::kCorruption);
  EXPECT_NE(bad_index.status().message().find("index.json"), std::string::npos);

  // A digest that tries to leave blobs/ is rejected before any path is built.
  Write(dir_ + "/index.json",
        R"({"manifests": [{"digest": "sha256:../../../etc/passwd", "size": 10}]})");
  auto escape = Resolve("oci:" + dir_);
  EXPECT_FALSE(escape.ok());
  EXPECT_NE(escape.status().code(), Code::kOk);

  // A manifest blob that is missing.
  WriteIndex({Tagged(desc, "latest")});
  ASSERT_EQ(::unlink(BlobPath(desc["digest"].get<std::string>()).c_str()), 0);
  auto gone = Resolve("oci:" + dir_);
  EXPECT_EQ(gone.status().code(), Code::kNotFound);
  EXPECT_NE(gone.status().message().find("missing from the layout"), std::string::npos);
}

// ---------------------------------------------------------------------------------------
// docker-archive

// Lays out what `docker save` writes in a directory, then packs it with GNU tar.
class DockerArchiveTest : public ::testing::Test {
 protected:
  struct SavedImage {
    std::string config;  // bytes
    std::string config_name;
    std::vector<std::string> layers;  // bytes
    std::vector<std::string> layer_names;
  };

  void SetUp() override { root_ = tmp_.path() + "/save"; }

  // Adds an image whose layers are stored under legacy "<id>/layer.tar" names (id_prefix makes
  // long ones to exercise GNU/PAX long-name headers).
  SavedImage AddImage(const std::string& arch, const std::vector<std::string>& layers,
                      const std::vector<std::string>& repo_tags, const std::string& id_prefix = "") {
    SavedImage img;
    img.layers = layers;
    Json diff_ids = Json::array();
    for (const std::string& l : layers) diff_ids.push_back(Sha(l));
    Json config = {{"architecture", arch}, {"os", "linux"},
                   {"config", {{"Cmd", Json::array({"sh"})}, {"Env", Json::array({"PATH=/bin"})}}},
                   {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
    img.config = config.dump();
    img.config_name = Sha(img.config).substr(7) + ".json";
    Write(root_ + "/" + img.config_name, img.config);
    for (size_t i = 0; i < layers.size(); ++i) {
      std::string id = id_prefix + Sha(arch + std::to_string(i)).substr(7);
      img.layer_names.push_back(id + "/layer.tar");
      Write(root_ + "/" + id + "/layer.tar", layers[i]);
      Write(root_ + "/" + id + "/VERSION", "1.0");
    }
    Json entry = {{"Config", img.config_name}, {"RepoTags", Json(repo_tags)},
                  {"Layers", Json(img.layer_names)}};
    manifest_.push_back(entry);
    for (const std::string& t : repo_tags) {
      size_t colon = t.rfind(':');
      repositories_[t.substr(0, colon)][t.substr(colon + 1)] = Sha(arch + "0").substr(7);
    }
    return img;
  }

  // Writes manifest.json and repositories, then tars the directory.
  std::string Pack(const std::string& format = "gnu") {
    Write(root_ + "/manifest.json", manifest_.dump());
    Write(root_ + "/repositories", repositories_.dump());
    std::string archive = tmp_.path() + "/saved-" + format + ".tar";
    Status st = RunTool({"tar", "--format=" + format, "-cf", archive, "-C", root_, "."});
    EXPECT_TRUE(st.ok()) << st.ToString();
    return archive;
  }

  Result<std::unique_ptr<ImageSource>> Open(const std::string& text) {
    ASSIGN_OR_RETURN(ImageRef ref, ParseImageRef(text));
    return OpenImageSource(ref, FetchOptions());
  }

  static std::string ExpectedManifest(const std::string& config,
                                      const std::vector<std::pair<std::string, std::string>>& layers) {
    std::string out = R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":)" +
                      std::to_string(config.size()) + R"(,"digest":")" + Sha(config) +
                      R"("},"layers":[)";
    for (size_t i = 0; i < layers.size(); ++i) {
      out += (i == 0 ? "" : ",") + std::string(R"({"mediaType":")") + layers[i].second +
             R"(","size":)" + std::to_string(layers[i].first.size()) + R"(,"digest":")" +
             Sha(layers[i].first) + R"("})";
    }
    return out + "]}";
  }

  TempDir tmp_;
  std::string root_;
  Json manifest_ = Json::array();
  Json repositories_ = Json::object();
};

TEST_F(DockerArchiveTest, ResolvesASynthesizedSchema2ManifestAndReadsLayers) {
  std::string layer = MakeLayerTar(tmp_.path(), "from docker save\n");
  SavedImage img = AddImage("amd64", {layer}, {"busybox:latest"});
  std::string archive = Pack();

  auto source = Open("docker-archive:" + archive);
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  EXPECT_EQ((*source)->Name(), "docker.io/library/busybox");
  EXPECT_EQ((*source)->Describe(), "docker-archive:" + archive);
  auto image = ResolveImage(**source, FetchOptions());
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  EXPECT_EQ(image->manifest.media_type, kDockerManifest);
  EXPECT_EQ(image->manifest.bytes, ExpectedManifest(img.config, {{layer, std::string(kDockerLayerTar)}}));
  EXPECT_EQ(image->manifest.digest, Sha(image->manifest.bytes));
  EXPECT_EQ(image->name, "docker.io/library/busybox");
  EXPECT_EQ(image->config_bytes, img.config);
  EXPECT_EQ(image->config.architecture, "amd64");
  ASSERT_EQ(image->parsed.layers.size(), 1u);
  const Descriptor& l = image->parsed.layers[0];
  EXPECT_EQ(l.media_type, kDockerLayerTar);
  EXPECT_EQ(l.digest, Sha(layer));
  EXPECT_EQ(l.size, static_cast<int64_t>(layer.size()));

  // The layer is a window of the archive: whole and partial reads give its bytes.
  auto whole = FetchVerifiedBlob(**source, l);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  EXPECT_EQ(*whole, layer);
  auto blob = (*source)->OpenBlob(l);
  ASSERT_TRUE(blob.ok());
  std::string tail(64, '\0');
  auto n = (*blob)->ReadAt(layer.size() - 32, std::span<uint8_t>(reinterpret_cast<uint8_t*>(tail.data()), tail.size()));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 32u);
  EXPECT_EQ(tail.substr(0, 32), layer.substr(layer.size() - 32));

  // The manifest is served by its digest, and the same archive always gives the same one.
  auto by_digest = (*source)->GetManifest(image->manifest.digest);
  ASSERT_TRUE(by_digest.ok());
  EXPECT_EQ(by_digest->bytes, image->manifest.bytes);
  EXPECT_EQ((*source)->GetManifest(Sha("other")).status().code(), Code::kNotFound);
  auto again = Open("docker-archive:" + archive + ":busybox");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->GetManifest("")->digest, image->manifest.digest);
  EXPECT_EQ((*source)->ListTags().status().code(), Code::kUnsupported);
  EXPECT_EQ((*source)->OpenBlob(Descriptor{"", Sha("nope"), 4, {}, {}, {}}).status().code(),
            Code::kNotFound);
}

TEST_F(DockerArchiveTest, SelectsByIndexOrNormalizedNameAndRefusesAmbiguity) {
  std::string gz_src = tmp_.path() + "/gz-layer.tar";
  std::string plain = MakeLayerTar(tmp_.path(), "second image\n");
  Write(gz_src, plain);
  ASSERT_TRUE(RunTool({"gzip", "-n", "-f", gz_src}).ok());
  auto gz = ReadFile(gz_src + ".gz");
  ASSERT_TRUE(gz.ok());

  SavedImage one = AddImage("amd64", {MakeLayerTar(tmp_.path(), "first image\n")},
                            {"busybox:latest", "busybox:1.36"});
  SavedImage two = AddImage("arm64", {*gz, plain}, {"quay.io/team/app:2"});
  std::string archive = Pack();

  auto ambiguous = Open("docker-archive:" + archive);
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_EQ(ambiguous.status().code(), Code::kInvalidArgument);
  EXPECT_NE(ambiguous.status().message().find("holds 2 images"), std::string::npos)
      << ambiguous.status().message();
  EXPECT_NE(ambiguous.status().message().find("@0 busybox:latest busybox:1.36, @1 quay.io/team/app:2"),
            std::string::npos)
      << ambiguous.status().message();

  struct Case {
    std::string selector;
    std::string arch;
    std::string name;
  } cases[] = {
      {"@0", "amd64", "docker.io/library/busybox"},
      {"@1", "arm64", "quay.io/team/app"},
      {"busybox:latest", "amd64", "docker.io/library/busybox"},
      {"busybox", "amd64", "docker.io/library/busybox"},
      {"docker.io/library/busybox:1.36", "amd64", "docker.io/library/busybox"},
      {"quay.io/team/app:2", "arm64", "quay.io/team/app"},
  };
  for (const Case& c : cases) {
    auto source = Open("docker-archive:" + archive + ":" + c.selector);
    ASSERT_TRUE(source.ok()) << c.selector << ": " << source.status().ToString();
    EXPECT_EQ((*source)->Name(), c.name) << c.selector;
    auto image = ResolveImage(**source, FetchOptions());
    ASSERT_TRUE(image.ok()) << c.selector << ": " << image.status().ToString();
    EXPECT_EQ(image->config.architecture, c.arch) << c.selector;
  }

  // The gzip layer is announced as such; the plain one as tar.
  auto source = Open("docker-archive:" + archive + ":@1");
  ASSERT_TRUE(source.ok());
  auto image = ResolveImage(**source, FetchOptions());
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->manifest.bytes,
            ExpectedManifest(two.config, {{*gz, std::string(kDockerLayerGzip)},
                                          {plain, std::string(kDockerLayerTar)}}));
  auto gz_bytes = FetchVerifiedBlob(**source, image->parsed.layers[0]);
  ASSERT_TRUE(gz_bytes.ok());
  EXPECT_EQ(*gz_bytes, *gz);

  auto out_of_range = Open("docker-archive:" + archive + ":@2");
  EXPECT_EQ(out_of_range.status().code(), Code::kNotFound);
  auto unknown = Open("docker-archive:" + archive + ":busybox:9");
  EXPECT_EQ(unknown.status().code(), Code::kNotFound);
  EXPECT_NE(unknown.status().message().find("no image tagged busybox:9"), std::string::npos)
      << unknown.status().message();
}

TEST_F(DockerArchiveTest, LongNamesSymlinksAndPaxHeadersAreFollowed) {
  // Newer docker stores blobs under blobs/sha256/ and keeps old names as symlinks; long
  // member names need GNU 'L' or PAX 'x' headers.
  std::string layer = MakeLayerTar(tmp_.path(), "modern docker\n");
  std::string long_prefix = std::string(60, 'd') + "/" + std::string(60, 'e');
  SavedImage img = AddImage("amd64", {layer}, {"app:1"}, long_prefix + "/");
  std::string blob = "blobs/sha256/" + Sha(layer).substr(7);
  Write(root_ + "/" + blob, layer);
  std::string link_dir = root_ + "/" + Sha(std::string("linkdir")).substr(7);
  ASSERT_TRUE(MakeDirs(link_dir).ok());
  ASSERT_EQ(::symlink(("../" + blob).c_str(), (link_dir + "/layer.tar").c_str()), 0);
  // Through a symlink, by the blob name, and by a 198-character name (GNU 'L' header, PAX
  // path record, ustar prefix field).
  manifest_[0]["Layers"] = Json::array(
      {Sha(std::string("linkdir")).substr(7) + "/layer.tar", blob, img.layer_names[0]});
  for (const std::string format : {"gnu", "posix", "ustar"}) {
    std::string archive = Pack(format);
    auto source = Open("docker-archive:" + archive);
    ASSERT_TRUE(source.ok()) << format << ": " << source.status().ToString();
    auto image = ResolveImage(**source, FetchOptions());
    ASSERT_TRUE(image.ok()) << format << ": " << image.status().ToString();
    ASSERT_EQ(image->parsed.layers.size(), 3u) << format;
    for (const Descriptor& d : image->parsed.layers) {
      EXPECT_EQ(d.digest, Sha(layer)) << format;
      auto bytes = FetchVerifiedBlob(**source, d);
      ASSERT_TRUE(bytes.ok()) << format << ": " << bytes.status().ToString();
      EXPECT_EQ(*bytes, layer);
    }
  }
}

TEST_F(DockerArchiveTest, NotAnArchiveOrNoManifestAreClearErrors) {
  std::string junk = tmp_.path() + "/junk.tar";
  Write(junk, std::string(2048, 'x'));
  auto bad = Open("docker-archive:" + junk);
  EXPECT_EQ(bad.status().code(), Code::kCorruption);
  EXPECT_NE(bad.status().message().find("checksum"), std::string::npos) << bad.status().message();

  Write(tmp_.path() + "/empty.tar", "");
  EXPECT_EQ(Open("docker-archive:" + tmp_.path() + "/empty.tar").status().code(), Code::kCorruption);
  EXPECT_EQ(Open("docker-archive:" + tmp_.path() + "/absent.tar").status().code(), Code::kNotFound);

  // Only the legacy "repositories" file: docker < 1.10.
  Write(root_ + "/repositories", R"({"busybox": {"latest": "abc"}})");
  std::string old_archive = tmp_.path() + "/old.tar";
  ASSERT_TRUE(RunTool({"tar", "-cf", old_archive, "-C", root_, "repositories"}).ok());
  auto old = Open("docker-archive:" + old_archive);
  EXPECT_EQ(old.status().code(), Code::kUnsupported);
  EXPECT_NE(old.status().message().find("manifest.json"), std::string::npos);

  // A manifest.json naming a member the archive lacks, and one of the wrong shape.
  Write(root_ + "/manifest.json", R"([{"Config": "missing.json", "RepoTags": null, "Layers": []}])");
  std::string missing = tmp_.path() + "/missing.tar";
  ASSERT_TRUE(RunTool({"tar", "-cf", missing, "-C", root_, "manifest.json"}).ok());
  auto m = Open("docker-archive:" + missing);
  EXPECT_EQ(m.status().code(), Code::kCorruption);
  EXPECT_NE(m.status().message().find("missing member missing.json"), std::string::npos);
  Write(root_ + "/manifest.json", R"({"Config": 1})");
  ASSERT_TRUE(RunTool({"tar", "-cf", missing, "-C", root_, "manifest.json"}).ok());
  EXPECT_EQ(Open("docker-archive:" + missing).status().code(), Code::kCorruption);
  Write(root_ + "/manifest.json", R"([{"Config": 1, "Layers": []}])");
  ASSERT_TRUE(RunTool({"tar", "-cf", missing, "-C", root_, "manifest.json"}).ok());
  auto typed = Open("docker-archive:" + missing);
  EXPECT_EQ(typed.status().code(), Code::kCorruption);
  EXPECT_NE(typed.status().message().find("Config"), std::string::npos);
}

TEST_F(DockerArchiveTest, TruncatedArchiveIsCorruption) {
  std::string layer = MakeLayerTar(tmp_.path(), std::string(5000, 'z'));
  AddImage("amd64", {layer}, {"busybox:latest"});
  std::string archive = Pack();
  auto bytes = ReadFile(archive);
  ASSERT_TRUE(bytes.ok());
  // Cut inside the layer member's data.
  size_t at = bytes->find(layer.substr(0, 512));
  ASSERT_NE(at, std::string::npos);
  std::string cut = tmp_.path() + "/cut.tar";
  Write(cut, bytes->substr(0, at + 1000));
  auto source = Open("docker-archive:" + cut);
  ASSERT_FALSE(source.ok());
  EXPECT_EQ(source.status().code(), Code::kCorruption) << source.status().ToString();
}

}  // namespace
}  // namespace image_source_test
}  // namespace imagefs::fetch
