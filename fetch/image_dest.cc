// ImageDestination for docker://, oci: and docker-archive: (see image_dest.h).

#include "fetch/image_dest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "fetch/registry_client.h"
#include "util/decompress.h"
#include "util/digest.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::fetch {
namespace {

using OrderedJson = nlohmann::ordered_json;

constexpr char kRefNameAnnotation[] = "org.opencontainers.image.ref.name";
constexpr size_t kIoBlock = 1 << 20;
constexpr uint64_t kMaxConfigBytes = 64 << 20;
constexpr size_t kTarBlock = 512;

// ---------------------------------------------------------------------------------------
// Small file helpers.

template <typename T>
std::span<const uint8_t> AsBytes(const T& bytes) {
  return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

Result<UniqueFd> OpenForRead(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "opening " + path);
  return fd;
}

// A new file "<prefix>XXXXXX", mode 0644.
Result<std::pair<UniqueFd, std::string>> MakeTempFile(const std::string& prefix) {
  std::string name = prefix + "XXXXXX";
  UniqueFd fd(::mkstemp(name.data()));
  if (!fd) return Status::FromErrno(errno, "creating a temporary file " + name);
  if (::fchmod(fd.get(), 0644) != 0) {
    int err = errno;
    ::unlink(name.c_str());
    return Status::FromErrno(err, "chmod " + name);
  }
  return std::make_pair(std::move(fd), std::move(name));
}

Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "opening " + dir);
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync " + dir);
  return Status::Ok();
}

std::string Basename(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

Result<Digest> ParseSha256(const Descriptor& desc, const std::string& where) {
  auto d = Digest::Parse(desc.digest);
  if (!d.ok()) return d.status().WithContext(where);
  if (d->algorithm() != "sha256") {
    return Status::Unsupported(where + ": blob " + desc.digest + ": only sha256 is supported");
  }
  return *d;
}

// The checks every PutBlob makes once the bytes are all read.
Status CheckBlob(const Descriptor& desc, uint64_t size, const Digest& got,
                 const std::string& where, const std::string& path) {
  if (desc.size >= 0 && size != static_cast<uint64_t>(desc.size)) {
    return Status::Corruption(where + ": blob " + desc.digest + " from " + path + " has " +
                              std::to_string(size) + " bytes, the descriptor says " +
                              std::to_string(desc.size) + "; nothing was stored");
  }
  if (got.String() != desc.digest) {
    return Status::Corruption(where + ": " + path + " hashes to " + got.String() + ", not " +
                              desc.digest + "; nothing was stored");
  }
  return Status::Ok();
}

bool IsConfigType(std::string_view media_type) {
  return media_type == kOciConfig || media_type == kDockerConfig ||
         (media_type.size() >= 5 && media_type.substr(media_type.size() - 5) == "+json") ||
         media_type == "application/json";
}

// The manifest's media type: as given, else the JSON's mediaType, else from its shape.
Result<std::string> ManifestType(const RawManifest& m, const std::string& where) {
  if (!m.media_type.empty()) return m.media_type;
  auto j = nlohmann::json::parse(m.bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("mediaType") && j["mediaType"].is_string()) {
    return j["mediaType"].get<std::string>();
  }
  auto kind = SniffManifest(m.bytes, "");
  if (!kind.ok()) return kind.status().WithContext(where);
  return std::string(*kind == ManifestKind::kIndex ? kOciIndex : kOciManifest);
}

// Checks manifest.digest (when set) and returns the sha256 of the bytes.
Result<std::string> ManifestDigest(const RawManifest& m, const std::string& where) {
  std::string got = Digest::Sha256Of(std::string_view(m.bytes)).String();
  if (!m.digest.empty() && m.digest != got) {
    return Status::Corruption(where + ": manifest bytes hash to " + got + ", not " + m.digest);
  }
  return got;
}

// ---------------------------------------------------------------------------------------
// docker://

class RegistryDestination final : public ImageDestination {
 public:
  RegistryDestination(Reference ref, Endpoint endpoint, std::unique_ptr<RegistryClient> client)
      : ref_(std::move(ref)), endpoint_(std::move(endpoint)), client_(std::move(client)) {}

  std::string Describe() const override { return "docker://" + ref_.String(); }

  Result<bool> HasBlob(const Descriptor& desc) override {
    ASSIGN_OR_RETURN(Digest d, ParseSha256(desc, Describe()));
    ASSIGN_OR_RETURN(std::optional<uint64_t> size,
                     client_->StatBlobForPush(endpoint_.repository, d.String()));
    if (!size) return false;
    return desc.size < 0 || *size == static_cast<uint64_t>(desc.size);
  }

  Status PutBlob(const Descriptor& desc, const std::string& path) override {
    ASSIGN_OR_RETURN(Digest d, ParseSha256(desc, Describe()));
    ASSIGN_OR_RETURN(std::unique_ptr<BlobSource> body, OpenFileBlobSource(path));
    if (desc.size >= 0 && body->Size() != static_cast<uint64_t>(desc.size)) {
      return Status::Corruption(Describe() + ": blob " + desc.digest + " from " + path + " has " +
                                std::to_string(body->Size()) + " bytes, the descriptor says " +
                                std::to_string(desc.size) + "; nothing was pushed");
    }
    return client_->UploadBlob(endpoint_.repository, d.String(), *body);
  }

  Status PutChildManifest(const RawManifest& manifest) override {
    ASSIGN_OR_RETURN(std::string digest, ManifestDigest(manifest, Describe()));
    ASSIGN_OR_RETURN(std::string type, ManifestType(manifest, Describe()));
    auto r = client_->PutManifest(endpoint_.repository, digest, type, manifest.bytes);
    return r.status();
  }

  Status PutManifest(const RawManifest& manifest) override {
    ASSIGN_OR_RETURN(std::string digest, ManifestDigest(manifest, Describe()));
    ASSIGN_OR_RETURN(std::string type, ManifestType(manifest, Describe()));
    if (!ref_.digest.empty() && ref_.digest != digest) {
      return Status::InvalidArgument(Describe() + " is pinned to " + ref_.digest +
                                     ", but the manifest to push is " + digest);
    }
    ASSIGN_OR_RETURN(std::string stored,
                     client_->PutManifest(endpoint_.repository, ref_.TagOrDigest(), type,
                                          manifest.bytes));
    (void)stored;  // PutManifest already compared the registry's digest with ours
    return Status::Ok();
  }

 private:
  const Reference ref_;
  const Endpoint endpoint_;
  const std::unique_ptr<RegistryClient> client_;
};

Result<std::unique_ptr<ImageDestination>> OpenRegistryDestination(const ImageRef& image,
                                                                  const FetchOptions& options) {
  const Reference& ref = image.ref;
  ASSIGN_OR_RETURN(std::vector<Endpoint> endpoints,
                   EndpointsFor(options.registries, ref, options.insecure_registries));
  const Endpoint* origin = nullptr;
  for (const Endpoint& ep : endpoints) {
    if (!ep.mirror) origin = &ep;
  }
  if (origin == nullptr) {
    return Status::Internal("docker://" + ref.String() + ": no origin endpoint to push to");
  }
  RegistryEndpointConfig config;
  config.host = origin->host;
  config.insecure = origin->insecure;
  config.auth_env = options.auth_env;
  config.certs_dir_override = options.cert_dir;
  config.stall_timeout = options.request_timeout;
  ASSIGN_OR_RETURN(std::unique_ptr<RegistryClient> client, RegistryClient::Create(config));
  return std::unique_ptr<ImageDestination>(
      std::make_unique<RegistryDestination>(ref, *origin, std::move(client)));
}

// ---------------------------------------------------------------------------------------
// oci:DIR[:TAG]

class OciLayoutDestination final : public ImageDestination {
 public:
  OciLayoutDestination(std::string dir, std::string tag)
      : dir_(std::move(dir)), tag_(std::move(tag)) {}

  std::string Describe() const override { return "oci:" + dir_ + (tag_.empty() ? "" : ":" + tag_); }

  Result<bool> HasBlob(const Descriptor& desc) override {
    ASSIGN_OR_RETURN(Digest d, ParseSha256(desc, Describe()));
    struct stat st;
    if (::stat(BlobPath(d).c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return false;
      return Status::FromErrno(errno, "stat " + BlobPath(d));
    }
    return S_ISREG(st.st_mode) &&
           (desc.size < 0 || static_cast<uint64_t>(st.st_size) == static_cast<uint64_t>(desc.size));
  }

  Status PutBlob(const Descriptor& desc, const std::string& path) override {
    ASSIGN_OR_RETURN(Digest d, ParseSha256(desc, Describe()));
    RETURN_IF_ERROR(EnsureLayout());
    ASSIGN_OR_RETURN(UniqueFd in, OpenForRead(path));
    ASSIGN_OR_RETURN(auto tmp, MakeTempFile(dir_ + "/.imagefs-put-blob-"));
    auto& [out, tmp_path] = tmp;
    Status st = [&]() -> Status {
      Sha256 hash;
      uint64_t size = 0;
      std::vector<char> buf(kIoBlock);
      while (true) {
        ASSIGN_OR_RETURN(size_t n, ReadSome(in.get(), buf.data(), buf.size(), path));
        if (n == 0) break;
        hash.Update(std::string_view(buf.data(), n));
        size += n;
        if (desc.size >= 0 && size > static_cast<uint64_t>(desc.size)) break;  // fails below
        RETURN_IF_ERROR(WriteAll(out.get(), std::string_view(buf.data(), n), tmp_path));
      }
      RETURN_IF_ERROR(CheckBlob(desc, size, hash.Finish(), Describe(), path));
      if (::fsync(out.get()) != 0) return Status::FromErrno(errno, "fsync " + tmp_path);
      if (::rename(tmp_path.c_str(), BlobPath(d).c_str()) != 0) {
        return Status::FromErrno(errno, "renaming " + tmp_path + " to " + BlobPath(d));
      }
      return Status::Ok();
    }();
    if (!st.ok()) ::unlink(tmp_path.c_str());
    return st;
  }

  Status PutChildManifest(const RawManifest& manifest) override {
    ASSIGN_OR_RETURN(std::string digest, ManifestDigest(manifest, Describe()));
    return StoreBytes(digest, manifest.bytes);
  }

  Status PutManifest(const RawManifest& manifest) override {
    ASSIGN_OR_RETURN(std::string digest, ManifestDigest(manifest, Describe()));
    ASSIGN_OR_RETURN(std::string type, ManifestType(manifest, Describe()));
    RETURN_IF_ERROR(StoreBytes(digest, manifest.bytes));
    // index.json: keep what is there (other images, unknown fields), replace our name.
    const std::string index_path = dir_ + "/index.json";
    OrderedJson index;
    auto text = ReadFile(index_path);
    if (text.ok()) {
      index = OrderedJson::parse(*text, nullptr, /*allow_exceptions=*/false);
      if (index.is_discarded() || !index.is_object() ||
          (index.contains("manifests") && !index["manifests"].is_array())) {
        return Status::Corruption(Describe() + ": index.json is not an image index; fix or "
                                  "remove " + index_path);
      }
    } else if (text.status().IsNotFound()) {
      index["schemaVersion"] = 2;
      index["mediaType"] = std::string(kOciIndex);
    } else {
      return text.status();
    }
    OrderedJson kept = OrderedJson::array();
    if (index.contains("manifests")) {
      for (const OrderedJson& entry : index["manifests"]) {
        std::string name;
        if (entry.is_object() && entry.contains("annotations") &&
            entry["annotations"].is_object() && entry["annotations"].contains(kRefNameAnnotation) &&
            entry["annotations"][kRefNameAnnotation].is_string()) {
          name = entry["annotations"][kRefNameAnnotation].get<std::string>();
        }
        bool same_digest = entry.is_object() && entry.contains("digest") &&
                           entry["digest"].is_string() &&
                           entry["digest"].get<std::string>() == digest;
        bool replaced = tag_.empty() ? (name.empty() && same_digest) : name == tag_;
        if (!replaced) kept.push_back(entry);
      }
    }
    OrderedJson desc;
    desc["mediaType"] = type;
    desc["digest"] = digest;
    desc["size"] = manifest.bytes.size();
    if (!tag_.empty()) desc["annotations"] = {{kRefNameAnnotation, tag_}};
    kept.push_back(std::move(desc));
    index["manifests"] = std::move(kept);
    return WriteFileAtomic(index_path, index.dump());
  }

 private:
  std::string BlobPath(const Digest& d) const { return dir_ + "/blobs/sha256/" + d.hex(); }

  // DIR, DIR/oci-layout and DIR/blobs/sha256, once.
  Status EnsureLayout() {
    if (layout_ready_) return Status::Ok();
    RETURN_IF_ERROR(MakeDirs(dir_ + "/blobs/sha256"));
    auto text = ReadFile(dir_ + "/oci-layout");
    if (text.ok()) {
      auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("imageLayoutVersion") ||
          !j["imageLayoutVersion"].is_string() ||
          j["imageLayoutVersion"].get<std::string>().rfind("1.", 0) != 0) {
        return Status::Unsupported(Describe() + ": oci-layout names no 1.x imageLayoutVersion; "
                                   "not writing into a layout imagefs does not understand");
      }
    } else if (text.status().IsNotFound()) {
      RETURN_IF_ERROR(WriteFileAtomic(dir_ + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})"));
    } else {
      return text.status();
    }
    layout_ready_ = true;
    return Status::Ok();
  }

  Status StoreBytes(const std::string& digest, const std::string& bytes) {
    RETURN_IF_ERROR(EnsureLayout());
    ASSIGN_OR_RETURN(Digest d, Digest::Parse(digest));
    return WriteFileAtomic(BlobPath(d), bytes);
  }

  const std::string dir_;
  const std::string tag_;
  bool layout_ready_ = false;
};

// ---------------------------------------------------------------------------------------
// docker-archive:FILE[:REF]

// Streaming decompressors: Feed may call `out` any number of times.
// A ustar header for a regular file; sizes of 8 GiB and more use GNU base-256.
std::string TarHeader(const std::string& name, uint64_t size) {
  std::string h(kTarBlock, '\0');
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 100));
  auto octal = [&](size_t off, size_t len, uint64_t v) {
    std::string digits(len - 1, '0');
    for (size_t i = len - 1; i-- > 0 && v > 0; v >>= 3) {
      digits[i] = static_cast<char>('0' + (v & 7));
    }
    std::memcpy(h.data() + off, digits.data(), len - 1);
  };
  octal(100, 8, 0644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  if (size < (uint64_t{1} << 33)) {
    octal(124, 12, size);
  } else {
    h[124] = static_cast<char>(0x80);
    for (int i = 11; i >= 1; --i, size >>= 8) h[124 + i] = static_cast<char>(size & 0xff);
  }
  octal(136, 12, 0);  // mtime: the epoch, for reproducible archives
  h[156] = '0';
  std::memcpy(h.data() + 257, "ustar\0" "00", 8);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  char chk[8];
  std::snprintf(chk, sizeof(chk), "%06o", sum);
  std::memcpy(h.data() + 148, chk, 7);  // six digits, NUL, then the space already there
  return h;
}

class DockerArchiveDestination final : public DockerArchiveWriter {
 public:
  DockerArchiveDestination(std::string path, std::string selector, std::string repo_tag)
      : path_(std::move(path)), selector_(std::move(selector)), repo_tag_(std::move(repo_tag)) {}

  ~DockerArchiveDestination() override {
    if (fd_ && !tmp_path_.empty()) ::unlink(tmp_path_.c_str());
  }

  std::string Describe() const override {
    return "docker-archive:" + path_ + (selector_.empty() ? "" : ":" + selector_);
  }

  Result<bool> HasBlob(const Descriptor& desc) override {
    return configs_.count(desc.digest) > 0 || layers_.count(desc.digest) > 0;
  }

  Status PutBlob(const Descriptor& desc, const std::string& path) override {
    ASSIGN_OR_RETURN(Digest d, ParseSha256(desc, Describe()));
    if (done_) return Status::Internal(Describe() + ": the archive is already written");
    ASSIGN_OR_RETURN(UniqueFd in, OpenForRead(path));
    if (IsConfigType(desc.media_type)) return PutConfig(desc, d, in.get(), path);
    if (desc.media_type.empty()) {  // no type given: a JSON object is the config
      char first = 0;
      if (::pread(in.get(), &first, 1, 0) == 1 && first == '{') {
        return PutConfig(desc, d, in.get(), path);
      }
    }
    RETURN_IF_ERROR(EnsureTemp());
    const uint64_t start = end_;
    uint64_t data_end = start + kTarBlock;
    Status st = [&]() -> Status {
      std::vector<char> buf(kIoBlock);
      ASSIGN_OR_RETURN(size_t n, ReadSome(in.get(), buf.data(), buf.size(), path));
      std::unique_ptr<Decompressor> dec = MakeDecompressor(
          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(buf.data()), n));
      Sha256 compressed;
      Sha256 plain;
      uint64_t size = 0;
      DecompressSink sink = [&](const char* data, size_t len) -> Status {
        plain.Update(std::string_view(data, len));
        RETURN_IF_ERROR(PwriteAll(fd_.get(), AsBytes(std::string_view(data, len)), data_end, tmp_path_));
        data_end += len;
        return Status::Ok();
      };
      // Bytes that do not decompress are reported as the wrong blob when they are one, so
      // hashing goes on to the end after a decompression error.
      Status bad_data;
      while (n > 0) {
        compressed.Update(std::string_view(buf.data(), n));
        size += n;
        if (desc.size >= 0 && size > static_cast<uint64_t>(desc.size)) break;  // fails below
        if (bad_data.ok()) {
          Status fed = dec->Feed(buf.data(), n, sink);
          if (!fed.ok() && fed.code() != Code::kCorruption) return fed;
          bad_data = fed;
        }
        ASSIGN_OR_RETURN(n, ReadSome(in.get(), buf.data(), buf.size(), path));
      }
      RETURN_IF_ERROR(CheckBlob(desc, size, compressed.Finish(), Describe(), path));
      if (bad_data.ok()) bad_data = dec->Finish();
      if (!bad_data.ok()) return bad_data.WithContext(Describe() + ": layer " + desc.digest);
      Digest diff_id = plain.Finish();
      layers_[desc.digest] = diff_id.hex();
      if (!written_layers_.insert(diff_id.hex()).second) {
        data_end = start;  // the same tar arrived compressed another way: keep one copy
        return Status::Ok();
      }
      uint64_t tar_size = data_end - start - kTarBlock;
      std::string header = TarHeader(diff_id.hex() + ".tar", tar_size);
      RETURN_IF_ERROR(PwriteAll(fd_.get(), AsBytes(header), start, tmp_path_));
      RETURN_IF_ERROR(Pad(data_end));
      return Status::Ok();
    }();
    if (!st.ok()) {
      // Drop whatever was written for this blob.
      if (::ftruncate(fd_.get(), static_cast<off_t>(start)) != 0) {
        return Status::FromErrno(errno, "truncating " + tmp_path_);
      }
      return st;
    }
    end_ = (data_end + kTarBlock - 1) / kTarBlock * kTarBlock;
    if (data_end == start) end_ = start;
    return Status::Ok();
  }

  Status PutChildManifest(const RawManifest&) override {
    return Status::Unsupported(Describe() + ": a docker-archive holds single-platform images "
                               "only; choose one platform of the index");
  }

  Status PutManifest(const RawManifest& manifest) override {
    std::vector<std::string> tags;
    if (!repo_tag_.empty()) tags.push_back(repo_tag_);
    RETURN_IF_ERROR(AddImage(manifest, tags));
    return Commit();
  }

  Status AddImage(const RawManifest& manifest, const std::vector<std::string>& repo_tags) override {
    if (done_) return Status::Internal(Describe() + ": the archive is already written");
    ASSIGN_OR_RETURN(std::string digest, ManifestDigest(manifest, Describe()));
    (void)digest;
    ASSIGN_OR_RETURN(std::string type, ManifestType(manifest, Describe()));
    auto kind = SniffManifest(manifest.bytes, type);
    if (!kind.ok()) return kind.status().WithContext(Describe());
    if (*kind == ManifestKind::kIndex) {
      return Status::Unsupported(Describe() + ": a docker-archive holds single-platform images "
                                 "only; choose one platform of the index");
    }
    auto parsed = ParseImageManifest(manifest.bytes, type);
    if (!parsed.ok()) return parsed.status().WithContext(Describe());
    auto config_it = configs_.find(parsed->config.digest);
    if (config_it == configs_.end()) {
      return Status::InvalidArgument(Describe() + ": config " + parsed->config.digest +
                                     " was not stored before the manifest");
    }
    auto config = ParseImageConfig(config_it->second);
    if (!config.ok()) return config.status().WithContext(Describe() + ": config");
    if (config->diff_ids.size() != parsed->layers.size()) {
      return Status::Corruption(Describe() + ": the manifest has " +
                                std::to_string(parsed->layers.size()) + " layers, the config " +
                                std::to_string(config->diff_ids.size()) + " diff_ids");
    }
    nlohmann::json layer_names = nlohmann::json::array();
    std::string top_layer;
    for (size_t i = 0; i < parsed->layers.size(); ++i) {
      const Descriptor& l = parsed->layers[i];
      auto it = layers_.find(l.digest);
      if (it == layers_.end()) {
        return Status::InvalidArgument(Describe() + ": layer " + l.digest +
                                       " was not stored before the manifest");
      }
      if (config->diff_ids[i] != "sha256:" + it->second) {
        return Status::Corruption(Describe() + ": layer " + std::to_string(i) + " (" + l.digest +
                                  ") decompresses to sha256:" + it->second +
                                  ", but the config's diff_id is " + config->diff_ids[i]);
      }
      layer_names.push_back(it->second + ".tar");
      top_layer = it->second;
    }
    RETURN_IF_ERROR(EnsureTemp());
    ASSIGN_OR_RETURN(Digest config_digest, Digest::Parse(parsed->config.digest));
    const std::string config_name = config_digest.hex() + ".json";
    if (written_configs_.insert(config_name).second) {
      RETURN_IF_ERROR(AppendMember(config_name, config_it->second));
    }
    OrderedJson entry;  // docker's field order: Config, RepoTags, Layers
    entry["Config"] = config_name;
    entry["RepoTags"] = OrderedJson::array();
    for (const std::string& t : repo_tags) {
      entry["RepoTags"].push_back(t);
      // "host:5000/app:1": the tag follows the last ':' after the last '/'.
      const size_t colon = t.rfind(':');
      const size_t slash = t.rfind('/');
      if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) continue;
      if (!top_layer.empty()) repositories_[t.substr(0, colon)][t.substr(colon + 1)] = top_layer;
    }
    entry["Layers"] = std::move(layer_names);
    entries_.push_back(std::move(entry));
    return Status::Ok();
  }

  Status Commit() override {
    if (done_) return Status::Internal(Describe() + ": the archive is already written");
    if (entries_.empty()) return Status::InvalidArgument(Describe() + ": no image to write");
    RETURN_IF_ERROR(EnsureTemp());
    RETURN_IF_ERROR(AppendMember("manifest.json", entries_.dump()));
    if (!repositories_.empty()) RETURN_IF_ERROR(AppendMember("repositories", repositories_.dump()));
    std::string trailer(2 * kTarBlock, '\0');
    RETURN_IF_ERROR(PwriteAll(fd_.get(), AsBytes(trailer), end_, tmp_path_));
    end_ += trailer.size();
    if (::ftruncate(fd_.get(), static_cast<off_t>(end_)) != 0) {
      return Status::FromErrno(errno, "truncating " + tmp_path_);
    }
    if (::fsync(fd_.get()) != 0) return Status::FromErrno(errno, "fsync " + tmp_path_);
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
      return Status::FromErrno(errno, "renaming " + tmp_path_ + " to " + path_);
    }
    done_ = true;
    fd_.Reset();
    tmp_path_.clear();
    return FsyncDir(Dirname(path_));
  }

 private:
  Status PutConfig(const Descriptor& desc, const Digest& d, int fd, const std::string& path) {
    std::string bytes;
    std::vector<char> buf(kIoBlock);
    while (true) {
      ASSIGN_OR_RETURN(size_t n, ReadSome(fd, buf.data(), buf.size(), path));
      if (n == 0) break;
      bytes.append(buf.data(), n);
      if (bytes.size() > kMaxConfigBytes) {
        return Status::Corruption(Describe() + ": config " + desc.digest + " is over " +
                                  std::to_string(kMaxConfigBytes) + " bytes");
      }
    }
    RETURN_IF_ERROR(
        CheckBlob(desc, bytes.size(), Digest::Sha256Of(std::string_view(bytes)), Describe(), path));
    configs_[d.String()] = std::move(bytes);
    return Status::Ok();
  }

  // The temp archive next to FILE, so the final rename stays on one filesystem.
  Status EnsureTemp() {
    if (fd_) return Status::Ok();
    std::string dir = Dirname(path_);
    if (!PathExists(dir)) return Status::NotFound(Describe() + ": no directory " + dir);
    ASSIGN_OR_RETURN(auto tmp, MakeTempFile(dir + "/." + Basename(path_) + ".imagefs-tmp-"));
    fd_ = std::move(tmp.first);
    tmp_path_ = std::move(tmp.second);
    end_ = 0;
    return Status::Ok();
  }

  // Zeros from `data_end` up to the next block boundary.
  Status Pad(uint64_t data_end) {
    size_t pad = static_cast<size_t>((kTarBlock - data_end % kTarBlock) % kTarBlock);
    if (pad == 0) return Status::Ok();
    std::string zeros(pad, '\0');
    return PwriteAll(fd_.get(), AsBytes(zeros), data_end, tmp_path_);
  }

  Status AppendMember(const std::string& name, const std::string& data) {
    std::string header = TarHeader(name, data.size());
    RETURN_IF_ERROR(PwriteAll(fd_.get(), AsBytes(header), end_, tmp_path_));
    RETURN_IF_ERROR(PwriteAll(fd_.get(), AsBytes(data), end_ + kTarBlock, tmp_path_));
    uint64_t data_end = end_ + kTarBlock + data.size();
    RETURN_IF_ERROR(Pad(data_end));
    end_ = (data_end + kTarBlock - 1) / kTarBlock * kTarBlock;
    return Status::Ok();
  }

  const std::string path_;
  const std::string selector_;
  const std::string repo_tag_;  // "" = no RepoTags
  UniqueFd fd_;
  std::string tmp_path_;
  uint64_t end_ = 0;  // where the next member's header goes
  bool done_ = false;
  std::map<std::string, std::string> configs_;  // digest -> bytes
  std::map<std::string, std::string> layers_;   // blob digest -> diff_id hex
  std::set<std::string> written_layers_;        // diff_id hex of members in the archive
  std::set<std::string> written_configs_;       // config member names in the archive
  OrderedJson entries_ = OrderedJson::array();  // manifest.json, one entry per image
  nlohmann::json repositories_ = nlohmann::json::object();  // repo -> tag -> top layer hex
};

Result<std::unique_ptr<ImageDestination>> OpenDockerArchiveDestination(const ImageRef& image) {
  const std::string where = "docker-archive:" + image.path;
  if (image.path.empty()) return Status::InvalidArgument(where + ": no file name");
  std::string repo_tag;
  if (!image.tag.empty()) {
    if (image.tag[0] == '@') {
      return Status::InvalidArgument(where + ":" + image.tag + ": @N picks an image to read; "
                                     "name the image to write as " + where + ":NAME:TAG");
    }
    auto ref = ParseReference(image.tag);
    if (!ref.ok()) return ref.status().WithContext(where);
    if (!ref->digest.empty()) {
      return Status::InvalidArgument(where + ":" + image.tag + ": a docker-archive names images "
                                     "by tag, not digest; write " + where + ":NAME:TAG");
    }
    repo_tag = ref->Name() + ":" + ref->tag;
  }
  return std::unique_ptr<ImageDestination>(
      std::make_unique<DockerArchiveDestination>(image.path, image.tag, repo_tag));
}

}  // namespace

Result<std::unique_ptr<DockerArchiveWriter>> OpenDockerArchiveWriter(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("docker-archive: no file name");
  return std::unique_ptr<DockerArchiveWriter>(
      std::make_unique<DockerArchiveDestination>(path, "", ""));
}

namespace {

// Reads a whole blob of `source` into fd.
Status SaveBlob(ImageSource& source, const Descriptor& desc, int fd, const std::string& where) {
  ASSIGN_OR_RETURN(std::unique_ptr<BlobSource> blob, source.OpenBlob(desc));
  std::vector<uint8_t> buf(kIoBlock);
  for (uint64_t offset = 0; offset < blob->Size();) {
    ASSIGN_OR_RETURN(size_t n, blob->ReadAt(offset, std::span<uint8_t>(buf)));
    if (n == 0) {
      return Status::Corruption(blob->Describe() + ": ended at byte " + std::to_string(offset) +
                                " of " + std::to_string(blob->Size()));
    }
    RETURN_IF_ERROR(WriteAll(fd, std::string_view(reinterpret_cast<const char*>(buf.data()), n), where));
    offset += n;
  }
  return Status::Ok();
}

}  // namespace

Result<bool> CopyBlob(ImageSource& source, const Descriptor& desc, ImageDestination& dest,
                      const std::string& scratch_dir) {
  ASSIGN_OR_RETURN(bool present, dest.HasBlob(desc));
  if (present) return false;
  ASSIGN_OR_RETURN(auto tmp, MakeTempFile(scratch_dir + "/.imagefs-copy-blob-"));
  auto& [fd, path] = tmp;
  Status st = SaveBlob(source, desc, fd.get(), path);
  if (st.ok()) st = dest.PutBlob(desc, path);
  ::unlink(path.c_str());
  if (!st.ok()) return st.WithContext("copying " + source.Describe() + " to " + dest.Describe());
  return true;
}

Result<CopyStats> CopyImage(ImageSource& source, const ResolvedImage& image,
                            ImageDestination& dest, const std::string& scratch_dir) {
  CopyStats stats;
  std::vector<Descriptor> blobs = image.parsed.layers;
  blobs.push_back(image.parsed.config);
  std::set<std::string> done;
  for (const Descriptor& desc : blobs) {
    if (!done.insert(desc.digest).second) continue;  // a layer listed twice
    ASSIGN_OR_RETURN(bool put, CopyBlob(source, desc, dest, scratch_dir));
    if (!put) {
      ++stats.blobs_skipped;
      continue;
    }
    ++stats.blobs_put;
    stats.bytes_put += desc.size >= 0 ? static_cast<uint64_t>(desc.size) : 0;
  }
  RETURN_IF_ERROR(dest.PutManifest(image.manifest));
  return stats;
}

Result<std::unique_ptr<ImageDestination>> OpenImageDestination(const ImageRef& ref,
                                                               const FetchOptions& options) {
  switch (ref.transport) {
    case Transport::kDocker:
      return OpenRegistryDestination(ref, options);
    case Transport::kOci:
      if (ref.path.empty()) return Status::InvalidArgument("oci: needs a directory: oci:DIR[:TAG]");
      return std::unique_ptr<ImageDestination>(
          std::make_unique<OciLayoutDestination>(ref.path, ref.tag));
    case Transport::kDockerArchive:
      return OpenDockerArchiveDestination(ref);
  }
  return Status::Internal("unknown transport");
}

}  // namespace imagefs::fetch
