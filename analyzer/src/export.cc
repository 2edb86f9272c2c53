#include "probing/analyzer/export.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_map>

namespace probing::analyzer {
namespace {

using format::Segment;
using json = nlohmann::ordered_json;

std::string Clean(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c == ';') c = ':';
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return out;
}

std::string ThreadName(const Segment& seg, uint32_t thread) {
  const auto& th = seg.threads[thread];
  std::string name = Clean(seg.String(th.name));
  return (name.empty() ? "thread" : name) + " (" + std::to_string(th.tid) + ")";
}

bool ManyProcesses(const std::vector<Segment>& segments) {
  for (const Segment& seg : segments)
    if (seg.info.pid != segments.front().info.pid) return true;
  return false;
}

bool ManyProcesses(const std::vector<const Segment*>& segments) {
  for (const Segment* seg : segments)
    if (seg->info.pid != segments.front()->info.pid) return true;
  return false;
}

// The sample_id python.stacks gives sample i of seg (format/src/tables.cc).
int64_t SampleId(const Segment& seg, size_t i) {
  return static_cast<int64_t>((seg.info.seq << 24) + i);
}

// Everything but idleness: callers count the idle samples they leave out.
bool TakesSampleAnyState(const SampleFilter& f, const Segment& seg, size_t i) {
  const auto& s = seg.samples[i];
  if (!f.Takes(seg.threads[s.thread].tid, s.ts)) return false;
  return !f.samples || f.samples->count({int64_t{seg.info.pid}, SampleId(seg, i)}) > 0;
}

bool TakesSample(const SampleFilter& f, const Segment& seg, size_t i) {
  return TakesSampleAnyState(f, seg, i) && (f.idle || !IsIdleSample(seg, seg.samples[i]));
}

struct IdleCall {
  std::string_view func;
  std::string_view file;  // the path ends with it, after a '/' or as the whole path
};
// Innermost frames of blocking waits written in Python; each ends in a C call that releases
// the GIL (a lock's acquire, select, poll, waitpid).
constexpr IdleCall kIdleCalls[] = {
    {"wait", "threading.py"},
    {"wait_for", "threading.py"},
    {"_wait_for_tstate_lock", "threading.py"},
    {"join", "threading.py"},
    {"get", "queue.py"},
    {"put", "queue.py"},
    {"select", "selectors.py"},
    {"wait", "multiprocessing/connection.py"},
    {"_poll", "multiprocessing/connection.py"},
    {"poll", "multiprocessing/connection.py"},
    {"_recv", "multiprocessing/connection.py"},
    {"get", "multiprocessing/queues.py"},
    {"wait", "subprocess.py"},
    {"_wait", "subprocess.py"},
    {"_try_wait", "subprocess.py"},
    {"communicate", "subprocess.py"},
    {"_worker", "concurrent/futures/thread.py"},
    {"accept", "socket.py"},
};

bool PathEndsWith(std::string_view path, std::string_view suffix) {
  if (path.size() < suffix.size() || path.substr(path.size() - suffix.size()) != suffix)
    return false;
  return path.size() == suffix.size() || path[path.size() - suffix.size() - 1] == '/';
}

// Frames of one call site, root first.
template <typename Fn>
void WalkRootFirst(const Segment& seg, uint32_t callsite, Fn&& fn) {
  std::vector<uint32_t> chain;
  for (uint32_t cs = callsite; cs != 0 && chain.size() < 100000; cs = seg.callsites[cs].parent)
    chain.push_back(cs);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) fn(seg.callsites[*it]);
}

}  // namespace

bool SampleFilter::TakesTime(int64_t ts) const {
  return (!since_ns || ts >= *since_ns) && (!until_ns || ts <= *until_ns);
}

bool SampleFilter::Takes(uint64_t tid, int64_t ts) const {
  return (!thread || *thread == tid) && TakesTime(ts);
}

bool IsIdleSample(const Segment& seg, const format::StackSample& sample) {
  if ((sample.flags & format::kSampleHoldsGil) != 0 || sample.callsite == 0 ||
      sample.callsite >= seg.callsites.size())
    return false;
  uint32_t frame = seg.callsites[sample.callsite].frame;
  if (frame >= seg.frames.size()) return false;
  const auto& f = seg.frames[frame];
  std::string_view func = seg.String(f.func), file = seg.String(f.file);
  // 3.11+ record qualified names (Condition.wait, Queue.get): the method's own name decides.
  if (size_t dot = func.rfind('.'); dot != std::string_view::npos) func = func.substr(dot + 1);
  for (const auto& c : kIdleCalls)
    if (c.func == func && PathEndsWith(file, c.file)) return true;
  return false;
}

std::string IdleCalls() {
  std::string out;
  for (const auto& c : kIdleCalls)
    out += (out.empty() ? "" : ", ") + std::string(c.func) + " (" + std::string(c.file) + ")";
  return out;
}

std::string FrameName(std::string_view func, std::string_view file, uint32_t first_line) {
  return Clean(func) + " (" + Clean(file) + ":" + std::to_string(first_line) + ")";
}

FoldedStacks FoldStacks(const std::vector<Segment>& segments, const SampleFilter& filter) {
  std::vector<const Segment*> all;
  all.reserve(segments.size());
  for (const Segment& seg : segments) all.push_back(&seg);
  return FoldStacks(all, filter);
}

FoldedStacks FoldStacks(const std::vector<const Segment*>& segments, const SampleFilter& filter) {
  FoldedStacks out;
  const bool many = !segments.empty() && ManyProcesses(segments);
  for (const Segment* segment : segments) {
    const Segment& seg = *segment;
    // Count per (thread, call site) first: the ids are local to the segment, and a segment
    // holds the same few stacks many times over.
    std::map<std::pair<uint32_t, uint32_t>, uint64_t> counts;
    for (size_t i = 0; i < seg.samples.size(); ++i) {
      if (!TakesSampleAnyState(filter, seg, i)) continue;
      const auto& s = seg.samples[i];
      if (!filter.idle && IsIdleSample(seg, s)) {
        ++out.idle;
        continue;
      }
      if (s.callsite == 0) {
        ++out.without_frames;
        continue;
      }
      ++counts[{s.thread, s.callsite}];
    }
    // Keyed by frame, or by (frame, line) with filter.lines.
    std::unordered_map<uint64_t, std::string> frame_names;
    for (const auto& [key, n] : counts) {
      std::string line = many ? "process " + std::to_string(seg.info.pid) + ";" : "";
      line += ThreadName(seg, key.first);
      WalkRootFirst(seg, key.second, [&](const format::CallSite& c) {
        const uint64_t name_key = filter.lines ? (uint64_t{c.frame} << 32) | c.line : c.frame;
        auto [it, fresh] = frame_names.try_emplace(name_key);
        if (fresh) {
          const auto& f = seg.frames[c.frame];
          it->second = FrameName(seg.String(f.func), seg.String(f.file),
                                 filter.lines ? c.line : f.first_line);
        }
        line += ';';
        line += it->second;
      });
      out.stacks[line] += n;
      out.samples += n;
    }
  }
  return out;
}

void WriteFolded(const FoldedStacks& folded, std::ostream& out) {
  for (const auto& [stack, n] : folded.stacks) out << stack << ' ' << n << '\n';
}

void WriteSpeedscope(const std::vector<Segment>& segments, const SampleFilter& filter,
                     const std::string& name, std::ostream& out) {
  json frames = json::array();
  std::map<std::string, size_t> frame_index;  // FrameName -> index in frames
  struct Profile {
    std::string name;
    std::vector<std::pair<int64_t, std::vector<size_t>>> samples;  // (ts, root-first frames)
  };
  std::map<std::pair<uint32_t, uint64_t>, Profile> profiles;  // (pid, tid)
  const bool many = !segments.empty() && ManyProcesses(segments);
  for (const Segment& seg : segments) {
    std::unordered_map<uint32_t, size_t> local;  // segment frame id -> index
    for (size_t i = 0; i < seg.samples.size(); ++i) {
      const auto& s = seg.samples[i];
      if (s.callsite == 0 || !TakesSample(filter, seg, i)) continue;
      auto& p = profiles[{seg.info.pid, seg.threads[s.thread].tid}];
      if (p.name.empty())
        p.name = (many ? "process " + std::to_string(seg.info.pid) + " " : std::string()) +
                 ThreadName(seg, s.thread);
      std::vector<size_t> stack;
      WalkRootFirst(seg, s.callsite, [&](const format::CallSite& c) {
        auto [it, fresh] = local.try_emplace(c.frame);
        if (fresh) {
          const auto& f = seg.frames[c.frame];
          std::string key = FrameName(seg.String(f.func), seg.String(f.file), f.first_line);
          auto [g, added] = frame_index.try_emplace(key, frames.size());
          if (added)
            frames.push_back({{"name", std::string(seg.String(f.func))},
                              {"file", std::string(seg.String(f.file))},
                              {"line", f.first_line}});
          it->second = g->second;
        }
        stack.push_back(it->second);
      });
      p.samples.emplace_back(s.ts, std::move(stack));
    }
  }
  json list = json::array();
  for (auto& [key, p] : profiles) {
    std::stable_sort(p.samples.begin(), p.samples.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    json samples = json::array(), weights = json::array();
    for (auto& [ts, stack] : p.samples) {
      samples.push_back(std::move(stack));
      weights.push_back(1);
    }
    list.push_back({{"type", "sampled"},
                    {"name", p.name},
                    {"unit", "none"},
                    {"startValue", 0},
                    {"endValue", p.samples.size()},
                    {"samples", std::move(samples)},
                    {"weights", std::move(weights)}});
  }
  json doc = {{"$schema", "https://www.speedscope.app/file-format-schema.json"},
              {"shared", {{"frames", std::move(frames)}}},
              {"profiles", std::move(list)},
              {"name", name},
              {"activeProfileIndex", 0},
              {"exporter", "probing-analyze 0.1.0"}};
  out << doc.dump() << '\n';
}

ChromeTraceStats WriteChromeTrace(const std::vector<Segment>& segments, const SampleFilter& filter,
                                  std::ostream& out) {
  ChromeTraceStats stats;
  // Times count from the first event (its Unix time is in otherData): microseconds since the
  // epoch would leave a double a quarter of a microsecond of precision.
  int64_t base = INT64_MAX;
  for (const Segment& seg : segments) {
    for (const auto& e : seg.torch) base = std::min(base, e.ts);
    for (const auto& m : seg.memory) base = std::min(base, m.ts);
  }
  if (base == INT64_MAX) base = 0;
  auto at = [base](int64_t ns) { return ChromeTraceMicros(std::max<int64_t>(0, ns - base)); };

  // Processes and threads, named; process records may sit in any segment of the pid.
  struct ProcessName {
    std::string label;
    int32_t rank = -1;
  };
  std::map<uint32_t, ProcessName> processes;
  std::map<std::pair<uint32_t, uint64_t>, std::string> threads;  // (pid, tid) -> name
  for (const Segment& seg : segments) {
    for (const auto& p : seg.processes) {
      auto& name = processes[p.pid];
      if (!name.label.empty()) continue;
      name.label = std::string(seg.String(p.cmdline));
      name.rank = p.rank;
      if (p.rank >= 0) name.label += " (rank " + std::to_string(p.rank) + ")";
    }
  }

  // Every interval of a thread, as integer nanoseconds: the steps around the calls, and the
  // calls (a model's forward around its submodules').
  struct Interval {
    int64_t ts = 0, end = 0;
    bool step = false;
    uint64_t order = 0;  // seq for calls, the step number for steps
    json event;          // all but ts and dur
  };
  struct Span {
    int64_t begin = INT64_MAX, end = INT64_MIN;
  };
  std::map<std::pair<uint32_t, uint64_t>, std::vector<Interval>> by_thread;
  std::map<std::tuple<uint32_t, uint64_t, uint64_t>, Span> steps;  // (pid, tid, step)
  json counters = json::array();
  for (const Segment& seg : segments) {
    const uint32_t pid = seg.info.pid;
    for (const auto& e : seg.torch) {
      if (e.thread >= seg.threads.size()) continue;
      const uint64_t tid = seg.threads[e.thread].tid;
      if (!filter.Takes(tid, e.ts)) continue;
      threads.try_emplace({pid, tid}, std::string(seg.String(seg.threads[e.thread].name)));
      const int64_t end = e.ts + static_cast<int64_t>(e.duration_ns);
      json args = {{"step", e.step}, {"seq", e.seq}};
      if (e.allocated) args["allocated_mb"] = static_cast<double>(*e.allocated) / (1 << 20);
      by_thread[{pid, tid}].push_back({e.ts,
                                       end,
                                       false,
                                       e.seq,
                                       {{"name", std::string(seg.String(e.module))},
                                        {"cat", format::TorchStageName(e.stage)},
                                        {"ph", "X"},
                                        {"pid", pid},
                                        {"tid", tid},
                                        {"args", std::move(args)}}});
      auto& span = steps[{pid, tid, e.step}];
      span.begin = std::min(span.begin, e.ts);
      span.end = std::max(span.end, end);
      ++stats.calls;
    }
    for (const auto& m : seg.memory) {
      if (!filter.TakesTime(m.ts)) continue;  // process-wide: the thread filter does not apply
      processes.try_emplace(pid);
      json args = {{"rss_mb", static_cast<double>(m.rss) / (1 << 20)}};
      if (m.cuda_allocated)
        args["cuda_allocated_mb"] = static_cast<double>(*m.cuda_allocated) / (1 << 20);
      if (m.cuda_reserved)
        args["cuda_reserved_mb"] = static_cast<double>(*m.cuda_reserved) / (1 << 20);
      counters.push_back({{"name", "memory"},
                          {"ph", "C"},
                          {"ts", at(m.ts)},
                          {"pid", pid},
                          {"args", std::move(args)}});
    }
  }
  for (const auto& [key, span] : steps) {
    const auto& [pid, tid, step] = key;
    by_thread[{pid, tid}].push_back({span.begin,
                                     span.end,
                                     true,
                                     step,
                                     {{"name", "step " + std::to_string(step)},
                                      {"cat", "train_step"},
                                      {"ph", "X"},
                                      {"pid", pid},
                                      {"tid", tid},
                                      {"args", {{"step", step}}}}});
  }

  json events = json::array();
  for (const auto& [key, thread] : by_thread) processes.try_emplace(key.first);
  for (const auto& [pid, name] : processes) {
    events.push_back(
        {{"name", "process_name"},
         {"ph", "M"},
         {"pid", pid},
         {"args", {{"name", name.label.empty() ? "pid " + std::to_string(pid) : name.label}}}});
    if (name.rank >= 0)
      events.push_back({{"name", "process_sort_index"},
                        {"ph", "M"},
                        {"pid", pid},
                        {"args", {{"sort_index", name.rank}}}});
  }
  for (const auto& [key, name] : threads)
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", key.first},
                      {"tid", key.second},
                      {"args",
                       {{"name", Clean(name.empty() ? "thread" : name) + " (" +
                                     std::to_string(key.second) + ")"}}}});

  // Nesting in integer nanoseconds: outer intervals first (earlier start, then later end, a
  // step before a call of the same extent); an interval that starts inside another but ends
  // after it is cut at that end, so every interval lies inside the one around it. Written in
  // that order (parent before child), as importers that keep the file's order of equal times
  // need.
  for (auto& [key, list] : by_thread) {
    std::sort(list.begin(), list.end(), [](const Interval& a, const Interval& b) {
      if (a.ts != b.ts) return a.ts < b.ts;
      if (a.end != b.end) return a.end > b.end;
      if (a.step != b.step) return a.step;
      return a.order < b.order;
    });
    std::vector<int64_t> open;  // ends of the enclosing intervals, innermost last
    for (Interval& iv : list) {
      while (!open.empty() && open.back() <= iv.ts) open.pop_back();
      if (!open.empty() && iv.end > open.back()) {
        iv.end = open.back();
        ++stats.cut;
      }
      open.push_back(iv.end);
      const double ts = at(iv.ts), end = at(iv.end);
      iv.event["ts"] = ts;
      if (end == ts) {
        // Zero length: an instant, which no importer can take for the start or end of another.
        iv.event["ph"] = "i";
        iv.event["s"] = "t";
      } else {
        iv.event["dur"] = end - ts;  // exact: both lie on the grid of ChromeTraceMicros
      }
      events.push_back(std::move(iv.event));
    }
  }
  for (auto& c : counters) events.push_back(std::move(c));
  json doc = {
      {"traceEvents", std::move(events)},
      {"displayTimeUnit", "ms"},
      {"otherData", {{"exporter", "probing-analyze 0.1.0"}, {"unix_time_ns_at_zero", base}}}};
  out << doc.dump() << '\n';
  return stats;
}

double ChromeTraceMicros(int64_t ns) {
  // round(ns * 4096 / 1000) without overflow, for ns >= 0.
  const int64_t units = ns / 1000 * 4096 + ((ns % 1000) * 4096 + 500) / 1000;
  return static_cast<double>(units) / 4096.0;
}

}  // namespace probing::analyzer
