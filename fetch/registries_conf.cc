// registries.conf v2 (containers-registries.conf(5)), parsed with toml++.
//
// Debian ships toml++ as a shared library built with exceptions, so TOML_EXCEPTIONS cannot be
// switched off here without breaking the ABI; toml::parse_error is caught at the one call that
// throws it and becomes a Status. Every other toml++ accessor used below is non-throwing.

#include "fetch/registries_conf.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <toml++/toml.h>

#include "util/file.h"

namespace imagefs::fetch {
namespace {

constexpr char kDefaultConf[] = "/etc/containers/registries.conf";
constexpr char kDefaultDropinDir[] = "/etc/containers/registries.conf.d";
constexpr std::string_view kDockerHubApiHost = "registry-1.docker.io";

Status Bad(const std::string& origin, const std::string& why) {
  return Status::InvalidArgument(origin + ": " + why);
}

Result<std::string> OptString(const toml::table& t, const char* key, const std::string& origin) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return std::string();
  if (!n->is_string()) return Bad(origin, std::string("\"") + key + "\" must be a string");
  return std::string(n->value_or(std::string()));
}

Result<bool> OptBool(const toml::table& t, const char* key, const std::string& origin) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return false;
  if (!n->is_boolean()) return Bad(origin, std::string("\"") + key + "\" must be true or false");
  return n->value_or(false);
}

bool IsWildcard(std::string_view prefix) { return prefix.rfind("*.", 0) == 0; }

// A prefix or location as containers/image accepts it: no URL scheme, no trailing '/'.
Result<std::string> CleanLocation(std::string value, const std::string& what,
                                  const std::string& origin) {
  while (!value.empty() && value.back() == '/') value.pop_back();
  if (value.find("://") != std::string::npos) {
    return Bad(origin, what + " \"" + value + "\" must not carry a URL scheme (write host[:port][/namespace])");
  }
  return value;
}

// "host[:port]" of "host[:port]/rest..." (the text up to the first '/').
std::string_view HostOf(std::string_view name) { return name.substr(0, name.find('/')); }

// "host" of "host[:port]"; IPv6 literals keep their brackets.
std::string_view HostnameOf(std::string_view host_port) {
  if (!host_port.empty() && host_port.front() == '[') {
    size_t close = host_port.find(']');
    return close == std::string_view::npos ? host_port : host_port.substr(0, close + 1);
  }
  return host_port.substr(0, host_port.find(':'));
}

// How many leading characters of `key` ("host/repo:tag@digest") the [[registry]] prefix
// covers, or npos when it does not match. A plain prefix must be followed by a separator
// ('/', ':', '@') or the end. "*.example.com" matches any subdomain of example.com (not
// example.com itself) on any port and covers the whole "host[:port]".
size_t PrefixCoverage(std::string_view prefix, std::string_view key) {
  if (IsWildcard(prefix)) {
    std::string_view host = HostOf(key);
    std::string_view hostname = HostnameOf(host);
    std::string_view suffix = prefix.substr(1);  // ".example.com"
    if (hostname.size() > suffix.size() &&
        hostname.compare(hostname.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return host.size();
    }
    return std::string_view::npos;
  }
  if (key.substr(0, prefix.size()) != prefix) return std::string_view::npos;
  if (key.size() == prefix.size()) return prefix.size();
  char next = key[prefix.size()];
  return next == '/' || next == ':' || next == '@' ? prefix.size() : std::string_view::npos;
}

const RegistryEntry* FindEntry(const RegistriesConf& conf, std::string_view key) {
  const RegistryEntry* best = nullptr;
  for (const RegistryEntry& e : conf.registries) {
    if (PrefixCoverage(e.prefix, key) == std::string_view::npos) continue;
    if (best == nullptr || e.prefix.size() > best->prefix.size()) best = &e;
  }
  return best;
}

bool ListedInsecure(const std::vector<std::string>& list, std::string_view registry,
                    std::string_view api_host) {
  for (const std::string& item : list) {
    for (std::string_view host : {registry, api_host}) {
      if (item == host || item == HostnameOf(host)) return true;
    }
  }
  return false;
}

Status ParseAliases(const toml::table& t, const std::string& origin, RegistriesConf& conf) {
  for (const auto& [key, value] : t) {
    std::string name(key.str());
    if (!value.is_string()) return Bad(origin, "alias \"" + name + "\" must be a string");
    std::string target = value.value_or(std::string());
    auto short_name = ParseReferenceLoose(name);
    if (!short_name.ok() || short_name->has_registry || short_name->has_tag_or_digest ||
        name == "localhost") {
      return Bad(origin, "alias \"" + name +
                             "\" must be a short name: no registry, tag or digest");
    }
    if (!target.empty()) {
      auto full = ParseReferenceLoose(target);
      if (!full.ok() || !full->has_registry || full->has_tag_or_digest) {
        return Bad(origin, "alias \"" + name + "\" = \"" + target +
                               "\" must be a fully-qualified name without tag or digest");
      }
    }
    conf.aliases.emplace_back(std::move(name), std::move(target));
  }
  return Status::Ok();
}

Result<Mirror> ParseMirror(const toml::table& t, const std::string& origin,
                           const RegistryEntry& entry) {
  Mirror m;
  ASSIGN_OR_RETURN(std::string location, OptString(t, "location", origin));
  ASSIGN_OR_RETURN(m.location, CleanLocation(std::move(location), "mirror location", origin));
  ASSIGN_OR_RETURN(m.insecure, OptBool(t, "insecure", origin));
  ASSIGN_OR_RETURN(m.pull_from_mirror, OptString(t, "pull-from-mirror", origin));
  if (m.location.empty()) return Bad(origin, "a mirror of \"" + entry.prefix + "\" has no location");
  if (!m.pull_from_mirror.empty() && m.pull_from_mirror != "all" &&
      m.pull_from_mirror != "digest-only" && m.pull_from_mirror != "tag-only") {
    return Bad(origin, "pull-from-mirror \"" + m.pull_from_mirror + "\" of mirror \"" + m.location +
                           "\" must be \"all\", \"digest-only\" or \"tag-only\"");
  }
  if (entry.mirror_by_digest_only && !m.pull_from_mirror.empty()) {
    return Bad(origin, "\"" + entry.prefix + "\" sets both mirror-by-digest-only and "
                       "pull-from-mirror (on mirror \"" + m.location + "\")");
  }
  return m;
}

Result<RegistryEntry> ParseRegistry(const toml::table& t, const std::string& origin) {
  RegistryEntry e;
  ASSIGN_OR_RETURN(std::string prefix, OptString(t, "prefix", origin));
  ASSIGN_OR_RETURN(std::string location, OptString(t, "location", origin));
  ASSIGN_OR_RETURN(e.prefix, CleanLocation(std::move(prefix), "prefix", origin));
  ASSIGN_OR_RETURN(e.location, CleanLocation(std::move(location), "location", origin));
  ASSIGN_OR_RETURN(e.insecure, OptBool(t, "insecure", origin));
  ASSIGN_OR_RETURN(e.blocked, OptBool(t, "blocked", origin));
  ASSIGN_OR_RETURN(e.mirror_by_digest_only, OptBool(t, "mirror-by-digest-only", origin));
  if (e.prefix.empty()) e.prefix = e.location;
  if (e.prefix.empty()) return Bad(origin, "a [[registry]] has neither prefix nor location");
  if (IsWildcard(e.prefix)) {
    std::string_view domain = std::string_view(e.prefix).substr(2);
    if (domain.empty() || domain.find_first_of("/:*") != std::string_view::npos) {
      return Bad(origin, "wildcard prefix \"" + e.prefix +
                             "\" must be \"*.domain\" with no port, namespace or other '*'");
    }
  } else if (e.prefix.find('*') != std::string::npos) {
    return Bad(origin, "prefix \"" + e.prefix + "\": a wildcard is allowed only as a leading \"*.\"");
  }
  if (const toml::node* m = t.get("mirror")) {
    const toml::array* mirrors = m->as_array();
    if (mirrors == nullptr) return Bad(origin, "[[registry.mirror]] must be an array of tables");
    for (const toml::node& item : *mirrors) {
      const toml::table* mt = item.as_table();
      if (mt == nullptr) return Bad(origin, "[[registry.mirror]] entries must be tables");
      ASSIGN_OR_RETURN(Mirror mirror, ParseMirror(*mt, origin, e));
      e.mirrors.push_back(std::move(mirror));
    }
  }
  return e;
}

// The endpoint reached by putting `location` in place of the first `covered` characters of
// `key`. An empty location (a wildcard entry without one) leaves the reference as it is.
Result<Endpoint> RewrittenEndpoint(const Reference& ref, const std::string& key, size_t covered,
                                   const std::string& location) {
  Reference target = ref;
  if (!location.empty()) {
    std::string rewritten = location + key.substr(covered);
    auto parsed = ParseReference(rewritten);
    if (!parsed.ok()) {
      return Status::InvalidArgument("registries.conf: location \"" + location + "\" turns " +
                                     ref.String() + " into \"" + rewritten +
                                     "\", which is not a valid reference");
    }
    target = std::move(*parsed);
  }
  Endpoint ep;
  ep.host = target.registry == kDockerHub ? std::string(kDockerHubApiHost) : target.registry;
  ep.repository = target.repository;
  return ep;
}

}  // namespace

Result<RegistriesConf> ParseRegistriesConf(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return Bad(origin, "line " + std::to_string(e.source().begin.line) + ": " +
                           std::string(e.description()));
  } catch (const std::exception& e) {  // e.g. bad_alloc: nothing may escape
    return Bad(origin, e.what());
  }
  if (root.get("registries") != nullptr) {
    return Status::Unsupported(origin + ": version 1 registries.conf ([registries.search], "
                               "[registries.insecure], [registries.block]) is not supported: "
                               "convert it to version 2 (see containers-registries.conf(5))");
  }
  RegistriesConf conf;
  if (const toml::node* n = root.get("unqualified-search-registries")) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return Bad(origin, "unqualified-search-registries must be an array of strings");
    for (const toml::node& v : *arr) {
      if (!v.is_string()) return Bad(origin, "unqualified-search-registries must be an array of strings");
      ASSIGN_OR_RETURN(std::string reg, CleanLocation(v.value_or(std::string()),
                                                      "unqualified-search registry", origin));
      if (reg.empty()) return Bad(origin, "unqualified-search-registries holds an empty entry");
      conf.unqualified_search_registries.push_back(std::move(reg));
    }
    conf.unqualified_search_registries_set = true;
  }
  ASSIGN_OR_RETURN(conf.short_name_mode, OptString(root, "short-name-mode", origin));
  if (!conf.short_name_mode.empty() && conf.short_name_mode != "permissive" &&
      conf.short_name_mode != "enforcing" && conf.short_name_mode != "disabled") {
    return Bad(origin, "short-name-mode \"" + conf.short_name_mode +
                           "\" must be \"enforcing\", \"permissive\" or \"disabled\"");
  }
  if (const toml::node* n = root.get("aliases")) {
    const toml::table* t = n->as_table();
    if (t == nullptr) return Bad(origin, "[aliases] must be a table");
    RETURN_IF_ERROR(ParseAliases(*t, origin, conf));
  }
  if (const toml::node* n = root.get("registry")) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return Bad(origin, "[[registry]] must be an array of tables");
    for (const toml::node& item : *arr) {
      const toml::table* t = item.as_table();
      if (t == nullptr) return Bad(origin, "[[registry]] entries must be tables");
      ASSIGN_OR_RETURN(RegistryEntry e, ParseRegistry(*t, origin));
      conf.registries.push_back(std::move(e));
    }
  }
  return conf;
}

void MergeRegistriesConf(RegistriesConf& base, const RegistriesConf& over) {
  if (over.unqualified_search_registries_set || !over.unqualified_search_registries.empty()) {
    base.unqualified_search_registries = over.unqualified_search_registries;
    base.unqualified_search_registries_set = true;
  }
  if (!over.short_name_mode.empty()) base.short_name_mode = over.short_name_mode;
  for (const auto& [name, target] : over.aliases) {
    auto it = std::find_if(base.aliases.begin(), base.aliases.end(),
                           [&](const auto& a) { return a.first == name; });
    if (target.empty()) {
      if (it != base.aliases.end()) base.aliases.erase(it);
    } else if (it != base.aliases.end()) {
      it->second = target;
    } else {
      base.aliases.emplace_back(name, target);
    }
  }
  for (const RegistryEntry& e : over.registries) {
    auto it = std::find_if(base.registries.begin(), base.registries.end(),
                           [&](const RegistryEntry& b) { return b.prefix == e.prefix; });
    if (it != base.registries.end()) {
      *it = e;
    } else {
      base.registries.push_back(e);
    }
  }
}

Result<RegistriesConf> LoadRegistriesConfFrom(const std::string& main_file,
                                              const std::string& dropin_dir) {
  RegistriesConf conf;
  auto load = [&](const std::string& path) -> Status {
    if (!PathExists(path)) return Status::Ok();
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    ASSIGN_OR_RETURN(RegistriesConf one, ParseRegistriesConf(text, path));
    MergeRegistriesConf(conf, one);
    return Status::Ok();
  };
  if (!main_file.empty()) RETURN_IF_ERROR(load(main_file));
  if (dropin_dir.empty()) return conf;
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dropin_dir.c_str())) {
    while (struct dirent* entry = ::readdir(d)) {
      std::string name = entry->d_name;
      if (name.size() <= 5 || name.compare(name.size() - 5, 5, ".conf") != 0) continue;
      struct stat st {};
      if (::stat((dropin_dir + "/" + name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      names.push_back(std::move(name));
    }
    ::closedir(d);
  } else if (errno != ENOENT && errno != ENOTDIR) {
    return Status::FromErrno(errno, "reading " + dropin_dir);
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) RETURN_IF_ERROR(load(dropin_dir + "/" + name));
  return conf;
}

Result<RegistriesConf> LoadRegistriesConf() {
  std::string env = GetEnv("CONTAINERS_REGISTRIES_CONF");
  if (!env.empty()) {
    if (!PathExists(env)) {
      return Status::NotFound("CONTAINERS_REGISTRIES_CONF names " + env + ", which does not exist");
    }
    return LoadRegistriesConfFrom(env, "");
  }
  return LoadRegistriesConfFrom(kDefaultConf, kDefaultDropinDir);
}

Result<std::vector<Reference>> ResolveShortName(const RegistriesConf& conf, std::string_view text) {
  ASSIGN_OR_RETURN(ParsedName parsed, ParseReferenceLoose(text));
  if (parsed.has_registry) {
    ASSIGN_OR_RETURN(Reference r, ParseReference(text));
    return std::vector<Reference>{std::move(r)};
  }
  const Reference& user = parsed.ref;
  // The user's tag and digest go on whichever name the short name resolves to.
  auto qualify = [&](const std::string& name) -> Result<Reference> {
    std::string full = name;
    if (!user.tag.empty()) full += ":" + user.tag;
    if (!user.digest.empty()) full += "@" + user.digest;
    return ParseReference(full);
  };
  // Aliases are keyed by the name without tag or digest; a match ends the search.
  for (const auto& [alias, target] : conf.aliases) {
    if (alias == user.repository && !target.empty()) {
      ASSIGN_OR_RETURN(Reference r, qualify(target));
      return std::vector<Reference>{std::move(r)};
    }
  }
  std::vector<Reference> candidates;
  for (const std::string& registry : conf.unqualified_search_registries) {
    ASSIGN_OR_RETURN(Reference r, qualify(registry + "/" + user.repository));
    candidates.push_back(std::move(r));
  }
  if (candidates.empty()) {
    // Nothing configured: Docker's rule (docker.io, library/ for one component).
    ASSIGN_OR_RETURN(Reference r, ParseReference(text));
    candidates.push_back(std::move(r));
  }
  // Choice: podman in "enforcing" mode prompts on a terminal and fails without one. imagefs
  // never prompts (it often runs from scripts and mounts), so it behaves like podman without a
  // terminal: an ambiguous short name is refused rather than tried on every registry, which is
  // the squatting risk that mode exists to prevent. "permissive" (the default) and "disabled"
  // try every candidate in order.
  if (conf.short_name_mode == "enforcing" && candidates.size() > 1) {
    std::string names;
    for (const Reference& r : candidates) names += (names.empty() ? "" : ", ") + r.String();
    return Status::InvalidArgument(
        "short name \"" + std::string(text) + "\" is ambiguous (" + names +
        ") and short-name-mode is \"enforcing\": use a fully-qualified name or add an [aliases] "
        "entry in registries.conf");
  }
  return candidates;
}

Result<std::vector<Endpoint>> EndpointsFor(const RegistriesConf& conf, const Reference& ref,
                                           const std::vector<std::string>& extra_insecure) {
  // Prefixes may name a tag or digest, so they are matched against the whole reference.
  const std::string key = ref.String();
  const RegistryEntry* entry = FindEntry(conf, key);
  auto finish = [&](Endpoint ep, bool insecure, bool mirror) {
    std::string_view registry = ep.host == kDockerHubApiHost ? kDockerHub : std::string_view(ep.host);
    ep.insecure = insecure || ListedInsecure(extra_insecure, registry, ep.host);
    ep.mirror = mirror;
    return ep;
  };
  std::vector<Endpoint> out;
  if (entry == nullptr) {
    ASSIGN_OR_RETURN(Endpoint origin, RewrittenEndpoint(ref, key, 0, ""));
    out.push_back(finish(std::move(origin), false, false));
    return out;
  }
  if (entry->blocked) {
    return Status::PermissionDenied("registry " + ref.registry + " is blocked in registries.conf");
  }
  size_t covered = PrefixCoverage(entry->prefix, key);
  bool by_digest = !ref.digest.empty();
  for (const Mirror& m : entry->mirrors) {
    if (entry->mirror_by_digest_only && !by_digest) continue;
    if (m.pull_from_mirror == "digest-only" && !by_digest) continue;
    if (m.pull_from_mirror == "tag-only" && by_digest) continue;
    ASSIGN_OR_RETURN(Endpoint ep, RewrittenEndpoint(ref, key, covered, m.location));
    out.push_back(finish(std::move(ep), m.insecure, true));
  }
  ASSIGN_OR_RETURN(Endpoint origin, RewrittenEndpoint(ref, key, covered, entry->location));
  out.push_back(finish(std::move(origin), entry->insecure, false));
  return out;
}

}  // namespace imagefs::fetch
