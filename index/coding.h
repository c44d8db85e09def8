#pragma once

// Little-endian fixed-width encoding for the serialized indexes (docs/formats.md).
// Decoder never reads past its input: every Get reports truncation as false.

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "util/digest.h"

namespace imagefs::index {

inline void PutU8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }
inline void PutU16(std::string& out, uint16_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
inline void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
inline void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
inline void PutBytes(std::string& out, std::string_view bytes) { out.append(bytes); }

// Raw 32 bytes of a sha256 Digest (zeros when it is not one).
inline std::array<uint8_t, 32> RawSha256(const Digest& d) {
  std::array<uint8_t, 32> raw{};
  const std::string& hex = d.hex();
  if (d.algorithm() != "sha256" || hex.size() != 64) return raw;
  auto nibble = [](char c) -> uint8_t {
    return static_cast<uint8_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  };
  for (size_t i = 0; i < 32; ++i) {
    raw[i] = static_cast<uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  }
  return raw;
}
inline std::array<uint8_t, 32> Sha256Raw(std::string_view data) {
  return RawSha256(Digest::Sha256Of(data));
}

class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  bool GetU8(uint8_t& v) {
    if (in_.size() < 1) return false;
    v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool GetU16(uint16_t& v) {
    uint64_t x;
    if (!GetLe(2, x)) return false;
    v = static_cast<uint16_t>(x);
    return true;
  }
  bool GetU32(uint32_t& v) {
    uint64_t x;
    if (!GetLe(4, x)) return false;
    v = static_cast<uint32_t>(x);
    return true;
  }
  bool GetU64(uint64_t& v) { return GetLe(8, v); }
  bool GetBytes(size_t n, std::string_view& v) {
    if (in_.size() < n) return false;
    v = in_.substr(0, n);
    in_.remove_prefix(n);
    return true;
  }
  size_t remaining() const { return in_.size(); }

 private:
  bool GetLe(size_t n, uint64_t& v) {
    if (in_.size() < n) return false;
    v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(in_[i])} << (8 * i);
    in_.remove_prefix(n);
    return true;
  }
  std::string_view in_;
};

}  // namespace imagefs::index
