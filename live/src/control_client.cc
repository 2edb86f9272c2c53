#include "probing/live/control_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <vector>

#include "probing/base/clock.h"
#include "probing/base/unique_fd.h"
#include "probing/live/http_io.h"
#include "probing/procfs/proc_stat.h"

namespace probing::live {
namespace {

namespace http = boost::beast::http;

constexpr uint64_t kMaxResponse = 512ull << 20;

bool AllDigits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

// Connects a stream socket to `addr` by `deadline_ns`; the fd or -errno.
int ConnectBefore(int family, const sockaddr* addr, socklen_t len, int64_t deadline_ns) {
  UniqueFd s(socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s.valid()) return -errno;
  int rc = connect(s.get(), addr, len);
  // A Unix socket whose queue is full says EAGAIN and is not connecting: try again shortly.
  while (rc != 0 && errno == EAGAIN && family == AF_UNIX) {
    if (MonotonicNs() >= deadline_ns) return -ETIMEDOUT;
    usleep(10000);
    rc = connect(s.get(), addr, len);
  }
  if (rc != 0) {
    if (errno != EINPROGRESS) return -errno;
    const int64_t left_ms = std::max<int64_t>(1, (deadline_ns - MonotonicNs()) / 1'000'000);
    pollfd p{s.get(), POLLOUT, 0};
    const int n = poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 1 << 30)));
    if (n == 0) return -ETIMEDOUT;
    if (n < 0) return -errno;
    int so_error = 0;
    socklen_t l = sizeof so_error;
    if (getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &so_error, &l) != 0) return -errno;
    if (so_error != 0) return -so_error;
  }
  return s.Release();
}

int ConnectAbstract(const std::string& name, int64_t deadline_ns) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof addr.sun_path) return -ENAMETOOLONG;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return ConnectBefore(AF_UNIX, reinterpret_cast<sockaddr*>(&addr), len, deadline_ns);
}

// The abstract names a recorder that found its usual name taken listens on instead
// ("probing-<pid>.<random>"), from the kernel's list of listening Unix sockets.
std::vector<std::string> FallbackNames(pid_t pid) {
  std::vector<std::string> out;
  const std::string prefix = "@" + std::string(protocol::kSocketPrefix) + std::to_string(pid) + ".";
  std::ifstream in("/proc/net/unix");
  std::string line;
  while (std::getline(in, line)) {
    const size_t at = line.find(prefix);
    if (at == std::string::npos || line.find_first_of(" \t", at) != std::string::npos) continue;
    out.push_back(line.substr(at + 1));
  }
  return out;
}

int ConnectTcp(const Endpoint& e, int64_t deadline_ns) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(e.host.c_str(), std::to_string(e.port).c_str(), &hints, &res) != 0)
    return -EHOSTUNREACH;
  int result = -ECONNREFUSED;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    result = ConnectBefore(a->ai_family, a->ai_addr, a->ai_addrlen, deadline_ns);
    if (result >= 0) break;
  }
  freeaddrinfo(res);
  return result;
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

namespace {

// NAME=value from a process's initial environment, or "" (unset, or not ours to read).
std::string InitialEnv(pid_t pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  std::string entry;
  while (std::getline(in, entry, '\0'))
    if (entry.size() > name.size() && entry.compare(0, name.size() + 1, name + "=") == 0)
      return entry.substr(name.size() + 1);
  return "";
}

}  // namespace

std::string NoRecorder(pid_t pid) {
  const std::string p = std::to_string(pid);
  const std::string inject = "`probing -t " + p + " inject`";
  std::string var = "PROBING", mode = InitialEnv(pid, "PROBING");
  if (mode.empty()) var = "PROBE", mode = InitialEnv(pid, "PROBE");
  if (mode.empty() || mode == "0") return "no recorder in process " + p + ": run " + inject + " first";
  // It asked for one: say why there is none.
  const std::string asked = "no recorder in process " + p + ", though its environment has " +
                            var + "=" + mode;
  std::error_code ec;
  const std::string exe = std::filesystem::read_symlink("/proc/" + p + "/exe", ec).string();
  std::ifstream maps("/proc/" + p + "/maps");
  std::string line, recorder;
  bool libpython = false;
  while (std::getline(maps, line)) {
    if (line.find("/probing_recorder_cp") != std::string::npos) recorder = line.substr(line.find('/'));
    if (line.find("/libpython3") != std::string::npos) libpython = true;
  }
  if (!recorder.empty())
    return asked + ": it loaded the recorder (" + recorder +
           ") but the recorder did not start; the process's standard error says why (a line "
           "starting with 'probing:')";
  const std::string base = std::filesystem::path(exe).filename().string();
  if (!libpython && base.rfind("python", 0) != 0)
    return asked + ", but it is not a Python interpreter (" + (exe.empty() ? "?" : exe) +
           "): the recorder runs in Python processes";
  if (mode != "1" && mode != "2")
    return asked + ": only 1 or 2 start the recorder (the process's standard error says so); "
           "run " + inject + " now";
  const auto started = procfs::ProcessStartNs(pid);
  if (started && RealtimeNs() - *started < 3'000'000'000)
    return asked + ": it started less than 3 s ago and the recorder may not be up yet; try "
           "again in a moment";
  // The interpreter as it was started (a venv's bin/python is a link to the base one, which
  // /proc/PID/exe names): argv[0] when it is a path, else an activated venv's, else exe.
  std::ifstream cmdline("/proc/" + p + "/cmdline", std::ios::binary);
  std::string argv0;
  std::getline(cmdline, argv0, '\0');
  const std::string venv = InitialEnv(pid, "VIRTUAL_ENV");
  std::string python = exe.empty() ? "python3" : exe;
  if (argv0.find('/') != std::string::npos) {
    const std::filesystem::path cwd = std::filesystem::read_symlink("/proc/" + p + "/cwd", ec);
    python = argv0[0] == '/' || ec ? argv0 : (cwd / argv0).lexically_normal().string();
  } else if (!venv.empty()) {
    python = venv + "/bin/python";
  }
  return asked + ": its interpreter did not load the start-up hook (" + python +
         " has none, or could not load the recorder: its standard error says which). Install "
         "the hook with `probing install --python " + python +
         "` and restart the program, or run " + inject + " now";
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
    return NotFound("no such process " + p);
  }
  if (std::string problem = StateProblem(pid); !problem.empty()) return Unavailable(problem);
  if (err == ECONNREFUSED || err == ENOENT) return NotFound(NoRecorder(pid));
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

Result<UniqueFd> ControlClient::ConnectLocal(int64_t deadline_ns) {
  const pid_t pid = endpoint_.pid;
  const std::string p = std::to_string(pid);
  // The name it answered on before, its usual one, then the ones a recorder takes when the
  // usual one is held by someone else. Each is trusted only once the kernel says that the
  // process listening on it is the target itself (SO_PEERCRED: the pid that called listen).
  std::vector<std::string> names;
  if (!socket_name_.empty()) names.push_back(socket_name_);
  names.push_back(protocol::SocketName(pid));
  bool looked = false;
  int first_error = 0;
  std::string impostor;
  for (size_t i = 0;; ++i) {
    if (i == names.size()) {
      // Reading /proc/net/unix costs more than a connect: a caller retrying every millisecond
      // for a recorder that is starting (inject) reads it at most every 50 ms, unless someone
      // else holds the usual name (then at once: the recorder moved).
      if (looked || (impostor.empty() && MonotonicNs() - last_scan_ns_ < 50'000'000)) break;
      looked = true;
      last_scan_ns_ = MonotonicNs();
      for (auto& n : FallbackNames(pid))
        if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
      if (i == names.size()) break;
    }
    const int fd = ConnectAbstract(names[i], deadline_ns);
    if (fd < 0) {
      if (first_error == 0 || first_error == ECONNREFUSED) first_error = -fd;
      continue;
    }
    UniqueFd s(fd);
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid == pid) {
      socket_name_ = names[i];
      return s;
    }
    if (impostor.empty())
      impostor = "@" + names[i] + " is held by process " + std::to_string(cred.pid) +
                 " (user " + std::to_string(cred.uid) + "), not by process " + p;
  }
  if (!impostor.empty())
    return PermissionDenied("refusing to talk to process " + p + "'s control socket: " +
                            impostor +
                            "; someone may be impersonating its recorder, and nothing was sent "
                            "to it (`probing -t " + p +
                            " inject` starts a recorder that listens elsewhere)");
  return Unreachable(first_error != 0 ? first_error : ECONNREFUSED);
}

Result<Response> ControlClient::Request(std::string_view method, const std::string& target,
                                        const std::string& body, double timeout_s) {
  const double timeout = timeout_s < 0 ? timeout_s_ : timeout_s;
  const int64_t deadline = MonotonicNs() + static_cast<int64_t>(timeout * 1e9);
  const bool local = !endpoint_.tcp();
  // A stopped local process would accept the connection (the kernel queues it) and never
  // answer: say so at once instead of waiting out the deadline.
  if (local)
    if (std::string problem = StateProblem(endpoint_.pid); !problem.empty())
      return Unavailable(problem);
  UniqueFd fd;
  if (local) {
    PROBING_ASSIGN_OR_RETURN(fd, ConnectLocal(deadline));
  } else {
    const int c = ConnectTcp(endpoint_, deadline);
    if (c < 0) return Unreachable(-c);
    fd = UniqueFd(c);
  }
  http::request<http::string_body> req{method == "POST" ? http::verb::post : http::verb::get,
                                       target, 11};
  req.set(http::field::host, local ? "localhost" : endpoint_.host);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  req.keep_alive(false);
  req.body() = body;
  req.prepare_payload();
  HttpConnection conn(fd.get());
  // While it waits, a local target that gets stopped (or exits) is named as such at once.
  if (local) {
    const pid_t pid = endpoint_.pid;
    conn.SetGiveUp([pid] { return StateOf(pid) != ProcessState::kRunning; }, 200);
  }
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxResponse);
  IoOutcome io = conn.Write(Serialize(req), deadline);
  if (io == IoOutcome::kOk) io = conn.Read(parser, deadline);
  switch (io) {
    case IoOutcome::kOk: break;
    case IoOutcome::kTimeout:
    case IoOutcome::kGaveUp:
      if (local) {
        if (StateOf(endpoint_.pid) == ProcessState::kGone) return Unreachable(ESRCH);
        if (std::string problem = StateProblem(endpoint_.pid); !problem.empty())
          return Unavailable(problem);
      }
      return DeadlineExceeded(endpoint_.Describe() + " did not answer in " + Seconds(timeout) +
                              " s (--timeout sets the wait)");
    case IoOutcome::kBadInput:
      return DataLoss(endpoint_.Describe() +
                      " answered with something that is not an HTTP answer of a Probing "
                      "recorder (or one larger than " +
                      std::to_string(kMaxResponse >> 20) + " MiB)");
    case IoOutcome::kClosed:
    case IoOutcome::kError:
      if (local && StateOf(endpoint_.pid) == ProcessState::kGone) return Unreachable(ESRCH);
      return Unavailable("talking to " + endpoint_.Describe() + ": " +
                         (io == IoOutcome::kClosed ? std::string("it closed the connection")
                                                   : ErrnoText(conn.error())));
  }
  auto res = parser.release();
  Response out;
  out.status = static_cast<int>(res.result_int());
  out.content_type = std::string(res[http::field::content_type]);
  out.body = std::move(res.body());
  return out;
}

}  // namespace probing::live
