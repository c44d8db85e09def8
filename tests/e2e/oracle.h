#pragma once

// The oracle tree of a test image: the image copied with skopeo to a dir: layout and its
// layers applied in order with GNU tar (tests/testing/apply-layers), as kernel overlayfs's
// lower dir or as the tree imagefs must show. gtest assertions inside: call these from a
// function returning void and check HasFatalFailure() after. And a fixture base for suites
// over the busybox test image and its oracle tree.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/e2e/imagefs_runner.h"
#include "tests/testing/images.h"
#include "tests/testing/registry.h"
#include "util/file.h"

namespace imagefs::testing {

// Applies layer blobs (bottom first, paths of the files) to `out` with apply-layers.
inline void ApplyLayers(const std::string& out, const std::vector<std::string>& layers) {
  std::string args;
  for (const std::string& l : layers) args += " " + l;
  int rc = 0;
  const std::string log = Shell(
      std::string(IMAGEFS_SOURCE_DIR) + "/tests/testing/apply-layers " + out + args + " 2>&1", &rc);
  ASSERT_EQ(rc, 0) << log;
}

// Unpacks `source` (a skopeo source: "oci:DIR:TAG", "docker://REF") into `out`, using
// `scratch` (created) for the dir: copy.
inline void UnpackOracle(const TestRegistry& registry, const std::string& source,
                         const std::string& scratch, const std::string& out) {
  std::vector<std::string> args = {"copy", "--quiet"};
  if (source.starts_with("docker://")) {
    for (const std::string& f : registry.skopeo_src_flags()) args.push_back(f);
  }
  args.insert(args.end(), {source, "dir:" + scratch});
  auto c = registry.RunSkopeo(args);
  ASSERT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : c.status().message());
  auto manifest = ReadFile(scratch + "/manifest.json");
  ASSERT_TRUE(manifest.ok());
  std::vector<std::string> layers;
  const nlohmann::json parsed = nlohmann::json::parse(*manifest);
  for (const nlohmann::json& l : parsed["layers"]) {
    layers.push_back(scratch + "/" + l["digest"].get<std::string>().substr(7));
  }
  ASSERT_FALSE(layers.empty()) << *manifest;
  ApplyLayers(out, layers);
}

}  // namespace imagefs::testing

namespace imagefs::testing {

// A test suite over the busybox test image pushed to a fresh plain registry
// (busybox_ = "HOST/t/busybox:gzip"), with its oracle tree unpacked in oracle_ (kernel
// overlayfs's lower dir), all under dir_ (removed at the end).
class BusyboxOracleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
    ASSERT_TRUE(reg.ok()) << reg.status().message();
    registry_ = reg->release();
    auto dir = MakeTempDir("/tmp", "busybox-oracle-test-");
    ASSERT_TRUE(dir.ok());
    dir_ = new std::string(*dir);
    auto image = TestImage("busybox");
    ASSERT_TRUE(image.ok()) << image.status().message();
    busybox_ = new std::string(registry_->host() + "/t/busybox:gzip");
    ASSERT_TRUE(PushImage(*registry_, *image, "t/busybox:gzip", false).ok());
    oracle_ = new std::string(*dir_ + "/oracle");
    UnpackOracle(*registry_, "oci:" + *image, *dir_ + "/busybox-dir", *oracle_);
  }
  static void TearDownTestSuite() {
    delete registry_;
    registry_ = nullptr;
    if (dir_ != nullptr) (void)RemoveAll(*dir_);
    delete dir_;
    dir_ = nullptr;
    delete busybox_;
    busybox_ = nullptr;
    delete oracle_;
    oracle_ = nullptr;
  }
  // Fails the test when the suite's set-up did not finish; a fresh case_ dir per test,
  // root_ (imagefs --root) inside it.
  void SetUp() override {
    ASSERT_NE(registry_, nullptr);
    ASSERT_TRUE(PathExists(*oracle_ + "/data/hello.txt"));
    auto d = MakeTempDir(*dir_, "case-");
    ASSERT_TRUE(d.ok());
    case_ = *d;
    root_ = case_ + "/root";
  }
  // The imagefs binary with --root root_ and the registry's client environment.
  ProcessResult Imagefs(std::vector<std::string> args) {
    args.insert(args.begin(), {"--root", root_});
    return RunImagefs(args, registry_->client_env());
  }
  // case_/name, created.
  std::string Dir(const std::string& name) {
    const std::string d = case_ + "/" + name;
    EXPECT_TRUE(MakeDirs(d).ok());
    return d;
  }

  inline static TestRegistry* registry_ = nullptr;
  inline static std::string* dir_ = nullptr;
  inline static std::string* busybox_ = nullptr;
  inline static std::string* oracle_ = nullptr;
  std::string case_, root_;
};

}  // namespace imagefs::testing
