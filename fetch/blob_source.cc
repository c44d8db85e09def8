#include "fetch/blob_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::fetch {

Status BlobSource::ReadRanges(std::span<const ByteRange> ranges,
                              std::span<const std::span<uint8_t>> outs) {
  if (ranges.size() != outs.size()) return Status::Internal("ReadRanges: size mismatch");
  for (size_t i = 0; i < ranges.size(); ++i) {
    size_t done = 0;
    while (done < ranges[i].length) {
      auto n = ReadAt(ranges[i].offset + done, outs[i].subspan(done, ranges[i].length - done));
      if (!n.ok()) return n.status();
      if (*n == 0) {
        return Status::Corruption(Describe() + ": range " + std::to_string(ranges[i].offset) +
                                  "+" + std::to_string(ranges[i].length) + " is past the end");
      }
      done += *n;
    }
  }
  return Status::Ok();
}

namespace {

class FileSliceBlobSource final : public BlobSource {
 public:
  FileSliceBlobSource(UniqueFd fd, std::string path, uint64_t offset, uint64_t size)
      : fd_(std::move(fd)), path_(std::move(path)), offset_(offset), size_(size) {}
  uint64_t Size() const override { return size_; }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (offset >= size_) return size_t{0};
    size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
    return PreadFull(fd_.get(), out.first(want), offset_ + offset, path_);
  }
  std::string Describe() const override { return path_; }

 private:
  UniqueFd fd_;
  std::string path_;
  uint64_t offset_;
  uint64_t size_;
};

class MemoryBlobSource final : public BlobSource {
 public:
  MemoryBlobSource(std::string data, std::string name)
      : data_(std::move(data)), name_(std::move(name)) {}
  uint64_t Size() const override { return data_.size(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (offset >= data_.size()) return size_t{0};
    size_t n = std::min<size_t>(out.size(), data_.size() - offset);
    std::copy_n(data_.data() + offset, n, out.data());
    return n;
  }
  std::string Describe() const override { return name_; }

 private:
  std::string data_;
  std::string name_;
};

}  // namespace

Result<std::unique_ptr<BlobSource>> OpenFileSliceBlobSource(const std::string& path,
                                                            uint64_t offset, uint64_t size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "opening " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (offset + size > static_cast<uint64_t>(st.st_size)) {
    return Status::Corruption(path + ": member at " + std::to_string(offset) + "+" +
                              std::to_string(size) + " runs past the end of the file");
  }
  return std::unique_ptr<BlobSource>(
      std::make_unique<FileSliceBlobSource>(std::move(fd), path, offset, size));
}

Result<std::unique_ptr<BlobSource>> OpenFileBlobSource(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "opening " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  return std::unique_ptr<BlobSource>(std::make_unique<FileSliceBlobSource>(
      std::move(fd), path, 0, static_cast<uint64_t>(st.st_size)));
}

std::unique_ptr<BlobSource> MakeMemoryBlobSource(std::string data, std::string name) {
  return std::make_unique<MemoryBlobSource>(std::move(data), std::move(name));
}

Result<std::string> ReadAll(BlobSource& source) {
  std::string out(source.Size(), '\0');
  size_t done = 0;
  while (done < out.size()) {
    auto n = source.ReadAt(done, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()) + done,
                                                    out.size() - done));
    if (!n.ok()) return n.status();
    if (*n == 0) return Status::Corruption(source.Describe() + ": blob is shorter than its size");
    done += *n;
  }
  return out;
}

}  // namespace imagefs::fetch
