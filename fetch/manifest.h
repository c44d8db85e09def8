#pragma once

// OCI image index/manifest/config and Docker manifest list/schema 2, parsed from JSON.
// Schema 1 manifests are recognized and rejected as unsupported.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace imagefs::fetch {

inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestV1 =
    "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr std::string_view kDockerManifestV1Signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar";

// The Accept header a client sends for manifests.
std::string ManifestAcceptHeader();

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64", "arm64"
  std::string variant;       // "v8", "" when none
  // "linux/arm64/v8", "linux/amd64", "arm64" (os defaults to linux).
  static Result<Platform> Parse(std::string_view text);
  // This machine: linux + GOARCH-style name of the running CPU.
  static Platform Host();
  std::string String() const;
  // True when `image` can run on this platform (variant ignored when either is empty;
  // arm64 with no variant matches v8; a 32-bit ARM variant runs older ones: v7 runs v6).
  // Aliases are normalized on both sides (x86_64 = amd64, aarch64 = arm64, armhf = arm/v7).
  bool Matches(const Platform& image) const;
};

struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:..."
  int64_t size = -1;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;
  std::vector<std::string> urls;
};

enum class ManifestKind { kImage, kIndex };

// Decides what a manifest is from its Content-Type (may be empty or generic, as some
// registries and umoci's output give) and its JSON ("mediaType", "manifests", "layers",
// "schemaVersion"). Schema 1 -> kUnsupported with a message saying so.
Result<ManifestKind> SniffManifest(std::string_view bytes, std::string_view content_type);

struct ImageManifest {
  std::string media_type;  // effective type (from JSON or Content-Type)
  Descriptor config;
  std::vector<Descriptor> layers;
  std::map<std::string, std::string> annotations;
};

struct ImageIndex {
  std::string media_type;
  std::vector<Descriptor> manifests;
  std::map<std::string, std::string> annotations;
};

Result<ImageManifest> ParseImageManifest(std::string_view bytes, std::string_view content_type);
Result<ImageIndex> ParseImageIndex(std::string_view bytes, std::string_view content_type);
// Picks the manifest for `want` from an index; kNotFound lists the platforms available:
// "no image for linux/s390x in <where>: available: linux/amd64, linux/arm64/v8".
// Preference: the exact variant (an unnamed arm64 variant is v8, arm's v7), then an entry
// naming no variant, then an older ARM variant the CPU runs (v7 runs v6), then an entry with
// no platform at all. Attestations (unknown/unknown) are never chosen. Ties: index order.
Result<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want);
// The same, naming the index in the error (e.g. "docker://docker.io/library/nginx:1.25").
Result<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want,
                                  std::string_view where);

struct HistoryEntry {
  std::string created;
  std::string created_by;
  std::string author;
  std::string comment;
  bool empty_layer = false;
};

struct ImageConfig {
  std::string architecture;
  std::string os;
  std::string variant;
  std::string created;  // RFC 3339 as stored
  std::string author;
  std::vector<std::string> env;
  std::vector<std::string> cmd;
  std::vector<std::string> entrypoint;
  std::string working_dir;
  std::string user;
  std::map<std::string, std::string> labels;
  std::vector<std::string> exposed_ports;
  std::vector<std::string> diff_ids;
  std::vector<HistoryEntry> history;
};

Result<ImageConfig> ParseImageConfig(std::string_view bytes);

}  // namespace imagefs::fetch
