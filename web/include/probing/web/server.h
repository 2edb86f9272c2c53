// `probing web`: a dashboard for Probing's targets, served by a process of its own (never by
// the target): a JSON API over live::Session (api.h, docs/web.md) and a single-page app whose
// every file is embedded in this library at build time, so it works with no network at all.
// Binds to 127.0.0.1 by default; any other address needs a token, which every request must
// then carry (the page gets it from its address once and keeps it in a session cookie).
//
//   ServerOptions o;
//   o.port = 0;                       // any free port
//   o.targets = {"run.ptrace"};
//   PROBING_ASSIGN_OR_RETURN(auto server, Server::Create(o));
//   std::cout << server->url() << "\n";
//   std::atomic<bool> stop{false};
//   server->Run(stop);                // until stop is set (a signal handler may set it)
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "probing/base/status.h"

namespace probing::web {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8686;    // 0: any free port (url() tells which)
  std::string token;  // required unless host is a loopback address
  // Targets named on the command line: local pids (/p/<pid>), recordings, ring directories
  // and host:port (/r/<n>, in this order).
  std::vector<std::string> targets;
  std::string target_token;     // for host:port targets
  double timeout_s = 5;         // every request to a target
  double query_timeout_s = 10;  // an SQL statement typed in the console
  std::string data_dir;         // where local recorders write; empty: live::DefaultDataDir()
};

class Server {
 public:
  // Checks the options and every named target, and binds. Fails with one line: a port in use,
  // a non-loopback address without a token, a target that is none.
  static Result<std::unique_ptr<Server>> Create(const ServerOptions& options);
  ~Server();

  int port() const;
  // "http://127.0.0.1:8686/", with "?token=..." when there is one.
  std::string url() const;
  // Serves until `stop` becomes true (checked a few times a second), then waits briefly for
  // the requests in flight.
  Status Run(const std::atomic<bool>& stop);

 private:
  struct Impl;
  explicit Server(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;  // shared with the connections' threads
};

}  // namespace probing::web
