#pragma once

// The test images built by scripts/build-test-images (OCI layouts, no Docker) and a way to
// put them into a TestRegistry. See the script's header for what each image contains:
//   busybox    3 gzip layers: hard link, symlink, xattr, odd names, whiteouts, opaque dir
//   multiarch  an image index: linux/amd64 and linux/arm64/v8, /arch tells which

#include <string>

#include "tests/testing/registry.h"
#include "util/status.h"

namespace imagefs::testing {

// Builds the images into IMAGEFS_BINARY_DIR/test-images (once: the script skips work when
// its stamp matches; an flock on test-images.lock keeps parallel test binaries from racing)
// and returns that directory. Thread-safe; later calls return the cached path.
Result<std::string> TestImagesDir();

// "TESTIMAGES/NAME:TAG", the form skopeo's oci: transport and PushImage take.
Result<std::string> TestImage(const std::string& name, const std::string& tag = "latest");

// The digest ("sha256:...") of the manifest or image index that TAG names in the layout's
// index.json (org.opencontainers.image.ref.name). oci_dir_with_tag: "DIR:TAG".
Result<std::string> LayoutDigest(const std::string& oci_dir_with_tag);

// skopeo copy [--all] oci:OCI_DIR_WITH_TAG docker://HOST/DEST_REPO_TAG with the registry's
// flags (TLS CA dir and credentials for kTlsBasic/kToken) and an environment that reads no
// user config. Without all_platforms an index is resolved to the host's platform.
Status PushImage(const TestRegistry& registry, const std::string& oci_dir_with_tag,
                 const std::string& dest_repo_tag, bool all_platforms);

}  // namespace imagefs::testing
