// Summaries of recorded data for `probing-analyze` with no query: what was recorded, by whom,
// the hottest functions and modules.
//
//   PROBING_ASSIGN_OR_RETURN(format::TraceSet set, format::LoadTraces({"run.ptrace"}));
//   Summary s = Summarize(set.segments);
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "probing/format/segment.h"

namespace probing::analyzer {

struct NamedCount {
  std::string name;
  uint64_t count = 0;
  double seconds = 0;  // modules: total duration
};

// One recorded process (a rank, in a job's bundle): its training steps and their times, from the
// start of each step to the start of the next (so the time between steps counts too).
struct ProcessSteps {
  uint32_t pid = 0;
  int32_t rank = -1;  // -1: unknown
  uint64_t steps = 0;
  double p50_ms = 0, p90_ms = 0, max_ms = 0;  // 0 when fewer than two steps
};

struct Summary {
  int64_t first_ts = 0;
  int64_t last_ts = 0;
  uint64_t segments = 0;
  std::map<std::string, uint64_t> events;  // kind -> count
  std::vector<std::string> processes;      // "pid 4242: python train.py (Python 3.11.2, host h)"
  std::vector<std::string> threads;        // "4242 MainThread"
  uint64_t steps = 0;                      // distinct torch steps
  std::vector<NamedCount> top_functions;   // by samples where the function is innermost
  std::vector<NamedCount> top_modules;     // by total traced duration
  std::vector<ProcessSteps> per_process;   // by rank, then pid: never summed across processes
};

Summary Summarize(const std::vector<format::Segment>& segments, size_t top = 10);

}  // namespace probing::analyzer
