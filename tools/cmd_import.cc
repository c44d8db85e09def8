// imagefs import [-c INSTR]... [-m MSG] [--platform P] SOURCE [REPOSITORY[:TAG]]: a root
// filesystem tarball made into a one-layer image, as docker import. SOURCE is a file, "-"
// (standard input) or an http(s) URL; plain tar, gzip or zstd (sniffed). The layer is stored
// as the plain tar (application/vnd.docker.image.rootfs.diff.tar, digest = diff_id), as
// imagefs load stores archive layers; the config gets the host platform (or --platform),
// `created` now, the -c instructions (tools/config_change.h, shared with commit) and
// docker's history entry {created, created_by "", comment "Imported from SOURCE"} (-m
// replaces the comment). Blobs first, the image record (and its tag) last. Prints the
// image ID (sha256 of the config), as docker does.

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "fetch/reference.h"
#include "store/blob_store.h"
#include "tools/command.h"
#include "tools/config_change.h"
#include "tools/input_file.h"
#include "tools/local_images.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::tools {
namespace {

using OrderedJson = nlohmann::ordered_json;

constexpr size_t kTarBlock = 512;

// A tar starts with a ustar/GNU header ("ustar" at 257) or, when empty, a zero block.
Status CheckTar(const std::string& path, const std::string& source) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "opening " + path);
  char h[kTarBlock];
  ssize_t n = ::pread(fd.get(), h, sizeof h, 0);
  bool zero = n == static_cast<ssize_t>(kTarBlock) &&
              std::all_of(h, h + kTarBlock, [](char c) { return c == '\0'; });
  if (n == static_cast<ssize_t>(kTarBlock) && (zero || std::memcmp(h + 257, "ustar", 5) == 0)) {
    return Status::Ok();
  }
  return Status::InvalidArgument(source + " is not a tar archive (plain, gzip or zstd); "
                                 "make one with tar -C ROOTFS -c .");
}

Status StoreFile(store::BlobStore& blobs, const Digest& digest, uint64_t size,
                 const std::string& path) {
  if (blobs.Has(digest)) return Status::Ok();
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return Status::FromErrno(errno, "opening " + path);
  ASSIGN_OR_RETURN(auto writer, blobs.Begin(digest, static_cast<int64_t>(size)));
  std::vector<char> buf(1 << 20);
  while (true) {
    ASSIGN_OR_RETURN(size_t n, ReadSome(in.get(), buf.data(), buf.size(), path));
    if (n == 0) break;
    RETURN_IF_ERROR(writer->Write(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(buf.data()), n)));
  }
  return writer->Commit();
}

struct ImportOptions {
  std::string source;
  std::string name;
  std::string message;
  std::string platform;
  std::vector<std::string> changes;
};

Result<std::string> Import(const GlobalOptions& global, const ImportOptions& o,
                           const std::string& scratch) {
  // The name and the config first: a bad reference or --change fails before any work.
  std::vector<store::NameRef> names;
  if (!o.name.empty()) {
    auto ref = fetch::ParseReference(o.name);
    if (!ref.ok() || !ref->digest.empty()) {
      return Status::InvalidArgument("\"" + o.name + "\" is not a valid REPOSITORY[:TAG] (e.g. "
                                     "myimage:1, lowercase)");
    }
    names.push_back({ref->Name(), ref->tag.empty() ? "latest" : ref->tag, "", ""});
  }
  fetch::Platform platform = fetch::Platform::Host();
  if (!o.platform.empty()) {
    ASSIGN_OR_RETURN(platform, fetch::Platform::Parse(o.platform));
  }
  const std::string created = NowRfc3339();
  OrderedJson config;
  config["architecture"] = platform.architecture;
  if (!platform.variant.empty()) config["variant"] = platform.variant;
  config["os"] = platform.os;
  config["config"] = OrderedJson::object();
  config["created"] = created;
  for (const std::string& c : o.changes) RETURN_IF_ERROR(ApplyChange(config, c));

  ASSIGN_OR_RETURN(PlainInput input, OpenPlainInput(o.source, scratch, /*allow_url=*/true));
  RETURN_IF_ERROR(CheckTar(input.path, o.source == "-" ? "standard input" : o.source));
  const std::string diff_id = input.digest.String();
  OrderedJson history;
  history["created"] = created;
  history["created_by"] = "";
  history["comment"] = o.message.empty() ? "Imported from " + o.source : o.message;
  config["history"] = OrderedJson::array({history});
  config["rootfs"] = {{"type", "layers"}, {"diff_ids", OrderedJson::array({diff_id})}};

  fetch::ResolvedImage image;
  image.config_bytes = config.dump();
  const std::string config_digest = Digest::Sha256Of(std::string_view(image.config_bytes)).String();
  OrderedJson manifest;
  manifest["schemaVersion"] = 2;
  manifest["mediaType"] = std::string(fetch::kDockerManifest);
  manifest["config"] = {{"mediaType", std::string(fetch::kDockerConfig)},
                        {"size", image.config_bytes.size()},
                        {"digest", config_digest}};
  manifest["layers"] = OrderedJson::array({OrderedJson{
      {"mediaType", std::string(fetch::kDockerLayerTar)}, {"size", input.size}, {"digest", diff_id}}});
  image.manifest.bytes = manifest.dump();
  image.manifest.media_type = std::string(fetch::kDockerManifest);
  image.manifest.digest = Digest::Sha256Of(std::string_view(image.manifest.bytes)).String();
  ASSIGN_OR_RETURN(image.parsed, fetch::ParseImageManifest(image.manifest.bytes,
                                                           image.manifest.media_type));
  ASSIGN_OR_RETURN(image.config, fetch::ParseImageConfig(image.config_bytes));
  for (store::NameRef& n : names) n.manifest_digest = image.manifest.digest;

  ASSIGN_OR_RETURN(auto blobs, store::BlobStore::Open(global.root));
  RETURN_IF_ERROR(StoreFile(*blobs, input.digest, input.size, input.path));
  RETURN_IF_ERROR(StoreImageMetadataBlobs(*blobs, image));
  RETURN_IF_ERROR(RecordStoredImage(global.root, image, "import:" + o.source, names));
  return config_digest;
}

}  // namespace

int RunImport(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Import the contents of a tarball to create a one-layer image, as docker import.\n"
               "SOURCE is a file, - (standard input) or an http(s) URL; plain tar, gzip or zstd.\n"
               "Prints the new image's ID.",
               "imagefs import");
  ImportOptions o;
  app.add_option("-c,--change", o.changes,
                 "Dockerfile instruction to apply: CMD ENTRYPOINT ENV EXPOSE LABEL USER "
                 "VOLUME WORKDIR")
      ->allow_extra_args(false);  // one instruction per -c: SOURCE is not swallowed
  app.add_option("-m,--message", o.message, "The history entry's comment");
  app.add_option("--platform", o.platform, "os/arch[/variant] to record (default: this host)");
  app.add_option("SOURCE", o.source, "Tarball file, - or URL")->required();
  app.add_option("REPOSITORY", o.name, "Name the image: REPOSITORY[:TAG]");
  if (int rc = ParseCommandLine(app, "import", args); rc >= 0) return rc;

  auto scratch_dir = ScratchDir::Make(global, "import-");
  if (!scratch_dir.ok()) return Fail(scratch_dir.status());
  const std::string* scratch = &(*scratch_dir)->path();
  auto id = Import(global, o, *scratch);
  if (!id.ok()) return Fail(id.status().WithContext("import"));
  std::printf("%s\n", id->c_str());
  return 0;
}

}  // namespace imagefs::tools
