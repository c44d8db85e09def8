#pragma once

// Helpers shared by the formats whose layers carry a JSON TOC (eStargz: estargz_reader.cc,
// estargz_writer.cc; zstd:chunked: zstd_chunked_reader.cc, zstd_chunked_writer.cc) and by
// the readers of uncompressed tars (tar_index.cc). Internal to index/. Both TOCs are what
// Go's encoding/json makes of the same stargz-style entry struct, so the field codecs
// (base64 []byte, RFC 3339 time.Time, UTF-8 strings) and the entry types are the same.
//
// Everything here is a pure function of its arguments (thread-safe) except ScanTarHeaders,
// which uses the scanner and reader it is given.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "index/tar_scanner.h"
#include "util/status.h"

namespace imagefs::index::internal {

// ---- base64 ([]byte fields: xattr values, tar-split payloads) ----------------------------
// Encoding is fetch::Base64Encode (standard alphabet, padded). Decoding is strict, as the
// readers have always been: the length is a multiple of 4 and '=' appears only as the last
// one or two characters; anything else (missing padding, white space, other characters)
// is kCorruption. (fetch::Base64Decode, which this uses, is lenient for auth files.)
Result<std::string> Base64DecodeStrict(std::string_view in);

// ---- RFC 3339 (time.Time fields) --------------------------------------------------------
// "2006-01-02T15:04:05Z" in UTC, with up to 9 fraction digits (trailing zeros trimmed)
// when nsec != 0, as Go's time.Time marshals. nsec >= 1e9 is not a time; it is ignored.
std::string FormatRfc3339(int64_t sec, uint32_t nsec);

struct Rfc3339Time {
  int64_t sec = 0;      // since the epoch, UTC
  uint32_t nsec = 0;    // 0..999999999
  int32_t offset = 0;   // the text's zone offset east of UTC, in seconds (0 for "Z")
};
// Accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)" ('t' and 'z' too), fields in
// range (seconds up to 60, zone hours up to 23 and minutes up to 59, as Go's time.Parse);
// fraction digits past the ninth are dropped. nullopt for anything else.
std::optional<Rfc3339Time> ParseRfc3339(std::string_view text);
// Go's zero time.Time ("0001-01-01T00:00:00Z"), which encoding/json writes for an unset
// time: seconds since the epoch.
inline constexpr int64_t kGoZeroTimeSec = -62135596800;

// ---- strings -----------------------------------------------------------------------------
// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF). JSON strings must be.
bool IsValidUtf8(std::string_view s);

// "sha256:<64 hex>" as raw bytes; nullopt for anything else (other algorithms included).
std::optional<std::array<uint8_t, 32>> ParseSha256Digest(std::string_view text);

// ---- entries -----------------------------------------------------------------------------
// The TOC "type" of a tar entry type ("reg", "dir", ...) and back. "chunk" (a TOC-only
// continuation entry) and unknown names map to nullopt.
std::string_view TocTypeName(TarType type);
std::optional<TarType> TarTypeFromToc(std::string_view name);

// The bytes a TOC chunk covers: `chunk_size`, or the rest of the file when it is 0, after
// `covered` of the file's `file_size` bytes came before it. nullopt when that is nothing
// or runs past the end of the file.
std::optional<uint64_t> ChunkLength(uint64_t chunk_size, uint64_t covered, uint64_t file_size);

// ---- reading a tar's headers --------------------------------------------------------------
// Reads `count` bytes at `offset` into out (out.size() == count). Returns the count read:
// less only when the input ends; 0 at its end.
using TarReadFn = std::function<Result<size_t>(uint64_t offset, std::span<uint8_t> out)>;

// How ScanTarHeaders sizes its reads: `first` bytes, doubling up to `max` while headers
// follow each other; a jump over file data starts again at `first` (after a jump, expect a
// header and little else). first == max reads in pieces of one size.
struct TarReadSizes {
  size_t first = 0;
  size_t max = 0;
};

// Feeds the first `size` bytes of a tar to `scanner`, jumping over the file data it does not
// need (SkippableBytes), until the scanner sees the end of the archive; then returns
// scanner.Finish(). Reads never ask for bytes past `size`. A read of 0 bytes stops the
// feeding early, and Finish() says what is missing.
Status ScanTarHeaders(TarScanner& scanner, uint64_t size, TarReadSizes sizes,
                      const TarReadFn& read);

}  // namespace imagefs::index::internal
