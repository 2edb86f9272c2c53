#include "probing/live/control_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "probing/base/unique_fd.h"

namespace probing::live {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

constexpr uint64_t kMaxResponse = 512ull << 20;

bool AllDigits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

timeval ToTimeval(double seconds) {
  timeval tv{};
  if (seconds <= 0) seconds = 0.001;
  tv.tv_sec = static_cast<time_t>(seconds);
  tv.tv_usec = static_cast<suseconds_t>((seconds - std::floor(seconds)) * 1e6);
  return tv;
}

// A connected stream socket with `timeout` on the connect and on every read and write; the fd
// or -errno (-ETIMEDOUT when the connect took too long).
int ConnectFd(const Endpoint& e, double timeout) {
  if (!e.tcp()) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return -errno;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string name = "probing-" + std::to_string(e.pid);
    std::memcpy(addr.sun_path + 1, name.data(), name.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return -errno;
    timeval tv = ToTimeval(timeout);
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd.Release();
  }
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(e.host.c_str(), std::to_string(e.port).c_str(), &hints, &res) != 0)
    return -EHOSTUNREACH;
  int err = ECONNREFUSED;
  UniqueFd fd;
  for (addrinfo* a = res; a != nullptr && !fd.valid(); a = a->ai_next) {
    UniqueFd s(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
    if (!s.valid()) {
      err = errno;
      continue;
    }
    if (connect(s.get(), a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        err = errno;
        continue;
      }
      pollfd p{s.get(), POLLOUT, 0};
      int n = poll(&p, 1, static_cast<int>(timeout * 1000));
      if (n == 0) {
        err = ETIMEDOUT;
        continue;
      }
      int so_error = 0;
      socklen_t len = sizeof so_error;
      if (n < 0 || getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 ||
          so_error != 0) {
        err = n < 0 ? errno : so_error;
        continue;
      }
    }
    fd = std::move(s);
  }
  freeaddrinfo(res);
  if (!fd.valid()) return -err;
  int flags = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  timeval tv = ToTimeval(timeout);
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd.Release();
}

std::string Seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

}  // namespace

std::string Endpoint::Describe() const {
  return tcp() ? host + ":" + std::to_string(port) : "process " + std::to_string(pid);
}

std::optional<Endpoint> ParseHostPort(const std::string& s) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || !AllDigits(s.substr(colon + 1)) ||
      s.size() - colon > 6)
    return std::nullopt;
  long port = std::strtol(s.substr(colon + 1).c_str(), nullptr, 10);
  if (port <= 0 || port >= 65536) return std::nullopt;
  Endpoint e;
  e.host = s.substr(0, colon);
  if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']')
    e.host = e.host.substr(1, e.host.size() - 2);
  if (e.host.find('/') != std::string::npos) return std::nullopt;  // a path, not a host
  e.port = static_cast<int>(port);
  return e;
}

std::string DefaultDataDir() {
  const char* d = std::getenv("PROBING_DATA_DIR");  // NOLINT(concurrency-mt-unsafe): read-only use
  return d != nullptr && *d != '\0' ? d : "/dev/shm/probing-" + std::to_string(getuid());
}

ProcessState StateOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  size_t paren = text.rfind(')');
  if (text.empty() || paren == std::string::npos || paren + 2 >= text.size())
    return kill(pid, 0) == 0 || errno == EPERM ? ProcessState::kRunning : ProcessState::kGone;
  switch (text[paren + 2]) {
    case 'T':
    case 't': return ProcessState::kStopped;
    case 'Z':
    case 'X': return ProcessState::kZombie;
    default: return ProcessState::kRunning;
  }
}

std::string StateProblem(pid_t pid) {
  const std::string p = std::to_string(pid);
  switch (StateOf(pid)) {
    case ProcessState::kStopped:
      return "process " + p +
             " is stopped (SIGSTOP, Ctrl-Z or a debugger) and cannot answer until it goes on "
             "(kill -CONT " +
             p + "); what it recorded still answers: probing -t " + p + " query ...";
    case ProcessState::kZombie:
      return "process " + p + " has exited (its parent has not reaped it yet)";
    case ProcessState::kGone:
    case ProcessState::kRunning: break;
  }
  return "";
}

Status ControlClient::Unreachable(int err) const {
  if (endpoint_.tcp())
    return Unavailable("cannot reach " + endpoint_.Describe() + ": " + ErrnoText(err) +
                       (err == ETIMEDOUT ? " after " + Seconds(timeout_s_) + " s"
                                         : std::string(" (is PROBING_PORT set in the target?)")));
  const pid_t pid = endpoint_.pid;
  const std::string p = std::to_string(pid);
  if (StateOf(pid) == ProcessState::kGone) {
    std::string dir = DefaultDataDir() + "/" + p;
    if (std::filesystem::exists(dir + "/process.json"))
      return NotFound("process " + p + " is gone; what it recorded is still readable: probing -t " +
                      dir + " query ..., or probing-analyze " + dir);
    return NotFound("no process " + p);
  }
  if (std::string problem = StateProblem(pid); !problem.empty()) return Unavailable(problem);
  if (err == ECONNREFUSED || err == ENOENT)
    return NotFound("no recorder in process " + p + ": run `probing -t " + p + " inject` first");
  return Unavailable("cannot reach the recorder in process " + p + ": " + ErrnoText(err));
}

Status ControlClient::ErrorOf(const Response& r) {
  auto j = protocol::Json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  std::string msg = j.is_object() && j.contains("error") && j["error"].is_string()
                        ? j["error"].get<std::string>()
                        : "HTTP " + std::to_string(r.status);
  switch (r.status) {
    case 404: return NotFound(msg);
    case 400: return InvalidArgument(msg);
    case 401:
    case 403: return PermissionDenied(msg);
    case 504: return DeadlineExceeded(msg);
    default: return Unavailable(msg);
  }
}

Result<Response> ControlClient::Request(std::string_view method, const std::string& target,
                                        const std::string& body, double timeout_s) {
  const double timeout = timeout_s < 0 ? timeout_s_ : timeout_s;
  // A stopped local process would accept the connection (the kernel queues it) and never
  // answer: say so at once instead of waiting out the deadline.
  if (!endpoint_.tcp())
    if (std::string problem = StateProblem(endpoint_.pid); !problem.empty())
      return Unavailable(problem);
  int fd = ConnectFd(endpoint_, timeout);
  if (fd < 0) return Unreachable(-fd);
  asio::io_context ioc;
  beast::error_code ec;
  http::request<http::string_body> req{method == "POST" ? http::verb::post : http::verb::get,
                                       target, 11};
  req.set(http::field::host, endpoint_.tcp() ? endpoint_.host : "localhost");
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  req.body() = body;
  req.prepare_payload();
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxResponse);
  auto exchange = [&](auto& s) {
    beast::flat_buffer buf;
    http::write(s, req, ec);
    if (!ec) http::read(s, buf, parser, ec);
  };
  if (endpoint_.tcp()) {
    asio::ip::tcp::socket s(ioc);
    s.assign(asio::ip::tcp::v6(), fd, ec);
    if (!ec) exchange(s);
  } else {
    asio::local::stream_protocol::socket s(ioc);
    s.assign(asio::local::stream_protocol(), fd, ec);
    if (!ec) exchange(s);
  }
  if (ec) {
    if (ec == beast::error::timeout || ec.value() == EAGAIN || ec.value() == EWOULDBLOCK) {
      if (!endpoint_.tcp())
        if (std::string problem = StateProblem(endpoint_.pid); !problem.empty())
          return Unavailable(problem);
      return DeadlineExceeded(endpoint_.Describe() + " did not answer in " + Seconds(timeout) +
                              " s (--timeout sets the wait)");
    }
    if (!endpoint_.tcp() && StateOf(endpoint_.pid) == ProcessState::kGone)
      return Unreachable(ESRCH);
    return Unavailable("talking to " + endpoint_.Describe() + ": " + ec.message());
  }
  auto res = parser.release();
  Response out;
  out.status = static_cast<int>(res.result_int());
  out.content_type = std::string(res[http::field::content_type]);
  out.body = std::move(res.body());
  return out;
}

}  // namespace probing::live
