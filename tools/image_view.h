#pragma once

// An image's merged root filesystem, opened for the commands that read it without a mount
// (ls, cat; later diff). An image `pull` stored whole is read from the store without asking
// the registry (so it works offline); otherwise the manifest comes from the source and each
// layer from the blob store when it is there, else from the source by range reads; layer indexes that had to be
// built (plain gzip / zstd / tar layers) are cached under --root/indexes.

#include <memory>
#include <string>

#include "index/merged_view.h"
#include "tools/command.h"

namespace imagefs::tools {

struct ImageView {
  OpenedImage opened;
  std::unique_ptr<index::MergedView> view;
};

Result<ImageView> OpenImageView(const GlobalOptions& global, const std::string& name,
                                const std::string& platform);

}  // namespace imagefs::tools
