// imagefs images: the pulled images in docker's `docker images` layout, filters and
// --format templates. Rows follow docker's CLI: one per tag (and per repo digest with
// --digests), "<none>" for untagged images, newest first.

#include <fnmatch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <map>

#include "store/metadata_store.h"
#include "tools/command.h"
#include "tools/format.h"
#include "tools/local_images.h"

namespace imagefs::tools {
namespace {

constexpr const char* kImagesTable =
    "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}";
constexpr const char* kDigestsTable =
    "table {{.Repository}}\\t{{.Tag}}\\t{{.Digest}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}";

const std::map<std::string, std::string>& Headers() {
  static const std::map<std::string, std::string> kHeaders = {
      {"ID", "IMAGE ID"},         {"Repository", "REPOSITORY"},    {"Tag", "TAG"},
      {"Digest", "DIGEST"},       {"CreatedSince", "CREATED"},     {"CreatedAt", "CREATED AT"},
      {"Size", "SIZE"},           {"Containers", "CONTAINERS"},    {"SharedSize", "SHARED SIZE"},
      {"UniqueSize", "UNIQUE SIZE"}, {"VirtualSize", "VIRTUAL SIZE"}};
  return kHeaders;
}

struct Filters {
  std::vector<std::string> references;
  std::optional<bool> dangling;
  std::optional<int64_t> before;  // created time of the named image
  std::optional<int64_t> since;
};

// docker's reference.FamiliarMatch: path.Match against "name:tag" (or "name@digest"), then
// against the bare familiar name.
bool MatchesReference(const std::vector<std::string>& patterns, const store::NameRef& name) {
  std::string full = FamiliarName(name);
  std::string repo = FamiliarRepository(name.repository);
  for (const std::string& p : patterns) {
    if (::fnmatch(p.c_str(), full.c_str(), FNM_PATHNAME) == 0) return true;
    if (::fnmatch(p.c_str(), repo.c_str(), FNM_PATHNAME) == 0) return true;
  }
  return false;
}

Result<int64_t> CreatedOf(store::MetadataStore& meta, const std::string& text) {
  ASSIGN_OR_RETURN(LocalImage found, FindLocalImage(meta, text));
  ASSIGN_OR_RETURN(auto image, meta.GetImage(found.manifest_digests.front()));
  if (!image) return Status::NotFound("no such image: " + text);
  return image->created;
}

Result<Filters> ParseFilters(store::MetadataStore& meta, const std::vector<std::string>& specs) {
  Filters f;
  for (const std::string& spec : specs) {
    size_t eq = spec.find('=');
    if (eq == std::string::npos) {
      return Status::InvalidArgument("bad format of filter (expected name=value): " + spec);
    }
    std::string key = spec.substr(0, eq);
    std::string value = spec.substr(eq + 1);
    if (key == "dangling") {
      if (value == "true" || value == "1") {
        f.dangling = true;
      } else if (value == "false" || value == "0") {
        f.dangling = false;
      } else {
        return Status::InvalidArgument("invalid filter 'dangling=" + value + "'");
      }
    } else if (key == "reference") {
      f.references.push_back(value);
    } else if (key == "before") {
      ASSIGN_OR_RETURN(f.before, CreatedOf(meta, value));
    } else if (key == "since") {
      ASSIGN_OR_RETURN(f.since, CreatedOf(meta, value));
    } else {
      return Status::InvalidArgument("invalid filter '" + key + "'");
    }
  }
  return f;
}

}  // namespace

int RunImages(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("List pulled images, as docker images does.", "imagefs images");
  bool all = false;
  bool quiet = false;
  bool digests = false;
  bool no_trunc = false;
  std::vector<std::string> filter_specs;
  std::string format;
  std::string match;
  app.add_flag("-a,--all", all, "Show all images (imagefs has no intermediate images)");
  app.add_flag("-q,--quiet", quiet, "Only show image IDs");
  app.add_flag("--digests", digests, "Show digests");
  app.add_flag("--no-trunc", no_trunc, "Don't truncate output");
  app.add_option("-f,--filter", filter_specs,
                 "Filter output: dangling=true|false, before=IMAGE, since=IMAGE, reference=PATTERN");
  app.add_option("--format", format,
                 "Format output: 'table', 'table TEMPLATE', 'json' or a Go-template subset "
                 "({{.ID}} {{.Repository}} {{.Tag}} {{.Digest}} {{.CreatedSince}} "
                 "{{.CreatedAt}} {{.Size}})");
  app.add_option("REPOSITORY[:TAG]", match, "Only images matching this reference");
  if (int rc = ParseCommandLine(app, "images", args); rc >= 0) return rc;
  (void)all;

  auto meta = store::MetadataStore::Open(global.root);
  if (!meta.ok()) return Fail(meta.status().WithContext("images"));
  auto filters = ParseFilters(**meta, filter_specs);
  if (!filters.ok()) return Fail(filters.status().WithContext("images"));
  if (!match.empty()) filters->references.push_back(match);
  auto images = (*meta)->ListImages();
  if (!images.ok()) return Fail(images.status().WithContext("images"));
  auto names = (*meta)->ListNames();
  if (!names.ok()) return Fail(names.status().WithContext("images"));
  std::map<std::string, std::vector<store::NameRef>> names_of;
  for (const store::NameRef& n : *names) names_of[n.manifest_digest].push_back(n);

  if (quiet && (format.empty() || format.rfind("table", 0) == 0)) format = "{{.ID}}";
  bool show_digests = digests || TemplateUses(format, "Digest") || format == "json";
  int64_t now = static_cast<int64_t>(::time(nullptr));

  std::vector<Row> rows;
  for (const store::ImageRecord& image : *images) {
    if (filters->before && !(image.created < *filters->before)) continue;
    if (filters->since && !(image.created > *filters->since)) continue;
    // As the docker daemon: names not matching a reference filter are dropped.
    std::vector<store::NameRef> tags;
    std::vector<store::NameRef> repo_digests;
    for (const store::NameRef& n : names_of[image.manifest_digest]) {
      if (!filters->references.empty() && !MatchesReference(filters->references, n)) continue;
      (n.tag.empty() ? repo_digests : tags).push_back(n);
    }
    if (tags.empty() && repo_digests.empty()) {
      if (filters->dangling && !*filters->dangling) continue;
      if (!filters->references.empty()) continue;
    } else if (filters->dangling && *filters->dangling && !tags.empty()) {
      continue;
    }
    Row base;
    base["ID"] = ImageId(image.config_digest, no_trunc);
    base["CreatedSince"] = CreatedSince(image.created, now);
    base["CreatedAt"] = image.created == 0 ? "N/A" : CreatedAt(image.created);
    base["Size"] = HumanSize(static_cast<double>(image.size));
    base["VirtualSize"] = base["Size"];
    base["Containers"] = "N/A";
    base["SharedSize"] = "N/A";
    base["UniqueSize"] = "N/A";
    auto add = [&](const std::string& repo, const std::string& tag, const std::string& digest) {
      Row row = base;
      row["Repository"] = repo;
      row["Tag"] = tag;
      row["Digest"] = digest.empty() ? "<none>" : digest;
      rows.push_back(std::move(row));
    };
    if (tags.empty() && repo_digests.empty()) {
      add("<none>", "<none>", "<none>");
      continue;
    }
    // docker's imageFormatTaggedAndDigest, with repositories in a stable order.
    std::map<std::string, std::vector<std::string>> repo_tags;
    std::map<std::string, std::vector<std::string>> repo_dgsts;
    for (const auto& n : tags) repo_tags[FamiliarRepository(n.repository)].push_back(n.tag);
    for (const auto& n : repo_digests) repo_dgsts[FamiliarRepository(n.repository)].push_back(n.digest);
    for (const auto& [repo, repo_tag_list] : repo_tags) {
      std::vector<std::string> ds;
      if (auto it = repo_dgsts.find(repo); it != repo_dgsts.end()) {
        ds = it->second;
        repo_dgsts.erase(it);
      }
      if (!show_digests) ds.clear();
      for (const std::string& tag : repo_tag_list) {
        if (ds.empty()) {
          add(repo, tag, "<none>");
          continue;
        }
        for (const std::string& d : ds) add(repo, tag, d);
      }
    }
    for (const auto& [repo, ds] : repo_dgsts) {
      if (show_digests) {
        for (const std::string& d : ds) add(repo, "<none>", d);
      } else {
        add(repo, "<none>", "");
      }
    }
  }
  auto out = RenderRows(format, digests ? kDigestsTable : kImagesTable, Headers(), rows);
  if (!out.ok()) return Fail(out.status().WithContext("images"));
  std::fwrite(out->data(), 1, out->size(), stdout);
  return 0;
}

}  // namespace imagefs::tools
