// fetch::ImageDestination: the busybox test image (an OCI layout) is read with
// OpenImageSource and written to a registry (plain, TLS + Basic, token), an OCI layout and
// a docker-archive. skopeo is the oracle (inspect digests, copy out of the archive), and
// OpenImageSource reads every result back.

#include "fetch/image_dest.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fetch/registry_client.h"
#include "tests/testing/images.h"
#include "tests/testing/process.h"
#include "tests/testing/registry.h"
#include "util/digest.h"
#include "util/file.h"

namespace imagefs::fetch {
namespace image_dest_test {
namespace {

using Json = nlohmann::json;
using testing::RegistryFlavor;
using testing::TestRegistry;

std::string Sha(std::string_view bytes) { return Digest::Sha256Of(bytes).String(); }

class TempDir {
 public:
  TempDir() {
    auto dir = MakeTempDir("/tmp", "imagefs-dest-test-");
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

// Options that read no user configuration; with a registry, its CA and credentials.
FetchOptions OptionsFor(const TestRegistry* reg, bool with_credentials = true) {
  FetchOptions options;
  options.auth_env = AuthEnv{};
  options.auth_env.xdg_runtime_dir = "/nonexistent";
  options.platform = *Platform::Parse("linux/amd64");
  if (reg != nullptr) {
    options.auth_env.registry_auth_file =
        with_credentials ? reg->auth_file() : reg->empty_auth_file();
    options.cert_dir = reg->cert_dir();
  }
  return options;
}

struct CopyResult {
  int blobs_put = 0;
  int blobs_skipped = 0;
  std::string manifest_digest;
};

// What convert / push / save run: resolve the source, then fetch::CopyImage.
Result<CopyResult> CopyImage(const std::string& from, const std::string& to,
                             const FetchOptions& src_options, const FetchOptions& dest_options,
                             const std::string& scratch) {
  ASSIGN_OR_RETURN(ImageRef src_ref, ParseImageRef(from));
  ASSIGN_OR_RETURN(auto source, OpenImageSource(src_ref, src_options));
  ASSIGN_OR_RETURN(ResolvedImage image, ResolveImage(*source, src_options));
  ASSIGN_OR_RETURN(ImageRef dest_ref, ParseImageRef(to));
  ASSIGN_OR_RETURN(auto dest, OpenImageDestination(dest_ref, dest_options));
  ASSIGN_OR_RETURN(CopyStats stats, fetch::CopyImage(*source, image, *dest, scratch));
  return CopyResult{stats.blobs_put, stats.blobs_skipped, image.manifest.digest};
}

Result<ResolvedImage> Resolve(const std::string& text, const FetchOptions& options) {
  ASSIGN_OR_RETURN(ImageRef ref, ParseImageRef(text));
  ASSIGN_OR_RETURN(auto source, OpenImageSource(ref, options));
  return ResolveImage(*source, options);
}

Result<testing::ProcessResult> Skopeo(std::vector<std::string> args) {
  testing::ProcessOptions options;
  options.argv = {"skopeo", "--insecure-policy"};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.env_set = {{"CONTAINERS_REGISTRIES_CONF", "/dev/null"},
                     {"REGISTRY_AUTH_FILE", "/nonexistent/auth.json"}};
  return testing::RunProcess(options);
}

// skopeo inspect's Digest for an image, or a text that will not match one.
std::string SkopeoDigest(const std::string& image, const TestRegistry* reg = nullptr) {
  std::vector<std::string> args = {"inspect"};
  if (reg != nullptr) {
    auto flags = reg->skopeo_image_flags();
    args.insert(args.end(), flags.begin(), flags.end());
  }
  args.push_back(image);
  auto r = reg != nullptr ? reg->RunSkopeo(args) : Skopeo(args);
  if (!r.ok() || !r->ok()) {
    return "skopeo failed: " + (r.ok() ? r->Describe() : r.status().ToString());
  }
  Json j = Json::parse(r->stdout_text, nullptr, false);
  return j.is_object() && j.contains("Digest") ? j["Digest"].get<std::string>() : "no digest";
}

// Names of the hidden files in a directory (temporary files left behind).
std::vector<std::string> HiddenFiles(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != ".." && name[0] == '.') out.push_back(name);
  }
  ::closedir(d);
  return out;
}

Status RunTool(std::vector<std::string> argv);

// A port on 127.0.0.1 where nothing listens.
int DeadPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return 1;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 4) {
    uint32_t v = gen();
    std::memcpy(out.data() + i, &v, std::min<size_t>(4, n - i));
  }
  return out;
}

class ImageDestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto image = testing::TestImage("busybox");
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    busybox_ = new std::string("oci:" + *image);
    auto digest = testing::LayoutDigest(*image);
    ASSERT_TRUE(digest.ok()) << digest.status().ToString();
    busybox_digest_ = new std::string(*digest);
  }
  static void TearDownTestSuite() {
    delete busybox_;
    delete busybox_digest_;
    busybox_ = busybox_digest_ = nullptr;
  }

  Result<CopyResult> Push(const std::string& to, const FetchOptions& dest_options) {
    return CopyImage(*busybox_, to, OptionsFor(nullptr), dest_options, scratch_.path());
  }

  static std::string* busybox_;
  static std::string* busybox_digest_;
  TempDir scratch_;
};

std::string* ImageDestTest::busybox_ = nullptr;
std::string* ImageDestTest::busybox_digest_ = nullptr;

// ---------------------------------------------------------------------------------------
// docker://

TEST_F(ImageDestTest, PushToPlainRegistryMatchesSkopeoAndSkipsBlobsTheSecondTime) {
  auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  const std::string image = (*reg)->host() + "/dest/busybox:v1";
  auto stats = Push("docker://" + image, OptionsFor(reg->get()));
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->blobs_put, 4);
  EXPECT_EQ(stats->blobs_skipped, 0);
  EXPECT_EQ(stats->manifest_digest, *busybox_digest_);
  EXPECT_EQ(SkopeoDigest("docker://" + image, reg->get()), *busybox_digest_);
  auto back = Resolve("docker://" + image, OptionsFor(reg->get()));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->manifest.digest, *busybox_digest_);
  auto original = Resolve(*busybox_, OptionsFor(nullptr));
  ASSERT_TRUE(original.ok()) << original.status().ToString();
  EXPECT_EQ(back->config.diff_ids, original->config.diff_ids);

  // Again, under another tag: every blob is found by HEAD; nothing is uploaded.
  (*reg)->ResetCounters();
  auto again = Push("docker://" + (*reg)->host() + "/dest/busybox:v2", OptionsFor(reg->get()));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->blobs_put, 0);
  EXPECT_EQ(again->blobs_skipped, 4);
  int heads = 0, uploads = 0, manifest_puts = 0;
  for (const auto& r : (*reg)->Requests()) {
    if (r.method == "HEAD" && r.uri.find("/blobs/") != std::string::npos) ++heads;
    if (r.uri.find("/blobs/uploads/") != std::string::npos) ++uploads;
    if (r.method == "PUT" && r.uri.find("/manifests/") != std::string::npos) ++manifest_puts;
  }
  EXPECT_EQ(heads, 4);
  EXPECT_EQ(uploads, 0);
  EXPECT_EQ(manifest_puts, 1);
  EXPECT_EQ(SkopeoDigest("docker://" + (*reg)->host() + "/dest/busybox:v2", reg->get()),
            *busybox_digest_);
}

class ImageDestAuthTest : public ImageDestTest,
                          public ::testing::WithParamInterface<RegistryFlavor> {};

TEST_P(ImageDestAuthTest, PushWithCredentialsMatchesSkopeo) {
  auto reg = TestRegistry::Start(GetParam());
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  const std::string image = (*reg)->host() + "/team/busybox:1";
  auto stats = Push("docker://" + image, OptionsFor(reg->get()));
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(SkopeoDigest("docker://" + image, reg->get()), *busybox_digest_);
  auto back = Resolve("docker://" + image, OptionsFor(reg->get()));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->manifest.digest, *busybox_digest_);
  if (GetParam() == RegistryFlavor::kToken) {
    // One token for pull,push serves the whole push (one more for the read-back's pull).
    EXPECT_GE((*reg)->TokenRequests(), 1);
    EXPECT_LE((*reg)->TokenRequests(), 4);
  }
}

TEST_P(ImageDestAuthTest, PushWithoutCredentialsFailsInOneLineAndTagsNothing) {
  auto reg = TestRegistry::Start(GetParam());
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  const std::string image = (*reg)->host() + "/team/busybox:1";
  auto stats = Push("docker://" + image, OptionsFor(reg->get(), /*with_credentials=*/false));
  ASSERT_FALSE(stats.ok());
  const std::string& msg = stats.status().message();
  EXPECT_EQ(stats.status().code(), Code::kUnauthenticated) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(msg.find("imagefs login " + (*reg)->host()), std::string::npos) << msg;
  EXPECT_NE(msg.find((*reg)->host()), std::string::npos) << msg;
  EXPECT_NE(SkopeoDigest("docker://" + image, reg->get()), *busybox_digest_);
}

INSTANTIATE_TEST_SUITE_P(Flavors, ImageDestAuthTest,
                         ::testing::Values(RegistryFlavor::kTlsBasic, RegistryFlavor::kToken),
                         [](const auto& info) {
                           return std::string(info.param == RegistryFlavor::kToken ? "Token"
                                                                                   : "TlsBasic");
                         });

TEST_F(ImageDestTest, PushToDeadRegistryFailsInOneLine) {
  FetchOptions options = OptionsFor(nullptr);
  options.request_timeout = std::chrono::seconds(5);
  const std::string host = "127.0.0.1:" + std::to_string(DeadPort());
  auto stats = Push("docker://" + host + "/x/busybox:1", options);
  ASSERT_FALSE(stats.ok());
  const std::string& msg = stats.status().message();
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(msg.find(host), std::string::npos) << msg;
  EXPECT_NE(msg.find("refused"), std::string::npos) << msg;
}

TEST_F(ImageDestTest, RegistryRefusesBlobThatDoesNotMatchItsDigest) {
  auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  auto ref = ParseImageRef("docker://" + (*reg)->host() + "/bad/blob:1");
  ASSERT_TRUE(ref.ok());
  auto dest = OpenImageDestination(*ref, OptionsFor(reg->get()));
  ASSERT_TRUE(dest.ok()) << dest.status().ToString();
  // Small (monolithic) and large (PATCH chunks) uploads, each claiming another digest.
  for (size_t size : {size_t{1000}, size_t{40 << 20}}) {
    std::string good = RandomBytes(size, 7);
    std::string bad = good;
    bad[size / 2] ^= 1;
    const std::string path = scratch_.path() + "/bad";
    ASSERT_TRUE(WriteFileAtomic(path, bad).ok());
    Descriptor desc{std::string(kOciLayerTar), Sha(good), static_cast<int64_t>(size), {}, {}, {}};
    Status st = (*dest)->PutBlob(desc, path);
    EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
    EXPECT_EQ(st.message().find('\n'), std::string::npos);
    auto has = (*dest)->HasBlob(desc);
    ASSERT_TRUE(has.ok()) << has.status().ToString();
    EXPECT_FALSE(*has) << size;
    // The right bytes then go up (chunked above 32 MiB) and are found.
    ASSERT_TRUE(WriteFileAtomic(path, good).ok());
    st = (*dest)->PutBlob(desc, path);
    ASSERT_TRUE(st.ok()) << st.ToString();
    has = (*dest)->HasBlob(desc);
    ASSERT_TRUE(has.ok());
    EXPECT_TRUE(*has) << size;
  }
  // The 40 MiB blob reads back intact.
  RegistryEndpointConfig config;
  config.host = (*reg)->host();
  auto client = RegistryClient::Create(config);
  ASSERT_TRUE(client.ok());
  Sha256 hash;
  std::string want = Sha(RandomBytes(40 << 20, 7));
  Status st = (*client)->GetBlob("bad/blob", want, [&](const char* d, size_t n) {
    hash.Update(std::string_view(d, n));
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(hash.Finish().String(), want);
}

TEST_F(ImageDestTest, PushWithACorruptLayerStopsBeforeTheManifest) {
  // A copy of the layout whose second layer has one byte flipped (its size is unchanged).
  const std::string layout = scratch_.path() + "/tampered";
  std::string src = busybox_->substr(4, busybox_->rfind(':') - 4);
  ASSERT_TRUE(RunTool({"cp", "-r", src, layout}).ok());
  auto original = Resolve(*busybox_, OptionsFor(nullptr));
  ASSERT_TRUE(original.ok()) << original.status().ToString();
  const Descriptor& layer = original->parsed.layers[1];
  const std::string blob = layout + "/blobs/sha256/" + layer.digest.substr(7);
  auto bytes = ReadFile(blob);
  ASSERT_TRUE(bytes.ok());
  (*bytes)[bytes->size() / 2] ^= 0x40;
  ASSERT_TRUE(WriteFileAtomic(blob, *bytes).ok());

  auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  const std::string image = (*reg)->host() + "/partial/busybox:1";
  auto stats = CopyImage("oci:" + layout + ":latest", "docker://" + image, OptionsFor(nullptr),
                         OptionsFor(reg->get()), scratch_.path());
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), Code::kCorruption) << stats.status().ToString();
  EXPECT_NE(stats.status().message().find(layer.digest), std::string::npos);
  int manifest_puts = 0;
  for (const auto& r : (*reg)->Requests()) {
    if (r.method == "PUT" && r.uri.find("/manifests/") != std::string::npos) ++manifest_puts;
  }
  EXPECT_EQ(manifest_puts, 0);
  EXPECT_FALSE(Resolve("docker://" + image, OptionsFor(reg->get())).ok());
  auto ref = ParseImageRef("docker://" + image);
  ASSERT_TRUE(ref.ok());
  auto dest = OpenImageDestination(*ref, OptionsFor(reg->get()));
  ASSERT_TRUE(dest.ok());
  auto has = (*dest)->HasBlob(layer);
  ASSERT_TRUE(has.ok()) << has.status().ToString();
  EXPECT_FALSE(*has);
  EXPECT_TRUE(HiddenFiles(scratch_.path()).empty());
}

// ---------------------------------------------------------------------------------------
// oci:

TEST_F(ImageDestTest, OciLayoutIsCreatedAndMatchesSkopeo) {
  const std::string dir = scratch_.path() + "/layout";
  auto stats = Push("oci:" + dir + ":v1", OptionsFor(nullptr));
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_TRUE(PathExists(dir + "/oci-layout"));
  EXPECT_EQ(SkopeoDigest("oci:" + dir + ":v1"), *busybox_digest_);
  auto back = Resolve("oci:" + dir + ":v1", OptionsFor(nullptr));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->manifest.digest, *busybox_digest_);
  // A second name adds an entry and uploads nothing; the same name again replaces its entry.
  auto v2 = Push("oci:" + dir + ":v2", OptionsFor(nullptr));
  ASSERT_TRUE(v2.ok()) << v2.status().ToString();
  EXPECT_EQ(v2->blobs_put, 0);
  ASSERT_TRUE(Push("oci:" + dir + ":v1", OptionsFor(nullptr)).ok());
  auto index = ReadFile(dir + "/index.json");
  ASSERT_TRUE(index.ok());
  Json j = Json::parse(*index, nullptr, false);
  ASSERT_TRUE(j.is_object()) << *index;
  ASSERT_EQ(j["manifests"].size(), 2u) << *index;
  EXPECT_EQ(j["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "v2");
  EXPECT_EQ(j["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"], "v1");
  EXPECT_EQ(SkopeoDigest("oci:" + dir + ":v2"), *busybox_digest_);
  EXPECT_TRUE(HiddenFiles(dir).empty());
}

TEST_F(ImageDestTest, OciLayoutRefusesBlobThatDoesNotMatchItsDigest) {
  const std::string dir = scratch_.path() + "/layout";
  auto ref = ParseImageRef("oci:" + dir + ":x");
  ASSERT_TRUE(ref.ok());
  auto dest = OpenImageDestination(*ref, OptionsFor(nullptr));
  ASSERT_TRUE(dest.ok()) << dest.status().ToString();
  const std::string path = scratch_.path() + "/bad";
  ASSERT_TRUE(WriteFileAtomic(path, "not what the digest says").ok());
  Descriptor desc{std::string(kOciLayerTar), Sha("something else"), 24, {}, {}, {}};
  Status st = (*dest)->PutBlob(desc, path);
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  auto has = (*dest)->HasBlob(desc);
  ASSERT_TRUE(has.ok());
  EXPECT_FALSE(*has);
  EXPECT_FALSE(PathExists(dir + "/blobs/sha256/" + Digest::Sha256Of("something else").hex()));
  EXPECT_TRUE(HiddenFiles(dir).empty());
}

// ---------------------------------------------------------------------------------------
// docker-archive:

TEST_F(ImageDestTest, DockerArchiveLoadsInSkopeoWithTheSameDiffIds) {
  const std::string file = scratch_.path() + "/busybox.tar";
  auto stats = Push("docker-archive:" + file + ":example.com/app:1", OptionsFor(nullptr));
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  auto original = Resolve(*busybox_, OptionsFor(nullptr));
  ASSERT_TRUE(original.ok()) << original.status().ToString();
  ASSERT_EQ(original->config.diff_ids.size(), 3u);

  // skopeo unpacks it into a layout; its config keeps our diff_ids and its layers are them.
  const std::string out = scratch_.path() + "/from-archive";
  auto copy = Skopeo({"copy", "docker-archive:" + file, "oci:" + out + ":t"});
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  ASSERT_TRUE(copy->ok()) << copy->Describe();
  auto via_skopeo = Resolve("oci:" + out + ":t", OptionsFor(nullptr));
  ASSERT_TRUE(via_skopeo.ok()) << via_skopeo.status().ToString();
  EXPECT_EQ(via_skopeo->config.diff_ids, original->config.diff_ids);
  EXPECT_EQ(via_skopeo->config_bytes, original->config_bytes);

  // Our reader: the RepoTag selects it, layers are the plain tars.
  auto ours = Resolve("docker-archive:" + file + ":example.com/app:1", OptionsFor(nullptr));
  ASSERT_TRUE(ours.ok()) << ours.status().ToString();
  EXPECT_EQ(ours->name, "example.com/app");
  EXPECT_EQ(ours->config.diff_ids, original->config.diff_ids);
  ASSERT_EQ(ours->parsed.layers.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ours->parsed.layers[i].digest, original->config.diff_ids[i]);
    EXPECT_EQ(ours->parsed.layers[i].media_type, kDockerLayerTar);
  }
  EXPECT_TRUE(HiddenFiles(scratch_.path()).empty());

  // Writing the same file again replaces it whole.
  auto again = Push("docker-archive:" + file + ":example.com/app:2", OptionsFor(nullptr));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto tagged2 = Resolve("docker-archive:" + file + ":example.com/app:2", OptionsFor(nullptr));
  EXPECT_TRUE(tagged2.ok()) << tagged2.status().ToString();
  auto tagged1 = Resolve("docker-archive:" + file + ":example.com/app:1", OptionsFor(nullptr));
  EXPECT_FALSE(tagged1.ok());
}

TEST_F(ImageDestTest, ArchiveImagePushesToRegistryAsDockerSchema2) {
  // docker-archive (Docker schema 2, plain tar layers) -> registry, as `imagefs push` of a
  // loaded archive will do; the registry must keep the manifest byte for byte.
  const std::string file = scratch_.path() + "/busybox.tar";
  ASSERT_TRUE(Push("docker-archive:" + file + ":app:1", OptionsFor(nullptr)).ok());
  auto archived = Resolve("docker-archive:" + file, OptionsFor(nullptr));
  ASSERT_TRUE(archived.ok()) << archived.status().ToString();
  EXPECT_EQ(archived->manifest.media_type, kDockerManifest);
  auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  const std::string image = (*reg)->host() + "/from/archive:1";
  auto stats = CopyImage("docker-archive:" + file, "docker://" + image, OptionsFor(nullptr),
                         OptionsFor(reg->get()), scratch_.path());
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(SkopeoDigest("docker://" + image, reg->get()), archived->manifest.digest);
}

TEST_F(ImageDestTest, DockerArchiveRefusesBadBlobAndWritesNoFile) {
  const std::string file = scratch_.path() + "/bad.tar";
  auto ref = ParseImageRef("docker-archive:" + file + ":app:1");
  ASSERT_TRUE(ref.ok());
  auto dest = OpenImageDestination(*ref, OptionsFor(nullptr));
  ASSERT_TRUE(dest.ok()) << dest.status().ToString();
  const std::string path = scratch_.path() + "/bad";
  ASSERT_TRUE(WriteFileAtomic(path, "not what the digest says").ok());
  Descriptor desc{std::string(kOciLayerGzip), Sha("something else"), -1, {}, {}, {}};
  Status st = (*dest)->PutBlob(desc, path);
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  auto has = (*dest)->HasBlob(desc);
  ASSERT_TRUE(has.ok());
  EXPECT_FALSE(*has);
  dest->reset();
  EXPECT_FALSE(PathExists(file));
  EXPECT_TRUE(HiddenFiles(scratch_.path()).empty());
}

// A one-layer image made here: a tar of /etc/hello compressed as asked ("gzip2" = two
// concatenated gzip members, as pigz writes; "zstd"), its config and an OCI manifest.
struct TinyImage {
  std::vector<std::pair<Descriptor, std::string>> blobs;  // layer, then config
  std::string diff_id;
  RawManifest manifest;
};

Status RunTool(std::vector<std::string> argv) {
  testing::ProcessOptions options;
  options.argv = std::move(argv);
  ASSIGN_OR_RETURN(testing::ProcessResult r, testing::RunProcess(options));
  if (!r.ok()) return Status::Internal(options.argv[0] + ": " + r.Describe());
  return Status::Ok();
}

Result<TinyImage> MakeTinyImage(const std::string& scratch, const std::string& compression,
                                const std::string& wrong_diff_id = "") {
  const std::string src = scratch + "/tiny-src";
  RETURN_IF_ERROR(RemoveAll(src));
  RETURN_IF_ERROR(WriteFileAtomic(src + "/etc/hello", RandomBytes(300000, 3)));
  const std::string tar = scratch + "/tiny.tar";
  RETURN_IF_ERROR(RunTool({"tar", "--format=gnu", "--mtime=@0", "--owner=0", "--group=0",
                           "--numeric-owner", "-cf", tar, "-C", src, "etc"}));
  ASSIGN_OR_RETURN(std::string tar_bytes, ReadFile(tar));
  std::string layer;
  std::string type;
  if (compression == "gzip2") {
    std::string half = tar_bytes.substr(0, tar_bytes.size() / 2);
    RETURN_IF_ERROR(WriteFileAtomic(scratch + "/part1", half));
    RETURN_IF_ERROR(WriteFileAtomic(scratch + "/part2", tar_bytes.substr(half.size())));
    RETURN_IF_ERROR(RunTool({"gzip", "-n", "-f", scratch + "/part1", scratch + "/part2"}));
    ASSIGN_OR_RETURN(std::string a, ReadFile(scratch + "/part1.gz"));
    ASSIGN_OR_RETURN(std::string b, ReadFile(scratch + "/part2.gz"));
    layer = a + b;
    type = kOciLayerGzip;
  } else {
    RETURN_IF_ERROR(RunTool({"zstd", "-q", "-f", tar, "-o", tar + ".zst"}));
    ASSIGN_OR_RETURN(layer, ReadFile(tar + ".zst"));
    type = kOciLayerZstd;
  }
  TinyImage image;
  image.diff_id = Sha(tar_bytes);
  Json config = {{"architecture", "amd64"},
                 {"os", "linux"},
                 {"config", {{"Cmd", {"/bin/sh"}}}},
                 {"rootfs", {{"type", "layers"},
                             {"diff_ids", {wrong_diff_id.empty() ? image.diff_id
                                                                 : wrong_diff_id}}}}};
  std::string config_bytes = config.dump();
  Descriptor layer_desc{type, Sha(layer), static_cast<int64_t>(layer.size()), {}, {}, {}};
  Descriptor config_desc{std::string(kOciConfig), Sha(config_bytes),
                         static_cast<int64_t>(config_bytes.size()), {}, {}, {}};
  Json manifest = {
      {"schemaVersion", 2},
      {"mediaType", kOciManifest},
      {"config", {{"mediaType", kOciConfig}, {"digest", config_desc.digest},
                  {"size", config_desc.size}}},
      {"layers", {{{"mediaType", type}, {"digest", layer_desc.digest},
                   {"size", layer_desc.size}}}}};
  image.blobs = {{layer_desc, layer}, {config_desc, config_bytes}};
  image.manifest.bytes = manifest.dump();
  image.manifest.media_type = kOciManifest;
  image.manifest.digest = Sha(image.manifest.bytes);
  return image;
}

Status WriteTiny(ImageDestination& dest, const TinyImage& image, const std::string& scratch) {
  for (const auto& [desc, bytes] : image.blobs) {
    RETURN_IF_ERROR(WriteFileAtomic(scratch + "/tiny-blob", bytes));
    RETURN_IF_ERROR(dest.PutBlob(desc, scratch + "/tiny-blob"));
  }
  return dest.PutManifest(image.manifest);
}

TEST_F(ImageDestTest, DockerArchiveDecompressesMultiMemberGzipAndZstdLayers) {
  for (const char* compression : {"gzip2", "zstd"}) {
    SCOPED_TRACE(compression);
    auto image = MakeTinyImage(scratch_.path(), compression);
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    const std::string file = scratch_.path() + "/tiny-" + compression + ".tar";
    auto ref = ParseImageRef("docker-archive:" + file + ":tiny:1");
    ASSERT_TRUE(ref.ok());
    auto dest = OpenImageDestination(*ref, OptionsFor(nullptr));
    ASSERT_TRUE(dest.ok()) << dest.status().ToString();
    Status st = WriteTiny(**dest, *image, scratch_.path());
    if (std::string(compression) == "zstd" && st.code() == Code::kUnsupported) {
      // This binary has no libzstd (see image_dest.cc): the refusal must say so.
      EXPECT_NE(st.message().find("zstd"), std::string::npos) << st.ToString();
      EXPECT_FALSE(PathExists(file));
      continue;
    }
    ASSERT_TRUE(st.ok()) << st.ToString();
    auto ours = Resolve("docker-archive:" + file, OptionsFor(nullptr));
    ASSERT_TRUE(ours.ok()) << ours.status().ToString();
    ASSERT_EQ(ours->parsed.layers.size(), 1u);
    EXPECT_EQ(ours->parsed.layers[0].digest, image->diff_id);
    EXPECT_EQ(ours->name, "docker.io/library/tiny");
    const std::string out = scratch_.path() + "/tiny-out-" + compression;
    auto copy = Skopeo({"copy", "docker-archive:" + file, "oci:" + out + ":t"});
    ASSERT_TRUE(copy.ok()) << copy.status().ToString();
    ASSERT_TRUE(copy->ok()) << copy->Describe();
    auto via_skopeo = Resolve("oci:" + out + ":t", OptionsFor(nullptr));
    ASSERT_TRUE(via_skopeo.ok()) << via_skopeo.status().ToString();
    EXPECT_EQ(via_skopeo->config.diff_ids, std::vector<std::string>{image->diff_id});
  }
}

TEST_F(ImageDestTest, DockerArchiveRefusesConfigWhoseDiffIdsDoNotMatch) {
  auto image = MakeTinyImage(scratch_.path(), "gzip2", Sha("another layer"));
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  const std::string file = scratch_.path() + "/mismatch.tar";
  auto ref = ParseImageRef("docker-archive:" + file + ":tiny:1");
  ASSERT_TRUE(ref.ok());
  auto dest = OpenImageDestination(*ref, OptionsFor(nullptr));
  ASSERT_TRUE(dest.ok()) << dest.status().ToString();
  Status st = WriteTiny(**dest, *image, scratch_.path());
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  EXPECT_NE(st.message().find("diff_id"), std::string::npos) << st.ToString();
  dest->reset();
  EXPECT_FALSE(PathExists(file));
  EXPECT_TRUE(HiddenFiles(scratch_.path()).empty());
}

TEST_F(ImageDestTest, DockerArchiveNeedsATagNotAnIndex) {
  auto at = ParseImageRef("docker-archive:/tmp/x.tar:@0");
  ASSERT_TRUE(at.ok());
  auto dest = OpenImageDestination(*at, OptionsFor(nullptr));
  ASSERT_FALSE(dest.ok());
  EXPECT_EQ(dest.status().code(), Code::kInvalidArgument) << dest.status().ToString();
}

}  // namespace
}  // namespace image_dest_test
}  // namespace imagefs::fetch
