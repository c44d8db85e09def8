// docker-archive:FILE[:REF|:@N] — the tar `docker save` writes:
//   manifest.json   [{"Config": "<hex>.json", "RepoTags": ["name:tag"], "Layers": ["<id>/layer.tar"]}]
//                   (docker 25+: "blobs/sha256/<hex>" for both, often with symlinks from the
//                   old names)
//   repositories    the legacy {"name": {"tag": "<id>"}} map; archives with only this file
//                   come from docker < 1.10 and are refused
// The tar is indexed once (member offsets and sizes; nothing is extracted) and blobs are
// windows of the file. An archive has no registry manifest, so one is synthesized as skopeo
// does: Docker schema 2, with the config's and each layer file's sha256 and size, and the
// layer media type sniffed from the bytes (gzip or plain tar). The bytes are deterministic, so
// the manifest digest is stable across opens.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "fetch/sources_internal.h"
#include "util/digest.h"
#include "util/unique_fd.h"

namespace imagefs::fetch::internal {
namespace {

using Json = nlohmann::json;

constexpr size_t kBlock = 512;
constexpr uint64_t kMaxMetaMember = 64 << 20;  // manifest.json, configs, PAX headers
constexpr int kMaxLinkHops = 16;

struct Member {
  uint64_t offset = 0;  // of the data in the archive
  uint64_t size = 0;
};

// Where each regular file's data lies, plus symlinks and hard links to resolve names through.
struct TarIndex {
  std::map<std::string, Member> files;
  std::map<std::string, std::string> links;  // normalized name -> normalized target
};

Status PreadFull(int fd, void* buf, size_t n, uint64_t offset, const std::string& where) {
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::pread(fd, static_cast<char*>(buf) + done, n - done,
                          static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "reading " + where);
    }
    if (got == 0) {
      return Status::Corruption(where + ": truncated at offset " + std::to_string(offset + done));
    }
    done += static_cast<size_t>(got);
  }
  return Status::Ok();
}

// Resolves ".", ".." and repeated slashes; drops leading "/" and "./". "a/./b/../c" -> "a/c".
std::string NormalizePath(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(start, slash - start);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    start = slash + 1;
  }
  std::string out;
  for (std::string_view p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return out;
}

// A numeric header field: octal text (NUL/space padded) or GNU base-256 (high bit set).
Result<uint64_t> ParseNumber(const char* p, size_t n, std::string_view field) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  if (u[0] & 0x80) {
    if (u[0] & 0x40) return Status::Corruption(std::string("negative tar ") + std::string(field));
    uint64_t v = u[0] & 0x3f;
    for (size_t i = 1; i < n; ++i) {
      if (v >> 56) return Status::Corruption(std::string("tar ") + std::string(field) + " too large");
      v = (v << 8) | u[i];
    }
    return v;
  }
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\0')) ++i;
  uint64_t v = 0;
  for (; i < n && p[i] != '\0' && p[i] != ' '; ++i) {
    if (p[i] < '0' || p[i] > '7') {
      return Status::Corruption(std::string("tar ") + std::string(field) + " is not octal");
    }
    if (v >> 60) return Status::Corruption(std::string("tar ") + std::string(field) + " too large");
    v = v * 8 + static_cast<uint64_t>(p[i] - '0');
  }
  return v;
}

std::string FieldString(const char* p, size_t n) { return std::string(p, strnlen(p, n)); }

// PAX extended header records "LEN key=value\n"; returns path/linkpath/size overrides.
Status ParsePax(std::string_view payload, std::map<std::string, std::string>& out) {
  size_t p = 0;
  while (p < payload.size()) {
    size_t len = 0;
    size_t q = p;
    while (q < payload.size() && payload[q] >= '0' && payload[q] <= '9' && len < (1u << 30)) {
      len = len * 10 + static_cast<size_t>(payload[q] - '0');
      ++q;
    }
    if (q == p || q >= payload.size() || payload[q] != ' ' || len <= q - p + 1 ||
        p + len > payload.size() || payload[p + len - 1] != '\n') {
      if (payload.substr(p).find_first_not_of('\0') == std::string_view::npos) break;  // padding
      return Status::Corruption("malformed PAX header record");
    }
    std::string_view rec = payload.substr(q + 1, p + len - 1 - (q + 1));
    size_t eq = rec.find('=');
    if (eq != std::string_view::npos) out[std::string(rec.substr(0, eq))] = std::string(rec.substr(eq + 1));
    p += len;
  }
  return Status::Ok();
}

// Walks ustar, GNU and PAX headers once, recording each member's data offset and size.
Result<TarIndex> IndexTar(int fd, const std::string& where) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "stat " + where);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  TarIndex index;
  uint64_t off = 0;
  std::string gnu_long_name;
  std::string gnu_long_link;
  std::map<std::string, std::string> pax;
  char h[kBlock];
  while (true) {
    if (off + kBlock > file_size) {
      if (off == file_size && off > 0) break;  // no end-of-archive blocks; tolerate
      return Status::Corruption(where + ": truncated tar header at offset " + std::to_string(off) +
                                (off == 0 ? ": not a docker-archive (empty file)" : ""));
    }
    RETURN_IF_ERROR(PreadFull(fd, h, kBlock, off, where));
    if (std::all_of(h, h + kBlock, [](char c) { return c == '\0'; })) break;
    uint64_t unsigned_sum = 0;
    int64_t signed_sum = 0;
    for (size_t i = 0; i < kBlock; ++i) {
      char c = (i >= 148 && i < 156) ? ' ' : h[i];
      unsigned_sum += static_cast<unsigned char>(c);
      signed_sum += static_cast<signed char>(c);
    }
    auto want_sum = ParseNumber(h + 148, 8, "checksum");
    if (!want_sum.ok() ||
        (*want_sum != unsigned_sum && static_cast<int64_t>(*want_sum) != signed_sum)) {
      return Status::Corruption(where + ": bad tar header checksum at offset " +
                                std::to_string(off) + ": not a docker-archive tar file?");
    }
    auto size_field = ParseNumber(h + 124, 12, "size");
    if (!size_field.ok()) return size_field.status().WithContext(where);
    uint64_t size = *size_field;
    const char type = h[156];
    const uint64_t data = off + kBlock;
    if (size > file_size || data + size > file_size) {
      return Status::Corruption(where + ": tar member at offset " + std::to_string(off) +
                                " runs past the end of the file");
    }
    const bool is_meta = type == 'x' || type == 'g' || type == 'L' || type == 'K';
    if (is_meta) {
      if (size > kMaxMetaMember) {
        return Status::Corruption(where + ": oversized tar extension header at offset " +
                                  std::to_string(off));
      }
      std::string payload(size, '\0');
      RETURN_IF_ERROR(PreadFull(fd, payload.data(), size, data, where));
      if (type == 'L') {
        gnu_long_name = payload.substr(0, payload.find('\0'));
      } else if (type == 'K') {
        gnu_long_link = payload.substr(0, payload.find('\0'));
      } else if (type == 'x') {
        Status s = ParsePax(payload, pax);
        if (!s.ok()) return s.WithContext(where + " at offset " + std::to_string(off));
      }  // 'g' (global) carries nothing a member lookup needs
      off = data + (size + kBlock - 1) / kBlock * kBlock;
      continue;
    }
    std::string name;
    std::string link;
    if (auto it = pax.find("path"); it != pax.end()) {
      name = it->second;
    } else if (!gnu_long_name.empty()) {
      name = gnu_long_name;
    } else {
      name = FieldString(h, 100);
      // POSIX ustar keeps a prefix at 345; GNU's "ustar  " header uses those bytes otherwise.
      if (std::memcmp(h + 257, "ustar\0", 6) == 0) {
        std::string prefix = FieldString(h + 345, 155);
        if (!prefix.empty()) name = prefix + "/" + name;
      }
    }
    if (auto it = pax.find("linkpath"); it != pax.end()) {
      link = it->second;
    } else if (!gnu_long_link.empty()) {
      link = gnu_long_link;
    } else {
      link = FieldString(h + 157, 100);
    }
    if (auto it = pax.find("size"); it != pax.end()) {
      uint64_t v = 0;
      bool ok = !it->second.empty() && it->second.size() < 20;
      for (char c : it->second) {
        ok = ok && c >= '0' && c <= '9';
        if (ok) v = v * 10 + static_cast<uint64_t>(c - '0');
      }
      if (!ok || data + v > file_size) {
        return Status::Corruption(where + ": bad PAX size for " + name);
      }
      size = v;
    }
    std::string key = NormalizePath(name);
    if (type == '0' || type == '\0' || type == '7') {
      index.files[key] = Member{data, size};
      index.links.erase(key);
    } else if (type == '1') {  // hard link: target is an archive path
      index.links[key] = NormalizePath(link);
    } else if (type == '2') {  // symlink: relative to the link's directory unless absolute
      std::string dir = key.find('/') == std::string::npos ? "" : key.substr(0, key.rfind('/'));
      index.links[key] = NormalizePath(!link.empty() && link[0] == '/' ? link : dir + "/" + link);
    }
    // Directories, devices and GNU sparse files ('S') hold nothing docker save writes; their
    // data (if any) is skipped by size like any other member.
    gnu_long_name.clear();
    gnu_long_link.clear();
    pax.clear();
    off = data + (size + kBlock - 1) / kBlock * kBlock;
  }
  return index;
}

// Finds a regular member by name, following links.
const Member* FindMember(const TarIndex& index, const std::string& name) {
  std::string key = NormalizePath(name);
  for (int hop = 0; hop <= kMaxLinkHops; ++hop) {
    if (auto it = index.files.find(key); it != index.files.end()) return &it->second;
    auto link = index.links.find(key);
    if (link == index.links.end()) return nullptr;
    key = link->second;
  }
  return nullptr;
}

struct HashedMember {
  Digest digest;
  bool gzip = false;
};

Result<HashedMember> HashMember(int fd, const Member& m, const std::string& where) {
  Sha256 h;
  std::vector<uint8_t> buf(1 << 20);
  HashedMember out;
  uint64_t done = 0;
  while (done < m.size) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.size - done));
    RETURN_IF_ERROR(PreadFull(fd, buf.data(), n, m.offset + done, where));
    if (done == 0) out.gzip = n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b;
    h.Update(std::span<const uint8_t>(buf.data(), n));
    done += n;
  }
  out.digest = h.Finish();
  return out;
}

class DockerArchiveSource final : public ImageSource {
 public:
  DockerArchiveSource(std::string path, std::string selector, std::string name,
                      std::string manifest, std::map<std::string, Member> blobs)
      : path_(std::move(path)),
        selector_(std::move(selector)),
        name_(std::move(name)),
        manifest_(std::move(manifest)),
        manifest_digest_(Digest::Sha256Of(std::string_view(manifest_)).String()),
        blobs_(std::move(blobs)) {}

  std::string Describe() const override {
    return "docker-archive:" + path_ + (selector_.empty() ? "" : ":" + selector_);
  }
  std::string Name() const override { return name_; }

  Result<RawManifest> GetManifest(const std::string& digest) override {
    if (!digest.empty() && digest != manifest_digest_) {
      return Status::NotFound(Describe() + ": no manifest " + digest +
                              " (the archive's image is " + manifest_digest_ + ")");
    }
    RawManifest m;
    m.bytes = manifest_;
    m.media_type = std::string(kDockerManifest);
    m.digest = manifest_digest_;
    return m;
  }

  Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& desc) override {
    auto it = blobs_.find(desc.digest);
    if (it == blobs_.end()) return Status::NotFound(Describe() + ": no blob " + desc.digest);
    if (desc.size >= 0 && it->second.size != static_cast<uint64_t>(desc.size)) {
      return Status::Corruption(Describe() + ": blob " + desc.digest + " has " +
                                std::to_string(it->second.size) + " bytes, the manifest says " +
                                std::to_string(desc.size));
    }
    return OpenFileSliceBlobSource(path_, it->second.offset, it->second.size);
  }

  Result<std::vector<std::string>> ListTags() override {
    return Status::Unsupported(Describe() + ": an archive has no tag list");
  }

 private:
  const std::string path_;
  const std::string selector_;
  const std::string name_;
  const std::string manifest_;
  const std::string manifest_digest_;
  const std::map<std::string, Member> blobs_;  // digest -> member
};

std::vector<std::string> RepoTagsOf(const Json& entry) {
  std::vector<std::string> out;
  auto it = entry.find("RepoTags");
  if (it == entry.end() || !it->is_array()) return out;
  for (const Json& t : *it) {
    if (t.is_string()) out.push_back(t.get<std::string>());
  }
  return out;
}

std::string DescribeImages(const Json& list) {
  std::string out;
  for (size_t i = 0; i < list.size(); ++i) {
    std::vector<std::string> tags = RepoTagsOf(list[i]);
    out += (i == 0 ? "" : ", ") + std::string("@") + std::to_string(i);
    for (const std::string& t : tags) out += " " + t;
  }
  return out;
}

// Picks the entry of manifest.json that the selector names; fills *name for Name().
Result<size_t> SelectImage(const Json& list, const std::string& selector, const std::string& where,
                           std::string* name) {
  size_t chosen = list.size();
  if (selector.empty()) {
    if (list.size() != 1) {
      return Status::InvalidArgument(where + " holds " + std::to_string(list.size()) +
                                     " images: pick one with " + where + ":NAME:TAG or " + where +
                                     ":@N (available: " + DescribeImages(list) + ")");
    }
    chosen = 0;
  } else if (selector[0] == '@') {
    size_t n = 0;
    bool ok = selector.size() > 1 && selector.size() <= 10;
    for (size_t i = 1; i < selector.size() && ok; ++i) {
      ok = selector[i] >= '0' && selector[i] <= '9';
      n = n * 10 + static_cast<size_t>(selector[i] - '0');
    }
    if (!ok) return Status::InvalidArgument(where + ": \"" + selector + "\" is not @N");
    if (n >= list.size()) {
      return Status::NotFound(where + ": no image " + selector + " (the archive holds " +
                              std::to_string(list.size()) + ": " + DescribeImages(list) + ")");
    }
    chosen = n;
  } else {
    ASSIGN_OR_RETURN(Reference want, ParseReference(selector));
    for (size_t i = 0; i < list.size() && chosen == list.size(); ++i) {
      for (const std::string& t : RepoTagsOf(list[i])) {
        auto r = ParseReference(t);
        if (r.ok() && *r == want) {
          chosen = i;
          break;
        }
      }
    }
    if (chosen == list.size()) {
      return Status::NotFound(where + ": no image tagged " + selector +
                              " (available: " + DescribeImages(list) + ")");
    }
    *name = want.Name();
    return chosen;
  }
  for (const std::string& t : RepoTagsOf(list[chosen])) {
    auto r = ParseReference(t);
    if (r.ok()) {
      *name = r->Name();
      break;
    }
  }
  return chosen;
}

}  // namespace

namespace {

// An archive opened once: its tar index and manifest.json, and the hashes of the members
// read so far (several images share layer files).
struct Archive {
  std::string path;
  std::string where;
  UniqueFd fd;
  TarIndex index;
  Json list;
  std::map<std::string, HashedMember> hashed;  // normalized member name -> hash
};

Result<Archive> OpenArchive(const std::string& path) {
  Archive a;
  a.path = path;
  a.where = "docker-archive:" + path;
  const std::string& where = a.where;
  a.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!a.fd) {
    if (errno == ENOENT) return Status::NotFound(where + ": no such file");
    return Status::FromErrno(errno, "opening " + path);
  }
  ASSIGN_OR_RETURN(a.index, IndexTar(a.fd.get(), where));
  const Member* manifest_member = FindMember(a.index, "manifest.json");
  if (manifest_member == nullptr) {
    if (FindMember(a.index, "repositories") != nullptr) {
      return Status::Unsupported(where + ": the archive has no manifest.json (written by docker "
                                 "before 1.10), which imagefs does not support; save it again "
                                 "with a current docker");
    }
    return Status::Corruption(where + ": no manifest.json: not a docker save archive");
  }
  if (manifest_member->size > kMaxMetaMember) {
    return Status::Corruption(where + ": manifest.json is too large (" +
                              std::to_string(manifest_member->size) + " bytes)");
  }
  std::string manifest_text(manifest_member->size, '\0');
  RETURN_IF_ERROR(PreadFull(a.fd.get(), manifest_text.data(), manifest_text.size(),
                            manifest_member->offset, where));
  a.list = Json::parse(manifest_text, nullptr, /*allow_exceptions=*/false);
  if (a.list.is_discarded() || !a.list.is_array() || a.list.empty()) {
    return Status::Corruption(where + ": manifest.json is not a non-empty JSON array");
  }
  for (size_t i = 0; i < a.list.size(); ++i) {
    if (!a.list[i].is_object()) {
      return Status::Corruption(where + ": manifest.json entry " + std::to_string(i) +
                                " is not an object");
    }
  }
  return a;
}

// The source of manifest.json's entry `chosen`, its manifest synthesized from the members.
Result<std::unique_ptr<ImageSource>> SourceFor(Archive& a, size_t chosen,
                                               const std::string& selector,
                                               const std::string& name) {
  const std::string& where = a.where;
  const Json& entry = a.list[chosen];
  auto config_it = entry.find("Config");
  if (config_it == entry.end() || !config_it->is_string()) {
    return Status::Corruption(where + ": manifest.json entry " + std::to_string(chosen) +
                              ": field \"Config\" is missing or not a string");
  }
  auto layers_it = entry.find("Layers");
  if (layers_it == entry.end() || !layers_it->is_array()) {
    return Status::Corruption(where + ": manifest.json entry " + std::to_string(chosen) +
                              ": field \"Layers\" is missing or not an array");
  }

  std::map<std::string, Member> blobs;  // digest -> member
  // Docker schema 2 with skopeo's field order (schemaVersion, mediaType, config, layers;
  // mediaType, size, digest), compact: the same archive always gives the same digest.
  using OrderedJson = nlohmann::ordered_json;
  auto describe = [&](const std::string& member_name, bool is_layer) -> Result<OrderedJson> {
    const Member* m = FindMember(a.index, member_name);
    if (m == nullptr) return Status::Corruption(where + ": missing member " + member_name);
    std::string key = NormalizePath(member_name);
    auto it = a.hashed.find(key);
    if (it == a.hashed.end()) {
      ASSIGN_OR_RETURN(HashedMember h, HashMember(a.fd.get(), *m, where + " member " + member_name));
      it = a.hashed.emplace(key, h).first;
    }
    blobs[it->second.digest.String()] = *m;
    std::string_view type = !is_layer           ? kDockerConfig
                            : it->second.gzip   ? kDockerLayerGzip
                                                : kDockerLayerTar;
    OrderedJson desc;
    desc["mediaType"] = std::string(type);
    desc["size"] = m->size;
    desc["digest"] = it->second.digest.String();
    return desc;
  };
  OrderedJson manifest;
  manifest["schemaVersion"] = 2;
  manifest["mediaType"] = std::string(kDockerManifest);
  ASSIGN_OR_RETURN(manifest["config"], describe(config_it->get<std::string>(), false));
  manifest["layers"] = OrderedJson::array();
  for (const Json& l : *layers_it) {
    if (!l.is_string()) {
      return Status::Corruption(where + ": manifest.json: a \"Layers\" entry is not a string");
    }
    ASSIGN_OR_RETURN(OrderedJson desc, describe(l.get<std::string>(), true));
    manifest["layers"].push_back(std::move(desc));
  }
  return std::unique_ptr<ImageSource>(std::make_unique<DockerArchiveSource>(
      a.path, selector, name, manifest.dump(), std::move(blobs)));
}

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenDockerArchive(const ImageRef& ref) {
  ASSIGN_OR_RETURN(Archive a, OpenArchive(ref.path));
  std::string name;
  ASSIGN_OR_RETURN(size_t chosen, SelectImage(a.list, ref.tag, a.where, &name));
  return SourceFor(a, chosen, ref.tag, name);
}

}  // namespace imagefs::fetch::internal

namespace imagefs::fetch {

Result<std::vector<ArchiveImage>> OpenDockerArchiveImages(const std::string& path) {
  ASSIGN_OR_RETURN(internal::Archive a, internal::OpenArchive(path));
  std::vector<ArchiveImage> out;
  for (size_t i = 0; i < a.list.size(); ++i) {
    ArchiveImage image;
    image.repo_tags = internal::RepoTagsOf(a.list[i]);
    std::string name;
    const std::string selector = "@" + std::to_string(i);
    ASSIGN_OR_RETURN(size_t chosen, internal::SelectImage(a.list, selector, a.where, &name));
    ASSIGN_OR_RETURN(image.source, internal::SourceFor(a, chosen, selector, name));
    out.push_back(std::move(image));
  }
  return out;
}

}  // namespace imagefs::fetch
