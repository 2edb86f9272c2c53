#include "probing/live/http_io.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <cerrno>
#include <sstream>

#include "probing/base/clock.h"

namespace probing::live {

namespace http = boost::beast::http;

IoOutcome HttpConnection::Wait(short events, int64_t deadline_ns) {
  for (;;) {
    const int64_t left_ms = (deadline_ns - MonotonicNs() + 999'999) / 1'000'000;
    if (left_ms <= 0) return IoOutcome::kTimeout;
    const int64_t slice = give_up_ && slice_ms_ > 0 ? std::min<int64_t>(left_ms, slice_ms_)
                                                    : left_ms;
    pollfd p{fd_, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(slice, 1 << 30)));
    if (n > 0) return IoOutcome::kOk;  // ready, or hung up / failed: the call says which
    if (n < 0 && errno != EINTR) {
      errno_ = errno;
      return IoOutcome::kError;
    }
    if (n == 0 && give_up_ && give_up_()) return IoOutcome::kGaveUp;
  }
}

template <class Parser>
IoOutcome HttpConnection::ReadInto(Parser& parser, int64_t deadline_ns) {
  parser.eager(true);
  for (;;) {
    if (!buffer_.empty()) {
      boost::beast::error_code ec;
      const size_t used = parser.put(boost::asio::buffer(buffer_.data(), buffer_.size()), ec);
      buffer_.erase(0, used);
      if (ec == http::error::need_more) {
        ec = {};
      } else if (ec) {
        return IoOutcome::kBadInput;
      }
      if (parser.is_done()) return IoOutcome::kOk;
      if (used > 0 && !buffer_.empty()) continue;
    }
    if (IoOutcome w = Wait(POLLIN, deadline_ns); w != IoOutcome::kOk) return w;
    char chunk[16384];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {  // the peer is done: a message without a length ends here
      boost::beast::error_code ec;
      if (parser.is_header_done()) parser.put_eof(ec);
      return !ec && parser.is_done() ? IoOutcome::kOk : IoOutcome::kClosed;
    }
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    errno_ = errno;
    return errno == ECONNRESET ? IoOutcome::kClosed : IoOutcome::kError;
  }
}

IoOutcome HttpConnection::Read(http::request_parser<http::string_body>& parser,
                               int64_t deadline_ns) {
  return ReadInto(parser, deadline_ns);
}

IoOutcome HttpConnection::Read(http::response_parser<http::string_body>& parser,
                               int64_t deadline_ns) {
  return ReadInto(parser, deadline_ns);
}

IoOutcome HttpConnection::Write(std::string_view bytes, int64_t deadline_ns) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (IoOutcome w = Wait(POLLOUT, deadline_ns); w != IoOutcome::kOk) return w;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    errno_ = errno;
    return errno == EPIPE || errno == ECONNRESET ? IoOutcome::kClosed : IoOutcome::kError;
  }
  return IoOutcome::kOk;
}

std::string Serialize(const http::response<http::string_body>& m) {
  std::ostringstream out;
  out << m;
  return out.str();
}

std::string Serialize(const http::request<http::string_body>& m) {
  std::ostringstream out;
  out << m;
  return out.str();
}

}  // namespace probing::live
