#pragma once

// Constructors of the transport-specific ImageSources, used by OpenImageSource, and the
// digest checks they share. Private to fetch/.

#include <memory>
#include <string>
#include <string_view>

#include "fetch/image_source.h"

namespace imagefs::fetch::internal {

// docker://: registry_source.cc.
Result<std::unique_ptr<ImageSource>> OpenRegistrySource(const ImageRef& ref,
                                                        const FetchOptions& options);
// oci:DIR[:TAG]: oci_layout_source.cc.
Result<std::unique_ptr<ImageSource>> OpenOciLayout(const ImageRef& ref);
// docker-archive:FILE[:REF|:@N]: docker_archive_source.cc.
Result<std::unique_ptr<ImageSource>> OpenDockerArchive(const ImageRef& ref);

// Manifests larger than this are refused before they are read (distribution's limit is 4 MiB).
inline constexpr uint64_t kMaxManifestBytes = 4 << 20;

// Checks manifest bytes against `want` ("sha256:<hex>"): kCorruption
// "<where>: manifest digest mismatch: wanted X, got Y"; kUnsupported for other algorithms.
Status CheckManifestDigest(std::string_view bytes, const std::string& want,
                           const std::string& where);

// "application/vnd.oci.image.manifest.v1+json; charset=utf-8" -> the type alone.
std::string StripMediaTypeParams(std::string_view content_type);

}  // namespace imagefs::fetch::internal
