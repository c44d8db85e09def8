#include "tools/command.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "util/file.h"

namespace imagefs::tools {

int Fail(const Status& status) {
  std::fprintf(stderr, "imagefs: %s\n", status.message().c_str());
  return 1;
}

int ParseCommandLine(CLI::App& app, const std::string& command,
                     const std::vector<std::string>& args) {
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "imagefs: %s: %s: see 'imagefs %s --help'\n", command.c_str(), e.what(),
                 command.c_str());
    return 2;
  }
  return -1;
}

Result<fetch::FetchOptions> MakeFetchOptions(const GlobalOptions& global,
                                             const std::string& platform) {
  fetch::FetchOptions options;
  ASSIGN_OR_RETURN(options.registries, fetch::LoadRegistriesConf());
  options.insecure_registries = global.insecure_registries;
  options.cert_dir = global.cert_dir;
  options.fetch_timeout = global.fetch_timeout;
  if (!platform.empty()) {
    ASSIGN_OR_RETURN(fetch::Platform p, fetch::Platform::Parse(platform));
    options.platform = p;
  }
  return options;
}

Result<OpenedImage> OpenImage(const GlobalOptions& global, const std::string& name,
                              const std::string& platform, bool with_config) {
  OpenedImage out;
  ASSIGN_OR_RETURN(out.ref, fetch::ParseImageRef(name));
  ASSIGN_OR_RETURN(out.options, MakeFetchOptions(global, platform));
  ASSIGN_OR_RETURN(out.source, fetch::OpenImageSource(out.ref, out.options));
  ASSIGN_OR_RETURN(out.image, with_config ? fetch::ResolveImage(*out.source, out.options)
                                          : fetch::ResolveManifest(*out.source, out.options));
  return out;
}

void LogPhase(const char* what) {
  if (GetLogLevel() > LogLevel::kInfo) return;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now).count();
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "%lld.%03lld", static_cast<long long>(ms / 1000),
                static_cast<long long>(ms % 1000));
  LOG(kInfo) << "phase " << what << " at " << stamp;
}

Result<std::unique_ptr<ScratchDir>> ScratchDir::Make(const GlobalOptions& global,
                                                     const std::string& prefix) {
  RETURN_IF_ERROR(MakeDirs(global.root + "/tmp", 0700));
  ASSIGN_OR_RETURN(std::string path, MakeTempDir(global.root + "/tmp", prefix));
  return std::unique_ptr<ScratchDir>(new ScratchDir(std::move(path)));
}

ScratchDir::~ScratchDir() { (void)RemoveAll(path_); }

std::string HumanSize(double bytes) {
  static const char* const kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  int unit = 0;
  while (bytes >= 1000.0 && unit < 5) {
    bytes /= 1000.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof buf, "%.0f%s", bytes, kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g%s", bytes, kUnits[unit]);
  }
  return buf;
}

}  // namespace imagefs::tools
