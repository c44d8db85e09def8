#pragma once

// eStargz constants and the footer codec shared by the reader (estargz_reader.cc) and the
// writer (estargz_writer.cc). Internal to index/. The format: docs/formats.md ("eStargz").
// The TOC field codecs (base64, RFC 3339, UTF-8) are shared with zstd:chunked:
// index/toc_util.h.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "util/status.h"

namespace imagefs::index::estargz {

// The footer: an empty gzip member whose FEXTRA field holds the TOC offset.
//   51 bytes: XLEN = 26, subfield "SG" of length 22 = "%016x" offset + "STARGZ".
//   47 bytes (legacy stargz): XLEN = 22, the extra field is "%016x" offset + "STARGZ".
inline constexpr size_t kFooterSize = 51;
inline constexpr size_t kLegacyFooterSize = 47;

inline constexpr std::string_view kTocTarName = "stargz.index.json";
inline constexpr std::string_view kPrefetchLandmark = ".prefetch.landmark";
inline constexpr std::string_view kNoPrefetchLandmark = ".no.prefetch.landmark";
inline constexpr uint8_t kLandmarkContents = 0x0f;

inline constexpr std::string_view kTocDigestAnnotation = "containerd.io/snapshot/stargz/toc.digest";
inline constexpr std::string_view kUncompressedSizeAnnotation =
    "io.containers.estargz.uncompressed-size";

// True for the names the format adds to a layer (hidden from the tree; dropped from a tar
// being converted). `path` is normalized.
inline bool IsFormatEntry(std::string_view path) {
  return path == kTocTarName || path == kPrefetchLandmark || path == kNoPrefetchLandmark;
}

// The 51-byte footer pointing at the TOC member at `toc_offset`.
std::string FooterBytes(uint64_t toc_offset);

enum class FooterKind { kNone, kDamaged, kFooter };
struct ParsedFooter {
  FooterKind kind = FooterKind::kNone;
  uint64_t toc_offset = 0;
  std::string problem;  // kDamaged: what is wrong
};
// Parses `tail`, exactly kFooterSize or kLegacyFooterSize bytes. kNone when the bytes do
// not claim to be a footer (no gzip header with "STARGZ" in its extra field), kDamaged
// when they claim to be one but do not check out.
ParsedFooter ParseFooter(std::span<const uint8_t> tail);

}  // namespace imagefs::index::estargz
