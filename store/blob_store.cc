#include "store/blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <random>

#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::store {
namespace {

class FileBlobWriter final : public BlobWriter {
 public:
  FileBlobWriter(UniqueFd fd, std::string tmp_path, std::string final_path, Digest expected,
                 int64_t expected_size)
      : fd_(std::move(fd)),
        tmp_path_(std::move(tmp_path)),
        final_path_(std::move(final_path)),
        expected_(std::move(expected)),
        expected_size_(expected_size) {}

  ~FileBlobWriter() override {
    if (!committed_) ::unlink(tmp_path_.c_str());
  }

  Status Write(std::span<const uint8_t> data) override {
    if (expected_size_ >= 0 && written_ + data.size() > static_cast<uint64_t>(expected_size_)) {
      return Status::Corruption("blob " + expected_.String() + ": more than the expected " +
                                std::to_string(expected_size_) + " bytes");
    }
    hash_.Update(data);
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::write(fd_.get(), data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "writing blob " + expected_.String());
      }
      done += static_cast<size_t>(n);
    }
    written_ += data.size();
    return Status::Ok();
  }

  Status Commit() override {
    if (expected_size_ >= 0 && written_ != static_cast<uint64_t>(expected_size_)) {
      return Status::Corruption("blob " + expected_.String() + ": got " + std::to_string(written_) +
                                " bytes, expected " + std::to_string(expected_size_));
    }
    Digest got = hash_.Finish();
    if (got != expected_) {
      return Status::Corruption("blob " + expected_.String() + ": digest mismatch (got " +
                                got.String() + ")");
    }
    if (::fsync(fd_.get()) != 0) return Status::FromErrno(errno, "fsync " + tmp_path_);
    fd_.Reset();
    if (::rename(tmp_path_.c_str(), final_path_.c_str()) != 0) {
      return Status::FromErrno(errno, "renaming into " + final_path_);
    }
    committed_ = true;
    return Status::Ok();
  }

  uint64_t written() const override { return written_; }

 private:
  UniqueFd fd_;
  std::string tmp_path_;
  std::string final_path_;
  Digest expected_;
  int64_t expected_size_;
  Sha256 hash_;
  uint64_t written_ = 0;
  bool committed_ = false;
};

class DirBlobStore final : public BlobStore {
 public:
  explicit DirBlobStore(std::string root) : root_(std::move(root)) {}

  bool Has(const Digest& digest) const override { return PathExists(PathOf(digest)); }

  std::string PathOf(const Digest& digest) const override {
    return root_ + "/blobs/" + digest.algorithm() + "/" + digest.hex();
  }

  Result<std::unique_ptr<BlobWriter>> Begin(const Digest& expected,
                                            int64_t expected_size) override {
    if (expected.algorithm() != "sha256") {
      return Status::Unsupported("blob " + expected.String() + ": only sha256 is supported");
    }
    std::string tmp = root_ + "/tmp/blob-" + expected.hex().substr(0, 12) + "-" +
                      std::to_string(std::random_device{}());
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd) return Status::FromErrno(errno, "creating " + tmp);
    return std::unique_ptr<BlobWriter>(std::make_unique<FileBlobWriter>(
        std::move(fd), tmp, PathOf(expected), expected, expected_size));
  }

  Result<std::string> Get(const Digest& digest) const override { return ReadFile(PathOf(digest)); }

  Status Remove(const Digest& digest) override {
    std::string path = PathOf(digest);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Status::FromErrno(errno, "removing " + path);
    }
    return Status::Ok();
  }

  Status RemoveStaleTemps() {
    std::string dir = root_ + "/tmp";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return Status::FromErrno(errno, "opening " + dir);
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.rfind("blob-", 0) != 0) continue;
      std::string path = dir + "/" + name;
      struct stat st;
      // Another process may be writing right now; only files untouched for an hour go.
      if (::stat(path.c_str(), &st) == 0 && st.st_mtime + 3600 < ::time(nullptr)) {
        ::unlink(path.c_str());
      }
    }
    ::closedir(d);
    return Status::Ok();
  }

 private:
  std::string root_;
};

}  // namespace

Status BlobStore::Put(const Digest& expected, std::string_view bytes) {
  if (Has(expected)) return Status::Ok();
  ASSIGN_OR_RETURN(auto writer, Begin(expected, static_cast<int64_t>(bytes.size())));
  RETURN_IF_ERROR(writer->Write(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())));
  return writer->Commit();
}

Result<std::unique_ptr<BlobStore>> BlobStore::Open(const std::string& root) {
  RETURN_IF_ERROR(MakeDirs(root + "/blobs/sha256"));
  RETURN_IF_ERROR(MakeDirs(root + "/tmp"));
  auto store = std::make_unique<DirBlobStore>(root);
  RETURN_IF_ERROR(store->RemoveStaleTemps());
  return std::unique_ptr<BlobStore>(std::move(store));
}

}  // namespace imagefs::store
