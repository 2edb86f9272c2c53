// Talking to a live process's recorder: its control server on @probing-<pid>, or host:port
// with a token (docs/protocol.md). Errors come back as one line for the user, e.g.
// "no recorder in process 4242: run `probing -t 4242 inject` first".
//
//   PROBING_ASSIGN_OR_RETURN(Target t, ParseTarget("4242"));
//   ControlClient c(t, token);
//   PROBING_ASSIGN_OR_RETURN(nlohmann::json info, c.Get("/info"));
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>

#include "probing/format/status.h"

namespace probing::live {

struct Target {
  pid_t pid = 0;     // a local process, reached on @probing-<pid>
  std::string host;  // or host:port over TCP
  int port = 0;
  bool tcp() const { return port != 0; }
  std::string Describe() const;  // "process 4242" or "host:port"
};

// "4242" or "host:port". Anything else is an InvalidArgument naming what was given.
Result<Target> ParseTarget(const std::string& s);

class ControlClient {
 public:
  ControlClient(Target target, std::string token, int timeout_sec = 60)
      : target_(std::move(target)), token_(std::move(token)), timeout_sec_(timeout_sec) {}

  Result<nlohmann::json> Get(const std::string& path) { return Call("GET", path, ""); }
  Result<nlohmann::json> Post(const std::string& path, const nlohmann::json& body) {
    return Call("POST", path, body.dump());
  }

 private:
  Result<nlohmann::json> Call(const std::string& method, const std::string& path,
                              const std::string& body);
  Status Unreachable(int err) const;

  Target target_;
  std::string token_;
  int timeout_sec_;
};

// The data directory the recorder uses by default: $PROBING_DATA_DIR or /dev/shm/probing-<uid>.
std::string DefaultDataDir();

}  // namespace probing::live
