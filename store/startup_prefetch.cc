#include "store/startup_prefetch.h"

#include <elf.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "store/elf.h"
#include "store/prefetch.h"
#include "util/log.h"

namespace imagefs::store {
namespace {

constexpr int kMaxSymlinks = 40;
constexpr size_t kHeadBytes = 256;             // enough for the ELF ident or a "#!" line

// What a process typically reads at startup whatever it is (name service, time zone).
constexpr const char* kStartupConfigFiles[] = {
    "/etc/passwd",    "/etc/group",     "/etc/nsswitch.conf", "/etc/ld.so.cache",
    "/etc/localtime", "/etc/host.conf", "/etc/gai.conf",
};

std::vector<std::string> StartupPathParts(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    if (!part.empty() && part != ".") parts.emplace_back(part);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

// The directories ld.so searches by default for a machine (Debian's multiarch dirs
// first, then the FHS ones).
std::vector<std::string> DefaultLibraryDirs(uint16_t machine, bool is64) {
  std::vector<std::string> dirs;
  const char* triplet = nullptr;
  switch (machine) {
    case EM_X86_64: triplet = "x86_64-linux-gnu"; break;
    case EM_AARCH64: triplet = "aarch64-linux-gnu"; break;
    case EM_386: triplet = "i386-linux-gnu"; break;
    case EM_ARM: triplet = "arm-linux-gnueabihf"; break;
    case EM_PPC64: triplet = "powerpc64le-linux-gnu"; break;
    case EM_S390: triplet = "s390x-linux-gnu"; break;
    case EM_RISCV: triplet = "riscv64-linux-gnu"; break;
    default: break;
  }
  if (triplet != nullptr) {
    dirs.push_back(std::string("/lib/") + triplet);
    dirs.push_back(std::string("/usr/lib/") + triplet);
  }
  if (is64) {
    dirs.push_back("/lib64");
    dirs.push_back("/usr/lib64");
  }
  dirs.push_back("/lib");
  dirs.push_back("/usr/lib");
  if (triplet != nullptr) dirs.push_back(std::string("/usr/local/lib/") + triplet);
  dirs.push_back("/usr/local/lib");
  return dirs;
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return path.substr(0, slash);
}

// $ORIGIN / ${ORIGIN} replaced by origin; "" when the dir needs an origin we don't know.
std::string ExpandOrigin(std::string dir, const std::string& origin) {
  for (const char* token : {"${ORIGIN}", "$ORIGIN"}) {
    const std::string t = token;
    for (size_t at = dir.find(t); at != std::string::npos; at = dir.find(t, at)) {
      if (origin.empty()) return "";
      dir.replace(at, t.size(), origin);
      at += origin.size();
    }
  }
  return dir.find('$') == std::string::npos ? dir : "";
}

}  // namespace

Result<std::pair<index::Ino, std::string>> FollowPath(const index::MergedView& view,
                                                      std::string_view path) {
  std::deque<std::string> todo;
  for (std::string& p : StartupPathParts(path)) todo.push_back(std::move(p));
  std::vector<std::string> names;
  std::vector<index::Ino> inos = {index::kRootIno};
  int links = 0;
  while (!todo.empty()) {
    std::string part = std::move(todo.front());
    todo.pop_front();
    if (part == "..") {
      if (!names.empty()) {
        names.pop_back();
        inos.pop_back();
      }
      continue;
    }
    ASSIGN_OR_RETURN(index::Ino next, view.Lookup(inos.back(), part));
    ASSIGN_OR_RETURN(index::NodeAttr attr, view.Attr(next));
    if (S_ISLNK(attr.mode)) {
      if (++links > kMaxSymlinks) {
        return Status::FromErrno(ELOOP, std::string(path) + ": too many symlinks");
      }
      ASSIGN_OR_RETURN(std::string_view target, view.ReadLink(next));
      if (!target.empty() && target[0] == '/') {
        names.clear();
        inos.resize(1);
      }
      std::vector<std::string> parts = StartupPathParts(target);
      todo.insert(todo.begin(), parts.begin(), parts.end());
      continue;
    }
    names.push_back(std::move(part));
    inos.push_back(next);
  }
  std::string resolved;
  for (const std::string& n : names) resolved += "/" + n;
  return std::make_pair(inos.back(), resolved.empty() ? std::string("/") : resolved);
}

StartupPrefetcher::StartupPrefetcher(const index::MergedView& view, CachedFileReader& reader,
                                     StartupPrefetchOptions options, PreloadFor preload)
    : view_(view),
      reader_(reader),
      preload_(std::move(preload)),
      options_(options),
      readahead_(options.sibling_after > 0 && !HasPrefetchSet(view)) {}

StartupPrefetcher::~StartupPrefetcher() { Stop(); }

void StartupPrefetcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    for (auto& q : queues_) q.clear();
  }
  cv_.notify_all();
  // No worker is added once stop_ is set, so the list is stable here.
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  idle_cv_.notify_all();
}

void StartupPrefetcher::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return stop_ || (Empty() && active_ == 0); });
}

StartupPrefetchStats StartupPrefetcher::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void StartupPrefetcher::Enqueue(index::Ino ino, std::string path, bool fetch, Priority priority,
                                bool deps) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || !seen_.insert(ino).second) return;
  }
  auto attr = view_.Attr(ino);
  if (!attr.ok() || !S_ISREG(attr->mode) || attr->size == 0 || InPrefetchSet(view_, ino)) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    Task task;
    task.ino = ino;
    task.path = std::move(path);
    task.fetch = fetch;
    task.deps = deps;
    queues_[priority].push_back(std::move(task));
    StartWorkers();
  }
  cv_.notify_one();
}

void StartupPrefetcher::StartWorkers() {
  // The workers start with the first task (a mount that never sees one has none).
  for (size_t i = workers_.size(); i < std::max<size_t>(1, options_.threads); ++i) {
    workers_.emplace_back([this] { Worker(); });
  }
}

void StartupPrefetcher::AddPath(const std::string& path) { AddPath(path, kExec); }

void StartupPrefetcher::AddPath(const std::string& path, Priority priority) {
  auto found = FollowPath(view_, path);
  if (found.ok()) Enqueue(found->first, found->second, true, priority);
}

void StartupPrefetcher::AddCommand(const std::string& argv0, const std::string& path_env) {
  if (argv0.empty()) return;
  if (argv0.find('/') != std::string::npos) {
    AddPath(argv0[0] == '/' ? argv0 : "/" + argv0);
  } else {
    // As execvp: the first regular file named argv0 in a PATH dir.
    std::string_view rest = path_env;
    while (true) {
      const size_t colon = rest.find(':');
      std::string dir(rest.substr(0, colon));
      if (dir.empty()) dir = "/";
      auto found = FollowPath(view_, dir + "/" + argv0);
      if (found.ok()) {
        auto attr = view_.Attr(found->first);
        if (attr.ok() && S_ISREG(attr->mode)) {
          Enqueue(found->first, found->second, true, kExec);
          break;
        }
      }
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  for (const char* file : kStartupConfigFiles) AddPath(file, kExec);
  const std::string name = argv0.substr(argv0.rfind('/') + 1);
  if (name.empty() || name == "." || name == "..") return;
  const std::pair<std::string, Priority> dirs[] = {
      {"/etc/" + name, kConfig}, {"/usr/lib/" + name, kData}, {"/usr/share/" + name, kData}};
  for (const auto& [path, priority] : dirs) {
    auto dir = FollowPath(view_, path);
    if (!dir.ok()) continue;
    auto attr = view_.Attr(dir->first);
    if (!attr.ok() || !S_ISDIR(attr->mode)) continue;
    uint64_t budget = priority == kConfig ? options_.max_config_dir : options_.max_data_dir;
    AddConfigDir(dir->first, dir->second, 0, budget, priority);
  }
}

void StartupPrefetcher::AddConfigDir(index::Ino dir, const std::string& path, int depth,
                                     uint64_t& budget, Priority priority) {
  std::vector<std::string> names;
  (void)view_.ForEachChild(dir, [&](std::string_view name, index::Ino) {
    names.emplace_back(name);
    return names.size() < 1000;
  });
  for (const std::string& name : names) {
    auto found = FollowPath(view_, path + "/" + name);
    if (!found.ok()) continue;
    auto attr = view_.Attr(found->first);
    if (!attr.ok()) continue;
    if (S_ISDIR(attr->mode)) {
      // Only real subdirs (a symlink to a dir elsewhere could be anything).
      if (depth < 3 && found->second == path + "/" + name) {
        AddConfigDir(found->first, found->second, depth + 1, budget, priority);
      }
    } else if (S_ISREG(attr->mode) && attr->size <= options_.max_config_file &&
               attr->size <= budget) {
      budget -= attr->size;
      Enqueue(found->first, found->second, true, priority);
    }
  }
}

void StartupPrefetcher::Observe(index::Ino ino, std::span<const uint8_t> head, bool missed) {
  const bool exec = LooksLikeElf(head) || !ShebangInterpreter(head).empty();
  if (missed && !exec && readahead_) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && noted_.insert(ino).second) {
      Task note;
      note.ino = ino;
      note.fetch = false;
      note.note = true;
      queues_[kExec].push_back(std::move(note));
      StartWorkers();
      cv_.notify_one();
    }
  }
  if (exec) Enqueue(ino, "", false, kExec);
}

void StartupPrefetcher::NoteRead(index::Ino ino) {
  std::call_once(parents_once_, [this] {
    parents_.assign(view_.InodeCount() + 1, 0);
    std::vector<index::Ino> queue = {index::kRootIno};
    for (size_t q = 0; q < queue.size(); ++q) {
      (void)view_.ForEachChild(queue[q], [&](std::string_view, index::Ino child) {
        if (child >= parents_.size() || parents_[child] != 0) return true;
        parents_[child] = queue[q];
        auto attr = view_.Attr(child);
        if (attr.ok() && S_ISDIR(attr->mode)) queue.push_back(child);
        return true;
      });
    }
  });
  if (ino >= parents_.size() || parents_[ino] == 0) return;
  const index::Ino dir = parents_[ino];
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (++dir_reads_[dir] != options_.sibling_after) return;
    stats_.dirs += 1;
  }
  std::vector<std::pair<index::Ino, uint64_t>> files;
  uint64_t budget = options_.max_sibling_dir;
  (void)view_.ForEachChild(dir, [&](std::string_view, index::Ino child) {
    auto attr = view_.Attr(child);
    if (!attr.ok() || !S_ISREG(attr->mode) || attr->size == 0 ||
        attr->size > options_.max_sibling_file) {
      return true;
    }
    if (attr->size > budget) return false;
    budget -= attr->size;
    files.emplace_back(child, attr->size);
    return true;
  });
  LOG(kDebug) << "readahead: directory " << dir << ": " << files.size() << " files";
  {
    std::lock_guard<std::mutex> lock(mu_);
    size_t keep = 0;
    while (keep < files.size() &&
           sibling_bytes_ + files[keep].second <= options_.max_sibling_total) {
      sibling_bytes_ += files[keep++].second;
    }
    files.resize(keep);
    if (files.empty() || stop_) return;
    if (preload_) {
      // One task for the directory: its files' bytes in one range request (below).
      Task task;
      task.ino = dir;
      task.fetch = false;
      task.deps = false;
      task.files = std::move(files);
      queues_[kSibling].push_back(std::move(task));
      StartWorkers();
      cv_.notify_one();
      return;
    }
  }
  for (const auto& [child, size] : files) Enqueue(child, "", true, kSibling, /*deps=*/false);
}

void StartupPrefetcher::ReadAhead(const std::vector<std::pair<index::Ino, uint64_t>>& files) {
  // A directory's files sit together in their layer (tar order; a converted layer keeps
  // it), so the uncached ones are fetched as one range of each layer's blob into its
  // preload window, then read (decoded, verified, stored) from there. A range much wider
  // than the files (an unsorted layer) is not fetched whole: the files then go one by one.
  struct Span {
    uint64_t begin = UINT64_MAX, end = 0, bytes = 0;
  };
  std::map<uint32_t, Span> spans;
  std::vector<std::pair<index::Ino, uint64_t>> todo;
  for (const auto& [ino, size] : files) {
    if (reader_.IsCached(ino)) continue;
    auto origin = view_.OriginOf(ino);
    if (!origin.ok()) continue;
    Span& span = spans[origin->layer];
    for (const index::ChunkRef& c : view_.layers()[origin->layer].index->Chunks(origin->node)) {
      span.begin = std::min(span.begin, c.blob_offset);
      span.end = std::max(span.end, c.blob_offset + c.blob_length);
      span.bytes += c.blob_length;
    }
    todo.emplace_back(ino, size);
  }
  for (const auto& [layer, span] : spans) {
    fetch::PreloadBlobSource* source = preload_(layer);
    if (source == nullptr || span.end <= span.begin) continue;
    const uint64_t width = span.end - span.begin;
    if (width > options_.max_sibling_dir || width > 2 * span.bytes + (256 << 10)) continue;
    (void)source->Preload({span.begin, width});
  }
  std::vector<uint8_t> buf(256 << 10);
  for (const auto& [ino, size] : todo) {
    bool ok = true;
    for (uint64_t off = 0; off < size && ok;) {
      auto n = reader_.Read(ino, off, buf);
      ok = n.ok() && *n > 0;
      if (ok) off += *n;
    }
    if (!ok) continue;
    std::lock_guard<std::mutex> lock(mu_);
    stats_.files += 1;
    stats_.bytes += size;
  }
}

int StartupPrefetcher::NextPriority() const {
  for (int p = 0; p < kPriorities; ++p) {
    if (queues_[p].empty()) continue;
    // Readahead's files go a few at a time: each is a request of its own, and a flood of
    // them delays the registry's answers to the workload's own reads.
    if (p == kSibling && sibling_active_ >= options_.sibling_threads) continue;
    return p;
  }
  return -1;
}

void StartupPrefetcher::Worker() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || NextPriority() >= 0; });
    if (stop_) return;
    const int priority = NextPriority();
    Task task = std::move(queues_[priority].front());
    queues_[priority].pop_front();
    ++active_;
    if (priority == kSibling) ++sibling_active_;
    lock.unlock();
    Process(task);
    lock.lock();
    --active_;
    if (priority == kSibling) {
      --sibling_active_;
      cv_.notify_one();
    }
    if (Empty() && active_ == 0) idle_cv_.notify_all();
  }
}

void StartupPrefetcher::Process(const Task& task) {
  if (task.note) {
    NoteRead(task.ino);
    return;
  }
  if (!task.files.empty()) {
    ReadAhead(task.files);
    return;
  }
  auto attr = view_.Attr(task.ino);
  if (!attr.ok()) return;
  const uint64_t size = attr->size;
  if (task.fetch && size <= options_.max_file) {
    if (reader_.IsCached(task.ino)) {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.skipped += 1;
    } else {
      // One read per content chunk, all at once: each chunk is one request of its own
      // (parallel), and a demand read of the same chunk joins its fill instead of
      // fetching it again.
      const uint64_t pieces = (size + kContentChunkSize - 1) / kContentChunkSize;
      std::vector<char> ok(pieces, 0);
      auto fetch_piece = [&](uint64_t i) {
        const uint64_t off = i * kContentChunkSize;
        std::vector<uint8_t> buf(std::min(kContentChunkSize, size - off));
        auto n = reader_.Read(task.ino, off, buf);
        ok[i] = n.ok() && *n == buf.size();
      };
      std::vector<std::thread> helpers;
      for (uint64_t i = 1; i < pieces; ++i) helpers.emplace_back(fetch_piece, i);
      fetch_piece(0);
      for (std::thread& t : helpers) t.join();
      // A failed fetch: the workload's own read will say why.
      if (std::find(ok.begin(), ok.end(), 0) != ok.end()) return;
      std::lock_guard<std::mutex> lock(mu_);
      stats_.files += 1;
      stats_.bytes += size;
    }
  }
  if (!task.deps) return;
  std::vector<uint8_t> head(std::min<uint64_t>(size, kHeadBytes));
  auto got = reader_.Read(task.ino, 0, head);
  if (!got.ok()) return;
  head.resize(*got);
  if (const std::string interp = ShebangInterpreter(head); !interp.empty()) {
    if (interp[0] == '/') AddPath(interp);
    return;
  }
  if (!LooksLikeElf(head)) return;
  auto deps = ReadElfDeps(
      [&](uint64_t offset, std::span<uint8_t> out) { return reader_.Read(task.ino, offset, out); },
      size);
  if (!deps.ok()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.elf += 1;
  }
  if (!deps->interp.empty()) AddPath(deps->interp);
  for (const std::string& name : deps->needed) {
    auto lib = FindLibrary(name, deps->runpath, deps->machine, task.path);
    if (lib.ok()) Enqueue(lib->first, lib->second, true, kExec);
  }
}

Result<std::pair<index::Ino, std::string>> StartupPrefetcher::FindLibrary(
    const std::string& name, const std::vector<std::string>& runpath, uint16_t machine,
    const std::string& obj_path) const {
  if (name.find('/') != std::string::npos) {
    if (name[0] != '/' && obj_path.empty()) return Status::NotFound(name);
    return FollowPath(view_, name[0] == '/' ? name : DirName(obj_path) + "/" + name);
  }
  const std::string origin = obj_path.empty() ? "" : DirName(obj_path);
  std::vector<std::string> dirs;
  for (const std::string& dir : runpath) {
    std::string expanded = ExpandOrigin(dir, origin);
    if (!expanded.empty() && expanded[0] == '/') dirs.push_back(std::move(expanded));
  }
  const bool is64 = machine == EM_X86_64 || machine == EM_AARCH64 || machine == EM_PPC64 ||
                    machine == EM_S390 || machine == EM_RISCV;
  for (std::string& dir : DefaultLibraryDirs(machine, is64)) dirs.push_back(std::move(dir));
  for (const std::string& dir : dirs) {
    auto found = FollowPath(view_, dir + "/" + name);
    if (!found.ok()) continue;
    auto attr = view_.Attr(found->first);
    if (attr.ok() && S_ISREG(attr->mode)) return found;
  }
  return Status::NotFound(name + ": not in the image's library dirs");
}

}  // namespace imagefs::store
