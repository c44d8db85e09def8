#pragma once

// A seekable layer's TOC (zstd:chunked's manifest, eStargz's stargz.index.json) read in one
// pass into flat entries, instead of a JSON DOM.
//
// Why: opening an image's indexes is on a cold start's critical path, and for the nginx
// image's 2.8 MB zstd:chunked TOC (9,200 entries) building nlohmann's DOM — a std::map per
// entry, a node per key — and freeing it was most of the ~75 ms the index took to open.
// The TOC's shape is fixed: an object whose "entries" array holds flat objects of scalars
// (and one object of strings, "xattrs"). This keeps exactly that, in order, and only the
// kinds of anything else, so the readers can still reject what is malformed with the same
// errors: a field of the wrong type, an entry that is not an object, a TOC that is not an
// object or has no entries array. Duplicate keys: the last one counts, as in a DOM.
//
// The JSON is read by a hand-written strict reader (RFC 8259 as nlohmann reads it, checked
// against nlohmann's DOM parser by tests/index/toc_json_test.cc) that feeds nlohmann's SAX
// interface: nlohmann's own lexer was most of the time left.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/status.h"

namespace imagefs::index {

// An object member of an entry (xattrs): its members whose values are strings, in order
// (a repeated key keeps its last value); bad_member names the first member that is not a
// string, when has_bad_member.
struct TocStringMap {
  std::vector<std::pair<std::string, std::string>> members;
  std::string bad_member;
  bool has_bad_member = false;
};

struct TocValue {
  enum class Kind : uint8_t { kNull, kBool, kUnsigned, kNegative, kFloat, kString, kObject, kArray };
  Kind kind = Kind::kNull;
  uint64_t u = 0;  // kUnsigned
  int64_t i = 0;   // kNegative: an integer written with a minus sign ("-0" included)
  std::string s;   // kString
  std::unique_ptr<TocStringMap> object;  // kObject inside an entry (null elsewhere)

  bool is_null() const { return kind == Kind::kNull; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_object() const { return kind == Kind::kObject; }
  // As nlohmann's: unsigned is a non-negative integer; integer is any integer.
  bool is_unsigned() const { return kind == Kind::kUnsigned; }
  bool is_integer() const { return kind == Kind::kUnsigned || kind == Kind::kNegative; }
  // The integer's value (is_integer()); unsigned values above INT64_MAX do not fit.
  int64_t as_int64() const { return kind == Kind::kNegative ? i : static_cast<int64_t>(u); }
};

// One JSON object's scalar members (and the kinds of the rest), in order.
struct TocObject {
  bool is_object = true;  // false: an element of "entries" that is not an object
  std::vector<std::pair<std::string, TocValue>> fields;
  // The member named key (the last one when repeated), or null.
  const TocValue* Find(std::string_view key) const;
  // The member's string value, "" when absent, null or not a string.
  std::string_view StringOr(std::string_view key) const;
};

struct TocDocument {
  bool is_object = true;        // the top level is an object
  TocObject top;                // its members other than "entries"
  bool has_entries = false;     // it has an "entries" member
  bool entries_is_array = false;
  std::vector<TocObject> entries;
};

// Parses text; an invalid JSON text is a Corruption naming what and where.
Result<TocDocument> ParseTocJson(std::string_view text);

}  // namespace imagefs::index
