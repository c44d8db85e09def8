#include "tests/testing/images.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <mutex>
#include <nlohmann/json.hpp>

#include "tests/testing/process.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::testing {
namespace {

// "DIR:TAG" -> {DIR, TAG}; a colon inside DIR (before the last '/') is not a separator.
std::pair<std::string, std::string> SplitTag(const std::string& oci_dir_with_tag) {
  size_t slash = oci_dir_with_tag.rfind('/');
  size_t colon = oci_dir_with_tag.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) {
    return {oci_dir_with_tag, ""};
  }
  return {oci_dir_with_tag.substr(0, colon), oci_dir_with_tag.substr(colon + 1)};
}

Result<std::string> BuildTestImages() {
  const std::string out = std::string(IMAGEFS_BINARY_DIR) + "/test-images";
  const std::string lock_path = out + ".lock";
  RETURN_IF_ERROR(MakeDirs(std::string(IMAGEFS_BINARY_DIR)));
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!lock) return Status::FromErrno(errno, "opening " + lock_path);
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Status::FromErrno(errno, "locking " + lock_path);
  }
  ProcessOptions options;
  options.argv = {"bash", std::string(IMAGEFS_SOURCE_DIR) + "/scripts/build-test-images", out};
  options.timeout = std::chrono::minutes(10);
  ASSIGN_OR_RETURN(ProcessResult result, RunProcess(options));
  ::flock(lock.get(), LOCK_UN);
  if (!result.ok()) {
    return Status::Internal("scripts/build-test-images " + out + ": " + result.Describe());
  }
  return out;
}

}  // namespace

Result<std::string> TestImagesDir() {
  static std::mutex mu;
  static Result<std::string>* cached = nullptr;  // leaked on purpose: lives until exit
  std::lock_guard<std::mutex> lock(mu);
  if (cached == nullptr || !cached->ok()) {
    delete cached;
    cached = new Result<std::string>(BuildTestImages());
  }
  return *cached;
}

Result<std::string> TestImage(const std::string& name, const std::string& tag) {
  ASSIGN_OR_RETURN(std::string dir, TestImagesDir());
  return dir + "/" + name + ":" + tag;
}

Result<std::string> LayoutDigest(const std::string& oci_dir_with_tag) {
  auto [dir, tag] = SplitTag(oci_dir_with_tag);
  ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/index.json"));
  nlohmann::json index = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object() || !index.contains("manifests") ||
      !index["manifests"].is_array()) {
    return Status::Corruption(dir + "/index.json: not an OCI index");
  }
  const nlohmann::json* only = nullptr;
  for (const nlohmann::json& m : index["manifests"]) {
    if (!m.is_object() || !m.contains("digest") || !m["digest"].is_string()) continue;
    if (!only) only = &m;
    const nlohmann::json* annotations = m.contains("annotations") ? &m["annotations"] : nullptr;
    if (annotations != nullptr && annotations->is_object() &&
        annotations->contains("org.opencontainers.image.ref.name") &&
        (*annotations)["org.opencontainers.image.ref.name"] == tag) {
      return m["digest"].get<std::string>();
    }
  }
  if (tag.empty() && only != nullptr && index["manifests"].size() == 1) {
    return (*only)["digest"].get<std::string>();
  }
  return Status::NotFound(dir + ": no manifest named \"" + tag + "\" in index.json");
}

Status PushImage(const TestRegistry& registry, const std::string& oci_dir_with_tag,
                 const std::string& dest_repo_tag, bool all_platforms) {
  std::vector<std::string> args = {"copy", "--quiet"};
  if (all_platforms) args.push_back("--all");
  std::vector<std::string> dest_flags = registry.skopeo_dest_flags();
  args.insert(args.end(), dest_flags.begin(), dest_flags.end());
  args.push_back("oci:" + oci_dir_with_tag);
  args.push_back("docker://" + registry.host() + "/" + dest_repo_tag);
  ASSIGN_OR_RETURN(ProcessResult result, registry.RunSkopeo(args));
  if (!result.ok()) {
    return Status::Internal("skopeo " + ShellQuote(args) + ": " + result.Describe());
  }
  return Status::Ok();
}

}  // namespace imagefs::testing
