// imagefs df [-v] and imagefs prune [-a] [-f]: disk use under --root in the layout of
// `docker system df` and `docker image prune`.
//
// df's rows: Images (stored images; a layer shared by several counts once; ACTIVE = used by
// a running mount), Containers (writable upper dirs, once mounts have them), Layer Indexes
// (indexes built for layers without a TOC, under --root/indexes) and Chunk Cache (the
// lazily read chunks). RECLAIMABLE is what `prune -a` would free.
//
// prune removes dangling images (no name left; with -a every image no mount uses), then
// blobs no remaining image uses; -a also empties the chunk cache (unpinned chunks) and the
// indexes of layers no remaining image has.

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "store/blob_store.h"
#include "store/chunk_store.h"
#include "store/metadata_store.h"
#include "tools/command.h"
#include "tools/format.h"
#include "tools/image_view.h"
#include "tools/local_images.h"
#include "util/file.h"

namespace imagefs::tools {
namespace {

// Files of the index cache, by layer digest ("sha256:<hex>") -> bytes.
std::map<std::string, uint64_t> IndexFiles(const std::string& root) {
  std::map<std::string, uint64_t> out;
  std::error_code ec;
  const std::string dir = root + "/indexes/sha256";
  if (!std::filesystem::is_directory(dir, ec)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.ends_with(".index") || !e.is_regular_file(ec)) continue;
    out["sha256:" + name.substr(0, name.size() - 6)] = e.file_size(ec);
  }
  return out;
}

std::set<std::string> LayersInUse(const std::vector<store::ImageRecord>& images) {
  std::set<std::string> layers;
  for (const auto& image : images) {
    for (const auto& l : image.layers) layers.insert(l.digest);
  }
  return layers;
}

// docker's RECLAIMABLE cell: "1.2MB (100%)".
std::string Reclaimable(uint64_t reclaimable, uint64_t size) {
  std::string out = HumanSize(static_cast<double>(reclaimable));
  if (size > 0) out += " (" + std::to_string(reclaimable * 100 / size) + "%)";
  return out;
}

}  // namespace

int RunDf(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Show disk use under --root, as docker system df.", "imagefs df");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Show each image's size, shared and unique");
  if (int rc = ParseCommandLine(app, "df", args); rc >= 0) return rc;

  std::vector<store::ImageRecord> images;
  if (PathExists(global.root + "/metadata.db")) {
    auto meta = store::MetadataStore::Open(global.root);
    if (!meta.ok()) return Fail(meta.status());
    auto listed = (*meta)->ListImages();
    if (!listed.ok()) return Fail(listed.status());
    images = std::move(*listed);
  }
  // Distinct blobs: a layer shared by several images counts once.
  std::map<std::string, int64_t> blob_sizes;
  std::map<std::string, int> users;
  for (const auto& image : images) {
    blob_sizes[image.config_digest] = image.config_size;
    for (const auto& l : image.layers) {
      blob_sizes[l.digest] = l.size;
      users[l.digest] += 1;
    }
  }
  uint64_t image_bytes = 0;
  for (const auto& [digest, size] : blob_sizes) image_bytes += static_cast<uint64_t>(size);
  int active = 0;
  uint64_t active_bytes = 0;
  for (const auto& image : images) {
    if (!CheckImageNotMounted(global.root, image.manifest_digest).ok()) {
      ++active;
      active_bytes += static_cast<uint64_t>(image.size);
    }
  }
  const auto indexes = IndexFiles(global.root);
  uint64_t index_bytes = 0;
  for (const auto& [digest, size] : indexes) index_bytes += size;
  store::ChunkStoreStats chunks;
  if (PathExists(global.root + "/chunks")) {
    auto store = OpenChunkStore(global);
    if (!store.ok()) return Fail(store.status());
    chunks = (*store)->Stats();
  }

  std::string table = "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE\n";
  auto row = [&](const char* type, uint64_t total, uint64_t act, uint64_t size, uint64_t rec) {
    table += std::string(type) + "\t" + std::to_string(total) + "\t" + std::to_string(act) +
             "\t" + HumanSize(static_cast<double>(size)) + "\t" + Reclaimable(rec, size) + "\n";
  };
  const uint64_t image_reclaimable = image_bytes > active_bytes ? image_bytes - active_bytes : 0;
  row("Images", images.size(), static_cast<uint64_t>(active), image_bytes, image_reclaimable);
  row("Containers", 0, 0, 0, 0);
  row("Layer Indexes", indexes.size(), 0, index_bytes, index_bytes);
  row("Chunk Cache", chunks.chunks, 0, chunks.bytes, chunks.bytes);

  if (!verbose) {
    std::fputs(TabWrite(table).c_str(), stdout);
    return 0;
  }
  std::string out = "Images space usage:\n\n";
  std::string detail = "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tSHARED SIZE\tUNIQUE SIZE\tCONTAINERS\n";
  auto meta = store::MetadataStore::Open(global.root);
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  for (const auto& image : images) {
    uint64_t shared = 0;
    for (const auto& l : image.layers) {
      if (users[l.digest] > 1) shared += static_cast<uint64_t>(l.size);
    }
    std::vector<store::NameRef> names;
    if (meta.ok()) {
      auto n = (*meta)->NamesOf(image.manifest_digest);
      if (n.ok()) names = *n;
    }
    std::string repo = "<none>", tag = "<none>";
    for (const auto& n : names) {
      if (!n.tag.empty()) {
        repo = FamiliarRepository(n.repository);
        tag = n.tag;
        break;
      }
    }
    const uint64_t size = static_cast<uint64_t>(image.size);
    detail += repo + "\t" + tag + "\t" + ImageId(image.config_digest, false) + "\t" +
              CreatedSince(image.created, now) + "\t" + HumanSize(static_cast<double>(size)) +
              "\t" + HumanSize(static_cast<double>(shared)) + "\t" +
              HumanSize(static_cast<double>(size - std::min(size, shared))) + "\t0\n";
  }
  out += TabWrite(detail);
  out += "\nLayer indexes and chunk cache:\n\n";
  out += TabWrite(table);
  std::fputs(out.c_str(), stdout);
  return 0;
}

int RunPrune(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Remove dangling images (-a: every image no mount uses), then unused blobs,\n"
               "layer indexes and cached chunks, as docker image prune.",
               "imagefs prune");
  bool all = false, force = false;
  app.add_flag("-a,--all", all, "Remove all images no mount uses, not just dangling ones");
  app.add_flag("-f,--force", force, "Do not prompt for confirmation");
  if (int rc = ParseCommandLine(app, "prune", args); rc >= 0) return rc;

  if (!force) {
    std::fputs(all ? "WARNING! This will remove all images without at least one container "
                     "associated to them.\n"
                   : "WARNING! This will remove all dangling images.\n",
               stderr);
    std::fputs("Are you sure you want to continue? [y/N] ", stderr);
    std::string answer;
    if (!std::getline(std::cin, answer) || (answer != "y" && answer != "Y")) {
      std::fputs("\n", stderr);
      return 0;
    }
  }
  if (!PathExists(global.root + "/metadata.db")) {
    std::printf("Total reclaimed space: 0B\n");
    return 0;
  }
  auto meta = store::MetadataStore::Open(global.root);
  if (!meta.ok()) return Fail(meta.status());
  auto blobs = store::BlobStore::Open(global.root);
  if (!blobs.ok()) return Fail(blobs.status());
  auto images = (*meta)->ListImages();
  if (!images.ok()) return Fail(images.status());

  std::vector<std::string> doomed;
  for (const auto& image : *images) {
    if (!CheckImageNotMounted(global.root, image.manifest_digest).ok()) continue;
    auto names = (*meta)->NamesOf(image.manifest_digest);
    if (!names.ok()) return Fail(names.status());
    bool tagged = false;
    for (const auto& n : *names) tagged = tagged || !n.tag.empty();
    if (all || !tagged) doomed.push_back(image.manifest_digest);
  }
  uint64_t reclaimed = 0;
  std::string report;
  if (!doomed.empty()) {
    auto removal = (*meta)->RemoveImages(doomed, /*force=*/true);
    if (!removal.ok()) return Fail(removal.status());
    for (const store::NameRef& n : removal->untagged) {
      report += "untagged: " + FamiliarName(n) + "\n";
    }
    std::set<std::string> printed;
    for (const store::ImageRecord& image : removal->deleted) {
      if (printed.insert(image.config_digest).second) {
        report += "deleted: " + image.config_digest + "\n";
      }
    }
    // The image table committed first: a crash here leaves unreferenced blobs, which the
    // next prune collects, never a name pointing at missing blobs.
    for (const std::string& d : removal->unused_blobs) {
      auto digest = Digest::Parse(d);
      if (!digest.ok() || !(*blobs)->Has(*digest)) continue;
      struct stat st;
      if (::stat((*blobs)->PathOf(*digest).c_str(), &st) == 0) {
        reclaimed += static_cast<uint64_t>(st.st_size);
      }
      if (Status s = (*blobs)->Remove(*digest); !s.ok()) return Fail(s);
    }
  }
  if (all) {
    auto remaining = (*meta)->ListImages();
    if (!remaining.ok()) return Fail(remaining.status());
    const std::set<std::string> in_use = LayersInUse(*remaining);
    for (const auto& [digest, size] : IndexFiles(global.root)) {
      if (in_use.count(digest) != 0) continue;
      if (RemoveAll(global.root + "/indexes/sha256/" + digest.substr(7) + ".index").ok()) {
        reclaimed += size;
      }
    }
    if (PathExists(global.root + "/chunks")) {
      auto chunks = OpenChunkStore(global);
      if (!chunks.ok()) return Fail(chunks.status());
      reclaimed += (*chunks)->Trim(0);
    }
  }
  if (!report.empty()) std::printf("Deleted Images:\n%s\n", report.c_str());
  std::printf("Total reclaimed space: %s\n", HumanSize(static_cast<double>(reclaimed)).c_str());
  return 0;
}

}  // namespace imagefs::tools
