// Two recordings compared (`probing-analyze --diff A B`): which functions take a larger or
// smaller share of the stack samples in B than in A, which PyTorch modules take more or less
// time per step, and a differential flame graph: B's flame graph with every frame coloured by
// how its share changed from A (red grown, blue shrunk).
//
//   DiffOptions o;                          // idle threads left out, as in the summary
//   Diff d = DiffRecordings(a.segments, b.segments, o);
//   for (const FunctionChange& f : d.functions) Print(f.name, f.total_b - f.total_a);
//   WriteDiffFlameGraphSvg(d, FlameGraphOptions{}, svg_file);
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "probing/analyzer/export.h"
#include "probing/format/segment.h"

namespace probing::analyzer {

struct DiffOptions {
  bool idle = false;  // count idle threads' samples (IsIdleSample) too
};

// A function, "func (file)": its share of the samples (0..1) where it is innermost (self) and
// where it is anywhere on the stack (total, once per sample), in A and in B.
struct FunctionChange {
  std::string name;
  double self_a = 0, self_b = 0, total_a = 0, total_b = 0;
  // What the list is sorted by: the larger of the self and the total change, in absolute value.
  double Change() const;
};

// A module and stage ("fc1 forward"): its time per step in A and B, in milliseconds (the
// calls' total and self time, summed over the recording's processes, divided by its steps).
struct ModuleChange {
  std::string name;
  double ms_a = 0, ms_b = 0, self_ms_a = 0, self_ms_b = 0;
  double calls_a = 0, calls_b = 0;  // per step
};

struct Diff {
  uint64_t samples_a = 0, samples_b = 0;  // stack samples with Python frames, counted
  uint64_t idle_a = 0, idle_b = 0;        // left out as idle (options.idle false)
  uint64_t steps_a = 0, steps_b = 0;      // traced steps, all processes
  std::vector<FunctionChange> functions;  // biggest change first
  bool modules_compared = false;          // both recordings have torch traces
  std::vector<ModuleChange> modules;      // biggest change of ms per step first
  // The stacks of each, frames named "func (file)" and rooted at the thread's name without
  // its id, so stacks of two runs (other pids, other line numbers) meet.
  FoldedStacks stacks_a, stacks_b;
};

Diff DiffRecordings(const std::vector<format::Segment>& a, const std::vector<format::Segment>& b,
                    const DiffOptions& options = {});

// B's flame graph, each frame filled by the change of its share of all samples from A to B:
// red where it grew, blue where it shrank, in proportion to the largest change; near white
// where nothing changed. Its tooltip gives both shares.
void WriteDiffFlameGraphSvg(const Diff& diff, const FlameGraphOptions& options, std::ostream& out);

}  // namespace probing::analyzer
