#pragma once

// containers-registries.conf(5), version 2, as podman and skopeo read it:
//   unqualified-search-registries = ["docker.io", "quay.io"]
//   short-name-mode = "permissive"
//   [aliases] "nginx" = "docker.io/library/nginx"
//   [[registry]] prefix = "...", location = "...", insecure = bool, blocked = bool,
//                mirror-by-digest-only = bool
//   [[registry.mirror]] location = "...", insecure = bool, pull-from-mirror = "all"|"digest-only"|"tag-only"
// A version 1 file ([registries.search] and friends) is refused with kUnsupported.
// Files: $CONTAINERS_REGISTRIES_CONF if set (then only that file, no drop-ins; a missing one
// is kNotFound since the user named it), else
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
  std::string pull_from_mirror;  // "" (= "all"), "all", "digest-only", "tag-only"
};

struct RegistryEntry {
  std::string prefix;    // defaults to location when absent
  std::string location;  // host[:port][/namespace]
  bool insecure = false;
  bool blocked = false;
  bool mirror_by_digest_only = false;  // mirrors only for references with a digest
  std::vector<Mirror> mirrors;
};

struct RegistriesConf {
  std::vector<std::string> unqualified_search_registries;
  // The file set the key (even to []), so a drop-in replaces the list rather than keeping it.
  bool unqualified_search_registries_set = false;
  // short name -> full name, neither with a tag or digest. An empty value (allowed only in a
  // parsed file, before merging) erases the alias of an earlier file.
  std::vector<std::pair<std::string, std::string>> aliases;
  std::vector<RegistryEntry> registries;
  std::string short_name_mode;  // "", "permissive", "enforcing", "disabled"
};

// Parses one file's text (TOML). `origin` names it in errors.
Result<RegistriesConf> ParseRegistriesConf(const std::string& text, const std::string& origin);
// Merges `over` into `base` as drop-ins do: keys set in `over` replace those of `base`, aliases
// merge by name (an empty value erases), [[registry]] tables merge by prefix.
void MergeRegistriesConf(RegistriesConf& base, const RegistriesConf& over);
// Loads the configuration from the standard places (see above). Missing files are fine:
// the result is then empty and Docker's rules apply.
Result<RegistriesConf> LoadRegistriesConf();
// The same from explicit places (tests, and LoadRegistriesConf itself): `main_file` then every
// `dropin_dir`/*.conf in lexical order. Missing files and a missing directory are fine.
Result<RegistriesConf> LoadRegistriesConfFrom(const std::string& main_file,
                                              const std::string& dropin_dir);

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
// The user's tag or digest is kept (":latest" when neither was given).
// short-name-mode "enforcing" with several candidates and no alias is an error
// (kInvalidArgument), as podman behaves without a terminal: imagefs never prompts.
Result<std::vector<Reference>> ResolveShortName(const RegistriesConf& conf, std::string_view text);

// The endpoints for a qualified reference: mirrors (in order) then the origin, with the
// longest matching [[registry]] prefix applied. Blocked registries give kPermissionDenied.
// Mirrors honour mirror-by-digest-only and pull-from-mirror. docker.io's origin endpoint is
// "registry-1.docker.io" (Docker Hub's API host).
// `extra_insecure` lists hosts from --insecure-registry: "host" matches that host on any port,
// "host:port" only that port.
Result<std::vector<Endpoint>> EndpointsFor(const RegistriesConf& conf, const Reference& ref,
                                           const std::vector<std::string>& extra_insecure);

}  // namespace imagefs::fetch
