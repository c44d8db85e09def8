// Docker's reference grammar and normalization (github.com/distribution/reference), written
// out by hand rather than with regular expressions:
//
//   reference  := name [ ":" tag ] [ "@" digest ]
//   name       := [ domain "/" ] path-comp ( "/" path-comp )*
//   domain     := host [ ":" port ]
//   host       := label ( "." label )* | "[" ipv6 "]"      label := [A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?
//   port       := [0-9]+
//   path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//   tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//   digest     := algorithm ":" hex    (checked by util/digest.h: sha256 or sha512, lowercase)
//
// Normalization (ParseNormalizedNamed): the text before the first '/' names a registry only if
// it contains '.' or ':', is "localhost", or holds an uppercase letter (Docker then treats it as
// a host and lets host validation judge it); otherwise the registry is docker.io.
// "index.docker.io" becomes "docker.io", and a docker.io name with one component gets
// "library/". The 255-character limit applies to the normalized "registry/repository".

#include "fetch/reference.h"

#include "util/digest.h"

namespace imagefs::fetch {
namespace {

constexpr std::string_view kLegacyDockerHub = "index.docker.io";
constexpr std::string_view kOfficialPrefix = "library/";
constexpr size_t kMaxNameLength = 255;
constexpr size_t kMaxTagLength = 128;

Status Invalid(std::string_view text, std::string_view why) {
  return Status::InvalidArgument("invalid reference \"" + std::string(text) + "\": " +
                                 std::string(why));
}

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlnum(char c) { return IsLowerAlnum(c) || IsUpper(c); }
bool IsHexDigit(char c) {
  return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool IsWordChar(char c) { return IsAlnum(c) || c == '_'; }

bool HasUpper(std::string_view s) {
  for (char c : s) {
    if (IsUpper(c)) return true;
  }
  return false;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (IsUpper(c)) c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// path-comp := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
bool ValidPathComponent(std::string_view comp) {
  if (comp.empty() || !IsLowerAlnum(comp.front()) || !IsLowerAlnum(comp.back())) return false;
  size_t i = 0;
  while (i < comp.size()) {
    if (IsLowerAlnum(comp[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < comp.size() && !IsLowerAlnum(comp[end])) ++end;
    std::string_view sep = comp.substr(i, end - i);
    bool dashes = sep.find_first_not_of('-') == std::string_view::npos;
    if (sep != "." && sep != "_" && sep != "__" && !dashes) return false;
    i = end;
  }
  return true;
}

// Every '/'-separated component of `path` is a valid path-comp.
bool ValidPath(std::string_view path) {
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    std::string_view comp = path.substr(start, slash == std::string_view::npos ? path.npos : slash - start);
    if (!ValidPathComponent(comp)) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool ValidLabel(std::string_view label) {
  if (label.empty() || !IsAlnum(label.front()) || !IsAlnum(label.back())) return false;
  for (char c : label) {
    if (!IsAlnum(c) && c != '-') return false;
  }
  return true;
}

bool ValidPort(std::string_view port) {
  if (port.empty()) return false;
  for (char c : port) {
    if (!IsDigit(c)) return false;
  }
  return true;
}

// domain := host [ ":" port ], host a DNS name, an IPv4 address or "[" IPv6 "]".
bool ValidDomain(std::string_view domain) {
  if (domain.empty()) return false;
  std::string_view host = domain;
  std::string_view rest;
  if (domain.front() == '[') {
    size_t close = domain.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (char c : domain.substr(1, close - 1)) {
      if (!IsHexDigit(c) && c != ':') return false;
    }
    rest = domain.substr(close + 1);
  } else {
    size_t colon = domain.find(':');
    if (colon != std::string_view::npos) {
      host = domain.substr(0, colon);
      rest = domain.substr(colon);
    }
    size_t start = 0;
    while (true) {
      size_t dot = host.find('.', start);
      if (!ValidLabel(host.substr(start, dot == std::string_view::npos ? host.npos : dot - start))) {
        return false;
      }
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
  }
  if (rest.empty()) return true;
  return rest.front() == ':' && ValidPort(rest.substr(1));
}

bool ValidTag(std::string_view tag) {
  if (tag.empty() || tag.size() > kMaxTagLength || !IsWordChar(tag.front())) return false;
  for (char c : tag) {
    if (!IsWordChar(c) && c != '.' && c != '-') return false;
  }
  return true;
}

// Docker refuses a bare 64-hex name: it would be mistaken for an image ID.
bool IsImageIdLike(std::string_view text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!IsDigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

// Does the text before the first '/' name a registry?
bool FirstComponentIsDomain(std::string_view first) {
  return first == "localhost" || first.find_first_of(".:") != std::string_view::npos ||
         HasUpper(first);
}

// Why `path` (the repository part) is not valid; Docker's wording for uppercase.
Status BadPath(std::string_view text, std::string_view path) {
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    std::string_view comp = path.substr(start, slash == std::string_view::npos ? path.npos : slash - start);
    if (comp.empty()) return Invalid(text, "a path component is empty");
    if (!ValidPathComponent(comp)) {
      if (ValidPathComponent(ToLower(comp))) {
        return Invalid(text, "repository name must be lowercase");
      }
      return Invalid(text, "path component \"" + std::string(comp) +
                               "\" may hold only lowercase letters, digits and the separators "
                               "'.', '_', '__' and '-' between them");
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return Status::Ok();
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
    bool official = repository.rfind(kOfficialPrefix, 0) == 0 &&
                    repository.find('/', kOfficialPrefix.size()) == std::string::npos;
    name = official ? repository.substr(kOfficialPrefix.size()) : repository;
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
  return slash != std::string_view::npos && FirstComponentIsDomain(text.substr(0, slash));
}

Result<ParsedName> ParseReferenceLoose(std::string_view text) {
  if (text.empty()) return Invalid(text, "the name is empty");
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return Invalid(text, "the name contains white space or control characters");
    }
  }
  if (IsImageIdLike(text)) {
    return Invalid(text, "a 64-character hexadecimal string is an image ID, not a repository name");
  }
  ParsedName out;
  std::string_view rest = text;

  // "@digest": nothing before it may contain '@'.
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    std::string_view digest = rest.substr(at + 1);
    auto parsed = Digest::Parse(digest);
    if (!parsed.ok()) return Invalid(text, "bad digest: " + parsed.status().message());
    out.ref.digest = std::string(digest);
    out.has_tag_or_digest = true;
    rest = rest.substr(0, at);
  }

  // ":tag": a ':' after the last '/' (a ':' before it belongs to the registry's port).
  size_t last_slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos && (last_slash == std::string_view::npos || colon > last_slash)) {
    std::string_view tag = rest.substr(colon + 1);
    if (tag.empty()) return Invalid(text, "the tag after ':' is empty");
    if (!ValidTag(tag)) {
      return Invalid(text, "tag \"" + std::string(tag) +
                               "\" may hold only letters, digits, '_', '.' and '-' (at most 128, "
                               "not starting with '.' or '-')");
    }
    out.ref.tag = std::string(tag);
    out.has_tag_or_digest = true;
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) return Invalid(text, "the repository name is empty");

  // "registry/".
  std::string_view path = rest;
  if (size_t slash = rest.find('/');
      slash != std::string_view::npos && FirstComponentIsDomain(rest.substr(0, slash))) {
    std::string_view domain = rest.substr(0, slash);
    path = rest.substr(slash + 1);
    if (!ValidDomain(domain)) {
      // Docker: a name whose lowercase form would be valid is reported as an uppercase problem.
      if (HasUpper(domain) && ValidPath(ToLower(rest))) {
        return Invalid(text, "repository name must be lowercase");
      }
      return Invalid(text, "\"" + std::string(domain) + "\" is not a valid registry host[:port]");
    }
    out.ref.registry = std::string(domain);
    out.has_registry = true;
  }
  if (path.empty()) return Invalid(text, "the repository name is empty");
  RETURN_IF_ERROR(BadPath(text, path));
  out.ref.repository = std::string(path);
  if (rest.size() > kMaxNameLength) {
    return Invalid(text, "the repository name is longer than 255 characters");
  }
  return out;
}

Result<Reference> ParseReference(std::string_view text) {
  ASSIGN_OR_RETURN(ParsedName parsed, ParseReferenceLoose(text));
  Reference ref = std::move(parsed.ref);
  if (!parsed.has_registry || ref.registry == kLegacyDockerHub) ref.registry = std::string(kDockerHub);
  if (ref.registry == kDockerHub && ref.repository.find('/') == std::string::npos) {
    ref.repository = std::string(kOfficialPrefix) + ref.repository;
  }
  if (ref.Name().size() > kMaxNameLength) {
    return Invalid(text, "the repository name is longer than 255 characters");
  }
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

}  // namespace imagefs::fetch
