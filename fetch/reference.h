#pragma once

// Image references with Docker's normalization (github.com/distribution/reference):
//   nginx                    -> docker.io/library/nginx:latest
//   user/app:1               -> docker.io/user/app:1
//   localhost:5000/app       -> localhost:5000/app:latest
//   quay.io/a/b@sha256:...   -> by digest
//   a/b:tag@sha256:...       -> by digest (the tag is kept for display only)
// A first component is a registry only if it is "localhost", contains '.' or ':', or (as
// Docker does) holds an uppercase letter, so "Foo/bar" names the host "Foo" and "Foo/Bar" fails
// with "repository name must be lowercase". Only "index.docker.io" is rewritten to "docker.io";
// "registry-1.docker.io/x" stays as written, as with Docker.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace imagefs::fetch {

// Docker Hub's canonical registry name.
inline constexpr std::string_view kDockerHub = "docker.io";

struct Reference {
  std::string registry;    // "docker.io", "localhost:5000", "[::1]:5000"
  std::string repository;  // "library/nginx"
  std::string tag;         // "" when the reference is digest-only
  std::string digest;      // "sha256:..." or ""

  // Fully qualified: "docker.io/library/nginx:1.25", "reg/x@sha256:...",
  // "reg/x:tag@sha256:..." when both are set.
  std::string String() const;
  // "registry/repository" without tag or digest.
  std::string Name() const;
  // Docker's short form: "nginx:1.25", "user/app:1", "localhost:5000/app:latest".
  std::string Familiar() const;
  // The tag or digest to ask the registry for: digest if set, else tag.
  std::string TagOrDigest() const;

  friend bool operator==(const Reference&, const Reference&) = default;
};

// True when the text names a registry-qualified image (its first component is a host).
bool IsFullyQualified(std::string_view text);

// Parses with Docker's rules. An empty tag and digest become ":latest".
// Errors (kInvalidArgument) name the input and the reason: uppercase repository,
// invalid characters, empty component, bad digest, too long (>255).
Result<Reference> ParseReference(std::string_view text);

// Parses without defaulting the tag or registry: used for short-name resolution.
// has_registry tells whether the text named one.
struct ParsedName {
  Reference ref;
  bool has_registry = false;
  bool has_tag_or_digest = false;
};
Result<ParsedName> ParseReferenceLoose(std::string_view text);

}  // namespace imagefs::fetch
