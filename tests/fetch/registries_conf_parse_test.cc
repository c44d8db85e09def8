// registries.conf v2: parsing, drop-in merging, short-name resolution and endpoints.

#include <gtest/gtest.h>
#include <stdlib.h>

#include "fetch/registries_conf.h"
#include "util/file.h"

namespace imagefs::fetch {
namespace registries_conf_parse_test {
namespace {

constexpr char kConf[] = R"(
unqualified-search-registries = ["registry.fedoraproject.org", "docker.io"]
short-name-mode = "permissive"

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"web" = "quay.io/org/nginx"

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror.example.com:5000"

[[registry.mirror]]
location = "mirror2.example.com/hub"
insecure = true

[[registry]]
location = "insecure.example:5000"
insecure = true

[[registry]]
prefix = "quay.io/org"
location = "internal.example/quay-org"

[[registry]]
prefix = "*.blocked.example"
blocked = true
)";

RegistriesConf Parse(const std::string& text) {
  auto c = ParseRegistriesConf(text, "test.conf");
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.ok() ? *c : RegistriesConf{};
}

Reference Ref(const std::string& text) {
  auto r = ParseReference(text);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return *r;
}

TEST(RegistriesConfParseTest, ParsesEveryV2Table) {
  RegistriesConf c = Parse(kConf);
  EXPECT_EQ(c.unqualified_search_registries,
            (std::vector<std::string>{"registry.fedoraproject.org", "docker.io"}));
  EXPECT_EQ(c.short_name_mode, "permissive");
  ASSERT_EQ(c.aliases.size(), 2u);
  ASSERT_EQ(c.registries.size(), 4u);
  EXPECT_EQ(c.registries[0].mirrors.size(), 2u);
  EXPECT_TRUE(c.registries[0].mirrors[1].insecure);
  EXPECT_EQ(c.registries[1].prefix, "insecure.example:5000");  // prefix defaults to location
  EXPECT_TRUE(c.registries[1].insecure);
  EXPECT_TRUE(c.registries[3].blocked);
}

TEST(RegistriesConfParseTest, MirrorsComeBeforeTheOriginInOrder) {
  RegistriesConf c = Parse(kConf);
  auto eps = EndpointsFor(c, Ref("nginx:1.25"), {});
  ASSERT_TRUE(eps.ok()) << eps.status().message();
  ASSERT_EQ(eps->size(), 3u);
  EXPECT_EQ((*eps)[0].host, "mirror.example.com:5000");
  EXPECT_EQ((*eps)[0].repository, "library/nginx");
  EXPECT_TRUE((*eps)[0].mirror);
  EXPECT_EQ((*eps)[1].host, "mirror2.example.com");
  EXPECT_EQ((*eps)[1].repository, "hub/library/nginx");
  EXPECT_TRUE((*eps)[1].insecure);
  EXPECT_EQ((*eps)[2].host, "registry-1.docker.io");  // Docker Hub's API host
  EXPECT_EQ((*eps)[2].repository, "library/nginx");
  EXPECT_FALSE((*eps)[2].mirror);
}

TEST(RegistriesConfParseTest, LocationRewritesTheLongestMatchingPrefix) {
  RegistriesConf c = Parse(kConf);
  auto eps = EndpointsFor(c, Ref("quay.io/org/nginx:1"), {});
  ASSERT_TRUE(eps.ok());
  ASSERT_EQ(eps->size(), 1u);
  EXPECT_EQ((*eps)[0].host, "internal.example");
  EXPECT_EQ((*eps)[0].repository, "quay-org/nginx");
  // "quay.io/orgx" does not match the prefix "quay.io/org".
  auto other = EndpointsFor(c, Ref("quay.io/orgx/nginx:1"), {});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ((*other)[0].host, "quay.io");
  EXPECT_EQ((*other)[0].repository, "orgx/nginx");
}

TEST(RegistriesConfParseTest, InsecureComesFromTheEntryOrTheFlag) {
  RegistriesConf c = Parse(kConf);
  EXPECT_TRUE((*EndpointsFor(c, Ref("insecure.example:5000/a"), {}))[0].insecure);
  EXPECT_FALSE((*EndpointsFor(c, Ref("other.example:5000/a"), {}))[0].insecure);
  EXPECT_TRUE((*EndpointsFor(c, Ref("other.example:5000/a"), {"other.example:5000"}))[0].insecure);
}

TEST(RegistriesConfParseTest, BlockedWildcardRefuses) {
  RegistriesConf c = Parse(kConf);
  auto eps = EndpointsFor(c, Ref("reg.blocked.example/a"), {});
  EXPECT_EQ(eps.status().code(), Code::kPermissionDenied);
  EXPECT_NE(eps.status().message().find("blocked in registries.conf"), std::string::npos);
  EXPECT_TRUE(EndpointsFor(c, Ref("blocked.example/a"), {}).ok());  // the bare domain is not a subdomain
}

TEST(RegistriesConfParseTest, ShortNamesUseAliasesThenSearchRegistries) {
  RegistriesConf c = Parse(kConf);
  auto fedora = ResolveShortName(c, "fedora:39");
  ASSERT_TRUE(fedora.ok());
  ASSERT_EQ(fedora->size(), 1u);
  EXPECT_EQ((*fedora)[0].String(), "registry.fedoraproject.org/fedora:39");
  auto web = ResolveShortName(c, "web");
  ASSERT_TRUE(web.ok());
  EXPECT_EQ((*web)[0].String(), "quay.io/org/nginx:latest");
  auto busybox = ResolveShortName(c, "busybox");
  ASSERT_TRUE(busybox.ok());
  ASSERT_EQ(busybox->size(), 2u);
  EXPECT_EQ((*busybox)[0].String(), "registry.fedoraproject.org/busybox:latest");
  EXPECT_EQ((*busybox)[1].String(), "docker.io/library/busybox:latest");
  auto qualified = ResolveShortName(c, "quay.io/x/y:1");
  ASSERT_TRUE(qualified.ok());
  ASSERT_EQ(qualified->size(), 1u);
  EXPECT_EQ((*qualified)[0].String(), "quay.io/x/y:1");
}

TEST(RegistriesConfParseTest, WithoutConfigurationDockersRuleHolds) {
  RegistriesConf empty;
  auto r = ResolveShortName(empty, "nginx");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].String(), "docker.io/library/nginx:latest");
}

TEST(RegistriesConfParseTest, DropInsOverrideKeysAndMergeRegistriesByPrefix) {
  RegistriesConf base = Parse(kConf);
  RegistriesConf over = Parse(R"(
unqualified-search-registries = ["quay.io"]
[aliases]
"web" = "ghcr.io/org/web"
[[registry]]
location = "insecure.example:5000"
insecure = false
[[registry]]
location = "new.example"
)");
  MergeRegistriesConf(base, over);
  EXPECT_EQ(base.unqualified_search_registries, std::vector<std::string>{"quay.io"});
  EXPECT_EQ((*ResolveShortName(base, "web"))[0].String(), "ghcr.io/org/web:latest");
  EXPECT_EQ(base.registries.size(), 5u);
  EXPECT_FALSE((*EndpointsFor(base, Ref("insecure.example:5000/a"), {}))[0].insecure);
}

TEST(RegistriesConfParseTest, BadFilesAreErrorsNamingTheFileAndLine) {
  auto syntax = ParseRegistriesConf("unqualified-search-registries = [\n", "/etc/x.conf");
  EXPECT_EQ(syntax.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(syntax.status().message().rfind("/etc/x.conf: line ", 0), 0u) << syntax.status().message();
  auto type = ParseRegistriesConf("[[registry]]\nlocation = 5\n", "x.conf");
  EXPECT_NE(type.status().message().find("\"location\" must be a string"), std::string::npos);
  auto v1 = ParseRegistriesConf("[registries.search]\nregistries = ['docker.io']\n", "v1.conf");
  EXPECT_EQ(v1.status().code(), Code::kUnsupported);
}

TEST(RegistriesConfParseTest, LoadHonoursContainersRegistriesConf) {
  auto dir = MakeTempDir("/tmp", "regconf-test-");
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(WriteFileAtomic(*dir + "/r.conf", "unqualified-search-registries = [\"a.io\"]\n").ok());
  ::setenv("CONTAINERS_REGISTRIES_CONF", (*dir + "/r.conf").c_str(), 1);
  auto c = LoadRegistriesConf();
  ::setenv("CONTAINERS_REGISTRIES_CONF", (*dir + "/missing.conf").c_str(), 1);
  auto missing = LoadRegistriesConf();
  ::unsetenv("CONTAINERS_REGISTRIES_CONF");
  (void)RemoveAll(*dir);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->unqualified_search_registries, std::vector<std::string>{"a.io"});
  EXPECT_TRUE(missing.status().IsNotFound());
}

}  // namespace
}  // namespace registries_conf_parse_test
}  // namespace imagefs::fetch
