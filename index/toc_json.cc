#include "index/toc_json.h"

#include <nlohmann/json.hpp>

#include <cstddef>
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
  bool number_integer(number_integer_t n) override {
    TocValue v;
    if (n >= 0) {
      v.kind = TocValue::Kind::kUnsigned;
      v.u = static_cast<uint64_t>(n);
    } else {
      v.kind = TocValue::Kind::kNegative;
      v.i = n;
    }
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
  const bool ok = SaxJson::sax_parse(text.begin(), text.end(), &sax,
                                     nlohmann::detail::input_format_t::json, /*strict=*/true);
  if (!ok) return Status::Corruption("not valid JSON (" + sax.error() + ")");
  return doc;
}

}  // namespace imagefs::index
