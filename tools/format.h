#pragma once

// Output in docker's shapes: its table layout (Go's text/tabwriter as the docker CLI sets it
// up), its `--format` templates (a subset: {{.Field}} placeholders, "table " prefix, "json"),
// and its time wording (go-units HumanDuration, time.Time.String).

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace imagefs::tools {

// "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456789+02:00" -> unix seconds.
Result<int64_t> ParseRfc3339(std::string_view text);
// go-units HumanDuration: "Less than a second", "About a minute", "3 hours", "2 weeks", ...
std::string HumanDuration(int64_t seconds);
// "<HumanDuration(now - created)> ago", or "N/A" when created is 0.
std::string CreatedSince(int64_t created, int64_t now);
// Go's time.Time.String() in local time: "2024-01-01 00:00:00 +0000 UTC".
std::string CreatedAt(int64_t created);
// At most max_runes UTF-8 characters: longer text is cut to max_runes - 1 and "…" added
// (docker's stringutils.Ellipsis).
std::string Ellipsis(std::string_view text, size_t max_runes);

// Go's text/tabwriter with docker's settings (minwidth 10, tabwidth 1, padding 3, ' '):
// cells are separated by '\t', the last cell of a line is not padded, column blocks are
// formed over consecutive lines as tabwriter forms them. Widths count UTF-8 characters.
std::string TabWrite(std::string_view text);

// Renders rows the way docker's formatter does:
//   format ""              -> default_table (a "table ..." template)
//   format "table TMPL"    -> a header line (fields replaced by headers) + rows, tab-aligned
//   format "json"          -> each row as one JSON object (every key of the row, sorted)
//   format "TMPL"          -> each row rendered, one per line, no alignment
// TMPL holds {{.Field}} placeholders (spaces inside the braces allowed) and literal text in
// which "\t" and "\n" are tab and newline. Unknown fields are kInvalidArgument.
using Row = std::map<std::string, std::string>;
Result<std::string> RenderRows(const std::string& format, const std::string& default_table,
                               const std::map<std::string, std::string>& headers,
                               const std::vector<Row>& rows);
// A size as docker's flags take it (go-units RAMInBytes): "512", "64k", "10g", "1.5GiB",
// "20MB" — units are binary (k = 1024), case does not matter, a trailing "b"/"ib" is optional.
Result<uint64_t> ParseSize(std::string_view text);

// True when the template names the field ("{{.Digest}}").
bool TemplateUses(const std::string& format, const std::string& field);

}  // namespace imagefs::tools
