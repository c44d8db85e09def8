#pragma once

// Standard base64 (RFC 4648, "+/" alphabet): registry credentials (fetch/) and TOC xattr
// values (index/).

#include <string>
#include <string_view>

#include "util/status.h"

namespace imagefs {

std::string Base64Encode(std::string_view data);
// Tolerates missing padding and trailing white space, as docker's auth files need;
// kInvalidArgument for other damage.
Result<std::string> Base64Decode(std::string_view data);

}  // namespace imagefs
