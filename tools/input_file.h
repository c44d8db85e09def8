#pragma once

// The input of imagefs load and imagefs import made into a local plain file: a path, "-"
// (standard input, spooled) or an http(s) URL (downloaded), then decompressed when its
// first bytes say gzip or zstd. xz and bzip2 are recognized and refused with the command
// that decompresses them.

#include <string>

#include "util/digest.h"
#include "util/status.h"

namespace imagefs::tools {

struct PlainInput {
  std::string path;         // the plain (decompressed) bytes: the input itself or a file in scratch
  std::string compression;  // "gzip", "zstd" or "" (none)
  Digest digest;            // sha256 of the plain bytes
  uint64_t size = 0;        // of the plain bytes
};


// `source` is a file path, "-" or (when allow_url) an http:// or https:// URL. Spooled,
// downloaded and decompressed copies go into scratch_dir (which the caller removes).
// Errors name `source`: "no such file", an HTTP status, corrupt compressed data.
Result<PlainInput> OpenPlainInput(const std::string& source, const std::string& scratch_dir,
                                  bool allow_url);

}  // namespace imagefs::tools
