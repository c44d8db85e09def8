#include "tools/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "fetch/http.h"
#include "util/decompress.h"
#include "util/file.h"
#include "util/unique_fd.h"

namespace imagefs::tools {
namespace {

constexpr size_t kIoBlock = 1 << 20;

Result<UniqueFd> CreateFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return Status::FromErrno(errno, "creating " + path);
  return fd;
}

Status SpoolStdin(const std::string& out_path) {
  ASSIGN_OR_RETURN(UniqueFd out, CreateFile(out_path));
  std::vector<char> buf(kIoBlock);
  while (true) {
    ASSIGN_OR_RETURN(size_t n, ReadSome(STDIN_FILENO, buf.data(), buf.size(), "standard input"));
    if (n == 0) return Status::Ok();
    RETURN_IF_ERROR(WriteAll(out.get(), std::string_view(buf.data(), n), out_path));
  }
}

Status Download(const std::string& url, const std::string& out_path) {
  ASSIGN_OR_RETURN(UniqueFd out, CreateFile(out_path));
  Status write_error;
  fetch::HttpRequest request;
  request.url = url;
  request.follow_redirects = true;
  request.on_data = [&](const char* data, size_t n) {
    write_error = WriteAll(out.get(), std::string_view(data, n), out_path);
    return write_error.ok();
  };
  fetch::HttpClient client;
  ASSIGN_OR_RETURN(fetch::HttpResponse response, client.Do(request));
  RETURN_IF_ERROR(write_error);
  if (response.status < 200 || response.status > 299) {
    return Status::NotFound(url + ": the server answered HTTP " +
                            std::to_string(response.status) + "; check the URL");
  }
  return Status::Ok();
}

// What the first bytes say: "gzip", "zstd", "xz", "bzip2" or "".
std::string Sniff(const unsigned char* h, size_t n) {
  if (n >= 2 && h[0] == 0x1f && h[1] == 0x8b) return "gzip";
  if (n >= 4 && h[0] == 0x28 && h[1] == 0xb5 && h[2] == 0x2f && h[3] == 0xfd) return "zstd";
  if (n >= 6 && std::memcmp(h, "\xfd" "7zXZ\0", 6) == 0) return "xz";
  if (n >= 3 && std::memcmp(h, "BZh", 3) == 0) return "bzip2";
  return "";
}

}  // namespace

Result<PlainInput> OpenPlainInput(const std::string& source, const std::string& scratch_dir,
                                  bool allow_url) {
  std::string path = source;
  const bool url = source.starts_with("http://") || source.starts_with("https://");
  if (source == "-") {
    path = scratch_dir + "/stdin";
    RETURN_IF_ERROR(SpoolStdin(path));
  } else if (url && allow_url) {
    path = scratch_dir + "/download";
    RETURN_IF_ERROR(Download(source, path));
  }
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) {
    if (errno == ENOENT) return Status::NotFound(source + ": no such file");
    return Status::FromErrno(errno, "opening " + source);
  }
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return Status::FromErrno(errno, "stat " + source);
  if (S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(source + " is a directory; give a tar archive (tar -C " +
                                   source + " -c .)");
  }
  std::vector<char> buf(kIoBlock);
  const std::string where = source == "-" ? "standard input" : source;
  ASSIGN_OR_RETURN(size_t n, ReadSome(in.get(), buf.data(), buf.size(), where));
  PlainInput out;
  out.compression = Sniff(reinterpret_cast<const unsigned char*>(buf.data()), n);
  if (out.compression == "xz" || out.compression == "bzip2") {
    const char* tool = out.compression == "xz" ? "xz" : "bzip2";
    return Status::Unsupported(where + " is " + out.compression + "-compressed, which imagefs "
                               "does not read: decompress it first (" + tool + " -dk FILE) or "
                               "use gzip or zstd");
  }
  std::unique_ptr<Decompressor> dec =
      MakeDecompressor(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(buf.data()), n));
  UniqueFd plain_out;
  if (out.compression.empty()) {
    out.path = path;
  } else {
    out.path = scratch_dir + "/plain";
    ASSIGN_OR_RETURN(plain_out, CreateFile(out.path));
  }
  Sha256 hash;
  DecompressSink sink = [&](const char* data, size_t len) -> Status {
    hash.Update(std::string_view(data, len));
    out.size += len;
    if (plain_out) return WriteAll(plain_out.get(), std::string_view(data, len), out.path);
    return Status::Ok();
  };
  while (n > 0) {
    Status fed = dec->Feed(buf.data(), n, sink);
    if (!fed.ok()) return fed.WithContext(where + " (" + out.compression + ")");
    ASSIGN_OR_RETURN(n, ReadSome(in.get(), buf.data(), buf.size(), where));
  }
  if (Status fin = dec->Finish(); !fin.ok()) {
    return Status::Corruption(where + ": the " + out.compression + " stream is truncated or "
                              "corrupt (" + fin.message() + ")");
  }
  out.digest = hash.Finish();
  return out;
}

}  // namespace imagefs::tools
