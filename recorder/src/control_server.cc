#include "control_server.h"

#include <Python.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "collectives.h"
#include "config.h"
#include "log.h"
#include "native_stack.h"
#include "probing/base/clock.h"
#include "probing/base/unique_fd.h"
#include "probing/live/http_io.h"
#include "py_helpers.h"
#include "py_module.h"
#include "py_ref.h"
#include "torch_hooks.h"

namespace probing::recorder {
namespace {

namespace http = boost::beast::http;
using json = nlohmann::json;

// Connections come in two pools, so that no number of strangers can crowd out the owner:
// trusted ones (the owner's user or root on the Unix socket, TCP clients once they showed the
// token) and the others (TCP clients that have not yet, other users on the Unix socket, who
// only ever get a 403).
constexpr int kMaxTrusted = 64;
constexpr int kMaxUntrusted = 16;
// A whole request must arrive within this of the connection or of the previous answer
// (idle keep-alive and half-sent requests alike); an answer must be taken within
// kWriteTimeoutNs (plus a second per MiB).
constexpr int64_t kRequestTimeoutNs = 10'000'000'000;
// A stranger's whole first request (with its token) must arrive within this of connecting.
constexpr int64_t kUntrustedTimeoutNs = 3'000'000'000;
constexpr int64_t kWriteTimeoutNs = 10'000'000'000;
constexpr size_t kMaxBody = 1 << 20;
constexpr const char* kRecorderVersion = "0.1.0";

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

ControlServer::Reply Error(int status, const std::string& message) {
  return {status, Dump(protocol::ToJson(protocol::ErrorReply{message}))};
}

template <typename T>
ControlServer::Reply Ok(const T& answer) {
  return {200, Dump(protocol::ToJson(answer))};
}

// Sent on a connection refused before it is served (too many, no thread), without waiting.
void Refuse(int fd, const char* why) {
  std::string body = std::string("{\"error\": \"") + why + "\"}\n";
  std::string msg = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    "Content-Length: " +
                    std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  (void)!send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  close(fd);
}

// "Bearer <token>", the scheme in any case (RFC 7235: schemes are case-insensitive).
std::string BearerToken(std::string_view auth) {
  constexpr std::string_view kScheme = "bearer";
  if (auth.size() <= kScheme.size() || auth[kScheme.size()] != ' ') return "";
  for (size_t i = 0; i < kScheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(auth[i])) != kScheme[i]) return "";
  auth.remove_prefix(kScheme.size());
  while (!auth.empty() && auth.front() == ' ') auth.remove_prefix(1);
  while (!auth.empty() && auth.back() == ' ') auth.remove_suffix(1);
  return std::string(auth);
}

// Constant-time comparison for the token.
bool SameToken(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

int GilTimeoutMs() { return 5000; }

// Python helpers --------------------------------------------------------------------------

std::string Utf8(PyObject* o) {
  if (o == nullptr || !PyUnicode_Check(o)) return "";
  const char* s = PyUnicode_AsUTF8(o);
  if (s == nullptr) {
    PyErr_Clear();
    return "";
  }
  return s;
}

// Python object -> JSON, for the small, plain values the helpers return.
json ToJson(PyObject* o, int depth = 0) {
  if (o == nullptr || o == Py_None || depth > 20) return nullptr;
  if (PyBool_Check(o)) return o == Py_True;
  if (PyLong_Check(o)) {
    long long v = PyLong_AsLongLong(o);
    if (PyErr_Occurred()) {
      PyErr_Clear();
      PyRef text(PyObject_Str(o));
      return Utf8(text.get());
    }
    return v;
  }
  if (PyFloat_Check(o)) return PyFloat_AsDouble(o);
  if (PyUnicode_Check(o)) return Utf8(o);
  if (PyList_Check(o) || PyTuple_Check(o)) {
    json a = json::array();
    Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    for (Py_ssize_t i = 0; i < n; ++i)
      a.push_back(ToJson(PySequence_Fast_GET_ITEM(o, i), depth + 1));
    return a;
  }
  if (PyDict_Check(o)) {
    json d = json::object();
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(o, &pos, &k, &v)) {
      PyRef ks(PyObject_Str(k));
      d[Utf8(ks.get())] = ToJson(v, depth + 1);
    }
    PyErr_Clear();
    return d;
  }
  PyRef text(PyObject_Str(o));
  std::string out = Utf8(text.get());
  PyErr_Clear();
  return out;
}

}  // namespace

ControlServer::ControlServer(ServerContext ctx) : ctx_(std::move(ctx)) {
  if (ctx_.reader != nullptr && ctx_.reader->Available())
    sampler_ = std::make_unique<StackSampler>(*ProbingGetPyOffsets(), *ctx_.reader);
}

std::string ControlServer::socket_name() const { return "@" + socket_name_; }

namespace {

// A listening abstract Unix socket named exactly `name` (no trailing NUL); -errno on failure.
int ListenAbstract(const std::string& name) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 64) != 0) {
    const int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

std::string RandomHex() {
  unsigned char bytes[8] = {};
  if (getrandom(bytes, sizeof bytes, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof bytes)) {
    const uint64_t t = static_cast<uint64_t>(MonotonicNs()) ^ static_cast<uint64_t>(getpid());
    std::memcpy(bytes, &t, sizeof bytes);
  }
  char out[17];
  for (size_t i = 0; i < sizeof bytes; ++i) std::snprintf(out + 2 * i, 3, "%02x", bytes[i]);
  return out;
}

// A token for TCP clients when PROBING_AUTH_TOKEN gives none: 32 random bytes from the kernel, as
// hex. False when the kernel has none to give (then TCP stays closed: a guessable token is none).
bool GenerateToken(std::string* token, std::string* why) {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *why = std::string("no random bytes for a token: ") + std::strerror(errno);
      return false;
    }
    got += static_cast<size_t>(n);
  }
  token->clear();
  char hex[3];
  for (unsigned char b : bytes) {
    std::snprintf(hex, sizeof hex, "%02x", b);
    *token += hex;
  }
  return true;
}

// Writes `token` to `path`, a new file only its owner can read (0600). Never follows a symbolic
// link and never writes into a file that was there: one left by an earlier recorder of the same
// pid (in our own private directory) is removed first.
bool WriteTokenFile(const std::string& path, const std::string& token, std::string* why) {
  const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  UniqueFd fd(open(path.c_str(), flags, 0600));
  if (!fd.valid() && errno == EEXIST && unlink(path.c_str()) == 0)
    fd = UniqueFd(open(path.c_str(), flags, 0600));
  if (!fd.valid()) {
    *why = "cannot create " + path + ": " + std::strerror(errno);
    return false;
  }
  const std::string text = token + "\n";
  if (fchmod(fd.get(), 0600) != 0 ||
      write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    *why = "cannot write " + path + ": " + std::strerror(errno);
    unlink(path.c_str());
    return false;
  }
  return true;
}

// Starts `fn` on a thread of its own; false (with why) when the system has none to give.
bool StartThread(std::function<void()> fn, std::string* why) {
  try {
    std::thread(std::move(fn)).detach();
    return true;
  } catch (const std::exception& e) {
    *why = e.what();
    return false;
  }
}

}  // namespace

bool ControlServer::Start(std::string* why) {
  // Abstract Unix socket: "\0probing-<pid>", exactly that long. Abstract names have no
  // permissions: another user may hold ours already (to impersonate this recorder). Then this
  // server listens on a name nobody can guess, and clients, which trust a socket only when
  // this process listens on it, find it there; the user is told, loudly.
  socket_name_ = protocol::SocketName(ctx_.pid);
  int fd = ListenAbstract(socket_name_);
  if (fd == -EADDRINUSE) {
    const std::string taken = socket_name_;
    socket_name_ = taken + "." + RandomHex();
    fd = ListenAbstract(socket_name_);
    if (fd >= 0)
      Log("WARNING: the control socket @" + taken +
          " is held by another process (someone may be impersonating this recorder); "
          "listening on " + socket_name() +
          " instead. probing finds it there and refuses the other one; do not trust tools "
          "that talk to @" + taken + ".");
  }
  if (fd < 0) {
    *why = "cannot listen on " + socket_name() + ": " + std::strerror(-fd);
    return false;
  }
  std::string thread_why;
  if (!StartThread([this, fd] { AcceptLoop(fd, false); }, &thread_why)) {
    close(fd);
    *why = "no thread for the control server: " + thread_why;
    return false;
  }

  int port = probing::recorder::Config::Get().server_port();
  // Several ranks of a job on one host share PROBING_PORT: each listens on it plus its local
  // rank, the address it registers in the job's store.
  if (port != 0 && ctx_.process.local_rank > 0) port += ctx_.process.local_rank;
  if (port != 0) {
    // Never without a token: TCP without one would let anyone who reaches the port run code
    // here. Without PROBING_AUTH_TOKEN the server makes its own and leaves it, for its owner
    // only, in the ring directory, where probing on this host finds it (live/session.cc).
    const char* token = std::getenv("PROBING_AUTH_TOKEN");
    if (token != nullptr && *token != '\0') {
      token_ = token;
    } else {
      std::string token_why;
      const std::string path = ctx_.data_dir + "/" + std::string(protocol::kTokenFile);
      if (!GenerateToken(&token_, &token_why) || !WriteTokenFile(path, token_, &token_why)) {
        Log("TCP control server not started on port " + std::to_string(port) + ": " + token_why);
        token_.clear();
        return true;
      }
      token_file_ = path;
    }
    // Undoes the TCP part: TCP stays closed, and a token made for it is gone.
    auto close_tcp = [this] {
      token_.clear();
      if (!token_file_.empty()) unlink(token_file_.c_str());
      token_file_.clear();
    };
    int tfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1, zero = 0;
    setsockopt(tfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(tfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);  // IPv4 too
    sockaddr_in6 a6{};
    a6.sin6_family = AF_INET6;
    a6.sin6_addr = in6addr_any;
    a6.sin6_port = htons(static_cast<uint16_t>(port));
    if (tfd < 0 || bind(tfd, reinterpret_cast<sockaddr*>(&a6), sizeof a6) != 0 ||
        listen(tfd, 64) != 0) {
      Log("TCP control server not started on port " + std::to_string(port) + ": " +
          std::strerror(errno));
      if (tfd >= 0) close(tfd);
      close_tcp();
      return true;
    }
    std::string thread_why;
    if (!StartThread([this, tfd] { AcceptLoop(tfd, true); }, &thread_why)) {
      Log("TCP control server not started: no thread: " + thread_why);
      close(tfd);
      close_tcp();
      return true;
    }
    tcp_port_ = port;
  }
  return true;
}

void ControlServer::SetProcess(const format::ProcessInfo& process) {
  std::lock_guard<std::mutex> lock(identity_mu_);
  ctx_.process = process;
}

// How far the rank has got: its step, each group's last sequence number, the collective it is
// in. Never needs the GIL: a rank stuck holding it answers (its sequence numbers as of the
// last time the recorder could read them).
ControlServer::Reply ControlServer::ProgressNow() {
  const Progress p = GetProgress();
  const int64_t now = RealtimeNs();
  auto s = [](int64_t ns) { return static_cast<double>(ns) / 1e9; };
  protocol::ProgressReply r;
  r.now = s(now);
  r.step = static_cast<int64_t>(p.step);
  r.step_changed = s(p.step_changed_ns);
  int64_t last = p.step_changed_ns;
  for (const auto& [name, g] : p.groups) {
    r.groups.push_back({name, static_cast<int64_t>(g.seq), s(g.changed_ns)});
    last = std::max(last, g.changed_ns);
  }
  if (p.current)
    r.current = protocol::ProgressReply::Call{p.current->op, p.current->group,
                                              static_cast<int64_t>(p.current->seq),
                                              s(p.current->since_ns),
                                              static_cast<int64_t>(p.current->thread)};
  r.collectives = p.collectives;
  r.stalled = last == 0 ? 0 : s(now - last);
  r.hang_seconds = probing::recorder::Config::Get().hang_seconds();
  return Ok(r);
}

void ControlServer::SetMembers(std::string json) {
  std::lock_guard<std::mutex> lock(identity_mu_);
  members_ = std::move(json);
}

// What this rank knows of its job: its own identity, and the members the job's store listed
// (none yet: an empty list, with `complete` false). Never needs the GIL.
ControlServer::Reply ControlServer::Cluster() {
  protocol::ClusterReply r;
  std::string members;
  {
    std::lock_guard<std::mutex> lock(identity_mu_);
    r.run_id = ctx_.process.run_id;
    r.world_size = ctx_.process.world_size;
    members = members_;
  }
  if (!members.empty()) {
    try {
      json j = json::parse(members);
      for (const auto& m : j) r.members.push_back(m.get<protocol::Member>());
    } catch (const std::exception& e) {
      return Error(500, std::string("the job's member list is not readable: ") + e.what());
    }
  }
  r.complete = r.world_size > 0 && static_cast<int64_t>(r.members.size()) >= r.world_size;
  return Ok(r);
}

void ControlServer::AcceptLoop(int fd, bool tcp) {
  pthread_setname_np(pthread_self(), tcp ? "probing-tcp" : "probing-server");
  for (;;) {
    int c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE ||
          errno == ENOBUFS || errno == ENOMEM) {
        if (errno != EINTR && errno != ECONNABORTED) usleep(100000);
        continue;
      }
      Log(std::string("control server stopped accepting: ") + std::strerror(errno));
      return;
    }
    // Who is calling: on the Unix socket, the kernel's word (SO_PEERCRED) before reading
    // anything. The owner's user and root are trusted; TCP clients become so with the token.
    bool trusted = false;
    if (!tcp) {
      ucred cred{};
      socklen_t len = sizeof cred;
      trusted = getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
                (cred.uid == geteuid() || cred.uid == 0);
    }
    std::atomic<int>& pool = trusted ? trusted_ : untrusted_;
    // A stranger finding the strangers' pool full takes the place of the one waiting longest
    // (closed under it), so that idle connections cannot keep a token holder from ever being
    // read; the pool is over its size only until that one's thread has gone.
    if (pool.fetch_add(1) >= (trusted ? kMaxTrusted : kMaxUntrusted) &&
        (trusted || !EvictOldestStranger())) {
      pool.fetch_sub(1);
      Refuse(c, "too many connections; retry");
      continue;
    }
    if (!trusted) {
      std::lock_guard<std::mutex> lock(strangers_mu_);
      strangers_[c] = MonotonicNs();
    }
    // A thread per connection (it may wait on the GIL for seconds); none to be had is a refused
    // connection, never the end of the process.
    std::string why;
    if (!StartThread([this, c, tcp, trusted] { Serve(c, tcp, trusted); }, &why)) {
      ForgetStranger(c);
      pool.fetch_sub(1);
      Refuse(c, "the recorder cannot start a thread now; retry");
    }
  }
}

bool ControlServer::EvictOldestStranger() {
  std::lock_guard<std::mutex> lock(strangers_mu_);
  if (strangers_.empty()) return false;
  auto oldest = strangers_.begin();
  for (auto it = strangers_.begin(); it != strangers_.end(); ++it)
    if (it->second < oldest->second) oldest = it;
  // Its thread, waiting in poll, sees the end of the connection and leaves; the descriptor is
  // still open (a thread forgets itself here before it closes its descriptor).
  shutdown(oldest->first, SHUT_RDWR);
  strangers_.erase(oldest);
  return true;
}

void ControlServer::ForgetStranger(int fd) {
  std::lock_guard<std::mutex> lock(strangers_mu_);
  strangers_.erase(fd);
}

void ControlServer::Serve(int fd, bool tcp, bool trusted) {
  UniqueFd owned(fd);
  live::HttpConnection conn(fd);
  // Leaves the pool it is counted in, whichever that is by then; destroyed before `owned`
  // closes the descriptor.
  struct Leave {
    ControlServer* server;
    bool* trusted;
    int fd;
    ~Leave() {
      if (!*trusted) server->ForgetStranger(fd);
      (*trusted ? server->trusted_ : server->untrusted_).fetch_sub(1);
    }
  } leave{this, &trusted, fd};
  const std::string refusal = "permission denied: process " + std::to_string(ctx_.pid) +
                              " answers only its own user and root";
  int64_t deadline = MonotonicNs() + (trusted ? kRequestTimeoutNs : kUntrustedTimeoutNs);
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(kMaxBody);
    const live::IoOutcome got = conn.Read(parser, deadline);
    if (got == live::IoOutcome::kBadInput) {
      Reply bad = Error(400, "not an HTTP/1.1 request this server takes (bodies up to 1 MiB)");
      http::response<http::string_body> res{http::status::bad_request, 11};
      res.set(http::field::content_type, bad.content_type);
      res.keep_alive(false);
      res.body() = bad.body + "\n";
      res.prepare_payload();
      conn.Write(live::Serialize(res), MonotonicNs() + kUntrustedTimeoutNs);
      return;
    }
    if (got != live::IoOutcome::kOk) return;  // closed, or too slow: the thread is freed
    const auto& req = parser.get();
    Reply reply;
    bool keep = req.keep_alive();
    if (!tcp && !trusted) {
      reply = Error(403, refusal);
      keep = false;
    } else if (tcp && !SameToken(BearerToken(std::string(req[http::field::authorization])),
                                 token_)) {
      reply = Error(401,
                    "a valid token is required: send Authorization: Bearer <token> (probing "
                    "--token or PROBING_AUTH_TOKEN); a recorder started without "
                    "PROBING_AUTH_TOKEN made one, in the file token of its ring directory, "
                    "readable by its user only");
      keep = false;
    } else if (tcp && !trusted) {
      // Shown the token: counted with the trusted from now on, if there is room.
      if (trusted_.fetch_add(1) >= kMaxTrusted) {
        trusted_.fetch_sub(1);
        reply = Error(503, "too many connections; retry");
        keep = false;
      } else {
        ForgetStranger(fd);
        untrusted_.fetch_sub(1);
        trusted = true;
      }
    }
    if (reply.body.empty())
      reply = Handle(std::string(req.method_string()), std::string(req.target()), req.body());
    http::response<http::string_body> res{static_cast<http::status>(reply.status), req.version()};
    res.set(http::field::content_type, reply.content_type);
    res.set(http::field::server, "probing-recorder");
    res.keep_alive(keep);
    res.body() = std::move(reply.body);
    if (reply.content_type == "application/json") res.body() += "\n";
    res.prepare_payload();
    const std::string bytes = live::Serialize(res);
    const int64_t write_ns = kWriteTimeoutNs + static_cast<int64_t>(bytes.size() >> 20) * 1'000'000'000;
    if (conn.Write(bytes, MonotonicNs() + write_ns) != live::IoOutcome::kOk || !keep) return;
    deadline = MonotonicNs() + kRequestTimeoutNs;  // the next request, whole, by then
  }
}

ControlServer::Reply ControlServer::Handle(const std::string& method, const std::string& target,
                                           const std::string& body) {
  const protocol::RequestTarget t = protocol::ParseRequestTarget(target);
  const std::string& path = t.path;
  try {
    if (path == protocol::kInfoPath && method == "GET") return Info();
    if (path == protocol::kEvalPath && method == "POST") return Eval(body);
    if (path == protocol::kBacktracePath && method == "GET") {
      auto request = protocol::BacktraceRequest::FromQuery(t.query);
      if (!request.ok()) return Error(400, request.status().message());
      return Backtrace(*request);
    }
    if (path == protocol::kConfigPath && (method == "GET" || method == "POST"))
      return Settings(method, t.query, body);
    if (path == protocol::kTablesPath && method == "GET") return Tables("");
    if (path.rfind(std::string(protocol::kTablesPath) + "/", 0) == 0 && method == "GET")
      return Tables(path.substr(protocol::kTablesPath.size() + 1));
    if (path == protocol::kSealPath && method == "POST") return Seal();
    if (path == protocol::kClusterPath && method == "GET") return Cluster();
    if (path == protocol::kProgressPath && method == "GET") return ProgressNow();
    if (path == protocol::kSegmentsPath && method == "GET") {
      auto request = protocol::SegmentsRequest::FromQuery(t.query);
      if (!request.ok()) return Error(400, request.status().message());
      return Segments(*request);
    }
  } catch (const std::exception& e) {
    return Error(400, std::string("bad request: ") + e.what());
  }
  return Error(404, "unknown endpoint " + method + " " + path +
                        "; endpoints: GET /info, POST /eval, GET /backtrace, GET|POST /config, "
                        "GET /tables, GET /tables/<name>, POST /seal, GET /segments, "
                        "GET /cluster, GET /progress");
}

ControlServer::Reply ControlServer::Seal() {
  protocol::SealReply r;
  if (ctx_.seal) r.sealed = ctx_.seal();
  return Ok(r);
}

ControlServer::Reply ControlServer::Segments(const protocol::SegmentsRequest& request) {
  protocol::SegmentBatch batch;
  if (request.seal && ctx_.seal) batch.sealed = ctx_.seal();
  std::lock_guard<std::mutex> lock(rings_mu_);
  // Rings appear as the process goes on (torch.ring once PyTorch is imported): look each time.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(ctx_.data_dir, ec)) {
    if (e.path().extension() != ".ring" || !e.is_regular_file(ec) || e.is_symlink(ec)) continue;
    std::string name = e.path().stem().string();
    if (rings_.count(name) != 0) continue;
    auto reader = format::RingReader::Open(e.path().string());
    if (reader.ok()) rings_[name] = std::make_unique<format::RingReader>(std::move(reader).value());
  }
  uint64_t bytes = 0;
  std::string copy;
  for (const auto& [name, reader] : rings_) {
    if (!request.rings.empty() &&
        std::find(request.rings.begin(), request.rings.end(), name) == request.rings.end())
      continue;
    protocol::RingState st;
    st.name = name;
    st.oldest = reader->oldest_seq();
    st.next = reader->next_seq();
    auto from = request.from.find(name);
    st.from = from == request.from.end() ? st.oldest : std::min(from->second, st.next);
    uint64_t seq = st.from;
    if (seq < st.oldest) {  // overwritten since the client's last visit
      st.lost += st.oldest - seq;
      seq = st.oldest;
    }
    const auto index = static_cast<uint32_t>(batch.rings.size());
    for (; seq < st.next; ++seq) {
      if (bytes >= request.max_bytes) {
        batch.more = true;
        break;
      }
      if (!reader->Read(seq, &copy).ok()) {  // overwritten while we read it
        ++st.lost;
        continue;
      }
      bytes += copy.size();
      batch.segments.push_back({index, seq, std::move(copy)});
      copy.clear();
    }
    st.to = seq;
    batch.rings.push_back(std::move(st));
  }
  return {200, protocol::EncodeSegmentBatch(batch), std::string(protocol::kSegmentsMediaType)};
}

ControlServer::Reply ControlServer::GilTimeout() const {
  return Error(503, "the interpreter has not released the GIL for " +
                        std::to_string(GilTimeoutMs() / 1000) + " s; ring data is still available");
}

namespace {

std::string GilBusyText() {
  char share[32];
  std::snprintf(share, sizeof share, "%g", Config::Get().gil_share() * 100);
  return std::string("busy: requests that need the GIL may take ") + share +
         "% of the interpreter's time (probing.server.gil_share), and others are using it; "
         "retry";
}

}  // namespace

ControlServer::Reply ControlServer::GilBusy() const {
  return Error(503, GilBusyText() + " (ring data is still available)");
}

ControlServer::Reply ControlServer::Info() {
  const auto& config = probing::recorder::Config::Get();
  protocol::InfoReply r;
  r.now = static_cast<double>(RealtimeNs()) / 1e9;  // first: the client's clock offset uses it
  format::ProcessInfo process;
  {
    std::lock_guard<std::mutex> lock(identity_mu_);
    process = ctx_.process;
  }
  r.pid = ctx_.pid;
  r.python_version = process.python_version;
  r.cmdline = process.cmdline;
  r.recorder_version = kRecorderVersion;
  r.uptime = static_cast<double>(MonotonicNs() - ctx_.started_ns) / 1e9;
  r.host = process.host;
  r.data_dir = ctx_.data_dir;
  r.socket = socket_name();
  if (process.rank >= 0) r.rank = process.rank;
  if (!process.run_id.empty()) r.run_id = process.run_id;
  if (process.world_size >= 0) r.world_size = process.world_size;
  if (process.local_rank >= 0) r.local_rank = process.local_rank;
  if (!process.node.empty()) r.node = process.node;
  r.role = process.role;
  if (tcp_port_.load() != 0) r.tcp_port = tcp_port_.load();
  r.enabled.stack_sampler = sampler_ != nullptr && config.sampler_enabled();
  r.enabled.memory_sampler = true;
  r.enabled.torch = config.torch_enabled();
  r.enabled.tcp = !token_.empty();
  if (ctx_.sampler_counts) r.stack_samples = ctx_.sampler_counts();
  if (sampler_ != nullptr) r.stack_reads = sampler_->read_mode();
  if (ctx_.notes) r.notes = ctx_.notes();
  TorchState t = GetTorchState();  // as of the tracer's last step end
  r.torch.tracing = t.installed;
  r.torch.step = static_cast<int64_t>(t.step);
  r.torch.step_traced = t.traced;
  r.torch.hooks_installed = t.hooks;
  if (t.installed) {
    const TorchBudget b = GetTorchBudget();
    protocol::InfoReply::Torch::Budget& out = r.torch.budget.emplace();
    if (b.fraction > 0) out.fraction = b.fraction;
    out.cost_share = b.step_ns > 0 ? b.cost_ns / b.step_ns : 0;
    out.traced_share = b.steps > 0 ? b.traced / b.steps : 0;
    out.traced_step_cost_ms = b.traced_cost_ns / 1e6;
    out.untraced_step_cost_ms = b.untraced_cost_ns / 1e6;
    out.left_out = b.left_out;
    out.stride = b.stride;
    out.calibrated = b.calibrated;
    out.wrap_call_ns = b.wrap_ns;
    out.hook_call_ns = b.hooks_ns;
    out.grad_hook_ns = b.grad_ns;
  }
  return Ok(r);
}

bool ControlServer::EnsureHelpers() {
  if (helpers_ != nullptr) return true;
  std::string why;
  helpers_ = RunPythonSource(kServerHelpers, {}, &why);
  return helpers_ != nullptr;
}

ControlServer::Reply ControlServer::Eval(const std::string& body) {
  protocol::EvalRequest in;
  try {
    in = json::parse(body).get<protocol::EvalRequest>();
  } catch (const std::exception&) {
    return Error(400, "eval needs {\"code\": \"...\", \"timeout\": seconds}");
  }
  const double timeout = in.timeout;
  if (!(timeout > 0 && timeout <= 3600)) return Error(400, "timeout must be 0 < t <= 3600 seconds");
  struct Outcome {
    protocol::EvalReply reply;
    std::string error;
  };
  auto out = std::make_shared<Outcome>();
  auto outcome = ctx_.gil->RunInterruptible(
      [this, out, code = std::move(in.code), timeout] {
        if (!EnsureHelpers()) {
          out->error = "the server's Python helpers failed to load";
          return;
        }
        PyObject* fn = PyDict_GetItemString(static_cast<PyObject*>(helpers_), "_probing_eval");
        PyRef r(PyObject_CallFunction(fn, "sd", code.c_str(), timeout));
        if (!r) {
          PyErr_Clear();
          out->error = "eval failed inside the recorder";
          return;
        }
        json res = ToJson(r.get());
        if (!res.is_array() || res.size() != 5) {
          out->error = "eval failed inside the recorder (an answer of the wrong shape)";
          return;
        }
        // _probing_eval returns (stdout, stderr, value repr or None, (type, message,
        // traceback) or None, duration).
        protocol::EvalReply& e = out->reply;
        e.out = res[0].is_string() ? res[0].get<std::string>() : "";
        e.err = res[1].is_string() ? res[1].get<std::string>() : "";
        if (res[2].is_string()) e.value = res[2].get<std::string>();
        if (res[3].is_array() && res[3].size() == 3)
          e.exception =
              protocol::EvalException{res[3][0].is_string() ? res[3][0].get<std::string>() : "",
                                      res[3][1].is_string() ? res[3][1].get<std::string>() : "",
                                      res[3][2].is_string() ? res[3][2].get<std::string>() : ""};
        e.duration = res[4].is_number() ? res[4].get<double>() : 0.0;
      },
      GilTimeoutMs(), static_cast<int>(timeout * 1000), 3000);
  switch (outcome) {
    case GilExecutor::Outcome::kGilTimeout: return GilTimeout();
    case GilExecutor::Outcome::kBusy: return GilBusy();
    case GilExecutor::Outcome::kRunTimeout:
      return Error(504, "eval is still running after its " +
                            std::to_string(static_cast<int>(timeout)) +
                            " s timeout (a C call that ignores it); later requests that need the "
                            "GIL wait for it");
    case GilExecutor::Outcome::kStopped: return Error(503, "the interpreter is shutting down");
    case GilExecutor::Outcome::kDone: break;
  }
  if (!out->error.empty()) return Error(500, out->error);
  return Ok(out->reply);
}

namespace {

// One thread's Python frames as the wire has them, and which are entry frames (for merging).
struct PythonStack {
  bool read = false;
  ThreadStack thread;  // its fields, without frames
  std::vector<protocol::Frame> frames;
  std::vector<bool> entry;

  static PythonStack Of(const ThreadStack& t) {
    PythonStack s;
    s.read = true;
    s.thread.tstate = t.tstate;
    s.thread.pthread_id = t.pthread_id;
    s.thread.native_id = t.native_id;
    s.thread.holds_gil = t.holds_gil;
    s.thread.truncated = t.truncated;
    s.thread.consistent = t.consistent;
    int64_t depth = 0;
    for (const FrameRef& f : t.frames) {
      protocol::Frame frame;
      frame.func = f.code->name;
      frame.file = f.code->file;
      frame.lineno = f.line;
      frame.depth = depth++;
      frame.frame_type = "Python";
      s.frames.push_back(std::move(frame));
      s.entry.push_back(f.entry);
    }
    return s;
  }
};

// Native frames innermost first, each call of the eval loop replaced by the Python frames it
// runs (one on 3.8-3.10; on 3.11+ up to the next entry frame). Python frames left over (the
// unwind stopped early) come last; with no eval-loop frame found at all nothing is merged.
std::vector<protocol::Frame> MergeFrames(const PythonStack& py,
                                         const std::vector<NativeFrame>& native) {
  std::vector<protocol::Frame> out;
  auto push = [&out](protocol::Frame f) {
    f.depth = static_cast<int64_t>(out.size());
    out.push_back(std::move(f));
  };
  size_t next = 0;
  for (const NativeFrame& n : native) {
    if (NativeUnwinder::IsEvalFrame(n) && next < py.frames.size()) {
      bool last = false;
      while (!last && next < py.frames.size()) {
        last = py.entry[next];
        push(py.frames[next++]);
      }
      continue;
    }
    char ip[32], unnamed[300];
    std::snprintf(ip, sizeof ip, "0x%" PRIxPTR, n.ip);
    const size_t slash = n.module.rfind('/');
    std::snprintf(unnamed, sizeof unnamed, "%s+0x%" PRIxPTR,
                  n.module.empty() ? "??" : n.module.c_str() + slash + 1, n.offset);
    protocol::Frame f;
    f.func = n.symbol.empty() ? std::string(unnamed) : n.symbol;
    f.file = n.module;
    f.frame_type = "Native";
    f.ip = ip;
    f.offset = static_cast<int64_t>(n.offset);
    push(std::move(f));
  }
  while (next < py.frames.size()) push(py.frames[next++]);
  return out;
}

}  // namespace

ControlServer::Reply ControlServer::Backtrace(const protocol::BacktraceRequest& request) {
  if (sampler_ == nullptr)
    return Error(503, "stack reading is off in this process (see its stderr)");
  const uint64_t only = request.thread;
  NativeUnwinder* unwinder = nullptr;
  if (request.native) {
    std::string why;
    unwinder = NativeUnwinder::Get(*ctx_.reader, &why);
    if (unwinder == nullptr) return Error(503, why);
  }
  protocol::BacktraceReply result;
  std::map<uint64_t, size_t> by_ident;  // pthread id -> index in threads
  auto add_thread = [&](const ThreadStack& t, std::vector<protocol::Frame> frames) {
    by_ident[t.pthread_id] = result.threads.size();
    protocol::ThreadBacktrace bt;
    bt.thread_id = t.native_id;
    bt.holds_gil = t.holds_gil;
    bt.truncated = t.truncated;
    bt.inconsistent = !t.consistent;
    bt.frames = std::move(frames);
    result.threads.push_back(std::move(bt));
  };
  // A stack that changes while read is read again until it holds still (at most this often; then
  // it is shown as last read, marked inconsistent); the GIL holder is the program's, not ours.
  SampleOptions options;
  options.attempts = 1000;
  options.fault_guard = probing::recorder::Config::Get().fault_guard();
  options.ours = ctx_.is_ours;
  options.ours_busy = ctx_.ours_busy;
  options.gil_wait_ms = 200;
  {
    std::lock_guard<std::mutex> lock(sampler_mu_);
    std::vector<uint64_t> wanted;
    sampler_->SampleAll(
        [&](const ThreadStack& t) {
          if (ctx_.is_ours(t.native_id)) return;
          if (only != 0 && t.native_id != only) return;
          if (unwinder != nullptr && t.native_id != 0) {
            wanted.push_back(t.native_id);  // read again below, while it is stopped
          } else {
            add_thread(t, PythonStack::Of(t).frames);
          }
        },
        options);
    // Native: each thread is stopped in turn, and its Python stack read while it is stopped so
    // that the two agree.
    for (uint64_t tid : wanted) {
      std::vector<NativeFrame> native;
      std::string why;
      PythonStack python;
      auto read_python = [&] {
        SampleOptions one = options;
        one.only = tid;
        one.ours = nullptr;
        one.ours_busy = nullptr;
        sampler_->SampleAll([&](const ThreadStack& t) { python = PythonStack::Of(t); }, one);
      };
      int64_t stopped_ns = 0;
      bool ok = unwinder->Capture(static_cast<pid_t>(tid), &native, read_python, &stopped_ns, &why);
      if (!python.read) read_python();  // it did not stop: read it as it runs
      if (!python.read) continue;       // the thread ended meanwhile
      add_thread(python.thread, ok ? MergeFrames(python, native) : python.frames);
      if (ok) result.threads.back().stopped_us = stopped_ns / 1000;
      if (!ok) result.threads.back().native_error = why;
    }
  }
  if (only != 0 && result.threads.empty())
    return Error(404, "no Python thread " + std::to_string(only));
  // Names: the ones known; for a thread newer than them, ask the interpreter if it answers soon.
  auto names = ctx_.known_names();
  bool missing = false;
  for (const auto& t : result.threads)
    missing |= names.count(t.thread_id) == 0 && t.thread_id != static_cast<uint64_t>(ctx_.pid);
  if (missing) {
    auto fresh = std::make_shared<json>();
    if (ctx_.gil->Run(
            [this, fresh] {
              if (!EnsureHelpers()) return;
              PyRef r(PyObject_CallFunction(
                  PyDict_GetItemString(static_cast<PyObject*>(helpers_), "_probing_thread_names"),
                  nullptr));
              if (!r) {
                PyErr_Clear();
                return;
              }
              *fresh = ToJson(r.get());
            },
            250 + ctx_.gil->TurnInMs(), 2000) == GilExecutor::Outcome::kDone &&
        fresh->is_object()) {
      for (auto& [k, v] : fresh->items())
        if (v.is_string()) names[std::stoull(k)] = v.get<std::string>();
    }
  }
  for (auto& t : result.threads) {
    auto n = names.find(t.thread_id);
    t.thread_name = n != names.end() ? n->second : ctx_.fallback_name(t.thread_id);
  }
  if (request.locals) {
    auto out = std::make_shared<json>();
    auto outcome = ctx_.gil->Run(
        [this, out] {
          if (!EnsureHelpers()) return;
          PyObject* fn = PyDict_GetItemString(static_cast<PyObject*>(helpers_), "_probing_locals");
          PyRef r(PyObject_CallFunction(fn, "ll", probing::recorder::Config::Get().locals_value_size(),
                                        probing::recorder::Config::Get().locals_frame_size()));
          if (!r) {
            PyErr_Clear();
            return;
          }
          *out = ToJson(r.get());
        },
        GilTimeoutMs(), 10000);
    if (outcome == GilExecutor::Outcome::kBusy) {
      result.locals_error = GilBusyText() + "; frames above were read without the GIL";
    } else if (outcome != GilExecutor::Outcome::kDone) {
      result.locals_error = "the interpreter has not released the GIL for " +
                            std::to_string(GilTimeoutMs() / 1000) +
                            " s; frames above were read without it";
    } else {
      // Locals by thread ident; frames matched innermost first by function name.
      for (auto& [ident, frames] : out->items()) {
        auto it = by_ident.find(std::stoull(ident));
        if (it == by_ident.end()) continue;
        auto& dst = result.threads[it->second].frames;
        for (size_t i = 0; i < dst.size() && i < frames.size(); ++i) {
          if (!frames[i].is_array() || frames[i].size() < 4 || dst[i].func != frames[i][0] ||
              !frames[i][3].is_object())
            continue;
          std::map<std::string, std::string> locals;
          for (auto& [k, v] : frames[i][3].items())
            locals[k] = v.is_string() ? v.get<std::string>() : v.dump();
          dst[i].locals = std::move(locals);
        }
      }
    }
  }
  return Ok(result);
}

ControlServer::Reply ControlServer::Settings(const std::string& method,
                                             const std::map<std::string, std::string>& q,
                                             const std::string& body) {
  auto& config = probing::recorder::Config::Get();
  std::string only = q.count("key") ? q.at("key") : "";
  if (method == "POST") {
    protocol::ConfigSetRequest in;
    try {
      in = json::parse(body).get<protocol::ConfigSetRequest>();
    } catch (const std::exception&) {
      return Error(400, "config needs {\"key\": ..., \"value\": ...}");
    }
    std::string err = config.Set(in.key, in.value);
    if (!err.empty()) return Error(err.rfind("unknown key", 0) == 0 ? 404 : 400, err);
    only = in.key;
  }
  protocol::ConfigReply r;
  for (const ConfigEntry& e : config.All()) {
    if (!only.empty() && e.name != only) continue;
    r.settings.push_back({e.name, e.value, e.default_value, e.description, e.read_only});
  }
  if (!only.empty() && r.settings.empty()) return Error(404, "unknown key " + only);
  return Ok(r);
}

ControlServer::Reply ControlServer::Tables(const std::string& name) {
  auto out = std::make_shared<json>();
  auto status = std::make_shared<int>(200);
  auto outcome = ctx_.gil->Run(
      [this, out, status, name] {
        if (!EnsureHelpers()) return;
        auto* h = static_cast<PyObject*>(helpers_);
        PyRef r(name.empty()
                    ? PyObject_CallFunction(PyDict_GetItemString(h, "_probing_tables"), nullptr)
                    : PyObject_CallFunction(PyDict_GetItemString(h, "_probing_table_rows"), "s",
                                            name.c_str()));
        if (!r) {
          PyObject *raw_type, *raw_value, *raw_tb;
          PyErr_Fetch(&raw_type, &raw_value, &raw_tb);
          PyRef type(raw_type), value(raw_value), tb(raw_tb);
          bool missing = type && PyErr_GivenExceptionMatches(type.get(), PyExc_KeyError);
          PyRef text(value ? PyObject_Str(value.get()) : nullptr);
          std::string msg = Utf8(text.get());
          std::string tname =
              type ? reinterpret_cast<PyTypeObject*>(type.get())->tp_name : "error";
          PyErr_Clear();
          *status = missing ? 404 : 500;
          (*out)["error"] = missing ? "no table " + name + " registered in this process"
                                    : "table " + name + " raised " + tname + ": " + msg;
          return;
        }
        *out = name.empty() ? json{{"tables", ToJson(r.get())}} : ToJson(r.get());
      },
      GilTimeoutMs(), 30000);
  if (outcome == GilExecutor::Outcome::kGilTimeout) return GilTimeout();
  if (outcome == GilExecutor::Outcome::kBusy) return GilBusy();
  if (outcome != GilExecutor::Outcome::kDone)
    return Error(504, "table " + name + " did not finish in 30 s");
  if (*status != 200) return {*status, Dump(*out)};
  // Checked against the protocol's shape before it leaves: a table whose rows do not fit its
  // columns is an error here, not a puzzle in the client.
  try {
    if (name.empty()) return Ok(out->get<protocol::TablesReply>());
    return Ok(out->get<protocol::TableRowsReply>());
  } catch (const std::exception& e) {
    return Error(500, "table " + name + " gave rows that do not fit its columns: " + e.what());
  }
}

}  // namespace probing::recorder
