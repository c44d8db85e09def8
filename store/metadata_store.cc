#include "store/metadata_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <set>

#include "util/file.h"

namespace imagefs::store {
namespace {

constexpr int kBusyTimeoutMs = 10000;

// Migration steps: kMigrations[i] takes the schema from version i to i + 1.
constexpr const char* kMigrations[] = {
    // 0 -> 1: the image table.
    R"sql(
CREATE TABLE images (
  manifest_digest TEXT PRIMARY KEY CHECK (manifest_digest LIKE 'sha256:%'),
  config_digest   TEXT NOT NULL CHECK (config_digest LIKE 'sha256:%'),
  index_digest    TEXT NOT NULL DEFAULT '',
  created         INTEGER NOT NULL,
  pulled          INTEGER NOT NULL,
  last_used       INTEGER NOT NULL,
  config_size     INTEGER NOT NULL,
  size            INTEGER NOT NULL,
  platform        TEXT NOT NULL,
  source          TEXT NOT NULL
);
CREATE INDEX images_by_config ON images(config_digest);
CREATE TABLE image_layers (
  manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
  position        INTEGER NOT NULL,
  layer_digest    TEXT NOT NULL CHECK (layer_digest LIKE 'sha256:%'),
  size            INTEGER NOT NULL,
  PRIMARY KEY (manifest_digest, position)
);
CREATE INDEX image_layers_by_digest ON image_layers(layer_digest);
CREATE TABLE tags (
  repository      TEXT NOT NULL CHECK (repository <> ''),
  tag             TEXT NOT NULL CHECK (tag <> ''),
  manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
  PRIMARY KEY (repository, tag)
);
CREATE INDEX tags_by_image ON tags(manifest_digest);
CREATE TABLE repo_digests (
  repository      TEXT NOT NULL CHECK (repository <> ''),
  digest          TEXT NOT NULL CHECK (digest LIKE 'sha256:%'),
  manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
  PRIMARY KEY (repository, digest)
);
CREATE INDEX repo_digests_by_image ON repo_digests(manifest_digest);
)sql",
};
static_assert(std::size(kMigrations) == MetadataStore::kSchemaVersion);

Status SqlError(sqlite3* db, const std::string& what) {
  int code = sqlite3_extended_errcode(db);
  std::string msg = "metadata store: " + what + ": " + sqlite3_errmsg(db);
  if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED) return Status::Unavailable(msg);
  if ((code & 0xff) == SQLITE_FULL) return Status::NoSpace(msg);
  if ((code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB) return Status::Corruption(msg);
  if ((code & 0xff) == SQLITE_CONSTRAINT) return Status::InvalidArgument(msg);
  return Status::Internal(msg);
}

// One prepared statement; finalized on destruction. Bind with 1-based indexes.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
      status_ = SqlError(db, std::string("preparing \"") + sql + "\"");
      stmt_ = nullptr;
    }
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  const Status& status() const { return status_; }
  Stmt& Bind(int i, const std::string& v) {
    if (stmt_) sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    if (stmt_) sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // true: a row is ready; false: done.
  Result<bool> Step() {
    if (!status_.ok()) return status_;
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqlError(db_, "running \"" + std::string(sqlite3_sql(stmt_)) + "\"");
  }
  Status Run() {
    auto r = Step();
    return r.ok() ? Status::Ok() : r.status();
  }
  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  Status status_;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back when destroyed uncommitted.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {}
  ~Transaction() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  Status Begin() {
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqlError(db_, "beginning a transaction");
    }
    open_ = true;
    return Status::Ok();
  }
  Status Commit() {
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqlError(db_, "committing");
    }
    open_ = false;
    return Status::Ok();
  }

 private:
  sqlite3* db_;
  bool open_ = false;
};

constexpr const char* kImageColumns =
    "manifest_digest, config_digest, index_digest, created, pulled, last_used, config_size, "
    "size, platform, source";

ImageRecord ReadImageRow(const Stmt& s) {
  ImageRecord r;
  r.manifest_digest = s.Text(0);
  r.config_digest = s.Text(1);
  r.index_digest = s.Text(2);
  r.created = s.Int(3);
  r.pulled = s.Int(4);
  r.last_used = s.Int(5);
  r.config_size = s.Int(6);
  r.size = s.Int(7);
  r.platform = s.Text(8);
  r.source = s.Text(9);
  return r;
}

Status LoadLayers(sqlite3* db, ImageRecord* image) {
  Stmt s(db, "SELECT layer_digest, size FROM image_layers WHERE manifest_digest = ? ORDER BY position");
  s.Bind(1, image->manifest_digest);
  image->layers.clear();
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    image->layers.push_back({s.Text(0), s.Int(1)});
  }
  return Status::Ok();
}

Result<std::vector<NameRef>> QueryNames(sqlite3* db, const char* where, const std::string& arg) {
  // Within a repository: tags (sorted) before digests.
  std::string sql =
      "SELECT * FROM (SELECT repository, tag, '' AS digest, manifest_digest FROM tags " +
      std::string(where) +
      " UNION ALL SELECT repository, '', digest, manifest_digest FROM repo_digests " + where +
      ") ORDER BY repository, tag = '', tag, digest";
  Stmt s(db, sql.c_str());
  if (!arg.empty()) {
    s.Bind(1, arg);
    s.Bind(2, arg);
  }
  std::vector<NameRef> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({s.Text(0), s.Text(1), s.Text(2), s.Text(3)});
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<MetadataStore>> MetadataStore::Open(const std::string& root) {
  RETURN_IF_ERROR(MakeDirs(root));
  return OpenFile(root + "/metadata.db");
}

Result<std::unique_ptr<MetadataStore>> MetadataStore::OpenFile(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    Status st = Status::Internal(
        "metadata store: opening " + path + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close(db);
    return st;
  }
  std::unique_ptr<MetadataStore> store(new MetadataStore(db));
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  // journal_mode returns a row; sqlite3_exec ignores it.
  RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode = WAL"));
  RETURN_IF_ERROR(store->Exec("PRAGMA synchronous = FULL"));
  RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys = ON"));
  RETURN_IF_ERROR(store->Migrate().WithContext(path));
  return store;
}

MetadataStore::~MetadataStore() { sqlite3_close(db_); }

Status MetadataStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    sqlite3_free(err);
    return SqlError(db_, sql);
  }
  return Status::Ok();
}

Status MetadataStore::Migrate() {
  Transaction txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  Stmt get(db_, "PRAGMA user_version");
  ASSIGN_OR_RETURN(bool row, get.Step());
  int version = row ? static_cast<int>(get.Int(0)) : 0;
  if (version > kSchemaVersion) {
    return Status::Unsupported("metadata store: schema version " + std::to_string(version) +
                               " is newer than this imagefs understands (" +
                               std::to_string(kSchemaVersion) + ")");
  }
  if (version == kSchemaVersion) return Status::Ok();  // rolls back the empty transaction
  for (int v = version; v < kSchemaVersion; ++v) {
    RETURN_IF_ERROR(Exec(kMigrations[v]));
  }
  std::string set = "PRAGMA user_version = " + std::to_string(kSchemaVersion);
  RETURN_IF_ERROR(Exec(set.c_str()));
  return txn.Commit();
}

Status MetadataStore::RecordImage(const ImageRecord& image, const std::vector<NameRef>& names) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  Stmt put(db_,
           "INSERT INTO images (manifest_digest, config_digest, index_digest, created, pulled, "
           "last_used, config_size, size, platform, source) VALUES (?,?,?,?,?,?,?,?,?,?) "
           "ON CONFLICT(manifest_digest) DO UPDATE SET index_digest = excluded.index_digest, "
           "pulled = excluded.pulled, last_used = excluded.last_used, source = excluded.source");
  put.Bind(1, image.manifest_digest).Bind(2, image.config_digest).Bind(3, image.index_digest);
  put.Bind(4, image.created).Bind(5, image.pulled).Bind(6, image.last_used);
  put.Bind(7, image.config_size).Bind(8, image.size).Bind(9, image.platform).Bind(10, image.source);
  RETURN_IF_ERROR(put.Run());
  Stmt clear(db_, "DELETE FROM image_layers WHERE manifest_digest = ?");
  RETURN_IF_ERROR(clear.Bind(1, image.manifest_digest).Run());
  for (size_t i = 0; i < image.layers.size(); ++i) {
    Stmt layer(db_, "INSERT INTO image_layers (manifest_digest, position, layer_digest, size) "
                    "VALUES (?,?,?,?)");
    layer.Bind(1, image.manifest_digest).Bind(2, static_cast<int64_t>(i));
    layer.Bind(3, image.layers[i].digest).Bind(4, image.layers[i].size);
    RETURN_IF_ERROR(layer.Run());
  }
  for (const NameRef& n : names) {
    if (!n.tag.empty()) {
      Stmt tag(db_, "INSERT OR REPLACE INTO tags (repository, tag, manifest_digest) VALUES (?,?,?)");
      RETURN_IF_ERROR(tag.Bind(1, n.repository).Bind(2, n.tag).Bind(3, image.manifest_digest).Run());
    } else {
      Stmt dg(db_, "INSERT OR REPLACE INTO repo_digests (repository, digest, manifest_digest) "
                   "VALUES (?,?,?)");
      RETURN_IF_ERROR(dg.Bind(1, n.repository).Bind(2, n.digest).Bind(3, image.manifest_digest).Run());
    }
  }
  return txn.Commit();
}

Status MetadataStore::Tag(const std::string& repository, const std::string& tag,
                          const std::string& manifest_digest) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  Stmt exists(db_, "SELECT 1 FROM images WHERE manifest_digest = ?");
  ASSIGN_OR_RETURN(bool found, exists.Bind(1, manifest_digest).Step());
  if (!found) return Status::NotFound("no such image: " + manifest_digest);
  Stmt s(db_, "INSERT OR REPLACE INTO tags (repository, tag, manifest_digest) VALUES (?,?,?)");
  RETURN_IF_ERROR(s.Bind(1, repository).Bind(2, tag).Bind(3, manifest_digest).Run());
  return txn.Commit();
}

Status MetadataStore::Touch(const std::string& manifest_digest, int64_t now) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "UPDATE images SET last_used = ? WHERE manifest_digest = ?");
  return s.Bind(1, now).Bind(2, manifest_digest).Run();
}

Result<std::optional<ImageRecord>> MetadataStore::GetImage(const std::string& manifest_digest) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql = std::string("SELECT ") + kImageColumns + " FROM images WHERE manifest_digest = ?";
  Stmt s(db_, sql.c_str());
  ASSIGN_OR_RETURN(bool row, s.Bind(1, manifest_digest).Step());
  if (!row) return std::optional<ImageRecord>();
  ImageRecord r = ReadImageRow(s);
  RETURN_IF_ERROR(LoadLayers(db_, &r));
  return std::optional<ImageRecord>(std::move(r));
}

Result<std::vector<ImageRecord>> MetadataStore::ListImages() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql = std::string("SELECT ") + kImageColumns +
                    " FROM images ORDER BY created DESC, pulled DESC, manifest_digest";
  Stmt s(db_, sql.c_str());
  std::vector<ImageRecord> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(ReadImageRow(s));
  }
  for (ImageRecord& r : out) RETURN_IF_ERROR(LoadLayers(db_, &r));
  return out;
}

Result<std::vector<NameRef>> MetadataStore::ListNames() {
  std::lock_guard<std::mutex> lock(mu_);
  return QueryNames(db_, "", "");
}

Result<std::vector<NameRef>> MetadataStore::NamesOf(const std::string& manifest_digest) {
  std::lock_guard<std::mutex> lock(mu_);
  return QueryNames(db_, "WHERE manifest_digest = ?", manifest_digest);
}

Result<std::string> MetadataStore::LookupName(const std::string& repository,
                                              const std::string& tag, const std::string& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, tag.empty() ? "SELECT manifest_digest FROM repo_digests WHERE repository = ? AND digest = ?"
                          : "SELECT manifest_digest FROM tags WHERE repository = ? AND tag = ?");
  s.Bind(1, repository).Bind(2, tag.empty() ? digest : tag);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return Status::NotFound("no such image: " + repository + (tag.empty() ? "@" + digest : ":" + tag));
  return s.Text(0);
}

Result<std::vector<std::string>> MetadataStore::DigestsWhere(const std::string& sql,
                                                             const std::string& arg) {
  Stmt s(db_, sql.c_str());
  s.Bind(1, arg);
  if (sql.find("?2") != std::string::npos) s.Bind(2, arg);
  std::vector<std::string> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(s.Text(0));
  }
  return out;
}

Result<std::vector<std::string>> MetadataStore::LookupDigest(const std::string& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  return DigestsWhere("SELECT manifest_digest FROM images WHERE manifest_digest = ?1 OR "
                      "config_digest = ?2 OR index_digest = ?2 ORDER BY manifest_digest",
                      digest);
}

Result<std::vector<std::string>> MetadataStore::LookupIdPrefix(const std::string& hex_prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  // Only [0-9a-f] reach here (callers check), so the prefix needs no LIKE escaping.
  return DigestsWhere("SELECT manifest_digest FROM images WHERE substr(config_digest, 8, length(?1)) "
                      "= ?2 ORDER BY manifest_digest",
                      hex_prefix);
}

Status MetadataStore::UntagLocked(const NameRef& name) {
  Stmt s(db_, name.tag.empty() ? "DELETE FROM repo_digests WHERE repository = ? AND digest = ?"
                               : "DELETE FROM tags WHERE repository = ? AND tag = ?");
  RETURN_IF_ERROR(s.Bind(1, name.repository).Bind(2, name.tag.empty() ? name.digest : name.tag).Run());
  if (sqlite3_changes(db_) == 0) return Status::NotFound("no such image: " + name.String());
  return Status::Ok();
}

Status MetadataStore::DeleteImageLocked(const std::string& manifest_digest, Removal* removal) {
  std::string sql = std::string("SELECT ") + kImageColumns + " FROM images WHERE manifest_digest = ?";
  Stmt get(db_, sql.c_str());
  ASSIGN_OR_RETURN(bool row, get.Bind(1, manifest_digest).Step());
  if (!row) return Status::NotFound("no such image: " + manifest_digest);
  ImageRecord r = ReadImageRow(get);
  RETURN_IF_ERROR(LoadLayers(db_, &r));
  Stmt del(db_, "DELETE FROM images WHERE manifest_digest = ?");  // cascades to names, layers
  RETURN_IF_ERROR(del.Bind(1, manifest_digest).Run());
  removal->deleted.push_back(std::move(r));
  return Status::Ok();
}

Status MetadataStore::CollectUnusedBlobs(Removal* removal) {
  std::set<std::string> candidates;
  for (const ImageRecord& r : removal->deleted) {
    candidates.insert(r.manifest_digest);
    candidates.insert(r.config_digest);
    if (!r.index_digest.empty()) candidates.insert(r.index_digest);
    for (const LayerRecord& l : r.layers) candidates.insert(l.digest);
  }
  for (const std::string& d : candidates) {
    Stmt used(db_,
              "SELECT 1 FROM images WHERE manifest_digest = ?1 OR config_digest = ?1 OR "
              "index_digest = ?1 UNION ALL SELECT 1 FROM image_layers WHERE layer_digest = ?1 "
              "LIMIT 1");
    ASSIGN_OR_RETURN(bool in_use, used.Bind(1, d).Step());
    if (!in_use) removal->unused_blobs.push_back(d);
  }
  return Status::Ok();
}

Result<Removal> MetadataStore::RemoveName(const NameRef& name) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  Stmt find(db_, name.tag.empty()
                     ? "SELECT manifest_digest FROM repo_digests WHERE repository = ? AND digest = ?"
                     : "SELECT manifest_digest FROM tags WHERE repository = ? AND tag = ?");
  find.Bind(1, name.repository).Bind(2, name.tag.empty() ? name.digest : name.tag);
  ASSIGN_OR_RETURN(bool found, find.Step());
  if (!found) return Status::NotFound("no such image: " + name.String());
  std::string manifest = find.Text(0);

  Removal removal;
  RETURN_IF_ERROR(UntagLocked(name));
  NameRef removed = name;
  removed.manifest_digest = manifest;
  removal.untagged.push_back(removed);

  ASSIGN_OR_RETURN(auto left, QueryNames(db_, "WHERE manifest_digest = ?", manifest));
  // No tag left in this repository: its digest references go too, as docker does.
  bool repo_has_tag = std::any_of(left.begin(), left.end(), [&](const NameRef& n) {
    return n.repository == name.repository && !n.tag.empty();
  });
  if (!name.tag.empty() && !repo_has_tag) {
    for (const NameRef& n : left) {
      if (n.repository == name.repository && n.tag.empty()) {
        RETURN_IF_ERROR(UntagLocked(n));
        removal.untagged.push_back(n);
      }
    }
    ASSIGN_OR_RETURN(left, QueryNames(db_, "WHERE manifest_digest = ?", manifest));
  }
  if (left.empty()) {
    RETURN_IF_ERROR(DeleteImageLocked(manifest, &removal));
    RETURN_IF_ERROR(CollectUnusedBlobs(&removal));
  }
  RETURN_IF_ERROR(txn.Commit());
  return removal;
}

Result<Removal> MetadataStore::RemoveImages(const std::vector<std::string>& manifest_digests,
                                            bool force) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  Removal removal;
  std::vector<NameRef> names;
  for (const std::string& m : manifest_digests) {
    ASSIGN_OR_RETURN(auto n, QueryNames(db_, "WHERE manifest_digest = ?", m));
    names.insert(names.end(), n.begin(), n.end());
  }
  std::set<std::string> repos;
  for (const NameRef& n : names) repos.insert(n.repository);
  if (repos.size() > 1 && !force) {
    return Status::AlreadyExists("image is referenced in multiple repositories");
  }
  for (const NameRef& n : names) {
    RETURN_IF_ERROR(UntagLocked(n));
    removal.untagged.push_back(n);
  }
  for (const std::string& m : manifest_digests) RETURN_IF_ERROR(DeleteImageLocked(m, &removal));
  RETURN_IF_ERROR(CollectUnusedBlobs(&removal));
  RETURN_IF_ERROR(txn.Commit());
  return removal;
}

Result<int64_t> MetadataStore::DistinctBytes() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT COALESCE(SUM(size), 0) FROM ("
         "  SELECT config_digest AS d, MAX(config_size) AS size FROM images GROUP BY config_digest"
         "  UNION"
         "  SELECT layer_digest, MAX(size) FROM image_layers GROUP BY layer_digest)");
  ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? s.Int(0) : 0;
}

Result<int> MetadataStore::ImagesUsingLayer(const std::string& layer_digest) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT COUNT(DISTINCT manifest_digest) FROM image_layers WHERE layer_digest = ?");
  ASSIGN_OR_RETURN(bool row, s.Bind(1, layer_digest).Step());
  return row ? static_cast<int>(s.Int(0)) : 0;
}

}  // namespace imagefs::store
