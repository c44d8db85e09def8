// imagefs push IMAGE [DEST]: a stored image (pulled, or committed and pulled) written to a
// registry (or any transport), as docker push: each blob the destination lacks is put from
// the blob store under --root (layers in order, then the config), then the manifest, last,
// so the tag never points at a partial image. DEST defaults to IMAGE's own name.

#include <CLI/CLI.hpp>
#include <cstdio>

#include "fetch/image_dest.h"
#include "store/blob_store.h"
#include "tools/command.h"
#include "tools/image_view.h"
#include "tools/image_write.h"
#include "util/digest.h"
#include "util/file.h"

namespace imagefs::tools {

int RunPush(const GlobalOptions& global, const std::vector<std::string>& args) {
  CLI::App app("Push a stored (pulled) image to a registry, blobs first and the manifest last.\n"
               "DEST (default: IMAGE's name) is docker://REF, oci:DIR[:TAG] or\n"
               "docker-archive:FILE[:REF].",
               "imagefs push");
  std::string image, dst;
  app.add_option("IMAGE", image, "A stored image")->required();
  app.add_option("DEST", dst, "Where to push it (default: IMAGE)");
  if (int rc = ParseCommandLine(app, "push", args); rc >= 0) return rc;

  auto dst_ref = fetch::ParseImageRef(dst.empty() ? image : dst);
  if (!dst_ref.ok()) return Fail(dst_ref.status());
  auto view = OpenImageView(global, image, "", PullPolicy::kNever);
  if (!view.ok()) return Fail(view.status());
  auto blobs = store::BlobStore::Open(global.root);
  if (!blobs.ok()) return Fail(blobs.status());
  const fetch::ResolvedImage& resolved = view->opened.image;
  auto dest = fetch::OpenImageDestination(*dst_ref, view->opened.options);
  if (!dest.ok()) return Fail(dest.status());

  for (const fetch::Descriptor& d : resolved.parsed.layers) {
    auto digest = Digest::Parse(d.digest);
    if (!digest.ok()) return Fail(digest.status());
    const std::string path = (*blobs)->PathOf(*digest);
    if (!PathExists(path)) {
      return Fail(Status::NotFound("push: layer " + d.digest + " of " + image +
                                   " is not stored (imagefs pull " + image + " first)"));
    }
    if (Status st = PutBlobIfMissing(**dest, d, path); !st.ok()) return Fail(st);
  }
  auto scratch_dir = ScratchDir::Make(global, "push-");
  if (!scratch_dir.ok()) return Fail(scratch_dir.status());
  const std::string* scratch = &(*scratch_dir)->path();
  const std::string config_path = *scratch + "/config";
  if (Status st = WriteFileAtomic(config_path, resolved.config_bytes); !st.ok()) return Fail(st);
  if (Status st = PutBlobIfMissing(**dest, resolved.parsed.config, config_path); !st.ok()) {
    return Fail(st);
  }
  if (Status st = (*dest)->PutManifest(resolved.manifest); !st.ok()) return Fail(st);
  std::printf("%s\n", resolved.manifest.digest.c_str());
  return 0;
}

}  // namespace imagefs::tools
