#include "tools/format.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

namespace imagefs::tools {
namespace {

size_t RuneCount(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool Digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// Days since 1970-01-01 of a civil date (proleptic Gregorian).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

struct Piece {
  bool field;
  std::string text;  // literal text, or the field name
};

Result<std::vector<Piece>> ParseTemplate(std::string_view tmpl) {
  std::vector<Piece> out;
  std::string literal;
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl.compare(i, 2, "{{") == 0) {
      size_t end = tmpl.find("}}", i + 2);
      if (end == std::string_view::npos) {
        return Status::InvalidArgument("template: unclosed action in \"" + std::string(tmpl) + "\"");
      }
      std::string_view inner = tmpl.substr(i + 2, end - i - 2);
      while (!inner.empty() && inner.front() == ' ') inner.remove_prefix(1);
      while (!inner.empty() && inner.back() == ' ') inner.remove_suffix(1);
      if (inner.size() < 2 || inner[0] != '.') {
        return Status::InvalidArgument("template: unsupported action \"{{" + std::string(inner) +
                                       "}}\" (only {{.Field}} is supported)");
      }
      if (!literal.empty()) out.push_back({false, std::move(literal)});
      literal.clear();
      out.push_back({true, std::string(inner.substr(1))});
      i = end + 2;
    } else if (tmpl.compare(i, 2, "\\t") == 0) {
      literal += '\t';
      i += 2;
    } else if (tmpl.compare(i, 2, "\\n") == 0) {
      literal += '\n';
      i += 2;
    } else {
      literal += tmpl[i++];
    }
  }
  if (!literal.empty()) out.push_back({false, std::move(literal)});
  return out;
}

Result<std::string> Render(const std::vector<Piece>& pieces, const Row& row) {
  std::string out;
  for (const Piece& p : pieces) {
    if (!p.field) {
      out += p.text;
      continue;
    }
    auto it = row.find(p.text);
    if (it == row.end()) {
      return Status::InvalidArgument("template: can't evaluate field " + p.text);
    }
    out += it->second;
  }
  return out;
}

// tabwriter state: lines of cells; the cell after the last tab of a line is its trailing
// cell, printed unpadded.
using Lines = std::vector<std::vector<std::string>>;

void WriteLines(const Lines& lines, size_t from, size_t to, const std::vector<size_t>& widths,
                std::string* out) {
  for (size_t l = from; l < to; ++l) {
    const auto& line = lines[l];
    for (size_t j = 0; j < line.size(); ++j) {
      *out += line[j];
      if (j < widths.size() && j + 1 < line.size()) {
        size_t w = RuneCount(line[j]);
        if (widths[j] > w) out->append(widths[j] - w, ' ');
      }
    }
    if (l + 1 < lines.size() || !line.empty()) *out += '\n';
  }
}

// Go's tabwriter.Writer.format: a column block is a run of consecutive lines that have a
// cell in this column (not counting their trailing cell).
size_t Format(const Lines& lines, size_t line0, size_t line1, std::vector<size_t>* widths,
              std::string* out) {
  constexpr size_t kMinWidth = 10;
  constexpr size_t kPadding = 3;
  size_t column = widths->size();
  for (size_t t = line0; t < line1; ++t) {
    if (column + 1 >= lines[t].size()) continue;
    WriteLines(lines, line0, t, *widths, out);
    line0 = t;
    size_t width = kMinWidth;
    for (; t < line1; ++t) {
      if (column + 1 >= lines[t].size()) break;
      width = std::max(width, RuneCount(lines[t][column]) + kPadding);
    }
    widths->push_back(width);
    Format(lines, line0, t, widths, out);
    widths->pop_back();
    line0 = t;  // line t (if any) has no cell in this column: the loop's ++t skips it
  }
  WriteLines(lines, line0, line1, *widths, out);
  return line1;
}

}  // namespace

Result<int64_t> ParseRfc3339(std::string_view s) {
  int y, mo, d, h, mi, sec;
  if (!Digits(s, 0, 4, &y) || s.size() < 19 || s[4] != '-' || !Digits(s, 5, 2, &mo) ||
      s[7] != '-' || !Digits(s, 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !Digits(s, 11, 2, &h) || s[13] != ':' || !Digits(s, 14, 2, &mi) || s[16] != ':' ||
      !Digits(s, 17, 2, &sec) || mo < 1 || mo > 12 || d < 1 || d > 31) {
    return Status::InvalidArgument("not an RFC 3339 time: \"" + std::string(s) + "\"");
  }
  size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  }
  int64_t offset = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh, om;
    if (!Digits(s, i + 1, 2, &oh) || i + 3 >= s.size() || s[i + 3] != ':' ||
        !Digits(s, i + 4, 2, &om)) {
      return Status::InvalidArgument("not an RFC 3339 time: \"" + std::string(s) + "\"");
    }
    offset = (s[i] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    i += 6;
  } else {
    return Status::InvalidArgument("RFC 3339 time without a zone: \"" + std::string(s) + "\"");
  }
  if (i != s.size()) return Status::InvalidArgument("not an RFC 3339 time: \"" + std::string(s) + "\"");
  int64_t days = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  return days * 86400 + h * 3600 + mi * 60 + sec - offset;
}

std::string HumanDuration(int64_t seconds) {
  if (seconds < 1) return "Less than a second";
  if (seconds == 1) return "1 second";
  if (seconds < 60) return std::to_string(seconds) + " seconds";
  int64_t minutes = seconds / 60;
  if (minutes == 1) return "About a minute";
  if (minutes < 60) return std::to_string(minutes) + " minutes";
  int64_t hours = (seconds + 1800) / 3600;  // Go: d.Round(time.Hour)
  if (hours == 1) return "About an hour";
  if (hours < 48) return std::to_string(hours) + " hours";
  if (hours < 24 * 7 * 2) return std::to_string(hours / 24) + " days";
  if (hours < 24 * 30 * 2) return std::to_string(hours / 24 / 7) + " weeks";
  if (hours < 24 * 365 * 2) return std::to_string(hours / 24 / 30) + " months";
  return std::to_string(seconds / 3600 / 24 / 365) + " years";
}

std::string CreatedSince(int64_t created, int64_t now) {
  if (created == 0) return "N/A";
  return HumanDuration(now - created) + " ago";
}

std::string CreatedAt(int64_t created) {
  time_t t = static_cast<time_t>(created);
  struct tm tm;
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %z %Z", &tm);
  return buf;
}

std::string Ellipsis(std::string_view text, size_t max_runes) {
  if (RuneCount(text) <= max_runes) return std::string(text);
  std::string out;
  size_t runes = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) {
      if (runes == max_runes - 1) break;
      ++runes;
    }
    out += text[i];
  }
  return out + "…";
}

std::string TabWrite(std::string_view text) {
  Lines lines;
  std::vector<std::string> line(1);
  for (char c : text) {
    if (c == '\t') {
      line.emplace_back();
    } else if (c == '\n') {
      lines.push_back(std::move(line));
      line.assign(1, "");
    } else {
      line.back() += c;
    }
  }
  if (line.size() > 1 || !line[0].empty()) lines.push_back(std::move(line));
  std::string out;
  std::vector<size_t> widths;
  Format(lines, 0, lines.size(), &widths, &out);
  return out;
}

bool TemplateUses(const std::string& format, const std::string& field) {
  auto pieces = ParseTemplate(format);
  if (!pieces.ok()) return false;
  return std::any_of(pieces->begin(), pieces->end(),
                     [&](const Piece& p) { return p.field && p.text == field; });
}

Result<std::string> RenderRows(const std::string& format, const std::string& default_table,
                               const std::map<std::string, std::string>& headers,
                               const std::vector<Row>& rows) {
  std::string f = format.empty() ? default_table : format;
  while (!f.empty() && f.front() == ' ') f.erase(f.begin());
  while (!f.empty() && f.back() == ' ') f.pop_back();
  std::string out;
  if (f == "json") {
    for (const Row& row : rows) {
      nlohmann::json j = nlohmann::json::object();
      for (const auto& [k, v] : row) j[k] = v;
      out += j.dump() + "\n";
    }
    return out;
  }
  bool table = f.rfind("table", 0) == 0 && (f.size() == 5 || f[5] == ' ');
  if (table) {
    f = f.substr(5);
    while (!f.empty() && f.front() == ' ') f.erase(f.begin());
    if (f.empty()) f = default_table.substr(6);
  }
  ASSIGN_OR_RETURN(auto pieces, ParseTemplate(f));
  for (const Row& row : rows) {
    ASSIGN_OR_RETURN(std::string line, Render(pieces, row));
    out += line + "\n";
  }
  if (!table) return out;
  // The header: each field replaced by its column title.
  std::string header;
  for (const Piece& p : pieces) {
    if (!p.field) {
      header += p.text;
      continue;
    }
    auto it = headers.find(p.text);
    if (it == headers.end()) return Status::InvalidArgument("template: can't evaluate field " + p.text);
    header += it->second;
  }
  return TabWrite(header + "\n" + out);
}

Result<uint64_t> ParseSize(std::string_view text) {
  auto bad = [&] {
    return Status::InvalidArgument("invalid size \"" + std::string(text) +
                                   "\": use a number with an optional unit, e.g. 10g or 512MiB");
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return bad();
  double number = 0;
  try {
    size_t used = 0;
    number = std::stod(std::string(text.substr(0, i)), &used);
    if (used != i) return bad();
  } catch (...) {
    return bad();
  }
  std::string unit;
  for (char c : text.substr(i)) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && unit.back() == 'b') unit.pop_back();
  if (unit.size() > 1 && unit.back() == 'i') unit.pop_back();
  if (unit == "b") unit.clear();
  static const std::string kUnits = "kmgtp";
  double scale = 1;
  if (!unit.empty()) {
    size_t u = kUnits.find(unit);
    if (unit.size() != 1 || u == std::string::npos) return bad();
    for (size_t k = 0; k <= u; ++k) scale *= 1024;
  }
  const double bytes = number * scale;
  if (bytes < 0 || bytes > 9.0e18) return bad();
  return static_cast<uint64_t>(bytes);
}

}  // namespace imagefs::tools
