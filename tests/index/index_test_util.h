#pragma once

// Helpers for the index tests: running tar/gzip/zstd, hand-made tar headers, scanning a
// blob with TarScanner.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "index/tar_scanner.h"
#include "tests/testing/process.h"
#include "util/file.h"

namespace imagefs::index::test {

// Runs `sh -c script` in dir; fails the test on a non-zero exit.
inline std::string Sh(const std::string& script, const std::string& dir = "") {
  testing::ProcessOptions opts;
  opts.argv = {"sh", "-c", script};
  opts.cwd = dir;
  auto r = testing::RunProcess(opts);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return "";
  EXPECT_EQ(r->exit_code, 0) << script << "\n" << r->Describe();
  return r->stdout_text;
}

inline std::string ReadAllOf(const std::string& path) {
  auto r = ::imagefs::ReadFile(path);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : "";
}

inline std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

inline std::string TextBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  static const char* kWords[] = {"layer ", "index ", "chunk ", "span ", "gzip ", "zstd ",
                                 "tar\n", "checkpoint ", "window ", "digest "};
  std::string s;
  s.reserve(n + 16);
  while (s.size() < n) s += kWords[rng() % 10];
  s.resize(n);
  return s;
}

// One 512-byte ustar header. `size` is written as given (octal), the checksum is computed
// unless `bad_checksum`.
struct HeaderSpec {
  std::string name;
  char type = '0';
  uint64_t size = 0;
  uint32_t mode = 0644;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 1700000000;
  std::string linkname;
  std::string prefix;
  bool bad_checksum = false;
  bool base256_size = false;
};

inline std::string TarHeader(const HeaderSpec& h) {
  std::string b(512, '\0');
  auto put = [&](size_t off, size_t len, const std::string& v) {
    std::memcpy(b.data() + off, v.data(), std::min(len, v.size()));
  };
  auto octal = [&](size_t off, size_t len, uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%0*llo", static_cast<int>(len - 1),
                  static_cast<unsigned long long>(v));
    put(off, len - 1, buf);
  };
  put(0, 100, h.name);
  octal(100, 8, h.mode);
  octal(108, 8, h.uid);
  octal(116, 8, h.gid);
  if (h.base256_size) {
    b[124] = static_cast<char>(0x80);
    for (int i = 0; i < 8; ++i) b[135 - i] = static_cast<char>(h.size >> (8 * i));
  } else {
    octal(124, 12, h.size);
  }
  octal(136, 12, static_cast<uint64_t>(h.mtime));
  b[156] = h.type;
  put(157, 100, h.linkname);
  put(257, 6, std::string("ustar\0", 6));
  put(263, 2, "00");
  put(265, 32, "root");
  put(297, 32, "root");
  put(345, 155, h.prefix);
  std::memset(b.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : b) sum += c;
  if (h.bad_checksum) sum += 1;
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06o", sum);
  std::memcpy(b.data() + 148, buf, 7);
  return b;
}

inline std::string Padded(std::string data) {
  data.resize((data.size() + 511) / 512 * 512, '\0');
  return data;
}

// A whole entry: header + data padded.
inline std::string TarFile(const std::string& name, const std::string& data, char type = '0') {
  HeaderSpec h;
  h.name = name;
  h.type = type;
  h.size = data.size();
  return TarHeader(h) + Padded(data);
}

inline std::string PaxRecord(const std::string& key, const std::string& value) {
  std::string body = " " + key + "=" + value + "\n";
  size_t len = body.size() + 1;
  while (std::to_string(len).size() + body.size() != len) ++len;
  return std::to_string(len) + body;
}

inline std::string PaxHeader(const std::string& records, char type = 'x') {
  HeaderSpec h;
  h.name = "PaxHeaders/x";
  h.type = type;
  h.size = records.size();
  return TarHeader(h) + Padded(records);
}

inline std::string EndOfArchive() { return std::string(1024, '\0'); }

// One tar entry (type '0' file with data, '5' dir, '1' hard link, '2' symlink, ...) owned by
// uid:uid, and the two common cases.
inline std::string Entry(const std::string& name, char type, const std::string& data = "",
                  uint32_t mode = 0644, const std::string& link = "", uint32_t uid = 0) {
  HeaderSpec h;
  h.name = name;
  h.type = type;
  h.size = type == '0' ? data.size() : 0;
  h.mode = mode;
  h.linkname = link;
  h.uid = uid;
  h.gid = uid;
  return TarHeader(h) + (type == '0' ? Padded(data) : "");
}
inline std::string Dir(const std::string& name) { return Entry(name, '5', "", 0755); }
inline std::string File(const std::string& name, const std::string& data, uint32_t mode = 0644,
                 uint32_t uid = 0) {
  return Entry(name, '0', data, mode, "", uid);
}

// Scans a whole tar, pushed in pieces of `piece` bytes.
inline Result<std::vector<TarEntry>> ScanTar(const std::string& tar, size_t piece = 1 << 20) {
  std::vector<TarEntry> entries;
  TarScanner scanner([&](const TarEntry& e) {
    entries.push_back(e);
    return Status::Ok();
  });
  for (size_t off = 0; off < tar.size(); off += piece) {
    size_t n = std::min(piece, tar.size() - off);
    RETURN_IF_ERROR(scanner.Feed(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(tar.data()) + off, n)));
  }
  RETURN_IF_ERROR(scanner.Finish());
  return entries;
}

}  // namespace imagefs::index::test
