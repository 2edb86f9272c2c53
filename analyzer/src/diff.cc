#include "probing/analyzer/diff.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include "probing/analyzer/summary.h"

namespace probing::analyzer {
namespace {

using format::Segment;

// "func (file:12)" -> "func (file)": a function keeps its name when an edit moves it.
std::string WithoutLine(std::string_view frame) {
  if (frame.empty() || frame.back() != ')') return std::string(frame);
  const size_t colon = frame.rfind(':');
  if (colon == std::string_view::npos || colon + 2 > frame.size() - 1) return std::string(frame);
  for (size_t i = colon + 1; i + 1 < frame.size(); ++i)
    if (frame[i] < '0' || frame[i] > '9') return std::string(frame);
  return std::string(frame.substr(0, colon)) + ")";
}

// "MainThread (4242)" -> "MainThread": the same thread of another run.
std::string WithoutId(std::string_view root) {
  const size_t open = root.rfind(" (");
  if (open == std::string_view::npos || root.back() != ')') return std::string(root);
  for (size_t i = open + 2; i + 1 < root.size(); ++i)
    if (root[i] < '0' || root[i] > '9') return std::string(root);
  return std::string(root.substr(0, open));
}

std::vector<std::string_view> Split(std::string_view stack) {
  std::vector<std::string_view> out;
  size_t begin = 0;
  while (begin <= stack.size()) {
    size_t end = stack.find(';', begin);
    if (end == std::string_view::npos) end = stack.size();
    out.push_back(stack.substr(begin, end - begin));
    begin = end + 1;
  }
  return out;
}

// FoldStacks' stacks with ids and line numbers taken out (and the process root, with several
// processes), so two runs' stacks meet.
FoldedStacks Normalized(const std::vector<Segment>& segments, const DiffOptions& options) {
  SampleFilter filter;
  filter.idle = options.idle;
  FoldedStacks raw = FoldStacks(segments, filter);
  std::set<uint32_t> pids;
  for (const Segment& seg : segments) pids.insert(seg.info.pid);
  const bool process_root = pids.size() > 1;
  FoldedStacks out;
  out.samples = raw.samples;
  out.without_frames = raw.without_frames;
  out.idle = raw.idle;
  for (const auto& [stack, n] : raw.stacks) {
    std::vector<std::string_view> frames = Split(stack);
    size_t first = process_root && frames.size() > 1 ? 1 : 0;
    std::string key = WithoutId(frames[first]);
    for (size_t i = first + 1; i < frames.size(); ++i) key += ";" + WithoutLine(frames[i]);
    out.stacks[key] += n;
  }
  return out;
}

struct Shares {
  std::unordered_map<std::string, uint64_t> self, total;
};

Shares SharesOf(const FoldedStacks& folded) {
  Shares s;
  for (const auto& [stack, n] : folded.stacks) {
    std::vector<std::string_view> frames = Split(stack);
    if (frames.size() < 2) continue;  // a thread root alone: no Python frame
    s.self[std::string(frames.back())] += n;
    std::set<std::string_view> seen(frames.begin() + 1, frames.end());  // once per sample
    for (std::string_view f : seen) s.total[std::string(f)] += n;
  }
  return s;
}

double Share(const std::unordered_map<std::string, uint64_t>& m, const std::string& k,
             uint64_t samples) {
  auto it = m.find(k);
  return it == m.end() || samples == 0
             ? 0.0
             : static_cast<double>(it->second) / static_cast<double>(samples);
}

struct Modules {
  uint64_t steps = 0;
  std::map<std::string, NamedCount> by_name;  // summed over processes
};

Modules ModulesOf(const std::vector<Segment>& segments) {
  SummaryOptions o;
  o.top = std::numeric_limits<size_t>::max();
  Summary s = Summarize(segments, o);
  Modules m;
  for (const ProcessSummary& p : s.per_process) {
    m.steps += p.steps;
    for (const NamedCount& c : p.top_modules) {
      NamedCount& sum = m.by_name[c.name];
      sum.name = c.name;
      sum.count += c.count;
      sum.seconds += c.seconds;
      sum.self_seconds += c.self_seconds;
    }
  }
  return m;
}

// Every prefix of every stack with its samples: a frame's value in the flame graph.
std::unordered_map<std::string, uint64_t> FrameValues(const FoldedStacks& folded) {
  std::unordered_map<std::string, uint64_t> out;
  for (const auto& [stack, n] : folded.stacks) {
    for (size_t end = stack.find(';'); end != std::string::npos; end = stack.find(';', end + 1))
      out[stack.substr(0, end)] += n;
    out[stack] += n;
  }
  return out;
}

std::string Percent(double share) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g%%", 100 * share);
  return buf;
}

}  // namespace

double FunctionChange::Change() const {
  return std::max(std::fabs(self_b - self_a), std::fabs(total_b - total_a));
}

Diff DiffRecordings(const std::vector<Segment>& a, const std::vector<Segment>& b,
                    const DiffOptions& options) {
  Diff d;
  d.stacks_a = Normalized(a, options);
  d.stacks_b = Normalized(b, options);
  d.samples_a = d.stacks_a.samples;
  d.samples_b = d.stacks_b.samples;
  d.idle_a = d.stacks_a.idle;
  d.idle_b = d.stacks_b.idle;

  const Shares sa = SharesOf(d.stacks_a), sb = SharesOf(d.stacks_b);
  std::set<std::string> names;
  for (const auto* m : {&sa.total, &sb.total})
    for (const auto& [name, n] : *m) names.insert(name);
  for (const std::string& name : names) {
    FunctionChange f;
    f.name = name;
    f.self_a = Share(sa.self, name, d.samples_a);
    f.self_b = Share(sb.self, name, d.samples_b);
    f.total_a = Share(sa.total, name, d.samples_a);
    f.total_b = Share(sb.total, name, d.samples_b);
    d.functions.push_back(std::move(f));
  }
  // Equal changes (none, comparing a run with itself): the larger share first.
  std::stable_sort(d.functions.begin(), d.functions.end(), [](const auto& x, const auto& y) {
    if (x.Change() != y.Change()) return x.Change() > y.Change();
    return std::max(x.total_a, x.total_b) > std::max(y.total_a, y.total_b);
  });

  Modules ma = ModulesOf(a), mb = ModulesOf(b);
  d.steps_a = ma.steps;
  d.steps_b = mb.steps;
  d.modules_compared = ma.steps > 0 && mb.steps > 0;
  if (d.modules_compared) {
    std::set<std::string> modules;
    for (const auto* m : {&ma.by_name, &mb.by_name})
      for (const auto& [name, c] : *m) modules.insert(name);
    const double steps_a = static_cast<double>(ma.steps), steps_b = static_cast<double>(mb.steps);
    for (const std::string& name : modules) {
      ModuleChange c;
      c.name = name;
      if (auto it = ma.by_name.find(name); it != ma.by_name.end()) {
        c.ms_a = it->second.seconds * 1e3 / steps_a;
        c.self_ms_a = it->second.self_seconds * 1e3 / steps_a;
        c.calls_a = static_cast<double>(it->second.count) / steps_a;
      }
      if (auto it = mb.by_name.find(name); it != mb.by_name.end()) {
        c.ms_b = it->second.seconds * 1e3 / steps_b;
        c.self_ms_b = it->second.self_seconds * 1e3 / steps_b;
        c.calls_b = static_cast<double>(it->second.count) / steps_b;
      }
      d.modules.push_back(std::move(c));
    }
    std::stable_sort(d.modules.begin(), d.modules.end(), [](const auto& x, const auto& y) {
      const double cx = std::fabs(x.ms_b - x.ms_a), cy = std::fabs(y.ms_b - y.ms_a);
      if (cx != cy) return cx > cy;
      return std::max(x.ms_a, x.ms_b) > std::max(y.ms_a, y.ms_b);
    });
  }
  return d;
}

void WriteDiffFlameGraphSvg(const Diff& diff, const FlameGraphOptions& options, std::ostream& out) {
  const auto va = FrameValues(diff.stacks_a), vb = FrameValues(diff.stacks_b);
  const double total_a = static_cast<double>(diff.stacks_a.samples);
  const double total_b = static_cast<double>(diff.stacks_b.samples);
  auto share = [](const std::unordered_map<std::string, uint64_t>& v, const std::string& k,
                  double total) {
    auto it = v.find(k);
    return it == v.end() || total <= 0 ? 0.0 : static_cast<double>(it->second) / total;
  };
  double largest = 0;
  for (const auto& [stack, n] : vb)
    largest = std::max(largest, std::fabs(share(vb, stack, total_b) - share(va, stack, total_a)));
  FlameGraphOptions o = options;
  o.style = [&](std::string_view stack) {
    const std::string key(stack);
    const double a = share(va, key, total_a), b = share(vb, key, total_b), change = b - a;
    FrameStyle s;
    // A change too small to see is no change: grey, not a faint tint that reads as one.
    const double t = largest > 0 ? std::fabs(change) / largest : 0;
    const int v = static_cast<int>(std::lround(235 * (1 - t)));
    char buf[32];
    if (t < 0.01)
      std::snprintf(buf, sizeof buf, "rgb(225,225,225)");
    else if (change > 0)
      std::snprintf(buf, sizeof buf, "rgb(255,%d,%d)", v, v);
    else
      std::snprintf(buf, sizeof buf, "rgb(%d,%d,255)", v, v);
    s.fill = buf;
    char delta[32];
    std::snprintf(delta, sizeof delta, "%+.3g", 100 * change);
    s.note = va.count(key) == 0
                 ? "not in A; " + Percent(b) + " in B"
                 : "A " + Percent(a) + ", B " + Percent(b) + ": " + delta + " points";
    return s;
  };
  WriteFlameGraphSvg(diff.stacks_b, o, out);
}

}  // namespace probing::analyzer
