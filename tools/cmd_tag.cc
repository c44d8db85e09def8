// imagefs tag SOURCE TARGET: another name for a pulled image, as docker tag. A tag that
// pointed at another image moves, leaving that image untagged if it has no other tag.

#include <CLI/CLI.hpp>

#include "fetch/reference.h"
#include "store/metadata_store.h"
#include "tools/command.h"
#include "tools/local_images.h"

namespace imagefs::tools {

int RunTag(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Create a tag TARGET that refers to SOURCE, as docker tag.\n"
               "SOURCE is a name, a short or long image ID, or a digest.",
               "imagefs tag");
  std::string source;
  std::string target;
  app.add_option("SOURCE", source, "SOURCE_IMAGE[:TAG]")->required();
  app.add_option("TARGET", target, "TARGET_IMAGE[:TAG]")->required();
  if (int rc = ParseCommandLine(app, "tag", args); rc >= 0) return rc;

  auto meta = store::MetadataStore::Open(global.root);
  if (!meta.ok()) return Fail(meta.status().WithContext("tag"));
  auto found = FindLocalImage(**meta, source);
  if (!found.ok()) return Fail(found.status().WithContext("tag"));
  if (found->manifest_digests.size() > 1) {
    return Fail(Status::InvalidArgument("tag: " + source + " names " +
                                        std::to_string(found->manifest_digests.size()) +
                                        " images (one per platform or format); give a digest"));
  }
  auto ref = fetch::ParseReference(target);
  if (!ref.ok()) return Fail(ref.status().WithContext("tag"));
  if (!ref->digest.empty()) {
    return Fail(Status::InvalidArgument("tag: refusing to create a tag with a digest reference"));
  }
  Status st = (*meta)->Tag(ref->Name(), ref->tag, found->manifest_digests.front());
  if (!st.ok()) return Fail(st.WithContext("tag"));
  return 0;
}

}  // namespace imagefs::tools
