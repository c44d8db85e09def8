// Docker's reference grammar and normalization (distribution/reference) over tables of edge
// cases: every accepted text with its exact parts, every refused text with its exact message.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fetch/reference.h"

namespace imagefs::fetch {
namespace reference_test {
namespace {

const std::string kDigest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
const std::string kSha512 = "sha512:" + std::string(128, 'a');

struct ValidCase {
  std::string text;
  std::string registry;
  std::string repository;
  std::string tag;
  std::string digest;
  std::string string;    // Reference::String()
  std::string familiar;  // Reference::Familiar()
};

TEST(ReferenceTest, ValidReferencesNormalizeLikeDocker) {
  const std::vector<ValidCase> cases = {
      // Docker Hub: default registry, library/ for one component, :latest by default.
      {"nginx", "docker.io", "library/nginx", "latest", "", "docker.io/library/nginx:latest", "nginx:latest"},
      {"nginx:1.25", "docker.io", "library/nginx", "1.25", "", "docker.io/library/nginx:1.25", "nginx:1.25"},
      {"library/nginx", "docker.io", "library/nginx", "latest", "", "docker.io/library/nginx:latest", "nginx:latest"},
      {"docker.io/nginx", "docker.io", "library/nginx", "latest", "", "docker.io/library/nginx:latest", "nginx:latest"},
      {"docker.io/library/nginx:1.25", "docker.io", "library/nginx", "1.25", "",
       "docker.io/library/nginx:1.25", "nginx:1.25"},
      {"index.docker.io/x", "docker.io", "library/x", "latest", "", "docker.io/library/x:latest", "x:latest"},
      {"index.docker.io/user/x:1", "docker.io", "user/x", "1", "", "docker.io/user/x:1", "user/x:1"},
      {"user/app:v1", "docker.io", "user/app", "v1", "", "docker.io/user/app:v1", "user/app:v1"},
      {"docker.io/library/a/b", "docker.io", "library/a/b", "latest", "", "docker.io/library/a/b:latest",
       "library/a/b:latest"},
      // Only index.docker.io is an alias: Docker keeps registry-1.docker.io as written.
      {"registry-1.docker.io/nginx", "registry-1.docker.io", "nginx", "latest", "",
       "registry-1.docker.io/nginx:latest", "registry-1.docker.io/nginx:latest"},
      // The first component is a registry only with '.', ':', "localhost" or an uppercase letter.
      {"myhost/x", "docker.io", "myhost/x", "latest", "", "docker.io/myhost/x:latest", "myhost/x:latest"},
      {"localhost/app", "localhost", "app", "latest", "", "localhost/app:latest", "localhost/app:latest"},
      {"localhost:5000/app", "localhost:5000", "app", "latest", "", "localhost:5000/app:latest",
       "localhost:5000/app:latest"},
      {"Foo/bar", "Foo", "bar", "latest", "", "Foo/bar:latest", "Foo/bar:latest"},
      // Without a '/', "localhost:5000" is the image "localhost" with tag "5000".
      {"localhost:5000", "docker.io", "library/localhost", "5000", "", "docker.io/library/localhost:5000",
       "localhost:5000"},
      {"localhost", "docker.io", "library/localhost", "latest", "", "docker.io/library/localhost:latest",
       "localhost:latest"},
      // Hosts, IPs, ports.
      {"127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t", "", "127.0.0.1:5000/a/b/c:t",
       "127.0.0.1:5000/a/b/c:t"},
      {"[::1]:5000/x", "[::1]:5000", "x", "latest", "", "[::1]:5000/x:latest", "[::1]:5000/x:latest"},
      {"[2001:db8::1]/x:t", "[2001:db8::1]", "x", "t", "", "[2001:db8::1]/x:t", "[2001:db8::1]/x:t"},
      {"host.io:5000/a:5000", "host.io:5000", "a", "5000", "", "host.io:5000/a:5000", "host.io:5000/a:5000"},
      {"my-registry.example:8080/a__b/c-d.e", "my-registry.example:8080", "a__b/c-d.e", "latest", "",
       "my-registry.example:8080/a__b/c-d.e:latest", "my-registry.example:8080/a__b/c-d.e:latest"},
      {"Registry.Example.COM/x", "Registry.Example.COM", "x", "latest", "", "Registry.Example.COM/x:latest",
       "Registry.Example.COM/x:latest"},
      // Path components and separators.
      {"a---b/c", "docker.io", "a---b/c", "latest", "", "docker.io/a---b/c:latest", "a---b/c:latest"},
      {"a_b__c-d/e.f", "docker.io", "a_b__c-d/e.f", "latest", "", "docker.io/a_b__c-d/e.f:latest",
       "a_b__c-d/e.f:latest"},
      {"quay.io/org/img:1.0-rc_2", "quay.io", "org/img", "1.0-rc_2", "", "quay.io/org/img:1.0-rc_2",
       "quay.io/org/img:1.0-rc_2"},
      // Tags: letters of any case, digits, '_', '.', '-'; first not '.' or '-'; up to 128.
      {"app:UPPER_tag", "docker.io", "library/app", "UPPER_tag", "", "docker.io/library/app:UPPER_tag",
       "app:UPPER_tag"},
      {"app:_x", "docker.io", "library/app", "_x", "", "docker.io/library/app:_x", "app:_x"},
      {"app:" + std::string(128, 't'), "docker.io", "library/app", std::string(128, 't'), "",
       "docker.io/library/app:" + std::string(128, 't'), "app:" + std::string(128, 't')},
      // Digests.
      {"quay.io/a/b@" + kDigest, "quay.io", "a/b", "", kDigest, "quay.io/a/b@" + kDigest,
       "quay.io/a/b@" + kDigest},
      {"nginx@" + kDigest, "docker.io", "library/nginx", "", kDigest, "docker.io/library/nginx@" + kDigest,
       "nginx@" + kDigest},
      {"nginx:1.25@" + kDigest, "docker.io", "library/nginx", "1.25", kDigest,
       "docker.io/library/nginx:1.25@" + kDigest, "nginx:1.25@" + kDigest},
      {"localhost:5000/x:t@" + kSha512, "localhost:5000", "x", "t", kSha512,
       "localhost:5000/x:t@" + kSha512, "localhost:5000/x:t@" + kSha512},
  };
  for (const ValidCase& c : cases) {
    SCOPED_TRACE(c.text);
    auto r = ParseReference(c.text);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->registry, c.registry);
    EXPECT_EQ(r->repository, c.repository);
    EXPECT_EQ(r->tag, c.tag);
    EXPECT_EQ(r->digest, c.digest);
    EXPECT_EQ(r->String(), c.string);
    EXPECT_EQ(r->Familiar(), c.familiar);
    EXPECT_EQ(r->Name(), c.registry + "/" + c.repository);
    // The normalized string parses back to the same reference.
    auto again = ParseReference(r->String());
    ASSERT_TRUE(again.ok()) << again.status().message();
    EXPECT_EQ(*again, *r);
  }
}

struct InvalidCase {
  std::string text;
  std::string message;
};

TEST(ReferenceTest, InvalidReferencesAreRefusedWithTheReason) {
  const std::string tag_rule =
      "\" may hold only letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-')";
  const std::string path_rule =
      "\" may hold only lowercase letters, digits and the separators '.', '_', '__' and '-' between them";
  const std::vector<InvalidCase> cases = {
      {"", "the name is empty"},
      {"Foo/Bar", "repository name must be lowercase"},
      {"UPPER", "repository name must be lowercase"},
      {"nginx/Foo:1", "repository name must be lowercase"},
      {"docker.io/Library/nginx", "repository name must be lowercase"},
      {"Tag_ok/x", "repository name must be lowercase"},
      {"nginx:", "the tag after ':' is empty"},
      {"localhost:5000/x:", "the tag after ':' is empty"},
      {"nginx:-bad", "tag \"-bad" + tag_rule},
      {"nginx:.bad", "tag \".bad" + tag_rule},
      {"nginx:a+b", "tag \"a+b" + tag_rule},
      {"nginx:" + std::string(129, 'a'), "tag \"" + std::string(129, 'a') + tag_rule},
      {"nginx@", "bad digest: digest \"\": missing algorithm prefix"},
      {"nginx@sha256:abc", "bad digest: digest \"sha256:abc\": expected 64 hex digits"},
      {"nginx@sha256:" + std::string(64, 'A'),
       "bad digest: digest \"sha256:" + std::string(64, 'A') + "\": not lowercase hex"},
      {"nginx@md5:abc", "bad digest: digest \"md5:abc\": unsupported algorithm \"md5\""},
      {"a//b", "a path component is empty"},
      {"a/b/", "a path component is empty"},
      {"/a", "a path component is empty"},
      {"-a/b", "path component \"-a" + path_rule},
      {"a_/b", "path component \"a_" + path_rule},
      {"a..b", "path component \"a..b" + path_rule},
      {"a___b", "path component \"a___b" + path_rule},
      {"a-_b", "path component \"a-_b" + path_rule},
      {"a:b:c", "path component \"a:b" + path_rule},
      {"loc alhost/x", "the name contains white space or control characters"},
      {"nginx\n", "the name contains white space or control characters"},
      {"localhost:/x", "\"localhost:\" is not a valid registry host[:port]"},
      {"-bad.host/x", "\"-bad.host\" is not a valid registry host[:port]"},
      {"host.io:port/x", "\"host.io:port\" is not a valid registry host[:port]"},
      {"a.io:5000:6000/x", "\"a.io:5000:6000\" is not a valid registry host[:port]"},
      {"[::1/x", "\"[::1\" is not a valid registry host[:port]"},
      {"[::g]:5000/x", "\"[::g]:5000\" is not a valid registry host[:port]"},
      {"[]/x", "path component \"[]" + path_rule},  // no '.' or ':': not a host
      {"localhost:5000/", "the repository name is empty"},
      {":tag", "the repository name is empty"},
      {"@" + kDigest, "the repository name is empty"},
      {"r.io/" + std::string(251, 'a'), "the repository name is longer than 255 characters"},
      // The limit applies after normalization: docker.io/library/ counts.
      {std::string(238, 'a'), "the repository name is longer than 255 characters"},
      {std::string(64, 'f'), "a 64-character hexadecimal string is an image ID, not a repository name"},
  };
  for (const InvalidCase& c : cases) {
    SCOPED_TRACE(c.text);
    auto r = ParseReference(c.text);
    ASSERT_FALSE(r.ok()) << "accepted as " << r->String();
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_EQ(r.status().message(), "invalid reference \"" + c.text + "\": " + c.message);
  }
}

TEST(ReferenceTest, UppercaseRepositoryMessageMatchesDocker) {
  auto r = ParseReference("Foo/Bar");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "invalid reference \"Foo/Bar\": repository name must be lowercase");
}

TEST(ReferenceTest, NameLengthLimitIsInclusiveAt255) {
  EXPECT_TRUE(ParseReference("r.io/" + std::string(250, 'a')).ok());   // 255
  EXPECT_FALSE(ParseReference("r.io/" + std::string(251, 'a')).ok());  // 256
  auto hub = ParseReference(std::string(237, 'a'));                    // docker.io/library/ + 237 = 255
  ASSERT_TRUE(hub.ok()) << hub.status().message();
  EXPECT_EQ(hub->Name().size(), 255u);
}

TEST(ReferenceTest, SingleNameGetsLibraryPrefixAndLatestTag) {
  auto r = ParseReference("busybox");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (Reference{"docker.io", "library/busybox", "latest", ""}));
}

TEST(ReferenceTest, TagOrDigestPrefersTheDigest) {
  auto tagged = ParseReference("nginx:1.25");
  auto both = ParseReference("nginx:1.25@" + kDigest);
  auto digest_only = ParseReference("nginx@" + kDigest);
  ASSERT_TRUE(tagged.ok() && both.ok() && digest_only.ok());
  EXPECT_EQ(tagged->TagOrDigest(), "1.25");
  EXPECT_EQ(both->TagOrDigest(), kDigest);
  EXPECT_EQ(both->tag, "1.25");  // kept for display
  EXPECT_EQ(digest_only->TagOrDigest(), kDigest);
  EXPECT_EQ(digest_only->tag, "");  // a digest reference gets no :latest
}

TEST(ReferenceTest, FamiliarStripsOnlyDockerHubAndOfficialLibrary) {
  EXPECT_EQ((Reference{"docker.io", "library/nginx", "1", ""}).Familiar(), "nginx:1");
  EXPECT_EQ((Reference{"docker.io", "user/nginx", "1", ""}).Familiar(), "user/nginx:1");
  EXPECT_EQ((Reference{"docker.io", "library/a/b", "1", ""}).Familiar(), "library/a/b:1");
  EXPECT_EQ((Reference{"quay.io", "library/nginx", "1", ""}).Familiar(), "quay.io/library/nginx:1");
  EXPECT_EQ((Reference{"docker.io", "library/nginx", "", kDigest}).Familiar(), "nginx@" + kDigest);
}

TEST(ReferenceTest, IsFullyQualifiedFollowsTheDomainRule) {
  struct Case {
    const char* text;
    bool qualified;
  };
  const Case cases[] = {
      {"localhost/x", true},   {"a.b/x", true},      {"host:5000/x", true}, {"[::1]/x", true},
      {"Foo/bar", true},       {"host/x", false},    {"nginx", false},      {"nginx:1.25", false},
      {"localhost", false},    {"a.b", false},       {"user/app:v1", false}, {"localhostx/y", false},
  };
  for (const Case& c : cases) EXPECT_EQ(IsFullyQualified(c.text), c.qualified) << c.text;
}

TEST(ReferenceTest, LooseParseKeepsWhatTheTextSaid) {
  struct Case {
    std::string text;
    std::string registry;
    std::string repository;
    std::string tag;
    std::string digest;
    bool has_registry;
    bool has_tag_or_digest;
  };
  const std::vector<Case> cases = {
      {"nginx", "", "nginx", "", "", false, false},
      {"user/app", "", "user/app", "", "", false, false},
      {"nginx:1.25", "", "nginx", "1.25", "", false, true},
      {"nginx@" + kDigest, "", "nginx", "", kDigest, false, true},
      {"docker.io/nginx", "docker.io", "nginx", "", "", true, false},
      {"index.docker.io/nginx", "index.docker.io", "nginx", "", "", true, false},
      {"localhost:5000/a:t", "localhost:5000", "a", "t", "", true, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto p = ParseReferenceLoose(c.text);
    ASSERT_TRUE(p.ok()) << p.status().message();
    EXPECT_EQ(p->ref.registry, c.registry);
    EXPECT_EQ(p->ref.repository, c.repository);
    EXPECT_EQ(p->ref.tag, c.tag);
    EXPECT_EQ(p->ref.digest, c.digest);
    EXPECT_EQ(p->has_registry, c.has_registry);
    EXPECT_EQ(p->has_tag_or_digest, c.has_tag_or_digest);
  }
  EXPECT_EQ(ParseReferenceLoose("Foo/Bar").status().message(),
            "invalid reference \"Foo/Bar\": repository name must be lowercase");
}

TEST(ReferenceTest, StringJoinsTagAndDigestWhenBothAreSet) {
  Reference r{"reg.io", "x", "t", kDigest};
  EXPECT_EQ(r.Name(), "reg.io/x");
  EXPECT_EQ(r.String(), "reg.io/x:t@" + kDigest);
  r.tag.clear();
  EXPECT_EQ(r.String(), "reg.io/x@" + kDigest);
  r.digest.clear();
  EXPECT_EQ(r.String(), "reg.io/x");
}

}  // namespace
}  // namespace reference_test
}  // namespace imagefs::fetch
