// imagefs: lazy-pulling container image filesystem. This file holds the subcommand table,
// the global flags and `help`/`--version`; each command lives in cmd_<name>.cc.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <span>
#include <string>
#include <vector>

#include "tools/command.h"
#include "tools/format.h"
#include "util/file.h"

namespace imagefs::tools {
namespace {

constexpr const char* kVersion = "0.1.0";

int RunHelp(const GlobalOptions& global, const std::vector<std::string>& args);
int RunVersion(const GlobalOptions&, const std::vector<std::string>&) {
  std::printf("imagefs version %s\n", kVersion);
  return 0;
}

constexpr Command kCommands[] = {
    {"inspect", "Show an image's manifest and config as JSON, like skopeo inspect", RunInspect},
    {"pull", "Download an image's layers, verify them and store them under --root", RunPull},
    {"ls", "List files of an image without pulling it", RunLs},
    {"cat", "Print a file of an image without pulling it", RunCat},
    {"push", "Push a pulled image to a registry, blobs first and the manifest last", RunPush},
    {"mount", "Mount an image's root filesystem read-only, fetching files lazily", RunMount},
    {"umount", "Unmount an imagefs mount", RunUmount},
    {"mounts", "List live imagefs mounts", RunMounts},
    {"run", "Run a command in a new container (runc) over a lazily mounted image", RunRun},
    {"ps", "List containers, as docker ps", RunPs},
    {"rm", "Remove containers", RunRm},
    {"diff", "Show a mount's or upper dir's changes (or two images'), as docker diff", RunDiff},
    {"commit", "Create a new image from a mount's or upper dir's changes, as docker commit",
     RunCommit},
    {"convert", "Rewrite an image's layers as seekable layers (zstd:chunked, eStargz)", RunConvert},
    {"images", "List pulled images, as docker images", RunImages},
    {"tag", "Give a pulled image another name", RunTag},
    {"rmi", "Remove pulled images (untag, then delete unused blobs)", RunRmi},
    {"history", "Show a pulled image's build history", RunHistory},
    {"save", "Save stored images to a tar archive (docker-archive), as docker save", RunSave},
    {"load", "Load images from a docker-archive tar (or stdin), as docker load", RunLoad},
    {"import", "Create a one-layer image from a rootfs tarball (file, URL or -)", RunImport},
    {"df", "Show disk use under --root, as docker system df", RunDf},
    {"prune", "Remove dangling images, unused blobs, indexes and cached chunks", RunPrune},
    {"login", "Save credentials for a registry", RunLogin},
    {"logout", "Remove saved credentials for a registry", RunLogout},
    {"version", "Print the version", RunVersion},
    {"help", "Show help for imagefs or one command", RunHelp},
};

const Command* FindCommand(std::string_view name) {
  for (const Command& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "Usage: imagefs [--root DIR] [--log-level LEVEL] [--cache-size SIZE] [--insecure-registry HOST] "
               "[--cert-dir DIR] "
               "COMMAND [ARG...]\n\n"
               "A lazy-pulling container image filesystem.\n\nCommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\nImages are named as skopeo names them: docker://REF (the default), "
               "oci:DIR[:TAG], docker-archive:FILE.\n"
               "Run 'imagefs COMMAND --help' for more information on a command.\n");
}

int RunHelp(const GlobalOptions& global, const std::vector<std::string>& args) {
  if (args.empty()) {
    PrintUsage(stdout);
    return 0;
  }
  const Command* c = FindCommand(args[0]);
  if (c == nullptr || c->run == RunHelp) {
    if (c == nullptr) return Fail(Status::InvalidArgument("help: unknown command \"" + args[0] + "\""));
    PrintUsage(stdout);
    return 0;
  }
  return c->run(global, {"--help"});
}

std::string DefaultRoot() {
  std::string env = GetEnv("IMAGEFS_ROOT");
  if (!env.empty()) return env;
  if (::geteuid() == 0) return "/var/lib/imagefs";
  std::string data = GetEnv("XDG_DATA_HOME");
  if (data.empty()) data = HomeDir() + "/.local/share";
  return data + "/imagefs";
}

int Main(int argc, char** argv) {
  GlobalOptions global;
  global.root = DefaultRoot();
  if (std::string env = GetEnv("IMAGEFS_CACHE_SIZE"); !env.empty()) {
    auto size = ParseSize(env);
    if (!size.ok()) return Fail(size.status().WithContext("IMAGEFS_CACHE_SIZE"));
    global.cache_size = *size;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  size_t i = 0;
  auto value_of = [&](const std::string& flag, std::string* out) -> bool {
    std::string& a = args[i];
    if (a == flag) {
      if (i + 1 >= args.size()) return false;
      *out = args[++i];
      return true;
    }
    if (a.rfind(flag + "=", 0) == 0) {
      *out = a.substr(flag.size() + 1);
      return true;
    }
    return false;
  };
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.empty() || a[0] != '-') break;
    std::string v;
    if (a == "--version" || a == "-v") return RunVersion(global, {});
    if (a == "--help" || a == "-h") {
      PrintUsage(stdout);
      return 0;
    }
    if (value_of("--root", &v)) {
      global.root = v;
    } else if (value_of("--log-level", &v)) {
      auto level = ParseLogLevel(v);
      if (!level.ok()) return Fail(level.status());
      global.log_level = *level;
    } else if (value_of("--cache-size", &v)) {
      auto size = ParseSize(v);
      if (!size.ok()) return Fail(size.status().WithContext("--cache-size"));
      global.cache_size = *size;
    } else if (value_of("--cert-dir", &v)) {
      global.cert_dir = v;
    } else if (value_of("--insecure-registry", &v)) {
      global.insecure_registries.push_back(v);
    } else {
      std::fprintf(stderr, "imagefs: unknown flag \"%s\": see 'imagefs --help'\n", a.c_str());
      return 2;
    }
  }
  SetLogLevel(global.log_level);
  if (i >= args.size()) {
    PrintUsage(stderr);
    return 2;
  }
  std::string name = args[i];
  std::vector<std::string> rest(args.begin() + static_cast<long>(i) + 1, args.end());
  if (const Command* c = FindCommand(name)) return c->run(global, rest);

  std::string best;
  size_t best_d = 3;
  for (const Command& c : kCommands) {
    size_t d = EditDistance(name, c.name);
    if (d < best_d) {
      best_d = d;
      best = c.name;
    }
  }
  std::string msg = "unknown command \"" + name + "\"";
  if (!best.empty()) msg += ": did you mean \"" + best + "\"?";
  else msg += ": see 'imagefs help'";
  std::fprintf(stderr, "imagefs: %s\n", msg.c_str());
  return 2;
}

}  // namespace
}  // namespace imagefs::tools

int main(int argc, char** argv) { return imagefs::tools::Main(argc, argv); }
