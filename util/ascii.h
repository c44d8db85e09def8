#pragma once

// ASCII-only lowercasing (HTTP header names, auth schemes, platform fields): no locale.

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

}  // namespace imagefs
