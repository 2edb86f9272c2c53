// Summaries of recorded data for `probing-analyze` with no query: what was recorded, by whom,
// and per process (rank): step times and where a step goes, the hottest functions and modules,
// memory over the recording.
//
//   PROBING_ASSIGN_OR_RETURN(format::TraceSet set, format::LoadTraces({"run.ptrace"}));
//   Summary s = Summarize(set.segments);
//   for (const ProcessSummary& p : s.per_process) Print(p.step_p50_ms, p.memory.rss.peak);
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "probing/format/segment.h"

namespace probing::analyzer {

struct NamedCount {
  std::string name;
  uint64_t count = 0;       // functions: samples where it is innermost (own); modules: calls
  double seconds = 0;       // modules: total duration of the calls
  double self_seconds = 0;  // modules: the same less the calls made inside them (nested modules)
  uint64_t total = 0;       // functions: samples where it is anywhere on the stack
};

struct StepTime {
  uint64_t step = 0;
  double ms = 0;
};

// One memory figure over a recording: first, last and highest reading, and the change per minute
// from the first reading to the last. `present` is false when no reading had it.
struct Gauge {
  bool present = false;
  uint64_t start = 0, end = 0, peak = 0;
  double per_minute = 0;
};

struct MemorySummary {
  uint64_t readings = 0;
  double minutes = 0;    // first reading to last
  Gauge rss;             // bytes
  Gauge python_blocks;   // blocks Python's allocator holds (sys.getallocatedblocks())
  Gauge cuda_allocated;  // bytes
};

// One recorded process (a rank, in a job's bundle). A step's time is its python.torch_steps row's
// (the previous step's end to its own, so the time between steps, data loading, counts), every
// step traced or not; in recordings without that table (older recorders), from the start of a
// traced step's first call to the start of the next step's, for steps followed by a traced one.
struct ProcessSummary {
  uint32_t pid = 0;
  int32_t rank = -1;        // -1: unknown
  std::string description;  // as Summary::processes has it; empty when no process record
  uint64_t steps = 0;       // traced (with module calls)
  uint64_t all_steps = 0;   // in python.torch_steps, traced or not; 0 when the recording has none
  uint64_t timed_steps = 0;                   // steps with a time
  double p50_ms = 0, p90_ms = 0, max_ms = 0;  // 0 when no step has a time
  std::vector<StepTime> slowest_steps;        // slowest first
  // Mean per traced step with a time (parted_steps of them): the union of the step's calls of
  // each stage (nested modules counted once), and the rest of the step (data loading, anything
  // untraced).
  uint64_t parted_steps = 0;
  double forward_ms = 0, backward_ms = 0, optimizer_ms = 0, other_ms = 0;
  uint64_t samples = 0;       // stack samples
  uint64_t idle_samples = 0;  // of which idle (IsIdleSample)
  bool idle_included = false;
  uint64_t threads = 0;       // threads with stack samples
  uint64_t idle_threads = 0;  // of which every sample was idle
  // By samples where the function is innermost (count), then where it is on the stack (total).
  std::vector<NamedCount> top_functions;
  std::vector<NamedCount> top_modules;       // by total traced duration
  std::vector<NamedCount> top_modules_self;  // by self time
  MemorySummary memory;
};

struct Summary {
  int64_t first_ts = 0;
  int64_t last_ts = 0;
  uint64_t segments = 0;
  std::map<std::string, uint64_t> events;   // kind -> count
  std::vector<std::string> processes;       // "pid 4242: python train.py (Python 3.11.2, host h)"
  std::vector<std::string> threads;         // "4242 MainThread"
  uint64_t steps = 0;                       // distinct (pid, torch step)
  std::vector<ProcessSummary> per_process;  // by rank, then pid: never summed across processes
};

struct SummaryOptions {
  size_t top = 10;     // rows of each top list
  size_t slowest = 5;  // slowest steps listed
  bool idle = false;   // count idle samples among the top functions
  // Only events in this window (Unix ns, inclusive; a torch call by its start): `probing top`'s
  // last few seconds. Unset: all.
  std::optional<int64_t> since_ns, until_ns;
  // List functions that are never innermost too (the callers, with own 0): `probing top`.
  bool with_callers = false;
};

Summary Summarize(const std::vector<format::Segment>& segments, const SummaryOptions& options = {});

}  // namespace probing::analyzer
