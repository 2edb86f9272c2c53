// Exports of recorded data for other tools and for eyes: folded stacks (flamegraph.pl's input),
// an interactive flame graph SVG of our own, speedscope's file format, and Chrome's trace event
// format (Perfetto, chrome://tracing) for the PyTorch timeline. Formats: docs/exports.md.
//
//   SampleFilter f;
//   f.thread = 4242;
//   FoldedStacks folded = FoldStacks(set.segments, f);
//   WriteFolded(folded, std::cout);                      // "MainThread (4242);main (t.py:1);...
//   17" WriteFlameGraphSvg(folded, FlameGraphOptions{}, svg_file); WriteSpeedscope(set.segments, f,
//   "train.py", json_file); WriteChromeTrace(set.segments, f, json_file);
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "probing/format/events.h"

namespace probing::analyzer {

// Which events an export takes. Unset fields take everything.
struct SampleFilter {
  std::optional<uint64_t> thread;   // OS thread id
  std::optional<int64_t> since_ns;  // Unix time, inclusive
  std::optional<int64_t> until_ns;  // Unix time, inclusive
  // Stack samples only: the (pid, sample_id) pairs to keep, as python.stacks numbers them
  // (a --where clause evaluated by SQL). Unset: every sample.
  std::optional<std::set<std::pair<int64_t, int64_t>>> samples;
  // Stack samples only: false leaves out the samples of idle threads (IsIdleSample).
  bool idle = true;
  // Folded stacks: each frame split by the line it was executing ("func (file:line)").
  bool lines = false;

  bool TakesTime(int64_t ts) const;
  bool Takes(uint64_t tid, int64_t ts) const;
};

// Idle: a thread sample that does not hold the GIL and whose innermost Python frame is a known
// waiting call of the standard library (IdleCalls: threading's Condition/Event/Thread waits,
// queue.Queue.get/put, selectors' select, multiprocessing's connection waits and queue get,
// subprocess waits, an idle concurrent.futures worker, socket accept). A blocking call written
// in C (time.sleep, lock.acquire, a plain socket.recv) leaves no frame of its own, so the thread
// shows its caller and is not counted idle: the samples cannot tell it from C code doing work
// with the GIL released (a matrix multiply, I/O a program waits on).
bool IsIdleSample(const format::Segment& seg, const format::StackSample& sample);
// The waiting calls, as "func (file suffix)", for documentation and --help.
std::string IdleCalls();

// The name a frame has in every export: "func (file:first_line)". ';' and line breaks, which
// the folded format cannot carry, become ':' and ' '.
std::string FrameName(std::string_view func, std::string_view file, uint32_t first_line);

// Stacks, root first, joined by ';', each with how many samples had it. The root of each stack
// is its thread ("MainThread (4242)"), under its process ("process 4242") when the data holds
// more than one process. Samples without Python frames are left out and counted.
struct FoldedStacks {
  std::map<std::string, uint64_t> stacks;  // sorted: output is the same for the same input
  uint64_t samples = 0;                    // samples taken (the sum of the counts)
  uint64_t without_frames = 0;             // samples that matched but had no Python frame
  uint64_t idle = 0;                       // samples left out as idle (filter.idle false)
};

FoldedStacks FoldStacks(const std::vector<format::Segment>& segments, const SampleFilter& filter);
// The same over segments held elsewhere (a reader that keeps what it decoded, `probing web`).
FoldedStacks FoldStacks(const std::vector<const format::Segment*>& segments,
                        const SampleFilter& filter);

// Brendan Gregg's folded format: one "frame;frame;frame count" line per distinct stack.
void WriteFolded(const FoldedStacks& folded, std::ostream& out);

struct FlameGraphOptions {
  std::string title = "Flame graph";
  std::string subtitle;  // a line under the title (what was recorded, filters)
  int width = 1200;      // pixels
};

// A self-contained SVG (no external file or script): click a frame to zoom into it, click the
// zoomed parent bar or press Escape to zoom out, Ctrl-F or "/" to search by regular expression
// (matches highlighted and their share shown), a tooltip and a status line for every frame.
void WriteFlameGraphSvg(const FoldedStacks& folded, const FlameGraphOptions& options,
                        std::ostream& out);

// speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json): one
// "sampled" profile per thread, samples in time order, weights in samples.
void WriteSpeedscope(const std::vector<format::Segment>& segments, const SampleFilter& filter,
                     const std::string& name, std::ostream& out);

// Chrome's trace event format (JSON object form): every python.torch_trace row as a complete
// event ("X") on its thread, a "step N" event around each step's calls, process and thread
// names, and memory (RSS, CUDA) as counters. Returns the number of torch calls written.
uint64_t WriteChromeTrace(const std::vector<format::Segment>& segments, const SampleFilter& filter,
                          std::ostream& out);

}  // namespace probing::analyzer
