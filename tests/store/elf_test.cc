// The ELF dependency reader: built files, the host's own binaries against readelf, and
// truncated / corrupted files (never a crash, never a read outside the file).

#include "store/elf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "tests/index/index_test_util.h"
#include "tests/store/elf_test_util.h"
#include "util/file.h"

namespace imagefs::store {
namespace elf_test {
namespace {

using test::BuildElf;
using test::ElfSpec;

// Reads from bytes, failing the test on any read outside them.
Result<ElfDeps> ParseBytes(const std::string& bytes) {
  return ReadElfDeps(
      [&](uint64_t offset, std::span<uint8_t> out) -> Result<size_t> {
        EXPECT_LE(offset, bytes.size());
        EXPECT_LE(out.size(), bytes.size() - std::min<uint64_t>(offset, bytes.size()));
        if (offset >= bytes.size()) return size_t{0};
        const size_t n = std::min<uint64_t>(out.size(), bytes.size() - offset);
        std::memcpy(out.data(), bytes.data() + offset, n);
        return n;
      },
      bytes.size());
}

TEST(ElfDepsTest, ReadsInterpreterNeededAndRunpath) {
  for (bool is64 : {true, false}) {
    ElfSpec spec;
    spec.is64 = is64;
    spec.interp = "/lib64/ld-linux-x86-64.so.2";
    spec.needed = {"libfoo.so.1", "libc.so.6"};
    spec.runpath = "$ORIGIN/../lib:/opt/lib";
    auto deps = ParseBytes(BuildElf(spec));
    ASSERT_TRUE(deps.ok()) << deps.status().message();
    EXPECT_EQ(deps->is64, is64);
    EXPECT_EQ(deps->machine, EM_X86_64);
    EXPECT_EQ(deps->interp, spec.interp);
    EXPECT_EQ(deps->needed, spec.needed);
    EXPECT_EQ(deps->runpath, (std::vector<std::string>{"$ORIGIN/../lib", "/opt/lib"}));
  }
}

TEST(ElfDepsTest, RpathCountsWhenThereIsNoRunpath) {
  ElfSpec spec;
  spec.needed = {"liba.so"};
  spec.runpath = "/x";
  spec.use_rpath = true;
  auto deps = ParseBytes(BuildElf(spec));
  ASSERT_TRUE(deps.ok());
  EXPECT_EQ(deps->runpath, std::vector<std::string>{"/x"});
  EXPECT_TRUE(deps->interp.empty());
}

TEST(ElfDepsTest, StaticFileHasNoDependencies) {
  auto deps = ParseBytes(BuildElf(ElfSpec{}));
  ASSERT_TRUE(deps.ok());
  EXPECT_TRUE(deps->interp.empty());
  EXPECT_TRUE(deps->needed.empty());
}

TEST(ElfDepsTest, NotElf) {
  EXPECT_FALSE(ParseBytes("#!/bin/sh\necho hi\n").ok());
  EXPECT_FALSE(ParseBytes("").ok());
  EXPECT_FALSE(ParseBytes("\x7f" "EL").ok());
  EXPECT_FALSE(LooksLikeElf(std::span<const uint8_t>()));
}

TEST(ElfDepsTest, ShebangInterpreter) {
  auto head = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  EXPECT_EQ(ShebangInterpreter(head("#!/bin/sh\necho\n")), "/bin/sh");
  EXPECT_EQ(ShebangInterpreter(head("#! /usr/bin/env python3 -u\n")), "/usr/bin/env");
  EXPECT_EQ(ShebangInterpreter(head("#!/bin/bash\r\n")), "/bin/bash");
  EXPECT_EQ(ShebangInterpreter(head("#!")), "");
  EXPECT_EQ(ShebangInterpreter(head("#!   \n")), "");
  EXPECT_EQ(ShebangInterpreter(head("echo")), "");
}

// The host's binaries, against readelf (binutils) as the oracle.
TEST(ElfDepsTest, HostBinariesMatchReadelf) {
  for (const char* path : {"/bin/true", "/usr/bin/readelf", "/bin/ls"}) {
    if (::access(path, R_OK) != 0) continue;
    auto bytes = ReadFile(path);
    ASSERT_TRUE(bytes.ok());
    auto deps = ParseBytes(*bytes);
    ASSERT_TRUE(deps.ok()) << path << ": " << deps.status().message();
    const std::string needed = index::test::Sh(
        std::string("readelf -d ") + path +
        " | sed -n 's/.*(NEEDED).*\\[\\(.*\\)\\]$/\\1/p'");
    std::string got;
    for (const std::string& n : deps->needed) got += n + "\n";
    EXPECT_EQ(got, needed) << path;
    const std::string interp = index::test::Sh(
        std::string("readelf -l ") + path +
        " | sed -n 's/.*\\[Requesting program interpreter: \\(.*\\)\\]$/\\1/p'");
    EXPECT_EQ(deps->interp + (deps->interp.empty() ? "" : "\n"), interp) << path;
  }
}

// Every truncation of a valid file: an error or a subset of the answer, never a read past
// the (shorter) end.
TEST(ElfDepsTest, TruncatedFilesNeverReadOutOfBounds) {
  for (bool is64 : {true, false}) {
    ElfSpec spec;
    spec.is64 = is64;
    spec.interp = "/lib/ld.so";
    spec.needed = {"liba.so.1", "libb.so.2", "libc.so.6"};
    spec.runpath = "/opt";
    const std::string full = BuildElf(spec);
    for (size_t n = 0; n < full.size(); ++n) {
      auto deps = ParseBytes(full.substr(0, n));
      if (deps.ok()) {
        EXPECT_LE(deps->needed.size(), spec.needed.size());
      }
    }
  }
}

// Random byte changes (many at once in the headers): never a crash, never out of bounds.
TEST(ElfDepsTest, CorruptFilesNeverCrash) {
  std::mt19937_64 rng(7);
  for (bool is64 : {true, false}) {
    ElfSpec spec;
    spec.is64 = is64;
    spec.interp = "/lib/ld.so";
    spec.needed = {"liba.so.1", "libb.so.2"};
    spec.runpath = "/opt:/x";
    const std::string full = BuildElf(spec);
    for (int round = 0; round < 20000; ++round) {
      std::string bytes = full;
      const int changes = 1 + static_cast<int>(rng() % 8);
      for (int c = 0; c < changes; ++c) {
        const size_t at = rng() % bytes.size();
        switch (rng() % 3) {
          case 0: bytes[at] = static_cast<char>(rng()); break;
          case 1: bytes[at] = static_cast<char>(0xff); break;
          default: bytes[at] = 0; break;
        }
      }
      // Keep the magic most of the time so the headers get parsed.
      if (rng() % 4 != 0) std::memcpy(bytes.data(), ELFMAG, SELFMAG);
      (void)ParseBytes(bytes);
    }
  }
}

// Header fields set to extreme values one at a time.
TEST(ElfDepsTest, ExtremeHeaderFields) {
  ElfSpec spec;
  spec.interp = "/ld";
  spec.needed = {"liba.so"};
  const std::string full = BuildElf(spec);
  const uint64_t extremes[] = {0, 1, 0x7fffffff, 0xffffffff, 0xffffffffffffffffull,
                               0x8000000000000000ull, full.size(), full.size() - 1};
  for (size_t at = 16; at + 8 <= full.size(); ++at) {
    for (uint64_t v : extremes) {
      for (size_t width : {2, 4, 8}) {
        std::string bytes = full;
        std::memcpy(bytes.data() + at, &v, width);
        (void)ParseBytes(bytes);
      }
    }
  }
}

}  // namespace
}  // namespace elf_test
}  // namespace imagefs::store
