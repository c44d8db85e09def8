#pragma once

// containers-registries.conf(5), version 2, as podman and skopeo read it:
//   unqualified-search-registries = ["docker.io", "quay.io"]
//   short-name-mode = "permissive"
//   [aliases] "nginx" = "docker.io/library/nginx"
//   [[registry]] prefix = "...", location = "...", insecure = bool, blocked = bool
//   [[registry.mirror]] location = "...", insecure = bool
// Files: $CONTAINERS_REGISTRIES_CONF if set (then only that file, no drop-ins), else
// /etc/containers/registries.conf plus /etc/containers/registries.conf.d/*.conf in
// lexical order, later files overriding earlier keys (registries merged by prefix).

#include <optional>
#include <string>
#include <vector>

#include "fetch/reference.h"
#include "util/status.h"

namespace imagefs::fetch {

struct Mirror {
  std::string location;  // "mirror.example:5000/library"
  bool insecure = false;
};

struct RegistryEntry {
  std::string prefix;    // defaults to location when absent
  std::string location;  // host[:port][/namespace]
  bool insecure = false;
  bool blocked = false;
  std::vector<Mirror> mirrors;
};

struct RegistriesConf {
  std::vector<std::string> unqualified_search_registries;
  std::vector<std::pair<std::string, std::string>> aliases;  // short name -> full name
  std::vector<RegistryEntry> registries;
  std::string short_name_mode;  // "", "permissive", "enforcing", "disabled"
};

// Parses one file's text (TOML). `origin` names it in errors.
Result<RegistriesConf> ParseRegistriesConf(const std::string& text, const std::string& origin);
// Merges `over` into `base` as drop-ins do.
void MergeRegistriesConf(RegistriesConf& base, const RegistriesConf& over);
// Loads the configuration from the standard places (see above). Missing files are fine:
// the result is then empty and Docker's rules apply.
Result<RegistriesConf> LoadRegistriesConf();

// One place to fetch an image from: a mirror or the origin.
struct Endpoint {
  std::string host;       // "localhost:5000" (what goes in the URL)
  std::string repository; // repository at that endpoint (prefix rewritten for location/mirror)
  bool insecure = false;  // plain HTTP allowed / TLS verification off
  bool mirror = false;
};

// Resolves a short name (no registry in the text) to the fully-qualified candidates to try,
// in order, as podman does in permissive mode: an alias if one matches, else each
// unqualified-search registry, else Docker's docker.io rule. A qualified name gives itself.
Result<std::vector<Reference>> ResolveShortName(const RegistriesConf& conf, std::string_view text);

// The endpoints for a qualified reference: mirrors (in order) then the origin, with the
// longest matching [[registry]] prefix applied. Blocked registries give kPermissionDenied.
// `extra_insecure` lists hosts from --insecure-registry.
Result<std::vector<Endpoint>> EndpointsFor(const RegistriesConf& conf, const Reference& ref,
                                           const std::vector<std::string>& extra_insecure);

}  // namespace imagefs::fetch
