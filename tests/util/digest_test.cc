#include "util/digest.h"

#include <gtest/gtest.h>

namespace imagefs {
namespace digest_test {
namespace {

TEST(DigestTest, Sha256OfEmptyStringIsTheKnownValue) {
  EXPECT_EQ(Digest::Sha256Of(std::string_view()).String(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(DigestTest, IncrementalEqualsOneShot) {
  Sha256 h;
  h.Update(std::string_view("hello "));
  h.Update(std::string_view("world"));
  EXPECT_EQ(h.Finish(), Digest::Sha256Of(std::string_view("hello world")));
}

TEST(DigestTest, ParseAcceptsLowercaseSha256) {
  auto d = Digest::Parse("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->algorithm(), "sha256");
  EXPECT_EQ(d->Short(), "e3b0c44298fc");
}

TEST(DigestTest, ParseRejectsBadInput) {
  EXPECT_FALSE(Digest::Parse("e3b0c44298fc").ok());
  EXPECT_FALSE(Digest::Parse("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855").ok());
  EXPECT_FALSE(Digest::Parse("sha256:abc").ok());
  EXPECT_EQ(Digest::Parse("md5:abc").status().code(), Code::kUnsupported);
}

}  // namespace
}  // namespace digest_test
}  // namespace imagefs
