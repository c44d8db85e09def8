#pragma once

// Where an image comes from, as skopeo names it:
//   docker://REF (the default when no transport prefix is given)
//   oci:DIR[:TAG]            an OCI image layout directory
//   docker-archive:FILE[:REF] what `docker save` writes (REF or @INDEX picks one image)
// ImageSource hides the transport: it hands out manifests and BlobSources by digest.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fetch/auth.h"
#include "fetch/blob_source.h"
#include "fetch/manifest.h"
#include "fetch/reference.h"
#include "fetch/registries_conf.h"
#include "util/status.h"

namespace imagefs::fetch {

enum class Transport { kDocker, kOci, kDockerArchive };

struct ImageRef {
  Transport transport = Transport::kDocker;
  std::string text;         // the user's words, for messages
  Reference ref;            // kDocker: Docker-normalized; may be re-resolved via registries.conf
  bool short_name = false;  // kDocker: the text named no registry
  std::string path;         // kOci / kDockerArchive: the directory or file
  std::string tag;          // kOci: the ref name ("" = the only image); kDockerArchive: "name:tag", "@N" or ""
  // Canonical skopeo-style string: "docker://docker.io/library/nginx:1.25", "oci:/d:t".
  std::string String() const;
};

// Parses "docker://x", "oci:DIR[:TAG]", "docker-archive:FILE[:REF|:@N]", or a bare reference.
// oci: the last ':' splits DIR and TAG only when no '/' follows it ("oci:/a:b/dir" is a
// directory). docker-archive: the first ':' ends FILE, since REF holds ':' and '/' itself.
// skopeo's other transports (dir:, oci-archive:, ...) give kUnsupported; "foo:/x" that is no
// valid reference gives kInvalidArgument naming the transports imagefs reads.
Result<ImageRef> ParseImageRef(std::string_view text);

struct RawManifest {
  std::string bytes;
  std::string media_type;  // Content-Type or the JSON's mediaType
  std::string digest;      // sha256 of bytes, verified
};

struct FetchOptions {
  RegistriesConf registries;
  std::vector<std::string> insecure_registries;  // --insecure-registry HOST[:PORT]
  // --cert-dir: a directory of *.crt / *.cert / *.key used instead of
  // /etc/{containers,docker}/certs.d/HOST (as skopeo's --cert-dir).
  std::string cert_dir;
  AuthEnv auth_env = AuthEnv::FromProcess();
  std::optional<Platform> platform;  // default: Platform::Host()
  // A request fails when no byte arrives for this long (a hung registry fails within 30 s).
  std::chrono::seconds request_timeout{20};
  // When > 0: RegistryEndpointConfig::retry_budget (a bound on each registry request,
  // retries included; imagefs mount --fetch-timeout).
  std::chrono::milliseconds fetch_timeout{0};
};

class ImageSource {
 public:
  ImageSource() = default;
  virtual ~ImageSource() = default;
  ImageSource(const ImageSource&) = delete;
  ImageSource& operator=(const ImageSource&) = delete;

  // Canonical name of the image, e.g. "docker://localhost:5000/busybox:latest".
  virtual std::string Describe() const = 0;
  // The repository the source resolved to, without tag or digest, as skopeo inspect prints
  // Name: "docker.io/library/nginx" (kDocker, after short-name resolution); for
  // docker-archive: the chosen image's RepoTag repository; for oci: empty (no Docker name).
  virtual std::string Name() const = 0;
  // The manifest named by the reference when digest is empty, else the one with that
  // digest. Bytes are checked against the digest (and against a digest-pinned reference).
  virtual Result<RawManifest> GetManifest(const std::string& digest) = 0;
  // Random access to a blob. The size comes from the descriptor; the source does not
  // verify the digest (ranges cannot be verified); callers that read whole blobs do.
  virtual Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& desc) = 0;
  // Tags in the repository (kDocker) or ref names (kOci); kUnsupported elsewhere.
  virtual Result<std::vector<std::string>> ListTags() = 0;
};

// Opens the source. For kDocker, short names resolve through options.registries as podman
// does (each candidate tried until one has the image), registries.conf mirrors come before
// the origin, and credentials come from options.auth_env.
Result<std::unique_ptr<ImageSource>> OpenImageSource(const ImageRef& ref,
                                                     const FetchOptions& options);

// Every image of a docker-archive FILE (imagefs load), in manifest.json's order: its
// RepoTags as written and a source serving it as docker-archive:FILE:@N would. The tar is
// indexed once and a layer file several images share is hashed once.
struct ArchiveImage {
  std::vector<std::string> repo_tags;
  std::unique_ptr<ImageSource> source;
};
Result<std::vector<ArchiveImage>> OpenDockerArchiveImages(const std::string& path);

// A fully resolved single-platform image: manifest, config, all verified.
struct ResolvedImage {
  std::string name;                  // ImageSource::Name()
  std::optional<RawManifest> index;  // when the reference named an index / manifest list
  RawManifest manifest;
  ImageManifest parsed;
  std::string config_bytes;
  ImageConfig config;
};

// Fetches the manifest (choosing options.platform from an index), then the config,
// checking each against its digest.
Result<ResolvedImage> ResolveImage(ImageSource& source, const FetchOptions& options);
// ResolveImage in two steps, for a caller that fetches the config while it does other
// work (imagefs mount opens the layer indexes meanwhile): the manifest, leaving
// config_bytes and config empty; then the config into `image` (it writes only those two).
Result<ResolvedImage> ResolveManifest(ImageSource& source, const FetchOptions& options);
Status ResolveConfig(ImageSource& source, ResolvedImage& image);

// Reads a whole blob and checks it against desc.digest and desc.size.
Result<std::string> FetchVerifiedBlob(ImageSource& source, const Descriptor& desc);

}  // namespace imagefs::fetch
