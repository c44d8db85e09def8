// Docker's reference grammar (distribution/reference), written out by hand:
//   reference  := name [ ":" tag ] [ "@" digest ]
//   name       := [domain "/"] path-component ["/" path-component]*
//   domain     := host [":" port]    (a first component is a domain only if it is
//                                     "localhost" or contains '.' or ':')
//   path-comp  := [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
//   tag        := [\w][\w.-]{0,127}

#include "fetch/reference.h"

#include <cctype>

#include "util/digest.h"

namespace imagefs::fetch {
namespace {

constexpr std::string_view kDockerHub = "docker.io";
constexpr size_t kMaxNameLength = 255;

Status Invalid(std::string_view text, std::string_view why) {
  return Status::InvalidArgument("invalid reference \"" + std::string(text) + "\": " +
                                 std::string(why));
}

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// path-component := [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
bool ValidPathComponent(std::string_view c) {
  if (c.empty() || !IsLowerAlnum(c.front()) || !IsLowerAlnum(c.back())) return false;
  size_t i = 0;
  while (i < c.size()) {
    if (IsLowerAlnum(c[i])) {
      ++i;
      continue;
    }
    // A separator run: ".", "_", "__", or one or more "-".
    size_t j = i;
    while (j < c.size() && !IsLowerAlnum(c[j])) ++j;
    std::string_view sep = c.substr(i, j - i);
    bool ok = sep == "." || sep == "_" || sep == "__" ||
              sep.find_first_not_of('-') == std::string_view::npos;
    if (!ok) return false;
    i = j;
  }
  return true;
}

bool ValidDomain(std::string_view d) {
  if (d.empty()) return false;
  std::string_view host = d;
  std::string_view port;
  if (d.front() == '[') {  // IPv6 literal
    size_t close = d.find(']');
    if (close == std::string_view::npos) return false;
    for (char c : d.substr(1, close - 1)) {
      if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) return false;
    }
    std::string_view rest = d.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
      if (port.empty()) return false;
    }
  } else {
    size_t colon = d.rfind(':');
    if (colon != std::string_view::npos) {
      host = d.substr(0, colon);
      port = d.substr(colon + 1);
      if (port.empty()) return false;
    }
    if (host.empty()) return false;
    // Labels: [a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])? separated by '.'
    size_t start = 0;
    while (start <= host.size()) {
      size_t dot = host.find('.', start);
      std::string_view label = host.substr(start, dot == std::string_view::npos ? host.npos : dot - start);
      if (label.empty() || !std::isalnum(static_cast<unsigned char>(label.front())) ||
          !std::isalnum(static_cast<unsigned char>(label.back()))) {
        return false;
      }
      for (char c : label) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
      }
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
  }
  for (char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool ValidTag(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (!word(t.front())) return false;
  for (char c : t) {
    if (!word(c) && c != '.' && c != '-') return false;
  }
  return true;
}

bool LooksLikeDomain(std::string_view first) {
  return first == "localhost" || first.find('.') != std::string_view::npos ||
         first.find(':') != std::string_view::npos ||
         (!first.empty() && first.front() == '[');
}

}  // namespace

std::string Reference::Name() const { return registry + "/" + repository; }

std::string Reference::String() const {
  std::string s = Name();
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

std::string Reference::Familiar() const {
  std::string name;
  if (registry == kDockerHub) {
    name = repository.rfind("library/", 0) == 0 && repository.find('/', 8) == std::string::npos
               ? repository.substr(8)
               : repository;
  } else {
    name = Name();
  }
  if (!tag.empty()) name += ":" + tag;
  if (!digest.empty()) name += "@" + digest;
  return name;
}

std::string Reference::TagOrDigest() const { return digest.empty() ? tag : digest; }

bool IsFullyQualified(std::string_view text) {
  size_t slash = text.find('/');
  return slash != std::string_view::npos && LooksLikeDomain(text.substr(0, slash));
}

Result<ParsedName> ParseReferenceLoose(std::string_view text) {
  if (text.empty()) return Invalid(text, "the name is empty");
  if (text.find_first_of(" \t\n") != std::string_view::npos) {
    return Invalid(text, "the name contains white space");
  }
  ParsedName out;
  std::string_view rest = text;
  // Digest.
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    std::string_view digest = rest.substr(at + 1);
    auto parsed = Digest::Parse(digest);
    if (!parsed.ok()) return Invalid(text, "bad digest: " + parsed.status().message());
    out.ref.digest = std::string(digest);
    rest = rest.substr(0, at);
    out.has_tag_or_digest = true;
  }
  // Tag: a ':' after the last '/'.
  size_t last_slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    std::string_view tag = rest.substr(colon + 1);
    if (!ValidTag(tag)) {
      return Invalid(text, tag.empty() ? "the tag after ':' is empty"
                                       : "tag \"" + std::string(tag) +
                                             "\" may hold only letters, digits, '_', '.' and "
                                             "'-' (at most 128, not starting with '.' or '-')");
    }
    out.ref.tag = std::string(tag);
    rest = rest.substr(0, colon);
    out.has_tag_or_digest = true;
  }
  if (rest.empty()) return Invalid(text, "the repository name is empty");
  // Domain.
  std::string_view path = rest;
  size_t slash = rest.find('/');
  if (slash != std::string_view::npos && LooksLikeDomain(rest.substr(0, slash))) {
    std::string_view domain = rest.substr(0, slash);
    if (!ValidDomain(domain)) {
      return Invalid(text, "\"" + std::string(domain) + "\" is not a valid registry host[:port]");
    }
    out.ref.registry = std::string(domain);
    out.has_registry = true;
    path = rest.substr(slash + 1);
  }
  if (path.empty()) return Invalid(text, "the repository name is empty");
  // Path components.
  size_t start = 0;
  while (true) {
    size_t next = path.find('/', start);
    std::string_view comp = path.substr(start, next == std::string_view::npos ? path.npos : next - start);
    if (comp.empty()) return Invalid(text, "a path component is empty");
    if (!ValidPathComponent(comp)) {
      bool upper = false;
      for (char c : comp) upper |= std::isupper(static_cast<unsigned char>(c)) != 0;
      if (upper) return Invalid(text, "repository name must be lowercase");
      return Invalid(text, "\"" + std::string(comp) +
                               "\" may hold only lowercase letters, digits and the separators "
                               "'.', '_', '__' and '-' between them");
    }
    if (next == std::string_view::npos) break;
    start = next + 1;
  }
  out.ref.repository = std::string(path);
  std::string full = (out.has_registry ? out.ref.registry + "/" : std::string()) + out.ref.repository;
  if (full.size() > kMaxNameLength) {
    return Invalid(text, "the repository name is longer than 255 characters");
  }
  return out;
}

Result<Reference> ParseReference(std::string_view text) {
  ASSIGN_OR_RETURN(ParsedName parsed, ParseReferenceLoose(text));
  Reference ref = std::move(parsed.ref);
  if (!parsed.has_registry || ref.registry == "index.docker.io" ||
      ref.registry == "registry-1.docker.io") {
    ref.registry = std::string(kDockerHub);
  }
  if (ref.registry == kDockerHub && ref.repository.find('/') == std::string::npos) {
    ref.repository = "library/" + ref.repository;
  }
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

}  // namespace imagefs::fetch
