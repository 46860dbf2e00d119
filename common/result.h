// Errors are values at trust boundaries: a Result<T> holds
// either a T or a one-line Error that names what was wrong.
#pragma once
#include <string>
#include <utility>
#include <variant>

namespace axl {

// What kind of failure an Error is, for callers that act on it (retry on
// kWouldBlock, stop on kClosed, drop a peer on kMalformed).  The message is
// for people and logs; code compares the code, never the text.
enum class Errc {
  kOther,       // anything no caller tells apart
  kClosed,      // the peer closed the connection in an orderly way
  kWouldBlock,  // nothing to read now (non-blocking receive)
  kTimeout,     // nothing arrived in the time allowed
  kMalformed,   // the peer sent something that is not a valid message
  kIo,          // a system call on the socket failed
};

struct Error {
  std::string message;
  Errc code = Errc::kOther;
};

inline Error make_error(std::string msg) { return Error{std::move(msg)}; }
inline Error make_error(Errc code, std::string msg) { return Error{std::move(msg), code}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T v) : v_(std::move(v)) {}
  Result(Error e) : v_(std::move(e)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error e) : err_(std::move(e)), ok_(false) {}
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace axl
