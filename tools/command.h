#pragma once

// The subcommand table's types and the helpers every cmd_<name>.cc uses.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "fetch/image_source.h"
#include "util/log.h"
#include "util/status.h"

namespace CLI {
class App;
}

namespace imagefs::tools {

// Flags that come before the subcommand name: imagefs [--root DIR] [--log-level L] CMD ...
struct GlobalOptions {
  std::string root;  // --root, $IMAGEFS_ROOT, /var/lib/imagefs (root) or $XDG_DATA_HOME/imagefs
  LogLevel log_level = LogLevel::kWarn;
  std::vector<std::string> insecure_registries;  // --insecure-registry, repeatable
  std::string cert_dir;  // --cert-dir: CA and client certs instead of certs.d/HOST
  uint64_t cache_size = 10ull << 30;  // --cache-size / $IMAGEFS_CACHE_SIZE: the chunk cache's bound
  // Bound on each registry request, retries included (FetchOptions::fetch_timeout); 0 = the
  // client's own retry count. Set by imagefs mount --fetch-timeout.
  std::chrono::milliseconds fetch_timeout{0};
};

using CommandFn = int (*)(const GlobalOptions& global, const std::vector<std::string>& args);

struct Command {
  const char* name;
  const char* summary;
  CommandFn run;
};

// Prints "imagefs: <message>" to stderr and returns the exit code for a failure (1).
int Fail(const Status& status);

// Parses a subcommand's arguments with CLI11. Returns -1 when the command should go on,
// or an exit code (0 after --help, 2 after a usage error, which it prints).
int ParseCommandLine(CLI::App& app, const std::string& command, const std::vector<std::string>& args);

// Fetch options from the machine's registries.conf, the global flags and an optional
// --platform value.
Result<fetch::FetchOptions> MakeFetchOptions(const GlobalOptions& global,
                                             const std::string& platform);

// An image opened from its user-given name and resolved (manifest + config verified).
struct OpenedImage {
  fetch::ImageRef ref;
  fetch::FetchOptions options;
  std::unique_ptr<fetch::ImageSource> source;
  fetch::ResolvedImage image;
};
// with_config false: the manifest only (image.config is left to fetch::ResolveConfig).
Result<OpenedImage> OpenImage(const GlobalOptions& global, const std::string& name,
                              const std::string& platform, bool with_config = true);

// One info line "phase WHAT at <unix seconds, ms resolution>", for the cold-start bench's
// per-phase breakdown (bench/cold-start/run passes --log-level info and reads the mount
// daemon's log).
void LogPhase(const char* what);

// A private directory under --root/tmp for a command's temporary files, removed with
// everything in it when the object goes (also on every error path).
class ScratchDir {
 public:
  // --root/tmp/<prefix>XXXXXX (tmp/ created 0700 when missing).
  static Result<std::unique_ptr<ScratchDir>> Make(const GlobalOptions& global,
                                                  const std::string& prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Human-readable sizes as docker prints them: "1.23MB", "512B" (decimal units).
std::string HumanSize(double bytes);

int RunInspect(const GlobalOptions& global, const std::vector<std::string>& args);
int RunPull(const GlobalOptions& global, const std::vector<std::string>& args);
int RunLogin(const GlobalOptions& global, const std::vector<std::string>& args);
int RunLogout(const GlobalOptions& global, const std::vector<std::string>& args);
int RunImages(const GlobalOptions& global, const std::vector<std::string>& args);
int RunTag(const GlobalOptions& global, const std::vector<std::string>& args);
int RunRmi(const GlobalOptions& global, const std::vector<std::string>& args);
int RunLs(const GlobalOptions& global, const std::vector<std::string>& args);
int RunCat(const GlobalOptions& global, const std::vector<std::string>& args);
int RunConvert(const GlobalOptions& global, const std::vector<std::string>& args);
int RunDf(const GlobalOptions& global, const std::vector<std::string>& args);
int RunPrune(const GlobalOptions& global, const std::vector<std::string>& args);
int RunHistory(const GlobalOptions& global, const std::vector<std::string>& args);
int RunMount(const GlobalOptions& global, const std::vector<std::string>& args);
int RunMounts(const GlobalOptions& global, const std::vector<std::string>& args);
int RunUmount(const GlobalOptions& global, const std::vector<std::string>& args);
int RunDiff(const GlobalOptions& global, const std::vector<std::string>& args);
int RunRun(const GlobalOptions& global, const std::vector<std::string>& args);
int RunPs(const GlobalOptions& global, const std::vector<std::string>& args);
int RunRm(const GlobalOptions& global, const std::vector<std::string>& args);
int RunCommit(const GlobalOptions& global, const std::vector<std::string>& args);
int RunPush(const GlobalOptions& global, const std::vector<std::string>& args);
int RunSave(const GlobalOptions& global, const std::vector<std::string>& args);
int RunLoad(const GlobalOptions& global, const std::vector<std::string>& args);
int RunImport(const GlobalOptions& global, const std::vector<std::string>& args);

}  // namespace imagefs::tools
