// `probing-analyze`: postmortem analysis of recordings (.ptrace files) and of the ring
// directories dead processes leave behind. Exit codes: 0 success, 1 failure, 2 bad usage.
#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <type_traits>

#include "diagnose_print.h"
#include "printer.h"
#include "probing/analyzer/diff.h"
#include "probing/analyzer/export.h"
#include "probing/analyzer/summary.h"
#include "probing/base/files.h"
#include "probing/format/tables.h"
#include "probing/format/trace_set.h"
#include "probing/live/session.h"
#include "probing/sql/sql.h"

namespace {

using probing::cli::Cell;
using probing::cli::Human;

template <typename T>
T OrFail(probing::Result<T> r) {
  if (!r.ok()) throw std::runtime_error(r.status().message());
  return std::move(r).value();
}
void OrFail(const probing::Status& st) {
  if (!st.ok()) throw std::runtime_error(st.message());
}

std::string FormatTime(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm) == 0) buf[0] = '\0';
  char ms[16];
  if (std::snprintf(ms, sizeof ms, ".%03d UTC", static_cast<int>((ns / 1000000) % 1000)) < 0)
    ms[0] = '\0';
  return std::string(buf) + ms;
}

std::string Ms(double v) { return Human(v) + " ms"; }
std::string Mb(double bytes) { return Human(bytes / 1e6) + " MB"; }

std::string ProcessName(const probing::analyzer::ProcessSummary& p) {
  return p.rank >= 0 ? "rank " + std::to_string(p.rank) + " (pid " + std::to_string(p.pid) + ")"
                     : "pid " + std::to_string(p.pid);
}

void PrintProcess(const probing::analyzer::ProcessSummary& p) {
  using probing::cli::OutputFormat;
  using probing::cli::PrintRows;
  if (p.steps > 0 || p.all_steps > 0) {
    std::cout << "\nSteps: ";
    if (p.all_steps > 0)
      std::cout << p.all_steps << " (" << p.steps << " traced)";
    else
      std::cout << p.steps << " traced";
    if (p.timed_steps > 0)
      std::cout << "; step time p50 " << Ms(p.p50_ms) << ", p90 " << Ms(p.p90_ms) << ", max "
                << Ms(p.max_ms) << " (" << p.timed_steps << " steps)";
    std::cout << "\n";
    if (!p.slowest_steps.empty()) {
      std::cout << "Slowest steps:";
      for (const auto& t : p.slowest_steps) std::cout << " " << t.step << " (" << Ms(t.ms) << ")";
      std::cout << "\n";
    }
    if (p.parted_steps > 0)
      std::cout << "Per traced step (mean of " << p.parted_steps << "): forward "
                << Ms(p.forward_ms) << ", backward " << Ms(p.backward_ms) << ", optimizer "
                << Ms(p.optimizer_ms) << ", the rest (data loading, untraced) " << Ms(p.other_ms)
                << "\n";
  }
  if (p.samples > 0) {
    std::cout << "\nTop functions (samples where innermost";
    if (p.idle_samples > 0)
      std::cout << (p.idle_included ? "; including " : "; leaving out ") << p.idle_samples
                << " idle of " << p.samples
                << (p.idle_included ? " samples" : " samples, --idle includes them");
    std::cout << "):\n";
    std::vector<std::vector<Cell>> rows;
    for (const auto& f : p.top_functions) rows.push_back({static_cast<int64_t>(f.count), f.name});
    PrintRows(OutputFormat::kTable, {"samples", "function"}, rows, std::cout);
  }
  if (!p.top_modules.empty()) {
    auto table = [](const std::vector<probing::analyzer::NamedCount>& ms) {
      std::vector<std::vector<Cell>> rows;
      for (const auto& m : ms)
        rows.push_back({Human(m.self_seconds * 1e3), Human(m.seconds * 1e3),
                        static_cast<int64_t>(m.count), m.name});
      PrintRows(OutputFormat::kTable, {"self_ms", "total_ms", "calls", "module"}, rows, std::cout);
    };
    std::cout << "\nTop modules by self time (less the modules called inside):\n";
    table(p.top_modules_self);
    std::cout << "\nTop modules by total time:\n";
    table(p.top_modules);
  }
  const auto& m = p.memory;
  if (m.readings > 0) {
    std::cout << "\nMemory (" << m.readings << " readings over " << Human(m.minutes) << " min):\n";
    std::vector<std::vector<Cell>> rows;
    auto row = [&](const char* what, const probing::analyzer::Gauge& g, bool bytes) {
      if (!g.present) return;
      auto f = [&](double v) { return bytes ? Mb(v) : Human(v); };
      rows.push_back({std::string(what), f(static_cast<double>(g.start)),
                      f(static_cast<double>(g.end)), f(static_cast<double>(g.peak)),
                      m.minutes > 0 ? Cell((g.per_minute >= 0 ? "+" : "") + f(g.per_minute))
                                    : Cell(std::monostate{})});
    };
    row("RSS", m.rss, true);
    row("Python blocks", m.python_blocks, false);
    row("CUDA allocated", m.cuda_allocated, true);
    PrintRows(OutputFormat::kTable, {"memory", "start", "end", "peak", "per_minute"}, rows,
              std::cout);
  }
}

// Every figure of the summary as (pid, rank, section, name, metric, value) rows, at full
// precision: what --format csv/json/jsonl print instead of the tables.
std::vector<std::vector<Cell>> SummaryRows(const probing::analyzer::Summary& s) {
  std::vector<std::vector<Cell>> rows;
  for (const auto& p : s.per_process) {
    auto add = [&](const char* section, Cell name, const char* metric, Cell value) {
      rows.push_back({int64_t{p.pid}, p.rank >= 0 ? Cell(int64_t{p.rank}) : Cell(std::monostate{}),
                      std::string(section), std::move(name), std::string(metric),
                      std::move(value)});
    };
    auto u = [](uint64_t v) { return Cell(static_cast<int64_t>(v)); };
    add("steps", "steps", "count", u(p.steps));
    if (p.all_steps > 0) add("steps", "all_steps", "count", u(p.all_steps));
    add("steps", "timed_steps", "count", u(p.timed_steps));
    if (p.timed_steps > 0) {
      add("steps", "p50", "ms", p.p50_ms);
      add("steps", "p90", "ms", p.p90_ms);
      add("steps", "max", "ms", p.max_ms);
    }
    if (p.parted_steps > 0) {
      add("step_parts", "parted_steps", "count", u(p.parted_steps));
      add("step_parts", "forward", "mean_ms", p.forward_ms);
      add("step_parts", "backward", "mean_ms", p.backward_ms);
      add("step_parts", "optimizer", "mean_ms", p.optimizer_ms);
      add("step_parts", "rest", "mean_ms", p.other_ms);
    }
    for (const auto& t : p.slowest_steps)
      add("slowest_steps", static_cast<int64_t>(t.step), "ms", t.ms);
    add("samples", "samples", "count", u(p.samples));
    add("samples", "idle", "count", u(p.idle_samples));
    add("samples", "idle_included", "bool", int64_t{p.idle_included ? 1 : 0});
    for (const auto& f : p.top_functions) add("functions", f.name, "samples", u(f.count));
    for (const auto& mo : p.top_modules_self) {
      add("modules_by_self", mo.name, "self_seconds", mo.self_seconds);
      add("modules_by_self", mo.name, "seconds", mo.seconds);
      add("modules_by_self", mo.name, "calls", u(mo.count));
    }
    for (const auto& mo : p.top_modules) {
      add("modules_by_total", mo.name, "seconds", mo.seconds);
      add("modules_by_total", mo.name, "self_seconds", mo.self_seconds);
      add("modules_by_total", mo.name, "calls", u(mo.count));
    }
    const auto& m = p.memory;
    if (m.readings > 0) {
      add("memory", "readings", "count", u(m.readings));
      add("memory", "minutes", "minutes", m.minutes);
    }
    for (const auto& [name, g] :
         {std::pair{"rss_bytes", &m.rss}, std::pair{"python_blocks", &m.python_blocks},
          std::pair{"cuda_allocated_bytes", &m.cuda_allocated}}) {
      if (!g->present) continue;
      add("memory", name, "start", u(g->start));
      add("memory", name, "end", u(g->end));
      add("memory", name, "peak", u(g->peak));
      add("memory", name, "per_minute", g->per_minute);
    }
  }
  return rows;
}

void PrintSummary(const probing::analyzer::Summary& s, probing::cli::OutputFormat format) {
  if (format != probing::cli::OutputFormat::kTable) {
    probing::cli::PrintRows(format, {"pid", "rank", "section", "name", "metric", "value"},
                            SummaryRows(s), std::cout);
    return;
  }
  std::cout << "Recording: " << s.segments << " segments";
  if (s.last_ts > s.first_ts || s.first_ts != 0)
    std::cout << ", " << FormatTime(s.first_ts) << " to " << FormatTime(s.last_ts) << " ("
              << Human(static_cast<double>(s.last_ts - s.first_ts) / 1e9) << " s)";
  std::cout << "\n";
  for (const auto& p : s.processes) std::cout << "Process: " << p << "\n";
  std::cout << "\nEvents:\n";
  for (const auto& [kind, n] : s.events)
    if (n > 0) std::cout << "  " << kind << ": " << n << "\n";
  std::cout << "\nThreads (" << s.threads.size() << "):\n";
  for (const auto& t : s.threads) std::cout << "  " << t << "\n";
  if (s.per_process.size() > 1) {
    // Several processes (the ranks of a job): each on its own line, never summed.
    std::cout << "\nRanks:\n";
    std::vector<std::vector<Cell>> rows;
    const probing::analyzer::ProcessSummary* slowest = nullptr;
    const probing::analyzer::ProcessSummary* fastest = nullptr;
    for (const auto& p : s.per_process) {
      auto ms = [](double v) { return v > 0 ? Cell(Human(v)) : Cell(std::monostate{}); };
      rows.push_back({p.rank >= 0 ? Cell(int64_t{p.rank}) : Cell(std::monostate{}), int64_t{p.pid},
                      static_cast<int64_t>(p.all_steps > 0 ? p.all_steps : p.steps), ms(p.p50_ms),
                      ms(p.p90_ms), ms(p.max_ms),
                      p.memory.rss.present ? Cell(Mb(static_cast<double>(p.memory.rss.peak)))
                                           : Cell(std::monostate{})});
      if (p.p50_ms > 0 && (slowest == nullptr || p.p50_ms > slowest->p50_ms)) slowest = &p;
      if (p.p50_ms > 0 && (fastest == nullptr || p.p50_ms < fastest->p50_ms)) fastest = &p;
    }
    probing::cli::PrintRows(probing::cli::OutputFormat::kTable,
                            {"rank", "pid", "steps", "p50_ms", "p90_ms", "max_ms", "peak_rss"},
                            rows, std::cout);
    if (slowest != nullptr && fastest != nullptr)
      std::cout << "slowest: " << ProcessName(*slowest) << " (step p50 " << Ms(slowest->p50_ms)
                << ", " << Human(slowest->p50_ms / fastest->p50_ms) << "x the fastest's)\n";
  }
  for (const auto& p : s.per_process) {
    if (s.per_process.size() > 1)
      std::cout << "\n== " << ProcessName(p)
                << (p.description.empty() ? std::string() : ": " + p.description) << " ==\n";
    PrintProcess(p);
  }
}

// Prints every row of one ring table, as SQL would see it (SELECT * FROM table).
int PrintTable(const probing::format::TraceSet& set, const std::string& name,
               probing::cli::OutputFormat format) {
  const auto* t = probing::format::FindTable(name);
  if (t == nullptr || t->source != probing::format::TableSource::kRing) {
    std::string known;
    for (const auto& k : probing::format::AllTables())
      if (k.source == probing::format::TableSource::kRing)
        known += (known.empty() ? "" : ", ") + std::string(k.name);
    std::cerr << "probing-analyze: no table " << name << " in recordings; known: " << known << "\n";
    return 1;
  }
  std::vector<std::string> columns;
  for (const auto& c : t->columns) columns.emplace_back(c.name);
  std::vector<std::vector<Cell>> rows;
  probing::format::RowContext ctx;
  for (const auto& seg : set.segments) {
    probing::format::SegmentRows(seg, t->id, ctx, [&](std::span<const probing::format::Value> r) {
      std::vector<Cell> row;
      row.reserve(r.size());
      for (const auto& v : r) {
        if (auto* i = std::get_if<int64_t>(&v))
          row.emplace_back(*i);
        else if (auto* d = std::get_if<double>(&v))
          row.emplace_back(*d);
        else if (auto* s = std::get_if<std::string_view>(&v))
          row.emplace_back(std::string(*s));
        else
          row.emplace_back(std::monostate{});
      }
      rows.push_back(std::move(row));
    });
  }
  probing::cli::PrintRows(format, columns, rows, std::cout);
  return 0;
}

void PrintStats(const probing::format::TraceSet& set) {
  std::vector<std::vector<Cell>> rows;
  for (const auto& s : set.sources) {
    rows.push_back({s.path, s.kind, static_cast<int64_t>(s.segments_ok),
                    static_cast<int64_t>(s.segments_corrupt), static_cast<int64_t>(s.segments_lost),
                    static_cast<int64_t>(s.bytes_skipped),
                    std::string(s.kind == "ring" ? "-"
                                : s.used_index   ? "yes"
                                                 : "no (scanned)"),
                    std::string(s.truncated_tail ? "yes" : "no"), s.first_error});
  }
  probing::cli::PrintRows(probing::cli::OutputFormat::kTable,
                          {"source", "kind", "segments", "corrupt", "lost", "bytes_skipped",
                           "index", "cut_off", "first_error"},
                          rows, std::cout);
}

// A time given to --since/--until: seconds from the start of the data ("30"), before its end
// ("-10"), or a Unix time in seconds (anything from 1e9 on).
probing::Result<int64_t> ParseWhen(const std::string& text, const probing::analyzer::Summary& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !std::isfinite(v))
    return probing::InvalidArgument("'" + text +
                                    "' is not a time: seconds from the start (30), before the "
                                    "end (-10), or a Unix time");
  if (v >= 1e9) return static_cast<int64_t>(v * 1e9);
  if (text[0] == '-') return s.last_ts + static_cast<int64_t>(v * 1e9);
  return s.first_ts + static_cast<int64_t>(v * 1e9);
}

// The stack samples a --where clause keeps, as (pid, sample_id).
probing::Result<std::set<std::pair<int64_t, int64_t>>> SamplesWhere(probing::sql::Database& db,
                                                                    const std::string& where,
                                                                    double timeout) {
  probing::sql::QueryLimits limits;
  limits.read_only = true;
  limits.timeout_s = timeout;
  PROBING_ASSIGN_OR_RETURN(
      auto r, db.Query("SELECT DISTINCT pid, sample_id FROM python.stacks WHERE " + where, limits));
  std::set<std::pair<int64_t, int64_t>> keep;
  for (const auto& row : r.rows)
    if (auto* pid = std::get_if<int64_t>(&row[0]))
      if (auto* id = std::get_if<int64_t>(&row[1])) keep.emplace(*pid, *id);
  return keep;
}

// One side of --diff: whatever probing-analyze takes as one input, loaded whole. Nothing
// readable in it is an error that names the file.
probing::format::TraceSet LoadOne(const std::string& path) {
  auto session = OrFail(probing::live::Session::OpenFiles({path}));
  auto* source = OrFail(session->Segments());
  auto set = OrFail(probing::live::LoadStreams(*source, {}));
  if (set.segments.empty()) {
    std::string why;
    for (const auto& s : set.sources)
      if (!s.first_error.empty()) why = ": " + s.first_error;
    throw std::runtime_error(path + " holds no whole segment: not a recording, or damaged" + why +
                             " (probing-analyze " + path + " --stats tells what)");
  }
  return set;
}

std::string Points(double change) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.3g", change * 100);
  return buf;
}
std::string Percent(double share) { return Human(share * 100) + "%"; }
std::string SignedMs(double v) { return (v >= 0 ? "+" : "") + Human(v); }

void PrintDiff(const probing::analyzer::Diff& d, const std::string& a, const std::string& b,
               probing::cli::OutputFormat format) {
  using probing::cli::OutputFormat;
  if (format != OutputFormat::kTable) {
    // Every figure at full precision: (section, name, metric, a, b, change).
    std::vector<std::vector<Cell>> rows;
    auto add = [&](const char* section, const std::string& name, const char* metric, double va,
                   double vb) {
      rows.push_back({std::string(section), name, std::string(metric), va, vb, vb - va});
    };
    auto n = [](uint64_t v) { return static_cast<double>(v); };
    add("recording", "samples", "count", n(d.samples_a), n(d.samples_b));
    add("recording", "idle_left_out", "count", n(d.idle_a), n(d.idle_b));
    add("recording", "steps", "count", n(d.steps_a), n(d.steps_b));
    for (const auto& f : d.functions) {
      add("functions", f.name, "self_share", f.self_a, f.self_b);
      add("functions", f.name, "total_share", f.total_a, f.total_b);
    }
    for (const auto& m : d.modules) {
      add("modules", m.name, "ms_per_step", m.ms_a, m.ms_b);
      add("modules", m.name, "self_ms_per_step", m.self_ms_a, m.self_ms_b);
      add("modules", m.name, "calls_per_step", m.calls_a, m.calls_b);
    }
    probing::cli::PrintRows(format, {"section", "name", "metric", "a", "b", "change"}, rows,
                            std::cout);
    return;
  }
  auto side = [](const char* label, const std::string& path, uint64_t samples, uint64_t idle) {
    std::cout << label << ": " << path << " (" << samples << " samples";
    if (idle > 0) std::cout << "; " << idle << " idle left out, --idle includes them";
    std::cout << ")\n";
  };
  side("A", a, d.samples_a, d.idle_a);
  side("B", b, d.samples_b, d.idle_b);
  constexpr size_t kRows = 20;
  std::cout << "\nFunctions, biggest change first (share of samples: self where innermost, "
               "total anywhere on the stack; change in percentage points):\n";
  std::vector<std::vector<Cell>> rows;
  for (size_t i = 0; i < d.functions.size() && i < kRows; ++i) {
    const auto& f = d.functions[i];
    rows.push_back({Percent(f.self_a), Percent(f.self_b), Points(f.self_b - f.self_a),
                    Percent(f.total_a), Percent(f.total_b), Points(f.total_b - f.total_a), f.name});
  }
  probing::cli::PrintRows(
      OutputFormat::kTable,
      {"self_a", "self_b", "self_change", "total_a", "total_b", "total_change", "function"}, rows,
      std::cout);
  if (d.functions.size() > kRows)
    std::cout << "(" << d.functions.size() - kRows
              << " more functions; --format csv or json lists them all)\n";
  if (!d.modules_compared) {
    std::cout << "\nPyTorch modules: not compared ("
              << (d.steps_a == 0 && d.steps_b == 0 ? "neither recording has"
                  : d.steps_a == 0                 ? "A has no"
                                                   : "B has no")
              << " traced steps)\n";
    return;
  }
  std::cout << "\nPyTorch modules, biggest change first (ms per step; " << d.steps_a
            << " steps in A, " << d.steps_b << " in B):\n";
  rows.clear();
  for (size_t i = 0; i < d.modules.size() && i < kRows; ++i) {
    const auto& m = d.modules[i];
    rows.push_back({Human(m.ms_a), Human(m.ms_b), SignedMs(m.ms_b - m.ms_a), Human(m.self_ms_a),
                    Human(m.self_ms_b), SignedMs(m.self_ms_b - m.self_ms_a), m.name});
  }
  probing::cli::PrintRows(
      OutputFormat::kTable,
      {"ms_a", "ms_b", "change", "self_ms_a", "self_ms_b", "self_change", "module"}, rows,
      std::cout);
  if (d.modules.size() > kRows)
    std::cout << "(" << d.modules.size() - kRows
              << " more modules; --format csv or json lists them all)\n";
}

int RunDiff(const std::vector<std::string>& inputs, probing::cli::OutputFormat format, bool idle,
            const std::string& svg_path, const std::string& title) {
  if (inputs.size() != 2) {
    std::cerr << "probing-analyze: --diff compares two recordings: --diff A B (got "
              << inputs.size() << ")\n";
    return 2;
  }
  if (svg_path == "-") {
    std::cerr << "probing-analyze: --diff prints its tables on standard output; -o needs a file "
                 "for the flame graph\n";
    return 2;
  }
  if (!svg_path.empty()) OrFail(probing::CheckNotAnInput(svg_path, inputs));
  const auto a = LoadOne(inputs[0]);
  const auto b = LoadOne(inputs[1]);
  probing::analyzer::DiffOptions o;
  o.idle = idle;
  const auto d = probing::analyzer::DiffRecordings(a.segments, b.segments, o);
  for (const auto& [path, samples, idle_n] :
       {std::tuple{inputs[0], d.samples_a, d.idle_a}, std::tuple{inputs[1], d.samples_b, d.idle_b}})
    if (samples == 0)
      throw std::runtime_error(
          path + " has no stack samples with Python frames to compare" +
          (idle_n > 0 ? " (" + std::to_string(idle_n) + " idle samples left out: --idle takes them)"
                      : std::string()));
  PrintDiff(d, inputs[0], inputs[1], format);
  if (!svg_path.empty()) {
    probing::analyzer::FlameGraphOptions fo;
    fo.title =
        title.empty() ? "Differential flame graph: " + inputs[1] + " against " + inputs[0] : title;
    fo.subtitle = "B's " + std::to_string(d.samples_b) +
                  " samples; red: a larger share of the samples than in A, blue: a smaller one";
    auto out = OrFail(probing::OutputFile::Open(svg_path));
    probing::analyzer::WriteDiffFlameGraphSvg(d, fo, out->stream());
    OrFail(out->Commit());
    std::cerr << "probing-analyze: wrote a differential flame graph to " << out->where() << "\n";
  }
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{
      "probing-analyze: postmortem analysis of Probing recordings.\n"
      "Reads .ptrace files (`probing record`) and the ring directories a process\n"
      "leaves under $PROBING_DATA_DIR/<pid>/. Damaged data is skipped and counted;\n"
      "everything whole still loads. With no SQL, table or export, prints a summary.\n"
      "\n"
      "  probing-analyze run.ptrace \"SELECT func, count(*) FROM python.stacks GROUP BY func\"\n"
      "  probing-analyze run.ptrace --flamegraph flame.svg --since 10 --until 20\n"
      "  probing-analyze rank0.ptrace rank1.ptrace --db runs.db\n"
      "  probing-analyze --diff before.ptrace after.ptrace -o diff.svg"};
  app.set_version_flag("--version", "probing-analyze 0.1.0 (trace format v1)");
  std::vector<std::string> inputs;
  app.add_option("inputs", inputs,
                 "recordings: .ptrace files, ring files or ring directories; a last argument that "
                 "is not a path is SQL to run on them (tables: probing tables)")
      ->required();
  double timeout = 0;
  app.add_option("--timeout", timeout,
                 "seconds an SQL query (and --where) may run before it is stopped (default: no "
                 "limit)")
      ->check(CLI::Range(0.0, 1e9));
  bool stats = false;
  app.add_flag("--stats", stats, "also show, per input, what loaded and what was skipped");
  std::string table;
  app.add_option("--table", table,
                 "print every row of one table instead of the summary (e.g. python.stacks)");
  std::string format_name = "table";
  app.add_option("--format", format_name, "how rows are printed: table, csv, json, jsonl")
      ->check(CLI::IsMember({"table", "csv", "json", "jsonl"}));
  std::string db_path;
  app.add_option("--db", db_path,
                 "also keep the tables in this SQLite file (tables named \"python.stacks\" etc.)");
  std::string svg_path, folded_path, speedscope_path, chrome_path, title;
  app.add_option("--flamegraph", svg_path,
                 "write an interactive flame graph (SVG: click to zoom, Ctrl-F to search)");
  app.add_option("--folded", folded_path,
                 "write folded stacks (flamegraph.pl's input; '-' for standard output)");
  app.add_option("--speedscope", speedscope_path, "write a speedscope profile (JSON)");
  app.add_option("--chrome-trace", chrome_path,
                 "write the PyTorch module timeline for Perfetto / chrome://tracing (JSON)");
  app.add_option("--title", title,
                 "the flame graph's title (default: the recorded command; --diff: the two inputs)");
  std::optional<uint64_t> thread;
  std::string since, until, where;
  app.add_option("--thread", thread, "exports: only this thread (OS thread id)");
  app.add_option("--since", since,
                 "exports: from this time: seconds from the start (30), before the end (-10), or "
                 "a Unix time");
  app.add_option("--until", until, "exports: up to this time (as --since)");
  app.add_option("--where", where,
                 "exports: only stack samples with a frame matching this SQL condition on "
                 "python.stacks, e.g. \"func = 'forward'\"");
  bool idle = false, lines = false;
  app.add_flag(
      "--idle", idle,
      "count idle threads' samples too (the summary's top functions, --diff, "
      "--flamegraph, --folded, --speedscope); by default they are left out and counted. Idle: not "
      "holding the GIL with a known waiting call innermost (docs/record.md)");
  app.add_flag("--lines", lines,
               "--flamegraph, --folded: a frame per line executed (func (file:line)) rather than "
               "per function");
  bool diff = false;
  std::string output_path;
  app.add_flag("--diff", diff,
               "compare two recordings, A B (each as inputs are given): functions by the change "
               "of their share of samples (self and total), PyTorch modules by the change of "
               "their time per step; --format, --idle, -o");
  app.add_option("-o,--output", output_path,
                 "--diff: also write a differential flame graph (SVG): B's, coloured by the "
                 "change from A (red grown, blue shrunk)");
  bool stragglers = false, hang = false;
  int64_t straggler_steps = 20;
  app.add_flag("--stragglers", stragglers,
               "a job's recordings (probing cluster record): the rank that arrives last at the "
               "collectives, how late, and where it was meanwhile");
  app.add_option("--steps", straggler_steps, "--stragglers: compare the last N steps (default 20)")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  app.add_flag("--hang", hang,
               "a job's recordings: where each rank stopped, and the rank that never reached the "
               "collective the others wait in");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  const auto format = *probing::cli::ParseOutputFormat(format_name);
  if (diff) {
    if (!svg_path.empty() || !folded_path.empty() || !speedscope_path.empty() ||
        !chrome_path.empty() || !db_path.empty() || !table.empty() || stats || stragglers || hang ||
        thread || !since.empty() || !until.empty() || !where.empty() || lines) {
      std::cerr << "probing-analyze: --diff takes two recordings and --format, --idle, -o and "
                   "--title only\n";
      return 2;
    }
    return RunDiff(inputs, format, idle, output_path, title);
  }
  if (!output_path.empty()) {
    std::cerr << "probing-analyze: -o names the differential flame graph of --diff; the other "
                 "outputs have their own options (--flamegraph OUT.svg, ...)\n";
    return 2;
  }
  std::string sql;
  std::error_code ec;
  if (inputs.size() > 1 && !std::filesystem::exists(inputs.back(), ec)) {
    sql = inputs.back();
    inputs.pop_back();
  }
  const bool exports =
      !svg_path.empty() || !folded_path.empty() || !speedscope_path.empty() || !chrome_path.empty();
  if (!exports && (thread || !since.empty() || !until.empty() || !where.empty())) {
    std::cerr << "probing-analyze: --thread, --since, --until and --where choose what an export "
                 "(--flamegraph, --folded, --speedscope, --chrome-trace) takes; give one\n";
    return 2;
  }
  int to_stdout = (!sql.empty() || !table.empty() || (!exports && db_path.empty())) ? 1 : 0;
  for (const std::string* p : {&svg_path, &folded_path, &speedscope_path, &chrome_path})
    if (*p == "-") ++to_stdout;
  if (to_stdout > 1) {
    std::cerr << "probing-analyze: only one output can go to standard output ('-')\n";
    return 2;
  }
  // An output must not be what is read: `--db run.ptrace` would replace the recording.
  for (const std::string* p : {&db_path, &svg_path, &folded_path, &speedscope_path, &chrome_path})
    if (!p->empty()) OrFail(probing::CheckNotAnInput(*p, inputs));
  auto session = OrFail(probing::live::Session::OpenFiles(inputs));
  auto* source = OrFail(session->Segments());
  auto set = OrFail(probing::live::LoadStreams(*source, {}));

  if (stragglers || hang) {
    auto ranks = probing::cluster::RanksOf(std::move(set.segments));
    return stragglers
               ? probing::cli::PrintStragglers(probing::cluster::Stragglers(ranks, straggler_steps),
                                               format, std::cout, std::cerr)
               : probing::cli::PrintHang(probing::cluster::HangOf(ranks), format, std::cout,
                                         std::cerr);
  }

  std::unique_ptr<probing::sql::Database> db;
  double load_seconds = 0;
  if (!sql.empty() || !db_path.empty() || !where.empty()) {
    db = OrFail(probing::sql::Database::Create());
    const auto t0 = std::chrono::steady_clock::now();
    OrFail(db->LoadSegments(set.segments));
    load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  if (!sql.empty()) {
    probing::sql::QueryLimits limits;
    limits.read_only = true;
    limits.timeout_s = timeout;
    auto r = OrFail(db->Query(sql, limits));
    probing::cli::PrintRows(format, r.columns, r.rows, std::cout);
  } else if (!table.empty()) {
    int rc = PrintTable(set, table, format);
    if (rc != 0) return rc;
  } else if (!exports && db_path.empty()) {
    probing::analyzer::SummaryOptions so;
    so.idle = idle;
    PrintSummary(probing::analyzer::Summarize(set.segments, so), format);
  }
  if (!db_path.empty()) {
    OrFail(db->SaveTo(db_path));
    std::cerr << "probing-analyze: wrote " << db->rows_loaded() << " rows to " << db_path << "\n";
  }

  if (exports) {
    const auto summary = probing::analyzer::Summarize(set.segments);
    probing::analyzer::SampleFilter filter;
    filter.thread = thread;
    filter.idle = idle;
    filter.lines = lines;
    if (!since.empty()) filter.since_ns = OrFail(ParseWhen(since, summary));
    if (!until.empty()) filter.until_ns = OrFail(ParseWhen(until, summary));
    if (!where.empty()) filter.samples = OrFail(SamplesWhere(*db, where, timeout));
    if (!svg_path.empty() || !folded_path.empty()) {
      auto folded = probing::analyzer::FoldStacks(set.segments, filter);
      if (folded.samples == 0) {
        // Nothing to draw: say why, and write no empty file.
        std::cerr << "probing-analyze: no stack samples with Python frames to export"
                  << (folded.idle > 0 ? " (" + std::to_string(folded.idle) +
                                            " idle samples left out: --idle takes them)"
                                      : std::string())
                  << (thread || !since.empty() || !until.empty() || !where.empty()
                          ? "; --thread, --since, --until or --where matched none"
                          : std::string())
                  << "\n";
        return 1;
      }
      if (!folded_path.empty()) {
        auto out = OrFail(probing::OutputFile::Open(folded_path));
        probing::analyzer::WriteFolded(folded, out->stream());
        OrFail(out->Commit());
        std::cerr << "probing-analyze: wrote " << folded.stacks.size() << " folded stacks ("
                  << folded.samples << " samples) to " << out->where() << "\n";
      }
      if (!svg_path.empty()) {
        probing::analyzer::FlameGraphOptions o;
        o.title = !title.empty()                  ? title
                  : summary.processes.size() == 1 ? "Flame graph: " + summary.processes[0]
                                                  : "Flame graph";
        o.subtitle = std::to_string(folded.samples) + " samples";
        if (summary.last_ts > summary.first_ts)
          o.subtitle +=
              " over " + std::to_string((summary.last_ts - summary.first_ts) / 1000000000) + " s";
        if (thread) o.subtitle += ", thread " + std::to_string(*thread);
        if (!since.empty()) o.subtitle += ", since " + since;
        if (!until.empty()) o.subtitle += ", until " + until;
        if (!where.empty()) o.subtitle += ", where " + where;
        auto out = OrFail(probing::OutputFile::Open(svg_path));
        probing::analyzer::WriteFlameGraphSvg(folded, o, out->stream());
        OrFail(out->Commit());
        std::cerr << "probing-analyze: wrote a flame graph of " << folded.samples << " samples to "
                  << out->where() << "\n";
      }
      if (folded.idle > 0)
        std::cerr << "probing-analyze: left out " << folded.idle
                  << " samples of idle threads (--idle takes them)\n";
    }
    if (!speedscope_path.empty()) {
      auto out = OrFail(probing::OutputFile::Open(speedscope_path));
      probing::analyzer::WriteSpeedscope(
          set.segments, filter,
          summary.processes.empty() ? std::string("probing") : summary.processes[0], out->stream());
      OrFail(out->Commit());
      std::cerr << "probing-analyze: wrote a speedscope profile to " << out->where() << "\n";
    }
    if (!chrome_path.empty()) {
      auto out = OrFail(probing::OutputFile::Open(chrome_path));
      const auto written = probing::analyzer::WriteChromeTrace(set.segments, filter, out->stream());
      OrFail(out->Commit());
      std::cerr << "probing-analyze: wrote " << written.calls
                << " PyTorch calls as a Chrome trace to " << out->where()
                << (written.calls == 0 ? " (no python.torch_trace rows matched)" : "") << "\n";
      if (written.cut > 0)
        std::cerr << "probing-analyze: " << written.cut
                  << " calls or steps began inside another but ended after it; each was cut at "
                     "that end, so the trace nests\n";
    }
  }

  if (stats) {
    std::cout << "\nInputs:\n";
    PrintStats(set);
    if (db != nullptr) {
      char line[160];
      std::snprintf(
          line, sizeof line, "SQLite: %llu rows loaded in %.3f s (%.2f M rows/s)\n",
          static_cast<unsigned long long>(db->rows_loaded()), load_seconds,
          load_seconds > 0 ? static_cast<double>(db->rows_loaded()) / load_seconds / 1e6 : 0.0);
      std::cout << line;
    }
  }
  uint64_t damaged = 0;
  for (const auto& s : set.sources)
    damaged += s.segments_corrupt + (s.bytes_skipped ? 1 : 0) + (s.unreadable ? 1 : 0);
  if (damaged > 0 && !stats)
    std::cerr << "probing-analyze: some input was damaged and skipped; --stats tells what\n";
  return 0;
}

}  // namespace

// Exceptions stop here, once: a one-line message and exit code 1.
int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "probing-analyze: " << e.what() << "\n";
    return 1;
  }
}
