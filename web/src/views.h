// What the dashboard's pages show, computed from a target's decoded segments: the latest
// stack of each thread, a flame graph tree, step times and module costs, the memory curve,
// variables and metrics, and the facts of the overview. Pure functions of the segments, the
// same for a live process and a recording.
//
//   Snapshot snap = ...;                       // Target::Data()
//   FlameReply f = Flame(snap.segments, 10, std::nullopt);
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "probing/format/events.h"
#include "probing/web/api.h"

namespace probing::web {

// A target's decoded segments as they are now. `segments` point into `keep`, which holds them
// alive while a view reads them (the cache may drop them meanwhile).
struct Snapshot {
  std::vector<std::shared_ptr<const format::Segment>> keep;
  std::vector<const format::Segment*> segments;  // every stream
  bool live = false;                             // the target may still record
  uint64_t corrupt = 0;                          // segments that failed their checks
  uint64_t lost = 0;                             // segments overwritten before they were read
};

using Segments = std::vector<const format::Segment*>;

// Threads whose latest sample is this much older than the newest sample are not shown (they
// ended).
inline constexpr double kThreadGoneAfterS = 5;

// The latest sample of each thread (source "samples").
StacksReply LatestStacks(const Segments& segments);

// The flame graph of the samples in the last `seconds` before the newest one (0: all), of one
// thread or all.
FlameReply Flame(const Segments& segments, double seconds, std::optional<uint64_t> thread);

// The latest `last` complete steps and the modules' cost over them.
StepsReply Steps(const Segments& segments, size_t last);

// Memory samples of the last `seconds` before the newest one (0: all), at most kMaxPoints
// (evenly thinned beyond that).
inline constexpr size_t kMaxMemoryPoints = 2000;
MemoryReply Memory(const Segments& segments, double seconds);

VariablesReply Variables(const Segments& segments);

// The overview's fields that come from the data (process, times, counts, threads).
void FillOverview(const Segments& segments, OverviewReply* out);

// One rank's step as cluster.torch_trace has it: when its last row ended, and whether its
// optimizer step is in.
struct RankStep {
  int64_t rank = 0;
  int64_t step = 0;
  double end = 0;
  bool done = false;
};
// The rank x step grid of step times over the latest `last` complete steps (coverage is left
// to the caller).
ClusterStepsReply ClusterSteps(const std::vector<RankStep>& rows, size_t last);

}  // namespace probing::web
