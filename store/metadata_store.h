#pragma once

// The image table under --root: <root>/metadata.db, an embedded SQLite database.
//
//   images        one row per pulled image, keyed by manifest digest: config digest (docker's
//                 image ID), the index it was picked from, created (from the config), pulled
//                 and last-used times, total size (config + compressed layers), platform,
//                 and the source it came from
//   image_layers  the layer digests (and compressed sizes) each image uses, in order, so
//                 shared bytes can be counted once
//   tags          repository + tag -> manifest digest (several tags per image)
//   repo_digests  repository + digest -> manifest digest ("busybox@sha256:..."), as docker's
//                 RepoDigests; the digest is what the name was pulled as (the index for a
//                 multi-arch image)
//
// Repositories are stored fully qualified ("docker.io/library/busybox"). A tag moved to
// another image leaves the old one untagged ("dangling"), as docker does.
//
// Durability: WAL journal, synchronous=FULL, busy_timeout so concurrent imagefs processes
// wait instead of failing, and every multi-row change in one BEGIN IMMEDIATE transaction:
// a crash or a failed statement leaves the previous state. The schema version lives in
// PRAGMA user_version; Open applies the missing migration steps in one transaction.
//
// Thread safety: calls on one MetadataStore are serialized by a mutex; several processes
// may open the same database.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "util/status.h"

struct sqlite3;

namespace imagefs::store {

struct LayerRecord {
  std::string digest;  // "sha256:..."
  int64_t size = 0;    // compressed size from the manifest
};

struct ImageRecord {
  std::string manifest_digest;  // primary key
  std::string config_digest;    // docker's image ID
  std::string index_digest;     // the index/manifest list it was picked from, or ""
  int64_t created = 0;          // unix seconds from the config; 0 when unknown
  int64_t pulled = 0;           // unix seconds
  int64_t last_used = 0;        // unix seconds
  int64_t config_size = 0;
  int64_t size = 0;             // config + compressed layer sizes
  std::string platform;         // "linux/amd64"
  std::string source;           // where it was pulled from ("docker://host/repo:tag")
  std::vector<LayerRecord> layers;
};

// A name pointing at an image: a tag ("repo:tag") or a repo digest ("repo@sha256:...");
// exactly one of tag and digest is set.
struct NameRef {
  std::string repository;  // fully qualified: "docker.io/library/busybox"
  std::string tag;
  std::string digest;
  std::string manifest_digest;
  // "repo:tag" or "repo@digest", fully qualified.
  std::string String() const { return repository + (tag.empty() ? "@" + digest : ":" + tag); }
  friend bool operator==(const NameRef&, const NameRef&) = default;
};

// What a removal did, in the order docker prints it.
struct Removal {
  std::vector<NameRef> untagged;
  std::vector<ImageRecord> deleted;
  // Blobs (manifests, configs, indexes, layers) that no remaining image uses; the caller
  // removes them from the blob store after the transaction committed.
  std::vector<std::string> unused_blobs;
};

class MetadataStore {
 public:
  static constexpr int kSchemaVersion = 1;

  // Opens (creating when missing) <root>/metadata.db and migrates it.
  static Result<std::unique_ptr<MetadataStore>> Open(const std::string& root);
  // Opens a database file at an exact path (tests).
  static Result<std::unique_ptr<MetadataStore>> OpenFile(const std::string& path);
  ~MetadataStore();
  MetadataStore(const MetadataStore&) = delete;
  MetadataStore& operator=(const MetadataStore&) = delete;

  // Records a pulled image and the names it was pulled as, in one transaction: the image
  // row is inserted or refreshed (pulled/last-used times, source), its layers replaced,
  // each tag moved to it (leaving a previous image untagged) and each repo digest added.
  Status RecordImage(const ImageRecord& image, const std::vector<NameRef>& names);

  // Points repository:tag at an existing image (moving the tag if it pointed elsewhere).
  Status Tag(const std::string& repository, const std::string& tag,
             const std::string& manifest_digest);

  // Marks an image used now (for LRU-style reports).
  Status Touch(const std::string& manifest_digest, int64_t now);

  Result<std::optional<ImageRecord>> GetImage(const std::string& manifest_digest);
  // Every image, newest created first (ties: most recently pulled first).
  Result<std::vector<ImageRecord>> ListImages();
  // Every tag and repo digest, ordered by repository, then tag / digest.
  Result<std::vector<NameRef>> ListNames();
  Result<std::vector<NameRef>> NamesOf(const std::string& manifest_digest);

  // The image a tag or repo digest names; kNotFound when none.
  Result<std::string> LookupName(const std::string& repository, const std::string& tag,
                                 const std::string& digest);
  // Images whose manifest or config digest is `digest` ("sha256:<64 hex>"), or whose
  // config hex starts with `hex_prefix` (docker's short and long IDs).
  Result<std::vector<std::string>> LookupDigest(const std::string& digest);
  Result<std::vector<std::string>> LookupIdPrefix(const std::string& hex_prefix);

  // Removes one name. When no tag is left in that repository, its repo digests go too (as
  // docker does); when the image has no name left at all, it is deleted.
  // kNotFound when the name does not exist.
  Result<Removal> RemoveName(const NameRef& name);
  // Deletes images given by ID or digest with every name they have. Without force, an image
  // named in more than one repository is refused (kAlreadyExists, docker's conflict).
  Result<Removal> RemoveImages(const std::vector<std::string>& manifest_digests, bool force);

  // Bytes of every distinct blob the images use (a layer shared by two images counts
  // once): configs + layers.
  Result<int64_t> DistinctBytes();
  // How many images use a layer.
  Result<int> ImagesUsingLayer(const std::string& layer_digest);

 private:
  explicit MetadataStore(sqlite3* db) : db_(db) {}
  Status Migrate();
  Status Exec(const char* sql);
  Result<std::vector<std::string>> DigestsWhere(const std::string& sql, const std::string& arg);
  Status DeleteImageLocked(const std::string& manifest_digest, Removal* removal);
  Status CollectUnusedBlobs(Removal* removal);
  Status UntagLocked(const NameRef& name);

  std::mutex mu_;
  sqlite3* db_;  // owned; guarded by mu_
};

}  // namespace imagefs::store
