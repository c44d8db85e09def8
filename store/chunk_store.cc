#include "store/chunk_store.h"

#include <dirent.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <ctime>
#include <list>
#include <mutex>
#include <random>
#include <unordered_map>
#include <vector>

#include "util/file.h"
#include "util/log.h"
#include "util/unique_fd.h"

namespace imagefs::store {
namespace {

// A file in wip/ belongs to a writer that has not committed; it was never visible. Removes
// those whose writer process is gone (names are <hex>.<pid>.<n>), leaving live writers of
// other processes sharing the store alone.
void RemoveAbandonedWip(const std::string& wip) {
  DIR* dir = ::opendir(wip.c_str());
  if (dir == nullptr) return;
  std::vector<std::string> abandoned;
  while (struct dirent* d = ::readdir(dir)) {
    std::string name = d->d_name;
    if (name == "." || name == "..") continue;
    size_t a = name.find('.');
    size_t b = a == std::string::npos ? a : name.find('.', a + 1);
    pid_t pid = 0;
    if (b != std::string::npos) pid = static_cast<pid_t>(std::atol(name.substr(a + 1, b - a - 1).c_str()));
    if (pid > 0 && pid != ::getpid() && (::kill(pid, 0) == 0 || errno == EPERM)) continue;
    abandoned.push_back(wip + "/" + name);
  }
  ::closedir(dir);
  for (const std::string& path : abandoned) ::unlink(path.c_str());
}

}  // namespace

struct ChunkStore::Impl {
  struct Entry {
    uint64_t size = 0;
    int pins = 0;
    time_t touched = 0;  // last mtime refresh
    std::list<std::string>::iterator lru;
  };

  ChunkStoreOptions options;
  std::unique_ptr<FileIo> io;
  std::mutex mu;  // guards everything below
  std::unordered_map<std::string, Entry> entries;
  std::list<std::string> lru;  // front = most recently used
  ChunkStoreStats stats;

  std::string PathOf(const std::string& hex) const {
    return options.dir + "/sha256/" + hex.substr(0, 2) + "/" + hex;
  }

  // Marks hex used; returns whether its mtime should be refreshed. mu held.
  bool TouchLocked(Entry& e, const std::string& hex) {
    lru.splice(lru.begin(), lru, e.lru);
    time_t now = ::time(nullptr);
    if (now - e.touched < 60) return false;
    e.touched = now;
    (void)hex;
    return true;
  }

  // Evicts unpinned chunks from the LRU end until under `limit` bytes (default: the
  // capacity). mu held.
  void EvictLocked() { EvictToLocked(options.capacity_bytes); }
  void EvictToLocked(uint64_t limit) {
    auto it = lru.end();
    while (stats.bytes > limit && it != lru.begin()) {
      --it;
      auto e = entries.find(*it);
      if (e == entries.end() || e->second.pins > 0) continue;
      std::string hex = *it;
      ::unlink(PathOf(hex).c_str());
      stats.bytes -= e->second.size;
      stats.chunks -= 1;
      stats.evictions += 1;
      it = lru.erase(it);
      entries.erase(e);
    }
  }

  void AddLocked(const std::string& hex, uint64_t size, time_t mtime, bool front) {
    if (entries.count(hex) != 0) return;
    Entry e;
    e.size = size;
    e.touched = mtime;
    e.lru = front ? lru.insert(lru.begin(), hex) : lru.insert(lru.end(), hex);
    entries.emplace(hex, e);
    stats.bytes += size;
    stats.chunks += 1;
  }

  Status Scan() {
    struct Found {
      std::string hex;
      uint64_t size;
      time_t mtime;
    };
    std::vector<Found> found;
    std::string base = options.dir + "/sha256";
    DIR* top = ::opendir(base.c_str());
    if (top == nullptr) return Status::FromErrno(errno, "opening " + base);
    while (struct dirent* d = ::readdir(top)) {
      if (d->d_name[0] == '.') continue;
      std::string sub = base + "/" + d->d_name;
      DIR* in = ::opendir(sub.c_str());
      if (in == nullptr) continue;
      while (struct dirent* f = ::readdir(in)) {
        std::string name = f->d_name;
        if (name.size() != 64) continue;
        struct stat st;
        if (::stat((sub + "/" + name).c_str(), &st) != 0) continue;
        found.push_back({name, static_cast<uint64_t>(st.st_size), st.st_mtime});
      }
      ::closedir(in);
    }
    ::closedir(top);
    // Most recently used first.
    std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.mtime > b.mtime; });
    std::lock_guard<std::mutex> lock(mu);
    for (const Found& f : found) AddLocked(f.hex, f.size, f.mtime, false);
    EvictLocked();
    return Status::Ok();
  }
};

class ChunkWriterImpl final : public ChunkWriter {
 public:
  ChunkWriterImpl(ChunkStore::Impl* store, std::string hex, std::string tmp, UniqueFd fd)
      : store_(store), hex_(std::move(hex)), tmp_(std::move(tmp)), fd_(std::move(fd)) {}
  ~ChunkWriterImpl() override {
    if (!done_) ::unlink(tmp_.c_str());
  }

  Status Write(std::span<const uint8_t> data) override {
    hash_.Update(data);
    RETURN_IF_ERROR(store_->io->WriteAt(fd_.get(), size_, data).WithContext("writing chunk " + hex_));
    size_ += data.size();
    return Status::Ok();
  }

  Status Commit() override {
    Digest got = hash_.Finish();
    if (got.hex() != hex_) {
      return Status::Corruption("chunk sha256:" + hex_ + ": digest mismatch (got " + got.String() + ")");
    }
    if (::fsync(fd_.get()) != 0) return Status::FromErrno(errno, "fsync chunk " + hex_);
    fd_.Reset();
    std::string path = store_->PathOf(hex_);
    if (::rename(tmp_.c_str(), path.c_str()) != 0) {
      if (errno == ENOENT) {
        RETURN_IF_ERROR(MakeDirs(Dirname(path)));
        if (::rename(tmp_.c_str(), path.c_str()) != 0) return Status::FromErrno(errno, "committing chunk " + hex_);
      } else {
        return Status::FromErrno(errno, "committing chunk " + hex_);
      }
    }
    done_ = true;
    std::lock_guard<std::mutex> lock(store_->mu);
    store_->AddLocked(hex_, size_, ::time(nullptr), true);
    store_->EvictLocked();
    return Status::Ok();
  }

 private:
  ChunkStore::Impl* store_;
  std::string hex_;
  std::string tmp_;
  UniqueFd fd_;
  Sha256 hash_;
  uint64_t size_ = 0;
  bool done_ = false;
};

ChunkPin::ChunkPin(ChunkPin&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)), hex_(std::move(other.hex_)) {}

ChunkPin& ChunkPin::operator=(ChunkPin&& other) noexcept {
  if (this != &other) {
    if (store_ != nullptr) store_->Unpin(hex_);
    store_ = std::exchange(other.store_, nullptr);
    hex_ = std::move(other.hex_);
  }
  return *this;
}

ChunkPin::~ChunkPin() {
  if (store_ != nullptr) store_->Unpin(hex_);
}

ChunkStore::ChunkStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChunkStore::~ChunkStore() = default;

Result<std::unique_ptr<ChunkStore>> ChunkStore::Open(const ChunkStoreOptions& options) {
  if (options.dir.empty()) return Status::InvalidArgument("chunk store: no directory");
  RETURN_IF_ERROR(MakeDirs(options.dir + "/sha256"));
  RETURN_IF_ERROR(MakeDirs(options.dir + "/wip"));
  RETURN_IF_ERROR(MakeDirs(options.dir + "/aliases"));
  RemoveAbandonedWip(options.dir + "/wip");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  ASSIGN_OR_RETURN(impl->io, MakeFileIo(options.io));
  RETURN_IF_ERROR(impl->Scan());
  return std::unique_ptr<ChunkStore>(new ChunkStore(std::move(impl)));
}

bool ChunkStore::Contains(const Digest& digest) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->entries.count(digest.hex()) != 0;
}

Result<ChunkPin> ChunkStore::Pin(const Digest& digest) {
  std::string hex = digest.hex();
  bool refresh;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->entries.find(hex);
    if (it == impl_->entries.end()) {
      impl_->stats.misses += 1;
      return Status::NotFound("chunk " + digest.String() + " is not in the store");
    }
    it->second.pins += 1;
    impl_->stats.hits += 1;
    refresh = impl_->TouchLocked(it->second, hex);
  }
  if (refresh) ::utimensat(AT_FDCWD, impl_->PathOf(hex).c_str(), nullptr, 0);
  return ChunkPin(this, hex);
}

uint64_t ChunkStore::Trim(uint64_t target_bytes) {
  uint64_t freed;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    const uint64_t before = impl_->stats.bytes;
    impl_->EvictToLocked(target_bytes);
    freed = before - impl_->stats.bytes;
  }
  if (target_bytes == 0) {
    (void)RemoveAll(impl_->options.dir + "/aliases");
    (void)MakeDirs(impl_->options.dir + "/aliases");
  }
  return freed;
}

Status ChunkStore::PutAlias(const Digest& key, const Digest& target) {
  const std::string hex = key.hex();
  const std::string dir = impl_->options.dir + "/aliases/" + hex.substr(0, 2);
  RETURN_IF_ERROR(MakeDirs(dir));
  return WriteFileAtomic(dir + "/" + hex, target.String() + "\n");
}

Result<Digest> ChunkStore::LookupAlias(const Digest& key) {
  const std::string hex = key.hex();
  const std::string path = impl_->options.dir + "/aliases/" + hex.substr(0, 2) + "/" + hex;
  auto text = ReadFile(path);
  if (!text.ok()) {
    if (text.status().IsNotFound()) return Status::NotFound("no alias " + key.String());
    return text.status();
  }
  std::string_view value = *text;
  while (!value.empty() && value.back() == '\n') value.remove_suffix(1);
  ASSIGN_OR_RETURN(Digest target, Digest::Parse(value));
  if (!Contains(target)) return Status::NotFound("alias " + key.String() + " names a chunk no longer stored");
  return target;
}

void ChunkStore::Unpin(const std::string& hex) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->entries.find(hex);
  if (it != impl_->entries.end() && it->second.pins > 0) it->second.pins -= 1;
  impl_->EvictLocked();
}

Result<size_t> ChunkStore::Read(const Digest& digest, uint64_t offset, std::span<uint8_t> out) {
  ASSIGN_OR_RETURN(ChunkPin pin, Pin(digest));
  std::string path = impl_->PathOf(digest.hex());
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "opening chunk " + digest.String());
  return impl_->io->ReadAt(fd.get(), offset, out);
}

Result<std::string> ChunkStore::Get(const Digest& digest) {
  ASSIGN_OR_RETURN(ChunkPin pin, Pin(digest));
  uint64_t size;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    size = impl_->entries.at(digest.hex()).size;
  }
  std::string out(size, '\0');
  std::string path = impl_->PathOf(digest.hex());
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "opening chunk " + digest.String());
  ASSIGN_OR_RETURN(size_t n, impl_->io->ReadAt(fd.get(), 0,
                                               std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), size)));
  if (n != size) return Status::Corruption("chunk " + digest.String() + " is shorter than recorded");
  return out;
}

Result<std::unique_ptr<ChunkWriter>> ChunkStore::Begin(const Digest& digest) {
  if (digest.algorithm() != "sha256") {
    return Status::Unsupported("chunk " + digest.String() + ": only sha256 is supported");
  }
  static std::atomic<uint64_t> counter{0};
  std::string tmp = impl_->options.dir + "/wip/" + digest.hex() + "." + std::to_string(::getpid()) +
                    "." + std::to_string(counter++);
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) return Status::FromErrno(errno, "creating " + tmp);
  return std::unique_ptr<ChunkWriter>(
      std::make_unique<ChunkWriterImpl>(impl_.get(), digest.hex(), tmp, std::move(fd)));
}

Status ChunkStore::Put(const Digest& digest, std::span<const uint8_t> data) {
  if (Contains(digest)) return Status::Ok();
  ASSIGN_OR_RETURN(auto w, Begin(digest));
  RETURN_IF_ERROR(w->Write(data));
  return w->Commit();
}

Status ChunkStore::Remove(const Digest& digest) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->entries.find(digest.hex());
  if (it == impl_->entries.end()) return Status::NotFound("chunk " + digest.String() + " is not in the store");
  if (it->second.pins > 0) return Status::PermissionDenied("chunk " + digest.String() + " is in use");
  ::unlink(impl_->PathOf(digest.hex()).c_str());
  impl_->stats.bytes -= it->second.size;
  impl_->stats.chunks -= 1;
  impl_->lru.erase(it->second.lru);
  impl_->entries.erase(it);
  return Status::Ok();
}

ChunkStoreStats ChunkStore::Stats() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

const char* ChunkStore::io_engine() const { return impl_->io->name(); }

}  // namespace imagefs::store
