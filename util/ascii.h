#pragma once

// ASCII-only text helpers (HTTP header names, auth schemes, platform fields, decimal
// numbers in headers, annotations and tar records): no locale.

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace imagefs {

inline std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// A whole string of decimal digits as a number; nullopt for anything else (empty, a sign,
// trailing bytes, overflow).
inline std::optional<uint64_t> ParseAsciiU64(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace imagefs
