// The two questions of distributed training, answered from every rank's data: which rank is
// slow (stragglers: the rank that arrives last at the collectives, not the one whose collective
// takes longest: that one is the victim), and why the job is stuck (hang: a rank that never
// reached the collective the others wait in, a mismatch, a dead or stopped rank, or all stuck in
// the same place). Live (`probing cluster -t ... stragglers|hang`) or from a recorded bundle
// (`probing-analyze DIR --stragglers|--hang`): the same computation over per-rank data.
//
//   std::vector<RankData> ranks = ...;          // segments per rank, on one clock
//   StragglerReport s = Stragglers(ranks, 20);
//   for (const RankLateness& r : s.ranks) ...   // worst first
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "probing/cluster/cluster.h"
#include "probing/format/events.h"
#include "probing/format/trace_set.h"
#include "probing/live/protocol.h"

namespace probing::cluster {

// One rank's recorded data, its times on the common clock.
struct RankData {
  int64_t rank = -1;
  std::string host;
  int64_t pid = 0;
  std::vector<format::Segment> segments;
};

struct RankLateness {
  int64_t rank = -1;
  std::string host;
  int64_t pid = 0;
  double lateness_ms = 0;      // median over the steps of its lateness in the step: the most it
                               // arrived after the first rank at any of the step's meetings
  double lateness_max_ms = 0;
  double step_ms = 0;          // median step time (one step's start to the next's)
  int64_t steps = 0;           // steps compared
  std::string frame;           // where its main thread was while the others waited
  double frame_share = 0;      // of its samples in those windows
  bool late = false;           // lateness_ms >= 5 and >= 10% of its step time
  std::vector<std::pair<int64_t, double>> per_step;  // (step, its lateness in it, ms), in order
};

struct StragglerReport {
  std::vector<RankLateness> ranks;  // worst first
  std::string arrival;  // what was compared: "backward start" (each step's gradient all-reduce
                        // follows it: DDP issues it from C++, untimed), "collectives" (arrival
                        // at each Python collective, by sequence number), or both
  int64_t first_step = 0, last_step = 0;
  std::string problem;  // why nothing could be compared (no steps in common, ...)
};

// The last `steps` steps every rank has (the one under way left out).
StragglerReport Stragglers(const std::vector<RankData>& ranks, int64_t steps);

// Every rank's data, live, each rank's times moved onto this client's clock by its offset.
// `coverage` gets the fan-out's Coverage line.
std::vector<RankData> FetchRankData(const Job& job, const Options& options,
                                    const std::vector<format::Stream>& streams,
                                    std::string* coverage);

// A recorded bundle's ranks (probing-analyze DIR): segments grouped by the rank their process
// records name (by pid when no rank is known).
std::vector<RankData> RanksOf(std::vector<format::Segment> segments);

struct RankHang {
  int64_t rank = -1;
  std::string state;  // "ok", "dead", "stopped", "timeout", "unreachable", "never registered"
  std::string error;
  int64_t step = -1;
  int64_t seq = -1;  // the highest sequence number of the default group it reached
  std::string op;    // the collective it is in now, when known
  double stalled_s = 0;
  std::vector<std::string> frames;  // its main thread, innermost first ("func (file:line)")
};

struct HangReport {
  std::vector<RankHang> ranks;
  std::string verdict;  // one line naming the cause
  std::vector<int64_t> culprits;
};

HangReport DiagnoseHang(std::vector<RankHang> ranks);
// Live: every rank's progress (GET /progress) and its stacks read without the GIL.
HangReport Hang(const Job& job, const Options& options);
// From a bundle: each rank's last sequence number, step and last sampled stack.
HangReport HangOf(const std::vector<RankData>& ranks);

}  // namespace probing::cluster
