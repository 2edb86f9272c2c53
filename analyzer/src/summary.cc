#include "probing/analyzer/summary.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <set>
#include <unordered_map>

namespace probing::analyzer {

using format::Segment;

Summary Summarize(const std::vector<Segment>& segments, size_t top) {
  Summary s;
  s.segments = segments.size();
  bool have_time = false;
  std::set<std::string> threads, processes;
  std::set<std::pair<uint32_t, uint64_t>> steps;               // (pid, step)
  std::map<uint32_t, std::map<uint64_t, int64_t>> step_start;  // pid -> step -> first call
  std::map<uint32_t, int32_t> rank_of;
  std::unordered_map<std::string, uint64_t> funcs;
  std::unordered_map<std::string, NamedCount> modules;
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
      processes.insert("pid " + std::to_string(p.pid) + ": " + std::string(seg.String(p.cmdline)) +
                       " (Python " + std::string(seg.String(p.python_version)) + ", host " +
                       std::string(seg.String(p.host)) +
                       (p.rank >= 0 ? ", rank " + std::to_string(p.rank) : std::string()) + ")");
    }
    for (size_t t = 1; t < seg.threads.size(); ++t)
      threads.insert(std::to_string(seg.threads[t].tid) + " " +
                     std::string(seg.String(seg.threads[t].name)));
    for (const auto& smp : seg.samples) {
      if (smp.callsite == 0) continue;
      const auto& cs = seg.callsites[smp.callsite];
      const auto& f = seg.frames[cs.frame];
      ++funcs[std::string(seg.String(f.func)) + " (" + std::string(seg.String(f.file)) + ")"];
    }
    for (const auto& p : seg.processes)
      if (p.rank >= 0) rank_of[p.pid] = p.rank;
    for (const auto& e : seg.torch) {
      steps.insert({seg.info.pid, e.step});
      auto [it, fresh] = step_start[seg.info.pid].emplace(e.step, e.ts);
      if (!fresh && e.ts < it->second) it->second = e.ts;
      auto& m = modules[std::string(seg.String(e.module)) + " " + format::TorchStageName(e.stage)];
      ++m.count;
      m.seconds += static_cast<double>(e.duration_ns) / 1e9;
    }
  }
  s.processes.assign(processes.begin(), processes.end());
  for (const auto& [pid, starts] : step_start) {
    ProcessSteps p;
    p.pid = pid;
    p.rank = rank_of.count(pid) ? rank_of[pid] : -1;
    p.steps = starts.size();
    std::vector<double> ms;
    for (auto it = starts.begin(), next = std::next(it); next != starts.end(); ++it, ++next)
      if (next->first == it->first + 1)
        ms.push_back(static_cast<double>(next->second - it->second) / 1e6);
    if (!ms.empty()) {
      std::sort(ms.begin(), ms.end());
      auto at = [&](double q) {
        return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))];
      };
      p.p50_ms = at(0.5);
      p.p90_ms = at(0.9);
      p.max_ms = ms.back();
    }
    s.per_process.push_back(p);
  }
  std::sort(s.per_process.begin(), s.per_process.end(), [](const auto& a, const auto& b) {
    return a.rank != b.rank ? a.rank < b.rank : a.pid < b.pid;
  });
  s.threads.assign(threads.begin(), threads.end());
  s.steps = steps.size();
  for (auto& [name, n] : funcs) s.top_functions.push_back({name, n, 0});
  std::sort(s.top_functions.begin(), s.top_functions.end(), [](const auto& a, const auto& b) {
    return a.count != b.count ? a.count > b.count : a.name < b.name;
  });
  if (s.top_functions.size() > top) s.top_functions.resize(top);
  for (auto& [name, m] : modules) s.top_modules.push_back({name, m.count, m.seconds});
  std::sort(s.top_modules.begin(), s.top_modules.end(), [](const auto& a, const auto& b) {
    return a.seconds != b.seconds ? a.seconds > b.seconds : a.name < b.name;
  });
  if (s.top_modules.size() > top) s.top_modules.resize(top);
  return s;
}

}  // namespace probing::analyzer
