#pragma once

// Startup prefetch: for images without a prefetch set (no eStargz landmark, no recorded
// profile), fetch what a program needs to start before it asks, so its start is a few
// round trips of parallel requests instead of one round trip per file.
//
// - A file added (AddPath, AddCommand) is fetched whole through the CachedFileReader
//   (one read per content chunk, in parallel) by one of a few worker threads, so the
//   files of one step are fetched in parallel.
// - An ELF file's interpreter (PT_INTERP) and DT_NEEDED libraries (store/elf.h), found as
//   ld.so would — DT_RUNPATH/DT_RPATH dirs ($ORIGIN expanded), then the multiarch and
//   standard lib dirs, symlinks followed inside the image — are added in turn, so a
//   binary's whole library closure arrives in as many steps as its dependency depth.
//   A "#!" script's interpreter likewise.
// - Observe(ino, first bytes) is the mount's hook for a workload's read at offset 0: an
//   ELF file (or script) being read has its libraries (interpreter) queued at once; the
//   file itself is left to its demand reads.
// - AddCommand (imagefs run, which knows the command): argv[0] found through PATH as
//   execvp would, plus the small config files a process typically reads at startup
//   (/etc/passwd, /etc/group, /etc/nsswitch.conf, ...), then the small files under
//   /etc/<argv0's name>/ (nginx's /etc/nginx), then those of /usr/lib/<name>/ and
//   /usr/share/<name>/ (nginx's modules and default page), each dir within a byte budget.
//   The command, the libraries and those few files go first (workers take the most
//   urgent queue first), then the config dir, then the data dirs.
// - Directory readahead (any mount): a workload that reads a second file of a directory
//   (Observe) usually reads more of it — python's imports read dozens of one
//   __pycache__, a program its modules — and each cold file costs a round trip. So the
//   directory's other small files are queued too, last in line, within a byte budget per
//   directory and per mount, two at a time, and only for images without a prefetch set.
//   Only reads that had to fetch count (files the startup
//   prefetch already brought show no need), and not those of ELF files or scripts (their
//   libraries are followed as above; a library dir's other files are rarely wanted), and
//   the queued files' own dependencies are not followed.
//
// Files inside a layer's prefetch set (store/prefetch.h) are left to that prefetch.
// Thread safety: every method may be called from any thread.

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "index/merged_view.h"
#include "store/cached_reader.h"
#include "store/prefetch.h"
#include "util/status.h"

namespace imagefs::store {

struct StartupPrefetchOptions {
  size_t threads = 32;                    // files fetched at once
  uint64_t max_file = 64ull << 20;        // larger files are not fetched whole (<= 16 chunks)
  uint64_t max_config_file = 256 << 10;   // per file of /etc/<name>/
  uint64_t max_config_dir = 2ull << 20;   // all files of /etc/<name>/
  uint64_t max_data_dir = 1ull << 20;     // all files of /usr/lib/<name>/, /usr/share/<name>/
  // Directory readahead: after this many distinct files of one directory were read (0:
  // never), its other files up to max_sibling_file each, max_sibling_dir per directory and
  // max_sibling_total per mount.
  uint32_t sibling_after = 3;
  size_t sibling_threads = 2;  // readahead files fetched at once
  uint64_t max_sibling_file = 256 << 10;
  uint64_t max_sibling_dir = 4ull << 20;
  uint64_t max_sibling_total = 256ull << 20;
};

struct StartupPrefetchStats {
  uint64_t files = 0;    // files fetched whole
  uint64_t bytes = 0;    // their bytes
  uint64_t skipped = 0;  // already cached
  uint64_t elf = 0;      // ELF files whose dependencies were read
  uint64_t dirs = 0;     // directories whose files were queued by readahead
};

// A path inside the view with every symlink followed ("/lib" -> "usr/lib" included):
// the file's inode and its path without symlinks. ELOOP after 40 links.
Result<std::pair<index::Ino, std::string>> FollowPath(const index::MergedView& view,
                                                      std::string_view path);

class StartupPrefetcher {
 public:
  // preload (optional) gives a layer's PreloadBlobSource: directory readahead then fetches
  // a directory's files as one range request instead of one request each.
  StartupPrefetcher(const index::MergedView& view, CachedFileReader& reader,
                    StartupPrefetchOptions options = {}, PreloadFor preload = nullptr);
  ~StartupPrefetcher();  // Stop()
  StartupPrefetcher(const StartupPrefetcher&) = delete;
  StartupPrefetcher& operator=(const StartupPrefetcher&) = delete;

  // Queues the file at path (absolute, inside the image); a missing one is ignored.
  void AddPath(const std::string& path);
  // Queues what running argv0 with this PATH needs first (see above).
  void AddCommand(const std::string& argv0, const std::string& path_env);
  // A workload read the first bytes of ino (offset 0): queue an ELF file's libraries, and,
  // when the read had to fetch (missed), count it towards its directory's readahead.
  // Cheap: the work is the workers'.
  void Observe(index::Ino ino, std::span<const uint8_t> head, bool missed = true);
  // Until nothing is queued or being fetched.
  void Wait();
  // Ends the workers (queued files are dropped); later calls queue nothing.
  void Stop();
  StartupPrefetchStats Stats() const;

 private:
  struct Task {
    index::Ino ino = 0;
    std::string path;  // "" when unknown (observed reads)
    bool fetch = true;
    bool deps = true;   // follow an ELF file's libraries (a script's interpreter)
    bool note = false;  // not a fetch: a workload's read of ino to count (NoteRead)
    std::vector<std::pair<index::Ino, uint64_t>> files;  // directory readahead: its files
  };
  // Queues, most urgent first: the command, its libraries and the files every process
  // reads; the command's config dir; its data dirs; directory readahead.
  enum Priority { kExec = 0, kConfig = 1, kData = 2, kSibling = 3, kPriorities = 4 };
  // Queues ino unless seen before (or in a prefetch set, or not a regular file).
  void Enqueue(index::Ino ino, std::string path, bool fetch, Priority priority,
               bool deps = true);
  // Counts a workload's first read of ino towards its directory; the sibling_after-th
  // queues the directory's other small files.
  void NoteRead(index::Ino ino);
  // Fetches these files (inode, size) of one directory, in one range per layer.
  void ReadAhead(const std::vector<std::pair<index::Ino, uint64_t>>& files);
  void AddPath(const std::string& path, Priority priority);
  bool Empty() const {  // mu_ held
    for (const auto& q : queues_) {
      if (!q.empty()) return false;
    }
    return true;
  }
  void StartWorkers();       // mu_ held
  int NextPriority() const;  // mu_ held; the queue to take from, -1 when none may be
  void Worker();
  void Process(const Task& task);
  // Where ld.so would find `name` needed by the object at obj_path.
  Result<std::pair<index::Ino, std::string>> FindLibrary(const std::string& name,
                                                         const std::vector<std::string>& runpath,
                                                         uint16_t machine,
                                                         const std::string& obj_path) const;
  void AddConfigDir(index::Ino dir, const std::string& path, int depth, uint64_t& budget,
                    Priority priority);

  const index::MergedView& view_;
  CachedFileReader& reader_;
  const PreloadFor preload_;
  const StartupPrefetchOptions options_;
  // Directory readahead: on unless turned off, and only for images without a prefetch set
  // (a recorded profile knows better what the workload reads).
  const bool readahead_;
  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;       // work queued or stop
  std::condition_variable idle_cv_;  // queue empty and nothing active
  std::deque<Task> queues_[kPriorities];
  std::unordered_set<index::Ino> seen_;
  std::unordered_set<index::Ino> noted_;                 // files Observe counted
  std::unordered_map<index::Ino, uint32_t> dir_reads_;   // directory -> files read
  uint64_t sibling_bytes_ = 0;                           // queued by readahead so far
  std::once_flag parents_once_;
  std::vector<index::Ino> parents_;  // ino -> its directory; built by the first NoteRead
  size_t active_ = 0;
  size_t sibling_active_ = 0;  // kSibling tasks being processed
  bool stop_ = false;
  StartupPrefetchStats stats_;
  std::vector<std::thread> workers_;  // started by the first Enqueue
};

}  // namespace imagefs::store
