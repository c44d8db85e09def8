#include "index/index_cache.h"

#include "util/digest.h"
#include "util/file.h"

namespace imagefs::index {
namespace {

class DirectoryIndexCache final : public IndexCache {
 public:
  explicit DirectoryIndexCache(std::string dir) : dir_(std::move(dir)) {}

  Result<std::string> Get(std::string_view layer_digest) override {
    ASSIGN_OR_RETURN(std::string path, PathFor(layer_digest));
    return imagefs::ReadFile(path);
  }

  Status Put(std::string_view layer_digest, std::string_view bytes) override {
    ASSIGN_OR_RETURN(std::string path, PathFor(layer_digest));
    return WriteFileAtomic(path, bytes, 0644);
  }

 private:
  // Only well-formed digests become file names: no path can be smuggled in.
  Result<std::string> PathFor(std::string_view layer_digest) const {
    ASSIGN_OR_RETURN(Digest d, Digest::Parse(layer_digest));
    return dir_ + "/" + d.algorithm() + "/" + d.hex() + ".index";
  }

  const std::string dir_;
};

}  // namespace

std::unique_ptr<IndexCache> MakeDirectoryIndexCache(std::string dir) {
  return std::make_unique<DirectoryIndexCache>(std::move(dir));
}

}  // namespace imagefs::index
