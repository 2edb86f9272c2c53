#include "views.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>

#include "probing/analyzer/export.h"

namespace probing::web {
namespace {

using format::Segment;

double Seconds(int64_t ns) { return static_cast<double>(ns) / 1e9; }

constexpr int64_t kNoTime = std::numeric_limits<int64_t>::min();

int64_t NewestSample(const Segments& segments) {
  int64_t newest = kNoTime;
  for (const Segment* seg : segments)
    for (const auto& s : seg->samples) newest = std::max(newest, s.ts);
  return newest;
}

std::string ThreadNameOf(const Segment& seg, uint32_t thread) {
  return std::string(seg.String(seg.threads[thread].name));
}

// The threads sampled at or after `since` with their sample counts, most sampled first.
std::vector<ThreadEntry> ThreadsSince(const Segments& segments, int64_t since) {
  std::map<uint64_t, ThreadEntry> by_tid;
  for (const Segment* seg : segments) {
    for (const auto& s : seg->samples) {
      if (s.ts < since) continue;
      ThreadEntry& t = by_tid[seg->threads[s.thread].tid];
      t.thread_id = seg->threads[s.thread].tid;
      if (t.name.empty()) t.name = ThreadNameOf(*seg, s.thread);
      ++t.samples;
    }
  }
  std::vector<ThreadEntry> out;
  for (auto& [tid, t] : by_tid) out.push_back(std::move(t));
  std::stable_sort(out.begin(), out.end(), [](const ThreadEntry& a, const ThreadEntry& b) {
    return a.samples > b.samples;
  });
  return out;
}

// A prefix tree of folded stacks, turned into FlameNodes with children in name order (the
// flame graph convention: the x order means nothing but is stable between refreshes).
class FlameBuilder {
 public:
  FlameBuilder() {
    Intern("all");
    nodes_.push_back({0, 0, {}});
  }
  void Add(std::string_view folded, uint64_t count) {
    size_t node = 0;
    nodes_[0].value += count;
    while (!folded.empty()) {
      const size_t semi = folded.find(';');
      const std::string_view name = folded.substr(0, semi);
      folded = semi == std::string_view::npos ? std::string_view() : folded.substr(semi + 1);
      const uint32_t id = Intern(name);
      auto [it, fresh] = nodes_[node].children.try_emplace(id, nodes_.size());
      if (fresh) nodes_.push_back({id, 0, {}});
      node = it->second;
      nodes_[node].value += count;
    }
  }
  FlameNode Build(size_t node = 0) const {
    FlameNode out;
    out.name = nodes_[node].name;
    out.value = nodes_[node].value;
    for (const auto& [name, child] : nodes_[node].children) out.children.push_back(Build(child));
    std::sort(
        out.children.begin(), out.children.end(),
        [this](const FlameNode& a, const FlameNode& b) { return names_[a.name] < names_[b.name]; });
    return out;
  }
  std::vector<std::string> TakeNames() { return std::move(names_); }

 private:
  struct Node {
    uint32_t name;
    uint64_t value;
    std::map<uint32_t, size_t> children;  // name -> node
  };
  uint32_t Intern(std::string_view name) {
    auto it = ids_.find(std::string(name));
    if (it != ids_.end()) return it->second;
    const uint32_t id = static_cast<uint32_t>(names_.size());
    names_.emplace_back(name);
    ids_.emplace(names_.back(), id);
    return id;
  }
  std::vector<std::string> names_;
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<Node> nodes_;
};

bool Outermost(std::string_view module) { return module.find('.') == std::string_view::npos; }

}  // namespace

StacksReply LatestStacks(const Segments& segments) {
  StacksReply out;
  out.source = "samples";
  const int64_t newest = NewestSample(segments);
  if (newest == kNoTime) return out;
  out.ts = Seconds(newest);
  struct Latest {
    const Segment* seg = nullptr;
    size_t index = 0;
    int64_t ts = kNoTime;               // its newest sample
    const Segment* with_seg = nullptr;  // its newest sample with Python frames
    size_t with_index = 0;
    int64_t with_ts = kNoTime;
  };
  std::map<std::pair<uint32_t, uint64_t>, Latest> by_thread;  // (pid, tid)
  for (const Segment* seg : segments) {
    for (size_t i = 0; i < seg->samples.size(); ++i) {
      const auto& s = seg->samples[i];
      Latest& l = by_thread[{seg->info.pid, seg->threads[s.thread].tid}];
      if (s.ts >= l.ts) {
        l.seg = seg;
        l.index = i;
        l.ts = s.ts;
      }
      if (s.callsite != 0 && s.ts >= l.with_ts) {
        l.with_seg = seg;
        l.with_index = i;
        l.with_ts = s.ts;
      }
    }
  }
  const int64_t gone_before = newest - static_cast<int64_t>(kThreadGoneAfterS * 1e9);
  for (const auto& [key, latest] : by_thread) {
    if (latest.ts < gone_before) continue;
    // A thread starting or ending has no Python frames: its last stack that had some says
    // more (a recording's last samples are often the interpreter shutting down).
    const bool with = latest.with_seg != nullptr;
    const Segment& seg = with ? *latest.with_seg : *latest.seg;
    const size_t index = with ? latest.with_index : latest.index;
    const auto& s = seg.samples[index];
    ThreadStack t;
    t.thread_id = key.second;
    t.ts = Seconds(s.ts);
    t.thread_name = ThreadNameOf(seg, s.thread);
    t.holds_gil = (s.flags & format::kSampleHoldsGil) != 0;
    t.truncated = (s.flags & format::kSampleTruncated) != 0;
    for (uint32_t cs = s.callsite; cs != 0 && t.frames.size() < 10000;
         cs = seg.callsites[cs].parent) {
      const auto& c = seg.callsites[cs];
      const auto& f = seg.frames[c.frame];
      t.frames.push_back({std::string(seg.String(f.func)), std::string(seg.String(f.file)),
                          static_cast<int64_t>(c.line)});
    }
    out.threads.push_back(std::move(t));
  }
  // The GIL holder first, then the deepest stacks: where the work is.
  std::stable_sort(out.threads.begin(), out.threads.end(),
                   [](const ThreadStack& a, const ThreadStack& b) {
                     if (a.holds_gil != b.holds_gil) return a.holds_gil;
                     return a.frames.size() > b.frames.size();
                   });
  return out;
}

FlameReply Flame(const Segments& segments, double seconds, std::optional<uint64_t> thread) {
  FlameReply out;
  out.seconds = seconds;
  out.thread = thread;
  const int64_t newest = NewestSample(segments);
  FlameBuilder builder;
  if (newest != kNoTime) {
    analyzer::SampleFilter filter;
    filter.thread = thread;
    int64_t since = kNoTime;
    if (seconds > 0) {
      since = newest - static_cast<int64_t>(seconds * 1e9);
      filter.since_ns = since;
    }
    out.threads = ThreadsSince(segments, since);
    out.to_ts = Seconds(newest);
    int64_t oldest = newest;
    for (const Segment* seg : segments)
      for (const auto& s : seg->samples)
        if (s.ts >= since) oldest = std::min(oldest, s.ts);
    out.from_ts = Seconds(oldest);
    const analyzer::FoldedStacks folded = analyzer::FoldStacks(segments, filter);
    for (const auto& [stack, n] : folded.stacks) builder.Add(stack, n);
    out.samples = folded.samples;
  }
  out.root = builder.Build();
  out.names = builder.TakeNames();
  return out;
}

StepsReply Steps(const Segments& segments, size_t last) {
  struct Acc {
    int64_t start = std::numeric_limits<int64_t>::max();
    int64_t end = kNoTime;
    double forward = 0, backward = 0, optimizer = 0;
    bool has_optimizer = false;
  };
  std::map<std::pair<uint32_t, int64_t>, Acc> steps;  // (pid, step)
  // Where python.torch_steps has the step: its start (the step before's end, traced or not).
  std::map<std::pair<uint32_t, int64_t>, int64_t> began;
  bool training = false;
  for (const Segment* seg : segments) {
    for (const auto& e : seg->torch_steps)
      began[{seg->info.pid, static_cast<int64_t>(e.step)}] = e.ts_ns;
    for (const auto& e : seg->torch) {
      Acc& a = steps[{seg->info.pid, static_cast<int64_t>(e.step)}];
      a.start = std::min(a.start, e.ts);
      a.end = std::max(a.end, e.ts + static_cast<int64_t>(e.duration_ns));
      const double d = Seconds(static_cast<int64_t>(e.duration_ns));
      const std::string_view module = seg->String(e.module);
      switch (e.stage) {
        case format::TorchStage::kForward:
          if (Outermost(module)) a.forward += d;
          break;
        case format::TorchStage::kBackward:
          if (Outermost(module)) a.backward += d;
          break;
        case format::TorchStage::kStep:
          a.optimizer += d;
          a.has_optimizer = true;
          training = true;
          break;
      }
    }
  }
  StepsReply out;
  // In training a step is complete once its optimizer step is in; the one still running is
  // left out.
  std::vector<std::pair<std::pair<uint32_t, int64_t>, Acc>> complete;
  for (const auto& [key, a] : steps)
    if (!training || a.has_optimizer) complete.emplace_back(key, a);
  out.steps_recorded = complete.size();
  const size_t first = complete.size() > last ? complete.size() - last : 0;
  std::set<std::pair<uint32_t, int64_t>> chosen;
  for (size_t i = first; i < complete.size(); ++i) {
    const auto& [key, a] = complete[i];
    chosen.insert(key);
    StepRow r;
    r.step = key.second;
    r.start = Seconds(a.start);
    // From the end of the step before (data loading and the loop's own Python count): as
    // python.torch_steps has it, else as the step before's last call, or, where that one was
    // not traced either, from this step's first call.
    int64_t from = a.start;
    auto prev = steps.find({key.first, key.second - 1});
    if (auto b = began.find(key); b != began.end() && b->second < a.end) {
      from = b->second;
    } else if (prev != steps.end() && prev->second.end < a.end) {
      from = prev->second.end;
    }
    r.wall = Seconds(a.end - from);
    r.forward = a.forward;
    r.backward = a.backward;
    r.optimizer = a.optimizer;
    r.rest = std::max(0.0, r.wall - r.forward - r.backward - r.optimizer);
    out.steps.push_back(r);
  }
  if (chosen.empty()) return out;
  std::map<std::pair<std::string, format::TorchStage>, std::pair<double, uint64_t>> modules;
  for (const Segment* seg : segments) {
    for (const auto& e : seg->torch) {
      if (chosen.count({seg->info.pid, static_cast<int64_t>(e.step)}) == 0) continue;
      auto& m = modules[{std::string(seg->String(e.module)), e.stage}];
      m.first += Seconds(static_cast<int64_t>(e.duration_ns));
      ++m.second;
    }
  }
  const double n = static_cast<double>(chosen.size());
  for (const auto& [key, m] : modules)
    out.modules.push_back({key.first, format::TorchStageName(key.second), m.first / n,
                           static_cast<double>(m.second) / n});
  std::stable_sort(out.modules.begin(), out.modules.end(),
                   [](const ModuleRow& a, const ModuleRow& b) { return a.per_step > b.per_step; });
  return out;
}

MemoryReply Memory(const Segments& segments, double seconds) {
  std::vector<const format::MemoryEvent*> events;
  int64_t newest = kNoTime;
  for (const Segment* seg : segments)
    for (const auto& m : seg->memory) {
      events.push_back(&m);
      newest = std::max(newest, m.ts);
    }
  MemoryReply out;
  out.seconds = seconds;
  if (events.empty()) return out;
  if (seconds > 0) {
    const int64_t since = newest - static_cast<int64_t>(seconds * 1e9);
    std::erase_if(events, [since](const format::MemoryEvent* m) { return m->ts < since; });
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const auto* a, const auto* b) { return a->ts < b->ts; });
  const size_t stride =
      std::max<size_t>(1, (events.size() + kMaxMemoryPoints - 1) / kMaxMemoryPoints);
  auto opt = [](const std::optional<uint64_t>& v) -> std::optional<int64_t> {
    if (!v) return std::nullopt;
    return static_cast<int64_t>(*v);
  };
  // Thinned from the newest backwards, so the latest point is always shown.
  std::vector<const format::MemoryEvent*> shown;
  for (size_t k = events.size(); k > 0;) {
    shown.push_back(events[k - 1]);
    k = k > stride ? k - stride : 0;
  }
  std::reverse(shown.begin(), shown.end());
  for (const format::MemoryEvent* m : shown) {
    out.ts.push_back(Seconds(m->ts));
    out.rss.push_back(static_cast<int64_t>(m->rss));
    out.vms.push_back(static_cast<int64_t>(m->vms));
    out.py_blocks.push_back(m->has_python_stats ? std::optional<int64_t>(m->py_blocks)
                                                : std::nullopt);
    out.cuda_allocated.push_back(opt(m->cuda_allocated));
    out.cuda_reserved.push_back(opt(m->cuda_reserved));
  }
  return out;
}

VariablesReply Variables(const Segments& segments) {
  std::map<std::pair<std::string, std::string>, VariableRow> vars;
  std::map<std::string, MetricRow> metrics;
  for (const Segment* seg : segments) {
    for (const auto& v : seg->variables) {
      VariableRow row{std::string(seg->String(v.func)), std::string(seg->String(v.name)), v.value,
                      static_cast<int64_t>(v.step), Seconds(v.ts)};
      auto [it, fresh] = vars.try_emplace({row.func, row.name}, row);
      if (!fresh && it->second.time <= row.time) it->second = std::move(row);
    }
    for (const auto& m : seg->metrics) {
      MetricRow row{std::string(seg->String(m.name)), m.value, Seconds(m.ts)};
      auto [it, fresh] = metrics.try_emplace(row.name, row);
      if (!fresh && it->second.time <= row.time) it->second = std::move(row);
    }
  }
  VariablesReply out;
  for (auto& [key, v] : vars) out.variables.push_back(std::move(v));
  for (auto& [key, m] : metrics) out.metrics.push_back(std::move(m));
  return out;
}

void FillOverview(const Segments& segments, OverviewReply* out) {
  int64_t first = std::numeric_limits<int64_t>::max(), last = kNoTime;
  auto see = [&](int64_t ts) {
    first = std::min(first, ts);
    last = std::max(last, ts);
  };
  std::set<std::pair<uint32_t, uint64_t>> steps;
  const format::ProcessEvent* process = nullptr;
  const Segment* process_seg = nullptr;
  for (const Segment* seg : segments) {
    out->samples += seg->samples.size();
    for (const auto& s : seg->samples) see(s.ts);
    for (const auto& e : seg->torch) {
      see(e.ts);
      steps.insert({seg->info.pid, e.step});
    }
    for (const auto& m : seg->memory) see(m.ts);
    for (const auto& p : seg->processes) {
      process = &p;
      process_seg = seg;
    }
  }
  out->steps = steps.size();
  if (last != kNoTime) {
    out->first_ts = Seconds(first);
    out->last_ts = Seconds(last);
  }
  if (process != nullptr) {
    out->pid = process->pid;
    out->command = std::string(process_seg->String(process->cmdline));
    out->python_version = std::string(process_seg->String(process->python_version));
    out->host = std::string(process_seg->String(process->host));
    if (process->rank >= 0) out->rank = process->rank;
  }
  out->threads = ThreadsSince(segments, kNoTime);
}

ClusterStepsReply ClusterSteps(const std::vector<RankStep>& rows, size_t last) {
  bool training = false;
  for (const RankStep& r : rows) training |= r.done;
  std::map<std::pair<int64_t, int64_t>, const RankStep*> by;  // (rank, step)
  std::set<int64_t> ranks, steps;
  for (const RankStep& r : rows) {
    by[{r.rank, r.step}] = &r;
    ranks.insert(r.rank);
    if (!training || r.done) steps.insert(r.step);  // the step still running is left out
  }
  ClusterStepsReply out;
  out.ranks.assign(ranks.begin(), ranks.end());
  auto from = steps.begin();
  if (steps.size() > last) std::advance(from, steps.size() - last);
  out.steps.assign(from, steps.end());
  for (int64_t rank : out.ranks) {
    std::vector<std::optional<double>> row;
    for (int64_t step : out.steps) {
      auto here = by.find({rank, step});
      auto before = by.find({rank, step - 1});
      if (here == by.end() || before == by.end() || (training && !here->second->done))
        row.emplace_back(std::nullopt);
      else
        row.emplace_back(here->second->end - before->second->end);
    }
    out.wall.push_back(std::move(row));
  }
  return out;
}

}  // namespace probing::web
