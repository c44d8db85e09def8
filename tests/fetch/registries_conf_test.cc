// containers-registries.conf(5) v2: parsing real-looking files, drop-in merging, prefix
// matching with location and mirror rewriting, wildcards, blocked and insecure registries,
// and short-name resolution.

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "fetch/registries_conf.h"
#include "util/file.h"

namespace imagefs::fetch {
namespace registries_conf_test {
namespace {

const std::string kDigest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

// Shaped like Fedora's /etc/containers/registries.conf plus a site's mirrors.
constexpr char kMainConf[] = R"(# For more information on this configuration file, see containers-registries.conf(5).
unqualified-search-registries = ["registry.fedoraproject.org", "registry.access.redhat.com", "docker.io"]
short-name-mode = "permissive"

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"web" = "quay.io/org/nginx"

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror.gcr.io"

[[registry.mirror]]
location = "hub-cache.internal:5000/dockerhub/"
insecure = true

[[registry]]
location = "registry.internal:5000"
insecure = true

[[registry]]
prefix = "example.com/foo"
location = "internal-registry-for-example.net/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true

[[registry]]
prefix = "example.com"
location = "example.net"

[[registry]]
prefix = "*.blocked.example"
blocked = true

[[registry]]
prefix = "quay.io/evil"
location = "quay.io/evil"
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
  return r.ok() ? *r : Reference{};
}

// "host/repository [mirror] [insecure]" per endpoint, so one comparison shows the whole list.
std::vector<std::string> Describe(const Result<std::vector<Endpoint>>& eps) {
  std::vector<std::string> out;
  if (!eps.ok()) {
    out.push_back("error: " + eps.status().message());
    return out;
  }
  for (const Endpoint& ep : *eps) {
    out.push_back(ep.host + "/" + ep.repository + (ep.mirror ? " mirror" : "") +
                  (ep.insecure ? " insecure" : ""));
  }
  return out;
}

std::vector<std::string> Strings(const Result<std::vector<Reference>>& refs) {
  std::vector<std::string> out;
  if (!refs.ok()) {
    out.push_back("error: " + refs.status().message());
    return out;
  }
  for (const Reference& r : *refs) out.push_back(r.String());
  return out;
}

using Strs = std::vector<std::string>;

// ---- parsing ----------------------------------------------------------------------------

TEST(RegistriesConfTest, ParsesEveryFieldOfARealLookingFile) {
  RegistriesConf c = Parse(kMainConf);
  EXPECT_EQ(c.unqualified_search_registries,
            (Strs{"registry.fedoraproject.org", "registry.access.redhat.com", "docker.io"}));
  EXPECT_TRUE(c.unqualified_search_registries_set);
  EXPECT_EQ(c.short_name_mode, "permissive");
  ASSERT_EQ(c.aliases.size(), 2u);
  EXPECT_EQ(c.aliases[0], (std::pair<std::string, std::string>{"fedora", "registry.fedoraproject.org/fedora"}));
  EXPECT_EQ(c.aliases[1], (std::pair<std::string, std::string>{"web", "quay.io/org/nginx"}));
  ASSERT_EQ(c.registries.size(), 6u);

  const RegistryEntry& hub = c.registries[0];
  EXPECT_EQ(hub.prefix, "docker.io");
  EXPECT_EQ(hub.location, "docker.io");
  EXPECT_FALSE(hub.insecure);
  EXPECT_FALSE(hub.blocked);
  ASSERT_EQ(hub.mirrors.size(), 2u);
  EXPECT_EQ(hub.mirrors[0].location, "mirror.gcr.io");
  EXPECT_FALSE(hub.mirrors[0].insecure);
  EXPECT_EQ(hub.mirrors[1].location, "hub-cache.internal:5000/dockerhub");  // trailing '/' dropped
  EXPECT_TRUE(hub.mirrors[1].insecure);

  EXPECT_EQ(c.registries[1].prefix, "registry.internal:5000");  // prefix defaults to location
  EXPECT_EQ(c.registries[1].location, "registry.internal:5000");
  EXPECT_TRUE(c.registries[1].insecure);
  EXPECT_EQ(c.registries[4].prefix, "*.blocked.example");
  EXPECT_EQ(c.registries[4].location, "");
  EXPECT_TRUE(c.registries[4].blocked);
}

TEST(RegistriesConfTest, EmptyFileGivesEmptyConfiguration) {
  RegistriesConf c = Parse("# nothing but comments\n");
  EXPECT_TRUE(c.unqualified_search_registries.empty());
  EXPECT_FALSE(c.unqualified_search_registries_set);
  EXPECT_TRUE(c.aliases.empty());
  EXPECT_TRUE(c.registries.empty());
  EXPECT_EQ(c.short_name_mode, "");
}

TEST(RegistriesConfTest, ParsesMirrorUsagePolicies) {
  RegistriesConf c = Parse(R"(
[[registry]]
location = "a.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.a.io"

[[registry]]
location = "b.io"
[[registry.mirror]]
location = "digest.b.io"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tag.b.io"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "all.b.io"
pull-from-mirror = "all"
)");
  ASSERT_EQ(c.registries.size(), 2u);
  EXPECT_TRUE(c.registries[0].mirror_by_digest_only);
  ASSERT_EQ(c.registries[1].mirrors.size(), 3u);
  EXPECT_EQ(c.registries[1].mirrors[0].pull_from_mirror, "digest-only");
  EXPECT_EQ(c.registries[1].mirrors[1].pull_from_mirror, "tag-only");
  EXPECT_EQ(c.registries[1].mirrors[2].pull_from_mirror, "all");
}

TEST(RegistriesConfTest, VersionOneFileIsUnsupported) {
  auto v1 = ParseRegistriesConf("[registries.search]\nregistries = ['docker.io']\n", "v1.conf");
  ASSERT_FALSE(v1.ok());
  EXPECT_EQ(v1.status().code(), Code::kUnsupported);
  EXPECT_EQ(v1.status().message(),
            "v1.conf: version 1 registries.conf ([registries.search], [registries.insecure], "
            "[registries.block]) is not supported: convert it to version 2 (see "
            "containers-registries.conf(5))");
}

TEST(RegistriesConfTest, SyntaxErrorNamesTheFileAndLine) {
  auto r = ParseRegistriesConf("short-name-mode = \"permissive\"\nunqualified-search-registries = [\n",
                               "/etc/x.conf");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message().rfind("/etc/x.conf: line ", 0), 0u) << r.status().message();
}

TEST(RegistriesConfTest, InvalidValuesAreErrorsNamingTheFile) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"short-name-mode = \"bogus\"",
       "short-name-mode \"bogus\" must be \"enforcing\", \"permissive\" or \"disabled\""},
      {"short-name-mode = 1", "\"short-name-mode\" must be a string"},
      {"unqualified-search-registries = \"docker.io\"",
       "unqualified-search-registries must be an array of strings"},
      {"unqualified-search-registries = [1]", "unqualified-search-registries must be an array of strings"},
      {"unqualified-search-registries = [\"\"]", "unqualified-search-registries holds an empty entry"},
      {"aliases = 1", "[aliases] must be a table"},
      {"[aliases]\n\"x\" = 1", "alias \"x\" must be a string"},
      {"[aliases]\n\"x\" = \"quay.io/x:1\"",
       "alias \"x\" = \"quay.io/x:1\" must be a fully-qualified name without tag or digest"},
      {"[aliases]\n\"x\" = \"x/y\"", "alias \"x\" = \"x/y\" must be a fully-qualified name without tag or digest"},
      {"[aliases]\n\"quay.io/x\" = \"quay.io/x\"",
       "alias \"quay.io/x\" must be a short name: no registry, tag or digest"},
      {"[aliases]\n\"x:1\" = \"quay.io/x\"", "alias \"x:1\" must be a short name: no registry, tag or digest"},
      {"[aliases]\n\"localhost\" = \"quay.io/x\"",
       "alias \"localhost\" must be a short name: no registry, tag or digest"},
      {"registry = 1", "[[registry]] must be an array of tables"},
      {"[[registry]]\ninsecure = true", "a [[registry]] has neither prefix nor location"},
      {"[[registry]]\nlocation = 5", "\"location\" must be a string"},
      {"[[registry]]\nlocation = \"a.io\"\ninsecure = \"yes\"", "\"insecure\" must be true or false"},
      {"[[registry]]\nlocation = \"https://a.io\"",
       "location \"https://a.io\" must not carry a URL scheme (write host[:port][/namespace])"},
      {"[[registry]]\nprefix = \"*.a.io/ns\"",
       "wildcard prefix \"*.a.io/ns\" must be \"*.domain\" with no port, namespace or other '*'"},
      {"[[registry]]\nprefix = \"*.a.io:5000\"",
       "wildcard prefix \"*.a.io:5000\" must be \"*.domain\" with no port, namespace or other '*'"},
      {"[[registry]]\nprefix = \"a.*.io\"", "prefix \"a.*.io\": a wildcard is allowed only as a leading \"*.\""},
      {"[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\ninsecure = true",
       "a mirror of \"a.io\" has no location"},
      {"[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"some\"",
       "pull-from-mirror \"some\" of mirror \"m.io\" must be \"all\", \"digest-only\" or \"tag-only\""},
      {"[[registry]]\nlocation = \"a.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\n"
       "location = \"m.io\"\npull-from-mirror = \"all\"",
       "\"a.io\" sets both mirror-by-digest-only and pull-from-mirror (on mirror \"m.io\")"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto r = ParseRegistriesConf(c.text + "\n", "bad.conf");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_EQ(r.status().message(), "bad.conf: " + c.message);
  }
}

// ---- loading and drop-ins ---------------------------------------------------------------

class RegistriesConfFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("/tmp", "regconf-test-");
    ASSERT_TRUE(d.ok()) << d.status().message();
    dir_ = *d;
  }
  void TearDown() override {
    ::unsetenv("CONTAINERS_REGISTRIES_CONF");
    (void)RemoveAll(dir_);
  }
  void Write(const std::string& rel, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/" + rel, text).ok());
  }
  std::string dir_;
};

TEST_F(RegistriesConfFilesTest, DropInsApplyInLexicalOrderAndMergeByKey) {
  Write("registries.conf", kMainConf);
  // Applied second (lexical order), so its search list and alias win over 05-first.conf.
  Write("registries.conf.d/10-second.conf", R"(
unqualified-search-registries = ["quay.io"]
[aliases]
"web" = "ghcr.io/org/web"
"fedora" = ""
)");
  Write("registries.conf.d/05-first.conf", R"(
unqualified-search-registries = ["first.example"]
short-name-mode = "enforcing"
[aliases]
"web" = "first.example/web"
"tool" = "quay.io/org/tool"
[[registry]]
location = "registry.internal:5000"
insecure = false
[[registry]]
location = "new.example"
)");
  Write("registries.conf.d/20-ignored.conf.bak", "this is not toml [");
  ASSERT_EQ(::mkdir((dir_ + "/registries.conf.d/30-dir.conf").c_str(), 0755), 0);

  auto c = LoadRegistriesConfFrom(dir_ + "/registries.conf", dir_ + "/registries.conf.d");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->unqualified_search_registries, Strs{"quay.io"});
  EXPECT_EQ(c->short_name_mode, "enforcing");
  // "fedora" was erased by an empty value; "web" replaced in place; "tool" appended.
  ASSERT_EQ(c->aliases.size(), 2u);
  EXPECT_EQ(c->aliases[0], (std::pair<std::string, std::string>{"web", "ghcr.io/org/web"}));
  EXPECT_EQ(c->aliases[1], (std::pair<std::string, std::string>{"tool", "quay.io/org/tool"}));
  // registry.internal:5000 replaced in place (no longer insecure), new.example appended.
  ASSERT_EQ(c->registries.size(), 7u);
  EXPECT_EQ(c->registries[1].prefix, "registry.internal:5000");
  EXPECT_FALSE(c->registries[1].insecure);
  EXPECT_EQ(c->registries[6].prefix, "new.example");
  EXPECT_EQ(Describe(EndpointsFor(*c, Ref("registry.internal:5000/a"), {})),
            Strs{"registry.internal:5000/a"});
}

TEST_F(RegistriesConfFilesTest, DropInWithEmptySearchListClearsIt) {
  Write("main.conf", "unqualified-search-registries = [\"a.io\", \"b.io\"]\n");
  Write("d/x.conf", "unqualified-search-registries = []\n");
  auto c = LoadRegistriesConfFrom(dir_ + "/main.conf", dir_ + "/d");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->unqualified_search_registries.empty());
  EXPECT_TRUE(c->unqualified_search_registries_set);
  // A drop-in that does not mention the key keeps the earlier list.
  Write("d/x.conf", "short-name-mode = \"disabled\"\n");
  c = LoadRegistriesConfFrom(dir_ + "/main.conf", dir_ + "/d");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->unqualified_search_registries, (Strs{"a.io", "b.io"}));
}

TEST_F(RegistriesConfFilesTest, MissingFilesAndDirectoryAreFine) {
  auto c = LoadRegistriesConfFrom(dir_ + "/none.conf", dir_ + "/none.d");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->registries.empty());
  EXPECT_TRUE(c->aliases.empty());
  // Only drop-ins, no main file.
  Write("only.d/a.conf", "unqualified-search-registries = [\"a.io\"]\n");
  c = LoadRegistriesConfFrom(dir_ + "/none.conf", dir_ + "/only.d");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->unqualified_search_registries, Strs{"a.io"});
}

TEST_F(RegistriesConfFilesTest, BrokenDropInIsAnErrorNamingIt) {
  Write("main.conf", "");
  Write("d/bad.conf", "[[registry]]\nlocation = 5\n");
  auto c = LoadRegistriesConfFrom(dir_ + "/main.conf", dir_ + "/d");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), dir_ + "/d/bad.conf: \"location\" must be a string");
}

TEST_F(RegistriesConfFilesTest, ContainersRegistriesConfNamesTheOnlyFileRead) {
  Write("r.conf", "unqualified-search-registries = [\"a.io\"]\n");
  ::setenv("CONTAINERS_REGISTRIES_CONF", (dir_ + "/r.conf").c_str(), 1);
  auto c = LoadRegistriesConf();
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->unqualified_search_registries, Strs{"a.io"});
  // No drop-ins from /etc/containers/registries.conf.d (which may hold aliases on this host).
  EXPECT_TRUE(c->aliases.empty());
  EXPECT_TRUE(c->registries.empty());
}

TEST_F(RegistriesConfFilesTest, MissingContainersRegistriesConfIsNotFound) {
  ::setenv("CONTAINERS_REGISTRIES_CONF", (dir_ + "/missing.conf").c_str(), 1);
  auto c = LoadRegistriesConf();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kNotFound);
  EXPECT_EQ(c.status().message(),
            "CONTAINERS_REGISTRIES_CONF names " + dir_ + "/missing.conf, which does not exist");
}

// ---- endpoints --------------------------------------------------------------------------

TEST(RegistriesConfTest, WithoutAnEntryTheOriginIsUsedAsIs) {
  RegistriesConf empty;
  EXPECT_EQ(Describe(EndpointsFor(empty, Ref("quay.io/a/b:1"), {})), Strs{"quay.io/a/b"});
  EXPECT_EQ(Describe(EndpointsFor(empty, Ref("localhost:5000/x"), {})), Strs{"localhost:5000/x"});
}

TEST(RegistriesConfTest, DockerHubOriginIsRegistry1WithLibraryKept) {
  RegistriesConf empty;
  EXPECT_EQ(Describe(EndpointsFor(empty, Ref("nginx"), {})), Strs{"registry-1.docker.io/library/nginx"});
  EXPECT_EQ(Describe(EndpointsFor(empty, Ref("user/app:1"), {})), Strs{"registry-1.docker.io/user/app"});
}

TEST(RegistriesConfTest, MirrorsComeFirstInOrderThenTheOrigin) {
  RegistriesConf c = Parse(kMainConf);
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("nginx:1.25"), {})),
            (Strs{"mirror.gcr.io/library/nginx mirror",
                  "hub-cache.internal:5000/dockerhub/library/nginx mirror insecure",
                  "registry-1.docker.io/library/nginx"}));
}

TEST(RegistriesConfTest, LocationAndMirrorsReplaceTheMatchedPrefix) {
  RegistriesConf c = Parse(kMainConf);
  // The man page's example: mirrors then the rewritten primary location.
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("example.com/foo/image:latest"), {})),
            (Strs{"example-mirror-0.local/mirror-for-foo/image mirror",
                  "example-mirror-1.local/mirrors/foo/image mirror insecure",
                  "internal-registry-for-example.net/bar/image"}));
  // Longest prefix wins: "example.com" covers the rest of the host.
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("example.com/other/image"), {})), Strs{"example.net/other/image"});
  // A prefix matches only at a separator: example.com/foobar is not under example.com/foo.
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("example.com/foobar/x"), {})), Strs{"example.net/foobar/x"});
  // example.com.evil is another host entirely.
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("example.com.evil/x"), {})), Strs{"example.com.evil/x"});
}

TEST(RegistriesConfTest, PrefixMayNameATagOrDigest) {
  RegistriesConf c = Parse(R"(
[[registry]]
prefix = "quay.io/org/app:1.0"
location = "pinned.example/app"
[[registry]]
prefix = "quay.io/org/app@)" + kDigest + R"("
location = "bydigest.example/app"
)");
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("quay.io/org/app:1.0"), {})), Strs{"pinned.example/app"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("quay.io/org/app:1.0.1"), {})), Strs{"quay.io/org/app"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("quay.io/org/app@" + kDigest), {})), Strs{"bydigest.example/app"});
}

TEST(RegistriesConfTest, LocationIntoDockerHubGetsLibraryNormalization) {
  RegistriesConf c = Parse(R"(
[[registry]]
prefix = "hub.internal"
location = "docker.io"
)");
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("hub.internal/nginx"), {})), Strs{"registry-1.docker.io/library/nginx"});
}

TEST(RegistriesConfTest, WildcardMatchesSubdomainsOnAnyPort) {
  RegistriesConf c = Parse(R"(
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry.mirror]]
location = "cache.local/example"

[[registry]]
prefix = "special.example.com"
location = "special.example.net"
)");
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("a.example.com/x/y:1"), {})),
            (Strs{"cache.local/example/x/y mirror", "a.example.com/x/y insecure"}));
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("b.a.example.com:5000/x"), {})),
            (Strs{"cache.local/example/x mirror", "b.a.example.com:5000/x insecure"}));
  // Not the bare domain, not a look-alike, and the longer exact prefix beats the wildcard.
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("example.com/x"), {})), Strs{"example.com/x"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("notexample.com/x"), {})), Strs{"notexample.com/x"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("special.example.com/x"), {})), Strs{"special.example.net/x"});
}

TEST(RegistriesConfTest, BlockedRegistriesAreRefused) {
  RegistriesConf c = Parse(kMainConf);
  auto wildcard = EndpointsFor(c, Ref("reg.blocked.example/a"), {});
  ASSERT_FALSE(wildcard.ok());
  EXPECT_EQ(wildcard.status().code(), Code::kPermissionDenied);
  EXPECT_EQ(wildcard.status().message(), "registry reg.blocked.example is blocked in registries.conf");
  auto ns = EndpointsFor(c, Ref("quay.io/evil/x:1"), {});
  EXPECT_EQ(ns.status().code(), Code::kPermissionDenied);
  EXPECT_EQ(ns.status().message(), "registry quay.io is blocked in registries.conf");
  // Only the blocked namespace, not the whole registry; not the wildcard's bare domain.
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("quay.io/good/x"), {})), Strs{"quay.io/good/x"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("blocked.example/a"), {})), Strs{"blocked.example/a"});
}

TEST(RegistriesConfTest, InsecureComesFromTheEntryTheMirrorOrTheFlag) {
  RegistriesConf c = Parse(kMainConf);
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("registry.internal:5000/a"), {})),
            Strs{"registry.internal:5000/a insecure"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("other.example:5000/a"), {})), Strs{"other.example:5000/a"});
  // "host:port" matches that port only; "host" matches any port.
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("other.example:5000/a"), {"other.example:5000"})),
            Strs{"other.example:5000/a insecure"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("other.example:5001/a"), {"other.example:5000"})),
            Strs{"other.example:5001/a"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("other.example:5001/a"), {"other.example"})),
            Strs{"other.example:5001/a insecure"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("[::1]:5000/a"), {"[::1]"})), Strs{"[::1]:5000/a insecure"});
  // The flag names endpoints, mirrors included.
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("nginx"), {"mirror.gcr.io"})),
            (Strs{"mirror.gcr.io/library/nginx mirror insecure",
                  "hub-cache.internal:5000/dockerhub/library/nginx mirror insecure",
                  "registry-1.docker.io/library/nginx"}));
}

TEST(RegistriesConfTest, MirrorUsagePoliciesFollowTagOrDigest) {
  RegistriesConf c = Parse(R"(
[[registry]]
location = "a.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.a.io"

[[registry]]
location = "b.io"
[[registry.mirror]]
location = "digest.b.io"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tag.b.io"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "all.b.io"
)");
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("a.io/x:1"), {})), Strs{"a.io/x"});
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("a.io/x@" + kDigest), {})), (Strs{"m.a.io/x mirror", "a.io/x"}));
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("b.io/x:1"), {})),
            (Strs{"tag.b.io/x mirror", "all.b.io/x mirror", "b.io/x"}));
  // A tag plus a digest counts as a digest reference.
  EXPECT_EQ(Describe(EndpointsFor(c, Ref("b.io/x:1@" + kDigest), {})),
            (Strs{"digest.b.io/x mirror", "all.b.io/x mirror", "b.io/x"}));
}

// ---- short names ------------------------------------------------------------------------

TEST(RegistriesConfTest, ShortNameAliasKeepsTheUsersTagOrDigest) {
  RegistriesConf c = Parse(kMainConf);
  EXPECT_EQ(Strings(ResolveShortName(c, "fedora:39")), Strs{"registry.fedoraproject.org/fedora:39"});
  EXPECT_EQ(Strings(ResolveShortName(c, "fedora")), Strs{"registry.fedoraproject.org/fedora:latest"});
  EXPECT_EQ(Strings(ResolveShortName(c, "web@" + kDigest)), Strs{"quay.io/org/nginx@" + kDigest});
  EXPECT_EQ(Strings(ResolveShortName(c, "web:1@" + kDigest)), Strs{"quay.io/org/nginx:1@" + kDigest});
}

TEST(RegistriesConfTest, ShortNameWithoutAliasTriesEverySearchRegistryInOrder) {
  RegistriesConf c = Parse(kMainConf);
  EXPECT_EQ(Strings(ResolveShortName(c, "busybox")),
            (Strs{"registry.fedoraproject.org/busybox:latest", "registry.access.redhat.com/busybox:latest",
                  "docker.io/library/busybox:latest"}));
  EXPECT_EQ(Strings(ResolveShortName(c, "user/app:2")),
            (Strs{"registry.fedoraproject.org/user/app:2", "registry.access.redhat.com/user/app:2",
                  "docker.io/user/app:2"}));
}

TEST(RegistriesConfTest, QualifiedNameResolvesToItselfAlone) {
  RegistriesConf c = Parse(kMainConf);
  EXPECT_EQ(Strings(ResolveShortName(c, "quay.io/x/y:1")), Strs{"quay.io/x/y:1"});
  EXPECT_EQ(Strings(ResolveShortName(c, "localhost/fedora")), Strs{"localhost/fedora:latest"});
  EXPECT_EQ(Strings(ResolveShortName(c, "docker.io/fedora")), Strs{"docker.io/library/fedora:latest"});
}

TEST(RegistriesConfTest, WithoutConfigurationDockersRuleHolds) {
  RegistriesConf empty;
  EXPECT_EQ(Strings(ResolveShortName(empty, "nginx")), Strs{"docker.io/library/nginx:latest"});
  EXPECT_EQ(Strings(ResolveShortName(empty, "user/app@" + kDigest)), Strs{"docker.io/user/app@" + kDigest});
}

TEST(RegistriesConfTest, EnforcingModeRefusesAnAmbiguousShortName) {
  RegistriesConf c = Parse(kMainConf);
  c.short_name_mode = "enforcing";
  auto r = ResolveShortName(c, "busybox:1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "short name \"busybox:1\" is ambiguous (registry.fedoraproject.org/busybox:1, "
            "registry.access.redhat.com/busybox:1, docker.io/library/busybox:1) and "
            "short-name-mode is \"enforcing\": use a fully-qualified name or add an [aliases] "
            "entry in registries.conf");
  // An alias or a single search registry is not ambiguous.
  EXPECT_EQ(Strings(ResolveShortName(c, "fedora")), Strs{"registry.fedoraproject.org/fedora:latest"});
  c.unqualified_search_registries = {"quay.io"};
  EXPECT_EQ(Strings(ResolveShortName(c, "busybox")), Strs{"quay.io/busybox:latest"});
}

TEST(RegistriesConfTest, DisabledModeTriesEveryCandidate) {
  RegistriesConf c = Parse(kMainConf);
  c.short_name_mode = "disabled";
  EXPECT_EQ(ResolveShortName(c, "busybox")->size(), 3u);
}

TEST(RegistriesConfTest, InvalidShortNameIsAnError) {
  RegistriesConf c = Parse(kMainConf);
  auto r = ResolveShortName(c, "Busybox");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "invalid reference \"Busybox\": repository name must be lowercase");
}

}  // namespace
}  // namespace registries_conf_test
}  // namespace imagefs::fetch
