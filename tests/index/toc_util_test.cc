// index/toc_util.h: the TOC field codecs shared by eStargz and zstd:chunked (RFC 3339,
// base64, UTF-8, digests, entry types, chunk lengths) and the tar header reader shared by
// the writers and the plain tar index.

#include "index/toc_util.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "fetch/auth.h"
#include "tests/index/index_test_util.h"

namespace imagefs::index::internal {
namespace {

// ---- RFC 3339 --------------------------------------------------------------------------

TEST(TocRfc3339Test, FormatsUtcWithTrimmedFraction) {
  EXPECT_EQ(FormatRfc3339(0, 0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(FormatRfc3339(1700000000, 500000000), "2023-11-14T22:13:20.5Z");
  EXPECT_EQ(FormatRfc3339(1700000000, 120000000), "2023-11-14T22:13:20.12Z");
  EXPECT_EQ(FormatRfc3339(1700000000, 123456789), "2023-11-14T22:13:20.123456789Z");
  EXPECT_EQ(FormatRfc3339(1700000000, 1), "2023-11-14T22:13:20.000000001Z");
  EXPECT_EQ(FormatRfc3339(-1, 0), "1969-12-31T23:59:59Z");
  EXPECT_EQ(FormatRfc3339(951782400, 0), "2000-02-29T00:00:00Z");
  EXPECT_EQ(FormatRfc3339(kGoZeroTimeSec, 0), "0001-01-01T00:00:00Z");
  // Not a nanosecond count: left out rather than printed as a fraction.
  EXPECT_EQ(FormatRfc3339(0, 1000000000), "1970-01-01T00:00:00Z");
}

TEST(TocRfc3339Test, ParseRoundTripsFormat) {
  for (int64_t sec : {int64_t{0}, int64_t{-1}, int64_t{-86401}, int64_t{951782400},
                      int64_t{1700000000}, int64_t{4102444800}, kGoZeroTimeSec}) {
    for (uint32_t nsec : {0u, 7u, 500000000u, 123456789u, 999999999u}) {
      const std::string text = FormatRfc3339(sec, nsec);
      auto t = ParseRfc3339(text);
      ASSERT_TRUE(t.has_value()) << text;
      EXPECT_EQ(t->sec, sec) << text;
      EXPECT_EQ(t->nsec, nsec) << text;
      EXPECT_EQ(t->offset, 0) << text;
    }
  }
}

TEST(TocRfc3339Test, ParseAcceptsFractionsAndZones) {
  auto t = ParseRfc3339("2023-11-14T23:13:20+01:00");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->sec, 1700000000);
  EXPECT_EQ(t->nsec, 0u);
  EXPECT_EQ(t->offset, 3600);

  t = ParseRfc3339("2023-11-14T16:43:20.25-05:30");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->sec, 1700000000);
  EXPECT_EQ(t->nsec, 250000000u);
  EXPECT_EQ(t->offset, -(5 * 3600 + 30 * 60));

  t = ParseRfc3339("2023-11-14t22:13:20z");  // lower case T and Z
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->sec, 1700000000);

  t = ParseRfc3339("2023-11-14T22:13:20.1234567891234Z");  // past 9 digits: dropped
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->nsec, 123456789u);

  t = ParseRfc3339("2023-11-14T22:13:20+00:00");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->sec, 1700000000);
  EXPECT_EQ(t->offset, 0);

  t = ParseRfc3339("0001-01-01T00:00:00Z");  // Go's zero time.Time
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->sec, kGoZeroTimeSec);
  EXPECT_EQ(t->nsec, 0u);
}

TEST(TocRfc3339Test, ParseRejectsWhatIsNotRfc3339) {
  for (const char* bad : {"", "2023-11-14", "2023-11-14 22:13:20Z", "2023-11-14T22:13:20",
                          "2023-11-14T22:13:20.Z", "2023-11-14T22:13:20,5Z",
                          "2023-11-14T22:13:20ZZ", "2023-11-14T22:13:20Z ",
                          "2023-13-14T22:13:20Z", "2023-00-14T22:13:20Z", "2023-11-32T22:13:20Z",
                          "2023-11-14T24:13:20Z", "2023-11-14T22:60:20Z", "2023-11-14T22:13:61Z",
                          "2023-11-14T22:13:20+24:00", "2023-11-14T22:13:20+01:60",
                          "2023-11-14T22:13:20+0100", "2023-11-14T22:13:20+01",
                          "+2023-11-14T22:13:20Z", "2023/11/14T22:13:20Z",
                          "2023-1a-14T22:13:20Z"}) {
    EXPECT_FALSE(ParseRfc3339(bad).has_value()) << bad;
  }
}

// ---- base64 ------------------------------------------------------------------------------

TEST(TocBase64Test, RoundTripsEveryLengthAndByte) {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  for (size_t n = 0; n <= all.size(); ++n) {
    const std::string v = all.substr(all.size() - n);
    auto back = Base64DecodeStrict(fetch::Base64Encode(v));
    ASSERT_TRUE(back.ok()) << n;
    EXPECT_EQ(*back, v);
  }
}

TEST(TocBase64Test, DecodesRfc4648Vectors) {
  for (auto [plain, encoded] : std::vector<std::pair<std::string, std::string>>{
           {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
           {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "+/8="},
           {std::string("\0\1\2", 3), "AAEC"}}) {
    EXPECT_EQ(fetch::Base64Encode(plain), encoded);
    auto decoded = Base64DecodeStrict(encoded);
    ASSERT_TRUE(decoded.ok()) << encoded;
    EXPECT_EQ(*decoded, plain);
  }
}

TEST(TocBase64Test, DecodeRefusesBadPaddingAndOtherCharacters) {
  for (const char* bad : {"Zg", "Zg=", "Zm8", "aGVsbG8", "Z===", "====", "Zg=a", "YW=I",
                          "a=Vs", "Zg==Zg==", "Zm9v\n", "Zm9v    ", "Zm9v\r\n\r\n", " Zm9v",
                          "Zm 9", "Zm9!", "Zm-_", "!!!!"}) {
    auto r = Base64DecodeStrict(bad);
    EXPECT_FALSE(r.ok()) << '"' << bad << '"';
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kCorruption) << bad;
    }
  }
  EXPECT_FALSE(Base64DecodeStrict(std::string("Zm9\0", 4)).ok());
}

// ---- UTF-8 -------------------------------------------------------------------------------

TEST(TocUtf8Test, AcceptsWellFormedText) {
  for (const char* ok : {"", "plain ascii", "ünïcödé", "日本語", "\xf0\x9f\x98\x80",
                         "\x7f", "\xc2\x80", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf"}) {
    EXPECT_TRUE(IsValidUtf8(ok)) << ok;
  }
  EXPECT_TRUE(IsValidUtf8(std::string("nul\0inside", 10)));
}

TEST(TocUtf8Test, RejectsMalformedText) {
  for (const char* bad : {
           "\xff",              // never a lead byte
           "\x80",              // continuation without a lead
           "\xc3",              // truncated 2-byte
           "\xe6\x97",          // truncated 3-byte
           "\xf0\x9f\x98",      // truncated 4-byte
           "a\xc3(",            // bad continuation
           "\xc0\x80",          // overlong NUL
           "\xe0\x80\xaf",      // overlong '/'
           "\xf0\x80\x80\xaf",  // overlong '/'
           "\xed\xa0\x80",      // surrogate U+D800
           "\xed\xbf\xbf",      // surrogate U+DFFF
           "\xf4\x90\x80\x80",  // U+110000
           "\xf8\x88\x80\x80\x80"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << ::testing::PrintToString(std::string(bad));
  }
}

// ---- digests, types, chunks ----------------------------------------------------------------

TEST(TocFieldTest, ParsesOnlySha256Digests) {
  const std::string hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  auto raw = ParseSha256Digest("sha256:" + hex);
  ASSERT_TRUE(raw.has_value());
  EXPECT_EQ((*raw)[0], 0xe3);
  EXPECT_EQ((*raw)[31], 0x55);
  EXPECT_FALSE(ParseSha256Digest("").has_value());
  EXPECT_FALSE(ParseSha256Digest(hex).has_value());
  EXPECT_FALSE(ParseSha256Digest("sha256:" + hex.substr(1)).has_value());
  EXPECT_FALSE(ParseSha256Digest("sha512:" + hex + hex).has_value());
}

TEST(TocFieldTest, EntryTypesRoundTrip) {
  for (TarType type : {TarType::kRegular, TarType::kHardLink, TarType::kSymlink,
                       TarType::kCharDevice, TarType::kBlockDevice, TarType::kDirectory,
                       TarType::kFifo}) {
    auto back = TarTypeFromToc(TocTypeName(type));
    ASSERT_TRUE(back.has_value()) << TocTypeName(type);
    EXPECT_EQ(*back, type);
  }
  EXPECT_EQ(TocTypeName(TarType::kRegular), "reg");
  EXPECT_EQ(TocTypeName(TarType::kDirectory), "dir");
  EXPECT_EQ(TocTypeName(TarType::kHardLink), "hardlink");
  for (const char* other : {"chunk", "", "REG", "file", "reg "}) {
    EXPECT_FALSE(TarTypeFromToc(other).has_value()) << other;
  }
}

TEST(TocFieldTest, ChunkLengthIsTheSizeOrTheRest) {
  EXPECT_EQ(ChunkLength(10, 0, 25), 10u);
  EXPECT_EQ(ChunkLength(0, 20, 25), 5u);   // no size: the rest of the file
  EXPECT_EQ(ChunkLength(5, 20, 25), 5u);   // exactly the rest
  EXPECT_EQ(ChunkLength(6, 20, 25), std::nullopt);  // past the end
  EXPECT_EQ(ChunkLength(0, 25, 25), std::nullopt);  // nothing left
  EXPECT_EQ(ChunkLength(1, 26, 25), std::nullopt);  // already past the end
  EXPECT_EQ(ChunkLength(UINT64_MAX, 1, 25), std::nullopt);
}

// ---- ScanTarHeaders --------------------------------------------------------------------

class ScanTarHeadersTest : public ::testing::Test {
 protected:
  struct Read {
    uint64_t offset;
    size_t length;
  };

  void SetUp() override {
    tar_ = test::TarFile("small", "hello") + test::TarFile("big", std::string(300 << 10, 'x')) +
           test::TarFile("after", "world") + test::EndOfArchive();
  }

  // Reads from tar_ (as if it had `claimed` bytes), recording every read.
  TarReadFn Reader() {
    return [this](uint64_t offset, std::span<uint8_t> out) -> Result<size_t> {
      reads_.push_back({offset, out.size()});
      if (offset >= tar_.size()) return size_t{0};
      const size_t n = std::min<size_t>(out.size(), tar_.size() - offset);
      std::memcpy(out.data(), tar_.data() + offset, n);
      return n;
    };
  }

  Result<std::vector<TarEntry>> Scan(uint64_t size, TarReadSizes sizes, const TarReadFn& read) {
    std::vector<TarEntry> entries;
    TarScanner scanner([&](const TarEntry& e) {
      entries.push_back(e);
      return Status::Ok();
    });
    RETURN_IF_ERROR(ScanTarHeaders(scanner, size, sizes, read));
    return entries;
  }

  std::string tar_;
  std::vector<Read> reads_;
};

TEST_F(ScanTarHeadersTest, SeesTheEntriesAndJumpsOverFileData) {
  auto entries = Scan(tar_.size(), {512, 4096}, Reader());
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  auto want = test::ScanTar(tar_);
  ASSERT_TRUE(want.ok());
  ASSERT_EQ(entries->size(), want->size());
  for (size_t i = 0; i < want->size(); ++i) {
    EXPECT_EQ((*entries)[i].path, (*want)[i].path);
    EXPECT_EQ((*entries)[i].data_offset, (*want)[i].data_offset);
    EXPECT_EQ((*entries)[i].size, (*want)[i].size);
  }
  uint64_t total = 0;
  for (const Read& r : reads_) {
    EXPECT_LE(r.offset + r.length, tar_.size());  // never past the end
    EXPECT_LE(r.length, 4096u);
    total += r.length;
  }
  EXPECT_LT(total, 64u << 10);  // the 300 KiB file was jumped over
}

TEST_F(ScanTarHeadersTest, ReadsDoubleUntilAJump) {
  // Four directories (headers back to back), then a file whose data is jumped over.
  std::string dirs;
  for (const char* d : {"a/", "b/", "c/", "d/"}) dirs += test::TarFile(d, "", '5');
  tar_ = dirs + test::TarFile("big", std::string(300 << 10, 'x')) + test::TarFile("after", "") +
         test::EndOfArchive();
  ASSERT_TRUE(Scan(tar_.size(), {512, 2048}, Reader()).ok());
  ASSERT_GE(reads_.size(), 4u);
  EXPECT_EQ(reads_[0].offset, 0u);
  EXPECT_EQ(reads_[0].length, 512u);
  EXPECT_EQ(reads_[1].offset, 512u);
  EXPECT_EQ(reads_[1].length, 1024u);
  EXPECT_EQ(reads_[2].offset, 1536u);
  EXPECT_EQ(reads_[2].length, 2048u);  // capped at the largest size
  // "big"'s data is jumped over: the next read starts past it, at the first size again.
  const uint64_t after = dirs.size() + 512 + (300 << 10);
  bool restarted = false;
  for (size_t i = 3; i < reads_.size() && !restarted; ++i) {
    if (reads_[i].offset >= after) {
      EXPECT_EQ(reads_[i].offset, after);
      EXPECT_EQ(reads_[i].length, 512u);
      restarted = true;
    }
  }
  EXPECT_TRUE(restarted);
}

TEST_F(ScanTarHeadersTest, FixedSizeReads) {
  ASSERT_TRUE(Scan(tar_.size(), {1024, 1024}, Reader()).ok());
  for (const Read& r : reads_) {
    EXPECT_TRUE(r.length == 1024 || r.offset + r.length == tar_.size()) << r.offset;
  }
}

TEST_F(ScanTarHeadersTest, InputEndingEarlyIsReportedByTheScanner) {
  const uint64_t cut = 512 + 512 + 512 + 1000;  // inside "big"'s data
  tar_.resize(cut);
  auto entries = Scan(cut + 4096, {512, 4096}, Reader());  // claims more than there is
  EXPECT_FALSE(entries.ok());
}

TEST_F(ScanTarHeadersTest, ReadErrorsPassThrough) {
  int calls = 0;
  auto entries = Scan(tar_.size(), {512, 512},
                      [&](uint64_t offset, std::span<uint8_t> out) -> Result<size_t> {
                        if (++calls == 2) return Status::Unavailable("injected");
                        return Reader()(offset, out);
                      });
  ASSERT_FALSE(entries.ok());
  EXPECT_EQ(entries.status().code(), Code::kUnavailable);
}

TEST_F(ScanTarHeadersTest, StopsAtTheEndOfTheArchive) {
  const size_t archive = tar_.size();
  tar_ += std::string(8192, 'z');  // trailing bytes after the end-of-archive blocks
  ASSERT_TRUE(Scan(tar_.size(), {512, 512}, Reader()).ok());
  for (const Read& r : reads_) EXPECT_LT(r.offset, archive);
}

}  // namespace
}  // namespace imagefs::index::internal
