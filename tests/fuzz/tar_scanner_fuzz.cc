// Fuzzes TarScanner: the stream is scanned twice, once pushed whole and once in random
// pieces with random Skip calls, and both scans must report the same entries and the same
// outcome (the scanner's result may not depend on how the bytes arrive).
//
// Input: 8 bytes seeding the piece sizes, then the tar stream.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "index/tar_scanner.h"
#include "tests/fuzz/fuzz_util.h"

namespace imagefs::fuzz {
namespace {

struct Scan {
  std::vector<index::TarEntry> entries;
  Status status;
  bool at_end = false;
};

void CheckEntry(const index::TarEntry& e) {
  auto normalized = index::NormalizeTarPath(e.path);
  FUZZ_CHECK(normalized.ok() && *normalized == e.path, "entry path is normalized: " + e.path);
  FUZZ_CHECK(e.header_offset % 512 == 0 && e.data_offset % 512 == 0, "offsets are blocks");
  FUZZ_CHECK(e.data_offset > e.header_offset, "data after the header");
  FUZZ_CHECK(e.mode <= 07777, "mode holds permission bits only");
  FUZZ_CHECK(e.mtime_nsec < 1000000000, "nanoseconds below a second");
  FUZZ_CHECK(e.type == index::TarType::kRegular || e.size == 0, "only regular files have data");
}

bool SameEntry(const index::TarEntry& a, const index::TarEntry& b) {
  return a.path == b.path && a.type == b.type && a.mode == b.mode && a.uid == b.uid &&
         a.gid == b.gid && a.uname == b.uname && a.gname == b.gname && a.size == b.size &&
         a.mtime_sec == b.mtime_sec && a.mtime_nsec == b.mtime_nsec &&
         a.dev_major == b.dev_major && a.dev_minor == b.dev_minor && a.linkname == b.linkname &&
         a.xattrs == b.xattrs && a.header_offset == b.header_offset &&
         a.data_offset == b.data_offset;
}

Scan ScanWhole(std::span<const uint8_t> stream) {
  Scan scan;
  index::TarScanner scanner([&](const index::TarEntry& e) {
    CheckEntry(e);
    scan.entries.push_back(e);
    return Status::Ok();
  });
  scan.status = scanner.Feed(stream);
  if (scan.status.ok()) scan.status = scanner.Finish();
  scan.at_end = scanner.at_end();
  FUZZ_CHECK(scanner.entry_count() == scan.entries.size(), "entry_count counts callbacks");
  return scan;
}

Scan ScanPieces(std::span<const uint8_t> stream, Rng& rng) {
  Scan scan;
  index::TarScanner scanner([&](const index::TarEntry& e) {
    scan.entries.push_back(e);
    return Status::Ok();
  });
  size_t pos = 0;
  while (pos < stream.size() && scan.status.ok()) {
    uint64_t skippable = scanner.SkippableBytes();
    if (skippable > 0 && rng.Below(2) == 0) {
      uint64_t n = std::min<uint64_t>(stream.size() - pos, 1 + rng.Below(skippable));
      scan.status = scanner.Skip(n);
      pos += n;
      continue;
    }
    size_t n = std::min<size_t>(stream.size() - pos, rng.Below(4) == 0 ? rng.Below(8)
                                                                        : rng.Below(1500));
    scan.status = scanner.Feed(stream.subspan(pos, n));
    pos += n;
  }
  if (!scan.status.ok()) {
    // An error stops the scan: later calls return it again.
    uint8_t zero[512] = {};
    Status again = scanner.Feed(std::span<const uint8_t>(zero, sizeof zero));
    FUZZ_CHECK(again.code() == scan.status.code(), "a failed scanner keeps failing");
    FUZZ_CHECK(scanner.Finish().code() == scan.status.code(), "Finish repeats the error");
  } else {
    FUZZ_CHECK(scanner.offset() == stream.size(), "offset counts fed and skipped bytes");
    scan.status = scanner.Finish();
  }
  scan.at_end = scanner.at_end();
  return scan;
}

}  // namespace
}  // namespace imagefs::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imagefs::fuzz;
  uint64_t seed = 0;
  if (size >= 8) {
    std::memcpy(&seed, data, 8);
    data += 8;
    size -= 8;
  }
  std::span<const uint8_t> stream(data, size);
  Scan whole = ScanWhole(stream);
  Rng rng(seed);
  Scan pieces = ScanPieces(stream, rng);
  FUZZ_CHECK(whole.status.ok() == pieces.status.ok(),
             "same outcome whole vs pieces: " + whole.status.ToString() + " / " +
                 pieces.status.ToString());
  FUZZ_CHECK(whole.status.code() == pieces.status.code(), "same error code");
  FUZZ_CHECK(whole.entries.size() == pieces.entries.size(), "same entry count");
  for (size_t i = 0; i < whole.entries.size(); ++i) {
    FUZZ_CHECK(SameEntry(whole.entries[i], pieces.entries[i]),
               "same entry " + std::to_string(i) + ": " + whole.entries[i].path);
  }
  return 0;
}
