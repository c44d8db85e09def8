#pragma once

// zstd:chunked (containers/storage pkg/chunked): constants and small codecs shared by the
// reader (zstd_chunked_reader.cc) and the writer (zstd_chunked_writer.cc). Internal to
// index/. The format is described in docs/formats.md ("zstd:chunked").

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/status.h"

namespace imagefs::index::zstd_chunked {

// Skippable zstd frame: magic 0x184D2A50 (little endian), u32 LE length, payload.
inline constexpr std::array<uint8_t, 4> kSkippableMagic = {0x50, 0x2a, 0x4d, 0x18};
inline constexpr size_t kSkippableHeader = 8;
// Footer magics: "GnUlInUx" (containers/storage <= 1.49: 40- and 56-byte footers) and
// "GNUlInUx" (>= 1.50: 64-byte footer).
inline constexpr std::string_view kMagicOld = "GnUlInUx";
inline constexpr std::string_view kMagic = "GNUlInUx";
inline constexpr uint64_t kManifestTypeCrfs = 1;

// Annotation keys. containers/storage < 1.44 (Debian's skopeo 1.9) wrote the
// "io.containers." keys; later versions the "io.github.containers." ones.
inline constexpr std::string_view kManifestChecksumKey =
    "io.github.containers.zstd-chunked.manifest-checksum";
inline constexpr std::string_view kManifestPositionKey =
    "io.github.containers.zstd-chunked.manifest-position";
inline constexpr std::string_view kTarSplitPositionKey =
    "io.github.containers.zstd-chunked.tarsplit-position";
inline constexpr std::string_view kOldManifestChecksumKey =
    "io.containers.zstd-chunked.manifest-checksum";
inline constexpr std::string_view kOldManifestPositionKey =
    "io.containers.zstd-chunked.manifest-position";

// imagefs' own TOC keys (ignored by containers/storage, covered by the TOC digest): the
// writer's prefetch boundary. See docs/formats.md.
inline constexpr std::string_view kPrefetchCountKey = "imagefsPrefetchEntries";
inline constexpr std::string_view kPrefetchEndKey = "imagefsPrefetchEndOffset";

// Same limit as containers/storage (maxTocSize): larger TOCs are refused.
inline constexpr uint64_t kMaxTocBytes = uint64_t{150} << 20;

// Where the TOC (and the tar-split, when there is one) lives. Offsets point at the
// payload of the skippable frame (just past its 8-byte header).
struct Footer {
  uint64_t manifest_offset = 0;
  uint64_t manifest_length = 0;
  uint64_t manifest_uncompressed = 0;
  uint64_t manifest_type = 0;
  uint64_t tarsplit_offset = 0;
  uint64_t tarsplit_length = 0;
  uint64_t tarsplit_uncompressed = 0;
};

// The 64-byte footer of current containers/storage: seven u64 LE, then "GNUlInUx".
std::string EncodeFooter64(const Footer& footer);

// The TOC field codecs (base64, RFC 3339, UTF-8) are shared with eStargz:
// index/toc_util.h.

// Appends `s` as a JSON string literal (quotes included), escaped as Go's encoding/json
// does for valid UTF-8 (the caller checks validity).
void AppendJsonString(std::string& out, std::string_view s);

// CRC-64/ISO as Go's hash/crc64 with crc64.ISO computes it (tar-split's file checksum).
uint64_t Crc64Iso(uint64_t crc, std::string_view data);

}  // namespace imagefs::index::zstd_chunked
