#pragma once

// Constructors of the transport-specific ImageSources, used by OpenImageSource.

#include <memory>

#include "fetch/image_source.h"

namespace imagefs::fetch::internal {

Result<std::unique_ptr<ImageSource>> OpenRegistrySource(const ImageRef& ref,
                                                        const FetchOptions& options);
Result<std::unique_ptr<ImageSource>> OpenDockerArchive(const ImageRef& ref);

}  // namespace imagefs::fetch::internal
