#include "probing/live/control_client.h"

#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace probing::live {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using json = nlohmann::json;

bool AllDigits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// Connects a stream socket with a timeout on every read and write; returns the fd or -errno.
int ConnectFd(const Target& t, int timeout_sec) {
  int fd = -1;
  if (t.tcp()) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(t.host.c_str(), std::to_string(t.port).c_str(), &hints, &res) != 0)
      return -EHOSTUNREACH;
    int err = ECONNREFUSED;
    for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
      fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
        err = errno;
        close(fd);
        fd = -1;
      }
    }
    freeaddrinfo(res);
    if (fd < 0) return -err;
  } else {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string name = "probing-" + std::to_string(t.pid);
    std::memcpy(addr.sun_path + 1, name.data(), name.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      int err = errno;
      close(fd);
      return -err;
    }
  }
  timeval tv{timeout_sec, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

}  // namespace

std::string Target::Describe() const {
  return tcp() ? host + ":" + std::to_string(port) : "process " + std::to_string(pid);
}

Result<Target> ParseTarget(const std::string& s) {
  Target t;
  if (AllDigits(s)) {
    long pid = std::strtol(s.c_str(), nullptr, 10);
    if (pid <= 0 || pid > 4194304) return InvalidArgument("'" + s + "' is not a process id");
    t.pid = static_cast<pid_t>(pid);
    return t;
  }
  size_t colon = s.rfind(':');
  if (colon != std::string::npos && colon > 0 && AllDigits(s.substr(colon + 1))) {
    long port = std::strtol(s.substr(colon + 1).c_str(), nullptr, 10);
    if (port > 0 && port < 65536) {
      t.host = s.substr(0, colon);
      if (t.host.size() > 2 && t.host.front() == '[' && t.host.back() == ']')
        t.host = t.host.substr(1, t.host.size() - 2);
      t.port = static_cast<int>(port);
      return t;
    }
  }
  return InvalidArgument("target '" + s + "' is neither a pid nor host:port");
}

std::string DefaultDataDir() {
  const char* d = std::getenv("PROBING_DATA_DIR");  // NOLINT(concurrency-mt-unsafe): read-only use
  return d != nullptr && *d != '\0' ? d : "/dev/shm/probing-" + std::to_string(getuid());
}

Status ControlClient::Unreachable(int err) const {
  if (target_.tcp())
    return Unavailable("cannot reach " + target_.Describe() + ": " +
                       std::error_code(err, std::generic_category()).message() +
                       " (is PROBING_PORT set, with PROBING_AUTH_TOKEN, in the target?)");
  std::string pid = std::to_string(target_.pid);
  if (kill(target_.pid, 0) != 0 && errno == ESRCH) {
    std::string dir = DefaultDataDir() + "/" + pid;
    if (std::filesystem::exists(dir + "/process.json"))
      return NotFound("process " + pid +
                      " is gone; what it recorded is still readable: probing-analyze " + dir);
    return NotFound("no process " + pid);
  }
  if (err == ECONNREFUSED || err == ENOENT)
    return NotFound("no recorder in process " + pid + ": run `probing -t " + pid +
                    " inject` first");
  return Unavailable("cannot reach the recorder in process " + pid + ": " +
                     std::error_code(err, std::generic_category()).message());
}

Result<json> ControlClient::Call(const std::string& method, const std::string& path,
                                 const std::string& body) {
  int fd = ConnectFd(target_, timeout_sec_);
  if (fd < 0) return Unreachable(-fd);
  asio::io_context ioc;
  beast::error_code ec;
  http::request<http::string_body> req{method == "POST" ? http::verb::post : http::verb::get, path,
                                       11};
  req.set(http::field::host, target_.tcp() ? target_.host : "localhost");
  req.set(http::field::content_type, "application/json");
  if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  req.body() = body;
  req.prepare_payload();
  http::response<http::string_body> res;
  auto exchange = [&](auto& s) {
    beast::flat_buffer buf;
    http::write(s, req, ec);
    if (!ec) http::read(s, buf, res, ec);
  };
  if (target_.tcp()) {
    asio::ip::tcp::socket s(ioc);
    s.assign(asio::ip::tcp::v6(), fd, ec);
    if (!ec) exchange(s);
  } else {
    asio::local::stream_protocol::socket s(ioc);
    s.assign(asio::local::stream_protocol(), fd, ec);
    if (!ec) exchange(s);
  }
  if (ec) {
    if (ec == beast::error::timeout || ec.value() == EAGAIN)
      return Unavailable(target_.Describe() + " did not answer in " + std::to_string(timeout_sec_) +
                         " s");
    return Unavailable("talking to " + target_.Describe() + ": " + ec.message());
  }
  json j = json::parse(res.body(), nullptr, /*allow_exceptions=*/false);
  if (res.result_int() != 200) {
    std::string msg = j.is_object() && j.contains("error") && j["error"].is_string()
                          ? j["error"].get<std::string>()
                          : "HTTP " + std::to_string(res.result_int());
    StatusCode code = res.result_int() == 404   ? StatusCode::kNotFound
                      : res.result_int() == 400 ? StatusCode::kInvalidArgument
                                                : StatusCode::kUnavailable;
    return Status(code, msg);
  }
  if (j.is_discarded()) return Internal("the recorder answered something that is not JSON");
  return j;
}

}  // namespace probing::live
