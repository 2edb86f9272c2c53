// `probing -t PID top`: where a running process spends its time now, refreshed in place like
// top: functions by own samples (innermost) and total samples (anywhere on the stack) over the
// last few seconds of its stack rings, threads and samples counted, idle threads (IsIdleSample)
// left out and counted, and, when it traces PyTorch modules, step times and modules by time per
// step. The data is the target's rings (or a host:port recorder's segments), read through the
// session like every other command: the target runs no code for it beyond sealing its open
// segments once a refresh.
//
//   std::atomic<int> stop{0};  // set from a SIGINT handler
//   PROBING_RETURN_IF_ERROR(RunTop(*session, {.window = 5, .once = true}, OutputFormat::kTable,
//                                  stop, std::cout, std::cerr));
#pragma once

#include <atomic>
#include <cstddef>
#include <ostream>

#include "printer.h"
#include "probing/base/status.h"
#include "probing/live/session.h"

namespace probing::cli {

struct TopOptions {
  double interval = 1;  // seconds between views
  double window = 5;    // seconds of samples each view covers, up to its time
  bool once = false;    // one view, then return
  bool idle = false;    // keep idle threads' samples
  size_t limit = 20;    // rows of functions (and of modules)
  // Clear the screen before each view (a terminal); otherwise views follow one another.
  bool clear = false;
};

// Shows views until `stop` is set, the target ends (after one last view), or after the first
// with `once`. A target that is not running (a dead process's rings, a recording) gets one view
// of its last `window` seconds, and `err` says so. Fails when the data cannot be read, and with
// `once` when the window holds no stack sample at all.
Status RunTop(live::Session& target, const TopOptions& options, OutputFormat format,
              const std::atomic<int>& stop, std::ostream& out, std::ostream& err);

}  // namespace probing::cli
