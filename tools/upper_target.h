#pragma once

// Which upper dir and base image a container-like TARGET names, for `imagefs diff` and
// `imagefs commit`:
//   TARGET a container's name or id (full or a unique prefix; tools/containers.h): its
//                                 upper dir and image
//   TARGET a live imagefs mount   its upper dir (none for a read-only mount) and its image
//                                 (name and manifest digest from the mount table)
//   TARGET a directory            an upper dir (kernel overlayfs markers) over --image,
//                                 else over the image named in <TARGET>.work/origin.json
//                                 ({"image": ..., "manifest_digest": ...}, written by mount)
// An imagefs mount the table does not list is refused (its tree is not an upper dir).

#include <set>
#include <string>

#include "tools/command.h"
#include "tools/image_view.h"
#include "util/status.h"

namespace imagefs::tools {

struct UpperTarget {
  std::string upper;            // as the user or the mount table names it; "" = read-only mount
  std::string image;            // the base image's name
  std::string manifest_digest;  // the digest the upper dir was made over; may be empty
  std::string mountpoint;       // the live mount TARGET named, or ""
  // Paths a container's runtime created (its init paths: /proc, /etc/hosts, ...), which
  // diff and commit leave out, as docker's init layer hid them. Empty outside containers.
  std::set<std::string> ignore;
};

// command ("diff", "commit") prefixes error messages. image_flag: --image, or "".
Result<UpperTarget> ResolveUpperTarget(const GlobalOptions& global, const std::string& command,
                                       const std::string& target, const std::string& image_flag);

// Opens target.image for reading; refuses it when it no longer names manifest_digest.
Result<ImageView> OpenUpperBase(const GlobalOptions& global, const std::string& command,
                                const UpperTarget& target, const std::string& platform);

}  // namespace imagefs::tools
