#include "util/status.h"

#include <cstring>

namespace imagefs {

Status Status::FromErrno(int err, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  Code code;
  switch (err) {
    case ENOENT: code = Code::kNotFound; break;
    case EEXIST: code = Code::kAlreadyExists; break;
    case EACCES:
    case EPERM: code = Code::kPermissionDenied; break;
    case ENOSPC:
    case EDQUOT: code = Code::kNoSpace; break;
    case EINVAL: code = Code::kInvalidArgument; break;
    case ETIMEDOUT: code = Code::kTimeout; break;
    case ENOTSUP: code = Code::kUnsupported; break;
    default: code = Code::kIoError; break;
  }
  Status s(code, std::move(msg));
  s.errno_ = err;
  return s;
}

int Status::ToErrno() const {
  if (errno_ != 0) return errno_;
  switch (code_) {
    case Code::kOk: return 0;
    case Code::kInvalidArgument: return EINVAL;
    case Code::kNotFound: return ENOENT;
    case Code::kAlreadyExists: return EEXIST;
    case Code::kPermissionDenied: return EACCES;
    case Code::kUnauthenticated: return EACCES;
    case Code::kCorruption: return EIO;
    case Code::kUnsupported: return ENOTSUP;
    case Code::kUnavailable: return EIO;
    case Code::kTimeout: return EIO;
    case Code::kIoError: return EIO;
    case Code::kNoSpace: return ENOSPC;
    case Code::kInternal: return EIO;
  }
  return EIO;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  Status s = *this;
  s.message_ = std::string(context) + ": " + message_;
  return s;
}

std::string Status::ToString() const { return ok() ? "ok" : message_; }

}  // namespace imagefs
