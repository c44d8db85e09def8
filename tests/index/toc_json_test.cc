// ParseTocJson against nlohmann's DOM parser, which it replaces in the TOC readers: the same
// texts accepted, and the same members with the same kinds and values.

#include "index/toc_json.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace imagefs::index {
namespace toc_json_test {
namespace {

using Json = nlohmann::json;

const char* const kSample = R"({
  "version": 1,
  "imagefsPrefetchEndOffset": 1234,
  "extra": {"nested": [1, 2, {"deep": true}]},
  "entries": [
    {"type": "dir", "name": "etc/", "mode": 493, "uid": 0, "gid": 0,
     "modtime": "2024-01-02T03:04:05Z"},
    {"type": "reg", "name": "etc/passwd", "mode": 420, "size": 11, "offset": 100,
     "endOffset": 140, "digest": "sha256:00", "xattrs": {"user.b": "Yg==", "user.a": "YQ=="}},
    {"type": "chunk", "name": "etc/passwd", "chunkOffset": 5, "chunkSize": 6, "ratio": 0.5,
     "neg": -7, "nothing": null, "flag": false, "list": [1, "x"], "esc": "a\"b\\u00e9\n"},
    {"type": "symlink", "name": "x", "linkName": "y", "name": "z"}
  ]
})";

// Every member of a DOM entry is found with the same kind and value.
void ExpectSameObject(const Json& dom, const TocObject& flat) {
  ASSERT_TRUE(dom.is_object());
  ASSERT_TRUE(flat.is_object);
  for (auto it = dom.begin(); it != dom.end(); ++it) {
    SCOPED_TRACE(it.key());
    const TocValue* v = flat.Find(it.key());
    ASSERT_NE(v, nullptr);
    const Json& d = it.value();
    EXPECT_EQ(v->is_null(), d.is_null());
    EXPECT_EQ(v->is_string(), d.is_string());
    EXPECT_EQ(v->is_unsigned(), d.is_number_unsigned());
    EXPECT_EQ(v->is_integer(), d.is_number_integer());
    EXPECT_EQ(v->is_object(), d.is_object());
    if (d.is_string()) {
      EXPECT_EQ(v->s, d.get<std::string>());
    }
    if (d.is_number_unsigned()) {
      EXPECT_EQ(v->u, d.get<uint64_t>());
    }
    if (d.is_number_integer()) {
      EXPECT_EQ(v->as_int64(), d.get<int64_t>());
    }
    if (d.is_object()) {
      ASSERT_NE(v->object, nullptr);
      bool all_strings = true;
      size_t strings = 0;
      for (auto m = d.begin(); m != d.end(); ++m) {
        if (!m.value().is_string()) {
          all_strings = false;
          continue;
        }
        ++strings;
        bool found = false;
        for (const auto& [k, s] : v->object->members) {
          if (k == m.key()) {
            found = true;
            EXPECT_EQ(s, m.value().get<std::string>());
          }
        }
        EXPECT_TRUE(found) << m.key();
      }
      EXPECT_EQ(v->object->has_bad_member, !all_strings);
      EXPECT_EQ(v->object->members.size(), strings);
    }
  }
}

void ExpectSameDocument(const std::string& text) {
  const Json dom = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto flat = ParseTocJson(text);
  ASSERT_EQ(flat.ok(), !dom.is_discarded()) << text;
  if (!flat.ok()) return;
  ASSERT_EQ(flat->is_object, dom.is_object());
  if (!dom.is_object()) return;
  auto entries = dom.find("entries");
  ASSERT_EQ(flat->has_entries, entries != dom.end());
  if (entries == dom.end()) return;
  ASSERT_EQ(flat->entries_is_array, entries->is_array());
  if (!entries->is_array()) return;
  ASSERT_EQ(flat->entries.size(), entries->size());
  for (size_t i = 0; i < entries->size(); ++i) {
    const Json& e = (*entries)[i];
    ASSERT_EQ(flat->entries[i].is_object, e.is_object()) << i;
    if (e.is_object()) ExpectSameObject(e, flat->entries[i]);
  }
  for (auto it = dom.begin(); it != dom.end(); ++it) {
    if (it.key() == "entries") continue;
    const TocValue* v = flat->top.Find(it.key());
    ASSERT_NE(v, nullptr) << it.key();
    EXPECT_EQ(v->is_unsigned(), it.value().is_number_unsigned());
    if (it.value().is_number_unsigned()) {
      EXPECT_EQ(v->u, it.value().get<uint64_t>());
    }
  }
}

TEST(TocJsonTest, SampleMatchesTheDom) {
  ExpectSameDocument(kSample);
  auto doc = ParseTocJson(kSample);
  ASSERT_TRUE(doc.ok());
  ASSERT_EQ(doc->entries.size(), 4u);
  EXPECT_EQ(doc->entries[3].StringOr("name"), "z");  // a repeated key: the last counts
  EXPECT_EQ(doc->entries[0].StringOr("missing"), "");
  EXPECT_EQ(doc->entries[2].StringOr("chunkSize"), "");  // not a string
  EXPECT_EQ(doc->entries[2].Find("neg")->as_int64(), -7);
  EXPECT_FALSE(doc->entries[2].Find("ratio")->is_integer());
}

TEST(TocJsonTest, ShapesOtherThanATocAreReported) {
  for (const char* text : {"[]", "1", "\"x\"", "null", "{}", "{\"entries\": {}}",
                           "{\"entries\": [1, [2], {\"a\": 1}]}",
                           "{\"entries\": [], \"entries\": 3}",
                           "{\"entries\": 3, \"entries\": [{\"a\": 1}]}",
                           "{\"entries\": [{\"xattrs\": {\"a\": 1, \"b\": \"Yg==\", \"b\": \"Yw==\"}}]}",
                           "{\"entries\": [{\"xattrs\": {\"a\": {\"x\": 1}}}]}"}) {
    SCOPED_TRACE(text);
    ExpectSameDocument(text);
  }
  auto dup = ParseTocJson("{\"entries\": [{\"xattrs\": {\"b\": \"1\", \"b\": \"2\"}}]}");
  ASSERT_TRUE(dup.ok());
  const TocValue* x = dup->entries[0].Find("xattrs");
  ASSERT_EQ(x->object->members.size(), 1u);
  EXPECT_EQ(x->object->members[0].second, "2");
  auto bad = ParseTocJson("{\"entries\": [{\"xattrs\": {\"ok\": \"1\", \"n\": 2}}]}");
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->entries[0].Find("xattrs")->object->bad_member, "n");
}

TEST(TocJsonTest, InvalidJsonIsRejectedAsTheDomRejectsIt) {
  for (const char* text : {"", "{", "{\"entries\": [}", "{\"a\": 01}", "{\"a\": \"\\x\"}",
                           "{\"a\": \"\xff\"}", "{\"a\": 1,}", "{} {}", "{\"a\": NaN}"}) {
    SCOPED_TRACE(text);
    ExpectSameDocument(text);
    EXPECT_FALSE(ParseTocJson(text).ok());
  }
}

// The corners of the hand-written reader (index/toc_json.cc): numbers at and past the
// integer limits, escapes and surrogates, UTF-8 the RFC's table allows and forbids, a BOM,
// white space, nesting.
TEST(TocJsonTest, CornersAgreeWithTheDom) {
  const std::vector<std::string> values = {
      "0", "-0", "7", "-7", "18446744073709551615", "18446744073709551616",
      "-9223372036854775808", "-9223372036854775809", "1.5", "-1.5e3", "1E+2", "1e-2",
      "1e999", "-1e999", "1e-999", "00", "-", "1.", ".5", "1e", "+1", "0x10", "1.0e", "-a",
      "\"\"", "\"\\u0041\\u00e9\\u20ac\"", "\"\\ud83d\\ude00\"", "\"\\ud83d\"",
      "\"\\ude00\"", "\"\\ud83d\\u0041\"", "\"\\u00\"", "\"\\u00G0\"",
      "\"\\/\\b\\f\\n\\r\\t\"", "\"\\a\"", "\"\\u0000\"",
      "\"\xc3\xa9\"", "\"\xc0\x80\"", "\"\xe0\x80\x80\"", "\"\xe0\xa0\x80\"",
      "\"\xed\xa0\x80\"", "\"\xed\x9f\xbf\"", "\"\xf0\x90\x80\x80\"",
      "\"\xf4\x8f\xbf\xbf\"", "\"\xf4\x90\x80\x80\"", "\"\xf5\x80\x80\x80\"",
      "\"\xc3\"", "\"\x7f\"", "\"\x01\"", "\"a\tb\"", "true", "false", "null",
      "tru", "nul", "[]", "{}", "[1,]", "[,1]", "[[[[[[[[]]]]]]]]", "{\"a\":{\"b\":[{}]}}",
      "{\"a\" 1}", "{1:2}", "{\"a\":1,\"a\":2}"};
  for (const std::string& v : values) {
    for (const std::string& text :
         {"{\"entries\": [{\"name\": " + v + "}], \"v\": " + v + "}",
          "\xef\xbb\xbf {\"x\" :\t" + v + "\r\n}", v}) {
      SCOPED_TRACE(text);
      ExpectSameDocument(text);
    }
  }
  ExpectSameDocument("\xef\xbb{}");
  ExpectSameDocument("{}\x00");
}

// Random byte flips, insertions and truncations of the sample: the two parsers agree on
// every one.
TEST(TocJsonTest, MutationsAgreeWithTheDom) {
  std::mt19937 rng(7);
  const std::string sample = kSample;
  const std::string alphabet = "{}[]\",:0123456789-.eE \\ntfrul\x80\xc3";
  for (int round = 0; round < 4000; ++round) {
    std::string text = sample;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits && !text.empty(); ++k) {
      const size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0: text[at] = alphabet[rng() % alphabet.size()]; break;
        case 1: text.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
        default: text.resize(at); break;
      }
    }
    ExpectSameDocument(text);
    if (::testing::Test::HasFailure()) break;
  }
}

}  // namespace
}  // namespace toc_json_test
}  // namespace imagefs::index
