// Loading recordings for postmortem analysis: one or more .ptrace files, or the ring directory a
// (possibly dead) process left under $PROBING_DATA_DIR/<pid>/. Bad data is counted, not fatal:
// every whole segment loads, and LoadStats says what was skipped and why.
//
//   PROBING_ASSIGN_OR_RETURN(TraceSet set, LoadTraces({"run.ptrace"}));
//   Summary s = Summarize(set);
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "probing/format/events.h"
#include "probing/format/status.h"

namespace probing::analyzer {

struct SourceStats {
  std::string path;
  std::string kind;  // "ptrace" or "ring"
  uint64_t segments_ok = 0;
  uint64_t segments_corrupt = 0;  // found but failed checksum or decoding
  uint64_t segments_lost = 0;     // ring: overwritten before we copied them
  uint64_t bytes_skipped = 0;     // ptrace: unparseable bytes between or after segments
  bool used_index = false;
  bool truncated_tail = false;
  std::string first_error;
};

struct TraceSet {
  std::vector<format::Segment> segments;
  std::vector<SourceStats> sources;
};

// Loads every path: a .ptrace file, a ring file, or a directory of ring files. Fails only when a
// path cannot be opened at all or is not a trace; damage inside a trace is counted.
Result<TraceSet> LoadTraces(const std::vector<std::string>& paths);

struct NamedCount {
  std::string name;
  uint64_t count = 0;
  double seconds = 0;  // modules: total duration
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
};

Summary Summarize(const TraceSet& set, size_t top = 10);

}  // namespace probing::analyzer
