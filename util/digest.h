#pragma once

// Content digests as OCI writes them: "sha256:<64 lowercase hex>".
// Only sha256 is accepted for verification; sha512 parses but is reported unsupported
// by Verify callers that cannot compute it.

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "util/status.h"

namespace imagefs {

class Digest {
 public:
  Digest() = default;
  // Parses "sha256:<64 hex>" (also "sha512:<128 hex>"). Uppercase hex is rejected as
  // the OCI spec requires.
  static Result<Digest> Parse(std::string_view text);
  static Digest Sha256Of(std::span<const uint8_t> data);
  static Digest Sha256Of(std::string_view data);
  static Digest FromSha256Raw(const std::array<uint8_t, 32>& raw);

  const std::string& algorithm() const { return algorithm_; }
  const std::string& hex() const { return hex_; }
  std::string String() const { return algorithm_ + ":" + hex_; }
  // First 12 hex digits, as docker shows IDs.
  std::string Short() const { return hex_.substr(0, 12); }
  bool empty() const { return hex_.empty(); }

  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest&, const Digest&) = default;

 private:
  std::string algorithm_;
  std::string hex_;
};

// Incremental sha256 over streamed bytes. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::span<const uint8_t> data);
  void Update(std::string_view data);
  Digest Finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Lowercase hex of raw bytes.
std::string HexEncode(std::span<const uint8_t> data);

}  // namespace imagefs

template <>
struct std::hash<imagefs::Digest> {
  size_t operator()(const imagefs::Digest& d) const noexcept {
    return std::hash<std::string>()(d.hex());
  }
};
