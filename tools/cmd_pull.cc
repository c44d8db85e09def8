// imagefs pull: download every layer of an image, verify it, and store it content-addressed
// under --root (blobs/sha256/<hex>), with the manifest and config, then record the name.
// Progress: bars redrawn in place on a TTY; one line per layer otherwise.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <thread>

#include "store/blob_store.h"
#include "store/metadata_store.h"
#include "tools/format.h"
#include "tools/command.h"
#include "tools/local_images.h"

namespace imagefs::tools {
namespace {

constexpr size_t kReadPiece = 4 << 20;
constexpr size_t kParallelLayers = 3;

// Shows per-layer progress. On a TTY all rows are redrawn in place; elsewhere a row is
// printed once, when its layer finishes.
class Progress {
 public:
  // quiet: nothing at all (pull -q prints only the name).
  Progress(std::vector<std::string> ids, std::vector<int64_t> totals, bool tty, bool quiet)
      : ids_(std::move(ids)), totals_(std::move(totals)), done_(ids_.size(), 0),
        state_(ids_.size(), "Waiting"), tty_(tty), quiet_(quiet) {
    if (tty_) {
      for (size_t i = 0; i < ids_.size(); ++i) std::fprintf(stderr, "\n");
      Redraw();
    }
  }

  void Update(size_t i, uint64_t bytes, const char* state) {
    std::lock_guard<std::mutex> lock(mu_);
    done_[i] = bytes;
    state_[i] = state;
    if (tty_) Redraw();
  }

  void Finish(size_t i, const std::string& state) {
    std::lock_guard<std::mutex> lock(mu_);
    state_[i] = state;
    if (quiet_) return;
    if (tty_) {
      Redraw();
    } else {
      std::fprintf(stderr, "%s: %s\n", ids_[i].c_str(), state.c_str());
    }
  }

 private:
  void Redraw() {  // mu_ held
    std::fprintf(stderr, "\033[%zuA", ids_.size());
    for (size_t i = 0; i < ids_.size(); ++i) {
      std::string bar;
      if (state_[i] == "Downloading" && totals_[i] > 0) {
        int width = 40;
        int filled = static_cast<int>(width * static_cast<double>(done_[i]) /
                                      static_cast<double>(totals_[i]));
        bar = "[" + std::string(static_cast<size_t>(filled), '=') + ">" +
              std::string(static_cast<size_t>(width - filled), ' ') + "] " +
              HumanSize(static_cast<double>(done_[i])) + "/" +
              HumanSize(static_cast<double>(totals_[i]));
      }
      std::fprintf(stderr, "\r\033[K%s: %s %s\n", ids_[i].c_str(), state_[i].c_str(), bar.c_str());
    }
    std::fflush(stderr);
  }

  std::mutex mu_;
  std::vector<std::string> ids_;
  std::vector<int64_t> totals_;
  std::vector<uint64_t> done_;
  std::vector<std::string> state_;
  bool tty_;
  bool quiet_ = false;
};

Status PullLayer(fetch::ImageSource& source, store::BlobStore& blobs,
                 const fetch::Descriptor& layer, size_t i, Progress& progress) {
  ASSIGN_OR_RETURN(Digest digest, Digest::Parse(layer.digest));
  if (blobs.Has(digest)) {
    progress.Finish(i, "Already exists");
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(auto blob, source.OpenBlob(layer));
  ASSIGN_OR_RETURN(auto writer, blobs.Begin(digest, layer.size));
  std::vector<uint8_t> buf(kReadPiece);
  uint64_t offset = 0;
  const uint64_t size = blob->Size();
  while (offset < size) {
    ASSIGN_OR_RETURN(size_t n, blob->ReadAt(offset, buf));
    if (n == 0) break;
    RETURN_IF_ERROR(writer->Write(std::span<const uint8_t>(buf.data(), n)));
    offset += n;
    progress.Update(i, offset, "Downloading");
  }
  progress.Update(i, offset, "Verifying");
  RETURN_IF_ERROR(writer->Commit().WithContext("layer " + layer.digest + " from " +
                                               source.Describe()));
  progress.Finish(i, "Pull complete");
  return Status::Ok();
}

// The names a pull records: registry pulls are named by their tag (moving it from an older
// image, which becomes dangling) and by their repo digest (the index's digest for a
// multi-arch image, as docker records it); images from oci: and docker-archive: are
// recorded untagged.
std::vector<store::NameRef> PulledNames(const fetch::ImageRef& ref,
                                        const fetch::ResolvedImage& image) {
  std::vector<store::NameRef> names;
  const std::string& manifest_digest = image.manifest.digest;
  if (ref.transport == fetch::Transport::kDocker && !image.name.empty()) {
    if (ref.ref.digest.empty() && !ref.ref.tag.empty()) {
      names.push_back({image.name, ref.ref.tag, "", manifest_digest});
    }
    names.push_back({image.name, "", image.index ? image.index->digest : manifest_digest,
                     manifest_digest});
  }
  return names;
}

}  // namespace

int RunPull(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Download an image's layers, verify them and store them under --root.\n"
               "IMAGE is docker://REF (default), oci:DIR[:TAG] or docker-archive:FILE.",
               "imagefs pull");
  std::string image_name;
  std::string platform;
  bool quiet = false;
  app.add_option("IMAGE", image_name, "The image to pull")->required();
  app.add_option("--platform", platform, "os/arch[/variant] to pick from a multi-arch image");
  app.add_flag("-q,--quiet", quiet, "Print only the image name");
  if (int rc = ParseCommandLine(app, "pull", args); rc >= 0) return rc;

  auto blobs = store::BlobStore::Open(global.root);
  if (!blobs.ok()) return Fail(blobs.status());
  auto opened = OpenImage(global, image_name, platform);
  if (!opened.ok()) return Fail(opened.status());
  const fetch::ImageRef* ref = &opened->ref;
  const fetch::ResolvedImage* image = &opened->image;
  fetch::ImageSource* source = opened->source.get();

  const auto& layers = image->parsed.layers;
  std::vector<std::string> ids;
  std::vector<int64_t> totals;
  for (const auto& l : layers) {
    auto d = Digest::Parse(l.digest);
    ids.push_back(d.ok() ? d->Short() : l.digest);
    totals.push_back(l.size);
  }
  bool tty = !quiet && ::isatty(STDERR_FILENO) != 0;
  if (!quiet) {
    std::string tag = ref->transport == fetch::Transport::kDocker
                          ? (ref->ref.tag.empty() ? ref->ref.digest : ref->ref.tag)
                          : ref->String();
    std::fprintf(stderr, "%s: Pulling from %s\n", tag.c_str(), source->Describe().c_str());
  }
  Progress progress(ids, totals, tty, quiet);

  // Layers in parallel, kParallelLayers at a time, as docker does.
  std::vector<Status> results(layers.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> workers;
  for (size_t w = 0; w < std::min(kParallelLayers, layers.size()); ++w) {
    workers.emplace_back([&] {
      for (size_t i = next++; i < layers.size(); i = next++) {
        results[i] = PullLayer(*source, **blobs, layers[i], i, progress);
        if (!results[i].ok()) progress.Finish(i, "Failed");
      }
    });
  }
  for (auto& t : workers) t.join();
  for (const Status& st : results) {
    if (!st.ok()) return Fail(st);
  }

  // Metadata last: a name only ever points at an image whose blobs are all present.
  Status st = StoreImageMetadataBlobs(**blobs, *image);
  // The name the image is recorded under: registry/repo:tag (or @digest) for registry
  // images, the transport string otherwise.
  std::string name = ref->String();
  if (ref->transport == fetch::Transport::kDocker && !image->name.empty()) {
    name = image->name + (ref->ref.digest.empty() ? ":" + ref->ref.tag : "@" + ref->ref.digest);
  }
  if (st.ok()) st = RecordStoredImage(global.root, *image, source->Describe(), PulledNames(*ref, *image));
  if (!st.ok()) return Fail(st);

  if (!quiet) {
    std::fprintf(stderr, "Digest: %s\n", image->manifest.digest.c_str());
    std::fprintf(stderr, "Status: Downloaded image for %s\n", name.c_str());
  }
  std::printf("%s\n", name.c_str());
  return 0;
}

}  // namespace imagefs::tools
