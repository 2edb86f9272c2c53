// Exports of recorded data for other tools and for eyes: folded stacks (flamegraph.pl's input),
// an interactive flame graph SVG of our own, speedscope's file format, and Chrome's trace event
// format (Perfetto, chrome://tracing) for the PyTorch timeline. Formats: docs/record.md.
//
//   SampleFilter f;
//   f.thread = 4242;
//   FoldedStacks folded = FoldStacks(set.segments, f);
//   WriteFolded(folded, std::cout);  // "MainThread (4242);main (t.py:1);... 17"
//   WriteFlameGraphSvg(folded, FlameGraphOptions{}, svg_file);
//   WriteSpeedscope(set.segments, f, "train.py", json_file);
//   WriteChromeTrace(set.segments, f, json_file);
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
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

// How one frame is drawn, where the usual (a warm colour from the function's name) will not do.
struct FrameStyle {
  std::string fill;  // an SVG colour ("rgb(255,40,40)"); empty: the usual colour
  std::string note;  // added to the frame's tooltip; empty: nothing
};

struct FlameGraphOptions {
  std::string title = "Flame graph";
  std::string subtitle;  // a line under the title (what was recorded, filters)
  int width = 1200;      // pixels
  // Optional: each frame's style, from its stack written as the folded keys are (root first,
  // ';' between frames, this frame last). A differential flame graph colours by change.
  std::function<FrameStyle(std::string_view stack)> style;
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
// event ("X") on its thread, a "step N" event around each step's calls, process names (and
// ranks as their sort index), thread names, and memory (RSS, CUDA) as counters.
//
// Nesting is exact for every reader. Within a thread the intervals (steps, calls, calls inside
// calls) form a tree in integer nanoseconds; one that starts inside another but ends after it
// is cut at that end (counted). Times are then written on a binary grid (ChromeTraceMicros),
// so `ts + dur`, and any difference of times, is exact in double arithmetic (JavaScript's):
// a child never ends after its parent nor starts before it, and siblings keep their order.
// A zero-length call is an instant event ("i"), which no importer mistakes for a start or end.
struct ChromeTraceStats {
  uint64_t calls = 0;  // torch calls written
  uint64_t cut = 0;    // intervals cut at the end of the one around them
};
ChromeTraceStats WriteChromeTrace(const std::vector<format::Segment>& segments,
                                  const SampleFilter& filter, std::ostream& out);

// Nanoseconds (>= 0) as the microseconds the Chrome trace writes: the nearest multiple of
// 1/4096 us (about 0.24 ns). A double holds every such value up to 2^53 / 4096 us (25 days)
// exactly, so sums and differences of them are exact; and a reader that rounds microseconds
// to whole nanoseconds (Perfetto) gets the original nanoseconds back, for times and for
// durations alike (each is off by less than half a nanosecond).
double ChromeTraceMicros(int64_t ns);

}  // namespace probing::analyzer
