// Status and Result<T>: how Probing's libraries report failure to each other.
//
// g++ 12 has no std::expected in C++20, so this is a small stand-in. Errors carry a code and a
// message meant for the user ("segment checksum mismatch: ..."). Exceptions are used only at the
// cli/ edge.
//
//   Result<Segment> s = DecodeSegment(bytes);
//   if (!s.ok()) return s.status();
//   PROBING_ASSIGN_OR_RETURN(auto seg, DecodeSegment(bytes));
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace probing {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // the caller passed something wrong
  kDataLoss,         // corrupt or truncated input
  kUnimplemented,    // e.g. a newer format version
  kNotFound,
  kOutOfRange,        // does not fit (segment too large for a slot)
  kUnavailable,       // a resource went away (dead process, overwritten slot)
  kInternal,          // an OS call failed
  kPermissionDenied,  // another user's, or a missing or wrong token
  kDeadlineExceeded,  // no answer in time
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // Prefixes the message with context: "reading run.ptrace: " + message.
  Status WithContext(const std::string& context) const {
    return ok() ? *this : Status(code_, context + ": " + message_);
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status Unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status OutOfRange(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status PermissionDenied(std::string m) {
  return {StatusCode::kPermissionDenied, std::move(m)};
}
inline Status DeadlineExceeded(std::string m) {
  return {StatusCode::kDeadlineExceeded, std::move(m)};
}
// An OS call failed: "open /dev/shm/x: No such file or directory".
Status ErrnoStatus(const std::string& what, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T&& operator*() && { return std::move(*value_); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace probing

#define PROBING_CONCAT_INNER_(a, b) a##b
#define PROBING_CONCAT_(a, b) PROBING_CONCAT_INNER_(a, b)

#define PROBING_RETURN_IF_ERROR(expr) \
  do {                                \
    ::probing::Status _st = (expr);   \
    if (!_st.ok()) return _st;        \
  } while (0)

#define PROBING_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()

#define PROBING_ASSIGN_OR_RETURN(lhs, expr) \
  PROBING_ASSIGN_OR_RETURN_IMPL_(PROBING_CONCAT_(_res_, __LINE__), lhs, expr)
