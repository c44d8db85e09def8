#pragma once

// The oracle tree of a test image: the image copied with skopeo to a dir: layout and its
// layers applied in order with GNU tar (tests/testing/apply-layers), as kernel overlayfs's
// lower dir or as the tree imagefs must show. gtest assertions inside: call these from a
// function returning void and check HasFatalFailure() after. And fixture bases: a suite
// with its own registry, and one over the busybox test image and its oracle tree.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
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

// Applies the layers of a skopeo dir: copy (`dir`, its manifest.json naming them) to
// `out`; with `largest`, also the size of its largest layer.
inline void ApplyDirLayers(const std::string& dir, const std::string& out,
                           uint64_t* largest = nullptr) {
  auto manifest = ReadFile(dir + "/manifest.json");
  ASSERT_TRUE(manifest.ok());
  std::vector<std::string> layers;
  const nlohmann::json parsed = nlohmann::json::parse(*manifest);
  for (const nlohmann::json& l : parsed["layers"]) {
    layers.push_back(dir + "/" + l["digest"].get<std::string>().substr(7));
    if (largest != nullptr) *largest = std::max(*largest, l["size"].get<uint64_t>());
  }
  ASSERT_FALSE(layers.empty()) << *manifest;
  if (!out.empty()) ApplyLayers(out, layers);
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
  ApplyDirLayers(scratch, out);
}

}  // namespace imagefs::testing

namespace imagefs::testing {

// A test suite with a fresh plain registry (registry_) and a scratch dir (dir_, removed at
// the end). A derived suite calls StartRegistrySuite first in its SetUpTestSuite and
// RegistrySuite::TearDownTestSuite last in its own; each test gets a fresh case_ dir in
// dir_ with root_ = case_/root (imagefs --root).
class RegistrySuite : public ::testing::Test {
 protected:
  // prefix names the scratch dir under /tmp ("mount-test-" ...).
  static void StartRegistrySuite(const std::string& prefix) {
    auto reg = TestRegistry::Start(RegistryFlavor::kPlain);
    ASSERT_TRUE(reg.ok()) << reg.status().message();
    registry_ = reg->release();
    auto dir = MakeTempDir("/tmp", prefix);
    ASSERT_TRUE(dir.ok());
    dir_ = new std::string(*dir);
  }
  static void TearDownTestSuite() {
    delete registry_;
    registry_ = nullptr;
    if (dir_ != nullptr) (void)RemoveAll(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  // Pushes the busybox test image (gzip layers, as built) as HOST/repo_tag; its reference.
  static std::string PushBusybox(const std::string& repo_tag) {
    auto image = TestImage("busybox");
    EXPECT_TRUE(image.ok()) << image.status().message();
    if (!image.ok()) return "";
    EXPECT_TRUE(PushImage(*registry_, *image, repo_tag, false).ok());
    return registry_->host() + "/" + repo_tag;
  }
  // Pushes a skopeo dir: copy to a registry reference, as is.
  static void PushDir(const std::string& dir, const std::string& ref) {
    std::vector<std::string> push = {"copy", "--quiet"};
    for (const auto& f : registry_->skopeo_dest_flags()) push.push_back(f);
    push.insert(push.end(), {"dir:" + dir, "docker://" + ref});
    auto c = registry_->RunSkopeo(push);
    ASSERT_TRUE(c.ok() && c->exit_code == 0) << (c.ok() ? c->Describe() : c.status().message());
  }
  // imagefs convert --format FORMAT of an image (e.g. "oci:DIR:TAG") to a registry
  // reference, with a --root of its own in dir_.
  static void Convert(const std::string& format, const std::string& from, const std::string& to) {
    ProcessResult r = RunImagefs({"--root", *dir_ + "/convert-root", "convert", "--format",
                                  format, from, "docker://" + to},
                                 registry_->client_env());
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }
  // Fails the test when the suite's set-up did not finish.
  void SetUp() override {
    ASSERT_NE(registry_, nullptr);
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
  std::string case_, root_;
};

// A registry suite over the busybox test image (busybox_ = "HOST/t/busybox:gzip"), with
// its oracle tree unpacked in oracle_ (kernel overlayfs's lower dir).
class BusyboxOracleTest : public RegistrySuite {
 protected:
  static void SetUpTestSuite() { StartBusyboxSuite("busybox-oracle-test-"); }
  static void StartBusyboxSuite(const std::string& prefix) {
    StartRegistrySuite(prefix);
    if (::testing::Test::HasFatalFailure()) return;
    auto image = TestImage("busybox");
    ASSERT_TRUE(image.ok()) << image.status().message();
    busybox_ = new std::string(PushBusybox("t/busybox:gzip"));
    oracle_ = new std::string(*dir_ + "/oracle");
    UnpackOracle(*registry_, "oci:" + *image, *dir_ + "/busybox-dir", *oracle_);
  }
  static void TearDownTestSuite() {
    delete busybox_;
    busybox_ = nullptr;
    delete oracle_;
    oracle_ = nullptr;
    RegistrySuite::TearDownTestSuite();
  }
  void SetUp() override {
    RegistrySuite::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(PathExists(*oracle_ + "/data/hello.txt"));
  }

  inline static std::string* busybox_ = nullptr;
  inline static std::string* oracle_ = nullptr;
};

}  // namespace imagefs::testing
