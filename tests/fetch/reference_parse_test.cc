// Docker's reference rules over a table of edge cases (distribution/reference's normalize
// and grammar behaviour).

#include <gtest/gtest.h>

#include "fetch/reference.h"

namespace imagefs::fetch {
namespace reference_parse_test {
namespace {

struct Valid {
  const char* text;
  const char* registry;
  const char* repository;
  const char* tag;
  const char* digest;
  const char* familiar;
};

constexpr char kDigest[] = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

TEST(ReferenceParseTest, NormalizesLikeDocker) {
  const Valid cases[] = {
      {"nginx", "docker.io", "library/nginx", "latest", "", "nginx:latest"},
      {"nginx:1.25", "docker.io", "library/nginx", "1.25", "", "nginx:1.25"},
      {"user/app:v1", "docker.io", "user/app", "v1", "", "user/app:v1"},
      {"docker.io/nginx", "docker.io", "library/nginx", "latest", "", "nginx:latest"},
      {"docker.io/library/nginx", "docker.io", "library/nginx", "latest", "", "nginx:latest"},
      {"index.docker.io/library/nginx", "docker.io", "library/nginx", "latest", "", "nginx:latest"},
      {"localhost/app", "localhost", "app", "latest", "", "localhost/app:latest"},
      {"localhost:5000/app", "localhost:5000", "app", "latest", "", "localhost:5000/app:latest"},
      {"127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t", "", "127.0.0.1:5000/a/b/c:t"},
      {"quay.io/org/img:1.0-rc_2", "quay.io", "org/img", "1.0-rc_2", "", "quay.io/org/img:1.0-rc_2"},
      {"[::1]:5000/x", "[::1]:5000", "x", "latest", "", "[::1]:5000/x:latest"},
      {"my-registry:8080/a__b/c-d.e", "my-registry:8080", "a__b/c-d.e", "latest", "",
       "my-registry:8080/a__b/c-d.e:latest"},
      {"a---b/c", "docker.io", "a---b/c", "latest", "", "a---b/c:latest"},
  };
  for (const Valid& c : cases) {
    auto r = ParseReference(c.text);
    ASSERT_TRUE(r.ok()) << c.text << ": " << r.status().message();
    EXPECT_EQ(r->registry, c.registry) << c.text;
    EXPECT_EQ(r->repository, c.repository) << c.text;
    EXPECT_EQ(r->tag, c.tag) << c.text;
    EXPECT_EQ(r->digest, c.digest) << c.text;
    EXPECT_EQ(r->Familiar(), c.familiar) << c.text;
  }
}

TEST(ReferenceParseTest, UppercaseTagIsValidButUppercaseNameIsNot) {
  auto r = ParseReference("app:UPPER_tag");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tag, "UPPER_tag");
  auto bad = ParseReference("Tag_ok/x");
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "invalid reference \"Tag_ok/x\": repository name must be lowercase");
}

TEST(ReferenceParseTest, DigestReferencesResolveByDigest) {
  const std::string d = kDigest;
  auto by_digest = ParseReference("quay.io/a/b@" + d);
  ASSERT_TRUE(by_digest.ok()) << by_digest.status().message();
  EXPECT_EQ(by_digest->tag, "");
  EXPECT_EQ(by_digest->digest, d);
  EXPECT_EQ(by_digest->TagOrDigest(), d);
  EXPECT_EQ(by_digest->String(), "quay.io/a/b@" + d);

  auto both = ParseReference("nginx:1.25@" + d);
  ASSERT_TRUE(both.ok()) << both.status().message();
  EXPECT_EQ(both->tag, "1.25");
  EXPECT_EQ(both->TagOrDigest(), d);
  EXPECT_EQ(both->String(), "docker.io/library/nginx:1.25@" + d);
  EXPECT_EQ(both->Familiar(), "nginx:1.25@" + d);
}

TEST(ReferenceParseTest, FirstComponentIsARegistryOnlyWithDotColonOrLocalhost) {
  EXPECT_TRUE(IsFullyQualified("localhost/x"));
  EXPECT_TRUE(IsFullyQualified("a.b/x"));
  EXPECT_TRUE(IsFullyQualified("host:5000/x"));
  EXPECT_FALSE(IsFullyQualified("host/x"));
  EXPECT_FALSE(IsFullyQualified("nginx"));
  auto r = ParseReference("myhost/x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "docker.io");
  EXPECT_EQ(r->repository, "myhost/x");
}

TEST(ReferenceParseTest, LooseParseKeepsWhatTheTextSaid) {
  auto p = ParseReferenceLoose("nginx");
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->has_registry);
  EXPECT_FALSE(p->has_tag_or_digest);
  EXPECT_EQ(p->ref.repository, "nginx");
  auto q = ParseReferenceLoose("localhost:5000/a:t");
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(q->has_registry);
  EXPECT_TRUE(q->has_tag_or_digest);
}

TEST(ReferenceParseTest, RejectsMalformedNamesWithTheReason) {
  struct Bad {
    std::string text;
    const char* why;
  };
  const Bad cases[] = {
      {"", "the name is empty"},
      {"nginx:", "the tag after ':' is empty"},
      {"nginx:-bad", "tag \"-bad\""},
      {"nginx:.bad", "tag \".bad\""},
      {"nginx:" + std::string(129, 'a'), "at most 128"},
      {"nginx@sha256:abc", "bad digest"},
      {"nginx@md5:abc", "bad digest"},
      {"a//b", "a path component is empty"},
      {"a/b/", "a path component is empty"},
      {"-a/b", "may hold only lowercase"},
      {"a_/b", "may hold only lowercase"},
      {"a..b", "may hold only lowercase"},
      {"a___b", "may hold only lowercase"},
      {"loc alhost/x", "white space"},
      {"localhost:/x", "not a valid registry host"},
      {"-bad.host/x", "not a valid registry host"},
      {"localhost:5000/", "the repository name is empty"},
      {"r.io/" + std::string(260, 'a'), "longer than 255"},
  };
  for (const Bad& c : cases) {
    auto r = ParseReference(c.text);
    ASSERT_FALSE(r.ok()) << "accepted: " << c.text;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c.text;
    EXPECT_NE(r.status().message().find(c.why), std::string::npos)
        << c.text << " -> " << r.status().message();
    EXPECT_EQ(r.status().message().rfind("invalid reference \"", 0), 0u) << r.status().message();
  }
}

}  // namespace
}  // namespace reference_parse_test
}  // namespace imagefs::fetch
