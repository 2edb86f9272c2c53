// `probing -t PID inject`: loads the recorder into a running Python process (the injector) and
// waits until its control server answers, then applies settings. Errors are one line: the
// injector's, or why the recorder does not answer (the process exited meanwhile, its stderr
// says why).
//
//   InjectOptions o;
//   o.pid = 4242;
//   PROBING_ASSIGN_OR_RETURN(InjectOutcome r, InjectAndWait(o));
//   std::cout << r.info.socket << " after " << r.answered_ms << " ms\n";
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "probing/base/status.h"
#include "probing/injector/injector.h"
#include "probing/live/protocol.h"

namespace probing::live {

struct InjectOptions {
  pid_t pid = 0;
  double safe_point_timeout_s = 5;
  double answer_timeout_s = 10;  // for the recorder to answer once loaded
  std::string library;           // this build instead of the one matching its Python
  std::vector<std::pair<std::string, std::string>> settings;  // applied once it answers
  std::function<void(const std::string&)> on_slow;            // a long call into the target
};

struct InjectOutcome {
  injector::Outcome injected;
  protocol::InfoReply info;
  double answered_ms = 0;  // from the start until the recorder answered
};

Result<InjectOutcome> InjectAndWait(const InjectOptions& options);

// Where recorder builds are: $PROBING_RECORDER_DIR when set, else beside this program (build
// tree: build/lib; installed: lib/probing).
std::vector<std::string> RecorderDirs();

}  // namespace probing::live
