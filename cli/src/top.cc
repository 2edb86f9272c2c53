#include "top.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <sstream>
#include <thread>

#include "probing/analyzer/summary.h"
#include "probing/base/clock.h"
#include "probing/format/events.h"
#include "probing/live/segment_source.h"

namespace probing::cli {
namespace {

// What one view covers: the window's end (Unix ns) and whether the target still runs.
struct View {
  int64_t until_ns = 0;
  bool live = true;
};

std::string ClockTime(int64_t ns) {
  const time_t secs = static_cast<time_t>(ns / 1'000'000'000);
  struct tm tm;
  localtime_r(&secs, &tm);
  char buf[32];
  if (std::strftime(buf, sizeof buf, "%H:%M:%S", &tm) == 0) buf[0] = '\0';
  return buf;
}

std::string Seconds(double s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

std::string Plural(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// The samples the function shares are of: all but the idle ones left out.
uint64_t Shown(const analyzer::ProcessSummary& p, bool idle) {
  return idle ? p.samples : p.samples - p.idle_samples;
}

double Share(uint64_t n, uint64_t of) {
  return of == 0 ? 0.0 : 100.0 * static_cast<double>(n) / static_cast<double>(of);
}

std::string Percent(uint64_t n, uint64_t of) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f", Share(n, of));
  return buf;
}

void PrintTable(const analyzer::Summary& s, const TopOptions& o, const View& v,
                const std::string& target, std::ostream& out) {
  out << "probing top: " << target << ", "
      << (v.live ? "the last " + Seconds(o.window) + " s to " + ClockTime(v.until_ns)
                 : "its last " + Seconds(o.window) + " s of samples, to " + ClockTime(v.until_ns) +
                       " (not running)");
  if (v.live && !o.once) out << "; every " << Seconds(o.interval) << " s, Ctrl-C quits";
  out << "\n";
  if (s.per_process.empty()) {
    out << "\nno stack samples in the window\n";
    return;
  }
  for (const auto& p : s.per_process) {
    if (s.per_process.size() > 1 || !p.description.empty())
      out << "\n"
          << (p.description.empty() ? "pid " + std::to_string(p.pid) : p.description) << "\n";
    const uint64_t shown = Shown(p, o.idle);
    const uint64_t threads = o.idle ? p.threads : p.threads - p.idle_threads;
    out << "Samples: " << shown << " from " << Plural(threads, "thread", "threads");
    if (p.idle_samples > 0) {
      if (o.idle)
        out << " (" << p.idle_samples << " of them idle, kept: --idle)";
      else
        out << "; left out: " << p.idle_samples << " idle samples"
            << (p.idle_threads > 0
                    ? " (" + Plural(p.idle_threads, "thread", "threads") + " only waiting)"
                    : std::string())
            << ", --idle keeps them";
    }
    out << "\n";
    if (p.steps > 0 || p.all_steps > 0) {
      out << "Steps: ";
      if (p.all_steps > 0)
        out << p.all_steps << " in the window (" << p.steps << " traced)";
      else
        out << p.steps << " traced in the window";
      if (p.timed_steps > 0)
        out << ", step time p50 " << Human(p.p50_ms) << " ms, max " << Human(p.max_ms) << " ms";
      if (p.parted_steps > 0)
        out << "; per traced step: forward " << Human(p.forward_ms) << " ms, backward "
            << Human(p.backward_ms) << " ms, optimizer " << Human(p.optimizer_ms)
            << " ms, the rest " << Human(p.other_ms) << " ms";
      out << "\n";
    }
    out << "\n";
    if (shown == 0) {
      out << "no stack samples"
          << (p.idle_samples > 0 ? " but idle ones (--idle shows them)" : std::string()) << "\n";
    } else {
      std::vector<std::vector<Cell>> rows;
      for (const auto& f : p.top_functions)
        rows.push_back({Percent(f.count, shown), Percent(f.total, shown),
                        static_cast<int64_t>(f.count), static_cast<int64_t>(f.total), f.name});
      PrintRows(OutputFormat::kTable, {"own%", "total%", "own", "total", "function"}, rows, out);
    }
    if (!p.top_modules.empty() && p.steps > 0) {
      const double steps = static_cast<double>(p.steps);
      out << "\nModules per step (" << Plural(p.steps, "step", "steps") << "):\n";
      std::vector<std::vector<Cell>> rows;
      for (const auto& m : p.top_modules_self)
        rows.push_back({Human(m.self_seconds * 1e3 / steps), Human(m.seconds * 1e3 / steps),
                        Human(static_cast<double>(m.count) / steps), m.name});
      PrintRows(OutputFormat::kTable, {"self_ms", "total_ms", "calls", "module"}, rows, out);
    }
  }
}

// Every figure of a view as (time, pid, section, name, metric, value) rows at full precision:
// what --format csv/json/jsonl print; `time` (Unix seconds, the window's end) tells views apart.
void PrintRowsOf(const analyzer::Summary& s, const TopOptions& o, const View& v,
                 OutputFormat format, std::ostream& out) {
  std::vector<std::vector<Cell>> rows;
  const double time = static_cast<double>(v.until_ns) / 1e9;
  for (const auto& p : s.per_process) {
    auto add = [&](const char* section, Cell name, const char* metric, Cell value) {
      rows.push_back({time, int64_t{p.pid}, std::string(section), std::move(name),
                      std::string(metric), std::move(value)});
    };
    auto u = [](uint64_t n) { return Cell(static_cast<int64_t>(n)); };
    const uint64_t shown = Shown(p, o.idle);
    add("window", "window", "seconds", o.window);
    add("window", "live", "bool", int64_t{v.live ? 1 : 0});
    add("window", "samples", "count", u(shown));
    add("window", "idle_samples", "count", u(p.idle_samples));
    add("window", "threads", "count", u(o.idle ? p.threads : p.threads - p.idle_threads));
    add("window", "idle_threads", "count", u(p.idle_threads));
    add("window", "idle_included", "bool", int64_t{o.idle ? 1 : 0});
    add("window", "steps", "count", u(p.steps));
    if (p.all_steps > 0) add("window", "all_steps", "count", u(p.all_steps));
    if (p.timed_steps > 0) {
      add("steps", "p50", "ms", p.p50_ms);
      add("steps", "max", "ms", p.max_ms);
    }
    if (p.parted_steps > 0) {
      add("step_parts", "forward", "mean_ms", p.forward_ms);
      add("step_parts", "backward", "mean_ms", p.backward_ms);
      add("step_parts", "optimizer", "mean_ms", p.optimizer_ms);
      add("step_parts", "rest", "mean_ms", p.other_ms);
    }
    for (const auto& f : p.top_functions) {
      add("functions", f.name, "own", u(f.count));
      add("functions", f.name, "total", u(f.total));
      add("functions", f.name, "own_share", Share(f.count, shown) / 100);
      add("functions", f.name, "total_share", Share(f.total, shown) / 100);
    }
    if (p.steps == 0) continue;
    const double steps = static_cast<double>(p.steps);
    for (const auto& m : p.top_modules_self) {
      add("modules", m.name, "self_ms_per_step", m.self_seconds * 1e3 / steps);
      add("modules", m.name, "total_ms_per_step", m.seconds * 1e3 / steps);
      add("modules", m.name, "calls_per_step", static_cast<double>(m.count) / steps);
    }
  }
  PrintRows(format, {"time", "pid", "section", "name", "metric", "value"}, rows, out);
}

// Waits up to `seconds`, returning early once `stop` is set.
void Sleep(double seconds, const std::atomic<int>& stop) {
  const int64_t until = MonotonicNs() + static_cast<int64_t>(seconds * 1e9);
  while (stop.load() == 0) {
    const int64_t left = until - MonotonicNs();
    if (left <= 0) return;
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<int64_t>(left, 50'000'000)));
  }
}

int64_t LastSample(const std::vector<format::Segment>& segments) {
  int64_t last = 0;
  for (const auto& seg : segments)
    for (const auto& s : seg.samples) last = std::max(last, s.ts);
  return last;
}

}  // namespace

Status RunTop(live::Session& target, const TopOptions& options, OutputFormat format,
              const std::atomic<int>& stop, std::ostream& out, std::ostream& err) {
  PROBING_ASSIGN_OR_RETURN(live::SegmentSource * source, target.Segments());
  const std::string name = target.Describe();
  analyzer::SummaryOptions so;
  so.top = options.limit;
  so.idle = options.idle;
  so.with_callers = true;
  so.slowest = 0;
  bool first = true;
  for (;;) {
    View v;
    v.live = source->live();
    if (v.live) PROBING_RETURN_IF_ERROR(source->Seal());
    PROBING_ASSIGN_OR_RETURN(
        format::TraceSet set,
        live::LoadStreams(*source, {format::Stream::kStacks, format::Stream::kTorch}));
    // A target that ended between Seal and the read still shows the window up to now.
    v.until_ns = v.live ? RealtimeNs() : LastSample(set.segments);
    if (!v.live && first)
      err << "probing: " << name
          << (target.kind() == live::TargetKind::kRecording ? " is no running process"
                                                            : " is not running")
          << ": top shows its last " << Seconds(options.window) << " s of samples, once\n";
    so.since_ns = v.until_ns - static_cast<int64_t>(options.window * 1e9);
    so.until_ns = v.until_ns;
    analyzer::Summary s = analyzer::Summarize(set.segments, so);
    uint64_t samples = 0;
    for (const auto& p : s.per_process) samples += p.samples;
    if (samples == 0 && (options.once || !v.live))
      return NotFound("no stack samples from " + name +
                      (v.live ? " in the last " + Seconds(options.window) + " s" +
                                    " (is its sampler on? probing -t TARGET config "
                                    "probing.sampler.enabled)"
                              : std::string(": its rings hold none")));
    std::ostringstream view;
    if (format == OutputFormat::kTable) {
      PrintTable(s, options, v, name, view);
    } else {
      PrintRowsOf(s, options, v, format, view);
    }
    if (options.clear && v.live && !options.once)
      out << "\x1b[H\x1b[2J";  // home, clear: the next view replaces this one
    else if (!first && format == OutputFormat::kTable)
      out << "\n";
    out << view.str() << std::flush;
    first = false;
    if (options.once || !v.live) return Status::Ok();
    Sleep(options.interval, stop);
    if (stop.load() != 0) return Status::Ok();
    if (!source->live()) {
      err << "probing: " << name << " has ended\n";
      return Status::Ok();
    }
  }
}

}  // namespace probing::cli
