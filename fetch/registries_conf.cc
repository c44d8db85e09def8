// registries.conf v2, parsed with toml++ (Debian's shared build uses exceptions: they are
// caught right here and become Status values).

#include "fetch/registries_conf.h"

#include <dirent.h>

#include <algorithm>
#include <toml++/toml.h>

#include "util/file.h"

namespace imagefs::fetch {
namespace {

Status Bad(const std::string& origin, const std::string& why) {
  return Status::InvalidArgument(origin + ": " + why);
}

Result<std::string> OptString(const toml::table& t, const char* key, const std::string& origin) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return std::string();
  if (!n->is_string()) return Bad(origin, std::string("\"") + key + "\" must be a string");
  return std::string(*n->value<std::string>());
}

Result<bool> OptBool(const toml::table& t, const char* key, const std::string& origin) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return false;
  if (!n->is_boolean()) return Bad(origin, std::string("\"") + key + "\" must be true or false");
  return *n->value<bool>();
}

// "host" of a location or prefix: "a.io:5000/ns" -> "a.io:5000".
std::string HostPart(const std::string& s) { return s.substr(0, s.find('/')); }

// Does a [[registry]] prefix match a reference name "host/repo"?
// Returns the matched length (0 = no match). "*.example.com" matches subdomains.
size_t PrefixMatch(const std::string& prefix, const std::string& name) {
  if (prefix.rfind("*.", 0) == 0) {
    std::string host = HostPart(name);
    std::string suffix = prefix.substr(1);  // ".example.com"
    if (host.size() > suffix.size() && host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return prefix.size();
    }
    return 0;
  }
  if (name.rfind(prefix, 0) != 0) return 0;
  if (name.size() == prefix.size()) return prefix.size();
  char next = name[prefix.size()];
  return next == '/' || next == ':' || next == '@' ? prefix.size() : 0;
}

bool InList(const std::vector<std::string>& list, const std::string& host) {
  return std::find(list.begin(), list.end(), host) != list.end();
}

}  // namespace

Result<RegistriesConf> ParseRegistriesConf(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return Bad(origin, "line " + std::to_string(where.line) + ": " + std::string(e.description()));
  }
  RegistriesConf conf;
  if (const toml::node* reg = root.get("registries"); reg != nullptr && reg->is_table()) {
    return Status::Unsupported(origin + ": version 1 registries.conf ([registries.search]) is not "
                               "supported: convert it to version 2 (containers-registries.conf(5))");
  }
  if (const toml::node* n = root.get("unqualified-search-registries")) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return Bad(origin, "unqualified-search-registries must be an array");
    for (const toml::node& v : *arr) {
      if (!v.is_string()) return Bad(origin, "unqualified-search-registries must hold strings");
      conf.unqualified_search_registries.push_back(*v.value<std::string>());
    }
  }
  ASSIGN_OR_RETURN(conf.short_name_mode, OptString(root, "short-name-mode", origin));
  if (const toml::node* n = root.get("aliases")) {
    const toml::table* t = n->as_table();
    if (t == nullptr) return Bad(origin, "[aliases] must be a table");
    for (const auto& [k, v] : *t) {
      if (!v.is_string()) return Bad(origin, "alias \"" + std::string(k.str()) + "\" must be a string");
      conf.aliases.emplace_back(std::string(k.str()), *v.value<std::string>());
    }
  }
  if (const toml::node* n = root.get("registry")) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return Bad(origin, "[[registry]] must be an array of tables");
    for (const toml::node& item : *arr) {
      const toml::table* t = item.as_table();
      if (t == nullptr) return Bad(origin, "[[registry]] entries must be tables");
      RegistryEntry e;
      ASSIGN_OR_RETURN(e.prefix, OptString(*t, "prefix", origin));
      ASSIGN_OR_RETURN(e.location, OptString(*t, "location", origin));
      ASSIGN_OR_RETURN(e.insecure, OptBool(*t, "insecure", origin));
      ASSIGN_OR_RETURN(e.blocked, OptBool(*t, "blocked", origin));
      if (e.prefix.empty()) e.prefix = e.location;
      if (e.prefix.empty()) return Bad(origin, "a [[registry]] has neither prefix nor location");
      if (const toml::node* m = t->get("mirror")) {
        const toml::array* mirrors = m->as_array();
        if (mirrors == nullptr) return Bad(origin, "[[registry.mirror]] must be an array of tables");
        for (const toml::node& mi : *mirrors) {
          const toml::table* mt = mi.as_table();
          if (mt == nullptr) return Bad(origin, "[[registry.mirror]] entries must be tables");
          Mirror mirror;
          ASSIGN_OR_RETURN(mirror.location, OptString(*mt, "location", origin));
          ASSIGN_OR_RETURN(mirror.insecure, OptBool(*mt, "insecure", origin));
          if (mirror.location.empty()) return Bad(origin, "a mirror has no location");
          e.mirrors.push_back(std::move(mirror));
        }
      }
      conf.registries.push_back(std::move(e));
    }
  }
  return conf;
}

void MergeRegistriesConf(RegistriesConf& base, const RegistriesConf& over) {
  if (!over.unqualified_search_registries.empty()) {
    base.unqualified_search_registries = over.unqualified_search_registries;
  }
  if (!over.short_name_mode.empty()) base.short_name_mode = over.short_name_mode;
  for (const auto& [k, v] : over.aliases) {
    auto it = std::find_if(base.aliases.begin(), base.aliases.end(),
                           [&](const auto& a) { return a.first == k; });
    if (it != base.aliases.end()) {
      it->second = v;
    } else {
      base.aliases.emplace_back(k, v);
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

Result<RegistriesConf> LoadRegistriesConf() {
  RegistriesConf conf;
  auto load = [&](const std::string& path) -> Status {
    if (!PathExists(path)) return Status::Ok();
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    ASSIGN_OR_RETURN(RegistriesConf one, ParseRegistriesConf(text, path));
    MergeRegistriesConf(conf, one);
    return Status::Ok();
  };
  std::string env = GetEnv("CONTAINERS_REGISTRIES_CONF");
  if (!env.empty()) {
    if (!PathExists(env)) {
      return Status::NotFound("CONTAINERS_REGISTRIES_CONF names " + env + ", which does not exist");
    }
    RETURN_IF_ERROR(load(env));
    return conf;
  }
  RETURN_IF_ERROR(load("/etc/containers/registries.conf"));
  std::string dropins = "/etc/containers/registries.conf.d";
  if (DIR* d = ::opendir(dropins.c_str())) {
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 5 && n.compare(n.size() - 5, 5, ".conf") == 0) names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) RETURN_IF_ERROR(load(dropins + "/" + n));
  }
  return conf;
}

Result<std::vector<Reference>> ResolveShortName(const RegistriesConf& conf, std::string_view text) {
  ASSIGN_OR_RETURN(ParsedName parsed, ParseReferenceLoose(text));
  if (parsed.has_registry) {
    ASSIGN_OR_RETURN(Reference r, ParseReference(text));
    return std::vector<Reference>{r};
  }
  const Reference& loose = parsed.ref;
  auto with_tag = [&](std::string name) -> Result<Reference> {
    if (!loose.tag.empty()) name += ":" + loose.tag;
    if (!loose.digest.empty()) name += "@" + loose.digest;
    return ParseReference(name);
  };
  // Aliases match the name without tag or digest.
  for (const auto& [alias, target] : conf.aliases) {
    if (alias == loose.repository) {
      ASSIGN_OR_RETURN(Reference r, with_tag(target));
      return std::vector<Reference>{r};
    }
  }
  std::vector<Reference> out;
  // Permissive mode: every search registry in order. In "enforcing" mode podman would ask on
  // a TTY when several match; imagefs has no prompt and tries them in order as well.
  for (const auto& reg : conf.unqualified_search_registries) {
    ASSIGN_OR_RETURN(Reference r, with_tag(reg + "/" + loose.repository));
    out.push_back(std::move(r));
  }
  if (out.empty()) {
    ASSIGN_OR_RETURN(Reference r, ParseReference(text));
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<Endpoint>> EndpointsFor(const RegistriesConf& conf, const Reference& ref,
                                           const std::vector<std::string>& extra_insecure) {
  std::string name = ref.Name();
  const RegistryEntry* best = nullptr;
  size_t best_len = 0;
  for (const RegistryEntry& e : conf.registries) {
    size_t n = PrefixMatch(e.prefix, name);
    if (n > best_len) {
      best = &e;
      best_len = n;
    }
  }
  auto endpoint_for = [&](const std::string& location, bool insecure, bool mirror) {
    // Replace the matched prefix of "host/repo" with the location.
    std::string rewritten = name;
    if (best != nullptr && best->prefix.rfind("*.", 0) != 0 && !location.empty()) {
      rewritten = location + name.substr(best->prefix.size());
    } else if (best != nullptr && !location.empty() && location != best->prefix) {
      rewritten = location + name.substr(HostPart(name).size());
    }
    Endpoint ep;
    ep.host = HostPart(rewritten);
    ep.repository = rewritten.size() > ep.host.size() ? rewritten.substr(ep.host.size() + 1) : "";
    ep.insecure = insecure || InList(extra_insecure, ep.host);
    ep.mirror = mirror;
    if (ep.host == "docker.io" || ep.host == "index.docker.io") ep.host = "registry-1.docker.io";
    return ep;
  };
  std::vector<Endpoint> out;
  if (best != nullptr) {
    if (best->blocked) {
      return Status::PermissionDenied("registry " + ref.registry +
                                      " is blocked in registries.conf (prefix \"" + best->prefix + "\")");
    }
    for (const Mirror& m : best->mirrors) out.push_back(endpoint_for(m.location, m.insecure, true));
    out.push_back(endpoint_for(best->location.empty() ? best->prefix : best->location,
                               best->insecure, false));
  } else {
    out.push_back(endpoint_for("", false, false));
  }
  return out;
}

}  // namespace imagefs::fetch
