#include "index/toc_json.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace imagefs::index {
namespace {

using SaxJson = nlohmann::json;

// Builds a TocDocument from SAX events. Frames say what the innermost open container is.
class TocSax final : public nlohmann::json_sax<SaxJson> {
 public:
  explicit TocSax(TocDocument& doc) : doc_(doc) {}

  bool null() override { return Scalar(TocValue{}); }
  bool boolean(bool) override {
    TocValue v;
    v.kind = TocValue::Kind::kBool;
    return Scalar(std::move(v));
  }
  // Only for literals with a minus sign ("-0" too: an integer, not unsigned, as in a DOM).
  bool number_integer(number_integer_t n) override {
    TocValue v;
    v.kind = TocValue::Kind::kNegative;
    v.i = n;
    return Scalar(std::move(v));
  }
  bool number_unsigned(number_unsigned_t n) override {
    TocValue v;
    v.kind = TocValue::Kind::kUnsigned;
    v.u = n;
    return Scalar(std::move(v));
  }
  bool number_float(number_float_t, const string_t&) override {
    TocValue v;
    v.kind = TocValue::Kind::kFloat;
    return Scalar(std::move(v));
  }
  bool string(string_t& s) override {
    TocValue v;
    v.kind = TocValue::Kind::kString;
    v.s = std::move(s);
    return Scalar(std::move(v));
  }
  bool binary(binary_t&) override { return Scalar(TocValue{}); }  // not produced by JSON text
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool start_object(std::size_t) override { return Open(TocValue::Kind::kObject); }
  bool start_array(std::size_t) override { return Open(TocValue::Kind::kArray); }
  bool end_object() override { return Close(); }
  bool end_array() override { return Close(); }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& e) override {
    error_ = "byte " + std::to_string(position) + ": " + e.what();
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  enum class Frame : uint8_t { kTop, kEntries, kEntry, kFieldObject, kIgnore };
  static constexpr size_t kEntryFields = 16;  // what an entry usually has, at most

  bool Scalar(TocValue v) {
    if (frames_.empty()) {
      doc_.is_object = false;
      return true;
    }
    switch (frames_.back()) {
      case Frame::kTop:
        if (key_ == "entries") {
          doc_.has_entries = true;
          doc_.entries_is_array = false;
        } else {
          doc_.top.fields.emplace_back(std::move(key_), std::move(v));
        }
        break;
      case Frame::kEntries: {
        TocObject& e = doc_.entries.emplace_back();
        e.is_object = false;
        break;
      }
      case Frame::kEntry:
        doc_.entries.back().fields.emplace_back(std::move(key_), std::move(v));
        break;
      case Frame::kFieldObject: {
        TocStringMap& obj = *doc_.entries.back().fields.back().second.object;
        if (v.kind != TocValue::Kind::kString) {
          NoteBadMember(obj);
          break;
        }
        for (auto& [k, value] : obj.members) {
          if (k == key_) {
            value = std::move(v.s);
            return true;
          }
        }
        obj.members.emplace_back(std::move(key_), std::move(v.s));
        break;
      }
      case Frame::kIgnore:
        break;
    }
    return true;
  }

  bool Open(TocValue::Kind kind) {
    const bool object = kind == TocValue::Kind::kObject;
    if (frames_.empty()) {
      if (!object) doc_.is_object = false;
      frames_.push_back(object ? Frame::kTop : Frame::kIgnore);
      return true;
    }
    TocValue v;
    v.kind = kind;
    switch (frames_.back()) {
      case Frame::kTop:
        if (key_ == "entries") {
          doc_.has_entries = true;
          doc_.entries_is_array = !object;
          if (!object) {
            doc_.entries.clear();  // a repeated "entries": the last counts
            frames_.push_back(Frame::kEntries);
            return true;
          }
        } else {
          doc_.top.fields.emplace_back(std::move(key_), std::move(v));
        }
        frames_.push_back(Frame::kIgnore);
        return true;
      case Frame::kEntries: {
        TocObject& e = doc_.entries.emplace_back();
        e.is_object = object;
        if (object) e.fields.reserve(kEntryFields);
        frames_.push_back(object ? Frame::kEntry : Frame::kIgnore);
        return true;
      }
      case Frame::kEntry:
        if (object) v.object = std::make_unique<TocStringMap>();
        doc_.entries.back().fields.emplace_back(std::move(key_), std::move(v));
        frames_.push_back(object ? Frame::kFieldObject : Frame::kIgnore);
        return true;
      case Frame::kFieldObject:
        NoteBadMember(*doc_.entries.back().fields.back().second.object);
        frames_.push_back(Frame::kIgnore);
        return true;
      case Frame::kIgnore:
        frames_.push_back(Frame::kIgnore);
        return true;
    }
    return true;
  }

  bool Close() {
    if (!frames_.empty()) frames_.pop_back();
    return true;
  }

  void NoteBadMember(TocStringMap& obj) {
    if (obj.has_bad_member) return;
    obj.has_bad_member = true;
    obj.bad_member = key_;
  }

  TocDocument& doc_;
  std::vector<Frame> frames_;
  std::string key_;
  std::string error_;
};

// A strict JSON reader (RFC 8259 as nlohmann reads it: UTF-8 checked in strings, a leading
// BOM skipped, nothing but white space after the value) that feeds TocSax the events
// nlohmann's SAX parser would. Hand-written because the TOC's decode is on a cold start's
// critical path and nlohmann's lexer reads a character at a time through a virtual-free
// but byte-by-byte adapter: most of the TOC's 70 ms went there (docs/architecture.md).
class TocReader {
 public:
  TocReader(std::string_view text, TocSax& sax)
      : p_(text.data()), end_(text.data() + text.size()), begin_(text.data()), sax_(sax) {}

  bool Parse() {
    if (end_ - p_ >= 3 && static_cast<uint8_t>(p_[0]) == 0xEF &&
        static_cast<uint8_t>(p_[1]) == 0xBB && static_cast<uint8_t>(p_[2]) == 0xBF) {
      p_ += 3;
    }
    std::vector<char> stack;  // '{' or '[' per open container
    for (;;) {
      // A value.
      SkipSpace();
      if (p_ == end_) return Fail("a value expected");
      const char c = *p_;
      if (c == '{' || c == '[') {
        const bool object = c == '{';
        ++p_;
        (void)(object ? sax_.start_object(static_cast<std::size_t>(-1))
                      : sax_.start_array(static_cast<std::size_t>(-1)));
        SkipSpace();
        if (p_ == end_ || *p_ != (object ? '}' : ']')) {
          stack.push_back(c);
          if (object && !Key()) return false;
          continue;  // the container's first value
        }
        ++p_;  // empty
        (void)(object ? sax_.end_object() : sax_.end_array());
      } else if (!Scalar()) {
        return false;
      }
      // After a value: a separator, the end of containers, or the end of the text.
      for (;;) {
        SkipSpace();
        if (stack.empty()) return p_ == end_ ? true : Fail("text after the value");
        if (p_ == end_) return Fail("unexpected end");
        const char open = stack.back();
        const char d = *p_++;
        if (d == ',') {
          if (open == '{' && !Key()) return false;
          break;  // the next value
        }
        if (d == (open == '{' ? '}' : ']')) {
          stack.pop_back();
          (void)(open == '{' ? sax_.end_object() : sax_.end_array());
          continue;
        }
        --p_;
        return Fail(open == '{' ? "',' or '}' expected" : "',' or ']' expected");
      }
    }
  }

  const std::string& error() const { return error_; }

 private:
  void SkipSpace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  bool Fail(const char* what) {
    error_ = "byte " + std::to_string(p_ - begin_) + ": " + what;
    return false;
  }

  // A member name and its ':'.
  bool Key() {
    SkipSpace();
    if (p_ == end_ || *p_ != '"') return Fail("a member name expected");
    ++p_;
    if (!String()) return false;
    (void)sax_.key(buf_);
    SkipSpace();
    if (p_ == end_ || *p_ != ':') return Fail("':' expected");
    ++p_;
    return true;
  }

  bool Scalar() {
    const char c = *p_;
    if (c == '"') {
      ++p_;
      if (!String()) return false;
      (void)sax_.string(buf_);
      return true;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return Number();
    auto literal = [&](std::string_view word) {
      if (static_cast<size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) {
        return false;
      }
      p_ += word.size();
      return true;
    };
    if (literal("true")) {
      (void)sax_.boolean(true);
    } else if (literal("false")) {
      (void)sax_.boolean(false);
    } else if (literal("null")) {
      (void)sax_.null();
    } else {
      return Fail("a value expected");
    }
    return true;
  }

  bool Number() {
    const char* start = p_;
    const bool negative = *p_ == '-';
    if (negative) ++p_;
    if (p_ == end_ || *p_ < '0' || *p_ > '9') return Fail("a digit expected");
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    bool integer = true;
    if (p_ != end_ && *p_ == '.') {
      integer = false;
      ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return Fail("a digit expected");
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      integer = false;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return Fail("a digit expected");
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (integer) {
      // As nlohmann: an integer that does not fit is a float.
      const char* digits = start + (negative ? 1 : 0);
      uint64_t v = 0;
      bool fits = true;
      for (const char* q = digits; q != p_; ++q) {
        const uint64_t d = static_cast<uint64_t>(*q - '0');
        if (v > (UINT64_MAX - d) / 10) {
          fits = false;
          break;
        }
        v = v * 10 + d;
      }
      if (fits && !negative) {
        (void)sax_.number_unsigned(v);
        return true;
      }
      if (fits && v <= static_cast<uint64_t>(INT64_MAX) + 1) {
        const int64_t n =
            v == static_cast<uint64_t>(INT64_MAX) + 1 ? INT64_MIN : -static_cast<int64_t>(v);
        (void)sax_.number_integer(n);
        return true;
      }
    }
    // The value is not kept (TocValue::kFloat), but one too large for a double is an
    // error, as nlohmann has it.
    const std::string text(start, p_);
    const double value = std::strtod(text.c_str(), nullptr);
    if (!std::isfinite(value)) return Fail("a number too large");
    (void)sax_.number_float(value, text);
    return true;
  }

  // The rest of a string after its opening quote, into buf_.
  bool String() {
    buf_.clear();
    for (;;) {
      const char* run = p_;
      while (p_ != end_) {
        const uint8_t b = static_cast<uint8_t>(*p_);
        if (b == '"' || b == '\\' || b < 0x20 || b >= 0x80) break;
        ++p_;
      }
      buf_.append(run, p_);
      if (p_ == end_) return Fail("unterminated string");
      const uint8_t b = static_cast<uint8_t>(*p_);
      if (b == '"') {
        ++p_;
        return true;
      }
      if (b < 0x20) return Fail("a control character in a string");
      if (b >= 0x80) {
        if (!Utf8()) return false;
        continue;
      }
      // An escape.
      ++p_;
      if (p_ == end_) return Fail("unterminated string");
      switch (*p_++) {
        case '"': buf_ += '"'; break;
        case '\\': buf_ += '\\'; break;
        case '/': buf_ += '/'; break;
        case 'b': buf_ += '\b'; break;
        case 'f': buf_ += '\f'; break;
        case 'n': buf_ += '\n'; break;
        case 'r': buf_ += '\r'; break;
        case 't': buf_ += '\t'; break;
        case 'u': {
          int cp = Hex4();
          if (cp < 0) return Fail("a bad \\u escape");
          if (cp >= 0xDC00 && cp <= 0xDFFF) return Fail("a lone low surrogate");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return Fail("a lone high surrogate");
            p_ += 2;
            const int low = Hex4();
            if (low < 0xDC00 || low > 0xDFFF) return Fail("a bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          AppendUtf8(cp);
          break;
        }
        default:
          --p_;
          return Fail("a bad escape");
      }
    }
  }

  int Hex4() {
    if (end_ - p_ < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = *p_++;
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= h - '0';
      } else if (h >= 'a' && h <= 'f') {
        v |= h - 'a' + 10;
      } else if (h >= 'A' && h <= 'F') {
        v |= h - 'A' + 10;
      } else {
        return -1;
      }
    }
    return v;
  }

  void AppendUtf8(int cp) {
    if (cp < 0x80) {
      buf_ += static_cast<char>(cp);
    } else if (cp < 0x800) {
      buf_ += static_cast<char>(0xC0 | (cp >> 6));
      buf_ += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      buf_ += static_cast<char>(0xE0 | (cp >> 12));
      buf_ += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      buf_ += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      buf_ += static_cast<char>(0xF0 | (cp >> 18));
      buf_ += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      buf_ += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      buf_ += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // One multi-byte UTF-8 sequence, checked as RFC 3629's table says.
  bool Utf8() {
    const uint8_t b0 = static_cast<uint8_t>(*p_);
    int more = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      more = 1;
    } else if (b0 == 0xE0) {
      more = 2, lo = 0xA0;
    } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
      more = 2;
    } else if (b0 == 0xED) {
      more = 2, hi = 0x9F;
    } else if (b0 == 0xF0) {
      more = 3, lo = 0x90;
    } else if (b0 >= 0xF1 && b0 <= 0xF3) {
      more = 3;
    } else if (b0 == 0xF4) {
      more = 3, hi = 0x8F;
    } else {
      return Fail("invalid UTF-8");
    }
    if (end_ - p_ <= more) return Fail("invalid UTF-8");
    for (int i = 1; i <= more; ++i) {
      const uint8_t b = static_cast<uint8_t>(p_[i]);
      if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return Fail("invalid UTF-8");
    }
    buf_.append(p_, p_ + more + 1);
    p_ += more + 1;
    return true;
  }

  const char* p_;
  const char* const end_;
  const char* const begin_;
  TocSax& sax_;
  std::string buf_;
  std::string error_;
};

}  // namespace

const TocValue* TocObject::Find(std::string_view key) const {
  for (auto it = fields.rbegin(); it != fields.rend(); ++it) {
    if (it->first == key) return &it->second;
  }
  return nullptr;
}

std::string_view TocObject::StringOr(std::string_view key) const {
  const TocValue* v = Find(key);
  return v != nullptr && v->is_string() ? std::string_view(v->s) : std::string_view();
}

Result<TocDocument> ParseTocJson(std::string_view text) {
  TocDocument doc;
  TocSax sax(doc);
  TocReader reader(text, sax);
  if (!reader.Parse()) return Status::Corruption("not valid JSON (" + reader.error() + ")");
  return doc;
}

}  // namespace imagefs::index
