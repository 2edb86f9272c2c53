#include "probing/web/server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "dashboard.h"
#include "probing/live/control_client.h"

namespace probing::web {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr size_t kMaxBody = 1 << 20;  // an SQL statement or a setting
constexpr int kIoTimeoutS = 30;       // an idle keep-alive connection is closed after this
constexpr int kMaxConnections = 64;   // beyond this, new connections get 503 at once
constexpr int kStopWaitMs = 3000;     // requests in flight may finish when stopping

void SetTimeouts(int fd) {
  timeval tv{kIoTimeoutS, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  int port = 0;
  std::unique_ptr<Dashboard> dashboard;
  std::mutex mu;
  std::condition_variable idle;
  int connections = 0;
  std::set<int> open_fds;  // of the connections being served, to end them when stopping

  void Serve(tcp::socket socket);
};

void Server::Impl::Serve(tcp::socket socket) {
  beast::flat_buffer buffer;
  beast::error_code ec;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(kMaxBody);
    http::read(socket, buffer, parser, ec);
    if (ec) break;
    const auto& req = parser.get();
    HttpRequest request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    request.body = req.body();
    for (const auto& field : req) {
      std::string name(field.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      request.headers[name] = std::string(field.value());
    }
    HttpReply reply;
    try {
      reply = dashboard->Handle(request);
    } catch (const std::exception& e) {
      reply.status = 500;
      reply.body =
          protocol::ToJson(protocol::ErrorReply{std::string("internal error: ") + e.what()}).dump();
    }
    http::response<http::string_body> res{static_cast<http::status>(reply.status), req.version()};
    res.set(http::field::content_type, reply.content_type);
    res.set(http::field::server, "probing-web");
    res.set(http::field::cache_control, "no-store");
    res.set("X-Content-Type-Options", "nosniff");
    res.set("Referrer-Policy", "no-referrer");
    // Everything the page runs and loads is ours: no other origin, no eval, no inline script.
    res.set("Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
    if (reply.gzipped) res.set(http::field::content_encoding, "gzip");
    res.set(http::field::vary, "Accept-Encoding");
    for (const auto& [k, v] : reply.headers) res.set(k, v);
    res.keep_alive(req.keep_alive());
    if (req.method() == http::verb::head) {
      res.content_length(reply.body.size());
    } else {
      res.body() = std::move(reply.body);
      res.prepare_payload();
    }
    http::response_serializer<http::string_body> sr{res};
    http::write(socket, sr, ec);
    if (ec || !res.keep_alive()) break;
  }
  {
    // Out of the set before the fd is closed, so a stop never shuts down a reused fd.
    std::lock_guard<std::mutex> lock(mu);
    open_fds.erase(socket.native_handle());
  }
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

Server::Server(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::Create(const ServerOptions& options) {
  if (options.port < 0 || options.port > 65535)
    return InvalidArgument("--port must be from 0 to 65535, not " + std::to_string(options.port));
  if (!LoopbackHost(options.host) && options.token.empty())
    return InvalidArgument("--host " + options.host +
                           " reaches beyond this machine: give --token T (every request must then "
                           "carry it), or keep the default 127.0.0.1");
  if (options.timeout_s <= 0 || options.query_timeout_s <= 0)
    return InvalidArgument("timeouts must be positive");
  live::SessionOptions so;
  so.token = options.target_token;
  so.timeout_s = options.timeout_s;
  so.data_dir = options.data_dir;
  for (const std::string& t : options.targets) {
    Status st = Targets::Check(t, so);
    if (!st.ok()) return Status(st.code(), "target " + t + ": " + st.message());
  }
  auto impl = std::make_shared<Impl>();
  impl->options = options;
  boost::system::error_code ec;
  asio::ip::address address;
  if (options.host == "localhost") {
    address = asio::ip::make_address("127.0.0.1");
  } else {
    address = asio::ip::make_address(options.host, ec);
    if (ec) {
      tcp::resolver resolver(impl->ioc);
      auto found = resolver.resolve(options.host, "", ec);
      if (ec || found.empty())
        return InvalidArgument("--host " + options.host + ": not an address of this machine (" +
                               ec.message() + ")");
      address = found.begin()->endpoint().address();
    }
  }
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (ec) {
    const std::string where = options.host + ":" + std::to_string(options.port);
    if (ec == asio::error::address_in_use)
      return Unavailable("port " + std::to_string(options.port) + " on " + options.host +
                         " is in use: pick another with --port (0 takes any free one)");
    if (ec == boost::system::errc::address_not_available)
      return InvalidArgument("--host " + options.host + " is not an address of this machine");
    if (ec == asio::error::access_denied)
      return PermissionDenied("binding " + where + " needs privileges: use a port above 1023");
    return Internal("cannot listen on " + where + ": " + ec.message());
  }
  impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Internal("cannot listen: " + ec.message());
  impl->port = impl->acceptor.local_endpoint().port();
  impl->dashboard = std::make_unique<Dashboard>(options, impl->port);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

int Server::port() const { return impl_->port; }

std::string Server::url() const {
  std::string host = impl_->options.host;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  std::string u = "http://" + host + ":" + std::to_string(impl_->port) + "/";
  if (!impl_->options.token.empty()) u += "?token=" + protocol::UrlEncode(impl_->options.token);
  return u;
}

Status Server::Run(const std::atomic<bool>& stop) {
  Impl& s = *impl_;
  const int fd = s.acceptor.native_handle();
  while (!stop.load()) {
    pollfd p{fd, POLLIN, 0};
    const int n = poll(&p, 1, 200);
    if (n < 0 && errno != EINTR) return ErrnoStatus("waiting for connections", errno);
    if (n <= 0) continue;
    boost::system::error_code ec;
    tcp::socket socket(s.ioc);
    s.acceptor.accept(socket, ec);
    if (ec) continue;  // the client went away meanwhile, or no fds for now
    SetTimeouts(socket.native_handle());
    {
      std::lock_guard<std::mutex> lock(s.mu);
      if (s.connections >= kMaxConnections) {
        http::response<http::string_body> res{http::status::service_unavailable, 11};
        res.set(http::field::content_type, "application/json");
        res.body() =
            protocol::ToJson(protocol::ErrorReply{"too many connections; try again"}).dump();
        res.prepare_payload();
        http::write(socket, res, ec);
        continue;
      }
      ++s.connections;
      s.open_fds.insert(socket.native_handle());
    }
    try {
      // The thread holds the server's state: a request still running when Run returns ends
      // without touching freed memory.
      std::thread([impl = impl_, sock = std::move(socket)]() mutable {
        impl->Serve(std::move(sock));
        std::lock_guard<std::mutex> lock(impl->mu);
        --impl->connections;
        impl->idle.notify_all();
      }).detach();
    } catch (const std::system_error&) {  // no thread to be had: this connection is dropped
      std::lock_guard<std::mutex> lock(s.mu);
      --s.connections;
    }
  }
  boost::system::error_code ec;
  s.acceptor.close(ec);
  std::unique_lock<std::mutex> lock(s.mu);
  for (int open : s.open_fds) shutdown(open, SHUT_RD);  // idle keep-alive reads end now
  s.idle.wait_for(lock, std::chrono::milliseconds(kStopWaitMs), [&] { return s.connections == 0; });
  return Status::Ok();
}

}  // namespace probing::web
