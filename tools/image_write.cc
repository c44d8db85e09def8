#include "tools/image_write.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "util/digest.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::tools {

Result<index::SeekableFormat> ParseSeekableFormat(const std::string& text) {
  if (text == "zstd-chunked" || text == "zstd:chunked") return index::SeekableFormat::kZstdChunked;
  if (text == "estargz") return index::SeekableFormat::kEstargz;
  return Status::InvalidArgument("--format " + text + ": use zstd-chunked or estargz");
}

const char* SeekableFormatName(index::SeekableFormat format) {
  return format == index::SeekableFormat::kEstargz ? "estargz" : "zstd:chunked";
}

Result<LayerFile> WriteLayerFile(index::SeekableFormat format, const std::string& tar_path,
                                 const std::string& out_path,
                                 const index::LayerWriteOptions& options) {
  UniqueFd out(::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (out.get() < 0) return Status::FromErrno(errno, "creating " + out_path);
  ASSIGN_OR_RETURN(
      index::WrittenLayer written,
      index::WriteSeekableLayer(
          format, tar_path,
          [&](std::span<const uint8_t> data) {
            return WriteAll(out.get(),
                            std::string_view(reinterpret_cast<const char*>(data.data()),
                                             data.size()),
                            out_path);
          },
          options));
  // Not fsynced: out_path is a scratch file; the destination syncs its own copy (oci:) or
  // the registry holds it (docker://).
  LayerFile file;
  file.desc.media_type = written.media_type;
  file.desc.digest = written.digest;
  file.desc.size = static_cast<int64_t>(written.size);
  file.desc.annotations = written.annotations;
  file.diff_id = written.diff_id;
  return file;
}

Status PutBlobIfMissing(fetch::ImageDestination& dest, const fetch::Descriptor& desc,
                        const std::string& path) {
  ASSIGN_OR_RETURN(bool has, dest.HasBlob(desc));
  if (has) return Status::Ok();
  return dest.PutBlob(desc, path);
}

Result<std::string> PutConfigAndManifest(fetch::ImageDestination& dest,
                                         const std::string& scratch_dir,
                                         const std::string& config_bytes,
                                         const std::vector<fetch::Descriptor>& layers,
                                         ManifestFamily family) {
  using OrderedJson = nlohmann::ordered_json;
  const bool docker = family == ManifestFamily::kDocker;
  fetch::Descriptor config_desc;
  config_desc.media_type = std::string(docker ? fetch::kDockerConfig : fetch::kOciConfig);
  config_desc.digest = Digest::Sha256Of(std::string_view(config_bytes)).String();
  config_desc.size = static_cast<int64_t>(config_bytes.size());
  const std::string config_path = scratch_dir + "/config.json";
  RETURN_IF_ERROR(WriteFileAtomic(config_path, config_bytes));
  RETURN_IF_ERROR(PutBlobIfMissing(dest, config_desc, config_path));

  const std::string manifest_type(docker ? fetch::kDockerManifest : fetch::kOciManifest);
  OrderedJson manifest;
  manifest["schemaVersion"] = 2;
  manifest["mediaType"] = manifest_type;
  auto descriptor_json = [](const fetch::Descriptor& d) {
    OrderedJson j;
    j["mediaType"] = d.media_type;
    j["digest"] = d.digest;
    j["size"] = d.size;
    if (!d.annotations.empty()) j["annotations"] = d.annotations;
    return j;
  };
  manifest["config"] = descriptor_json(config_desc);
  manifest["layers"] = OrderedJson::array();
  for (const auto& d : layers) manifest["layers"].push_back(descriptor_json(d));
  fetch::RawManifest raw;
  raw.bytes = manifest.dump();
  raw.media_type = manifest_type;
  raw.digest = Digest::Sha256Of(std::string_view(raw.bytes)).String();
  RETURN_IF_ERROR(dest.PutManifest(raw));
  return raw.digest;
}

void NoteUnseekableDestination(const fetch::ImageRef& dst_ref, const std::string& dst) {
  if (dst_ref.transport != fetch::Transport::kDockerArchive) return;
  std::fprintf(stderr,
               "note: a docker-archive holds plain tar layers, so %s's layers are not "
               "seekable there\n",
               dst.c_str());
}

}  // namespace imagefs::tools
