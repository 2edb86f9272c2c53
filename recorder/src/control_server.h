// The recorder's control server: HTTP/1.1 + JSON on the abstract Unix socket @probing-<pid>,
// answering only the same uid or root (SO_PEERCRED, checked on every connection), and on TCP
// only when a port is configured, every request carrying the token: PROBING_AUTH_TOKEN, or
// one it makes and leaves for its owner in <ring dir>/token.
// Endpoints and wire format: docs/protocol.md and live/protocol.h, whose structs both ends
// use. HTTP parsing is Boost.Beast's; the accept loops
// are ours, so credentials are checked before a byte is read.
//
//   ControlServer server(context);
//   std::string why;
//   if (!server.Start(&why)) Log(why);
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "gil_executor.h"
#include "probing/format/ring.h"
#include "probing/format/segment.h"
#include "probing/live/protocol.h"
#include "py_offsets.h"
#include "safe_read.h"
#include "stack_sampler.h"

namespace probing::recorder {

struct ServerContext {
  pid_t pid = 0;
  format::ProcessInfo process;
  int64_t started_ns = 0;  // CLOCK_MONOTONIC when the recorder started
  std::string data_dir;
  const SafeReader* reader = nullptr;  // null: stack reading is off
  GilExecutor* gil = nullptr;
  // The threading names known so far (refreshed about once a second), and the fallback for a
  // thread without one (MainThread for the main thread, else the OS name).
  std::function<std::map<uint64_t, std::string>()> known_names;
  std::function<std::string(uint64_t native_id)> fallback_name;
  // Native ids of the recorder's own Python-state-holding threads, hidden from backtraces.
  std::function<bool(uint64_t native_id)> is_ours;
  // Seals every stream's open segment now (never needs the GIL); returns how many it sealed.
  std::function<int64_t()> seal;
  // True while one of them waits for the GIL or holds it.
  std::function<bool()> ours_busy;
  // The stack sampler's counters (stored, dropped, ...), for /info.
  std::function<protocol::InfoReply::StackSamples()> sampler_counts;
  // Why a table gets no rows (no NVML, allocation tracking off), for /info's notes.
  std::function<std::vector<std::string>()> notes;
};

class ControlServer {
 public:
  explicit ControlServer(ServerContext ctx);
  // Binds @probing-<pid> (and TCP when configured) and starts accepting. False with `why` when
  // the Unix socket cannot be bound; a TCP problem is logged and TCP stays closed.
  bool Start(std::string* why);
  std::string socket_name() const;
  // The TCP port it listens on (PROBING_PORT + the local rank); 0 when TCP is off.
  int tcp_port() const { return tcp_port_.load(); }
  // The file holding the token this server made (no PROBING_AUTH_TOKEN), "<ring dir>/token";
  // "" when it made none. Constant after Start.
  const std::string& token_file() const { return token_file_; }
  // The process's identity changed (its rank became known): /info says so from now on.
  void SetProcess(const format::ProcessInfo& process);
  // The job's members as its store lists them (JSON), for GET /cluster.
  void SetMembers(std::string json);

  struct Reply {
    int status = 200;
    std::string body;  // JSON, unless content_type says otherwise
    std::string content_type = "application/json";
  };

 private:
  // One request, already authenticated.
  Reply Handle(const std::string& method, const std::string& target, const std::string& body);
  void AcceptLoop(int fd, bool tcp);
  // One connection (owns `fd`), in the pool `trusted` says until it shows a token.
  void Serve(int fd, bool tcp, bool trusted);
  // Closes (shutdown) the stranger's connection accepted first; false when there is none.
  bool EvictOldestStranger();
  void ForgetStranger(int fd);
  Reply Info();
  Reply Eval(const std::string& body);
  Reply Backtrace(const protocol::BacktraceRequest& request);
  Reply Settings(const std::string& method, const std::map<std::string, std::string>& query,
                 const std::string& body);
  Reply Tables(const std::string& name);
  Reply Seal();
  Reply Cluster();
  Reply ProgressNow();
  Reply Segments(const protocol::SegmentsRequest& request);
  Reply GilTimeout() const;
  Reply GilBusy() const;
  bool EnsureHelpers();  // GIL held

  ServerContext ctx_;
  std::string token_;
  std::string token_file_;
  std::atomic<int> tcp_port_{0};
  mutable std::mutex identity_mu_;  // guards ctx_.process after start, and members_
  std::string members_;
  std::string socket_name_;  // set before the accept loop starts; constant after
  std::atomic<int> trusted_{0};
  std::atomic<int> untrusted_{0};
  std::mutex strangers_mu_;
  std::map<int, int64_t> strangers_;  // untrusted connections being served: fd -> accepted at
  std::mutex sampler_mu_;
  std::mutex rings_mu_;  // guards rings_: readers of this process's own ring files, by name
  std::map<std::string, std::unique_ptr<format::RingReader>> rings_;
  std::unique_ptr<StackSampler> sampler_;
  void* helpers_ = nullptr;  // PyObject* dict of the Python helpers; touched with the GIL only
};

}  // namespace probing::recorder
