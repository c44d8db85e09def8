// imagefs inspect: one JSON object shaped like `skopeo inspect`, plus the fields imagefs
// users ask for (media type, platform, Cmd, Entrypoint). --raw prints the manifest bytes,
// --config the config.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "tools/command.h"

namespace imagefs::tools {
namespace {

using Json = nlohmann::ordered_json;

Json StringsOrNull(const std::vector<std::string>& v) {
  if (v.empty()) return nullptr;
  return Json(v);
}

Json InspectJson(const fetch::ResolvedImage& image, const std::vector<std::string>& tags) {
  const fetch::ImageConfig& c = image.config;
  Json out;
  if (!image.name.empty()) out["Name"] = image.name;
  // As skopeo: the digest of what the name points at (the index for a multi-arch image).
  out["Digest"] = image.index ? image.index->digest : image.manifest.digest;
  out["RepoTags"] = tags;
  out["Created"] = c.created;
  out["DockerVersion"] = "";
  if (c.labels.empty()) {
    out["Labels"] = nullptr;
  } else {
    Json labels = Json::object();
    for (const auto& [k, v] : c.labels) labels[k] = v;
    out["Labels"] = labels;
  }
  out["Architecture"] = c.architecture;
  if (!c.variant.empty()) out["Variant"] = c.variant;
  out["Os"] = c.os;
  Json layers = Json::array();
  Json layers_data = Json::array();
  for (const fetch::Descriptor& l : image.parsed.layers) {
    layers.push_back(l.digest);
    Json d;
    d["MIMEType"] = l.media_type;
    d["Digest"] = l.digest;
    d["Size"] = l.size;
    if (l.annotations.empty()) {
      d["Annotations"] = nullptr;
    } else {
      Json a = Json::object();
      for (const auto& [k, v] : l.annotations) a[k] = v;
      d["Annotations"] = a;
    }
    layers_data.push_back(d);
  }
  out["Layers"] = layers;
  out["LayersData"] = layers_data;
  out["Env"] = StringsOrNull(c.env);
  out["MediaType"] = image.manifest.media_type;
  out["Cmd"] = StringsOrNull(c.cmd);
  out["Entrypoint"] = StringsOrNull(c.entrypoint);
  out["WorkingDir"] = c.working_dir;
  out["User"] = c.user;
  return out;
}

}  // namespace

int RunInspect(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Show an image's manifest and config as JSON, like skopeo inspect.\n"
               "IMAGE is docker://REF (default), oci:DIR[:TAG] or docker-archive:FILE.",
               "imagefs inspect");
  std::string image_name;
  std::string platform;
  bool raw = false;
  bool config = false;
  bool no_tags = false;
  app.add_option("IMAGE", image_name, "The image to inspect")->required();
  app.add_option("--platform", platform, "os/arch[/variant] to pick from a multi-arch image");
  app.add_flag("--raw", raw, "Print the raw manifest (or config with --config)");
  app.add_flag("--config", config, "Print the image config");
  app.add_flag("-n,--no-tags", no_tags, "Do not list the repository's tags");
  if (int rc = ParseCommandLine(app, "inspect", args); rc >= 0) return rc;

  auto opened = OpenImage(global, image_name, platform);
  if (!opened.ok()) return Fail(opened.status());
  const fetch::ResolvedImage* image = &opened->image;

  if (raw) {
    // As skopeo: the top-level manifest (the index for a multi-arch image).
    const std::string& bytes = config        ? image->config_bytes
                               : image->index ? image->index->bytes
                                              : image->manifest.bytes;
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    return 0;
  }
  if (config) {
    auto parsed = Json::parse(image->config_bytes, nullptr, false);
    std::printf("%s\n", parsed.dump(4).c_str());
    return 0;
  }
  std::vector<std::string> tags;
  if (!no_tags && opened->ref.transport == fetch::Transport::kDocker) {
    auto listed = opened->source->ListTags();
    if (!listed.ok()) return Fail(listed.status());
    tags = std::move(*listed);
  }
  std::printf("%s\n", InspectJson(*image, tags).dump(4).c_str());
  return 0;
}

}  // namespace imagefs::tools
