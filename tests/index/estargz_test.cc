// eStargz: WriteEstargzLayer and TryOpenEstargz. A tar made by GNU tar, rewritten as
// eStargz, must give the same tree and the same bytes as the plain tar reader; damaged
// footers, TOCs and chunks must be errors (never crashes, never unverified bytes).

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "index/chunk_reader.h"
#include "index/estargz.h"
#include "index/flat_index.h"
#include "index/layer_writer.h"
#include "index/readers.h"
#include "tests/index/index_test_util.h"
#include "tests/testing/fake_blob_source.h"

namespace imagefs::index {
namespace estargz_test {
namespace {

using json = nlohmann::json;
using testing::FakeBlobSource;

constexpr uint64_t kChunk = 64 << 10;  // small chunks keep the fixtures small
const std::string kLongDir(120, 'd');

// The source tree, its tar, and the eStargz layer written from it, built once.
class Fixture {
 public:
  static Fixture& Get() {
    static Fixture* f = new Fixture();
    return *f;
  }
  const std::string& dir() const { return dir_; }
  const std::string& src() const { return src_; }
  std::string tar_path() const { return dir_ + "/in.tar"; }
  const std::string& tar() const { return tar_; }
  const std::string& blob() const { return blob_; }
  const WrittenLayer& layer() const { return layer_; }

  static Result<WrittenLayer> Write(const std::string& tar_path, std::string& out,
                                    LayerWriteOptions options = {}) {
    if (options.chunk_size == (4 << 20)) options.chunk_size = kChunk;
    out.clear();
    return WriteEstargzLayer(
        tar_path,
        [&](std::span<const uint8_t> bytes) {
          out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
          return Status::Ok();
        },
        options);
  }

 private:
  Fixture() {
    auto d = MakeTempDir("/tmp", "estargz-test-");
    EXPECT_TRUE(d.ok());
    dir_ = *d;
    static std::string cleanup = dir_;
    std::atexit([] { (void)RemoveAll(cleanup); });
    src_ = dir_ + "/src";
    auto w = [&](const std::string& rel, const std::string& data) {
      EXPECT_TRUE(WriteFileAtomic(src_ + "/" + rel, data).ok()) << rel;
    };
    for (const char* sub : {"etc", "bin", "usr/share", "opaque", "dev", "odd"}) {
      EXPECT_TRUE(MakeDirs(src_ + "/" + sub).ok());
    }
    EXPECT_TRUE(MakeDirs(src_ + "/usr/lib/" + kLongDir).ok());
    w("empty", "");
    w("one", "x");
    w("etc/below", test::TextBytes(kChunk - 1, 1));
    w("etc/exact", test::TextBytes(kChunk, 2));
    w("etc/above", test::RandomBytes(kChunk + 1, 3));
    w("usr/share/big.bin", test::RandomBytes(2 * kChunk + 100, 4) + test::TextBytes(kChunk + 7, 5));
    w("bin/busybox", test::TextBytes(3000, 6));
    EXPECT_EQ(::link((src_ + "/bin/busybox").c_str(), (src_ + "/bin/ls").c_str()), 0);
    EXPECT_EQ(::symlink("busybox", (src_ + "/bin/sh").c_str()), 0);
    w(".wh.removed", "");
    w("opaque/.wh..wh..opq", "");
    w("opaque/keep.txt", "kept\n");
    w("usr/lib/" + kLongDir + "/" + std::string(110, 'f'), "deep\n");
    w("odd/sp ace", "space\n");
    w("odd/\xc3\xbcnicode-\xe2\x98\x83", "snow\n");
    w("odd/quote'\"&<>", "q\n");
    w("xattr.txt", "with xattrs\n");
    EXPECT_EQ(::setxattr((src_ + "/xattr.txt").c_str(), "user.comment", "hello", 5, 0), 0);
    EXPECT_EQ(::setxattr((src_ + "/xattr.txt").c_str(), "user.bin", "\0\1\2\xff", 4, 0), 0);
    EXPECT_EQ(::chown((src_ + "/etc/below").c_str(), 1234, 5678), 0);
    EXPECT_EQ(::chmod((src_ + "/one").c_str(), 04755), 0);
    EXPECT_EQ(::mkfifo((src_ + "/fifo").c_str(), 0600), 0);
    EXPECT_EQ(::mknod((src_ + "/dev/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    test::Sh("tar --format=pax --xattrs --xattrs-include='user.*' --sort=name --numeric-owner "
             "-C src -cf in.tar .",
             dir_);
    tar_ = test::ReadAllOf(tar_path());
    auto written = Write(tar_path(), blob_);
    EXPECT_TRUE(written.ok()) << written.status().message();
    if (written.ok()) layer_ = *written;
  }

  std::string dir_;
  std::string src_;
  std::string tar_;
  std::string blob_;
  WrittenLayer layer_;
};

std::string TocDigest() {
  return Fixture::Get().layer().annotations.at(std::string(estargz::kTocDigestAnnotation));
}

Result<std::unique_ptr<FlatLayerIndex>> Open(const std::string& blob,
                                            std::map<std::string, std::string> annotations = {}) {
  auto source = fetch::MakeMemoryBlobSource(blob, "test blob");
  return internal::TryOpenEstargz(*source, annotations, "sha256:test");
}

std::string ReadAllOfNode(fetch::BlobSource& source, const LayerIndex& index, NodeId id,
                          uint64_t size) {
  std::string out(size, '\0');
  auto n = ReadFile(source, index, id, 0,
                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()));
  EXPECT_TRUE(n.ok()) << n.status().message();
  out.resize(n.ok() ? *n : 0);
  return out;
}

// Walks both trees from the root: same names, attributes, targets, xattrs and bytes.
void ExpectSameTree(fetch::BlobSource& want_src, const LayerIndex& want,
                    fetch::BlobSource& got_src, const LayerIndex& got, int min_files = 10) {
  int files = 0;
  std::function<void(NodeId, NodeId, const std::string&)> walk = [&](NodeId w, NodeId g,
                                                                     const std::string& path) {
    SCOPED_TRACE("path \"" + path + "\"");
    auto wa = want.Attr(w);
    auto ga = got.Attr(g);
    ASSERT_TRUE(wa.ok() && ga.ok());
    EXPECT_EQ(wa->mode, ga->mode);
    EXPECT_EQ(wa->uid, ga->uid);
    EXPECT_EQ(wa->gid, ga->gid);
    EXPECT_EQ(wa->size, ga->size);
    EXPECT_EQ(wa->mtime_sec, ga->mtime_sec);
    EXPECT_EQ(wa->mtime_nsec, ga->mtime_nsec);
    EXPECT_EQ(wa->nlink, ga->nlink);
    EXPECT_EQ(wa->rdev, ga->rdev);
    EXPECT_EQ(wa->whiteout, ga->whiteout);
    EXPECT_EQ(wa->opaque, ga->opaque);
    EXPECT_EQ(wa->lower_hardlink, ga->lower_hardlink);
    EXPECT_EQ(wa->hardlink_group == kNoNode, ga->hardlink_group == kNoNode);
    auto wl = want.ReadLink(w);
    auto gl = got.ReadLink(g);
    EXPECT_EQ(wl.ok(), gl.ok());
    if (wl.ok() && gl.ok()) {
      EXPECT_EQ(*wl, *gl);
    }
    auto sorted_xattrs = [](const LayerIndex& index, NodeId id) {
      std::vector<std::pair<std::string, std::string>> out;
      auto x = index.Xattrs(id);
      EXPECT_TRUE(x.ok());
      if (x.ok()) {
        for (const XattrView& v : *x) out.emplace_back(v.name, v.value);
      }
      std::sort(out.begin(), out.end());
      return out;
    };
    EXPECT_EQ(sorted_xattrs(want, w), sorted_xattrs(got, g));
    if (S_ISREG(wa->mode) && !wa->whiteout) {
      ++files;
      EXPECT_EQ(ReadAllOfNode(want_src, want, w, wa->size), ReadAllOfNode(got_src, got, g, ga->size));
    }
    if (!S_ISDIR(wa->mode)) return;
    std::vector<std::pair<std::string, NodeId>> wc, gc;
    EXPECT_TRUE(want.ForEachChild(w, [&](std::string_view n, NodeId c) {
                      wc.emplace_back(n, c);
                      return true;
                    }).ok());
    EXPECT_TRUE(got.ForEachChild(g, [&](std::string_view n, NodeId c) {
                     gc.emplace_back(n, c);
                     return true;
                   }).ok());
    std::vector<std::string> wn, gn;
    for (auto& [n, c] : wc) wn.push_back(n);
    for (auto& [n, c] : gc) gn.push_back(n);
    ASSERT_EQ(wn, gn);
    for (size_t i = 0; i < wc.size(); ++i) {
      walk(wc[i].second, gc[i].second, path.empty() ? wc[i].first : path + "/" + wc[i].first);
    }
  };
  walk(want.Root(), got.Root(), "");
  EXPECT_GE(files, min_files);
}

Result<NodeId> Walk(const LayerIndex& index, const std::string& path) {
  NodeId id = index.Root();
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    ASSIGN_OR_RETURN(id, index.Lookup(id, path.substr(pos, slash - pos)));
    pos = slash + 1;
  }
  return id;
}

std::string Gzip(const std::string& data) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string Gunzip(const std::string& data) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 31), Z_OK);
  std::string out;
  std::string buf(1 << 16, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  for (;;) {
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    int ret = inflate(&zs, Z_NO_FLUSH);
    out.append(buf.data(), buf.size() - zs.avail_out);
    if (ret == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      inflateReset(&zs);
      continue;
    }
    if (ret != Z_OK) break;
  }
  inflateEnd(&zs);
  return out;
}

uint64_t TocOffsetOf(const std::string& blob) {
  auto f = estargz::ParseFooter(std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(blob.data()) + blob.size() - estargz::kFooterSize,
      estargz::kFooterSize));
  EXPECT_EQ(f.kind, estargz::FooterKind::kFooter);
  return f.toc_offset;
}

std::string TocTextOf(const std::string& blob) {
  uint64_t off = TocOffsetOf(blob);
  std::string tar = Gunzip(blob.substr(off, blob.size() - estargz::kFooterSize - off));
  auto entries = test::ScanTar(tar);
  EXPECT_TRUE(entries.ok());
  if (entries.ok()) {
    for (const TarEntry& e : *entries) {
      if (e.path == estargz::kTocTarName) return tar.substr(e.data_offset, e.size);
    }
  }
  ADD_FAILURE() << "no TOC";
  return "";
}

json TocOf(const std::string& blob) { return json::parse(TocTextOf(blob), nullptr, false); }

// The blob with its TOC replaced by `toc` (data members kept), and the digest of the new
// TOC JSON.
std::pair<std::string, std::string> WithToc(const std::string& blob, const json& toc) {
  uint64_t off = TocOffsetOf(blob);
  std::string text = toc.dump();
  test::HeaderSpec h;
  h.name = std::string(estargz::kTocTarName);
  h.size = text.size();
  std::string tar = test::TarHeader(h) + test::Padded(text) + test::EndOfArchive();
  std::string out = blob.substr(0, off) + Gzip(tar) + estargz::FooterBytes(off);
  return {out, Digest::Sha256Of(text).String()};
}

// Index of the first TOC entry named `name` (of type `type` when given).
size_t EntryIndex(const json& toc, const std::string& name, const std::string& type = "") {
  const json& entries = toc["entries"];
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i]["name"] == name && (type.empty() || entries[i]["type"] == type)) return i;
  }
  ADD_FAILURE() << "no TOC entry " << name;
  return 0;
}

TEST(EstargzWriterTest, RoundTripGivesTheTarReadersTreeAndBytes) {
  Fixture& fx = Fixture::Get();
  ASSERT_FALSE(fx.blob().empty());
  auto tar_source = fetch::MakeMemoryBlobSource(fx.tar(), "tar");
  auto tar_index = internal::BuildTarIndex(*tar_source, "sha256:tar");
  ASSERT_TRUE(tar_index.ok()) << tar_index.status().message();
  auto source = fetch::MakeMemoryBlobSource(fx.blob(), "estargz");
  auto index = internal::TryOpenEstargz(
      *source, {{std::string(estargz::kTocDigestAnnotation), TocDigest()}}, "sha256:estargz");
  ASSERT_TRUE(index.ok()) << index.status().message();
  ASSERT_TRUE(*index);
  EXPECT_EQ((*index)->format(), LayerFormat::kEstargz);
  ExpectSameTree(*tar_source, **tar_index, *source, **index);
  auto x = Walk(**index, "xattr.txt");
  ASSERT_TRUE(x.ok());
  auto xattrs = (*index)->Xattrs(*x);
  ASSERT_TRUE(xattrs.ok());
  EXPECT_EQ(xattrs->size(), 2u);
  // The format's own entries are hidden.
  for (const char* hidden : {"stargz.index.json", ".no.prefetch.landmark", ".prefetch.landmark"}) {
    EXPECT_EQ((*index)->Lookup((*index)->Root(), hidden).status().code(), Code::kNotFound);
  }
}

TEST(EstargzWriterTest, FilesAreSplitIntoVerifiedChunksReadableAtTheirBoundaries) {
  Fixture& fx = Fixture::Get();
  FakeBlobSource source(fx.blob());
  auto index = internal::TryOpenEstargz(source, {}, "sha256:estargz");
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  const std::string want = test::ReadAllOf(fx.src() + "/usr/share/big.bin");
  auto id = Walk(**index, "usr/share/big.bin");
  ASSERT_TRUE(id.ok());
  auto chunks = (*index)->Chunks(*id);
  ASSERT_EQ(chunks.size(), (want.size() + kChunk - 1) / kChunk);
  uint64_t covered = 0;
  for (const ChunkRef& c : chunks) {
    EXPECT_EQ(c.codec, Codec::kGzip);
    EXPECT_TRUE(c.has_digest);
    EXPECT_TRUE(c.chunk_digest);
    EXPECT_EQ(c.file_offset, covered);
    covered += c.length;
  }
  EXPECT_EQ(covered, want.size());
  ChunkReader reader(source, **index);
  for (uint64_t at : {uint64_t{0}, kChunk - 1, kChunk, kChunk + 1, 2 * kChunk - 3, 3 * kChunk,
                      want.size() - 5}) {
    SCOPED_TRACE(at);
    for (size_t len : {size_t{1}, size_t{10}, size_t{kChunk + 20}}) {
      std::string out(len, '\0');
      auto n = reader.ReadFile(*id, at, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), len));
      ASSERT_TRUE(n.ok()) << n.status().message();
      out.resize(*n);
      EXPECT_EQ(out, want.substr(at, len));
    }
  }
  // Sizes around the chunk size: one chunk below and at it, two above.
  for (auto [path, count] : std::vector<std::pair<std::string, size_t>>{
           {"etc/below", 1}, {"etc/exact", 1}, {"etc/above", 2}, {"one", 1}, {"empty", 0}}) {
    auto f = Walk(**index, path);
    ASSERT_TRUE(f.ok()) << path;
    EXPECT_EQ((*index)->Chunks(*f).size(), count) << path;
  }
}

TEST(EstargzWriterTest, OutputIsReproducibleAndAnOrdinaryTarGz) {
  Fixture& fx = Fixture::Get();
  std::string again;
  auto written = Fixture::Write(fx.tar_path(), again);
  ASSERT_TRUE(written.ok()) << written.status().message();
  EXPECT_TRUE(again == fx.blob()) << "two writes differ";
  EXPECT_EQ(written->digest, fx.layer().digest);
  EXPECT_EQ(written->digest, Digest::Sha256Of(fx.blob()).String());
  EXPECT_EQ(written->size, fx.blob().size());
  EXPECT_EQ(written->media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
  const std::string decompressed = Gunzip(fx.blob());
  EXPECT_EQ(written->diff_id, Digest::Sha256Of(decompressed).String());
  EXPECT_EQ(written->annotations.at(std::string(estargz::kUncompressedSizeAnnotation)),
            std::to_string(decompressed.size()));
  EXPECT_EQ(written->annotations.at(std::string(estargz::kTocDigestAnnotation)),
            Digest::Sha256Of(TocTextOf(fx.blob())).String());

  ASSERT_TRUE(WriteFileAtomic(fx.dir() + "/out.tar.gz", fx.blob()).ok());
  auto lines = [](const std::string& text) {
    std::multiset<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.insert(line);
    return out;
  };
  auto want = lines(test::Sh("tar -tf in.tar", fx.dir()));
  want.insert(".no.prefetch.landmark");
  want.insert("stargz.index.json");
  EXPECT_EQ(lines(test::Sh("gzip -dc out.tar.gz | tar -t", fx.dir())), want);
}

TEST(EstargzWriterTest, PrefetchPathsComeFirstThenTheLandmark) {
  Fixture& fx = Fixture::Get();
  std::string blob;
  LayerWriteOptions options;
  options.chunk_size = kChunk;
  options.prefetch_paths = {"bin/ls", "/etc/exact", "not/there"};
  auto written = Fixture::Write(fx.tar_path(), blob, options);
  ASSERT_TRUE(written.ok()) << written.status().message();
  ASSERT_TRUE(WriteFileAtomic(fx.dir() + "/prefetch.tar.gz", blob).ok());
  std::string listing = test::Sh("gzip -dc prefetch.tar.gz | tar -t | head -6", fx.dir());
  // bin/ls is a hard link to bin/busybox: its target (and their directory) come first.
  EXPECT_EQ(listing, "./bin/\n./bin/busybox\n./bin/ls\n./etc/\n./etc/exact\n.prefetch.landmark\n");
  auto source = fetch::MakeMemoryBlobSource(blob, "prefetch");
  auto index = internal::TryOpenEstargz(*source, written->annotations, "sha256:p");
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  auto tar_source = fetch::MakeMemoryBlobSource(fx.tar(), "tar");
  auto tar_index = internal::BuildTarIndex(*tar_source, "sha256:tar");
  ASSERT_TRUE(tar_index.ok());
  ExpectSameTree(*tar_source, **tar_index, *source, **index);
}

TEST(EstargzWriterTest, IndexSurvivesEncodeDecode) {
  Fixture& fx = Fixture::Get();
  auto source = fetch::MakeMemoryBlobSource(fx.blob(), "estargz");
  auto index = internal::TryOpenEstargz(*source, {}, "sha256:estargz");
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  std::string bytes;
  (*index)->EncodeTo(bytes);
  auto decoded = FlatLayerIndex::DecodeFrom(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ((*decoded)->format(), LayerFormat::kEstargz);
  ExpectSameTree(*source, **index, *source, **decoded);
  auto id = Walk(**decoded, "usr/share/big.bin");
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE((*decoded)->Chunks(*id)[0].chunk_digest);
}

TEST(EstargzWriterTest, OpenLayerIndexPicksEstargzByItsFooter) {
  Fixture& fx = Fixture::Get();
  FakeBlobSource source(fx.blob());
  auto index = OpenLayerIndex(source, "application/vnd.oci.image.layer.v1.tar+gzip",
                              fx.layer().digest, nullptr);
  ASSERT_TRUE(index.ok()) << index.status().message();
  auto* flat = dynamic_cast<FlatLayerIndex*>(index->get());
  ASSERT_NE(flat, nullptr);
  EXPECT_EQ(flat->format(), LayerFormat::kEstargz);
}

TEST(EstargzWriterTest, TarWithAPathEscapeIsAnErrorNamingTheInput) {
  Fixture& fx = Fixture::Get();
  const std::string path = fx.dir() + "/evil.tar";
  ASSERT_TRUE(WriteFileAtomic(path, test::TarFile("../evil", "x") + test::EndOfArchive()).ok());
  std::string out;
  auto written = Fixture::Write(path, out);
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.status().code(), Code::kCorruption);
  EXPECT_NE(written.status().message().find(path), std::string::npos) << written.status().message();
  auto missing = Fixture::Write(fx.dir() + "/nope.tar", out);
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
}

TEST(EstargzWriterTest, NameThatIsNotUtf8IsUnsupported) {
  // A JSON TOC cannot hold it; the reference writer would silently mangle it.
  Fixture& fx = Fixture::Get();
  const std::string path = fx.dir() + "/latin1.tar";
  ASSERT_TRUE(WriteFileAtomic(path, test::TarFile("caf\xe9", "x") + test::EndOfArchive()).ok());
  std::string out;
  auto written = Fixture::Write(path, out);
  EXPECT_EQ(written.status().code(), Code::kUnsupported) << written.status().message();
  LayerWriteOptions bad_level;
  bad_level.level = 12;
  EXPECT_EQ(Fixture::Write(fx.tar_path(), out, bad_level).status().code(), Code::kInvalidArgument);
}

TEST(EstargzWriterTest, EmptyTarGivesALayerWithOnlyTheLandmark) {
  Fixture& fx = Fixture::Get();
  const std::string path = fx.dir() + "/empty.tar";
  ASSERT_TRUE(WriteFileAtomic(path, test::EndOfArchive()).ok());
  std::string out;
  auto written = Fixture::Write(path, out);
  ASSERT_TRUE(written.ok()) << written.status().message();
  auto index = Open(out);
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  int children = 0;
  EXPECT_TRUE((*index)->ForEachChild((*index)->Root(), [&](std::string_view, NodeId) {
                        ++children;
                        return true;
                      }).ok());
  EXPECT_EQ(children, 0);
}

// With the TOC digest annotation (an eStargz layer for sure) the footer and the TOC come
// in one read of the blob's tail; without it (maybe plain gzip) the footer alone is read
// first, then the TOC.
TEST(EstargzReaderTest, AnnotatedLayerIsOpenedWithOneRead) {
  Fixture& fx = Fixture::Get();
  FakeBlobSource annotated_source(fx.blob());
  auto index = internal::TryOpenEstargz(
      annotated_source, {{std::string(estargz::kTocDigestAnnotation), TocDigest()}}, "sha256:a");
  ASSERT_TRUE(index.ok()) << index.status().message();
  ASSERT_TRUE(*index);
  EXPECT_EQ(annotated_source.call_count(), 1u);
  FakeBlobSource plain_source(fx.blob());
  auto again = internal::TryOpenEstargz(plain_source, {}, "sha256:a");
  ASSERT_TRUE(again.ok()) << again.status().message();
  ASSERT_TRUE(*again);
  ASSERT_EQ(plain_source.call_count(), 2u);
  ASSERT_EQ(plain_source.calls()[0].requested.size(), 1u);
  EXPECT_EQ(plain_source.calls()[0].requested[0].length, estargz::kFooterSize);
  std::string one, two;
  (*index)->EncodeTo(one);
  (*again)->EncodeTo(two);
  EXPECT_EQ(one, two);
}

TEST(EstargzReaderTest, LegacyFortySevenByteFooterIsAccepted) {
  Fixture& fx = Fixture::Get();
  const std::string& blob = fx.blob();
  const uint64_t toc = TocOffsetOf(blob);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(toc));
  std::string footer("\x1f\x8b\x08\x04\0\0\0\0\0\xff", 10);
  footer += std::string("\x16\0", 2) + hex + "STARGZ";
  footer += std::string("\x01\x00\x00\xff\xff\0\0\0\0\0\0\0\0", 13);
  ASSERT_EQ(footer.size(), estargz::kLegacyFooterSize);
  const std::string legacy = blob.substr(0, blob.size() - estargz::kFooterSize) + footer;
  auto source = fetch::MakeMemoryBlobSource(legacy, "legacy");
  auto index = internal::TryOpenEstargz(*source, {}, "sha256:legacy");
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  auto tar_source = fetch::MakeMemoryBlobSource(fx.tar(), "tar");
  auto tar_index = internal::BuildTarIndex(*tar_source, "sha256:tar");
  ASSERT_TRUE(tar_index.ok());
  ExpectSameTree(*tar_source, **tar_index, *source, **index);
  // Ours is also what gzip sees: an empty member.
  EXPECT_EQ(Gunzip(estargz::FooterBytes(12345)), "");
}

TEST(EstargzReaderTest, PlainGzipIsNotEstargz) {
  Fixture& fx = Fixture::Get();
  auto index = Open(Gzip(fx.tar()));
  ASSERT_TRUE(index.ok()) << index.status().message();
  EXPECT_FALSE(*index);
  auto tiny = Open("abc");
  ASSERT_TRUE(tiny.ok());
  EXPECT_FALSE(*tiny);
}

TEST(EstargzReaderTest, DamagedFootersAreCorruptionOrNotEstargz) {
  Fixture& fx = Fixture::Get();
  const std::string& blob = fx.blob();
  const std::map<std::string, std::string> annotated{
      {std::string(estargz::kTocDigestAnnotation), TocDigest()}};
  // Truncated: no footer left. Not eStargz, unless the annotation says it is.
  std::string truncated = blob.substr(0, blob.size() - 10);
  auto a = Open(truncated);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(*a);
  EXPECT_EQ(Open(truncated, annotated).status().code(), Code::kCorruption);
  // A footer whose offset is not hex.
  std::string garbage = blob;
  garbage.replace(garbage.size() - estargz::kFooterSize + 16, 4, "zz!!");
  auto g = Open(garbage);
  EXPECT_EQ(g.status().code(), Code::kCorruption);
  EXPECT_NE(g.status().message().find("sha256:test"), std::string::npos) << g.status().message();
  // A wrong subfield length.
  std::string sublen = blob;
  sublen[sublen.size() - estargz::kFooterSize + 14] = 21;
  EXPECT_EQ(Open(sublen).status().code(), Code::kCorruption);
  // TOC offset at or beyond the footer.
  for (uint64_t off : {uint64_t{blob.size()}, uint64_t{blob.size() - estargz::kFooterSize},
                       ~uint64_t{0}}) {
    std::string beyond = blob.substr(0, blob.size() - estargz::kFooterSize) + estargz::FooterBytes(off);
    auto r = Open(beyond);
    EXPECT_EQ(r.status().code(), Code::kCorruption) << off;
  }
  // TOC offset pointing at a data member: not a TOC.
  std::string wrong = blob.substr(0, blob.size() - estargz::kFooterSize) + estargz::FooterBytes(0);
  EXPECT_EQ(Open(wrong).status().code(), Code::kCorruption);
}

TEST(EstargzReaderTest, TocDigestMustMatchTheAnnotation) {
  Fixture& fx = Fixture::Get();
  auto good = Open(fx.blob(), {{std::string(estargz::kTocDigestAnnotation), TocDigest()}});
  ASSERT_TRUE(good.ok() && *good) << good.status().message();
  auto bad = Open(fx.blob(), {{std::string(estargz::kTocDigestAnnotation),
                               Digest::Sha256Of(std::string_view("other")).String()}});
  EXPECT_EQ(bad.status().code(), Code::kCorruption);
  EXPECT_NE(bad.status().message().find("digest"), std::string::npos);
}

TEST(EstargzReaderTest, WrongChunkDigestFailsTheReadAndReturnsNoBytes) {
  Fixture& fx = Fixture::Get();
  json toc = TocOf(fx.blob());
  size_t i = EntryIndex(toc, "etc/above", "chunk");
  toc["entries"][i]["chunkDigest"] = Digest::Sha256Of(std::string_view("not it")).String();
  auto [blob, digest] = WithToc(fx.blob(), toc);
  FakeBlobSource source(blob);
  auto index = internal::TryOpenEstargz(source, {{std::string(estargz::kTocDigestAnnotation), digest}},
                                        "sha256:bad-chunk");
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  auto id = Walk(**index, "etc/above");
  ASSERT_TRUE(id.ok());
  std::string out(10, '\0');
  auto span = std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size());
  // The first chunk is fine; the second fails.
  ASSERT_TRUE(ReadFile(source, **index, *id, 0, span).ok());
  auto n = ReadFile(source, **index, *id, kChunk - 5, span);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kCorruption);
  EXPECT_NE(n.status().message().find("sha256:bad-chunk"), std::string::npos);
}

TEST(EstargzReaderTest, FlippedPayloadByteFailsTheRead) {
  Fixture& fx = Fixture::Get();
  FakeBlobSource source(fx.blob());
  auto index = internal::TryOpenEstargz(source, {}, "sha256:flip");
  ASSERT_TRUE(index.ok() && *index);
  auto id = Walk(**index, "usr/share/big.bin");
  ASSERT_TRUE(id.ok());
  const ChunkRef c = (*index)->Chunks(*id)[1];
  source.FlipByte(c.blob_offset + 30);  // inside the deflate data of the member
  std::string out(100, '\0');
  auto n = ReadFile(source, **index, *id, c.file_offset,
                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()));
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kCorruption);
}

TEST(EstargzReaderTest, BadTocEntriesAreCorruption) {
  Fixture& fx = Fixture::Get();
  const json base = TocOf(fx.blob());
  const uint64_t toc_offset = TocOffsetOf(fx.blob());
  std::vector<std::pair<std::string, std::function<void(json&)>>> cases = {
      {"path escape", [](json& t) { t["entries"][EntryIndex(t, "one")]["name"] = "../one"; }},
      {"hard link escape",
       [](json& t) { t["entries"][EntryIndex(t, "bin/ls")]["linkName"] = "../../etc/shadow"; }},
      {"offset past the TOC",
       [&](json& t) { t["entries"][EntryIndex(t, "one")]["offset"] = toc_offset + 10; }},
      {"offset far outside",
       [](json& t) { t["entries"][EntryIndex(t, "one")]["offset"] = uint64_t{1} << 62; }},
      {"absurd chunk size",
       [](json& t) {
         size_t i = EntryIndex(t, "etc/above");
         t["entries"][i]["size"] = uint64_t{1} << 40;
         t["entries"][i]["chunkSize"] = (uint64_t{1} << 40) - 1;
         t["entries"][i + 1]["chunkOffset"] = (uint64_t{1} << 40) - 1;
       }},
      {"chunks that do not add up", [](json& t) { t["entries"][EntryIndex(t, "etc/above")]["size"] = kChunk - 5; }},
      {"overlapping files",
       [](json& t) {
         json& a = t["entries"][EntryIndex(t, "etc/below")];
         json& b = t["entries"][EntryIndex(t, "etc/exact")];
         b["offset"] = a["offset"];
       }},
      {"chunk without its file",
       [](json& t) { t["entries"][EntryIndex(t, "etc/above", "chunk")]["name"] = "etc/other"; }},
      {"size of the wrong type", [](json& t) { t["entries"][EntryIndex(t, "one")]["size"] = "1"; }},
      {"negative uid", [](json& t) { t["entries"][EntryIndex(t, "one")]["uid"] = -1; }},
      {"unknown type", [](json& t) { t["entries"][EntryIndex(t, "one")]["type"] = "socket"; }},
      {"bad modtime", [](json& t) { t["entries"][EntryIndex(t, "one")]["modtime"] = "yesterday"; }},
      {"bad xattr", [](json& t) { t["entries"][EntryIndex(t, "xattr.txt")]["xattrs"]["user.x"] = "!!"; }},
      {"bad digest", [](json& t) { t["entries"][EntryIndex(t, "one")]["chunkDigest"] = "md5:00"; }},
      {"no digest at all",
       [](json& t) {
         json& e = t["entries"][EntryIndex(t, "one")];
         e.erase("chunkDigest");
         e.erase("digest");
       }},
      {"entry not an object", [](json& t) { t["entries"].push_back(7); }},
      {"wrong version", [](json& t) { t["version"] = 2; }},
      {"no entries", [](json& t) { t.erase("entries"); }},
      {"not an object", [](json& t) { t = json::array(); }},
  };
  for (auto& [name, mutate] : cases) {
    SCOPED_TRACE(name);
    json toc = base;
    mutate(toc);
    auto [blob, digest] = WithToc(fx.blob(), toc);
    auto r = Open(blob, {{std::string(estargz::kTocDigestAnnotation), digest}});
    EXPECT_EQ(r.status().code(), Code::kCorruption) << (r.ok() ? "opened" : r.status().message());
  }
  // Not JSON at all.
  {
    uint64_t off = TocOffsetOf(fx.blob());
    test::HeaderSpec h;
    h.name = "stargz.index.json";
    h.size = 5;
    std::string tar = test::TarHeader(h) + test::Padded("{[}]x") + test::EndOfArchive();
    std::string blob = fx.blob().substr(0, off) + Gzip(tar) + estargz::FooterBytes(off);
    EXPECT_EQ(Open(blob).status().code(), Code::kCorruption);
  }
}

TEST(EstargzReaderTest, TocWithoutChunkDigestsIsVerifiedByTheFileDigest) {
  // Older stargz writers give only the file's digest; chunks are then read as one span.
  Fixture& fx = Fixture::Get();
  json toc = TocOf(fx.blob());
  for (json& e : toc["entries"]) e.erase("chunkDigest");
  auto [blob, digest] = WithToc(fx.blob(), toc);
  auto source = fetch::MakeMemoryBlobSource(blob, "old");
  auto index = internal::TryOpenEstargz(*source, {}, "sha256:old");
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  auto id = Walk(**index, "usr/share/big.bin");
  ASSERT_TRUE(id.ok());
  ASSERT_EQ((*index)->Chunks(*id).size(), 1u);
  const std::string want = test::ReadAllOf(fx.src() + "/usr/share/big.bin");
  EXPECT_EQ(ReadAllOfNode(*source, **index, *id, want.size()), want);
}

TEST(EstargzReaderTest, SmallChunksSharingOneMemberUseInnerOffset) {
  // As newer writers pack small files: one member holds both files (and their headers);
  // innerOffset says where each file's bytes start in the member's decompressed bytes.
  const std::string a = "first file\n";
  const std::string b = test::TextBytes(3000, 9);
  test::HeaderSpec ha;
  ha.name = "a";
  ha.size = a.size();
  test::HeaderSpec hb;
  hb.name = "dir/b";
  hb.size = b.size();
  const std::string member = test::TarHeader(ha) + test::Padded(a) + test::TarHeader(hb) +
                             test::Padded(b);
  const std::string data = Gzip(member) + Gzip(std::string(1024, '\0'));
  const uint64_t toc_offset = data.size();
  json toc = {{"version", 1},
              {"entries",
               {{{"name", "a"},
                 {"type", "reg"},
                 {"size", a.size()},
                 {"mode", 0644},
                 {"offset", 0},
                 {"innerOffset", 512},
                 {"chunkDigest", Digest::Sha256Of(a).String()}},
                {{"name", "dir/b"},
                 {"type", "reg"},
                 {"size", b.size()},
                 {"mode", 0600},
                 {"offset", 0},
                 {"innerOffset", 1024 + 512},
                 {"chunkDigest", Digest::Sha256Of(b).String()}}}}};
  const std::string text = toc.dump();
  test::HeaderSpec ht;
  ht.name = "stargz.index.json";
  ht.size = text.size();
  const std::string blob = data + Gzip(test::TarHeader(ht) + test::Padded(text) + test::EndOfArchive()) +
                           estargz::FooterBytes(toc_offset);
  auto source = fetch::MakeMemoryBlobSource(blob, "packed");
  auto index = internal::TryOpenEstargz(
      *source, {{std::string(estargz::kTocDigestAnnotation), Digest::Sha256Of(text).String()}},
      "sha256:packed");
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  auto ia = Walk(**index, "a");
  auto ib = Walk(**index, "dir/b");
  ASSERT_TRUE(ia.ok() && ib.ok());
  ASSERT_EQ((*index)->Chunks(*ib).size(), 1u);
  EXPECT_EQ((*index)->Chunks(*ib)[0].skip, 1024u + 512u);
  EXPECT_EQ(ReadAllOfNode(*source, **index, *ia, a.size()), a);
  EXPECT_EQ(ReadAllOfNode(*source, **index, *ib, b.size()), b);
  std::string mid(100, '\0');
  auto n = ReadFile(*source, **index, *ib, 1234,
                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(mid.data()), mid.size()));
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(mid, b.substr(1234, 100));

  // The same bytes claimed by both files: overlap is corruption.
  toc["entries"][1]["innerOffset"] = 512;
  toc["entries"][1]["size"] = a.size();
  const std::string text2 = toc.dump();
  ht.size = text2.size();
  const std::string blob2 = data + Gzip(test::TarHeader(ht) + test::Padded(text2) + test::EndOfArchive()) +
                            estargz::FooterBytes(toc_offset);
  EXPECT_EQ(Open(blob2).status().code(), Code::kCorruption);
}

TEST(EstargzReaderTest, ReadsALayerWrittenByTheReferenceTool) {
  // tests/index/testdata/estargz/README.md says how these were made.
  const std::string dir = std::string(IMAGEFS_SOURCE_DIR) + "/tests/index/testdata/estargz/";
  const std::string esgz = test::ReadAllOf(dir + "ctr-remote-tiny.esgz");
  const std::string orig = test::ReadAllOf(dir + "ctr-remote-tiny.orig.tar.gz");
  ASSERT_FALSE(esgz.empty());
  ASSERT_FALSE(orig.empty());
  EXPECT_EQ(Digest::Sha256Of(esgz).String(),
            "sha256:ec8fb44f19cb77b614b39760ea40def5b188482e758be6bff75bbd1f3b9ef3ae");
  auto source = fetch::MakeMemoryBlobSource(esgz, "ctr-remote");
  auto index = internal::TryOpenEstargz(
      *source,
      {{std::string(estargz::kTocDigestAnnotation),
        "sha256:8236306ef397b9d52ea111380e9f681898274646ce8133e15396f3c649bcc967"}},
      "sha256:ec8fb44f19cb77b614b39760ea40def5b188482e758be6bff75bbd1f3b9ef3ae");
  ASSERT_TRUE(index.ok() && *index) << index.status().message();
  auto orig_source = fetch::MakeMemoryBlobSource(orig, "orig");
  auto orig_index = internal::BuildGzipIndex(*orig_source, "sha256:orig", 4 << 20);
  ASSERT_TRUE(orig_index.ok()) << orig_index.status().message();
  ExpectSameTree(*orig_source, **orig_index, *source, **index, 3);
  auto tool = Walk(**index, "usr/bin/tool");
  ASSERT_TRUE(tool.ok());
  EXPECT_EQ((*index)->Chunks(*tool).size(), 3u);  // converted with 4096-byte chunks
  auto hard = Walk(**index, "etc/hard.txt");
  ASSERT_TRUE(hard.ok());
  EXPECT_EQ(*Walk(**index, "etc/hello.txt"), *hard);
  // The wrong annotation is caught.
  EXPECT_EQ(internal::TryOpenEstargz(*source, {{std::string(estargz::kTocDigestAnnotation),
                                                Digest::Sha256Of(esgz).String()}},
                                     "sha256:x")
                .status()
                .code(),
            Code::kCorruption);
}

// Every regular file of `got` either fails to read or reads as the same path in `want`.
void ExpectNoWrongBytes(fetch::BlobSource& want_src, const LayerIndex& want,
                        fetch::BlobSource& got_src, const LayerIndex& got) {
  std::function<void(NodeId, const std::string&)> walk = [&](NodeId id, const std::string& path) {
    auto attr = got.Attr(id);
    if (!attr.ok()) return;
    if (S_ISDIR(attr->mode)) {
      std::vector<std::pair<std::string, NodeId>> children;
      (void)got.ForEachChild(id, [&](std::string_view n, NodeId c) {
        children.emplace_back(n, c);
        return true;
      });
      for (auto& [n, c] : children) walk(c, path.empty() ? n : path + "/" + n);
      return;
    }
    if (!S_ISREG(attr->mode) || attr->whiteout || attr->size > (64 << 20)) return;
    std::string bytes(attr->size, '\0');
    auto n = ReadFile(got_src, got, id, 0,
                      std::span<uint8_t>(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()));
    if (!n.ok()) return;
    bytes.resize(*n);
    auto w = Walk(want, path);
    auto wa = w.ok() ? want.Attr(*w) : Result<NodeAttr>(Status::NotFound(path));
    if (!wa.ok() || wa->size != attr->size) {
      // A name or size changed in the TOC: the bytes must still be some file's verified
      // bytes (or a landmark's).
      std::set<std::string> contents;
      std::function<void(NodeId)> collect = [&](NodeId wid) {
        auto a = want.Attr(wid);
        if (!a.ok()) return;
        if (S_ISREG(a->mode) && !a->whiteout) contents.insert(ReadAllOfNode(want_src, want, wid, a->size));
        (void)want.ForEachChild(wid, [&](std::string_view, NodeId c) {
          collect(c);
          return true;
        });
      };
      collect(want.Root());
      contents.insert(std::string(1, static_cast<char>(estargz::kLandmarkContents)));
      EXPECT_TRUE(contents.count(bytes) > 0 || bytes.empty()) << "unverified bytes for " << path;
      return;
    }
    EXPECT_EQ(bytes, ReadAllOfNode(want_src, want, *w, wa->size)) << path;
  };
  walk(got.Root(), "");
}

TEST(EstargzReaderTest, RandomDamageIsAnErrorNeverACrashOrWrongBytes) {
  Fixture& fx = Fixture::Get();
  auto tar_source = fetch::MakeMemoryBlobSource(fx.tar(), "tar");
  auto tar_index = internal::BuildTarIndex(*tar_source, "sha256:tar");
  ASSERT_TRUE(tar_index.ok());
  std::mt19937_64 rng(42);
  // Damaged TOC text (re-signed, so only the reader's own checks stand in the way).
  const std::string text = TocTextOf(fx.blob());
  const uint64_t off = TocOffsetOf(fx.blob());
  int opened = 0;
  for (int round = 0; round < 300; ++round) {
    std::string t = text;
    for (int k = 0, changes = 1 + static_cast<int>(rng() % 3); k < changes; ++k) {
      t[rng() % t.size()] = "0123456789\"{}[],:./-a"[rng() % 21];
    }
    test::HeaderSpec h;
    h.name = "stargz.index.json";
    h.size = t.size();
    std::string blob = fx.blob().substr(0, off) +
                       Gzip(test::TarHeader(h) + test::Padded(t) + test::EndOfArchive()) +
                       estargz::FooterBytes(off);
    auto source = fetch::MakeMemoryBlobSource(blob, "damaged toc");
    auto index = internal::TryOpenEstargz(*source, {}, "sha256:d");
    if (!index.ok()) {
      EXPECT_EQ(index.status().code(), Code::kCorruption) << index.status().message();
      continue;
    }
    ASSERT_TRUE(*index);
    ++opened;
    ExpectNoWrongBytes(*tar_source, **tar_index, *source, **index);
  }
  // Damaged data members under the intact TOC.
  for (int round = 0; round < 150; ++round) {
    std::string blob = fx.blob();
    size_t at = rng() % off;
    blob[at] = static_cast<char>(blob[at] ^ (1 + rng() % 255));
    auto source = fetch::MakeMemoryBlobSource(blob, "damaged data");
    auto index = internal::TryOpenEstargz(*source, {}, "sha256:d");
    ASSERT_TRUE(index.ok() && *index) << index.status().message();
    ExpectNoWrongBytes(*tar_source, **tar_index, *source, **index);
  }
  EXPECT_GT(opened, 0);
}

// The time and base64 codecs are shared with zstd:chunked: tests/index/toc_util_test.cc.

}  // namespace
}  // namespace estargz_test
}  // namespace imagefs::index
