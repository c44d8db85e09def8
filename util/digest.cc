#include "util/digest.h"

#include <openssl/evp.h>

namespace imagefs {

std::string HexEncode(std::span<const uint8_t> data) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.resize(data.size() * 2);
  for (size_t i = 0; i < data.size(); ++i) {
    out[2 * i] = kHex[data[i] >> 4];
    out[2 * i + 1] = kHex[data[i] & 0xf];
  }
  return out;
}

Result<Digest> Digest::Parse(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return Status::InvalidArgument("digest \"" + std::string(text) + "\": missing algorithm prefix");
  }
  std::string_view algo = text.substr(0, colon);
  std::string_view hex = text.substr(colon + 1);
  size_t want;
  if (algo == "sha256") {
    want = 64;
  } else if (algo == "sha512") {
    want = 128;
  } else {
    return Status::Unsupported("digest \"" + std::string(text) + "\": unsupported algorithm \"" +
                               std::string(algo) + "\"");
  }
  if (hex.size() != want) {
    return Status::InvalidArgument("digest \"" + std::string(text) + "\": expected " +
                                   std::to_string(want) + " hex digits");
  }
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return Status::InvalidArgument("digest \"" + std::string(text) +
                                     "\": not lowercase hex");
    }
  }
  Digest d;
  d.algorithm_ = std::string(algo);
  d.hex_ = std::string(hex);
  return d;
}

Digest Digest::FromSha256Raw(const std::array<uint8_t, 32>& raw) {
  Digest d;
  d.algorithm_ = "sha256";
  d.hex_ = HexEncode(raw);
  return d;
}

Digest Digest::Sha256Of(std::span<const uint8_t> data) {
  Sha256 h;
  h.Update(data);
  return h.Finish();
}

Digest Digest::Sha256Of(std::string_view data) {
  return Sha256Of(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

struct Sha256::State {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : state_(std::make_unique<State>()) {
  state_->ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(state_->ctx, EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(state_->ctx); }

void Sha256::Update(std::span<const uint8_t> data) {
  EVP_DigestUpdate(state_->ctx, data.data(), data.size());
}

void Sha256::Update(std::string_view data) {
  EVP_DigestUpdate(state_->ctx, data.data(), data.size());
}

Digest Sha256::Finish() {
  std::array<uint8_t, 32> raw{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(state_->ctx, raw.data(), &len);
  EVP_DigestInit_ex(state_->ctx, EVP_sha256(), nullptr);
  return Digest::FromSha256Raw(raw);
}

}  // namespace imagefs
