#pragma once

// Helpers shared by the fuzz targets: walking every node of a LayerIndex and reading its
// files through ChunkReader, with a summary that two indexes of the same layer must share.
//
// A broken invariant calls FuzzCheck, which prints the reason and aborts so that libFuzzer
// records the input as a crash. Errors returned by the code under test are not failures.

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fetch/blob_source.h"
#include "index/chunk_reader.h"
#include "index/gzip_checkpoints.h"
#include "index/layer_index.h"
#include "util/digest.h"

namespace imagefs::fuzz {

#define FUZZ_CHECK(cond, what)                                                        \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s (%s)\n", __FILE__,       \
                   __LINE__, #cond, std::string(what).c_str());                       \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

inline std::string_view AsChars(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// A small deterministic generator driven by fuzzer bytes (for piece sizes and choices).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t Next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }

 private:
  uint64_t state_;
};

struct WalkOptions {
  // The index was built by a reader (not decoded from arbitrary bytes): children are
  // sorted and unique, Lookup finds each of them, chunks cover each file, and a file that
  // reads without error reads back exactly attr.size bytes.
  bool strict = false;
  // The index was built by decoding the whole blob (tar, plain gzip, plain zstd), so no
  // read may fail. Seekable formats (eStargz, zstd:chunked) are opened from their TOC and
  // verified lazily: a read may then fail, but never with kInternal.
  bool reads_succeed = false;
  // Bytes of file content to read at most (keeps each input fast).
  uint64_t read_budget = 1 << 20;
};

struct WalkSummary {
  uint64_t nodes = 0;
  uint64_t files = 0;
  uint64_t bytes_read = 0;
  // sha256 over the tree: ids, attributes, names, link targets, xattrs, file contents.
  std::string digest;
};

// Visits every node id in [0, NodeCount()) (so cycles in a damaged index cannot loop),
// calls every accessor, and reads files through ChunkReader when `source` is given.
inline WalkSummary WalkIndex(const index::LayerIndex& idx, fetch::BlobSource* source,
                             const WalkOptions& options) {
  WalkSummary summary;
  Sha256 hash;
  auto add = [&](std::string_view s) {
    uint64_t n = s.size();
    hash.Update(std::string_view(reinterpret_cast<const char*>(&n), sizeof n));
    hash.Update(s);
  };
  auto add_u64 = [&](uint64_t v) {
    hash.Update(std::string_view(reinterpret_cast<const char*>(&v), sizeof v));
  };
  (void)idx.layer_digest();
  (void)idx.MemoryUsage();
  if (const auto* cps = idx.gzip_checkpoints()) {
    for (size_t i = 0; i < cps->span_count(); ++i) {
      (void)cps->SpanBlobRange(i);
      (void)cps->SpanOutRange(i);
    }
  }
  const index::NodeId count = idx.NodeCount();
  summary.nodes = count;
  FUZZ_CHECK(!options.strict || count > 0, "a built index has a root");
  if (count > 0) {
    auto root = idx.Attr(idx.Root());
    FUZZ_CHECK(!options.strict || (root.ok() && S_ISDIR(root->mode)), "root is a directory");
  }
  std::unique_ptr<index::ChunkReader> reader;
  if (source != nullptr) reader = std::make_unique<index::ChunkReader>(*source, idx);
  std::vector<uint8_t> buf(64 << 10);
  uint64_t budget = options.read_budget;

  for (index::NodeId id = 0; id < count; ++id) {
    add_u64(id);
    auto attr = idx.Attr(id);
    FUZZ_CHECK(attr.ok(), "Attr of a valid id: " + attr.status().ToString());
    add_u64(attr->mode);
    add_u64(attr->uid);
    add_u64(attr->gid);
    add_u64(attr->size);
    add_u64(static_cast<uint64_t>(attr->mtime_sec));
    add_u64(attr->mtime_nsec);
    add_u64(attr->nlink);
    add_u64(attr->rdev);
    add_u64(attr->hardlink_group);
    add_u64((attr->whiteout ? 1 : 0) | (attr->opaque ? 2 : 0) | (attr->lower_hardlink ? 4 : 0));

    if (S_ISDIR(attr->mode)) {
      std::vector<std::pair<std::string, index::NodeId>> children;
      Status st = idx.ForEachChild(id, [&](std::string_view name, index::NodeId child) {
        children.emplace_back(std::string(name), child);
        return true;
      });
      FUZZ_CHECK(st.ok(), "ForEachChild of a directory: " + st.ToString());
      for (size_t i = 0; i < children.size(); ++i) {
        const auto& [name, child] = children[i];
        add(name);
        add_u64(child);
        auto found = idx.Lookup(id, name);
        if (options.strict) {
          FUZZ_CHECK(child < count, "child id in range");
          FUZZ_CHECK(i == 0 || children[i - 1].first < name, "children sorted and unique");
          FUZZ_CHECK(found.ok() && *found == child, "Lookup finds each child: " + name);
          FUZZ_CHECK(!name.empty() && name != "." && name != ".." &&
                         name.find('/') == std::string::npos,
                     "child name is one path component: " + name);
        }
      }
      // Stopping early must be honoured.
      size_t calls = 0;
      (void)idx.ForEachChild(id, [&](std::string_view, index::NodeId) {
        ++calls;
        return false;
      });
      FUZZ_CHECK(calls <= 1, "ForEachChild stops when fn returns false");
      (void)idx.Lookup(id, "");
      (void)idx.Lookup(id, "no-such-name");
    } else {
      FUZZ_CHECK(!idx.ForEachChild(id, [](std::string_view, index::NodeId) { return true; })
                      .ok(),
                 "ForEachChild of a non-directory fails");
      FUZZ_CHECK(!idx.Lookup(id, "x").ok(), "Lookup in a non-directory fails");
    }

    auto link = idx.ReadLink(id);
    if (link.ok()) add(*link);
    if (options.strict && S_ISLNK(attr->mode)) {
      FUZZ_CHECK(link.ok() && link->size() == attr->size, "symlink size is its target length");
    }
    auto xattrs = idx.Xattrs(id);
    if (xattrs.ok()) {
      for (const auto& x : *xattrs) {
        add(x.name);
        add(x.value);
      }
    }
    uint64_t chunk_bytes = 0;
    for (const index::ChunkRef& c : idx.Chunks(id)) {
      add_u64(c.blob_offset);
      add_u64(c.blob_length);
      add_u64(c.file_offset);
      add_u64(c.length);
      (void)c.SpanDigest();
      if (options.strict) {
        FUZZ_CHECK(c.file_offset == chunk_bytes, "chunks cover the file without gaps");
        FUZZ_CHECK(c.inner_offset <= c.span_length && c.length <= c.span_length - c.inner_offset,
                   "chunk inside its span");
      }
      chunk_bytes += c.length;
    }
    const bool readable = S_ISREG(attr->mode) && !attr->whiteout && !attr->lower_hardlink;
    if (options.strict && readable) {
      FUZZ_CHECK(chunk_bytes == attr->size, "chunks cover [0, size)");
    }
    if (!readable) {
      if (reader && S_ISDIR(attr->mode)) {
        FUZZ_CHECK(!reader->ReadFile(id, 0, buf).ok(), "reading a directory fails");
      }
      continue;
    }
    ++summary.files;
    if (!reader || budget == 0) continue;

    // Whole file front to back, then a few bytes from the middle.
    uint64_t offset = 0;
    bool failed = false;
    Sha256 content;
    while (budget > 0) {
      std::span<uint8_t> out(buf.data(), std::min<uint64_t>(buf.size(), budget));
      auto n = reader->ReadFile(id, offset, out);
      if (!n.ok()) {
        FUZZ_CHECK(!options.reads_succeed, "ReadFile of a scanned layer: " + n.status().ToString());
        FUZZ_CHECK(!options.strict || n.status().code() != Code::kInternal,
                   "ReadFile: internal error: " + n.status().ToString());
        failed = true;
        break;
      }
      FUZZ_CHECK(*n <= out.size(), "ReadFile count within the buffer");
      if (*n == 0) break;
      content.Update(std::string_view(reinterpret_cast<const char*>(buf.data()), *n));
      offset += *n;
      budget -= *n;
      summary.bytes_read += *n;
    }
    if (!failed && budget > 0) {
      FUZZ_CHECK(offset == attr->size, "ReadFile returns exactly size bytes");
      add(content.Finish().String());
      if (attr->size > 2) {
        uint8_t mid[3];
        auto n = reader->ReadFile(id, attr->size / 2, std::span<uint8_t>(mid, 3));
        FUZZ_CHECK(n.ok() && *n == std::min<uint64_t>(3, attr->size - attr->size / 2),
                   "ReadFile in the middle");
      }
      auto past = reader->ReadFile(id, attr->size, std::span<uint8_t>(buf.data(), 1));
      FUZZ_CHECK(past.ok() && *past == 0, "ReadFile at the end returns 0");
    }
  }
  summary.digest = hash.Finish().String();
  return summary;
}

}  // namespace imagefs::fuzz
