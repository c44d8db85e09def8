// Shared TOC codecs and tar header reading (index/toc_util.h).

#include "index/toc_util.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "util/base64.h"
#include "index/coding.h"
#include "util/digest.h"

namespace imagefs::index::internal {
namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's era-based algorithm,
// exact for any year).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t mp = (m + 9) % 12;
  const int64_t doy = (153 * mp + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void CivilFromDays(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  d = static_cast<unsigned>(doy - (153 * mp + 2) / 5 + 1);
  m = static_cast<unsigned>(mp < 10 ? mp + 3 : mp - 9);
  y = yoe + era * 400 + (m <= 2 ? 1 : 0);
}

bool IsBase64Char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '/';
}

}  // namespace

Result<std::string> Base64DecodeStrict(std::string_view in) {
  auto bad = [] { return Status::Corruption("bad base64"); };
  if (in.size() % 4 != 0) return bad();
  if (in.empty()) return std::string();
  // '=' only at the end, at most two of them.
  const size_t pad = in.find('=');
  if (pad != std::string_view::npos &&
      (pad + 2 < in.size() || in.find_first_not_of('=', pad) != std::string_view::npos)) {
    return bad();
  }
  // The last character is base64 or '=', so the lenient decoder strips no white space; it
  // refuses any other character that is not base64.
  if (!IsBase64Char(in.back()) && in.back() != '=') return bad();
  auto out = Base64Decode(in);
  if (!out.ok()) return bad();
  return std::move(*out);
}

std::string FormatRfc3339(int64_t sec, uint32_t nsec) {
  const int64_t days = sec >= 0 ? sec / 86400 : -((-sec + 86399) / 86400);
  const int64_t rem = sec - days * 86400;
  int64_t y;
  unsigned m, d;
  CivilFromDays(days, y, m, d);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld",
                static_cast<long long>(y), m, d, static_cast<long long>(rem / 3600),
                static_cast<long long>(rem / 60 % 60), static_cast<long long>(rem % 60));
  std::string out = buf;
  if (nsec != 0 && nsec < 1000000000) {
    std::snprintf(buf, sizeof buf, ".%09u", nsec);
    std::string frac = buf;
    while (frac.back() == '0') frac.pop_back();
    out += frac;
  }
  out += 'Z';
  return out;
}

std::optional<Rfc3339Time> ParseRfc3339(std::string_view t) {
  auto digits = [&](size_t at, size_t n, int64_t& v) {
    if (at + n > t.size()) return false;
    v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      v = v * 10 + (t[i] - '0');
    }
    return true;
  };
  int64_t year, month, day, hour, minute, second;
  if (!digits(0, 4, year) || t.size() < 20 || t[4] != '-' || !digits(5, 2, month) ||
      t[7] != '-' || !digits(8, 2, day) || (t[10] != 'T' && t[10] != 't') ||
      !digits(11, 2, hour) || t[13] != ':' || !digits(14, 2, minute) || t[16] != ':' ||
      !digits(17, 2, second)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 ||
      second > 60) {
    return std::nullopt;
  }
  Rfc3339Time out;
  size_t pos = 19;
  if (pos < t.size() && t[pos] == '.') {
    ++pos;
    size_t n = 0;
    while (pos < t.size() && t[pos] >= '0' && t[pos] <= '9') {
      if (n < 9) out.nsec = out.nsec * 10 + static_cast<uint32_t>(t[pos] - '0');
      ++n;
      ++pos;
    }
    if (n == 0) return std::nullopt;
    for (size_t k = n; k < 9; ++k) out.nsec *= 10;
  }
  if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) {
    ++pos;
  } else if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
    int64_t oh, om;
    if (!digits(pos + 1, 2, oh) || pos + 3 >= t.size() || t[pos + 3] != ':' ||
        !digits(pos + 4, 2, om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    out.offset = static_cast<int32_t>((oh * 60 + om) * 60 * (t[pos] == '-' ? -1 : 1));
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != t.size()) return std::nullopt;
  out.sec = DaysFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
            hour * 3600 + minute * 60 + second - out.offset;
  return out;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const uint8_t cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = cp << 6 | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

std::optional<std::array<uint8_t, 32>> ParseSha256Digest(std::string_view text) {
  auto d = Digest::Parse(text);
  if (!d.ok() || d->algorithm() != "sha256") return std::nullopt;
  return RawSha256(*d);
}

std::string_view TocTypeName(TarType type) {
  switch (type) {
    case TarType::kRegular: return "reg";
    case TarType::kHardLink: return "hardlink";
    case TarType::kSymlink: return "symlink";
    case TarType::kCharDevice: return "char";
    case TarType::kBlockDevice: return "block";
    case TarType::kDirectory: return "dir";
    case TarType::kFifo: return "fifo";
  }
  return "reg";
}

std::optional<TarType> TarTypeFromToc(std::string_view name) {
  for (TarType type : {TarType::kRegular, TarType::kHardLink, TarType::kSymlink,
                       TarType::kCharDevice, TarType::kBlockDevice, TarType::kDirectory,
                       TarType::kFifo}) {
    if (name == TocTypeName(type)) return type;
  }
  return std::nullopt;
}

std::optional<uint64_t> ChunkLength(uint64_t chunk_size, uint64_t covered, uint64_t file_size) {
  if (covered > file_size) return std::nullopt;
  const uint64_t length = chunk_size > 0 ? chunk_size : file_size - covered;
  if (length == 0 || length > file_size - covered) return std::nullopt;
  return length;
}

Status ScanTarHeaders(TarScanner& scanner, uint64_t size, TarReadSizes sizes,
                      const TarReadFn& read) {
  const size_t max_read = std::max<size_t>({sizes.first, sizes.max, 1});
  const size_t first_read = std::max<size_t>(sizes.first, 1);
  std::vector<uint8_t> buf(max_read);
  size_t read_size = first_read;
  uint64_t pos = 0;
  while (pos < size && !scanner.at_end()) {
    const uint64_t skip = std::min(scanner.SkippableBytes(), size - pos);
    if (skip > 0) {
      RETURN_IF_ERROR(scanner.Skip(skip));
      pos += skip;
      read_size = first_read;
      continue;
    }
    const size_t want = static_cast<size_t>(std::min<uint64_t>(read_size, size - pos));
    ASSIGN_OR_RETURN(size_t n, read(pos, std::span<uint8_t>(buf.data(), want)));
    if (n == 0) break;
    RETURN_IF_ERROR(scanner.Feed(std::span<const uint8_t>(buf.data(), std::min(n, want))));
    pos += std::min(n, want);
    read_size = std::min(max_read, read_size * 2);
  }
  return scanner.Finish();
}

}  // namespace imagefs::index::internal
