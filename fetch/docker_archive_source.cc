// docker-archive:FILE[:REF|:@N] — the tar `docker save` writes. The tar is indexed once
// (member offsets and sizes; nothing is extracted) and blobs are windows of the file.
// An archive has no registry manifest, so one is synthesized as skopeo does: Docker schema 2,
// config and layer digests computed from the members.

#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>

#include "fetch/sources_internal.h"
#include "util/digest.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::fetch::internal {
namespace {

struct Member {
  uint64_t offset = 0;
  uint64_t size = 0;
};

uint64_t ParseOctal(const char* p, size_t n) {
  // GNU base-256 for large sizes.
  if (static_cast<unsigned char>(p[0]) & 0x80) {
    uint64_t v = static_cast<unsigned char>(p[0]) & 0x7f;
    for (size_t i = 1; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
    return v;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < n && p[i] != '\0' && p[i] != ' '; ++i) {
    if (p[i] < '0' || p[i] > '7') break;
    v = v * 8 + static_cast<uint64_t>(p[i] - '0');
  }
  return v;
}

std::string NormalizeMemberName(std::string name) {
  while (name.rfind("./", 0) == 0) name = name.substr(2);
  return name;
}

// Walks ustar/GNU/PAX headers and records regular files' data offsets.
Result<std::map<std::string, Member>> IndexTar(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "opening " + path);
  std::map<std::string, Member> members;
  uint64_t off = 0;
  std::string long_name;
  std::string pax_path;
  char h[512];
  while (true) {
    ssize_t n = ::pread(fd.get(), h, sizeof h, static_cast<off_t>(off));
    if (n != 512) {
      if (n == 0 && !members.empty()) break;
      return Status::Corruption(path + ": truncated tar header at offset " + std::to_string(off));
    }
    bool zero = true;
    for (char c : h) zero &= c == '\0';
    if (zero) break;
    uint64_t sum = 0;
    for (int i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
    if (sum != ParseOctal(h + 148, 8)) {
      return Status::Corruption(path + ": bad tar header checksum at offset " + std::to_string(off) +
                                ": not a docker-archive?");
    }
    uint64_t size = ParseOctal(h + 124, 12);
    char type = h[156];
    uint64_t data = off + 512;
    std::string name;
    if (!pax_path.empty()) {
      name = pax_path;
    } else if (!long_name.empty()) {
      name = long_name;
    } else {
      std::string prefix(h + 345, strnlen(h + 345, 155));
      name = std::string(h, strnlen(h, 100));
      if (!prefix.empty() && std::string_view(h + 257, 5) == "ustar") name = prefix + "/" + name;
    }
    if (type == 'L' || type == 'x') {
      std::string payload(size, '\0');
      if (::pread(fd.get(), payload.data(), size, static_cast<off_t>(data)) != static_cast<ssize_t>(size)) {
        return Status::Corruption(path + ": truncated tar member");
      }
      if (type == 'L') {
        long_name = payload.substr(0, payload.find('\0'));
      } else {
        // "LEN path=VALUE\n" records.
        size_t p = 0;
        while (p < payload.size()) {
          size_t sp = payload.find(' ', p);
          if (sp == std::string::npos) break;
          size_t len = std::stoul(payload.substr(p, sp - p));
          if (len == 0 || p + len > payload.size()) break;
          std::string rec = payload.substr(sp + 1, len - (sp - p) - 2);
          if (rec.rfind("path=", 0) == 0) pax_path = rec.substr(5);
          p += len;
        }
      }
    } else {
      if (type == '0' || type == '\0' || type == '7') {
        members[NormalizeMemberName(name)] = Member{data, size};
      }
      long_name.clear();
      pax_path.clear();
    }
    off = data + (size + 511) / 512 * 512;
  }
  return members;
}

class DockerArchiveSource final : public ImageSource {
 public:
  DockerArchiveSource(std::string path, std::string selector, std::string name,
                      std::map<std::string, Member> members, std::string manifest,
                      std::map<std::string, std::string> digest_to_member)
      : path_(std::move(path)),
        selector_(std::move(selector)),
        name_(std::move(name)),
        members_(std::move(members)),
        manifest_(std::move(manifest)),
        digest_to_member_(std::move(digest_to_member)) {}

  std::string Describe() const override {
    return "docker-archive:" + path_ + (selector_.empty() ? "" : ":" + selector_);
  }
  std::string Name() const override { return name_; }

  Result<RawManifest> GetManifest(const std::string& digest) override {
    RawManifest m;
    m.bytes = manifest_;
    m.media_type = std::string(kDockerManifest);
    m.digest = Digest::Sha256Of(std::string_view(manifest_)).String();
    if (!digest.empty() && digest != m.digest) {
      return Status::NotFound(Describe() + ": no manifest " + digest);
    }
    return m;
  }

  Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& desc) override {
    auto it = digest_to_member_.find(desc.digest);
    if (it == digest_to_member_.end()) {
      return Status::NotFound(Describe() + ": no blob " + desc.digest);
    }
    const Member& m = members_.at(it->second);
    return OpenFileSliceBlobSource(path_, m.offset, m.size);
  }

  Result<std::vector<std::string>> ListTags() override {
    return Status::Unsupported(Describe() + ": an archive has no tag list");
  }

 private:
  std::string path_;
  std::string selector_;
  std::string name_;
  std::map<std::string, Member> members_;
  std::string manifest_;
  std::map<std::string, std::string> digest_to_member_;
};

// Hashes a member's bytes.
Result<Digest> HashMember(int fd, const Member& m, std::string* head) {
  Sha256 h;
  std::vector<uint8_t> buf(1 << 20);
  uint64_t done = 0;
  while (done < m.size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.size - done));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(m.offset + done));
    if (n <= 0) return Status::Corruption("truncated archive member");
    if (done == 0 && head != nullptr) head->assign(reinterpret_cast<char*>(buf.data()), std::min<size_t>(static_cast<size_t>(n), 4));
    h.Update(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    done += static_cast<uint64_t>(n);
  }
  return h.Finish();
}

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenDockerArchive(const ImageRef& ref) {
  const std::string& path = ref.path;
  std::string where = "docker-archive:" + path;
  if (!PathExists(path)) return Status::NotFound(where + ": no such file");
  ASSIGN_OR_RETURN(auto members, IndexTar(path));
  auto manifest_member = members.find("manifest.json");
  if (manifest_member == members.end()) {
    return Status::Corruption(where + ": no manifest.json: not a docker save archive");
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "opening " + path);
  auto read_member = [&](const Member& m) -> Result<std::string> {
    std::string s(m.size, '\0');
    if (::pread(fd.get(), s.data(), m.size, static_cast<off_t>(m.offset)) != static_cast<ssize_t>(m.size)) {
      return Status::Corruption(where + ": truncated member");
    }
    return s;
  };
  ASSIGN_OR_RETURN(std::string manifest_text, read_member(manifest_member->second));
  auto list = nlohmann::json::parse(manifest_text, nullptr, false);
  if (!list.is_array() || list.empty()) {
    return Status::Corruption(where + ": manifest.json is not a non-empty array");
  }
  // Choose the image.
  size_t chosen = list.size();
  std::string name;
  if (ref.tag.empty()) {
    if (list.size() != 1) {
      return Status::InvalidArgument(where + " holds " + std::to_string(list.size()) +
                                     " images: pick one with :NAME:TAG or :@INDEX");
    }
    chosen = 0;
  } else if (ref.tag.front() == '@') {
    char* end = nullptr;
    unsigned long idx = std::strtoul(ref.tag.c_str() + 1, &end, 10);
    if (end == ref.tag.c_str() + 1 || *end != '\0' || idx >= list.size()) {
      return Status::InvalidArgument(where + ": no image " + ref.tag + " (the archive holds " +
                                     std::to_string(list.size()) + ")");
    }
    chosen = idx;
  } else {
    ASSIGN_OR_RETURN(Reference want, ParseReference(ref.tag));
    for (size_t i = 0; i < list.size() && chosen == list.size(); ++i) {
      if (!list[i].is_object() || !list[i].contains("RepoTags") || !list[i]["RepoTags"].is_array()) continue;
      for (const auto& t : list[i]["RepoTags"]) {
        if (!t.is_string()) continue;
        auto r = ParseReference(t.get<std::string>());
        if (r.ok() && *r == want) chosen = i;
      }
    }
    if (chosen == list.size()) return Status::NotFound(where + ": no image tagged " + ref.tag);
  }
  const auto& entry = list[chosen];
  if (!entry.is_object() || !entry.contains("Config") || !entry["Config"].is_string() ||
      !entry.contains("Layers") || !entry["Layers"].is_array()) {
    return Status::Corruption(where + ": manifest.json entry lacks Config or Layers");
  }
  if (entry.contains("RepoTags") && entry["RepoTags"].is_array() && !entry["RepoTags"].empty() &&
      entry["RepoTags"][0].is_string()) {
    auto r = ParseReference(entry["RepoTags"][0].get<std::string>());
    if (r.ok()) name = r->Name();
  }
  std::map<std::string, std::string> digest_to_member;
  nlohmann::ordered_json m;
  m["schemaVersion"] = 2;
  m["mediaType"] = std::string(kDockerManifest);
  auto describe = [&](const std::string& member_name, std::string_view media_type,
                      std::string_view gzip_type) -> Result<nlohmann::ordered_json> {
    auto it = members.find(NormalizeMemberName(member_name));
    if (it == members.end()) return Status::Corruption(where + ": missing member " + member_name);
    std::string head;
    ASSIGN_OR_RETURN(Digest d, HashMember(fd.get(), it->second, &head));
    digest_to_member[d.String()] = it->first;
    bool gz = head.size() >= 2 && static_cast<unsigned char>(head[0]) == 0x1f &&
              static_cast<unsigned char>(head[1]) == 0x8b;
    nlohmann::ordered_json desc;
    desc["mediaType"] = std::string(gz && !gzip_type.empty() ? gzip_type : media_type);
    desc["size"] = it->second.size;
    desc["digest"] = d.String();
    return desc;
  };
  ASSIGN_OR_RETURN(m["config"], describe(entry["Config"].get<std::string>(), kDockerConfig, ""));
  m["layers"] = nlohmann::ordered_json::array();
  for (const auto& l : entry["Layers"]) {
    if (!l.is_string()) return Status::Corruption(where + ": a layer name is not a string");
    ASSIGN_OR_RETURN(auto desc, describe(l.get<std::string>(), kDockerLayerTar, kDockerLayerGzip));
    m["layers"].push_back(desc);
  }
  return std::unique_ptr<ImageSource>(std::make_unique<DockerArchiveSource>(
      path, ref.tag, name, std::move(members), m.dump(), std::move(digest_to_member)));
}

}  // namespace imagefs::fetch::internal
