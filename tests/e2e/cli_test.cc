// The imagefs binary's own surface: version, help, the subcommand table's suggestions, and
// usage errors. No registry needed.

#include <gtest/gtest.h>

#include "tests/e2e/imagefs_runner.h"

namespace imagefs::testing {
namespace {

TEST(CliTest, VersionPrintsTheVersion) {
  ProcessResult r = RunImagefs({"--version"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.stdout_text.rfind("imagefs version ", 0), 0u) << r.stdout_text;
  EXPECT_EQ(RunImagefs({"version"}).stdout_text, r.stdout_text);
}

TEST(CliTest, HelpListsEveryCommand) {
  ProcessResult r = RunImagefs({"help"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  for (const char* c : {"inspect", "pull", "login", "logout", "version", "help"}) {
    EXPECT_NE(r.stdout_text.find(std::string("  ") + c + " "), std::string::npos) << c;
  }
  ProcessResult one = RunImagefs({"help", "pull"});
  EXPECT_EQ(one.exit_code, 0) << one.Describe();
  EXPECT_NE(one.stdout_text.find("--platform"), std::string::npos) << one.stdout_text;
}

TEST(CliTest, MisspelledCommandGetsASuggestion) {
  ProcessResult r = RunImagefs({"pul", "x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.stderr_text, "imagefs: unknown command \"pul\": did you mean \"pull\"?\n");
  ProcessResult far = RunImagefs({"frobnicate"});
  EXPECT_EQ(far.exit_code, 2);
  EXPECT_NE(far.stderr_text.find("see 'imagefs help'"), std::string::npos) << far.stderr_text;
}

TEST(CliTest, MissingArgumentIsAOneLineUsageError) {
  ProcessResult r = RunImagefs({"inspect"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
  EXPECT_EQ(r.stderr_text.rfind("imagefs: inspect: ", 0), 0u) << r.stderr_text;
}

TEST(CliTest, BadReferencesAreRejectedWithTheReason) {
  struct Case {
    const char* image;
    const char* why;
  } cases[] = {
      {"Busybox", "repository name must be lowercase"},
      {"busybox:", "the tag after ':' is empty"},
      {"busybox@sha256:abc", "bad digest"},
      {"containers-storage:x", "not supported"},
  };
  for (const Case& c : cases) {
    ProcessResult r = RunImagefs({"inspect", c.image});
    EXPECT_EQ(r.exit_code, 1) << c.image;
    EXPECT_EQ(LineCount(r.stderr_text), 1) << r.stderr_text;
    EXPECT_NE(r.stderr_text.find(c.why), std::string::npos) << c.image << ": " << r.stderr_text;
  }
}

TEST(CliTest, UnknownGlobalFlagAndBadLogLevelFail) {
  EXPECT_EQ(RunImagefs({"--frob", "version"}).exit_code, 2);
  ProcessResult r = RunImagefs({"--log-level", "loud", "version"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.stderr_text.find("log level \"loud\""), std::string::npos) << r.stderr_text;
}

}  // namespace
}  // namespace imagefs::testing
