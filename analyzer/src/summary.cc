#include "probing/analyzer/summary.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <set>
#include <unordered_map>

#include "probing/analyzer/export.h"

namespace probing::analyzer {
namespace {

using format::Segment;
using format::TorchStage;

struct Call {
  int64_t ts = 0, end = 0;
  uint64_t tid = 0;
  uint64_t step = 0;
  TorchStage stage = TorchStage::kForward;
  std::string name;  // "module stage"
};

// What one process contributed, gathered over every segment before it is summed up.
struct ProcessData {
  std::string description;
  int32_t rank = -1;
  std::vector<Call> calls;
  std::map<uint64_t, uint64_t> step_ns;  // python.torch_steps: step -> its duration (ns)
  std::vector<format::MemoryEvent> memory;
  struct Counts {
    uint64_t own = 0, total = 0;
  };
  std::unordered_map<std::string, Counts> funcs;
  uint64_t samples = 0, idle = 0;
  std::set<uint64_t> threads, busy_threads;  // sampled; with a sample that was not idle
};

// The name a function has in the top lists: "func (file)".
std::string FunctionName(const Segment& seg, uint32_t frame) {
  const auto& f = seg.frames[frame];
  return std::string(seg.String(f.func)) + " (" + std::string(seg.String(f.file)) + ")";
}

// Own and total samples per function of one segment's kept samples, counted per call site
// first (a segment holds the same few stacks many times over). A function appearing twice on
// one stack (recursion) counts once towards its total.
void CountFunctions(const Segment& seg, const std::unordered_map<uint32_t, uint64_t>& by_callsite,
                    ProcessData& pd) {
  std::unordered_map<uint32_t, std::string> names;  // frame -> name
  auto name_of = [&](uint32_t frame) -> const std::string& {
    auto [it, fresh] = names.try_emplace(frame);
    if (fresh) it->second = FunctionName(seg, frame);
    return it->second;
  };
  std::vector<uint32_t> on_stack;
  for (const auto& [callsite, n] : by_callsite) {
    const uint32_t innermost = seg.callsites[callsite].frame;
    if (innermost >= seg.frames.size()) continue;
    pd.funcs[name_of(innermost)].own += n;
    on_stack.clear();
    for (uint32_t cs = callsite; cs != 0 && cs < seg.callsites.size() && on_stack.size() < 100000;
         cs = seg.callsites[cs].parent) {
      const uint32_t frame = seg.callsites[cs].frame;
      if (frame < seg.frames.size()) on_stack.push_back(frame);
    }
    std::set<std::string_view> seen;
    for (uint32_t frame : on_stack) {
      const std::string& name = name_of(frame);
      if (seen.insert(name).second) pd.funcs[name].total += n;
    }
  }
}

// Total length of the union of [ts, end) intervals: nested calls count once.
double UnionMs(std::vector<std::pair<int64_t, int64_t>> spans) {
  std::sort(spans.begin(), spans.end());
  int64_t total = 0, cur_start = 0, cur_end = 0;
  bool open = false;
  for (const auto& [a, b] : spans) {
    if (open && a <= cur_end) {
      cur_end = std::max(cur_end, b);
      continue;
    }
    if (open) total += cur_end - cur_start;
    cur_start = a;
    cur_end = b;
    open = true;
  }
  if (open) total += cur_end - cur_start;
  return static_cast<double>(total) / 1e6;
}

template <typename Get>
Gauge GaugeOf(const std::vector<format::MemoryEvent>& m, double minutes, Get get) {
  Gauge g;
  for (const auto& e : m) {
    auto v = get(e);
    if (!v) continue;
    if (!g.present) g.start = *v;
    g.present = true;
    g.end = *v;
    g.peak = std::max(g.peak, *v);
  }
  if (g.present && minutes > 0)
    g.per_minute = (static_cast<double>(g.end) - static_cast<double>(g.start)) / minutes;
  return g;
}

MemorySummary MemoryOf(std::vector<format::MemoryEvent> m) {
  MemorySummary out;
  std::stable_sort(m.begin(), m.end(), [](const auto& a, const auto& b) { return a.ts < b.ts; });
  out.readings = m.size();
  if (m.empty()) return out;
  out.minutes = static_cast<double>(m.back().ts - m.front().ts) / 60e9;
  out.rss = GaugeOf(m, out.minutes, [](const auto& e) { return std::optional<uint64_t>(e.rss); });
  out.python_blocks = GaugeOf(m, out.minutes, [](const auto& e) {
    return e.has_python_stats ? std::optional<uint64_t>(e.py_blocks) : std::nullopt;
  });
  out.cuda_allocated = GaugeOf(m, out.minutes, [](const auto& e) { return e.cuda_allocated; });
  return out;
}

// Module totals and self times: within one thread and stage, a call that starts inside another
// is its child, and a parent's self time is its duration less its direct children's.
std::vector<NamedCount> ModulesOf(std::vector<Call> calls) {
  std::sort(calls.begin(), calls.end(), [](const Call& a, const Call& b) {
    if (a.tid != b.tid) return a.tid < b.tid;
    if (a.stage != b.stage) return a.stage < b.stage;
    if (a.ts != b.ts) return a.ts < b.ts;
    return a.end > b.end;  // the longer (outer) first
  });
  // Integer nanoseconds: a parent less its children is exact, never -1e-17.
  struct Times {
    uint64_t count = 0;
    int64_t total_ns = 0, self_ns = 0;
  };
  std::unordered_map<std::string, Times> by_name;
  std::vector<std::pair<const Call*, Times*>> stack;
  for (size_t i = 0; i < calls.size(); ++i) {
    const Call& c = calls[i];
    if (i > 0 && (calls[i - 1].tid != c.tid || calls[i - 1].stage != c.stage)) stack.clear();
    while (!stack.empty() && stack.back().first->end <= c.ts) stack.pop_back();
    const int64_t ns = c.end - c.ts;
    Times& m = by_name[c.name];
    ++m.count;
    m.total_ns += ns;
    m.self_ns += ns;
    // The same call seen twice (a segment read from two sources) is not its own child.
    const bool same = !stack.empty() && stack.back().first->ts == c.ts &&
                      stack.back().first->end == c.end && stack.back().first->name == c.name;
    if (!stack.empty() && !same) stack.back().second->self_ns -= ns;
    stack.push_back({&c, &m});
  }
  std::vector<NamedCount> out;
  for (const auto& [name, m] : by_name)
    out.push_back({name, m.count, static_cast<double>(m.total_ns) / 1e9,
                   static_cast<double>(std::max<int64_t>(0, m.self_ns)) / 1e9});
  return out;
}

void SortTrim(std::vector<NamedCount>& v, size_t top, double NamedCount::*key) {
  std::sort(v.begin(), v.end(), [&](const auto& a, const auto& b) {
    return a.*key != b.*key ? a.*key > b.*key : a.name < b.name;
  });
  if (v.size() > top) v.resize(top);
}

// Step times from python.torch_steps (`step_ns`: every step, traced or not) when the recording
// has it, else from the traced calls: a traced step's first call to the next step's, for steps
// followed by a traced one. The parts of a step are the means over the traced steps with a time.
void StepsOf(const std::vector<Call>& calls, const std::map<uint64_t, uint64_t>& step_ns,
             size_t slowest, ProcessSummary& p) {
  std::map<uint64_t, int64_t> start;  // step -> first call
  std::map<uint64_t, std::vector<std::pair<int64_t, int64_t>>> spans[3];
  for (const auto& c : calls) {
    auto [it, fresh] = start.emplace(c.step, c.ts);
    if (!fresh && c.ts < it->second) it->second = c.ts;
    spans[static_cast<int>(c.stage)][c.step].push_back({c.ts, c.end});
  }
  p.steps = start.size();
  p.all_steps = step_ns.size();
  std::vector<StepTime> times;
  if (!step_ns.empty()) {
    for (const auto& [step, ns] : step_ns)
      if (ns > 0) times.push_back({step, static_cast<double>(ns) / 1e6});
  } else if (!start.empty()) {
    for (auto it = start.begin(), next = std::next(it); next != start.end(); ++it, ++next)
      if (next->first == it->first + 1)
        times.push_back({it->first, static_cast<double>(next->second - it->second) / 1e6});
  }
  p.timed_steps = times.size();
  if (times.empty()) return;
  double fwd = 0, bwd = 0, opt = 0, other = 0;
  for (const auto& t : times) {
    if (start.count(t.step) == 0) continue;
    const double f = UnionMs(spans[0][t.step]), b = UnionMs(spans[1][t.step]),
                 o = UnionMs(spans[2][t.step]);
    fwd += f;
    bwd += b;
    opt += o;
    other += std::max(0.0, t.ms - f - b - o);
    ++p.parted_steps;
  }
  if (p.parted_steps > 0) {
    const auto n = static_cast<double>(p.parted_steps);
    p.forward_ms = fwd / n;
    p.backward_ms = bwd / n;
    p.optimizer_ms = opt / n;
    p.other_ms = other / n;
  }
  std::vector<double> ms;
  for (const auto& t : times) ms.push_back(t.ms);
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))];
  };
  p.p50_ms = at(0.5);
  p.p90_ms = at(0.9);
  p.max_ms = ms.back();
  std::stable_sort(times.begin(), times.end(),
                   [](const auto& a, const auto& b) { return a.ms > b.ms; });
  if (times.size() > slowest) times.resize(slowest);
  p.slowest_steps = std::move(times);
}

}  // namespace

Summary Summarize(const std::vector<Segment>& segments, const SummaryOptions& options) {
  Summary s;
  s.segments = segments.size();
  bool have_time = false;
  std::set<std::string> threads, processes;
  std::map<uint32_t, ProcessData> data;
  auto in_window = [&](int64_t ts) {
    return (!options.since_ns || ts >= *options.since_ns) &&
           (!options.until_ns || ts <= *options.until_ns);
  };
  for (const Segment& seg : segments) {
    if (seg.info.event_count > 0 && (seg.info.first_ts != 0 || seg.info.last_ts != 0)) {
      if (!have_time || seg.info.first_ts < s.first_ts) s.first_ts = seg.info.first_ts;
      if (!have_time || seg.info.last_ts > s.last_ts) s.last_ts = seg.info.last_ts;
      have_time = true;
    }
    s.events["stack samples"] += seg.samples.size();
    s.events["torch calls"] += seg.torch.size();
    s.events["memory samples"] += seg.memory.size();
    s.events["variable values"] += seg.variables.size();
    s.events["metric readings"] += seg.metrics.size();
    for (const auto& l : seg.lost) s.events["segments lost while recording"] += l.segments;
    for (const auto& st : seg.sampler_stats) {
      // Stacks that changed while the sampler read them, on every try: left out, not stored torn.
      if (st.dropped) s.events["stack samples dropped (changed while read)"] += st.dropped;
      if (st.retried) s.events["stack samples read twice (changed once)"] += st.retried;
    }
    for (const auto& p : seg.processes) {
      std::string d = "pid " + std::to_string(p.pid) + ": " + std::string(seg.String(p.cmdline)) +
                      " (Python " + std::string(seg.String(p.python_version)) + ", host " +
                      std::string(seg.String(p.host)) +
                      (p.rank >= 0 ? ", rank " + std::to_string(p.rank) : std::string()) + ")";
      processes.insert(d);
      ProcessData& pd = data[p.pid];
      pd.description = d;
      if (p.rank >= 0) pd.rank = p.rank;
    }
    for (size_t t = 1; t < seg.threads.size(); ++t)
      threads.insert(std::to_string(seg.threads[t].tid) + " " +
                     std::string(seg.String(seg.threads[t].name)));
    if (seg.samples.empty() && seg.torch.empty() && seg.memory.empty() && seg.torch_steps.empty())
      continue;
    ProcessData& pd = data[seg.info.pid];
    std::unordered_map<uint32_t, uint64_t> by_callsite;
    for (const auto& smp : seg.samples) {
      if (!in_window(smp.ts)) continue;
      ++pd.samples;
      const uint64_t tid = smp.thread < seg.threads.size() ? seg.threads[smp.thread].tid : 0;
      pd.threads.insert(tid);
      if (IsIdleSample(seg, smp)) {
        ++pd.idle;
        if (!options.idle) continue;
      } else {
        pd.busy_threads.insert(tid);
      }
      if (smp.callsite == 0 || smp.callsite >= seg.callsites.size()) continue;
      ++by_callsite[smp.callsite];
    }
    CountFunctions(seg, by_callsite, pd);
    for (const auto& e : seg.torch) {
      if (!in_window(e.ts)) continue;
      Call c;
      c.ts = e.ts;
      c.end = e.ts + static_cast<int64_t>(e.duration_ns);
      c.tid = e.thread < seg.threads.size() ? seg.threads[e.thread].tid : 0;
      c.step = e.step;
      c.stage = e.stage;
      c.name = std::string(seg.String(e.module)) + " " + format::TorchStageName(e.stage);
      pd.calls.push_back(std::move(c));
    }
    for (const auto& st : seg.torch_steps)
      // By its end, as a call by its start: a step cut by the window's start counts.
      if (in_window(st.ts_ns + static_cast<int64_t>(st.duration_ns)))
        pd.step_ns[st.step] = st.duration_ns;
    for (const auto& m : seg.memory)
      if (in_window(m.ts)) pd.memory.push_back(m);
  }
  s.processes.assign(processes.begin(), processes.end());
  s.threads.assign(threads.begin(), threads.end());
  for (auto& [pid, pd] : data) {
    ProcessSummary p;
    p.pid = pid;
    p.rank = pd.rank;
    p.description = pd.description;
    StepsOf(pd.calls, pd.step_ns, options.slowest, p);
    s.steps += p.steps;
    p.samples = pd.samples;
    p.idle_samples = pd.idle;
    p.idle_included = options.idle;
    p.threads = pd.threads.size();
    p.idle_threads = pd.threads.size() - pd.busy_threads.size();
    for (auto& [name, n] : pd.funcs)
      if (n.own > 0 || options.with_callers)
        p.top_functions.push_back({name, n.own, 0, 0, n.total});
    std::sort(p.top_functions.begin(), p.top_functions.end(), [](const auto& a, const auto& b) {
      if (a.count != b.count) return a.count > b.count;
      return a.total != b.total ? a.total > b.total : a.name < b.name;
    });
    if (p.top_functions.size() > options.top) p.top_functions.resize(options.top);
    p.top_modules = ModulesOf(std::move(pd.calls));
    p.top_modules_self = p.top_modules;
    SortTrim(p.top_modules, options.top, &NamedCount::seconds);
    SortTrim(p.top_modules_self, options.top, &NamedCount::self_seconds);
    p.memory = MemoryOf(std::move(pd.memory));
    s.per_process.push_back(std::move(p));
  }
  std::sort(s.per_process.begin(), s.per_process.end(), [](const auto& a, const auto& b) {
    if ((a.rank < 0) != (b.rank < 0)) return b.rank < 0;  // known ranks first
    return a.rank != b.rank ? a.rank < b.rank : a.pid < b.pid;
  });
  return s;
}

}  // namespace probing::analyzer
