// imagefs history: an image's build history from its config, newest first, in docker
// history's layout. The top row carries the image ID, the others "<missing>" (as docker
// shows for pulled images). SIZE is the matching layer's compressed size from the manifest:
// docker shows the uncompressed size, which imagefs does not know without reading the
// layer; empty-layer entries show 0B.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <ctime>

#include "fetch/manifest.h"
#include "store/blob_store.h"
#include "store/metadata_store.h"
#include "tools/command.h"
#include "tools/format.h"
#include "tools/local_images.h"

namespace imagefs::tools {
namespace {

constexpr const char* kHistoryTable =
    "table {{.ID}}\\t{{.CreatedSince}}\\t{{.CreatedBy}}\\t{{.Size}}\\t{{.Comment}}";

// Go's time.Format(time.RFC3339) in local time.
std::string Rfc3339Local(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  localtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = buf;
  long off = tm.tm_gmtoff;
  if (off == 0) return out + "Z";
  char zone[48];
  std::snprintf(zone, sizeof zone, "%c%02ld:%02ld", off < 0 ? '-' : '+', std::labs(off) / 3600,
                std::labs(off) % 3600 / 60);
  return out + zone;
}

}  // namespace

int RunHistory(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Show the history of a pulled image, as docker history.", "imagefs history");
  std::string name;
  bool no_trunc = false;
  bool quiet = false;
  std::string format;
  app.add_option("IMAGE", name, "A name, image ID or digest")->required();
  app.add_flag("--no-trunc", no_trunc, "Don't truncate output");
  app.add_flag("-q,--quiet", quiet, "Only show image IDs");
  app.add_option("--format", format,
                 "Format output: 'table', 'table TEMPLATE', 'json' or a Go-template subset "
                 "({{.ID}} {{.CreatedSince}} {{.CreatedAt}} {{.CreatedBy}} {{.Size}} {{.Comment}})");
  if (int rc = ParseCommandLine(app, "history", args); rc >= 0) return rc;

  auto meta = store::MetadataStore::Open(global.root);
  if (!meta.ok()) return Fail(meta.status().WithContext("history"));
  auto found = FindLocalImage(**meta, name);
  if (!found.ok()) return Fail(found.status().WithContext("history"));
  auto image = (*meta)->GetImage(found->manifest_digests.front());
  if (!image.ok()) return Fail(image.status().WithContext("history"));
  if (!*image) return Fail(Status::NotFound("history: no such image: " + name));
  auto blobs = store::BlobStore::Open(global.root);
  if (!blobs.ok()) return Fail(blobs.status().WithContext("history"));
  auto config_digest = Digest::Parse((*image)->config_digest);
  if (!config_digest.ok()) return Fail(config_digest.status().WithContext("history"));
  auto config_bytes = (*blobs)->Get(*config_digest);
  if (!config_bytes.ok()) return Fail(config_bytes.status().WithContext("history"));
  auto config = fetch::ParseImageConfig(*config_bytes);
  if (!config.ok()) return Fail(config.status().WithContext("history"));

  int64_t now = static_cast<int64_t>(::time(nullptr));
  const auto& layers = (*image)->layers;
  std::vector<Row> rows;
  size_t layer = 0;
  for (const fetch::HistoryEntry& h : config->history) {
    int64_t size = 0;
    if (!h.empty_layer && layer < layers.size()) size = layers[layer++].size;
    int64_t created = ParseRfc3339(h.created).value_or(0);
    std::string created_by = h.created_by;
    std::replace(created_by.begin(), created_by.end(), '\t', ' ');
    Row row;
    row["ID"] = "<missing>";
    row["CreatedSince"] = CreatedSince(created, now);
    row["CreatedAt"] = created == 0 ? "N/A" : Rfc3339Local(created);
    row["CreatedBy"] = no_trunc ? created_by : Ellipsis(created_by, 45);
    row["Size"] = HumanSize(static_cast<double>(size));
    row["Comment"] = h.comment;
    rows.push_back(std::move(row));
  }
  std::reverse(rows.begin(), rows.end());
  if (!rows.empty()) rows.front()["ID"] = ImageId((*image)->config_digest, no_trunc);

  if (quiet && (format.empty() || format.rfind("table", 0) == 0)) format = "{{.ID}}";
  static const std::map<std::string, std::string> kHeaders = {
      {"ID", "IMAGE"},           {"CreatedSince", "CREATED"}, {"CreatedAt", "CREATED AT"},
      {"CreatedBy", "CREATED BY"}, {"Size", "SIZE"},          {"Comment", "COMMENT"}};
  auto out = RenderRows(format, kHistoryTable, kHeaders, rows);
  if (!out.ok()) return Fail(out.status().WithContext("history"));
  std::fwrite(out->data(), 1, out->size(), stdout);
  return 0;
}

}  // namespace imagefs::tools
