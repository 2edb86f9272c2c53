// The transport to a recorder's control server: HTTP/1.1 on its abstract Unix socket
// @probing-<pid>, or on host:port with a token (docs/protocol.md). A local server is trusted
// only when the kernel says that the target itself listens on the socket (SO_PEERCRED), so a
// process of another user holding the name is refused, loudly, and sent nothing. Every request
// has a deadline on every read and write; a local process that is stopped, a zombie or gone is
// named as such, before anything waits on it and while it waits. Errors are one line for the user, e.g.
// "no recorder in process 4242: run `probing -t 4242 inject` first".
// Front ends do not use this directly: they open a live::Session, which owns one.
//
//   ControlClient c(Endpoint::Local(4242), "", 10);
//   PROBING_ASSIGN_OR_RETURN(auto info, c.Get<protocol::InfoReply>("/info", "info"));
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "probing/base/status.h"
#include "probing/base/unique_fd.h"
#include "probing/live/protocol.h"

namespace probing::live {

// Where a control server listens.
struct Endpoint {
  pid_t pid = 0;     // a local process, reached on @probing-<pid>
  std::string host;  // or host:port over TCP
  int port = 0;
  bool tcp() const { return port != 0; }
  std::string Describe() const;  // "process 4242" or "host:port"
  static Endpoint Local(pid_t pid) {
    Endpoint e;
    e.pid = pid;
    return e;
  }
};

// "host:port" ("[::1]:9922" for IPv6); nullopt when `s` is not of that shape.
std::optional<Endpoint> ParseHostPort(const std::string& s);

struct Response {
  int status = 0;
  std::string content_type;
  std::string body;
};

class ControlClient {
 public:
  ControlClient(Endpoint endpoint, std::string token, double timeout_s)
      : endpoint_(std::move(endpoint)), token_(std::move(token)), timeout_s_(timeout_s) {}

  const Endpoint& endpoint() const { return endpoint_; }
  double timeout() const { return timeout_s_; }

  // One exchange. `timeout_s` < 0: the client's own. A non-2xx answer is returned as it came.
  Result<Response> Request(std::string_view method, const std::string& target,
                           const std::string& body = "", double timeout_s = -1);

  // A JSON answer as protocol struct T; a non-200 answer becomes a Status carrying its
  // {"error"} text. `what` names the request in messages.
  template <typename T>
  Result<T> Get(const std::string& target, std::string_view what, double timeout_s = -1) {
    PROBING_ASSIGN_OR_RETURN(Response r, Request("GET", target, "", timeout_s));
    return Decode<T>(r, what);
  }
  template <typename T, typename B>
  Result<T> Post(const std::string& target, const B& body, std::string_view what,
                 double timeout_s = -1) {
    PROBING_ASSIGN_OR_RETURN(Response r,
                             Request("POST", target, protocol::ToJson(body).dump(), timeout_s));
    return Decode<T>(r, what);
  }
  // A non-200 answer as a Status (404 NotFound, 400 InvalidArgument, 401/403 PermissionDenied,
  // 504 DeadlineExceeded, others Unavailable), with the server's message.
  static Status ErrorOf(const Response& r);

 private:
  template <typename T>
  Result<T> Decode(const Response& r, std::string_view what) {
    if (r.status != 200) return ErrorOf(r);
    return protocol::Parse<T>(r.body, what);
  }
  Status Unreachable(int err) const;
  // The target's own control socket, verified (see the .cc); remembered once found.
  Result<UniqueFd> ConnectLocal(int64_t deadline_ns);

  Endpoint endpoint_;
  std::string token_;
  double timeout_s_;
  std::string socket_name_;  // the abstract name it answered on, without the leading NUL
  int64_t last_scan_ns_ = 0;  // when /proc/net/unix was last read for a moved recorder
};

// The data directory recorders of this user write to: $PROBING_DATA_DIR or
// /dev/shm/probing-<uid>.
std::string DefaultDataDir();

// How a local process is doing, from /proc/<pid>/stat.
enum class ProcessState { kGone, kRunning, kStopped, kZombie };
ProcessState StateOf(pid_t pid);
// The one line for a local process that cannot answer because of its state, or "" when it can.
std::string StateProblem(pid_t pid);
// The line for a live local process with no recorder answering: run inject; or, when its
// environment asked for one (PROBING=1), why there is none and what to run.
std::string NoRecorder(pid_t pid);

}  // namespace probing::live
