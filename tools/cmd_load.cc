// imagefs load [-i FILE]: every image and tag of a docker-archive (docker save's, imagefs
// save's or skopeo's docker-archive: output; plain, gzip or zstd, sniffed; standard input
// without -i) stored under --root, as docker load.
//
// Each image is read through fetch's docker-archive source (one index of the tar for all
// images; the manifest is the Docker schema 2 one skopeo synthesizes for an archive). Layers
// are stored as they are in the archive: plain tars (application/vnd.docker.image.rootfs.
// diff.tar, digest = diff_id), gzip members stay gzip (docs/architecture.md says why). Every
// layer is checked against the config's diff_id (a gzip member is decompressed for it).
// All images' blobs are stored first and the image records with their tags last, in one
// pass, so a corrupt archive leaves `imagefs images` as it was. Prints docker's lines:
// "Loaded image: NAME:TAG" per tag, "Loaded image ID: sha256:..." for an untagged image.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "fetch/reference.h"
#include "store/blob_store.h"
#include "tools/command.h"
#include "tools/input_file.h"
#include "tools/local_images.h"
#include "util/decompress.h"
#include "util/file.h"

namespace imagefs::tools {
namespace {

constexpr size_t kLoadReadPiece = 4 << 20;

struct LoadedImage {
  fetch::ResolvedImage image;
  std::vector<store::NameRef> names;
};

// Stores one layer of an archive image (unless the store has it) and checks that it
// decompresses to `diff_id`.
Status StoreLayer(fetch::ImageSource& source, store::BlobStore& blobs,
                  const fetch::Descriptor& layer, const std::string& diff_id, size_t i) {
  ASSIGN_OR_RETURN(Digest digest, Digest::Parse(layer.digest));
  const bool plain = layer.media_type == fetch::kDockerLayerTar;
  auto mismatch = [&](const std::string& got) {
    return Status::Corruption("layer " + std::to_string(i) + " of " + source.Describe() +
                              " is " + got + " but the image config's diff_id is " + diff_id +
                              ": the archive is corrupt; save it again");
  };
  if (plain && layer.digest != diff_id) return mismatch(layer.digest);
  const bool have = blobs.Has(digest);
  if (plain && have) return Status::Ok();
  ASSIGN_OR_RETURN(auto blob, source.OpenBlob(layer));
  std::unique_ptr<store::BlobWriter> writer;
  if (!have) {
    ASSIGN_OR_RETURN(writer, blobs.Begin(digest, layer.size));
  }
  std::unique_ptr<Decompressor> dec;
  Sha256 plain_hash;
  DecompressSink sink = [&](const char* data, size_t n) -> Status {
    plain_hash.Update(std::string_view(data, n));
    return Status::Ok();
  };
  std::vector<uint8_t> buf(kLoadReadPiece);
  for (uint64_t offset = 0; offset < blob->Size();) {
    ASSIGN_OR_RETURN(size_t n, blob->ReadAt(offset, buf));
    if (n == 0) break;
    std::span<const uint8_t> piece(buf.data(), n);
    if (writer) RETURN_IF_ERROR(writer->Write(piece));
    if (!plain) {
      if (!dec) dec = MakeDecompressor(piece);
      Status fed = dec->Feed(reinterpret_cast<const char*>(buf.data()), n, sink);
      if (!fed.ok()) return fed.WithContext("layer " + std::to_string(i) + " of " + source.Describe());
    }
    offset += n;
  }
  if (!plain) {
    if (!dec) return mismatch("empty");
    if (Status fin = dec->Finish(); !fin.ok()) {
      return fin.WithContext("layer " + std::to_string(i) + " of " + source.Describe());
    }
    const std::string got = plain_hash.Finish().String();
    if (got != diff_id) return mismatch("decompressed " + got);
  }
  if (writer) return writer->Commit().WithContext("layer " + layer.digest);
  return Status::Ok();
}

// The names an archive entry's RepoTags give ("busybox:latest" -> docker.io/library/busybox).
Result<std::vector<store::NameRef>> NamesOf(const std::vector<std::string>& repo_tags,
                                            const std::string& manifest_digest,
                                            const std::string& where) {
  std::vector<store::NameRef> names;
  for (const std::string& t : repo_tags) {
    auto ref = fetch::ParseReference(t);
    if (!ref.ok() || !ref->digest.empty() || ref->tag.empty()) {
      return Status::Corruption(where + ": RepoTag \"" + t + "\" in manifest.json is not a "
                                "NAME:TAG; fix the archive's manifest.json or save it again");
    }
    names.push_back({ref->Name(), ref->tag, "", manifest_digest});
  }
  return names;
}

Status Load(const GlobalOptions& global, const std::string& input, const std::string& scratch,
            std::vector<std::string>* printed) {
  const std::string display = input.empty() ? "standard input" : input;
  ASSIGN_OR_RETURN(PlainInput plain, OpenPlainInput(input.empty() ? "-" : input, scratch,
                                                    /*allow_url=*/false));
  auto archive = fetch::OpenDockerArchiveImages(plain.path);
  if (!archive.ok()) {
    // Name the user's file, not the spooled or decompressed copy.
    std::string why = archive.status().message();
    for (size_t at = why.find(plain.path); at != std::string::npos;
         at = why.find(plain.path, at + display.size())) {
      why.replace(at, plain.path.size(), display);
    }
    return Status::Corruption(why + "; give a tar written by docker save or imagefs save");
  }
  ASSIGN_OR_RETURN(auto blobs, store::BlobStore::Open(global.root));
  const std::string source_name = "docker-archive:" + (input.empty() ? "-" : input);
  fetch::FetchOptions options;
  std::vector<LoadedImage> loaded;
  // Every image's blobs first...
  for (fetch::ArchiveImage& entry : *archive) {
    ASSIGN_OR_RETURN(fetch::ResolvedImage image, fetch::ResolveImage(*entry.source, options));
    const auto& layers = image.parsed.layers;
    if (image.config.diff_ids.size() != layers.size()) {
      return Status::Corruption(entry.source->Describe() + ": manifest.json lists " +
                                std::to_string(layers.size()) + " layers, the config " +
                                std::to_string(image.config.diff_ids.size()) + " diff_ids");
    }
    ASSIGN_OR_RETURN(auto names, NamesOf(entry.repo_tags, image.manifest.digest, display));
    for (size_t i = 0; i < layers.size(); ++i) {
      RETURN_IF_ERROR(StoreLayer(*entry.source, *blobs, layers[i], image.config.diff_ids[i], i));
    }
    RETURN_IF_ERROR(StoreImageMetadataBlobs(*blobs, image));
    loaded.push_back({std::move(image), std::move(names)});
  }
  // ...then the records, so a failure above leaves no image or tag behind.
  for (const LoadedImage& l : loaded) {
    RETURN_IF_ERROR(RecordStoredImage(global.root, l.image, source_name, l.names));
    if (l.names.empty()) printed->push_back("Loaded image ID: " + l.image.parsed.config.digest);
    for (const store::NameRef& n : l.names) printed->push_back("Loaded image: " + FamiliarName(n));
  }
  return Status::Ok();
}

}  // namespace

int RunLoad(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Load images from a tar archive (docker save's, imagefs save's, skopeo's\n"
               "docker-archive; plain, gzip or zstd) or standard input, as docker load.",
               "imagefs load");
  std::string input;
  bool quiet = false;
  app.add_option("-i,--input", input, "Read from a tar archive file instead of standard input");
  app.add_flag("-q,--quiet", quiet, "Suppress the load output (the Loaded lines still print)");
  if (int rc = ParseCommandLine(app, "load", args); rc >= 0) return rc;

  if (input.empty() && ::isatty(STDIN_FILENO)) {
    return Fail(Status::InvalidArgument(
        "load: no archive given: use -i FILE or pipe one into standard input"));
  }
  auto scratch_dir = ScratchDir::Make(global, "load-");
  if (!scratch_dir.ok()) return Fail(scratch_dir.status());
  const std::string* scratch = &(*scratch_dir)->path();
  std::vector<std::string> printed;
  if (Status st = Load(global, input, *scratch, &printed); !st.ok()) {
    return Fail(st.WithContext("load"));
  }
  for (const std::string& line : printed) std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace imagefs::tools
