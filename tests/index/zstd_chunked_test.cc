// zstd:chunked: the writer's layers read back through the reader exactly as the plain tar
// reader reads the input tar; the three footer layouts; a layer made by Debian's skopeo
// 1.9 itself; damaged and hostile input.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zstd.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "index/chunk_reader.h"
#include "index/coding.h"
#include "index/flat_index.h"
#include "index/layer_writer.h"
#include "index/readers.h"
#include "index/toc_util.h"
#include "index/zstd_chunked.h"
#include "tests/index/index_test_util.h"
#include "tests/testing/fake_blob_source.h"

namespace imagefs::index {
namespace zstd_chunked_test {
namespace {

using testing::FakeBlobSource;
namespace zc = zstd_chunked;
using Annotations = std::map<std::string, std::string>;
using Json = nlohmann::json;

constexpr uint64_t kChunk = 64 << 10;

std::string MustTempDir() {
  auto d = MakeTempDir("/tmp", "zstd-chunked-test-");
  EXPECT_TRUE(d.ok());
  return d.ok() ? *d : "/tmp";
}

struct Written {
  std::string blob;
  WrittenLayer layer;
};

Written WriteLayer(const std::string& tar_path, const LayerWriteOptions& options) {
  Written w;
  auto r = WriteZstdChunkedLayer(tar_path, [&](std::span<const uint8_t> b) {
    w.blob.append(reinterpret_cast<const char*>(b.data()), b.size());
    return Status::Ok();
  }, options);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (r.ok()) w.layer = *r;
  return w;
}

std::string Zstd(std::string_view data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

std::string Skippable(std::string_view payload) {
  std::string out(zc::kSkippableMagic.begin(), zc::kSkippableMagic.end());
  PutU32(out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

// The tree of `index` as text, one line per node with every attribute, link target and
// xattr, plus every regular file's bytes (hashed), read through ChunkReader.
std::string Describe(fetch::BlobSource& source, const LayerIndex& index) {
  std::string out;
  std::vector<std::pair<std::string, NodeId>> stack{{"", index.Root()}};
  while (!stack.empty()) {
    auto [path, id] = stack.back();
    stack.pop_back();
    auto attr = index.Attr(id);
    EXPECT_TRUE(attr.ok());
    if (!attr.ok()) return out;
    char line[512];
    std::snprintf(line, sizeof line,
                  "%s mode=%o uid=%u gid=%u size=%llu mtime=%lld.%09u nlink=%u rdev=%llu "
                  "wh=%d opq=%d lower=%d",
                  path.c_str(), attr->mode, attr->uid, attr->gid,
                  static_cast<unsigned long long>(attr->size),
                  static_cast<long long>(attr->mtime_sec), attr->mtime_nsec, attr->nlink,
                  static_cast<unsigned long long>(attr->rdev), attr->whiteout, attr->opaque,
                  attr->lower_hardlink);
    out += line;
    if (S_ISLNK(attr->mode) || attr->lower_hardlink) {
      auto target = index.ReadLink(id);
      out += " -> " + std::string(target.ok() ? *target : "?");
    }
    auto xattrs = index.Xattrs(id);
    if (xattrs.ok()) {
      std::map<std::string, std::string> sorted;
      for (const auto& x : *xattrs) sorted[std::string(x.name)] = std::string(x.value);
      for (const auto& [k, v] : sorted) out += " xattr:" + k + "=" + v;
    }
    if (S_ISREG(attr->mode) && !attr->whiteout && !attr->lower_hardlink) {
      std::string data(attr->size, '\0');
      auto n = ReadFile(source, index, id, 0,
                        std::span<uint8_t>(reinterpret_cast<uint8_t*>(data.data()), data.size()));
      EXPECT_TRUE(n.ok()) << path << ": " << n.status().message();
      if (n.ok()) data.resize(*n);
      out += " data=" + Digest::Sha256Of(data).hex().substr(0, 16) + "/" + std::to_string(data.size());
    }
    out += "\n";
    if (S_ISDIR(attr->mode)) {
      std::vector<std::pair<std::string, NodeId>> kids;
      EXPECT_TRUE(index.ForEachChild(id, [&](std::string_view name, NodeId child) {
                       kids.emplace_back(path + "/" + std::string(name), child);
                       return true;
                     }).ok());
      for (auto it = kids.rbegin(); it != kids.rend(); ++it) stack.push_back(*it);
    }
  }
  return out;
}

std::string DescribeTar(const std::string& tar) {
  FakeBlobSource source(tar, "input tar");
  auto index = internal::BuildTarIndex(source, "sha256:tar");
  EXPECT_TRUE(index.ok()) << index.status().message();
  return index.ok() ? Describe(source, **index) : "";
}

// The input: a tree with every entry kind, tarred by GNU tar (pax, xattrs, sorted).
class ZstdChunkedTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MustTempDir());
    const std::string src = *dir_ + "/src";
    auto w = [&](const std::string& rel, const std::string& data) {
      ASSERT_TRUE(WriteFileAtomic(src + "/" + rel, data).ok()) << rel;
    };
    for (const char* d : {"etc", "bin", "data/sub", "opaque", "dev", "odd"}) {
      ASSERT_TRUE(MakeDirs(src + "/" + d).ok());
    }
    const std::string long_dir = "data/" + std::string(110, 'L');
    ASSERT_TRUE(MakeDirs(src + "/" + long_dir).ok());
    w("data/empty", "");
    w("data/one", "x");
    w("data/below", test::RandomBytes(kChunk - 1, 1));
    w("data/exact", test::RandomBytes(kChunk, 2));
    w("data/above", test::RandomBytes(kChunk + 1, 3));
    w("data/multi", test::RandomBytes(kChunk * 3 + 500, 4) + test::TextBytes(kChunk / 2, 5));
    w("data/sub/text.txt", test::TextBytes(10000, 6));
    w(long_dir + "/deep.txt", "deep\n");
    w("etc/hostname", "imagefs\n");
    w("bin/busybox", test::TextBytes(5000, 7));
    ASSERT_EQ(::link((src + "/bin/busybox").c_str(), (src + "/bin/ls").c_str()), 0);
    ASSERT_EQ(::symlink("busybox", (src + "/bin/sh").c_str()), 0);
    ASSERT_EQ(::symlink("/etc/hostname", (src + "/etc/abs-link").c_str()), 0);
    w(".wh.gone", "");
    w("opaque/.wh..wh..opq", "");
    w("opaque/kept", "kept\n");
    w("odd/with space.txt", "space\n");
    w("odd/ünïcödé.txt", "unicode\n");
    w("odd/<&>\"quote\\.txt", "html\n");
    w("odd/tab\tname", "tab\n");
    w("xattr.txt", "with xattrs\n");
    ASSERT_EQ(::setxattr((src + "/xattr.txt").c_str(), "user.comment", "hello", 5, 0), 0);
    ASSERT_EQ(::setxattr((src + "/xattr.txt").c_str(), "user.bin", "\0\1\2", 3, 0), 0);
    ASSERT_EQ(::chown((src + "/etc/hostname").c_str(), 1234, 5678), 0);
    ASSERT_EQ(::mkfifo((src + "/dev/fifo").c_str(), 0600), 0);
    ASSERT_EQ(::mknod((src + "/dev/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    test::Sh("tar --format=pax --xattrs --xattrs-include='user.*' --sort=name --numeric-owner "
             "-C src -cf in.tar .",
             *dir_);
    tar_ = new std::string(test::ReadAllOf(*dir_ + "/in.tar"));
    tar_tree_ = new std::string(DescribeTar(*tar_));
  }

  static void TearDownTestSuite() { (void)RemoveAll(*dir_); }

  static std::string TarPath() { return *dir_ + "/in.tar"; }
  static LayerWriteOptions Options() {
    LayerWriteOptions o;
    o.chunk_size = kChunk;
    return o;
  }
  static const Written& Default() {
    static Written* w = new Written(WriteLayer(TarPath(), Options()));
    return *w;
  }

  static Result<std::unique_ptr<FlatLayerIndex>> Open(FakeBlobSource& source,
                                                      const Annotations& annotations) {
    return internal::TryOpenZstdChunked(source, annotations, "sha256:layer");
  }
  static std::string OpenAndDescribe(const std::string& blob, const Annotations& annotations) {
    FakeBlobSource source(blob, "zstd:chunked blob");
    auto index = Open(source, annotations);
    EXPECT_TRUE(index.ok()) << index.status().message();
    if (!index.ok()) return "";
    EXPECT_TRUE(*index != nullptr);
    if (*index == nullptr) return "";
    EXPECT_EQ((*index)->format(), LayerFormat::kZstdChunked);
    return Describe(source, **index);
  }

  static std::string* dir_;
  static std::string* tar_;
  static std::string* tar_tree_;
};
std::string* ZstdChunkedTest::dir_ = nullptr;
std::string* ZstdChunkedTest::tar_ = nullptr;
std::string* ZstdChunkedTest::tar_tree_ = nullptr;

TEST_F(ZstdChunkedTest, RoundTripGivesTheTarReadersTreeAndBytesViaAnnotations) {
  const Written& w = Default();
  EXPECT_EQ(w.layer.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
  EXPECT_EQ(w.layer.size, w.blob.size());
  EXPECT_EQ(w.layer.digest, Digest::Sha256Of(w.blob).String());
  ASSERT_EQ(w.layer.annotations.count(std::string(zc::kManifestChecksumKey)), 1u);
  ASSERT_EQ(w.layer.annotations.count(std::string(zc::kManifestPositionKey)), 1u);
  ASSERT_EQ(w.layer.annotations.count(std::string(zc::kTarSplitPositionKey)), 1u);
  ASSERT_FALSE(tar_tree_->empty());
  EXPECT_NE(tar_tree_->find("xattr:user.comment=hello"), std::string::npos);
  EXPECT_EQ(OpenAndDescribe(w.blob, w.layer.annotations), *tar_tree_);
}

TEST_F(ZstdChunkedTest, FooterPathWithoutAnnotationsGivesTheSameTree) {
  EXPECT_EQ(OpenAndDescribe(Default().blob, {}), *tar_tree_);
}

TEST_F(ZstdChunkedTest, OpenLayerIndexPicksZstdChunked) {
  FakeBlobSource source(Default().blob, "blob");
  auto index = OpenLayerIndex(source, "application/vnd.oci.image.layer.v1.tar+zstd",
                              "sha256:layer", nullptr);
  ASSERT_TRUE(index.ok()) << index.status().message();
  auto* flat = dynamic_cast<FlatLayerIndex*>(index->get());
  ASSERT_NE(flat, nullptr);
  EXPECT_EQ(flat->format(), LayerFormat::kZstdChunked);
}

TEST_F(ZstdChunkedTest, FilesAreChunkedAtChunkSizeAndReadAtBoundaries) {
  const Written& w = Default();
  FakeBlobSource source(w.blob, "blob");
  auto index = Open(source, w.layer.annotations);
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  const std::string src = *dir_ + "/src/";
  for (auto [name, want_chunks] :
       {std::pair{"data/one", 1u}, {"data/below", 1u}, {"data/exact", 1u}, {"data/above", 2u},
        {"data/multi", 4u}, {"data/empty", 0u}}) {
    SCOPED_TRACE(name);
    const std::string want = test::ReadAllOf(src + name);
    NodeId id = (*index)->Root();
    std::string_view rest = name;
    while (!rest.empty()) {
      size_t slash = rest.find('/');
      auto child = (*index)->Lookup(id, rest.substr(0, slash));
      ASSERT_TRUE(child.ok());
      id = *child;
      rest = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
    }
    auto chunks = (*index)->Chunks(id);
    ASSERT_EQ(chunks.size(), want_chunks);
    for (const ChunkRef& c : chunks) {
      EXPECT_EQ(c.codec, Codec::kZstd);
      EXPECT_TRUE(c.has_digest);
      EXPECT_TRUE(c.chunk_digest);
      EXPECT_LE(c.length, kChunk);
      for (uint64_t off : {c.file_offset, c.file_offset > 0 ? c.file_offset - 1 : 0,
                           c.file_offset + c.length - 1}) {
        std::string got(300, '\0');
        auto n = ReadFile(source, **index, id, off,
                          std::span<uint8_t>(reinterpret_cast<uint8_t*>(got.data()), got.size()));
        ASSERT_TRUE(n.ok()) << n.status().message();
        got.resize(*n);
        EXPECT_EQ(got, want.substr(off, 300)) << off;
      }
    }
  }
}

TEST_F(ZstdChunkedTest, OutputIsReproducible) {
  const Written& a = Default();
  Written b = WriteLayer(TarPath(), Options());
  EXPECT_EQ(a.blob, b.blob);
  EXPECT_EQ(a.layer.annotations, b.layer.annotations);
  LayerWriteOptions other = Options();
  other.chunk_size = kChunk / 2;
  EXPECT_NE(WriteLayer(TarPath(), other).blob, a.blob);
}

TEST_F(ZstdChunkedTest, DecompressesToTheInputTarAndDiffIdMatches) {
  const Written& w = Default();
  ASSERT_TRUE(WriteFileAtomic(*dir_ + "/out.zst", w.blob).ok());
  std::string plain = test::Sh("zstd -q -dc out.zst", *dir_);
  EXPECT_TRUE(plain == *tar_) << "without a prefetch profile the tar is unchanged";
  EXPECT_EQ(w.layer.diff_id, Digest::Sha256Of(plain).String());
  EXPECT_EQ(test::Sh("zstd -q -dc out.zst | tar -t", *dir_), test::Sh("tar -tf in.tar", *dir_));
}

TEST_F(ZstdChunkedTest, EachPayloadIsItsOwnFrame) {
  // Every chunk range decodes on its own, frame by frame.
  const Written& w = Default();
  FakeBlobSource source(w.blob, "blob");
  auto index = Open(source, w.layer.annotations);
  ASSERT_TRUE(index.ok() && *index);
  for (NodeId id = 0; id < (*index)->NodeCount(); ++id) {
    for (const ChunkRef& c : (*index)->Chunks(id)) {
      std::string_view frame = std::string_view(w.blob).substr(c.blob_offset, c.blob_length);
      size_t fsize = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
      ASSERT_FALSE(ZSTD_isError(fsize));
      EXPECT_EQ(fsize, c.blob_length) << "one frame per chunk";
      EXPECT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), c.length);
    }
  }
}

// The tar-split stream: segments and file entries that rebuild the tar exactly, with
// crc64 checksums, and a digest recorded in the TOC.
TEST_F(ZstdChunkedTest, TarSplitRebuildsTheTarAndIsNamedByTheToc) {
  const Written& w = Default();
  const std::string& pos = w.layer.annotations.at(std::string(zc::kTarSplitPositionKey));
  uint64_t off = 0, len = 0, ulen = 0;
  ASSERT_EQ(std::sscanf(pos.c_str(), "%lu:%lu:%lu", &off, &len, &ulen), 3);
  std::string compressed = w.blob.substr(off, len);
  std::string ts(ulen, '\0');
  ASSERT_EQ(ZSTD_decompress(ts.data(), ts.size(), compressed.data(), compressed.size()), ulen);
  std::string rebuilt;
  int position = 0;
  size_t start = 0;
  std::set<std::string> names;
  while (start < ts.size()) {
    size_t nl = ts.find('\n', start);
    ASSERT_NE(nl, std::string::npos);
    Json e = Json::parse(ts.substr(start, nl - start), nullptr, false);
    start = nl + 1;
    ASSERT_FALSE(e.is_discarded());
    EXPECT_EQ(e["position"], position++);
    if (e["type"] == 2) {
      auto payload = internal::Base64DecodeStrict(e["payload"].get<std::string>());
      ASSERT_TRUE(payload.ok());
      rebuilt += *payload;
    } else {
      ASSERT_EQ(e["type"], 1);
      names.insert(e["name"].get<std::string>());
      uint64_t size = e.value("size", uint64_t{0});
      std::string data = tar_->substr(rebuilt.size(), size);
      if (size > 0) {
        auto crc = internal::Base64DecodeStrict(e["payload"].get<std::string>());
        ASSERT_TRUE(crc.ok());
        uint64_t want = zc::Crc64Iso(0, data);
        std::string be;
        for (int i = 7; i >= 0; --i) be.push_back(static_cast<char>(want >> (8 * i)));
        EXPECT_EQ(*crc, be);
      } else {
        EXPECT_TRUE(e["payload"].is_null());
      }
      rebuilt += data;
    }
  }
  EXPECT_TRUE(rebuilt == *tar_);
  EXPECT_TRUE(names.count("./bin/busybox"));

  // The TOC names the tar-split by the digest of its compressed bytes.
  const std::string& mpos = w.layer.annotations.at(std::string(zc::kManifestPositionKey));
  uint64_t moff, mlen, mulen, mtype;
  ASSERT_EQ(std::sscanf(mpos.c_str(), "%lu:%lu:%lu:%lu", &moff, &mlen, &mulen, &mtype), 4);
  std::string toc(mulen, '\0');
  ASSERT_EQ(ZSTD_decompress(toc.data(), toc.size(), w.blob.data() + moff, mlen), mulen);
  Json j = Json::parse(toc, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["tarSplitDigest"], Digest::Sha256Of(compressed).String());
  EXPECT_EQ(w.layer.annotations.at(std::string(zc::kManifestChecksumKey)),
            Digest::Sha256Of(std::string_view(w.blob).substr(moff, mlen)).String());
  // Every TOC name (other than chunks) appears in the tar-split, and vice versa.
  std::set<std::string> toc_names;
  for (const Json& e : j["entries"]) {
    if (e["type"] != "chunk") toc_names.insert(e["name"].get<std::string>());
  }
  EXPECT_EQ(toc_names, names);
}

// Replaces the 64-byte footer frame by another layout.
std::string WithFooter(const std::string& blob, const std::string& footer) {
  return blob.substr(0, blob.size() - 72) + Skippable(footer);
}

zc::Footer FooterOf(const Written& w) {
  std::string_view f = std::string_view(w.blob).substr(w.blob.size() - 64);
  Decoder dec(f);
  zc::Footer out;
  EXPECT_TRUE(dec.GetU64(out.manifest_offset) && dec.GetU64(out.manifest_length) &&
              dec.GetU64(out.manifest_uncompressed) && dec.GetU64(out.manifest_type));
  return out;
}

TEST_F(ZstdChunkedTest, ParsesTheFortyFiftySixAndSixtyFourByteFooters) {
  const Written& w = Default();
  zc::Footer f = FooterOf(w);
  std::string head;
  for (uint64_t v : {f.manifest_offset, f.manifest_length, f.manifest_uncompressed, uint64_t{1}}) {
    PutU64(head, v);
  }
  // 40 bytes (containers/storage < 1.47, skopeo 1.9): four u64 and "GnUlInUx".
  std::string f40 = head + std::string(zc::kMagicOld);
  EXPECT_EQ(OpenAndDescribe(WithFooter(w.blob, f40), {}), *tar_tree_);
  // 56 bytes as 1.47-1.49 wrote it: the 40-byte layout and 16 zero bytes.
  std::string f56 = head + std::string(zc::kMagicOld) + std::string(16, '\0');
  EXPECT_EQ(OpenAndDescribe(WithFooter(w.blob, f56), {}), *tar_tree_);
  // 56 bytes as that version's reader expected it: magic in the last 8 bytes.
  std::string f56b = head + std::string(16, '\0') + std::string(zc::kMagicOld);
  EXPECT_EQ(OpenAndDescribe(WithFooter(w.blob, f56b), {}), *tar_tree_);
  // 64 bytes: what the writer produces.
  EXPECT_EQ(w.blob.substr(w.blob.size() - 8), zc::kMagic);
  EXPECT_EQ(OpenAndDescribe(w.blob, {}), *tar_tree_);
}

TEST_F(ZstdChunkedTest, PrefetchFilesComeFirstAndTheBoundaryIsRecorded) {
  LayerWriteOptions o = Options();
  o.prefetch_paths = {"/data/sub/text.txt", "etc/hostname", "nope", "data/multi"};
  Written w = WriteLayer(TarPath(), o);
  ASSERT_TRUE(WriteFileAtomic(*dir_ + "/prefetch.zst", w.blob).ok());
  std::string listing = test::Sh("zstd -q -dc prefetch.zst | tar -t | head -7", *dir_);
  EXPECT_EQ(listing,
            "./\n./data/\n./data/sub/\n./data/sub/text.txt\n./etc/\n./etc/hostname\n"
            "./data/multi\n")
      << "each prefetched file after its parent directories";
  EXPECT_EQ(OpenAndDescribe(w.blob, w.layer.annotations), *tar_tree_);

  const std::string& mpos = w.layer.annotations.at(std::string(zc::kManifestPositionKey));
  uint64_t moff, mlen, mulen, mtype;
  ASSERT_EQ(std::sscanf(mpos.c_str(), "%lu:%lu:%lu:%lu", &moff, &mlen, &mulen, &mtype), 4);
  std::string toc(mulen, '\0');
  ASSERT_EQ(ZSTD_decompress(toc.data(), toc.size(), w.blob.data() + moff, mlen), mulen);
  Json j = Json::parse(toc, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j[std::string(zc::kPrefetchCountKey)], 7);
  uint64_t end = j[std::string(zc::kPrefetchEndKey)].get<uint64_t>();
  // The boundary is the end of data/multi's last frame: the prefetched files' data lies
  // before it, every other file's after.
  uint64_t max_before = 0;
  for (const Json& e : j["entries"]) {
    uint64_t off = e.value("offset", uint64_t{0});
    std::string name = e["name"];
    bool pre = name == "./data/sub/text.txt" || name == "./etc/hostname" || name == "./data/multi";
    if (off == 0) continue;
    if (pre) {
      EXPECT_LT(off, end) << name;
      max_before = std::max(max_before, e.value("endOffset", off));
    } else {
      EXPECT_GE(off, end) << name;
    }
  }
  EXPECT_LE(max_before, end);
  // The boundary is a frame boundary: what precedes it decodes on its own.
  size_t pos = 0;
  while (pos < end) {
    size_t n = ZSTD_findFrameCompressedSize(w.blob.data() + pos, end - pos);
    ASSERT_FALSE(ZSTD_isError(n)) << "a frame straddles the boundary at " << pos;
    pos += n;
  }
  EXPECT_EQ(pos, end);

  // The prefetch set's chunks are compressed at the highest level (a cold start waits for
  // them), the rest as before.
  auto compressed = [](const Written& layer) {
    const std::string& pos = layer.layer.annotations.at(std::string(zc::kManifestPositionKey));
    uint64_t off, len, ulen, type;
    EXPECT_EQ(std::sscanf(pos.c_str(), "%lu:%lu:%lu:%lu", &off, &len, &ulen, &type), 4);
    std::string text(ulen, '\0');
    EXPECT_EQ(ZSTD_decompress(text.data(), text.size(), layer.blob.data() + off, len), ulen);
    std::map<std::string, uint64_t> bytes;  // name -> compressed bytes of its chunks
    const Json toc = Json::parse(text);
    for (const Json& e : toc["entries"]) {
      const uint64_t begin = e.value("offset", uint64_t{0});
      const uint64_t end = e.value("endOffset", uint64_t{0});
      if (begin == 0 || end <= begin) continue;
      bytes[e["name"].get<std::string>()] += end - begin;
    }
    return bytes;
  };
  const auto plain = compressed(Default());
  const auto profiled = compressed(w);
  EXPECT_LT(profiled.at("./data/multi"), plain.at("./data/multi"));
  for (const auto& [name, size] : plain) {
    const bool pre = name == "./data/sub/text.txt" || name == "./etc/hostname" || name == "./data/multi";
    if (!pre) {
      EXPECT_EQ(profiled.at(name), size) << name;
    }
  }
}

// ---------------------------------------------------------------------------------------
// A layer written by Debian's skopeo 1.9 (containers/storage 1.4x: 40-byte footer,
// io.containers.* annotations, rolling-checksum chunks, no tar-split).

TEST_F(ZstdChunkedTest, ReadsALayerWrittenBySkopeo) {
  if (test::Sh("command -v skopeo || true").empty()) GTEST_SKIP() << "skopeo is not installed";
  const std::string d = *dir_ + "/skopeo";
  ASSERT_TRUE(MakeDirs(d + "/oci/blobs/sha256").ok());
  // A gzip layer of the same tree, in a one-image OCI layout.
  std::string tgz = test::Sh("gzip -n -c " + TarPath());
  std::string layer_digest = Digest::Sha256Of(tgz).hex();
  std::string diff_id = Digest::Sha256Of(*tar_).String();
  auto put = [&](const std::string& bytes) {
    std::string hex = Digest::Sha256Of(bytes).hex();
    EXPECT_TRUE(WriteFileAtomic(d + "/oci/blobs/sha256/" + hex, bytes).ok());
    return hex;
  };
  put(tgz);
  Json config = {{"architecture", "amd64"},
                 {"os", "linux"},
                 {"rootfs", {{"type", "layers"}, {"diff_ids", {diff_id}}}},
                 {"config", Json::object()}};
  std::string config_bytes = config.dump();
  std::string config_hex = put(config_bytes);
  Json manifest = {
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
      {"config",
       {{"mediaType", "application/vnd.oci.image.config.v1+json"},
        {"digest", "sha256:" + config_hex},
        {"size", config_bytes.size()}}},
      {"layers",
       {{{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
         {"digest", "sha256:" + layer_digest},
         {"size", tgz.size()}}}}};
  std::string manifest_bytes = manifest.dump();
  std::string manifest_hex = put(manifest_bytes);
  Json index = {{"schemaVersion", 2},
                {"manifests",
                 {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"digest", "sha256:" + manifest_hex},
                   {"size", manifest_bytes.size()},
                   {"annotations", {{"org.opencontainers.image.ref.name", "t"}}}}}}};
  ASSERT_TRUE(WriteFileAtomic(d + "/oci/index.json", index.dump()).ok());
  ASSERT_TRUE(WriteFileAtomic(d + "/oci/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}").ok());
  test::Sh("skopeo --insecure-policy copy -q --dest-compress --dest-compress-format zstd:chunked "
           "oci:oci:t dir:out",
           d);

  Json out = Json::parse(test::ReadAllOf(d + "/out/manifest.json"), nullptr, false);
  ASSERT_FALSE(out.is_discarded());
  const Json& desc = out["layers"][0];
  EXPECT_EQ(desc["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
  Annotations annotations;
  for (auto it = desc["annotations"].begin(); it != desc["annotations"].end(); ++it) {
    annotations[it.key()] = it.value().get<std::string>();
  }
  ASSERT_TRUE(annotations.count(std::string(zc::kOldManifestPositionKey)) ||
              annotations.count(std::string(zc::kManifestPositionKey)));
  std::string digest = desc["digest"];
  std::string blob = test::ReadAllOf(d + "/out/" + digest.substr(7));
  ASSERT_FALSE(blob.empty());

  // skopeo re-serializes the tar (its own headers, no PAX): compare with the tar reader
  // over skopeo's own decompressed stream.
  ASSERT_TRUE(WriteFileAtomic(d + "/skopeo.zst", blob).ok());
  std::string plain = test::Sh("zstd -q -dc skopeo.zst", d);
  std::string want = DescribeTar(plain);
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(OpenAndDescribe(blob, annotations), want);
  EXPECT_EQ(OpenAndDescribe(blob, {}), want);
  // The big file was cut into several rolling-checksum chunks.
  FakeBlobSource source(blob, "skopeo blob");
  auto idx = Open(source, annotations);
  ASSERT_TRUE(idx.ok() && *idx);
  auto data = (*idx)->Lookup((*idx)->Root(), "data");
  ASSERT_TRUE(data.ok());
  auto multi = (*idx)->Lookup(*data, "multi");
  ASSERT_TRUE(multi.ok());
  EXPECT_GE((*idx)->Chunks(*multi).size(), 2u);
}

// ---------------------------------------------------------------------------------------
// Damaged and hostile input

// A blob: `prefix` (zstd frames), then the TOC and a 64-byte footer.
struct Custom {
  std::string blob;
  Annotations annotations;
};
Custom MakeCustom(const std::string& prefix, const std::string& toc_json) {
  Custom c;
  c.blob = prefix;
  std::string toc_z = Zstd(toc_json);
  zc::Footer f;
  f.manifest_offset = c.blob.size() + 8;
  f.manifest_length = toc_z.size();
  f.manifest_uncompressed = toc_json.size();
  f.manifest_type = 1;
  c.blob += Skippable(toc_z);
  c.blob += Skippable(zc::EncodeFooter64(f));
  c.annotations[std::string(zc::kManifestChecksumKey)] = Digest::Sha256Of(toc_z).String();
  c.annotations[std::string(zc::kManifestPositionKey)] =
      std::to_string(f.manifest_offset) + ":" + std::to_string(f.manifest_length) + ":" +
      std::to_string(f.manifest_uncompressed) + ":1";
  return c;
}

void ExpectCorruption(const std::string& blob, const Annotations& annotations,
                      const std::string& what) {
  SCOPED_TRACE(what);
  FakeBlobSource source(blob, "bad blob");
  auto index = internal::TryOpenZstdChunked(source, annotations, "sha256:badlayer");
  ASSERT_FALSE(index.ok()) << "opened";
  EXPECT_EQ(index.status().code(), Code::kCorruption) << index.status().message();
  EXPECT_NE(index.status().message().find("sha256:badlayer"), std::string::npos)
      << index.status().message();
}

TEST_F(ZstdChunkedTest, CustomTocWithOneFileReads) {
  std::string data = "hello world\n";
  std::string frame = Zstd(data);
  std::string prefix = Zstd(std::string(512, '\0'));  // stands in for the header frame
  uint64_t off = prefix.size();
  prefix += frame;
  std::string toc = "{\"version\":1,\"entries\":[{\"type\":\"reg\",\"name\":\"a/b\",\"mode\":420,"
                    "\"size\":12,\"modtime\":\"2024-01-02T03:04:05.5+01:00\",\"digest\":\"" +
                    Digest::Sha256Of(data).String() + "\",\"offset\":" + std::to_string(off) +
                    ",\"endOffset\":" + std::to_string(off + frame.size()) + "}]}";
  Custom c = MakeCustom(prefix, toc);
  FakeBlobSource source(c.blob, "custom");
  auto index = internal::TryOpenZstdChunked(source, c.annotations, "sha256:x");
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  auto a = (*index)->Lookup(0, "a");
  ASSERT_TRUE(a.ok());
  auto b = (*index)->Lookup(*a, "b");
  ASSERT_TRUE(b.ok());
  auto attr = (*index)->Attr(*b);
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->mtime_sec, 1704161045);
  EXPECT_EQ(attr->mtime_nsec, 500000000u);
  std::string got(20, '\0');
  auto n = ReadFile(source, **index, *b, 0,
                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(got.data()), got.size()));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(got.substr(0, *n), data);
}

TEST_F(ZstdChunkedTest, HostileTocsAreCorruption) {
  std::string data = "hello world\n";
  std::string frame = Zstd(data);
  std::string prefix = Zstd(std::string(512, '\0'));
  uint64_t off = prefix.size();
  prefix += frame;
  const std::string digest = Digest::Sha256Of(data).String();
  auto reg = [&](const std::string& name, uint64_t o, uint64_t end, uint64_t size) {
    return "{\"type\":\"reg\",\"name\":\"" + name + "\",\"size\":" + std::to_string(size) +
           ",\"digest\":\"" + digest + "\",\"offset\":" + std::to_string(o) +
           ",\"endOffset\":" + std::to_string(end) + "}";
  };
  auto toc = [](const std::string& entries) {
    return "{\"version\":1,\"entries\":[" + entries + "]}";
  };
  const uint64_t end = off + frame.size();
  for (auto [what, json] : std::vector<std::pair<std::string, std::string>>{
           {"dotdot name", toc(reg("../etc/passwd", off, end, 12))},
           {"dotdot inside", toc(reg("a/../../b", off, end, 12))},
           {"hardlink escape", toc("{\"type\":\"hardlink\",\"name\":\"x\",\"linkName\":\"../../y\"}")},
           {"range past blob", toc(reg("a", off, 1 << 30, 12))},
           {"offset past blob", toc(reg("a", uint64_t{1} << 40, (uint64_t{1} << 40) + 10, 12))},
           {"empty range", toc(reg("a", off, off, 12))},
           {"absurd size", toc(reg("a", off, end, uint64_t{1} << 40))},
           {"negative size", toc(reg("a", off, end, 0) + ",{\"type\":\"reg\",\"name\":\"b\",\"size\":-1}")},
           {"no digest", toc("{\"type\":\"reg\",\"name\":\"a\",\"size\":12,\"offset\":" +
                             std::to_string(off) + ",\"endOffset\":" + std::to_string(end) + "}")},
           {"bad chunk offsets", toc("{\"type\":\"reg\",\"name\":\"a\",\"size\":12,\"offset\":" +
                                     std::to_string(off) + ",\"chunkSize\":6,\"chunkDigest\":\"" +
                                     digest + "\"},{\"type\":\"chunk\",\"name\":\"a\",\"offset\":" +
                                     std::to_string(off) + ",\"chunkOffset\":7,\"chunkSize\":5,"
                                     "\"chunkDigest\":\"" + digest + "\"}")},
           {"orphan chunk", toc("{\"type\":\"chunk\",\"name\":\"a\"}")},
           {"unknown type", toc("{\"type\":\"sock\",\"name\":\"a\"}")},
           {"wrong field type", toc("{\"type\":\"dir\",\"name\":\"a\",\"mode\":\"755\"}")},
           {"bad time", toc("{\"type\":\"dir\",\"name\":\"a\",\"modtime\":\"yesterday\"}")},
           {"bad xattr", toc("{\"type\":\"dir\",\"name\":\"a\",\"xattrs\":{\"user.x\":\"!!\"}}")},
           {"not json", "{\"version\":1,\"entries\":[{"},
           {"not an object", "[1,2,3]"},
           {"entries not array", "{\"version\":1,\"entries\":5}"},
       }) {
    Custom c = MakeCustom(prefix, json);
    ExpectCorruption(c.blob, c.annotations, what + " (annotations)");
    ExpectCorruption(c.blob, {}, what + " (footer)");
  }
}

TEST_F(ZstdChunkedTest, DamagedFootersAndAnnotationsAreCorruption) {
  const Written& w = Default();
  // Checksum annotation that does not match the TOC.
  Annotations wrong = w.layer.annotations;
  wrong[std::string(zc::kManifestChecksumKey)] = Digest::Sha256Of("other").String();
  ExpectCorruption(w.blob, wrong, "checksum mismatch");
  // Position annotation without its checksum, malformed, outside the blob, wrong type.
  Annotations no_sum = w.layer.annotations;
  no_sum.erase(std::string(zc::kManifestChecksumKey));
  ExpectCorruption(w.blob, no_sum, "position without checksum");
  for (const char* bad : {"1:2:3", "a:b:c:d", "1:2:3:4:5", "99999999999:10:10:1", "100:0:10:1"}) {
    Annotations a = w.layer.annotations;
    a[std::string(zc::kManifestPositionKey)] = bad;
    ExpectCorruption(w.blob, a, std::string("position ") + bad);
  }
  zc::Footer f = FooterOf(w);
  {
    Annotations a = w.layer.annotations;
    a[std::string(zc::kManifestPositionKey)] = std::to_string(f.manifest_offset) + ":" +
                                               std::to_string(f.manifest_length) + ":" +
                                               std::to_string(f.manifest_uncompressed) + ":2";
    ExpectCorruption(w.blob, a, "manifest type 2");
  }
  // Truncated inside the TOC: the annotation points past the end.
  ExpectCorruption(w.blob.substr(0, f.manifest_offset + 10), w.layer.annotations,
                   "truncated blob with annotations");
  // Garbage footer fields / magic.
  {
    std::string b = w.blob;
    b[b.size() - 64] ^= 0x55;  // manifest offset
    b[b.size() - 60] ^= 0x55;
    ExpectCorruption(b, {}, "garbage footer offset");
  }
  {
    std::string b = w.blob;
    b[b.size() - 3] ^= 0x20;  // magic
    ExpectCorruption(b, {}, "garbage magic");
  }
  {
    std::string b = w.blob;
    b[b.size() - 72] = 0;  // the footer frame's skippable magic
    ExpectCorruption(b, {}, "footer without its frame");
  }
  {
    std::string b = w.blob;
    b[b.size() - 64 + 16] ^= 0x01;  // uncompressed length
    ExpectCorruption(b, {}, "wrong TOC length");
  }
}

TEST_F(ZstdChunkedTest, TruncatedBlobWithoutAnnotationsIsNotZstdChunked) {
  // The footer is gone, so nothing says this is zstd:chunked: the plain zstd reader takes it.
  const Written& w = Default();
  FakeBlobSource source(w.blob.substr(0, w.blob.size() - 30), "truncated");
  auto index = internal::TryOpenZstdChunked(source, {}, "sha256:t");
  ASSERT_TRUE(index.ok()) << index.status().message();
  EXPECT_EQ(*index, nullptr);
}

TEST_F(ZstdChunkedTest, PlainZstdTarIsNotZstdChunked) {
  std::string blob = test::Sh("zstd -q -3 -c in.tar", *dir_);
  FakeBlobSource source(blob, "plain zstd");
  auto index = internal::TryOpenZstdChunked(source, {}, "sha256:plain");
  ASSERT_TRUE(index.ok()) << index.status().message();
  EXPECT_EQ(*index, nullptr);
  FakeBlobSource empty("", "empty");
  auto none = internal::TryOpenZstdChunked(empty, {}, "sha256:empty");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
}

TEST_F(ZstdChunkedTest, FlippedByteInAFrameFailsTheReadWithoutBytes) {
  const Written& w = Default();
  FakeBlobSource source(w.blob, "blob");
  auto index = Open(source, w.layer.annotations);
  ASSERT_TRUE(index.ok() && *index);
  auto data = (*index)->Lookup(0, "data");
  ASSERT_TRUE(data.ok());
  auto multi = (*index)->Lookup(*data, "multi");
  ASSERT_TRUE(multi.ok());
  auto chunks = (*index)->Chunks(*multi);
  ASSERT_GE(chunks.size(), 2u);
  const ChunkRef c = chunks[1];
  source.FlipByte(c.blob_offset + c.blob_length / 2, 0x01);
  std::string got(100, 'z');
  auto n = ReadFile(source, **index, *multi, c.file_offset + 10,
                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(got.data()), got.size()));
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kCorruption) << n.status().message();
  EXPECT_EQ(got, std::string(100, 'z')) << "no unverified bytes reach the caller";
  // The first chunk is untouched and still reads.
  auto first = ReadFile(source, **index, *multi, 0,
                        std::span<uint8_t>(reinterpret_cast<uint8_t*>(got.data()), 10));
  EXPECT_TRUE(first.ok());
}

TEST_F(ZstdChunkedTest, WriterRejectsWhatTheFormatCannotHold) {
  // Duplicate paths (tar-split refuses them) and path escapes.
  std::string tar = test::TarFile("a", "1") + test::TarFile("./a", "2") + test::EndOfArchive();
  ASSERT_TRUE(WriteFileAtomic(*dir_ + "/dup.tar", tar).ok());
  auto r = WriteZstdChunkedLayer(*dir_ + "/dup.tar", [](std::span<const uint8_t>) {
    return Status::Ok();
  }, Options());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("dup.tar"), std::string::npos) << r.status().message();

  std::string esc = test::TarFile("../evil", "1") + test::EndOfArchive();
  ASSERT_TRUE(WriteFileAtomic(*dir_ + "/esc.tar", esc).ok());
  auto e = WriteZstdChunkedLayer(*dir_ + "/esc.tar", [](std::span<const uint8_t>) {
    return Status::Ok();
  }, Options());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), Code::kCorruption) << e.status().message();
}

TEST_F(ZstdChunkedTest, WriterRefusesGlobalPaxHeaders) {
  test::Sh("tar --format=pax --pax-option=comment=global -C src -cf global.tar etc", *dir_);
  auto r = WriteZstdChunkedLayer(*dir_ + "/global.tar", [](std::span<const uint8_t>) {
    return Status::Ok();
  }, Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported) << r.status().message();
}

TEST_F(ZstdChunkedTest, PrefetchedHardLinkBringsItsTargetFirst) {
  LayerWriteOptions o = Options();
  o.prefetch_paths = {"bin/ls"};
  Written w = WriteLayer(TarPath(), o);
  ASSERT_TRUE(WriteFileAtomic(*dir_ + "/prefetch-link.zst", w.blob).ok());
  EXPECT_EQ(test::Sh("zstd -q -dc prefetch-link.zst | tar -t | head -4", *dir_),
            "./\n./bin/\n./bin/busybox\n./bin/ls\n");
  EXPECT_EQ(OpenAndDescribe(w.blob, w.layer.annotations), *tar_tree_);
}

TEST_F(ZstdChunkedTest, EmptyTarRoundTrips) {
  ASSERT_TRUE(WriteFileAtomic(*dir_ + "/empty.tar", test::EndOfArchive()).ok());
  Written w = WriteLayer(*dir_ + "/empty.tar", Options());
  ASSERT_FALSE(w.blob.empty());
  EXPECT_EQ(OpenAndDescribe(w.blob, w.layer.annotations), DescribeTar(test::EndOfArchive()));
  EXPECT_EQ(OpenAndDescribe(w.blob, {}), DescribeTar(test::EndOfArchive()));
}

// Random damage to the TOC (re-signed, so it gets past the checksum) and to the blob's
// tail never crashes the reader: it opens or reports corruption.
TEST_F(ZstdChunkedTest, MutatedTocsAndTailsNeverCrash) {
  const Written& w = Default();
  zc::Footer f = FooterOf(w);
  std::string toc(f.manifest_uncompressed, '\0');
  ASSERT_EQ(ZSTD_decompress(toc.data(), toc.size(), w.blob.data() + f.manifest_offset,
                            f.manifest_length),
            toc.size());
  const std::string data = w.blob.substr(0, f.manifest_offset - 8);
  std::mt19937_64 rng(42);
  int opened = 0;
  for (int round = 0; round < 300; ++round) {
    std::string m = toc;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      size_t at = rng() % m.size();
      switch (rng() % 3) {
        case 0: m[at] = static_cast<char>(rng()); break;
        case 1: m.erase(at, 1 + rng() % 8); break;
        case 2: m.insert(at, std::string(1, "0123456789{}[]\",:-."[rng() % 16])); break;
      }
      if (m.empty()) m = "{";
    }
    Custom c = MakeCustom(data, m);
    for (const Annotations& a : {c.annotations, Annotations{}}) {
      FakeBlobSource source(c.blob, "mutated");
      auto index = internal::TryOpenZstdChunked(source, a, "sha256:m");
      if (index.ok()) {
        ASSERT_NE(*index, nullptr);
        ++opened;
        for (NodeId id = 0; id < (*index)->NodeCount(); ++id) {  // may fail, must not crash
          auto attr = (*index)->Attr(id);
          if (!attr.ok() || !S_ISREG(attr->mode)) continue;
          std::string buf(std::min<uint64_t>(attr->size, 1 << 20), '\0');
          (void)ReadFile(source, **index, id, 0,
                         std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), buf.size()));
        }
      } else {
        EXPECT_EQ(index.status().code(), Code::kCorruption) << index.status().message();
      }
    }
  }
  for (int round = 0; round < 200; ++round) {
    std::string b = w.blob;
    size_t at = b.size() - 1 - rng() % 100;
    b[at] = static_cast<char>(rng());
    FakeBlobSource source(b, "mutated tail");
    auto index = internal::TryOpenZstdChunked(source, {}, "sha256:m");
    if (!index.ok()) {
      EXPECT_EQ(index.status().code(), Code::kCorruption);
    }
  }
  EXPECT_GT(opened, 0);
}

// The time, base64 and UTF-8 codecs are shared with eStargz: tests/index/toc_util_test.cc.
TEST(ZstdChunkedCodecTest, Crc64MatchesGo) {
  // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ISO)) = 0xb90956c775a41001
  EXPECT_EQ(zc::Crc64Iso(0, "123456789"), 0xb90956c775a41001ULL);
  EXPECT_EQ(zc::Crc64Iso(zc::Crc64Iso(0, "1234"), "56789"), 0xb90956c775a41001ULL);
}

// The 8-bytes-at-a-time loop against the plain bitwise definition, for every length up to
// 80 (tails and whole words) and split points that leave the words unaligned.
TEST(ZstdChunkedCodecTest, Crc64EqualsTheBitwiseDefinitionAtEveryLengthAndSplit) {
  auto bitwise = [](std::string_view data) {
    uint64_t crc = ~uint64_t{0};
    for (unsigned char ch : data) {
      crc ^= ch;
      for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0xD800000000000000ULL : crc >> 1;
    }
    return ~crc;
  };
  const std::string data = test::RandomBytes(4096 + 13, 7);
  for (size_t len = 0; len <= 80; ++len) {
    const std::string_view piece(data.data() + 3, len);
    const uint64_t want = bitwise(piece);
    EXPECT_EQ(zc::Crc64Iso(0, piece), want) << len;
    for (size_t split = 0; split <= len; split += 5) {
      EXPECT_EQ(zc::Crc64Iso(zc::Crc64Iso(0, piece.substr(0, split)), piece.substr(split)), want)
          << len << " " << split;
    }
  }
  EXPECT_EQ(zc::Crc64Iso(0, data), bitwise(data));
}

}  // namespace
}  // namespace zstd_chunked_test
}  // namespace imagefs::index
