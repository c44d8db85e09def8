#pragma once

// Where an image goes: the write side of ImageSource, with skopeo's transport names.
//   docker://REF               a registry (push). Short names normalize as Docker does
//                              ("app" -> docker.io/library/app:latest); no search registries.
//   oci:DIR[:TAG]              an OCI image layout; created when missing.
//   docker-archive:FILE[:REF]  the tar `docker save` writes, REF = "name:tag" for RepoTags.
//
// Protocol, for one image:
//   for each blob (layers, then the config):  if (!HasBlob(d)) PutBlob(d, file);
//   PutManifest(manifest);   // last: the image becomes visible under its name
// A failure at any step leaves the name pointing where it pointed before: registry blobs
// without a manifest are invisible, oci: blobs without an index.json entry are garbage a
// later gc removes, and a docker-archive FILE is only ever replaced whole.
//
// Per transport:
//   docker://  HasBlob = HEAD with push scope; PutBlob = POST + PUT (PATCH chunks above
//              32 MiB), hashed while sent and cancelled on a mismatch; PutManifest = PUT
//              /v2/NAME/manifests/TAG (or the pinned digest, which must match) with the
//              manifest's media type. Manifests of any type (OCI, Docker schema 2, indexes).
//   oci:       blobs/sha256/<hex>, written to DIR/.imagefs-put-blob-XXXXXX, verified, fsynced and
//              renamed. PutManifest stores the manifest as a blob and rewrites index.json
//              atomically, replacing the entry with the same org.opencontainers.image.ref.name
//              (with no TAG: the entry with no name and the same digest). Unknown fields of
//              index.json are kept. Manifests are stored as given (a Docker schema 2
//              manifest stays one; converting is the caller's choice).
//   docker-archive: a single-platform image only (an index is kUnsupported). Layers are
//              stored decompressed (gzip or zstd -> tar) as `<diff_id hex>.tar`, the config
//              as `<hex>.json`, plus manifest.json [{Config, RepoTags, Layers}], as skopeo
//              writes them, and the legacy `repositories` file {"repo": {"tag": "<hex>"}}
//              (docker load and skopeo read manifest.json; the legacy file names each tag's
//              top layer by the stem of its member, for tools that still list tags from
//              it). Several images go into one archive through DockerArchiveWriter below
//              (imagefs save); a layer several images share is stored once. The config's
//              rootfs.diff_ids must match the decompressed layers. The compression is
//              sniffed from the bytes (gzip, also multi-member; zstd; else a plain tar kept
//              as is); a blob whose media type is a config type (or empty, when it is a JSON
//              object) is the config. Layers stream into a hidden
//              DIR/.FILE.imagefs-tmp-XXXXXX as they arrive; PutManifest appends the rest, fsyncs
//              and renames it over FILE (an existing FILE is replaced, as docker save -o).
//              RepoTags holds the fully-qualified name ("docker.io/library/app:1"), as skopeo.
//              Zstd layers need libzstd linked into the binary (see image_dest.cc).
//
// Thread safety: none; one image per destination object, calls in order from one thread.

#include <memory>
#include <string>
#include <vector>

#include "fetch/image_source.h"
#include "fetch/manifest.h"
#include "util/status.h"

namespace imagefs::fetch {

class ImageDestination {
 public:
  ImageDestination() = default;
  virtual ~ImageDestination() = default;
  ImageDestination(const ImageDestination&) = delete;
  ImageDestination& operator=(const ImageDestination&) = delete;

  // Canonical name, e.g. "docker://localhost:5000/app:1", "oci:/d:t".
  virtual std::string Describe() const = 0;
  // True when the destination already holds the blob (with desc.size, when known), so its
  // upload can be skipped.
  virtual Result<bool> HasBlob(const Descriptor& desc) = 0;
  // Stores the blob held in the file at `path`. desc.digest (sha256) and desc.size (when
  // >= 0) are checked while the bytes stream; a mismatch is kCorruption and nothing becomes
  // visible at the destination. desc.media_type tells layers from configs (docker-archive
  // sniffs gzip/zstd magic for the layer's compression).
  virtual Status PutBlob(const Descriptor& desc, const std::string& path) = 0;
  // Stores a manifest by digest without naming it: the per-platform manifests of an index,
  // before PutManifest(index). docker-archive: kUnsupported.
  virtual Status PutChildManifest(const RawManifest& manifest) = 0;
  // Last step: the manifest (its config and layers already put) becomes visible under the
  // reference's name. manifest.media_type must be set (or given by the JSON's mediaType);
  // manifest.digest, when set, must be the sha256 of the bytes.
  virtual Status PutManifest(const RawManifest& manifest) = 0;
};

// A docker-archive FILE holding several images, as `docker save` writes it (imagefs save).
// For each image: its blobs through HasBlob/PutBlob (as for docker-archive: above; a layer
// already in the archive reports HasBlob true), then AddImage(manifest, repo_tags) records
// its manifest.json entry. Commit() writes manifest.json and `repositories`, fsyncs and
// renames the hidden temp file over FILE. Destroyed without Commit, the temp file is
// removed and FILE is left as it was. PutManifest(m) is AddImage(m, {}) + Commit().
class DockerArchiveWriter : public ImageDestination {
 public:
  // repo_tags: "name:tag" as written into RepoTags (docker save writes the familiar form,
  // "busybox:latest"); empty for an image saved by ID.
  virtual Status AddImage(const RawManifest& manifest,
                          const std::vector<std::string>& repo_tags) = 0;
  virtual Status Commit() = 0;
};
Result<std::unique_ptr<DockerArchiveWriter>> OpenDockerArchiveWriter(const std::string& path);

// Opens a destination. kDocker: the reference as written (Docker-normalized), its registry's
// registries.conf settings (blocked, insecure, location prefix) and credentials from
// options.auth_env; mirrors are never pushed to. Checks nothing over the network yet.
Result<std::unique_ptr<ImageDestination>> OpenImageDestination(const ImageRef& ref,
                                                               const FetchOptions& options);

struct CopyStats {
  int blobs_put = 0;
  int blobs_skipped = 0;  // HasBlob said the destination had them
  uint64_t bytes_put = 0;
};

// One blob of `source` put to `dest` unless HasBlob says it is there (then false): read
// whole into a temporary file under scratch_dir, put, removed.
Result<bool> CopyBlob(ImageSource& source, const Descriptor& desc, ImageDestination& dest,
                      const std::string& scratch_dir);

// The protocol above for one resolved single-platform image: each blob (layers in order,
// then the config) the destination lacks is read whole from `source` into a temporary file
// under scratch_dir, put and removed; then image.manifest is put. The first failure stops
// the copy (the manifest is never put after a failed blob).
Result<CopyStats> CopyImage(ImageSource& source, const ResolvedImage& image,
                            ImageDestination& dest, const std::string& scratch_dir);

}  // namespace imagefs::fetch
