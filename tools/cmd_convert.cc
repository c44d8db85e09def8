// imagefs convert [--format zstd-chunked|estargz] [--chunk-size N] [--prefetch-profile FILE]
// SRC DST: every layer of SRC rewritten as a seekable layer, a new config (diff_ids of the
// new layers, history kept) and a new OCI manifest (annotations on each layer descriptor),
// written to DST through any transport. Reproducible: the same SRC gives the same bytes.
//
// Per layer: the blob is streamed once from SRC (its digest checked) and decompressed to a
// temporary tar under --root/tmp (its sha256 checked against the config's diff_id), then
// the layer writer reads that tar. A multi-platform SRC is converted for the platform
// chosen (--platform, else the host's), as skopeo copy without --all does.

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "fetch/image_dest.h"
#include "index/layer_writer.h"
#include "tools/command.h"
#include "tools/image_write.h"
#include "util/decompress.h"
#include "util/digest.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::tools {
namespace {

using OrderedJson = nlohmann::ordered_json;

// "4194304", "4M", "512K", "1G".
Result<uint64_t> ParseSize(const std::string& text) {
  if (text.empty()) return Status::InvalidArgument("empty size");
  size_t used = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(text, &used);
  } catch (...) {
    return Status::InvalidArgument("bad size \"" + text + "\"");
  }
  std::string suffix = text.substr(used);
  uint64_t mult = 1;
  if (suffix == "K" || suffix == "k" || suffix == "KiB") mult = 1 << 10;
  else if (suffix == "M" || suffix == "MiB") mult = 1 << 20;
  else if (suffix == "G" || suffix == "GiB") mult = 1 << 30;
  else if (!suffix.empty()) return Status::InvalidArgument("bad size \"" + text + "\"");
  if (v == 0) return Status::InvalidArgument("size must be positive: \"" + text + "\"");
  return uint64_t{v} * mult;
}

// A prefetch profile: one path per line in first-access order ("/usr/bin/env" or
// "usr/bin/env"); blank lines and lines starting with '#' are skipped.
Result<std::vector<std::string>> ReadProfile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<std::string> paths;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    while (line.starts_with("/")) line.erase(0, 1);
    if (line.starts_with("./")) line.erase(0, 2);
    if (!line.empty()) paths.push_back(line);
  }
  return paths;
}

Result<UniqueFd> CreateFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "creating " + path);
  return UniqueFd(fd);
}

// Streams the layer from the source into `tar_path`, decompressed; checks the blob's
// digest and returns the tar's sha256 (its diff_id).
Result<std::string> FetchLayerTar(fetch::ImageSource& source, const fetch::Descriptor& desc,
                                  const std::string& tar_path) {
  const std::string what = "layer " + desc.digest;
  ASSIGN_OR_RETURN(Digest want, Digest::Parse(desc.digest));
  ASSIGN_OR_RETURN(auto blob, source.OpenBlob(desc));
  ASSIGN_OR_RETURN(UniqueFd out, CreateFile(tar_path));
  Sha256 compressed_hash;
  Sha256 tar_hash;
  std::unique_ptr<Decompressor> dec;
  std::vector<uint8_t> buf(8 << 20);
  const uint64_t size = blob->Size();
  for (uint64_t off = 0; off < size;) {
    const size_t want_n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    ASSIGN_OR_RETURN(size_t n, blob->ReadAt(off, std::span<uint8_t>(buf.data(), want_n)));
    if (n == 0) return Status::Corruption(what + ": the blob ended early");
    compressed_hash.Update(std::string_view(reinterpret_cast<const char*>(buf.data()), n));
    if (!dec) dec = MakeDecompressor(std::span<const uint8_t>(buf.data(), n));
    Status st = dec->Feed(reinterpret_cast<const char*>(buf.data()), n,
                          [&](const char* data, size_t len) {
                            tar_hash.Update(std::string_view(data, len));
                            return WriteAll(out.get(), std::string_view(data, len), tar_path);
                          });
    if (!st.ok()) return st.WithContext(what);
    off += n;
  }
  if (dec) RETURN_IF_ERROR(dec->Finish().WithContext(what));
  Digest got = compressed_hash.Finish();
  if (got != want) {
    return Status::Corruption(what + ": digest mismatch (got " + got.String() +
                              "): the source served corrupt data");
  }
  if (::fsync(out.get()) != 0) return Status::FromErrno(errno, "syncing " + tar_path);
  return tar_hash.Finish().String();
}

std::string Short(const std::string& digest) {
  return digest.substr(0, std::min<size_t>(digest.size(), 7 + 12));
}

}  // namespace

int RunConvert(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app(
      "Rewrite an image's layers as seekable layers (zstd:chunked, or eStargz) so that\n"
      "imagefs and other lazy-pulling snapshotters can fetch single files. SRC and DST are\n"
      "docker://REF (default), oci:DIR[:TAG] or docker-archive:FILE[:REF].",
      "imagefs convert");
  std::string format = "zstd-chunked", chunk_size_text = "4M", profile, platform, src, dst;
  app.add_option("--format", format, "zstd-chunked (default) or estargz");
  app.add_option("--chunk-size", chunk_size_text, "Split files larger than this (default 4M)");
  app.add_option("--prefetch-profile", profile,
                 "File of paths in first-access order, written first in each layer");
  app.add_option("--platform", platform, "os/arch[/variant] to pick from a multi-arch image");
  app.add_option("SRC", src, "The image to convert")->required();
  app.add_option("DST", dst, "Where to write the converted image")->required();
  if (int rc = ParseCommandLine(app, "convert", args); rc >= 0) return rc;

  auto seekable = ParseSeekableFormat(format);
  if (!seekable.ok()) return Fail(seekable.status());
  index::LayerWriteOptions options;
  auto chunk_size = ParseSize(chunk_size_text);
  if (!chunk_size.ok()) return Fail(chunk_size.status().WithContext("--chunk-size"));
  options.chunk_size = *chunk_size;
  if (!profile.empty()) {
    auto paths = ReadProfile(profile);
    if (!paths.ok()) return Fail(paths.status().WithContext("--prefetch-profile"));
    options.prefetch_paths = std::move(*paths);
  }

  auto dst_ref = fetch::ParseImageRef(dst);
  if (!dst_ref.ok()) return Fail(dst_ref.status());
  auto opened = OpenImage(global, src, platform);
  if (!opened.ok()) return Fail(opened.status());
  auto dest = fetch::OpenImageDestination(*dst_ref, opened->options);
  if (!dest.ok()) return Fail(dest.status());

  const fetch::ResolvedImage& image = opened->image;
  const auto& layers = image.parsed.layers;
  if (image.config.diff_ids.size() != layers.size()) {
    return Fail(Status::Corruption(src + ": the config lists " +
                                   std::to_string(image.config.diff_ids.size()) +
                                   " diff_ids for " + std::to_string(layers.size()) + " layers"));
  }
  auto scratch_dir = ScratchDir::Make(global, "convert-");
  if (!scratch_dir.ok()) return Fail(scratch_dir.status());
  const std::string* scratch = &(*scratch_dir)->path();

  const char* format_name = SeekableFormatName(*seekable);
  std::vector<fetch::Descriptor> new_layers;
  std::vector<std::string> new_diff_ids;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto start = std::chrono::steady_clock::now();
    const fetch::Descriptor& layer = layers[i];
    const std::string tar_path = *scratch + "/layer" + std::to_string(i) + ".tar";
    auto diff_id = FetchLayerTar(*opened->source, layer, tar_path);
    if (!diff_id.ok()) return Fail(diff_id.status().WithContext(src));
    // skopeo 1.9's zstd:chunked output carries the diff_ids of the layers before it
    // re-serialized them; the blob digest was verified, so warn instead of refusing.
    if (*diff_id != image.config.diff_ids[i]) {
      LOG(kWarn) << src << ": layer " << layer.digest << " decompresses to " << *diff_id
                 << ", the config says " << image.config.diff_ids[i] << "; using the former";
    }
    const std::string out_path = *scratch + "/out" + std::to_string(i);
    auto written = WriteLayerFile(*seekable, tar_path, out_path, options);
    if (!written.ok()) return Fail(written.status().WithContext("converting layer " + layer.digest));
    (void)RemoveAll(tar_path);
    fetch::Descriptor desc = written->desc;
    if (Status st = PutBlobIfMissing(**dest, desc, out_path); !st.ok()) return Fail(st);
    (void)RemoveAll(out_path);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "layer %zu/%zu %s (%s) -> %s %s (%s) %.1fs\n", i + 1, layers.size(),
                 Short(layer.digest).c_str(), HumanSize(static_cast<double>(layer.size)).c_str(),
                 format_name, Short(desc.digest).c_str(),
                 HumanSize(static_cast<double>(desc.size)).c_str(), secs);
    new_layers.push_back(std::move(desc));
    new_diff_ids.push_back(*diff_id);
  }

  // The config: the source's JSON with the new diff_ids, everything else kept.
  OrderedJson config = OrderedJson::parse(image.config_bytes, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return Fail(Status::Corruption(src + ": the config is not a JSON object"));
  }
  config["rootfs"]["type"] = "layers";
  config["rootfs"]["diff_ids"] = new_diff_ids;
  auto digest = PutConfigAndManifest(**dest, *scratch, config.dump(), new_layers,
                                     ManifestFamily::kOci);
  if (!digest.ok()) return Fail(digest.status());
  NoteUnseekableDestination(*dst_ref, dst);
  std::printf("%s\n", digest->c_str());
  return 0;
}

}  // namespace imagefs::tools
