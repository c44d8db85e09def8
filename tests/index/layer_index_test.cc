// One conformance suite over every LayerIndex format: the same source tree, tarred by GNU
// tar, then stored as an uncompressed tar, gzip (one member and several), zstd (one frame
// and several) must give the same tree, the same attributes and the same bytes.

#include "index/layer_index.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zstd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "index/chunk_reader.h"
#include "index/flat_index.h"
#include "index/gzip_checkpoints.h"
#include "index/index_cache.h"
#include "index/layer_writer.h"
#include "tests/index/index_test_util.h"
#include "tests/testing/fake_blob_source.h"

namespace imagefs::index {
namespace layer_index_test {
namespace {

using testing::FakeBlobSource;
namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1 << 20;
const std::string kLongDir(120, 'L');

// The source tree and its layer blobs, built once for the whole program.
class Corpus {
 public:
  static Corpus& Get() {
    static Corpus* corpus = new Corpus();  // lives to the end; its dir is removed atexit
    return *corpus;
  }
  const std::string& src() const { return src_; }
  const std::string& tar() const { return blobs_.at("tar"); }
  const std::string& Blob(const std::string& format) {
    auto it = blobs_.find(format);
    if (it != blobs_.end()) return it->second;
    std::string blob;
    if (format == "gzip") {
      blob = test::Sh("gzip -6 -n -c corpus.tar", dir_);
    } else if (format == "gzip-multi") {
      blob = CompressPieces("gzip -6 -n -c", {3 * kMiB + 123, 4 * kMiB + 77});
    } else if (format == "zstd") {
      blob = test::Sh("zstd -q -3 -c corpus.tar", dir_);
    } else if (format == "zstd-multi") {
      blob = CompressPieces("zstd -q -3 -c", {kMiB + 5, kMiB + 1000, 3 * kMiB, 2 * kMiB + 9});
    } else if (format == "estargz" || format == "zstd-chunked") {
      // imagefs's own writers, with 1 MiB chunks so large files span several.
      LayerWriteOptions options;
      options.chunk_size = kMiB;
      auto written = WriteSeekableLayer(
          format == "estargz" ? SeekableFormat::kEstargz : SeekableFormat::kZstdChunked,
          dir_ + "/corpus.tar",
          [&](std::span<const uint8_t> data) {
            blob.append(reinterpret_cast<const char*>(data.data()), data.size());
            return Status::Ok();
          },
          options);
      EXPECT_TRUE(written.ok()) << written.status().message();
    }
    EXPECT_FALSE(blob.empty()) << format;
    return blobs_[format] = blob;
  }

 private:
  Corpus() {
    auto d = MakeTempDir("/tmp", "layer-index-test-");
    EXPECT_TRUE(d.ok());
    dir_ = *d;
    static std::string cleanup = dir_;
    std::atexit([] { (void)RemoveAll(cleanup); });
    src_ = dir_ + "/src";
    auto w = [&](const std::string& rel, const std::string& data) {
      EXPECT_TRUE(WriteFileAtomic(src_ + "/" + rel, data).ok()) << rel;
    };
    for (const char* d : {"etc", "bin", "usr/share", "opaque", "dev", "secret"}) {
      EXPECT_TRUE(MakeDirs(src_ + "/" + d).ok());
    }
    EXPECT_TRUE(MakeDirs(src_ + "/usr/lib/" + kLongDir).ok());
    w("etc/hostname", "imagefs\n");
    w("etc/passwd", test::TextBytes(2000, 3));
    w("bin/busybox", test::RandomBytes(100000, 4) + test::TextBytes(200000, 5));
    EXPECT_EQ(::link((src_ + "/bin/busybox").c_str(), (src_ + "/bin/ls").c_str()), 0);
    EXPECT_EQ(::symlink("busybox", (src_ + "/bin/sh").c_str()), 0);
    // Larger than two spans: random (stored deflate blocks / raw zstd blocks), then text.
    w("usr/share/big.bin", test::RandomBytes(4 * kMiB + 5, 6) + test::TextBytes(6 * kMiB, 7));
    w("usr/share/medium.txt", test::TextBytes(600 * 1024, 8));
    w("usr/lib/" + kLongDir + "/file.txt", "deep\n");
    w("opaque/.wh..wh..opq", "");
    w("opaque/keep.txt", "kept\n");
    w(".wh.removed", "");
    w("empty", "");
    w("secret/suid", "#!/bin/sh\n");
    w("xattr.txt", "with xattrs\n");
    EXPECT_EQ(::chmod((src_ + "/secret/suid").c_str(), 04755), 0);
    EXPECT_EQ(::chmod((src_ + "/secret").c_str(), 0700), 0);
    EXPECT_EQ(::chown((src_ + "/etc/passwd").c_str(), 1234, 5678), 0);
    EXPECT_EQ(::mkfifo((src_ + "/fifo").c_str(), 0600), 0);
    EXPECT_EQ(::mknod((src_ + "/dev/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    EXPECT_EQ(::setxattr((src_ + "/xattr.txt").c_str(), "user.comment", "hello", 5, 0), 0);
    EXPECT_EQ(::setxattr((src_ + "/xattr.txt").c_str(), "user.bin", "\0\1\2", 3, 0), 0);
    test::Sh("tar --format=pax --xattrs --xattrs-include='user.*' --sort=name --numeric-owner "
             "-C src -cf corpus.tar .",
             dir_);
    blobs_["tar"] = test::ReadAllOf(dir_ + "/corpus.tar");
  }

  // Splits the tar at the given sizes (the rest is the last piece), compresses each piece
  // on its own and concatenates the results.
  std::string CompressPieces(const std::string& cmd, const std::vector<uint64_t>& sizes) {
    std::string out;
    const std::string& t = tar();
    uint64_t off = 0;
    for (size_t i = 0; i <= sizes.size() && off < t.size(); ++i) {
      uint64_t n = i < sizes.size() ? std::min<uint64_t>(sizes[i], t.size() - off) : t.size() - off;
      EXPECT_TRUE(WriteFileAtomic(dir_ + "/piece", t.substr(off, n)).ok());
      out += test::Sh(cmd + " piece", dir_);
      off += n;
    }
    return out;
  }

  std::string dir_;
  std::string src_;
  std::map<std::string, std::string> blobs_;
};

struct TarFormat {
  static constexpr const char* kName = "tar";
  static constexpr const char* kMediaType = "application/vnd.oci.image.layer.v1.tar";
  static constexpr bool kHasDigests = false;
};
struct GzipFormat {
  static constexpr const char* kName = "gzip";
  static constexpr const char* kMediaType = "application/vnd.oci.image.layer.v1.tar+gzip";
  static constexpr bool kHasDigests = true;
};
struct GzipMultiMemberFormat {
  static constexpr const char* kName = "gzip-multi";
  static constexpr const char* kMediaType = "application/vnd.oci.image.layer.v1.tar+gzip";
  static constexpr bool kHasDigests = true;
};
struct ZstdFormat {
  static constexpr const char* kName = "zstd";
  static constexpr const char* kMediaType = "application/vnd.oci.image.layer.v1.tar+zstd";
  static constexpr bool kHasDigests = true;
};
struct EstargzFormat {
  static constexpr const char* kName = "estargz";
  static constexpr const char* kMediaType = "application/vnd.oci.image.layer.v1.tar+gzip";
  static constexpr bool kHasDigests = true;
};
struct ZstdChunkedFormat {
  static constexpr const char* kName = "zstd-chunked";
  static constexpr const char* kMediaType = "application/vnd.oci.image.layer.v1.tar+zstd";
  static constexpr bool kHasDigests = true;
};
struct ZstdMultiFrameFormat {
  static constexpr const char* kName = "zstd-multi";
  static constexpr const char* kMediaType = "application/vnd.oci.image.layer.v1.tar+zstd";
  static constexpr bool kHasDigests = true;
};

std::string BlobOf(const std::string& format) {
  return format == "tar" ? Corpus::Get().tar() : Corpus::Get().Blob(format);
}

std::string Str(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

template <typename Format>
class LayerIndexConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    blob_ = BlobOf(Format::kName);
    ASSERT_FALSE(blob_.empty());
    digest_ = Digest::Sha256Of(blob_).String();
    source_ = std::make_unique<FakeBlobSource>(blob_, Format::kName);
    auto index = OpenLayerIndex(*source_, Format::kMediaType, digest_, nullptr);
    ASSERT_TRUE(index.ok()) << index.status().message();
    index_ = std::move(*index);
  }

  Result<NodeId> Walk(const std::string& path) const {
    NodeId id = index_->Root();
    size_t pos = 0;
    while (pos < path.size()) {
      size_t slash = path.find('/', pos);
      if (slash == std::string::npos) slash = path.size();
      ASSIGN_OR_RETURN(id, index_->Lookup(id, path.substr(pos, slash - pos)));
      pos = slash + 1;
    }
    return id;
  }
  NodeId MustWalk(const std::string& path) const {
    auto id = Walk(path);
    EXPECT_TRUE(id.ok()) << path << ": " << id.status().message();
    return id.ok() ? *id : kNoNode;
  }
  std::string Read(NodeId id, uint64_t offset, size_t len) const {
    std::string out(len, '\0');
    auto n = ReadFile(*source_, *index_, id, offset,
                      std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), len));
    EXPECT_TRUE(n.ok()) << n.status().message();
    out.resize(n.ok() ? *n : 0);
    return out;
  }
  std::string Disk(const std::string& rel) const {
    return test::ReadAllOf(Corpus::Get().src() + "/" + rel);
  }

  std::string blob_;
  std::string digest_;
  std::unique_ptr<FakeBlobSource> source_;
  std::unique_ptr<LayerIndex> index_;
};

using Formats = ::testing::Types<TarFormat, GzipFormat, GzipMultiMemberFormat, ZstdFormat,
                                 ZstdMultiFrameFormat, EstargzFormat, ZstdChunkedFormat>;
class FormatNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    std::string s = T::kName;
    for (char& c : s) {
      if (c == '-') c = '_';
    }
    return s;
  }
};
TYPED_TEST_SUITE(LayerIndexConformanceTest, Formats, FormatNames);

TYPED_TEST(LayerIndexConformanceTest, TreeAndAttributesMatchTheSourceDirectory) {
  const std::string src = Corpus::Get().src();
  std::map<std::string, std::set<std::string>> want_children;  // dir -> names in the index
  for (auto it = fs::recursive_directory_iterator(src); it != fs::recursive_directory_iterator();
       ++it) {
    std::string rel = it->path().lexically_relative(src).string();
    std::string parent = fs::path(rel).parent_path().string();
    std::string base = it->path().filename().string();
    SCOPED_TRACE(rel);
    if (base == ".wh..wh..opq") {
      auto attr = this->index_->Attr(this->MustWalk(parent));
      ASSERT_TRUE(attr.ok());
      EXPECT_TRUE(attr->opaque);
      continue;
    }
    if (base.starts_with(".wh.")) {
      std::string name = base.substr(4);
      want_children[parent].insert(name);
      auto attr = this->index_->Attr(this->MustWalk((parent.empty() ? "" : parent + "/") + name));
      ASSERT_TRUE(attr.ok());
      EXPECT_TRUE(attr->whiteout);
      EXPECT_EQ(attr->mode, static_cast<uint32_t>(S_IFCHR));
      EXPECT_EQ(attr->rdev, 0u);
      continue;
    }
    want_children[parent].insert(base);
    struct stat st;
    ASSERT_EQ(::lstat(it->path().c_str(), &st), 0);
    NodeId id = this->MustWalk(rel);
    auto attr = this->index_->Attr(id);
    ASSERT_TRUE(attr.ok());
    EXPECT_EQ(attr->mode, st.st_mode);
    EXPECT_EQ(attr->uid, st.st_uid);
    EXPECT_EQ(attr->gid, st.st_gid);
    EXPECT_EQ(attr->mtime_sec, st.st_mtim.tv_sec);
    EXPECT_EQ(attr->mtime_nsec, static_cast<uint32_t>(st.st_mtim.tv_nsec));
    EXPECT_FALSE(attr->whiteout);
    if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
      EXPECT_EQ(attr->size, static_cast<uint64_t>(st.st_size));
      EXPECT_EQ(attr->nlink, st.st_nlink);
    }
    if (S_ISCHR(st.st_mode)) {
      EXPECT_EQ(attr->rdev, st.st_rdev);
    }
    if (S_ISLNK(st.st_mode)) {
      auto target = this->index_->ReadLink(id);
      ASSERT_TRUE(target.ok());
      EXPECT_EQ(*target, fs::read_symlink(it->path()).string());
    }
    if (S_ISDIR(st.st_mode)) {
      int subdirs = 0;
      for (const auto& e : fs::directory_iterator(it->path())) {
        subdirs += e.is_directory() && !e.is_symlink();
      }
      EXPECT_EQ(attr->nlink, 2u + subdirs);
    }
  }
  // Children: exactly these names, in bytewise order.
  for (const auto& [dir, names] : want_children) {
    SCOPED_TRACE("dir " + dir);
    std::vector<std::string> got;
    ASSERT_TRUE(this->index_
                    ->ForEachChild(this->MustWalk(dir),
                                   [&](std::string_view name, NodeId) {
                                     got.emplace_back(name);
                                     return true;
                                   })
                    .ok());
    EXPECT_EQ(got, std::vector<std::string>(names.begin(), names.end()));
  }
  EXPECT_EQ(this->index_->Lookup(this->MustWalk("etc"), "nope").status().code(),
            Code::kNotFound);
  EXPECT_EQ(this->index_->Lookup(this->MustWalk("etc/hostname"), "x").status().ToErrno(),
            ENOTDIR);
}

TYPED_TEST(LayerIndexConformanceTest, EveryFileReadsBackWhole) {
  const std::string src = Corpus::Get().src();
  int files = 0;
  for (auto it = fs::recursive_directory_iterator(src); it != fs::recursive_directory_iterator();
       ++it) {
    if (!it->is_regular_file() || it->is_symlink()) continue;
    std::string rel = it->path().lexically_relative(src).string();
    if (it->path().filename().string().starts_with(".wh.")) continue;
    SCOPED_TRACE(rel);
    std::string want = this->Disk(rel);
    NodeId id = this->MustWalk(rel);
    EXPECT_EQ(this->Read(id, 0, want.size() + 100), want);
    EXPECT_EQ(this->Read(id, want.size(), 10), "");
    ++files;
  }
  EXPECT_GE(files, 10);
}

TYPED_TEST(LayerIndexConformanceTest, ReadsAtChunkBoundariesAndAcrossSpans) {
  const std::string want = this->Disk("usr/share/big.bin");
  NodeId id = this->MustWalk("usr/share/big.bin");
  auto chunks = this->index_->Chunks(id);
  if (std::string(TypeParam::kName) != "tar") {
    ASSERT_GE(chunks.size(), 2u) << "a 10 MiB file spans several 4 MiB spans";
  }
  uint64_t expect_offset = 0;
  for (const ChunkRef& c : chunks) {
    EXPECT_EQ(c.file_offset, expect_offset);
    expect_offset += c.length;
    EXPECT_EQ(c.has_digest, TypeParam::kHasDigests);
    uint64_t b = c.file_offset;
    for (uint64_t off : {b, b > 0 ? b - 1 : 0, b > 1000 ? b - 1000 : 0}) {
      SCOPED_TRACE(off);
      EXPECT_EQ(this->Read(id, off, 2000), want.substr(off, 2000));
      EXPECT_EQ(this->Read(id, off, 1), want.substr(off, 1));
    }
  }
  EXPECT_EQ(expect_offset, want.size());
  for (uint64_t off : {uint64_t{0}, 3 * kMiB + 12345, 7 * kMiB + 1, want.size() - 5000}) {
    SCOPED_TRACE(off);
    EXPECT_EQ(this->Read(id, off, 2 * kMiB), want.substr(off, 2 * kMiB));
  }
}

TYPED_TEST(LayerIndexConformanceTest, WhiteoutsAndOpaqueDirectoriesAreFlagsNotFiles) {
  auto removed = this->index_->Attr(this->MustWalk("removed"));
  ASSERT_TRUE(removed.ok());
  EXPECT_TRUE(removed->whiteout);
  EXPECT_EQ(this->Walk(".wh.removed").status().code(), Code::kNotFound);
  auto opaque = this->index_->Attr(this->MustWalk("opaque"));
  ASSERT_TRUE(opaque.ok());
  EXPECT_TRUE(opaque->opaque);
  EXPECT_EQ(this->Walk("opaque/.wh..wh..opq").status().code(), Code::kNotFound);
  EXPECT_EQ(this->Read(this->MustWalk("opaque/keep.txt"), 0, 100), "kept\n");
  auto etc = this->index_->Attr(this->MustWalk("etc"));
  EXPECT_FALSE(etc->opaque);
}

TYPED_TEST(LayerIndexConformanceTest, HardLinksShareOneNode) {
  NodeId busybox = this->MustWalk("bin/busybox");
  NodeId ls = this->MustWalk("bin/ls");
  EXPECT_EQ(busybox, ls);
  auto attr = this->index_->Attr(ls);
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->nlink, 2u);
  EXPECT_EQ(attr->hardlink_group, ls);
  EXPECT_EQ(this->Read(ls, 0, 400000), this->Disk("bin/busybox"));
  auto hostname = this->index_->Attr(this->MustWalk("etc/hostname"));
  EXPECT_EQ(hostname->nlink, 1u);
  EXPECT_EQ(hostname->hardlink_group, kNoNode);
  NodeId sh = this->MustWalk("bin/sh");
  EXPECT_EQ(*this->index_->ReadLink(sh), "busybox");
  EXPECT_EQ(this->index_->ReadLink(ls).status().code(), Code::kInvalidArgument);
}

TYPED_TEST(LayerIndexConformanceTest, XattrsAreKept) {
  auto xattrs = this->index_->Xattrs(this->MustWalk("xattr.txt"));
  ASSERT_TRUE(xattrs.ok());
  std::map<std::string, std::string> got;
  for (const auto& x : *xattrs) got[std::string(x.name)] = std::string(x.value);
  EXPECT_EQ(got, (std::map<std::string, std::string>{{"user.bin", std::string("\0\1\2", 3)},
                                                     {"user.comment", "hello"}}));
  EXPECT_TRUE(this->index_->Xattrs(this->MustWalk("etc/hostname"))->empty());
}

TYPED_TEST(LayerIndexConformanceTest, ReadFetchesExactlyTheCoveringChunksInOneRequest) {
  NodeId id = this->MustWalk("etc/passwd");
  uint64_t want_bytes = 0;
  for (const ChunkRef& c : this->index_->Chunks(id)) {
    want_bytes += c.has_digest || c.codec != Codec::kNone ? c.blob_length : c.length;
  }
  this->source_->ResetCounters();
  EXPECT_EQ(this->Read(id, 0, 5000), this->Disk("etc/passwd"));
  EXPECT_EQ(this->source_->call_count(), 1u);
  EXPECT_EQ(this->source_->bytes_served(), want_bytes);
  EXPECT_LT(want_bytes, this->blob_.size());
}

TYPED_TEST(LayerIndexConformanceTest, ReadErrorsOfTheSourcePropagate) {
  NodeId id = this->MustWalk("etc/hostname");
  this->source_->FailNextReads(1, Status::Unavailable("registry went away"));
  std::string out(100, '\0');
  auto n = ReadFile(*this->source_, *this->index_, id, 0,
                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()));
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kUnavailable);
  EXPECT_EQ(this->Read(id, 0, 100), "imagefs\n");
}

TYPED_TEST(LayerIndexConformanceTest, CorruptedByteInsideASpanFailsTheReadWithCorruption) {
  if (!TypeParam::kHasDigests) GTEST_SKIP() << "an uncompressed tar carries no digests";
  NodeId id = this->MustWalk("usr/share/big.bin");
  auto chunks = this->index_->Chunks(id);
  ASSERT_FALSE(chunks.empty());
  // The middle of the chunk's range must hold its own bytes: the last chunk for the
  // stream formats (its range ends with the file's data), the largest for the TOC formats
  // (a tiny chunk's range may end with the next entry's header, which a read never decodes).
  const std::string name = TypeParam::kName;
  const ChunkRef& c =
      name == "estargz" || name == "zstd-chunked"
          ? *std::max_element(chunks.begin(), chunks.end(),
                              [](const ChunkRef& a, const ChunkRef& b) { return a.length < b.length; })
          : chunks.back();
  this->source_->FlipByte(c.blob_offset + c.blob_length / 2, 0x01);
  std::string out(c.length, '\0');
  auto n = ReadFile(*this->source_, *this->index_, id, c.file_offset,
                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()));
  ASSERT_FALSE(n.ok()) << "read returned bytes from a corrupted span";
  EXPECT_EQ(n.status().code(), Code::kCorruption) << n.status().message();
  EXPECT_NE(n.status().message().find(this->digest_), std::string::npos) << n.status().message();
  ChunkReader reader(*this->source_, *this->index_);
  EXPECT_EQ(reader.ReadSpan(c).status().code(), Code::kCorruption);
}

TYPED_TEST(LayerIndexConformanceTest, CachedIndexIsUsedWithoutReadingTheLayer) {
  auto dir = MakeTempDir("/tmp", "index-cache-test-");
  ASSERT_TRUE(dir.ok());
  auto cache = MakeDirectoryIndexCache(*dir);
  FakeBlobSource first(this->blob_, "first");
  auto built = OpenLayerIndex(first, TypeParam::kMediaType, this->digest_, cache.get());
  ASSERT_TRUE(built.ok()) << built.status().message();
  EXPECT_GT(first.bytes_served(), 0u);
  const std::string name = TypeParam::kName;
  if (name == "estargz" || name == "zstd-chunked") {
    EXPECT_LT(first.bytes_served(), this->blob_.size() / 10) << "footer and TOC only";
  } else if (name != "tar") {
    EXPECT_GE(first.bytes_served(), this->blob_.size()) << "a compressed layer is read whole";
  }

  FakeBlobSource second(this->blob_, "second");
  auto cached = OpenLayerIndex(second, TypeParam::kMediaType, this->digest_, cache.get());
  ASSERT_TRUE(cached.ok()) << cached.status().message();
  EXPECT_EQ(second.bytes_served(), 0u);
  EXPECT_EQ(second.call_count(), 0u);
  EXPECT_EQ((*cached)->NodeCount(), this->index_->NodeCount());
  NodeId id = this->MustWalk("usr/share/big.bin");
  std::string out(100, '\0');
  auto n = ReadFile(second, **cached, id, 5 * kMiB,
                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()));
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(out, this->Disk("usr/share/big.bin").substr(5 * kMiB, 100));

  // A damaged cache entry is rebuilt, not trusted.
  std::string path = *dir + "/sha256/" + this->digest_.substr(7) + ".index";
  std::string bytes = test::ReadAllOf(path);
  bytes[bytes.size() / 2] ^= 0x40;
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
  FakeBlobSource third(this->blob_, "third");
  auto rebuilt = OpenLayerIndex(third, TypeParam::kMediaType, this->digest_, cache.get());
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().message();
  EXPECT_GT(third.bytes_served(), 0u);
  EXPECT_EQ((*rebuilt)->NodeCount(), this->index_->NodeCount());
  (void)RemoveAll(*dir);
}

TYPED_TEST(LayerIndexConformanceTest, EncodeDecodeRoundTrip) {
  auto* flat = dynamic_cast<FlatLayerIndex*>(this->index_.get());
  ASSERT_NE(flat, nullptr);
  std::string bytes;
  flat->EncodeTo(bytes);
  auto decoded = FlatLayerIndex::DecodeFrom(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  std::string again;
  (*decoded)->EncodeTo(again);
  EXPECT_EQ(again, bytes);
  EXPECT_EQ((*decoded)->format(), flat->format());
  for (size_t at : {size_t{3}, bytes.size() / 3, bytes.size() - 1}) {
    std::string bad = bytes;
    bad[at] ^= 0x10;
    EXPECT_EQ(FlatLayerIndex::DecodeFrom(bad).status().code(), Code::kCorruption) << at;
  }
  EXPECT_EQ(FlatLayerIndex::DecodeFrom(bytes.substr(0, bytes.size() - 40)).status().code(),
            Code::kCorruption);
}

// ---------------------------------------------------------------------------------------
// Format-specific checks

std::unique_ptr<LayerIndex> MustOpen(FakeBlobSource& source, const char* media_type,
                                     const OpenOptions& options = {}) {
  auto r = OpenLayerIndex(source, media_type, "", nullptr, options);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? std::move(*r) : nullptr;
}

TEST(GzipCheckpointIndexTest, CheckpointsEveryFourMiBAndRoundTrips) {
  const std::string& blob = Corpus::Get().Blob("gzip");
  FakeBlobSource source(blob);
  auto index = MustOpen(source, GzipFormat::kMediaType);
  ASSERT_NE(index, nullptr);
  const GzipCheckpointIndex* cps = index->gzip_checkpoints();
  ASSERT_NE(cps, nullptr);
  const uint64_t tar_size = Corpus::Get().tar().size();
  EXPECT_EQ(cps->uncompressed_size, tar_size);
  EXPECT_EQ(cps->compressed_size, blob.size());
  EXPECT_EQ(cps->span_count(), (tar_size + 4 * kMiB - 1) / (4 * kMiB)) << tar_size;
  for (size_t i = 1; i < cps->span_count(); ++i) {
    EXPECT_GE(cps->SpanOutRange(i - 1).length, 4 * kMiB);
    EXPECT_LT(cps->SpanOutRange(i - 1).length, 4 * kMiB + 256 * 1024);
    EXPECT_EQ(cps->checkpoints[i].window.size(), kDeflateWindow);
  }
  std::string bytes;
  cps->EncodeTo(bytes);
  auto decoded = GzipCheckpointIndex::DecodeFrom(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  ASSERT_EQ(decoded->span_count(), cps->span_count());
  for (size_t i = 0; i < cps->span_count(); ++i) {
    EXPECT_EQ(decoded->checkpoints[i].in_offset, cps->checkpoints[i].in_offset);
    EXPECT_EQ(decoded->checkpoints[i].out_offset, cps->checkpoints[i].out_offset);
    EXPECT_EQ(decoded->checkpoints[i].bits, cps->checkpoints[i].bits);
    EXPECT_EQ(decoded->checkpoints[i].window, cps->checkpoints[i].window);
    EXPECT_EQ(decoded->checkpoints[i].span_sha256, cps->checkpoints[i].span_sha256);
  }
  std::string bad = bytes;
  bad[bytes.size() / 2] ^= 1;
  EXPECT_EQ(GzipCheckpointIndex::DecodeFrom(bad).status().code(), Code::kCorruption);
  EXPECT_EQ(GzipCheckpointIndex::DecodeFrom(bytes.substr(0, 100)).status().code(),
            Code::kCorruption);
  EXPECT_EQ(GzipCheckpointIndex::DecodeFrom("").status().code(), Code::kCorruption);
}

// Many small spans: checkpoints land at unaligned bit offsets and at member starts, and
// spans cross member boundaries. Every file must still read back.
TEST(GzipCheckpointIndexTest, SmallSpansEveryFileReadsBack) {
  for (const char* format : {"gzip", "gzip-multi", "zstd", "zstd-multi"}) {
    SCOPED_TRACE(format);
    FakeBlobSource source(BlobOf(format));
    OpenOptions options;
    options.span_size = 100 * 1024;
    auto index = MustOpen(source, "", options);
    ASSERT_NE(index, nullptr);
    if (index->gzip_checkpoints() != nullptr) {
      const auto& cps = index->gzip_checkpoints()->checkpoints;
      EXPECT_GT(cps.size(), 20u);
      bool unaligned = false;
      for (const auto& cp : cps) unaligned |= cp.bits != 0;
      EXPECT_TRUE(unaligned);
      if (std::string(format) == "gzip-multi") {
        EXPECT_GE(std::count_if(cps.begin(), cps.end(),
                                [](const GzipCheckpoint& cp) { return cp.member_start; }),
                  2);
      }
    }
    for (const char* rel : {"usr/share/big.bin", "usr/share/medium.txt", "bin/busybox",
                            "etc/passwd", "xattr.txt"}) {
      std::string want = test::ReadAllOf(Corpus::Get().src() + "/" + rel);
      NodeId id = index->Root();
      std::string_view path = rel;
      while (!path.empty()) {
        size_t slash = path.find('/');
        auto next = index->Lookup(id, path.substr(0, slash));
        ASSERT_TRUE(next.ok()) << rel;
        id = *next;
        path = slash == std::string_view::npos ? "" : path.substr(slash + 1);
      }
      std::string got(want.size(), '\0');
      auto n = ReadFile(source, *index, id, 0,
                        std::span<uint8_t>(reinterpret_cast<uint8_t*>(got.data()), got.size()));
      ASSERT_TRUE(n.ok()) << rel << ": " << n.status().message();
      EXPECT_TRUE(got == want) << rel;
      ChunkReader reader(source, *index);
      for (const ChunkRef& c : index->Chunks(id)) {
        auto bytes = reader.ReadChunk(c);
        ASSERT_TRUE(bytes.ok()) << bytes.status().message();
        EXPECT_TRUE(Str(*bytes) == want.substr(c.file_offset, c.length));
      }
    }
  }
}

TEST(ZstdIndexTest, MultiFrameSpansStartAtFrameBoundaries) {
  const std::string& blob = Corpus::Get().Blob("zstd-multi");
  std::set<uint64_t> frame_starts;
  for (uint64_t off = 0; off < blob.size();) {
    frame_starts.insert(off);
    size_t n = ZSTD_findFrameCompressedSize(blob.data() + off, blob.size() - off);
    ASSERT_FALSE(ZSTD_isError(n));
    off += n;
  }
  ASSERT_EQ(frame_starts.size(), 5u);
  FakeBlobSource source(blob);
  auto index = MustOpen(source, ZstdFormat::kMediaType);
  ASSERT_NE(index, nullptr);
  size_t checked = 0;
  for (NodeId id = 0; id < index->NodeCount(); ++id) {
    for (const ChunkRef& c : index->Chunks(id)) {
      EXPECT_EQ(frame_starts.count(c.blob_offset), 1u) << c.blob_offset;
      if (c.skip == 0) {
        // A whole frame: its range ends where the next frame starts (or at the blob end).
        uint64_t end = c.blob_offset + c.blob_length;
        EXPECT_TRUE(end == blob.size() || frame_starts.count(end) == 1) << end;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 10u);
}

TEST(ZstdIndexTest, SingleFrameSpansDecodeFromTheFrameStart) {
  FakeBlobSource source(Corpus::Get().Blob("zstd"));
  auto index = MustOpen(source, ZstdFormat::kMediaType);
  ASSERT_NE(index, nullptr);
  bool skipping = false;
  for (NodeId id = 0; id < index->NodeCount(); ++id) {
    for (const ChunkRef& c : index->Chunks(id)) {
      EXPECT_EQ(c.blob_offset, 0u);
      skipping |= c.skip > 0;
    }
  }
  EXPECT_TRUE(skipping);
}

TEST(OpenLayerIndexTest, UnknownBytesAreUnsupported) {
  FakeBlobSource source(std::string(4096, 'x'));
  auto r = OpenLayerIndex(source, "application/octet-stream", "sha256:" + std::string(64, 'a'),
                          nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
  EXPECT_NE(r.status().message().find(std::string(64, 'a')), std::string::npos);
}

TEST(OpenLayerIndexTest, EmptyTarLayerByMediaType) {
  FakeBlobSource source(test::EndOfArchive());
  auto index = MustOpen(source, TarFormat::kMediaType);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->NodeCount(), 1u);
}

TEST(OpenLayerIndexTest, TruncatedGzipIsCorruptionNamingTheLayer) {
  std::string blob = Corpus::Get().Blob("gzip");
  FakeBlobSource source(blob.substr(0, blob.size() / 2));
  std::string digest = "sha256:" + std::string(64, 'b');
  auto r = OpenLayerIndex(source, GzipFormat::kMediaType, digest, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorruption);
  EXPECT_NE(r.status().message().find(digest), std::string::npos) << r.status().message();
}

TEST(TreeBuilderTest, LaterDuplicatesReplaceEarlierAndParentsAreImplied) {
  std::string tar = test::TarFile("a/b/c.txt", "first") + test::TarFile("a/b/c.txt", "second!") +
                    test::TarFile("x", "file") + test::TarFile("x/y", "x became a dir") +
                    test::TarFile("d/", "", '5') + test::TarFile("d/keep", "k") +
                    test::TarFile("d/", "", '5') + test::TarFile("gone/child", "c") +
                    test::TarFile("gone", "now a file") + test::EndOfArchive();
  FakeBlobSource source(tar);
  auto index = MustOpen(source, TarFormat::kMediaType);
  ASSERT_NE(index, nullptr);
  auto walk = [&](std::initializer_list<const char*> parts) -> Result<NodeId> {
    NodeId id = index->Root();
    for (const char* p : parts) {
      ASSIGN_OR_RETURN(id, index->Lookup(id, p));
    }
    return id;
  };
  auto read = [&](NodeId id) {
    std::string out(100, '\0');
    auto n = ReadFile(source, *index, id, 0,
                      std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()));
    out.resize(n.ok() ? *n : 0);
    return out;
  };
  EXPECT_EQ(read(*walk({"a", "b", "c.txt"})), "second!");
  auto a = index->Attr(*walk({"a"}));
  EXPECT_EQ(a->mode, static_cast<uint32_t>(S_IFDIR | 0755));
  EXPECT_EQ(read(*walk({"x", "y"})), "x became a dir");
  EXPECT_TRUE(walk({"d", "keep"}).ok()) << "a directory entry again keeps its children";
  EXPECT_EQ(read(*walk({"gone"})), "now a file");
  // Replaced nodes are dropped: root, a, a/b, a/b/c.txt, x, x/y, d, d/keep, gone.
  EXPECT_EQ(index->NodeCount(), 9u);
}

TEST(TreeBuilderTest, HardLinkToAFileOfALowerLayerIsKeptAsAPath) {
  test::HeaderSpec link;
  link.name = "usr/bin/perl5";
  link.type = '1';
  link.linkname = "usr/bin/perl";
  FakeBlobSource source(test::TarHeader(link) + test::EndOfArchive());
  auto index = MustOpen(source, TarFormat::kMediaType);
  ASSERT_NE(index, nullptr);
  NodeId id = *index->Lookup(*index->Lookup(*index->Lookup(index->Root(), "usr"), "bin"), "perl5");
  EXPECT_TRUE(index->Attr(id)->lower_hardlink);
  EXPECT_EQ(*index->ReadLink(id), "usr/bin/perl");
}

// A BlobSource that synthesizes a tar of `files` one-byte files in 100-file directories,
// so the 100k-entry layer needs no memory of its own.
class SyntheticTarSource final : public fetch::BlobSource {
 public:
  explicit SyntheticTarSource(uint32_t files) : files_(files) {}
  uint64_t Size() const override { return uint64_t{files_} * 1024 + 1024; }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), Size() - std::min(offset, Size())));
    for (size_t done = 0; done < n;) {
      uint64_t pos = offset + done;
      uint64_t entry = pos / 1024;
      uint64_t in_entry = pos % 1024;
      size_t take = static_cast<size_t>(std::min<uint64_t>(n - done, 1024 - in_entry));
      std::string block(1024, '\0');
      if (entry < files_) {
        char name[100];
        std::snprintf(name, sizeof name, "usr/share/dir%04u/file-%06u.txt",
                      static_cast<unsigned>(entry / 100), static_cast<unsigned>(entry));
        test::HeaderSpec h;
        h.name = name;
        h.size = 1;
        std::string header = test::TarHeader(h);
        std::memcpy(block.data(), header.data(), 512);
        block[512] = 'x';
      }
      std::memcpy(out.data() + done, block.data() + in_entry, take);
      done += take;
    }
    return n;
  }
  std::string Describe() const override { return "synthetic tar"; }

 private:
  uint32_t files_;
};

TEST(LayerIndexMemoryTest, HundredThousandFilesFitWellUnderTheBudget) {
  SyntheticTarSource source(100000);
  auto start = std::chrono::steady_clock::now();
  auto index = OpenLayerIndex(source, TarFormat::kMediaType, "", nullptr);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - start)
                .count();
  ASSERT_TRUE(index.ok()) << index.status().message();
  EXPECT_EQ((*index)->NodeCount(), 100000u + 1000u + 3u);
  size_t bytes = (*index)->MemoryUsage();
  std::printf("100k files: index %.1f MB (%zu bytes/file), built in %lld ms\n", bytes / 1e6,
              bytes / 100000, static_cast<long long>(ms));
  EXPECT_LT(bytes, 40u << 20);
}

}  // namespace
}  // namespace layer_index_test
}  // namespace imagefs::index
