#include "probing/analyzer/trace_set.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <unordered_map>

#include "probing/format/ptrace.h"
#include "probing/format/ring.h"
#include "probing/format/segment.h"

namespace probing::analyzer {
namespace {

namespace fs = std::filesystem;
using format::Segment;

// Keeps a decoded segment, or counts the failure (the first message is kept for --stats).
void Keep(Result<Segment> seg, SourceStats& s, TraceSet* set) {
  if (seg.ok()) {
    ++s.segments_ok;
    set->segments.push_back(std::move(seg).value());
    return;
  }
  ++s.segments_corrupt;
  if (s.first_error.empty()) s.first_error = seg.status().message();
}

Status LoadPtrace(const std::string& path, TraceSet* set) {
  PROBING_ASSIGN_OR_RETURN(format::PtraceReader r, format::PtraceReader::Open(path));
  SourceStats s;
  s.path = path;
  s.kind = "ptrace";
  s.used_index = r.stats().used_index;
  s.truncated_tail = r.stats().truncated_tail;
  s.bytes_skipped = r.stats().skipped_bytes;
  s.first_error = r.stats().first_error;
  for (size_t i = 0; i < r.segments().size(); ++i) Keep(r.ReadSegment(i), s, set);
  set->sources.push_back(std::move(s));
  return Status::Ok();
}

Status LoadRing(const std::string& path, TraceSet* set) {
  PROBING_ASSIGN_OR_RETURN(format::RingReader r, format::RingReader::Open(path));
  SourceStats s;
  s.path = path;
  s.kind = "ring";
  // Segments before the oldest slot were overwritten in the normal course of a ring; they are
  // not damage. Only copies dropped inside the window count as lost. Each copy is decoded as it
  // is made, into one reused buffer.
  std::string copy;
  for (uint64_t seq = r.oldest_seq(), next = r.next_seq(); seq < next; ++seq) {
    if (!r.Read(seq, &copy).ok()) {
      ++s.segments_lost;
      continue;
    }
    Keep(format::DecodeSegment(copy), s, set);
  }
  set->sources.push_back(std::move(s));
  return Status::Ok();
}

}  // namespace

Result<TraceSet> LoadTraces(const std::vector<std::string>& paths) {
  TraceSet set;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> rings;
      for (const auto& e : fs::directory_iterator(p, ec))
        if (e.path().extension() == ".ring") rings.push_back(e.path().string());
      if (rings.empty()) return NotFound(p + " holds no .ring files");
      std::sort(rings.begin(), rings.end());
      for (const std::string& r : rings) PROBING_RETURN_IF_ERROR(LoadRing(r, &set));
      continue;
    }
    if (!fs::exists(p, ec)) return NotFound(p + ": no such file or directory");
    auto st = LoadPtrace(p, &set);
    if (!st.ok() && st.message().find("not a .ptrace file (bad magic)") != std::string::npos) {
      auto ring = LoadRing(p, &set);  // a single ring file given by name
      if (ring.ok()) continue;
    }
    PROBING_RETURN_IF_ERROR(st);
  }
  return set;
}

Summary Summarize(const TraceSet& set, size_t top) {
  Summary s;
  s.segments = set.segments.size();
  bool have_time = false;
  std::set<std::string> threads, processes;
  std::set<std::pair<uint32_t, uint64_t>> steps;  // (pid, step)
  std::unordered_map<std::string, uint64_t> funcs;
  std::unordered_map<std::string, NamedCount> modules;
  for (const Segment& seg : set.segments) {
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
    for (const auto& e : seg.torch) {
      steps.insert({seg.info.pid, e.step});
      auto& m = modules[std::string(seg.String(e.module)) + " " + format::TorchStageName(e.stage)];
      ++m.count;
      m.seconds += static_cast<double>(e.duration_ns) / 1e9;
    }
  }
  s.processes.assign(processes.begin(), processes.end());
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
