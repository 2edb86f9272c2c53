#include "probing/cluster/diagnose.h"

#include <algorithm>
#include <map>
#include <set>

#include "probing/base/clock.h"
#include "probing/format/segment.h"

namespace probing::cluster {
namespace {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// "func (file:line)" of a call site.
std::string FrameAt(const format::Segment& seg, uint32_t callsite) {
  const auto& cs = seg.callsites[callsite];
  const auto& f = seg.frames[cs.frame];
  return std::string(seg.String(f.func)) + " (" + std::string(seg.String(f.file)) + ":" +
         std::to_string(cs.line) + ")";
}

// The main thread (its OS thread id is the pid) of a segment's writer.
bool IsMain(const format::Segment& seg, uint32_t thread, int64_t pid) {
  return thread < seg.threads.size() && static_cast<int64_t>(seg.threads[thread].tid) == pid;
}

struct Timeline {
  std::map<int64_t, int64_t> step_start;     // step -> its first call (ns)
  std::map<int64_t, int64_t> backward_start;  // step -> its first backward call (ns)
  std::map<std::pair<std::string, int64_t>, std::pair<int64_t, int64_t>> arrivals;  // (group,
                                                       // seq) -> (arrival ns, step)
  std::vector<std::pair<int64_t, std::string>> main_samples;  // (ts, innermost frame)
};

Timeline TimelineOf(const RankData& r) {
  Timeline t;
  for (const format::Segment& seg : r.segments) {
    for (const auto& e : seg.torch) {
      const auto step = static_cast<int64_t>(e.step);
      auto [it, fresh] = t.step_start.emplace(step, e.ts);
      if (!fresh) it->second = std::min(it->second, e.ts);
      if (e.stage == format::TorchStage::kBackward) {
        auto [b, bf] = t.backward_start.emplace(step, e.ts);
        if (!bf) b->second = std::min(b->second, e.ts);
      }
    }
    for (const auto& c : seg.collectives)
      if (!c.counted)
        t.arrivals[{std::string(seg.String(c.group)), static_cast<int64_t>(c.seq)}] = {
            c.ts, static_cast<int64_t>(c.step)};
    const int64_t pid = seg.info.pid != 0 ? seg.info.pid : r.pid;
    for (const auto& s : seg.samples)
      if (s.callsite != 0 && IsMain(seg, s.thread, pid))
        t.main_samples.emplace_back(s.ts, FrameAt(seg, s.callsite));
  }
  std::sort(t.main_samples.begin(), t.main_samples.end());
  return t;
}

}  // namespace

StragglerReport Stragglers(const std::vector<RankData>& ranks, int64_t steps) {
  StragglerReport out;
  if (ranks.size() < 2) {
    out.problem = "fewer than two ranks answered: nothing to compare";
    return out;
  }
  std::vector<Timeline> lines;
  for (const auto& r : ranks) lines.push_back(TimelineOf(r));
  // Steps every rank has, the last one (under way) left out.
  std::set<int64_t> common;
  for (const auto& [step, ts] : lines[0].step_start) common.insert(step);
  for (size_t i = 1; i < lines.size(); ++i) {
    std::set<int64_t> next;
    for (int64_t s : common)
      if (lines[i].step_start.count(s)) next.insert(s);
    common.swap(next);
  }
  if (common.size() < 2) {
    out.problem = "the ranks have fewer than two training steps in common (is PyTorch tracing on, "
                  "and have they trained a few steps?)";
    return out;
  }
  common.erase(std::prev(common.end()));
  std::vector<int64_t> window(common.begin(), common.end());
  if (static_cast<int64_t>(window.size()) > steps) window.erase(window.begin(), window.end() - steps);
  out.first_step = window.front();
  out.last_step = window.back();
  const std::set<int64_t> in_window(window.begin(), window.end());

  // Meetings: moments every rank arrives at, each rank's arrival time, by step. The start of
  // backward stands for the gradient all-reduce that follows it (DDP issues it from C++, where
  // no call is timed); each Python collective is one by its (group, sequence number). A rank
  // that is late once in a step makes the others wait there, and they all meet in step after:
  // its lateness in a step is the most it arrived after the first at any of the step's meetings.
  std::map<int64_t, std::vector<std::vector<int64_t>>> meetings;
  bool by_backward = false, by_collectives = false;
  for (int64_t s : window) {
    std::vector<int64_t> at;
    for (const auto& l : lines) {
      auto it = l.backward_start.find(s);
      if (it == l.backward_start.end()) break;
      at.push_back(it->second);
    }
    if (at.size() == lines.size()) {
      meetings[s].push_back(std::move(at));
      by_backward = true;
    }
  }
  for (const auto& [key, first] : lines[0].arrivals) {
    if (!in_window.count(first.second)) continue;
    std::vector<int64_t> at;
    for (const auto& l : lines) {
      auto it = l.arrivals.find(key);
      if (it == l.arrivals.end()) break;
      at.push_back(it->second.first);
    }
    if (at.size() == lines.size()) {
      meetings[first.second].push_back(std::move(at));
      by_collectives = true;
    }
  }
  out.arrival = by_backward && by_collectives ? "backward start and collectives"
                : by_backward                 ? "backward start"
                                              : "collectives";
  if (meetings.empty()) {
    out.problem = "no collective or backward pass that every rank reached in steps " +
                  std::to_string(out.first_step) + " to " + std::to_string(out.last_step);
    return out;
  }
  for (size_t i = 0; i < ranks.size(); ++i) {
    RankLateness r;
    r.rank = ranks[i].rank;
    r.host = ranks[i].host;
    r.pid = ranks[i].pid;
    r.steps = static_cast<int64_t>(meetings.size());
    std::vector<double> late;
    std::map<std::string, int64_t> frames;
    int64_t in_windows = 0;
    for (const auto& [step, in_step] : meetings) {
      double step_late = 0;
      for (const auto& at : in_step) {
        const int64_t earliest = *std::min_element(at.begin(), at.end());
        const double ms = static_cast<double>(at[i] - earliest) / 1e6;
        step_late = std::max(step_late, ms);
        if (ms < 1) continue;
        // Where it was while the others waited for it.
        const auto& samples = lines[i].main_samples;
        auto lo = std::lower_bound(samples.begin(), samples.end(),
                                   std::make_pair(earliest, std::string()));
        for (auto it = lo; it != samples.end() && it->first <= at[i]; ++it) {
          ++frames[it->second];
          ++in_windows;
        }
      }
      late.push_back(step_late);
      r.per_step.emplace_back(step, step_late);
      r.lateness_max_ms = std::max(r.lateness_max_ms, step_late);
    }
    r.lateness_ms = Median(late);
    std::vector<double> step_ms;
    for (size_t k = 0; k + 1 < window.size(); ++k) {
      auto a = lines[i].step_start.find(window[k]);
      auto b = lines[i].step_start.find(window[k + 1]);
      if (a != lines[i].step_start.end() && b != lines[i].step_start.end() &&
          window[k + 1] == window[k] + 1)
        step_ms.push_back(static_cast<double>(b->second - a->second) / 1e6);
    }
    r.step_ms = Median(step_ms);
    if (!frames.empty()) {
      auto top = std::max_element(frames.begin(), frames.end(),
                                  [](const auto& a, const auto& b) { return a.second < b.second; });
      r.frame = top->first;
      r.frame_share = static_cast<double>(top->second) / static_cast<double>(in_windows);
    }
    r.late = r.lateness_ms >= 5 && (r.step_ms <= 0 || r.lateness_ms >= 0.1 * r.step_ms);
    out.ranks.push_back(std::move(r));
  }
  std::stable_sort(out.ranks.begin(), out.ranks.end(),
                   [](const auto& a, const auto& b) { return a.lateness_ms > b.lateness_ms; });
  return out;
}

std::vector<RankData> FetchRankData(const Job& job, const Options& options,
                                    const std::vector<format::Stream>& streams,
                                    std::string* coverage) {
  struct Got {
    std::vector<format::Segment> segments;
    double offset_s = 0;
  };
  auto answers = FanOut<std::shared_ptr<Got>>(
      job, options, [streams](live::Session& s) -> Result<std::shared_ptr<Got>> {
        auto got = std::make_shared<Got>();
        const double t0 = RealtimeSeconds();
        auto info = s.Info();
        const double t1 = RealtimeSeconds();
        if (info.ok()) got->offset_s = info->now - (t0 + t1) / 2;
        PROBING_ASSIGN_OR_RETURN(live::SegmentSource * source, s.Segments());
        PROBING_RETURN_IF_ERROR(source->Seal());
        PROBING_ASSIGN_OR_RETURN(format::TraceSet set, live::LoadStreams(*source, streams));
        got->segments = std::move(set.segments);
        return got;
      });
  if (coverage != nullptr) *coverage = Coverage(answers);
  std::vector<RankData> out;
  for (auto& a : answers) {
    if (!a.value) continue;
    RankData r;
    r.rank = a.member->rank;
    r.host = a.member->host;
    r.pid = a.member->pid;
    const auto shift = static_cast<int64_t>(-(*a.value)->offset_s * 1e9);
    r.segments = std::move((*a.value)->segments);
    for (auto& seg : r.segments) format::ShiftTimes(&seg, shift);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<RankData> RanksOf(std::vector<format::Segment> segments) {
  std::map<uint32_t, int64_t> rank_of;  // pid -> rank
  std::map<uint32_t, std::string> host_of;
  for (const auto& seg : segments)
    for (const auto& p : seg.processes) {
      if (p.rank >= 0) rank_of[p.pid] = p.rank;
      host_of[p.pid] = std::string(seg.String(p.host));
    }
  std::map<std::pair<int64_t, uint32_t>, RankData> by;
  for (auto& seg : segments) {
    const uint32_t pid = seg.info.pid;
    const int64_t rank = rank_of.count(pid) ? rank_of[pid] : -1;
    RankData& r = by[{rank, pid}];
    r.rank = rank;
    r.pid = pid;
    r.host = host_of[pid];
    r.segments.push_back(std::move(seg));
  }
  std::vector<RankData> out;
  for (auto& [key, r] : by) out.push_back(std::move(r));
  return out;
}

HangReport DiagnoseHang(std::vector<RankHang> ranks) {
  HangReport out;
  std::sort(ranks.begin(), ranks.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
  auto list = [](const std::vector<int64_t>& v) {
    std::string s;
    for (int64_t r : v) s += (s.empty() ? "" : ",") + std::to_string(r);
    return s;
  };
  auto where = [](const RankHang& r) {
    std::string s;
    for (size_t i = 0; i < r.frames.size() && i < 3; ++i) s += (i ? " < " : "") + r.frames[i];
    return s.empty() ? std::string("(no Python frame)") : s;
  };
  std::vector<int64_t> dead, stopped, silent, ok;
  for (const auto& r : ranks) {
    if (r.state == "dead") dead.push_back(r.rank);
    else if (r.state == "stopped") stopped.push_back(r.rank);
    else if (r.state == "ok") ok.push_back(r.rank);
    else silent.push_back(r.rank);
  }
  int64_t max_seq = -1;
  for (const auto& r : ranks)
    if (r.state == "ok") max_seq = std::max(max_seq, r.seq);
  std::vector<int64_t> behind;
  for (const auto& r : ranks)
    if (r.state == "ok" && r.seq < max_seq) behind.push_back(r.rank);
  std::string waits_in;
  std::vector<int64_t> waiting;
  for (const auto& r : ranks)
    if (r.state == "ok" && r.seq == max_seq) {
      waiting.push_back(r.rank);
      if (waits_in.empty() && !r.op.empty()) waits_in = r.op;
    }
  // A hang is a job where nothing moved for a while: ranks caught between two collectives of a
  // running job differ by one sequence number all the time.
  constexpr double kStalledS = 5;
  std::vector<int64_t> moving;
  for (const auto& r : ranks)
    if (r.state == "ok" && r.stalled_s < kStalledS) moving.push_back(r.rank);
  if (!dead.empty()) {
    out.culprits = dead;
    out.verdict = "rank" + std::string(dead.size() > 1 ? "s " : " ") + list(dead) +
                  (dead.size() > 1 ? " are" : " is") +
                  " dead: the others wait for it in their next collective";
  } else if (!stopped.empty()) {
    out.culprits = stopped;
    out.verdict = "rank" + std::string(stopped.size() > 1 ? "s " : " ") + list(stopped) +
                  (stopped.size() > 1 ? " are" : " is") +
                  " stopped (SIGSTOP or a debugger): the others wait for it";
  } else if (!moving.empty()) {
    out.verdict = moving.size() == ok.size()
                      ? "no hang: every rank made progress in the last seconds"
                      : "no hang yet: rank" + std::string(moving.size() > 1 ? "s " : " ") +
                            list(moving) + " made progress in the last " +
                            std::to_string(static_cast<int>(kStalledS)) + " s";
  } else if (!behind.empty()) {
    out.culprits = behind;
    const RankHang& first = *std::find_if(ranks.begin(), ranks.end(),
                                          [&](const auto& r) { return r.rank == behind[0]; });
    out.verdict = "rank" + std::string(behind.size() > 1 ? "s " : " ") + list(behind) +
                  " never reached collective #" + std::to_string(max_seq) +
                  " of the default group" + (waits_in.empty() ? "" : " (" + waits_in + ")") +
                  ", which rank" + (waiting.size() > 1 ? "s " : " ") + list(waiting) +
                  (waiting.size() > 1 ? " wait" : " waits") + " in; rank " +
                  std::to_string(first.rank) + " is in " + where(first);
  } else {
    std::map<std::string, std::vector<int64_t>> by_op;
    for (const auto& r : ranks)
      if (r.state == "ok" && !r.op.empty()) by_op[r.op].push_back(r.rank);
    if (by_op.size() > 1) {
      std::string parts;
      for (const auto& [op, rs] : by_op) {
        parts += (parts.empty() ? "" : ", ") + std::string(rs.size() > 1 ? "ranks " : "rank ") +
                 list(rs) + " in " + op;
        if (rs.size() == 1) out.culprits.push_back(rs[0]);
      }
      out.verdict = "mismatch at collective #" + std::to_string(max_seq) + ": " + parts;
    } else if (!ok.empty()) {
      std::map<std::string, int64_t> places;
      for (const auto& r : ranks)
        if (r.state == "ok") ++places[where(r)];
      auto top = std::max_element(places.begin(), places.end(),
                                  [](const auto& a, const auto& b) { return a.second < b.second; });
      out.verdict = "every rank is stuck in the same place, collective #" +
                    std::to_string(max_seq) + ": " + top->first;
    }
  }
  if (!silent.empty())
    out.verdict += (out.verdict.empty() ? "" : "; ") + std::string("rank") +
                   (silent.size() > 1 ? "s " : " ") + list(silent) +
                   " did not answer (see why below)";
  out.ranks = std::move(ranks);
  return out;
}

HangReport Hang(const Job& job, const Options& options) {
  struct View {
    protocol::ProgressReply progress;
    protocol::BacktraceReply stacks;
  };
  auto answers = FanOut<std::shared_ptr<View>>(
      job, options, [](live::Session& s) -> Result<std::shared_ptr<View>> {
        auto v = std::make_shared<View>();
        PROBING_ASSIGN_OR_RETURN(live::ControlClient * c, s.Control("hang"));
        PROBING_ASSIGN_OR_RETURN(v->progress, c->Get<protocol::ProgressReply>(
                                                  std::string(protocol::kProgressPath), "progress"));
        PROBING_ASSIGN_OR_RETURN(v->stacks, s.Backtrace({}));
        return v;
      });
  std::vector<RankHang> ranks;
  for (const auto& a : answers) {
    RankHang r;
    r.rank = a.member->rank;
    r.state = a.state;
    r.error = a.error;
    if (a.value) {
      const auto& p = (*a.value)->progress;
      r.step = p.step;
      r.stalled_s = p.stalled;
      for (const auto& g : p.groups)
        if (g.name == "default") r.seq = g.seq;
      if (p.current && p.current->group == "default") {
        r.seq = std::max(r.seq, p.current->seq);
        r.op = p.current->op;
      }
      for (const auto& t : (*a.value)->stacks.threads) {
        if (static_cast<int64_t>(t.thread_id) != a.member->pid && t.thread_name != "MainThread")
          continue;
        for (const auto& f : t.frames)
          if (f.frame_type == "Python")
            r.frames.push_back(f.func + " (" + f.file + ":" +
                               (f.lineno ? std::to_string(*f.lineno) : "?") + ")");
        break;
      }
    }
    ranks.push_back(std::move(r));
  }
  return DiagnoseHang(std::move(ranks));
}

HangReport HangOf(const std::vector<RankData>& ranks) {
  std::vector<RankHang> out;
  for (const auto& rd : ranks) {
    RankHang r;
    r.rank = rd.rank;
    r.state = "ok";
    int64_t last_ts = 0, last_sample = 0;
    for (const auto& seg : rd.segments) {
      for (const auto& e : seg.torch) r.step = std::max(r.step, static_cast<int64_t>(e.step));
      for (const auto& c : seg.collectives) {
        if (seg.String(c.group) != "default") continue;
        if (static_cast<int64_t>(c.seq) >= r.seq) {
          r.seq = static_cast<int64_t>(c.seq);
          if (!c.counted) r.op = std::string(seg.String(c.op));
        }
        last_ts = std::max(last_ts, c.ts);
      }
      const int64_t pid = seg.info.pid;
      for (const auto& s : seg.samples) {
        if (s.callsite == 0 || !IsMain(seg, s.thread, pid) || s.ts < last_sample) continue;
        last_sample = s.ts;
        r.frames.clear();
        for (uint32_t cs = s.callsite; cs != 0 && r.frames.size() < 8;
             cs = seg.callsites[cs].parent)
          r.frames.push_back(FrameAt(seg, cs));
      }
    }
    r.stalled_s = last_ts != 0 && last_sample > last_ts
                      ? static_cast<double>(last_sample - last_ts) / 1e9
                      : 0;
    out.push_back(std::move(r));
  }
  return DiagnoseHang(std::move(out));
}

}  // namespace probing::cluster
