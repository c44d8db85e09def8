// imagefs convert: its layers stay ordinary layers. A converted image unpacked by standard
// tools alone (skopeo to copy, gzip/zstd + GNU tar with OCI whiteouts) gives the original
// tree — contents, modes, owners, mtimes, xattrs, links; the same input gives the same
// bytes; a prefetch profile puts its files first.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/e2e/imagefs_runner.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/digest.h"
#include "util/file.h"

namespace imagefs::testing {
namespace {

using Json = nlohmann::json;

// Everything standard tools preserve about an entry, as one comparable line.
std::string Describe(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return "missing";
  std::ostringstream out;
  out << std::oct << st.st_mode << std::dec << " " << st.st_uid << ":" << st.st_gid;
  if (!S_ISDIR(st.st_mode)) out << " mtime=" << st.st_mtim.tv_sec << " nlink=" << st.st_nlink;
  if (S_ISLNK(st.st_mode)) out << " -> " << std::filesystem::read_symlink(path).string();
  if (S_ISREG(st.st_mode)) {
    auto bytes = ReadFile(path);
    out << " size=" << st.st_size << " sha256="
        << (bytes.ok() ? Digest::Sha256Of(std::string_view(*bytes)).String() : "?");
  }
  char names[4096];
  ssize_t n = llistxattr(path.c_str(), names, sizeof names);
  std::vector<std::string> xattrs;
  for (ssize_t i = 0; n > 0 && i < n; i += static_cast<ssize_t>(std::strlen(names + i)) + 1) {
    std::string name = names + i;
    char value[4096];
    ssize_t vn = lgetxattr(path.c_str(), name.c_str(), value, sizeof value);
    xattrs.push_back(name + "=" + std::string(value, vn > 0 ? static_cast<size_t>(vn) : 0));
  }
  std::sort(xattrs.begin(), xattrs.end());
  for (const auto& x : xattrs) out << " xattr:" << x;
  return out.str();
}

std::map<std::string, std::string> TreeOf(const std::string& root) {
  std::map<std::string, std::string> tree;
  for (auto it = std::filesystem::recursive_directory_iterator(root);
       it != std::filesystem::recursive_directory_iterator(); ++it) {
    tree[it->path().string().substr(root.size())] = Describe(it->path().string());
  }
  return tree;
}

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("/tmp", "convert-test-");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
    auto image = TestImage("busybox");
    ASSERT_TRUE(image.ok()) << image.status().message();
    image_ = *image;
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  ProcessResult Imagefs(std::vector<std::string> args) {
    args.insert(args.begin(), {"--root", dir_ + "/root"});
    return RunImagefs(args, {{"CONTAINERS_REGISTRIES_CONF", "/dev/null"}});
  }

  // skopeo copy oci:LAYOUT dir:OUT, then the layer files in manifest order.
  std::vector<std::string> CopyToDir(const std::string& layout, const std::string& out) {
    Shell("skopeo --policy " + std::string(IMAGEFS_SOURCE_DIR) +
          "/tests/testing/policy.json copy --quiet oci:" + layout + " dir:" + out);
    auto manifest = ReadFile(out + "/manifest.json");
    EXPECT_TRUE(manifest.ok());
    std::vector<std::string> layers;
    if (!manifest.ok()) return layers;
    const Json parsed = Json::parse(*manifest);
    for (const Json& l : parsed["layers"]) {
      layers.push_back(out + "/" + l["digest"].get<std::string>().substr(7));
    }
    return layers;
  }

  std::string Unpack(const std::vector<std::string>& layers, const std::string& dest) {
    std::string args;
    for (const auto& l : layers) args += " " + l;
    Shell(std::string(IMAGEFS_SOURCE_DIR) + "/tests/testing/apply-layers " + dest + args);
    return dest;
  }

  std::string dir_;
  std::string image_;
};

TEST_F(ConvertTest, ConvertedImagesUnpackWithStandardToolsToTheOriginalTree) {
  const auto original = TreeOf(Unpack(CopyToDir(image_, dir_ + "/orig"), dir_ + "/orig-tree"));
  ASSERT_GT(original.size(), 25u);
  for (const std::string format : {"zstd-chunked", "estargz"}) {
    SCOPED_TRACE(format);
    const std::string layout = dir_ + "/" + format + ":conv";
    ProcessResult r = Imagefs({"convert", "--format", format, "oci:" + image_, "oci:" + layout});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_EQ(LineCount(r.stderr_text), 3) << r.stderr_text;  // one progress line per layer
    const auto layers = CopyToDir(layout, dir_ + "/" + format + "-dir");
    ASSERT_EQ(layers.size(), 3u);
    EXPECT_EQ(TreeOf(Unpack(layers, dir_ + "/" + format + "-tree")), original);
  }
}

TEST_F(ConvertTest, LayersListTheSameEntriesWithGzipOrZstdAndTar) {
  const auto orig_layers = CopyToDir(image_, dir_ + "/orig");
  for (const std::string format : {"zstd-chunked", "estargz"}) {
    SCOPED_TRACE(format);
    const std::string layout = dir_ + "/" + format + ":conv";
    ASSERT_EQ(Imagefs({"convert", "--format", format, "oci:" + image_, "oci:" + layout}).exit_code,
              0);
    const auto layers = CopyToDir(layout, dir_ + "/" + format + "-dir");
    ASSERT_EQ(layers.size(), 3u);
    ASSERT_EQ(orig_layers.size(), 3u);
    const std::string decompress = format == "estargz" ? "gzip -dc" : "zstd -qdc";
    for (size_t i = 0; i < layers.size(); ++i) {
      auto want = Lines(Shell("gzip -dc " + orig_layers[i] + " | tar -t"));
      auto got = Lines(Shell(decompress + " " + layers[i] + " | tar -t"));
      std::erase_if(got, [](const std::string& p) {
        return p == "stargz.index.json" || p == ".prefetch.landmark" ||
               p == ".no.prefetch.landmark";
      });
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, want) << "layer " << i;
    }
  }
}

TEST_F(ConvertTest, TheSameInputGivesTheSameBytes) {
  for (const std::string format : {"zstd-chunked", "estargz"}) {
    ProcessResult a = Imagefs({"convert", "--format", format, "oci:" + image_,
                               "oci:" + dir_ + "/a-" + format + ":x"});
    ProcessResult b = Imagefs({"convert", "--format", format, "--chunk-size", "4M",
                               "oci:" + image_, "oci:" + dir_ + "/b-" + format + ":x"});
    ASSERT_EQ(a.exit_code, 0) << a.Describe();
    ASSERT_EQ(b.exit_code, 0) << b.Describe();
    EXPECT_EQ(a.stdout_text, b.stdout_text) << format;  // the manifest digest
    EXPECT_EQ(Shell("cd " + dir_ + "/a-" + format + "/blobs/sha256 && ls | sort"),
              Shell("cd " + dir_ + "/b-" + format + "/blobs/sha256 && ls | sort"));
  }
}

TEST_F(ConvertTest, SmallerChunksSplitLargeFilesAndStillReadBack) {
  const std::string layout = dir_ + "/small:x";
  ProcessResult r = Imagefs({"convert", "--chunk-size", "1M", "oci:" + image_, "oci:" + layout});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ProcessResult big = Imagefs({"cat", "oci:" + layout, "/data/big.bin"});
  ASSERT_EQ(big.exit_code, 0) << big.stderr_text;
  const auto orig = TreeOf(Unpack(CopyToDir(image_, dir_ + "/orig"), dir_ + "/orig-tree"));
  EXPECT_NE(orig.at("/data/big.bin").find(
                "sha256=" + Digest::Sha256Of(std::string_view(big.stdout_text)).String()),
            std::string::npos);
}

TEST_F(ConvertTest, APrefetchProfilePutsItsFilesFirstAndMarksTheBoundary) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/profile",
                              "# first-access order\n/data/run.sh\n/data/hello.txt\n").ok());
  for (const std::string format : {"zstd-chunked", "estargz"}) {
    SCOPED_TRACE(format);
    const std::string layout = dir_ + "/p-" + format + ":x";
    ProcessResult r = Imagefs({"convert", "--format", format, "--prefetch-profile",
                               dir_ + "/profile", "oci:" + image_, "oci:" + layout});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    const auto layers = CopyToDir(layout, dir_ + "/p-" + format + "-dir");
    ASSERT_EQ(layers.size(), 3u);
    const std::string decompress = format == "estargz" ? "gzip -dc" : "zstd -qdc";
    auto names = Lines(Shell(decompress + " " + layers[1] + " | tar -t"));
    // Parent directories may come first; the profile's files before any other file.
    std::vector<std::string> files;
    for (const auto& n : names) {
      if (!n.ends_with("/")) files.push_back(n);
    }
    ASSERT_GE(files.size(), 3u);
    EXPECT_EQ(files[0], "data/run.sh");
    EXPECT_EQ(files[1], "data/hello.txt");
    if (format == "estargz") {
      EXPECT_EQ(files[2], ".prefetch.landmark");
    }
  }
}

TEST_F(ConvertTest, DockerArchiveOutputSaysItsLayersAreNotSeekable) {
  const std::string archive = dir_ + "/out.tar";
  ProcessResult r =
      Imagefs({"convert", "oci:" + image_, "docker-archive:" + archive + ":conv/busybox:1"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.stderr_text.find("not seekable"), std::string::npos) << r.stderr_text;
  Shell("skopeo --policy " + std::string(IMAGEFS_SOURCE_DIR) +
        "/tests/testing/policy.json inspect docker-archive:" + archive + " >/dev/null");
}

TEST_F(ConvertTest, BadArgumentsAndSourcesFailWithOneLine) {
  ProcessResult r = Imagefs({"convert", "--format", "squashfs", "oci:" + image_, "oci:/tmp/x:y"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stderr_text, "imagefs: --format squashfs: use zstd-chunked or estargz\n");
  r = Imagefs({"convert", "oci:" + dir_ + "/nothing:here", "oci:" + dir_ + "/out:x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_FALSE(PathExists(dir_ + "/out/index.json"));
  r = Imagefs({"convert", "--chunk-size", "0", "oci:" + image_, "oci:" + dir_ + "/out:x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  r = Imagefs({"convert", "--prefetch-profile", dir_ + "/missing", "oci:" + image_,
               "oci:" + dir_ + "/out:x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
}

}  // namespace
}  // namespace imagefs::testing
