#include "control_server.h"

#include <Python.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "config.h"
#include "log.h"
#include "native_stack.h"
#include "py_helpers.h"
#include "py_module.h"

namespace probing::recorder {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using json = nlohmann::json;

constexpr int kMaxConnections = 32;
constexpr int kIoTimeoutSec = 10;  // a slow or abandoned client holds only its own thread
constexpr size_t kMaxBody = 1 << 20;
constexpr const char* kRecorderVersion = "0.1.0";

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

ControlServer::Reply Error(int status, const std::string& message) {
  return {status, Dump(json{{"error", message}})};
}

std::string UrlDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && isxdigit(s[i + 1]) && isxdigit(s[i + 2])) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

std::map<std::string, std::string> ParseQuery(const std::string& q) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start <= q.size()) {
    size_t amp = q.find('&', start);
    std::string part = q.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
    if (!part.empty()) {
      size_t eq = part.find('=');
      out[UrlDecode(part.substr(0, eq))] =
          eq == std::string::npos ? "" : UrlDecode(part.substr(eq + 1));
    }
    if (amp == std::string::npos) break;
    start = amp + 1;
  }
  return out;
}

bool Truthy(const std::map<std::string, std::string>& q, const char* key) {
  auto it = q.find(key);
  return it != q.end() && (it->second == "1" || it->second == "true" || it->second.empty());
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
      return Utf8(PyObject_Str(o));
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
      PyObject* ks = PyObject_Str(k);
      d[Utf8(ks)] = ToJson(v, depth + 1);
      Py_XDECREF(ks);
    }
    return d;
  }
  PyObject* s = PyObject_Str(o);
  std::string out = Utf8(s);
  Py_XDECREF(s);
  PyErr_Clear();
  return out;
}

}  // namespace

ControlServer::ControlServer(ServerContext ctx) : ctx_(std::move(ctx)) {
  if (ctx_.reader != nullptr && ctx_.reader->Available())
    sampler_ = std::make_unique<StackSampler>(*ProbingGetPyOffsets(), *ctx_.reader);
}

std::string ControlServer::socket_name() const { return "@probing-" + std::to_string(ctx_.pid); }

bool ControlServer::Start(std::string* why) {
  // Abstract Unix socket: the name is "\0probing-<pid>", exactly that long.
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *why = std::string("control socket: ") + std::strerror(errno);
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string name = "probing-" + std::to_string(ctx_.pid);
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 64) != 0) {
    *why = "cannot listen on " + socket_name() + ": " + std::strerror(errno);
    close(fd);
    return false;
  }
  std::thread([this, fd] { AcceptLoop(fd, false); }).detach();

  int port = probing::recorder::Config::Get().server_port();
  if (port != 0) {
    const char* token = std::getenv("PROBING_AUTH_TOKEN");
    if (token == nullptr || *token == '\0') {
      Log("TCP control server not started on port " + std::to_string(port) +
          ": PROBING_AUTH_TOKEN is not set, and TCP without a token would let anyone run code "
          "here");
      return true;
    }
    token_ = token;
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
      return true;
    }
    std::thread([this, tfd] { AcceptLoop(tfd, true); }).detach();
  }
  return true;
}

void ControlServer::AcceptLoop(int fd, bool tcp) {
  pthread_setname_np(pthread_self(), tcp ? "probing-tcp" : "probing-server");
  for (;;) {
    int c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        if (errno == EMFILE || errno == ENFILE) usleep(100000);
        continue;
      }
      Log(std::string("control server stopped accepting: ") + std::strerror(errno));
      return;
    }
    timeval tv{kIoTimeoutSec, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connections_.fetch_add(1) >= kMaxConnections) {
      connections_.fetch_sub(1);
      static const char kBusy[] =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
          "Content-Length: 42\r\nConnection: close\r\n\r\n{\"error\": \"too many connections; "
          "retry\"}\n";
      (void)!write(c, kBusy, sizeof kBusy - 1);
      close(c);
      continue;
    }
    std::thread([this, c, tcp] {
      Serve(c, tcp);
      connections_.fetch_sub(1);
    }).detach();
  }
}

void ControlServer::Serve(int fd, bool tcp) {
  // Who is calling: on the Unix socket, the kernel's word (SO_PEERCRED) before reading anything.
  bool allowed = true;
  std::string refusal;
  if (!tcp) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != geteuid() && cred.uid != 0)) {
      allowed = false;
      refusal = "permission denied: process " + std::to_string(ctx_.pid) +
                " answers only its own user and root";
    }
  }
  asio::io_context ioc;
  beast::flat_buffer buffer;
  auto serve = [&](auto& stream) {
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(kMaxBody);
      beast::error_code ec;
      http::read(stream, buffer, parser, ec);
      if (ec) return;
      const auto& req = parser.get();
      Reply reply;
      if (!allowed) {
        reply = Error(403, refusal);
      } else if (tcp) {
        std::string auth(req[http::field::authorization]);
        const std::string prefix = "Bearer ";
        if (auth.rfind(prefix, 0) != 0 || !SameToken(auth.substr(prefix.size()), token_))
          reply = Error(
              401, "a valid token is required: send Authorization: Bearer <PROBING_AUTH_TOKEN>");
      }
      if (reply.body.empty())
        reply = Handle(std::string(req.method_string()), std::string(req.target()), req.body());
      http::response<http::string_body> res{static_cast<http::status>(reply.status), req.version()};
      res.set(http::field::content_type, "application/json");
      res.set(http::field::server, "probing-recorder");
      res.keep_alive(req.keep_alive() && allowed);
      res.body() = std::move(reply.body);
      res.body() += "\n";
      res.prepare_payload();
      http::write(stream, res, ec);
      if (ec || !res.keep_alive()) return;
    }
  };
  beast::error_code ec;
  if (tcp) {
    asio::ip::tcp::socket s(ioc);
    s.assign(asio::ip::tcp::v6(), fd, ec);
    if (!ec) serve(s);
    s.close(ec);
  } else {
    asio::local::stream_protocol::socket s(ioc);
    s.assign(asio::local::stream_protocol(), fd, ec);
    if (!ec) serve(s);
    s.close(ec);
  }
}

ControlServer::Reply ControlServer::Handle(const std::string& method, const std::string& target,
                                           const std::string& body) {
  std::string path = target.substr(0, target.find('?'));
  auto query =
      ParseQuery(target.find('?') == std::string::npos ? "" : target.substr(target.find('?') + 1));
  try {
    if (path == "/info" && method == "GET") return Info();
    if (path == "/eval" && method == "POST") return Eval(body);
    if (path == "/backtrace" && method == "GET") return Backtrace(query);
    if (path == "/config" && (method == "GET" || method == "POST"))
      return Settings(method, query, body);
    if (path == "/tables" && method == "GET") return Tables("");
    if (path.rfind("/tables/", 0) == 0 && method == "GET") return Tables(path.substr(8));
  } catch (const std::exception& e) {
    return Error(400, std::string("bad request: ") + e.what());
  }
  return Error(404, "unknown endpoint " + method + " " + path +
                        "; endpoints: GET /info, POST /eval, GET /backtrace, GET|POST /config, "
                        "GET /tables, GET /tables/<name>");
}

ControlServer::Reply ControlServer::GilTimeout() const {
  return Error(503, "the interpreter has not released the GIL for " +
                        std::to_string(GilTimeoutMs() / 1000) + " s; ring data is still available");
}

ControlServer::Reply ControlServer::Info() {
  json enabled = {
      {"stack_sampler", sampler_ != nullptr && probing::recorder::Config::Get().sampler_enabled()},
      {"memory_sampler", true},
      {"torch", probing::recorder::Config::Get().torch_enabled()},
      {"tcp", !token_.empty()}};
  json j = {{"pid", ctx_.pid},
            {"python_version", ctx_.process.python_version},
            {"cmdline", ctx_.process.cmdline},
            {"recorder_version", kRecorderVersion},
            {"uptime", static_cast<double>(MonotonicNs() - ctx_.started_ns) / 1e9},
            {"host", ctx_.process.host},
            {"data_dir", ctx_.data_dir},
            {"socket", socket_name()},
            {"enabled", enabled}};
  if (ctx_.sampler_counts) j["stack_samples"] = ctx_.sampler_counts();
  if (sampler_ != nullptr) j["stack_reads"] = sampler_->read_mode();
  TorchState t = GetTorchState();          // as of the tracer's last step end
  j["torch"] = {{"tracing", t.installed},  // torch imported and the tracer installed
                {"step", t.step},
                {"step_traced", t.traced},
                {"hooks_installed", t.hooks}};
  return {200, Dump(j)};
}

bool ControlServer::EnsureHelpers() {
  if (helpers_ != nullptr) return true;
  std::string why;
  helpers_ = RunPythonSource(kServerHelpers, {}, &why);
  return helpers_ != nullptr;
}

ControlServer::Reply ControlServer::Eval(const std::string& body) {
  json in = json::parse(body);
  if (!in.contains("code") || !in["code"].is_string())
    return Error(400, "eval needs {\"code\": \"...\"}");
  double timeout = in.value("timeout", 30.0);
  if (!(timeout > 0 && timeout <= 3600)) return Error(400, "timeout must be 0 < t <= 3600 seconds");
  auto out = std::make_shared<json>();
  std::string code = in["code"];
  auto outcome = ctx_.gil->RunInterruptible(
      [this, out, code, timeout] {
        if (!EnsureHelpers()) {
          (*out)["error"] = "the server's Python helpers failed to load";
          return;
        }
        PyObject* fn = PyDict_GetItemString(static_cast<PyObject*>(helpers_), "_probing_eval");
        PyObject* r = PyObject_CallFunction(fn, "sd", code.c_str(), timeout);
        if (r == nullptr) {
          PyErr_Clear();
          (*out)["error"] = "eval failed inside the recorder";
          return;
        }
        json res = ToJson(r);
        Py_DECREF(r);
        (*out)["stdout"] = res[0];
        (*out)["stderr"] = res[1];
        (*out)["value"] = res[2];
        if (res[3].is_array()) {
          (*out)["exception"] = {
              {"type", res[3][0]}, {"message", res[3][1]}, {"traceback", res[3][2]}};
        } else {
          (*out)["exception"] = nullptr;
        }
        (*out)["duration"] = res[4];
      },
      GilTimeoutMs(), static_cast<int>(timeout * 1000), 3000);
  switch (outcome) {
    case GilExecutor::Outcome::kGilTimeout: return GilTimeout();
    case GilExecutor::Outcome::kRunTimeout:
      return Error(504, "eval is still running after its " +
                            std::to_string(static_cast<int>(timeout)) +
                            " s timeout (a C call that ignores it); later requests that need the "
                            "GIL wait for it");
    case GilExecutor::Outcome::kStopped: return Error(503, "the interpreter is shutting down");
    case GilExecutor::Outcome::kDone: break;
  }
  if (out->contains("error")) return {500, Dump(*out)};
  return {200, Dump(*out)};
}

namespace {

// One thread's Python frames as the wire has them, and which are entry frames (for merging).
struct PythonStack {
  bool read = false;
  ThreadStack thread;  // its fields, without frames
  json frames = json::array();
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
    int depth = 0;
    for (const FrameRef& f : t.frames) {
      s.frames.push_back({{"func", f.code->name},
                          {"file", f.code->file},
                          {"lineno", f.line},
                          {"depth", depth++},
                          {"frame_type", "Python"}});
      s.entry.push_back(f.entry);
    }
    return s;
  }
};

// Native frames innermost first, each call of the eval loop replaced by the Python frames it
// runs (one on 3.8-3.10; on 3.11+ up to the next entry frame). Python frames left over (the
// unwind stopped early) come last; with no eval-loop frame found at all nothing is merged.
json MergeFrames(const PythonStack& py, const std::vector<NativeFrame>& native) {
  json out = json::array();
  auto push = [&out](json f) {
    f["depth"] = out.size();
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
    push({{"func", n.symbol.empty() ? std::string(unnamed) : n.symbol},
          {"file", n.module},
          {"lineno", nullptr},
          {"frame_type", "Native"},
          {"ip", ip},
          {"offset", n.offset}});
  }
  while (next < py.frames.size()) push(py.frames[next++]);
  return out;
}

}  // namespace

ControlServer::Reply ControlServer::Backtrace(const std::map<std::string, std::string>& q) {
  if (sampler_ == nullptr)
    return Error(503, "stack reading is off in this process (see its stderr)");
  uint64_t only = 0;
  if (auto it = q.find("thread"); it != q.end()) only = std::stoull(it->second);
  NativeUnwinder* unwinder = nullptr;
  if (Truthy(q, "native")) {
    std::string why;
    unwinder = NativeUnwinder::Get(*ctx_.reader, &why);
    if (unwinder == nullptr) return Error(503, why);
  }
  json threads = json::array();
  std::map<uint64_t, size_t> by_ident;  // pthread id -> index in threads
  std::vector<uint64_t> ids;
  auto add_thread = [&](const ThreadStack& t, json frames) {
    by_ident[t.pthread_id] = threads.size();
    ids.push_back(t.native_id);
    threads.push_back({{"thread_id", t.native_id},
                       {"holds_gil", t.holds_gil},
                       {"truncated", t.truncated},
                       {"inconsistent", !t.consistent},
                       {"frames", std::move(frames)}});
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
      if (ok) threads.back()["stopped_us"] = stopped_ns / 1000;
      if (!ok) threads.back()["native_error"] = why;
    }
  }
  if (only != 0 && threads.empty()) return Error(404, "no Python thread " + std::to_string(only));
  // Names: the ones known; for a thread newer than them, ask the interpreter if it answers soon.
  auto names = ctx_.known_names();
  bool missing = false;
  for (uint64_t id : ids) missing |= names.count(id) == 0 && id != static_cast<uint64_t>(ctx_.pid);
  if (missing) {
    auto fresh = std::make_shared<json>();
    if (ctx_.gil->Run(
            [this, fresh] {
              if (!EnsureHelpers()) return;
              PyObject* r = PyObject_CallFunction(
                  PyDict_GetItemString(static_cast<PyObject*>(helpers_), "_probing_thread_names"),
                  nullptr);
              if (r == nullptr) {
                PyErr_Clear();
                return;
              }
              *fresh = ToJson(r);
              Py_DECREF(r);
            },
            250, 2000) == GilExecutor::Outcome::kDone &&
        fresh->is_object()) {
      for (auto& [k, v] : fresh->items())
        if (v.is_string()) names[std::stoull(k)] = v.get<std::string>();
    }
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    auto n = names.find(ids[i]);
    threads[i]["thread_name"] = n != names.end() ? n->second : ctx_.fallback_name(ids[i]);
  }
  json result = {{"threads", threads}};
  if (Truthy(q, "locals")) {
    auto out = std::make_shared<json>();
    auto outcome = ctx_.gil->Run(
        [this, out] {
          if (!EnsureHelpers()) return;
          PyObject* fn = PyDict_GetItemString(static_cast<PyObject*>(helpers_), "_probing_locals");
          PyObject* r =
              PyObject_CallFunction(fn, "ll", probing::recorder::Config::Get().locals_value_size(),
                                    probing::recorder::Config::Get().locals_frame_size());
          if (r == nullptr) {
            PyErr_Clear();
            return;
          }
          *out = ToJson(r);
          Py_DECREF(r);
        },
        GilTimeoutMs(), 10000);
    if (outcome != GilExecutor::Outcome::kDone) {
      result["locals_error"] = "the interpreter has not released the GIL for " +
                               std::to_string(GilTimeoutMs() / 1000) +
                               " s; frames above were read without it";
    } else {
      // Locals by thread ident; frames matched innermost first by function name.
      for (auto& [ident, frames] : out->items()) {
        auto it = by_ident.find(std::stoull(ident));
        if (it == by_ident.end()) continue;
        json& dst = result["threads"][it->second]["frames"];
        for (size_t i = 0; i < dst.size() && i < frames.size(); ++i)
          if (dst[i]["func"] == frames[i][0]) dst[i]["locals"] = frames[i][3];
      }
    }
  }
  return {200, Dump(result)};
}

ControlServer::Reply ControlServer::Settings(const std::string& method,
                                             const std::map<std::string, std::string>& q,
                                             const std::string& body) {
  auto& config = probing::recorder::Config::Get();
  if (method == "POST") {
    json in = json::parse(body);
    if (!in.contains("key") || !in["key"].is_string() || !in.contains("value"))
      return Error(400, "config needs {\"key\": ..., \"value\": ...}");
    std::string value =
        in["value"].is_string() ? in["value"].get<std::string>() : in["value"].dump();
    std::string err = config.Set(in["key"], value);
    if (!err.empty()) return Error(err.rfind("unknown key", 0) == 0 ? 404 : 400, err);
  }
  std::string only = q.count("key")
                         ? q.at("key")
                         : (method == "POST" ? json::parse(body)["key"].get<std::string>() : "");
  json keys = json::array();
  for (const ConfigEntry& e : config.All()) {
    if (!only.empty() && e.name != only) continue;
    keys.push_back({{"name", e.name},
                    {"value", e.value},
                    {"default", e.default_value},
                    {"description", e.description},
                    {"read_only", e.read_only}});
  }
  if (!only.empty() && keys.empty()) return Error(404, "unknown key " + only);
  return {200, Dump(json{{"settings", keys}})};
}

ControlServer::Reply ControlServer::Tables(const std::string& name) {
  auto out = std::make_shared<json>();
  auto status = std::make_shared<int>(200);
  auto outcome = ctx_.gil->Run(
      [this, out, status, name] {
        if (!EnsureHelpers()) return;
        auto* h = static_cast<PyObject*>(helpers_);
        PyObject* r =
            name.empty()
                ? PyObject_CallFunction(PyDict_GetItemString(h, "_probing_tables"), nullptr)
                : PyObject_CallFunction(PyDict_GetItemString(h, "_probing_table_rows"), "s",
                                        name.c_str());
        if (r == nullptr) {
          PyObject *type, *value, *tb;
          PyErr_Fetch(&type, &value, &tb);
          bool missing = type != nullptr && PyErr_GivenExceptionMatches(type, PyExc_KeyError);
          PyObject* s = value != nullptr ? PyObject_Str(value) : nullptr;
          std::string msg = s != nullptr ? Utf8(s) : "";
          Py_XDECREF(s);
          std::string tname =
              type != nullptr ? reinterpret_cast<PyTypeObject*>(type)->tp_name : "error";
          Py_XDECREF(type);
          Py_XDECREF(value);
          Py_XDECREF(tb);
          PyErr_Clear();
          *status = missing ? 404 : 500;
          (*out)["error"] = missing ? "no table " + name + " registered in this process"
                                    : "table " + name + " raised " + tname + ": " + msg;
          return;
        }
        *out = name.empty() ? json{{"tables", ToJson(r)}} : ToJson(r);
        Py_DECREF(r);
      },
      GilTimeoutMs(), 30000);
  if (outcome == GilExecutor::Outcome::kGilTimeout) return GilTimeout();
  if (outcome != GilExecutor::Outcome::kDone)
    return Error(504, "table " + name + " did not finish in 30 s");
  return {*status, Dump(*out)};
}

}  // namespace probing::recorder
