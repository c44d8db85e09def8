#pragma once

// Errors as values. A Status is either ok or carries a code and a one-line message;
// Result<T> is a T or a non-ok Status. No exception crosses a folder boundary.
// Messages are written to be printed after "imagefs: " as "<what>: <why>".

#include <cerrno>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace imagefs {

enum class Code {
  kOk = 0,
  kInvalidArgument,   // the user's input is wrong (bad reference, bad flag)
  kNotFound,          // a name, tag, blob or file does not exist
  kAlreadyExists,
  kPermissionDenied,  // forbidden by the registry or the filesystem
  kUnauthenticated,   // credentials missing or wrong
  kCorruption,        // bytes failed verification (digest, format)
  kUnsupported,       // a valid but unsupported thing (schema 1, sparse tar)
  kUnavailable,       // network or server trouble; may succeed later
  kTimeout,
  kIoError,           // local I/O failed; errno_ says how
  kNoSpace,
  kInternal,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return {Code::kInvalidArgument, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status AlreadyExists(std::string msg) { return {Code::kAlreadyExists, std::move(msg)}; }
  static Status PermissionDenied(std::string msg) { return {Code::kPermissionDenied, std::move(msg)}; }
  static Status Unauthenticated(std::string msg) { return {Code::kUnauthenticated, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, std::move(msg)}; }
  static Status Unsupported(std::string msg) { return {Code::kUnsupported, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {Code::kUnavailable, std::move(msg)}; }
  static Status Timeout(std::string msg) { return {Code::kTimeout, std::move(msg)}; }
  static Status Internal(std::string msg) { return {Code::kInternal, std::move(msg)}; }
  static Status NoSpace(std::string msg) { return {Code::kNoSpace, std::move(msg)}; }
  // From an errno value: "<what>: strerror(err)". ENOENT maps to kNotFound, ENOSPC to kNoSpace, etc.
  static Status FromErrno(int err, std::string_view what);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // The errno a FUSE reply should carry for this status (0 when ok).
  int ToErrno() const;
  // Prefixes the message with context: "pulling x: " + message. Keeps the code.
  Status WithContext(std::string_view context) const;
  std::string ToString() const;

  bool IsNotFound() const { return code_ == Code::kNotFound; }

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
  int errno_ = 0;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be ok

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T value_or(T fallback) const& { return ok() ? value() : std::move(fallback); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace imagefs

#define IMAGEFS_CONCAT_INNER(a, b) a##b
#define IMAGEFS_CONCAT(a, b) IMAGEFS_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if expr (a Status) is not ok.
#define RETURN_IF_ERROR(expr)                 \
  do {                                        \
    ::imagefs::Status _st = (expr);           \
    if (!_st.ok()) return _st;                \
  } while (0)

// ASSIGN_OR_RETURN(auto x, Foo()); declares x from a Result or returns its Status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(IMAGEFS_CONCAT(_res_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
