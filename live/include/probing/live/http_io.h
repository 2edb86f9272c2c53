// HTTP/1.1 over a connected stream socket (Unix or TCP) where every read and write has a
// deadline, for the control server and its clients alike. Boost.Beast parses and serializes;
// the waiting is ours (poll on the descriptor), because Asio's synchronous calls wait for ever
// whatever SO_RCVTIMEO says, so a peer that sends half a request, or never answers, would hold
// its reader for good.
//
//   HttpConnection c(fd);
//   beast::http::request_parser<beast::http::string_body> p;
//   IoOutcome got = c.Read(p, MonotonicNs() + 10'000'000'000);   // the whole request by then
//   if (got == IoOutcome::kOk) c.Write(Serialize(response), MonotonicNs() + 10'000'000'000);
#pragma once

#include <boost/beast/http.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace probing::live {

enum class IoOutcome {
  kOk,
  kClosed,    // the peer closed before a whole message
  kTimeout,   // the deadline passed
  kGaveUp,    // `give_up` said so
  kBadInput,  // not HTTP, or larger than the parser's limits
  kError,     // the socket failed (errno() says how)
};

class HttpConnection {
 public:
  // Does not own `fd`. `slice_ms`: how often a wait wakes to ask `give_up` (a client checks
  // whether its target was stopped meanwhile).
  explicit HttpConnection(int fd) : fd_(fd) {}
  void SetGiveUp(std::function<bool()> give_up, int slice_ms) {
    give_up_ = std::move(give_up);
    slice_ms_ = slice_ms;
  }

  // One whole message into `parser`, by `deadline_ns` (CLOCK_MONOTONIC). Bytes read past its
  // end (a pipelined request) are kept for the next call.
  IoOutcome Read(boost::beast::http::request_parser<boost::beast::http::string_body>& parser,
                 int64_t deadline_ns);
  IoOutcome Read(boost::beast::http::response_parser<boost::beast::http::string_body>& parser,
                 int64_t deadline_ns);
  // All of `bytes`, by `deadline_ns`.
  IoOutcome Write(std::string_view bytes, int64_t deadline_ns);
  // Whether bytes of a next message arrived already.
  bool has_buffered() const { return !buffer_.empty(); }
  int error() const { return errno_; }

 private:
  template <class Parser>
  IoOutcome ReadInto(Parser& parser, int64_t deadline_ns);
  // Waits until `fd_` is ready for `events` or the deadline; kOk when ready.
  IoOutcome Wait(short events, int64_t deadline_ns);

  int fd_;
  std::string buffer_;
  std::function<bool()> give_up_;
  int slice_ms_ = 0;
  int errno_ = 0;
};

// A message as bytes on the wire.
std::string Serialize(const boost::beast::http::response<boost::beast::http::string_body>& m);
std::string Serialize(const boost::beast::http::request<boost::beast::http::string_body>& m);

}  // namespace probing::live
