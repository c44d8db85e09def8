#pragma once

// The last steps of writing a new image (imagefs convert, imagefs commit): its layers are
// already at the destination; put the config, then the manifest (last, so the name never
// points at a partial image), and return the manifest's digest.

#include <string>
#include <vector>

#include "fetch/image_dest.h"
#include "index/layer_writer.h"
#include "util/status.h"

namespace imagefs::tools {

// --format's words: "zstd-chunked" (or "zstd:chunked") and "estargz".
Result<index::SeekableFormat> ParseSeekableFormat(const std::string& text);
// "zstd:chunked" or "estargz".
const char* SeekableFormatName(index::SeekableFormat format);

// Writes the tar at tar_path as a seekable layer into a new file out_path (a scratch file:
// not fsynced); the descriptor carries the writer's media type, digest, size and
// annotations.
struct LayerFile {
  fetch::Descriptor desc;
  std::string diff_id;
};
Result<LayerFile> WriteLayerFile(index::SeekableFormat format, const std::string& tar_path,
                                 const std::string& out_path,
                                 const index::LayerWriteOptions& options);

// Puts the blob in the file at `path` unless the destination has it.
Status PutBlobIfMissing(fetch::ImageDestination& dest, const fetch::Descriptor& desc,
                        const std::string& path);

// Which manifest schema to write: OCI (config/manifest OCI media types) or Docker schema 2.
enum class ManifestFamily { kOci, kDocker };

// Spools config_bytes under scratch_dir, puts it, then puts a manifest listing `layers`
// (descriptors with their annotations) in `family`. Returns the manifest digest.
Result<std::string> PutConfigAndManifest(fetch::ImageDestination& dest,
                                         const std::string& scratch_dir,
                                         const std::string& config_bytes,
                                         const std::vector<fetch::Descriptor>& layers,
                                         ManifestFamily family);

// A docker-archive holds plain tar layers: says on stderr that the seekable layers just
// written are not seekable in `dst` when it is one.
void NoteUnseekableDestination(const fetch::ImageRef& dst_ref, const std::string& dst);

}  // namespace imagefs::tools
