// `probing`: the command line for a running (or dead, or recorded, or remote) Python process
// with the recorder on. Argument parsing and printing only: every target is opened as a
// live::Session, and the work is in the libraries. Exit codes: 0 success, 1 a failed
// operation, 2 bad usage.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "diagnose_print.h"
#include "printer.h"
#include "probing/analyzer/export.h"
#include "probing/analyzer/summary.h"
#include "probing/base/clock.h"
#include "probing/base/files.h"
#include "probing/cluster/cluster.h"
#include "probing/cluster/diagnose.h"
#include "probing/format/tables.h"
#include "probing/live/allocations.h"
#include "probing/live/inject.h"
#include "probing/live/rdma.h"
#include "probing/live/install.h"
#include "probing/live/recorders.h"
#include "probing/live/recording.h"
#include "probing/live/session.h"
#include "probing/web/server.h"
#include "repl.h"
#include "top.h"

namespace {

namespace fs = std::filesystem;
using probing::cli::Cell;
using probing::cli::OutputFormat;
namespace live = probing::live;
namespace protocol = probing::protocol;

// A failed operation: printed once by main, exit code 1.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Bad usage found after parsing: exit code 2.
struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename T>
T OrFail(probing::Result<T> r) {
  if (!r.ok()) throw Failure(r.status().message());
  return std::move(r).value();
}
void OrFail(const probing::Status& st) {
  if (!st.ok()) throw Failure(st.message());
}

struct Options {
  std::string target;
  std::string token;
  std::string format = "table";
  double timeout = 30;
  OutputFormat fmt() const { return *probing::cli::ParseOutputFormat(format); }
};

// The target, opened once; `what` names the command for the usage message.
std::unique_ptr<live::Session> Open(const Options& o, const std::string& what) {
  if (o.target.empty())
    throw Usage(what + " needs -t TARGET: a pid, host:port, a ring directory or a recording");
  live::SessionOptions so;
  so.token = o.token;
  so.timeout_s = o.timeout;
  return OrFail(live::Session::Open(o.target, so));
}

void Print(const Options& o, const std::vector<std::string>& columns,
           const std::vector<std::vector<Cell>>& rows) {
  probing::cli::PrintRows(o.fmt(), columns, rows, std::cout);
}

Cell Optional(const std::optional<int64_t>& v) { return v ? Cell(*v) : Cell(std::monostate{}); }

int CmdTables(const Options& o) {
  std::vector<std::vector<Cell>> rows;
  for (const auto& t : probing::format::AllTables()) {
    for (const auto& c : t.columns) {
      rows.push_back(
          {std::string(t.name), std::string(c.name),
           std::string(probing::format::ColumnTypeName(c.type)),
           std::string(t.source == probing::format::TableSource::kRing ? "rings" : "live process"),
           std::string(c.description)});
    }
  }
  if (!o.target.empty()) {  // custom tables registered in the target
    auto session = Open(o, "tables");
    if (session->has_control()) {
      auto listed = OrFail(session->CustomTables());
      for (const auto& name : listed.tables) {
        auto t = session->CustomTable(name);
        if (!t.ok()) {  // one broken table does not hide the others
          std::cerr << "probing: " << t.status().message() << "\n";
          continue;
        }
        for (const auto& c : t->columns)
          rows.push_back({"python." + name, c.name, c.type, std::string("live process"),
                          std::string("registered with @probing.table")});
      }
    }
  }
  Print(o, {"table", "column", "type", "source", "description"}, rows);
  return 0;
}

int CmdInfo(const Options& o) {
  auto info = OrFail(Open(o, "info")->Info());
  std::vector<std::vector<Cell>> rows;
  const protocol::Json j = protocol::ToJson(info);
  for (auto& [k, v] : j.items()) {
    if (k == "notes" && v.is_array()) {  // one row each: why a table is empty
      for (const auto& note : v) rows.push_back({std::string("note"), protocol::CellFromJson(note)});
      continue;
    }
    rows.push_back({k, v.is_object() ? Cell(v.dump()) : protocol::CellFromJson(v)});
  }
  Print(o, {"key", "value"}, rows);
  return 0;
}

int CmdBacktrace(const Options& o, const protocol::BacktraceRequest& request) {
  auto bt = OrFail(Open(o, "backtrace")->Backtrace(request));
  if (o.fmt() != OutputFormat::kTable) {
    std::vector<std::vector<Cell>> rows;
    for (const auto& t : bt.threads)
      for (const auto& f : t.frames)
        rows.push_back(
            {static_cast<int64_t>(t.thread_id), t.thread_name, f.depth, f.func, f.file,
             Optional(f.lineno), f.frame_type, int64_t{t.holds_gil ? 1 : 0},
             f.locals ? Cell(protocol::Json(*f.locals).dump()) : Cell(std::monostate{})});
    Print(o,
          {"thread_id", "thread_name", "depth", "func", "file", "lineno", "frame_type", "holds_gil",
           "locals"},
          rows);
    return 0;
  }
  for (const auto& t : bt.threads) {
    std::cout << "Thread " << t.thread_id << " " << t.thread_name
              << (t.holds_gil ? "  (holds the GIL)" : "")
              << (t.truncated ? "  (stack cut short: its outermost frames are left out)" : "")
              << (t.inconsistent
                      ? "  (inconsistent: the stack kept changing while read; shown as last read)"
                      : "")
              << "\n";
    if (t.native_error) std::cout << "  (native frames: " << *t.native_error << ")\n";
    for (const auto& f : t.frames) {
      std::cout << "  #" << f.depth << "  " << f.func;
      if (f.frame_type == "Native")  // native: the module's file name, no line
        std::cout << "  [" << fs::path(f.file).filename().string() << "]\n";
      else
        std::cout << " (" << f.file << ":" << (f.lineno ? std::to_string(*f.lineno) : "?") << ")\n";
      if (f.locals)
        for (const auto& [k, v] : *f.locals) std::cout << "        " << k << " = " << v << "\n";
    }
    std::cout << "\n";
  }
  if (bt.locals_error) std::cerr << "probing: locals: " << *bt.locals_error << "\n";
  return 0;
}

int CmdEval(const Options& o, const std::string& code, double timeout) {
  auto r = OrFail(Open(o, "eval")->Eval({code, timeout}));
  if (o.fmt() != OutputFormat::kTable) {  // one row, for scripts (and the Python API)
    auto text = [](const std::optional<std::string>& s) {
      return s ? Cell(*s) : Cell(std::monostate{});
    };
    const auto& e = r.exception;
    Print(o,
          {"value", "stdout", "stderr", "exception_type", "exception_message", "traceback",
           "duration"},
          {{text(r.value), r.out, r.err, text(e ? std::optional(e->type) : std::nullopt),
            text(e ? std::optional(e->message) : std::nullopt),
            text(e ? std::optional(e->traceback) : std::nullopt), r.duration}});
    return e ? 1 : 0;
  }
  std::cout << r.out;
  std::cerr << r.err;
  if (r.value) std::cout << *r.value << "\n";
  if (r.exception) {
    std::cerr << r.exception->traceback;
    return 1;
  }
  return 0;
}

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

std::string SecondsText(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

int CmdInject(const Options& o, double timeout, const std::string& library,
              const std::vector<std::string>& settings) {
  auto session = Open(o, "inject");
  if (session->kind() != live::TargetKind::kProcess)
    throw Usage("inject works on a local pid, not " + session->Describe());
  live::InjectOptions io;
  io.pid = *session->pid();
  io.safe_point_timeout_s = timeout;
  io.library = library;
  for (const auto& kv : settings) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) throw Usage("--set takes KEY=VALUE, got '" + kv + "'");
    io.settings.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  io.on_slow = [](const std::string& m) { std::cerr << "probing: " << m << "\n"; };
  auto r = OrFail(live::InjectAndWait(io));
  const auto& out = r.injected;
  if (out.already_running)
    std::cerr << "probing: the recorder is already running in process " << io.pid
              << "; nothing was changed\n";
  if (o.fmt() != OutputFormat::kTable) {
    Print(o,
          {"pid", "already_running", "python", "library", "thread", "stopped_ms", "check_ms",
           "dlopen_ms", "start_ms", "attempts", "checks_ms", "answered_ms"},
          {{int64_t{io.pid}, int64_t{out.already_running ? 1 : 0}, out.python, out.library,
            int64_t{out.thread}, Ms(out.stopped_ns), Ms(out.check_ns), Ms(out.dlopen_ns),
            Ms(out.start_ns), int64_t{out.attempts}, Ms(out.checks_ns), r.answered_ms}});
    return 0;
  }
  if (out.already_running) return 0;
  char line[256];
  std::cout << "Successfully injected probes into process " << io.pid << "\n";
  std::cout << "  python     " << out.python << " (" << out.library << ")\n";
  snprintf(line, sizeof line,
           "  thread     %d stopped %.2f ms to load it (%d stop%s to find a safe point)\n",
           out.thread, Ms(out.stopped_ns), out.attempts, out.attempts == 1 ? "" : "s");
  std::cout << line;
  snprintf(line, sizeof line,
           "             (safe-point check %.2f ms, dlopen %.2f ms, start %.2f ms)\n",
           Ms(out.check_ns), Ms(out.dlopen_ns), Ms(out.start_ns));
  std::cout << line;
  snprintf(line, sizeof line, "  answering  on %s after %.1f ms\n", r.info.socket.c_str(),
           r.answered_ms);
  std::cout << line;
  return 0;
}

int CmdConfig(const Options& o, const std::string& arg) {
  auto session = Open(o, "config");
  size_t eq = arg.find('=');
  auto r = eq != std::string::npos
               ? OrFail(session->SetConfig(arg.substr(0, eq), arg.substr(eq + 1)))
               : OrFail(session->GetConfig(arg));
  std::vector<std::vector<Cell>> rows;
  for (const auto& s : r.settings)
    rows.push_back({s.name, s.value, s.default_value, s.description});
  Print(o, {"name", "value", "default", "description"}, rows);
  return 0;
}

// Set by SIGINT/SIGTERM while recording: finish the file cleanly instead of dying.
std::atomic<int> g_stop_signal{0};
void OnStopSignal(int sig) { g_stop_signal.store(sig); }

probing::cluster::Options ClusterOptions(const Options& o) {
  probing::cluster::Options co;
  co.session.token = o.token;
  co.session.timeout_s = o.timeout;
  return co;
}

bool NamesClusterTables(const std::string& sql) {
  std::string lower = sql;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find("cluster.") != std::string::npos;
}

int CmdQuery(const Options& o, const std::string& sql) {
  if (NamesClusterTables(sql)) {  // every rank's tables: asked of every rank, by us
    if (o.target.empty()) throw Usage("a cluster query needs -t TARGET: any one rank of the job");
    std::string coverage;
    auto r = OrFail(probing::cluster::Query(o.target, ClusterOptions(o), sql, &coverage));
    Print(o, r.columns, r.rows);
    if (coverage.find(';') != std::string::npos) std::cerr << "probing: " << coverage << "\n";
    return 0;
  }
  auto r = OrFail(Open(o, "query")->Query(sql));
  Print(o, r.columns, r.rows);
  return 0;
}

probing::cluster::Job Discover(const Options& o, const std::string& what) {
  if (o.target.empty())
    throw Usage("cluster " + what + " needs -t TARGET: any one rank of the job (pid or host:port)");
  return OrFail(probing::cluster::Discover(o.target, ClusterOptions(o)));
}

void SayJob(const Options& o, const probing::cluster::Job& job) {
  if (o.fmt() == OutputFormat::kTable)
    std::cerr << "probing: job " << job.run_id << ", " << job.world_size << " ranks"
              << (job.how.empty() ? std::string() : ", found through " + job.how) << "\n";
}

int CmdClusterList(const Options& o) {
  auto job = Discover(o, "list");
  SayJob(o, job);
  auto statuses = probing::cluster::List(job, ClusterOptions(o));
  std::vector<std::vector<Cell>> rows;
  size_t running = 0;
  for (const auto& st : statuses) {
    const auto& m = *st.member;
    running += st.state == "running";
    rows.push_back({m.rank, m.local_rank < 0 ? Cell(std::monostate{}) : Cell(m.local_rank),
                    m.host.empty() ? Cell(std::monostate{}) : Cell(m.host),
                    m.pid == 0 ? Cell(std::monostate{}) : Cell(m.pid),
                    st.address.empty() ? Cell(std::monostate{}) : Cell(st.address), st.state,
                    st.step ? Cell(*st.step) : Cell(std::monostate{}),
                    st.clock_offset_s ? Cell(*st.clock_offset_s * 1e3) : Cell(std::monostate{}),
                    st.error.empty() ? Cell(std::monostate{}) : Cell(st.error)});
  }
  Print(o,
        {"rank", "local_rank", "host", "pid", "address", "state", "step", "clock_offset_ms", "why"},
        rows);
  return running == statuses.size() ? 0 : 1;
}

std::string RankList(const std::vector<int64_t>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size(); ++i) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    out += (out.empty() ? "" : ",") + std::to_string(ranks[i]) +
           (j > i + 1    ? "-" + std::to_string(ranks[j])
            : j == i + 1 ? "," + std::to_string(ranks[j])
                         : "");
    i = j;
  }
  return out;
}

int CmdClusterBacktrace(const Options& o) {
  auto job = Discover(o, "backtrace");
  auto merged = probing::cluster::Backtraces(job, ClusterOptions(o));
  if (o.fmt() != OutputFormat::kTable) {
    std::vector<std::vector<Cell>> rows;
    int64_t group = 0;
    for (const auto& g : merged.groups) {
      for (const auto& f : g.frames)
        rows.push_back({group, RankList(g.ranks), static_cast<int64_t>(g.ranks.size()),
                        g.thread_name, f.depth, f.func, f.file,
                        f.lineno ? Cell(*f.lineno) : Cell(std::monostate{}),
                        int64_t{g.holds_gil ? 1 : 0}});
      ++group;
    }
    Print(o,
          {"group", "ranks", "rank_count", "thread_name", "depth", "func", "file", "lineno",
           "holds_gil"},
          rows);
  } else {
    SayJob(o, job);
    for (const auto& g : merged.groups) {
      std::cout << (g.ranks.size() == 1 ? "rank " : "ranks ") << RankList(g.ranks) << "  "
                << g.thread_name << (g.holds_gil ? "  (holds the GIL)" : "") << "\n";
      for (const auto& f : g.frames)
        std::cout << "  #" << f.depth << "  " << f.func << " (" << f.file << ":"
                  << (f.lineno ? std::to_string(*f.lineno) : "?") << ")\n";
      std::cout << "\n";
    }
  }
  std::cerr << "probing: " << merged.coverage << "\n";
  return merged.coverage.find(';') == std::string::npos ? 0 : 1;
}

int CmdClusterRecord(const Options& o, const std::string& dir, double duration) {
  if (dir.empty()) throw Usage("cluster record needs -o DIR");
  auto job = Discover(o, "record");
  SayJob(o, job);
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  auto r = probing::cluster::Record(job, ClusterOptions(o), dir, duration, g_stop_signal);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  auto out = OrFail(std::move(r));
  for (const auto& line : out.lines) std::cerr << "probing: " << line << "\n";
  std::cerr << "probing: " << out.coverage << "; the manifest is " << out.manifest
            << "\nprobing: analyze it with: probing-analyze " << dir << "\n";
  return out.coverage.find(';') == std::string::npos ? 0 : 1;
}

// Why a flame graph came out empty: the window it looked at, `extra`, and the idle threads'
// samples it left out.
std::string WindowAndIdleNote(const probing::analyzer::FoldedStacks& stacks, double duration,
                              const std::string& extra) {
  return (duration > 0 ? " in the last " + SecondsText(duration) +
                             " s (--duration 0 takes all the rings hold)"
                       : std::string()) +
         extra +
         (stacks.idle > 0 ? "; " + std::to_string(stacks.idle) +
                                " samples of idle threads left out (--idle takes them)"
                          : std::string());
}

void SayIdleLeftOut(const probing::analyzer::FoldedStacks& stacks) {
  if (stacks.idle > 0)
    std::cerr << "probing: left out " << stacks.idle
              << " samples of idle threads (--idle takes them)\n";
}

int CmdClusterFlamegraph(const Options& o, std::string out, bool folded, double duration,
                         int64_t rank, bool idle, bool lines) {
  auto job = Discover(o, "flamegraph");
  auto merged = probing::cluster::StackSamples(job, ClusterOptions(o), rank);
  std::cerr << "probing: " << merged.coverage << "\n";
  probing::analyzer::SampleFilter filter;
  if (duration > 0) filter.since_ns = probing::RealtimeNs() - static_cast<int64_t>(duration * 1e9);
  filter.idle = idle;
  filter.lines = lines;
  auto stacks = probing::analyzer::FoldStacks(merged.segments, filter);
  if (stacks.samples == 0)
    throw Failure("no stack samples with Python frames from the job's ranks" +
                  WindowAndIdleNote(stacks, duration, ""));
  SayIdleLeftOut(stacks);
  // Each stack under its rank ("rank 2 (pid 4242)"), not its process.
  std::map<std::string, uint64_t> by_rank;
  for (const auto& [stack, n] : stacks.stacks) {
    std::string key = stack;
    int64_t pid = -1;
    if (key.rfind("process ", 0) == 0) {
      size_t semi = key.find(';');
      pid = std::atoll(key.substr(8, semi - 8).c_str());
      key = key.substr(semi + 1);
    } else if (merged.pid_rank.size() == 1) {
      pid = merged.pid_rank[0].first;
    }
    std::string root = "unknown rank";
    for (const auto& [p, r] : merged.pid_rank)
      if (p == pid) root = "rank " + std::to_string(r) + " (pid " + std::to_string(p) + ")";
    by_rank[root + ";" + key] += n;
  }
  stacks.stacks = std::move(by_rank);
  if (folded) {
    if (out.empty() || out == "-") {
      probing::analyzer::WriteFolded(stacks, std::cout);
      return 0;
    }
  }
  if (out.empty()) out = "flamegraph-" + job.run_id + ".svg";
  auto file = OrFail(probing::OutputFile::Open(out));
  if (folded) {
    probing::analyzer::WriteFolded(stacks, file->stream());
  } else {
    probing::analyzer::FlameGraphOptions fo;
    fo.title =
        "Flame graph: job " + job.run_id + (rank >= 0 ? ", rank " + std::to_string(rank) : "");
    fo.subtitle = std::to_string(stacks.samples) + " samples from " + merged.coverage;
    probing::analyzer::WriteFlameGraphSvg(stacks, fo, file->stream());
  }
  OrFail(file->Commit());
  std::cout << "Wrote " << (folded ? "folded stacks" : "a flame graph") << " of " << stacks.samples
            << " samples to " << out << "\n";
  return 0;
}

int CmdClusterStragglers(const Options& o, int64_t steps) {
  auto job = Discover(o, "stragglers");
  SayJob(o, job);
  std::string coverage;
  auto ranks = probing::cluster::FetchRankData(
      job, ClusterOptions(o),
      {probing::format::Stream::kTorch, probing::format::Stream::kCollectives,
       probing::format::Stream::kStacks},
      &coverage);
  int rc = probing::cli::PrintStragglers(probing::cluster::Stragglers(ranks, steps), o.fmt(),
                                         std::cout, std::cerr);
  std::cerr << "probing: " << coverage << "\n";
  // A rank that did not answer is not in the table, and may be the one the others wait for.
  return rc == 0 && coverage.find(';') != std::string::npos ? 1 : rc;
}

int CmdClusterHang(const Options& o) {
  auto job = Discover(o, "hang");
  SayJob(o, job);
  return probing::cli::PrintHang(probing::cluster::Hang(job, ClusterOptions(o)), o.fmt(),
                                 std::cout, std::cerr);
}

int CmdClusterAttach(const Options& o, double timeout) {
  std::optional<pid_t> of;
  if (!o.target.empty()) {
    auto session = Open(o, "cluster attach");
    if (session->kind() != live::TargetKind::kProcess)
      throw Usage("cluster attach works on this host's processes: -t PID of a rank or launcher");
    of = *session->pid();
  }
  auto ranks = OrFail(probing::cluster::LocalRanks(of, live::DefaultDataDir()));
  if (ranks.empty()) throw Failure("no ranks of the job found on this host");
  int failures = 0;
  for (const auto& r : ranks) {
    if (r.recorded) {
      std::cerr << "probing: rank " << r.rank << " (process " << r.pid << ") already records\n";
      continue;
    }
    live::InjectOptions io;
    io.pid = r.pid;
    io.safe_point_timeout_s = timeout;
    auto injected = live::InjectAndWait(io);
    if (injected.ok()) {
      std::cerr << "probing: rank " << r.rank << " (process " << r.pid << "): recorder injected in "
                << static_cast<int>(injected->answered_ms) << " ms\n";
    } else {
      ++failures;
      std::cerr << "probing: rank " << r.rank << " (process " << r.pid
                << "): " << injected.status().message() << "\n";
    }
  }
  Options listing = o;
  if (listing.target.empty()) listing.target = std::to_string(ranks.front().pid);
  const int rc = CmdClusterList(listing);
  return failures > 0 ? 1 : rc;
}

std::string Mb(const Cell& c) {
  char buf[32];
  if (auto* i = std::get_if<int64_t>(&c))
    snprintf(buf, sizeof buf, "%.1f", static_cast<double>(*i) / (1024 * 1024));
  else
    return "NULL";
  return buf;
}

// Memory now and its trend: SQL over python.memory, the same for every kind of target.
int CmdMemory(const Options& o, int last) {
  auto session = Open(o, "memory");
  auto r = OrFail(session->Query(
      "SELECT * FROM (SELECT ts, rss, vms, py_blocks, gc_gen0, gc_gen1, gc_gen2, gc_collections, "
      "threads, cuda_allocated, cuda_reserved, pid FROM python.memory ORDER BY ts DESC LIMIT " +
      std::to_string(last) + ") ORDER BY ts"));
  if (r.rows.empty())
    throw Failure("no memory samples from " + session->Describe() + " yet (one a second)");
  if (o.fmt() != OutputFormat::kTable) {
    Print(o, r.columns, r.rows);
    return 0;
  }
  auto col = [&](const std::vector<Cell>& row, const char* name) -> const Cell& {
    size_t i = std::find(r.columns.begin(), r.columns.end(), name) - r.columns.begin();
    return row.at(i);
  };
  auto text = [](const Cell& c) {
    if (auto* i = std::get_if<int64_t>(&c)) return std::to_string(*i);
    return std::string("NULL");
  };
  const auto& now = r.rows.back();
  const auto& first = r.rows.front();
  std::cout << "RSS " << Mb(col(now, "rss")) << " MB, VMS " << Mb(col(now, "vms"))
            << " MB, threads " << text(col(now, "threads")) << ", Python blocks "
            << text(col(now, "py_blocks")) << ", GC counts " << text(col(now, "gc_gen0")) << "/"
            << text(col(now, "gc_gen1")) << "/" << text(col(now, "gc_gen2"))
            << (std::holds_alternative<std::monostate>(col(now, "cuda_allocated"))
                    ? std::string(", CUDA not in use")
                    : ", CUDA allocated " + Mb(col(now, "cuda_allocated")) + " MB, reserved " +
                          Mb(col(now, "cuda_reserved")) + " MB")
            << "\n";
  if (r.rows.size() > 1) {
    auto num = [](const Cell& c) -> std::optional<int64_t> {
      if (auto* i = std::get_if<int64_t>(&c)) return *i;
      return std::nullopt;
    };
    const double span = std::get<double>(col(now, "ts")) - std::get<double>(col(first, "ts"));
    const double drss =
        static_cast<double>(num(col(now, "rss")).value_or(0) - num(col(first, "rss")).value_or(0)) /
        (1024 * 1024);
    char delta[32];
    snprintf(delta, sizeof delta, "%+.1f", drss);
    std::cout << "Over the last " << static_cast<int>(span) << " s (" << r.rows.size()
              << " samples): RSS " << delta << " MB";
    auto b1 = num(col(now, "py_blocks")), b0 = num(col(first, "py_blocks"));
    if (b1 && b0) std::cout << ", Python blocks " << (*b1 - *b0 >= 0 ? "+" : "") << *b1 - *b0;
    std::cout << "\n";
  }
  return 0;
}

std::string Size(uint64_t bytes) {
  char buf[32];
  if (bytes >= (10u << 20))
    snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  else
    snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024);
  return buf;
}

// Where Python memory grows: tracemalloc in the target for `interval` seconds, the allocation
// sites that grew most between a snapshot at the start and one at the end.
int CmdMemoryTop(const Options& o, double interval, size_t limit) {
  auto session = Open(o, "memory --top");
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct Restore {
    ~Restore() {
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
    }
  } restore;
  // The target ends the trace by itself should we vanish before the second snapshot.
  const double guard_s = interval + std::max(60.0, 2 * o.timeout);
  auto trace = OrFail(live::AllocationTrace::Start(*session, guard_s, limit));
  if (o.fmt() == OutputFormat::kTable)
    std::cerr << "probing: tracing the Python allocations of " << session->Describe() << " for "
              << SecondsText(interval) << " s"
              << (trace.was_tracing() ? " (with its own tracemalloc, left as it is)"
                                      : " (tracemalloc started for this, stopped after; "
                                        "allocation-heavy code runs slower meanwhile)")
              << "\n";
  const int64_t until = probing::MonotonicNs() + static_cast<int64_t>(interval * 1e9);
  while (g_stop_signal.load() == 0 && probing::MonotonicNs() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (g_stop_signal.load() != 0) {
    auto st = trace.Abandon();
    throw Failure(std::string("interrupted before the second snapshot; ") +
                  (st.ok() ? "tracing ended in the target" : "ending it failed: " + st.message()));
  }
  auto g = OrFail(trace.Finish());
  if (o.fmt() != OutputFormat::kTable) {
    std::vector<std::vector<Cell>> rows;
    for (const auto& s : g.sites)
      rows.push_back({s.file, s.line,
                      s.function.empty() ? Cell(std::monostate{}) : Cell(s.function), s.size_diff,
                      s.count_diff, s.size, s.count});
    Print(o, {"file", "line", "function", "size_diff", "count_diff", "size", "count"}, rows);
    return 0;
  }
  auto bytes = [](int64_t n) {
    char buf[32];
    const double v = static_cast<double>(n);
    if (std::abs(n) >= (1 << 20))
      snprintf(buf, sizeof buf, "%.1f MiB", v / (1 << 20));
    else if (std::abs(n) >= 1024)
      snprintf(buf, sizeof buf, "%.1f KiB", v / 1024);
    else
      snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(n));
    return std::string(buf);
  };
  std::cout << "Allocation sites that grew over " << SecondsText(std::round(g.seconds * 10) / 10)
            << " s in " << session->Describe() << ":\n";
  if (g.sites.empty()) {
    std::cout << "none: no Python allocation site holds more than it did at the start\n";
  } else {
    std::vector<std::vector<Cell>> rows;
    for (const auto& s : g.sites)
      rows.push_back({"+" + bytes(s.size_diff),
                      (s.count_diff >= 0 ? "+" : "") + std::to_string(s.count_diff), bytes(s.size),
                      s.count,
                      s.file + ":" + std::to_string(s.line) +
                          (s.function.empty() ? std::string() : " (" + s.function + ")")});
    probing::cli::PrintRows(OutputFormat::kTable,
                            {"size_diff", "count_diff", "size", "count", "site"}, rows, std::cout);
  }
  std::cout << g.sites_grown << " site" << (g.sites_grown == 1 ? "" : "s") << " grew, by "
            << bytes(g.grown_bytes) << " in all; tracemalloc traces " << bytes(g.traced_bytes)
            << " and uses " << bytes(g.overhead_bytes) << " itself\n";
  return 0;
}

int CmdRecord(const Options& o, live::RecordOptions ro) {
  if (ro.output.empty()) throw Usage("record needs -o/--output FILE.ptrace");
  std::unique_ptr<live::Session> session;
  if (!ro.command.empty()) {
    if (!o.target.empty()) throw Usage("record takes -t TARGET or a command after --, not both");
  } else {
    if (o.target.empty())
      throw Usage(
          "record needs -t TARGET, or a command: probing record -o run.ptrace -- python train.py");
    session = Open(o, "record");
    OrFail(session->Segments());  // where its rings are, for the check below
    OrFail(probing::CheckNotAnInput(ro.output, session->Inputs()));
  }
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;  // no SA_RESTART: a sleep ends at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  const bool tty = isatty(STDERR_FILENO) != 0;
  int64_t last_line = 0;
  auto on_progress = [&](const live::RecordProgress& p) {
    if (!tty || probing::MonotonicNs() - last_line < 500'000'000) return;
    last_line = probing::MonotonicNs();
    const std::string who = p.pid != 0 ? "process " + std::to_string(p.pid) : o.target;
    fprintf(stderr, "\rrecording %s: %.1f s, %llu segments, %s, %.0f events/s%s   ", who.c_str(),
            p.seconds, static_cast<unsigned long long>(p.progress.segments),
            Size(p.progress.bytes).c_str(),
            p.seconds > 0 ? static_cast<double>(p.progress.events) / p.seconds : 0.0,
            p.progress.lost ? (", " + std::to_string(p.progress.lost) + " lost").c_str() : "");
    fflush(stderr);
  };
  auto on_notice = [&](const std::string& m) {
    std::cerr << (tty ? "\r" : "") << "probing: " << m << "\n";
  };
  auto r = live::Record(session.get(), ro, g_stop_signal, on_progress, on_notice);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (tty && last_line != 0) fprintf(stderr, "\n");
  auto out = OrFail(std::move(r));
  const auto& p = out.progress;
  char line[512];
  snprintf(line, sizeof line,
           "probing: recorded %llu segments (%llu events, %s) from %s in %.1f s to %s; %s\n",
           static_cast<unsigned long long>(p.segments), static_cast<unsigned long long>(p.events),
           Size(p.bytes).c_str(), out.target.c_str(), out.seconds, ro.output.c_str(),
           out.ended.c_str());
  std::cerr << line;
  if (p.lost > 0)
    std::cerr << "probing: " << p.lost
              << " segment(s) were overwritten in the rings before they could be copied"
              << (p.corrupt ? " or failed their checksum" : "")
              << "; the recording says so where they were (probing-analyze --stats)\n";
  std::cerr << "probing: analyze it with: probing-analyze " << ro.output << "\n";
  if (out.child_status && !out.child_interrupted) {
    const int status = *out.child_status;
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
      std::cerr << "probing: " << ro.command[0] << " exited with code " << WEXITSTATUS(status)
                << "\n";
      return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
      std::cerr << "probing: " << ro.command[0] << " was killed by signal " << WTERMSIG(status)
                << "\n";
      return 128 + WTERMSIG(status);
    }
  }
  return 0;
}

// A flame graph of the stack samples a target holds (the latest `duration` seconds of them).
int CmdFlamegraph(const Options& o, std::string out, bool folded, double duration, long thread,
                  bool idle, bool lines) {
  auto session = Open(o, "flamegraph");
  auto* source = OrFail(session->Segments());
  if (!out.empty()) OrFail(probing::CheckNotAnInput(out, session->Inputs()));
  OrFail(source->Seal());
  auto set = OrFail(live::LoadStreams(*source, {probing::format::Stream::kStacks}));
  probing::analyzer::SampleFilter filter;
  if (thread > 0) filter.thread = static_cast<uint64_t>(thread);
  if (duration > 0) filter.since_ns = probing::RealtimeNs() - static_cast<int64_t>(duration * 1e9);
  filter.idle = idle;
  filter.lines = lines;
  auto stacks = probing::analyzer::FoldStacks(set.segments, filter);
  if (stacks.samples == 0)
    throw Failure("no stack samples with Python frames in " + session->Describe() +
                  WindowAndIdleNote(stacks, duration,
                                    thread > 0 ? " for thread " + std::to_string(thread) : ""));
  SayIdleLeftOut(stacks);
  if (folded && out.empty()) out = "-";
  if (out.empty())
    out = "flamegraph-" +
          (session->pid() ? std::to_string(*session->pid()) : std::string("target")) + ".svg";
  auto write = [&](std::ostream& stream) {
    if (folded) {
      probing::analyzer::WriteFolded(stacks, stream);
      return;
    }
    auto summary = probing::analyzer::Summarize(set.segments);
    probing::analyzer::FlameGraphOptions fo;
    fo.title =
        summary.processes.size() == 1 ? "Flame graph: " + summary.processes[0] : "Flame graph";
    fo.subtitle = std::to_string(stacks.samples) + " samples" +
                  (duration > 0 ? ", the last " + SecondsText(duration) + " s"
                                : std::string(", all the rings hold")) +
                  (thread > 0 ? ", thread " + std::to_string(thread) : std::string()) +
                  (stacks.idle > 0 ? ", idle threads left out" : std::string()) +
                  (lines ? ", by line" : std::string());
    probing::analyzer::WriteFlameGraphSvg(stacks, fo, stream);
  };
  if (out == "-") {
    write(std::cout);
    return 0;
  }
  OrFail(probing::CheckNotAnInput(out, session->Inputs()));
  auto file = OrFail(probing::OutputFile::Open(out));
  write(file->stream());
  OrFail(file->Commit());
  if (folded)
    std::cout << "Wrote " << stacks.stacks.size() << " folded stacks (" << stacks.samples
              << " samples) to " << out << "\n";
  else
    std::cout << "Wrote a flame graph of " << stacks.samples << " samples to " << out
              << " (open it in a browser: click to zoom, Ctrl-F to search)\n";
  return 0;
}

// A live view of where the target spends its time (cli/src/top.h), until Ctrl-C.
int CmdTop(const Options& o, probing::cli::TopOptions to) {
  auto session = Open(o, "top");
  to.clear = o.fmt() == OutputFormat::kTable && isatty(STDOUT_FILENO) != 0;
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  auto st = probing::cli::RunTop(*session, to, o.fmt(), g_stop_signal, std::cout, std::cerr);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  OrFail(st);
  return 0;
}

// The machine's RDMA ports: counters now and rates over `interval` seconds.
int CmdRdma(const Options& o, const std::string& root, double interval) {
  if (live::ParseHostPort(o.target))
    throw Usage("rdma reads this machine's " + root +
                "; run it on the target's host (with -t PID or without -t)");
  auto first = OrFail(live::ReadRdmaPorts(root));
  if (first.empty()) {
    std::cout << "no RDMA devices found (" << root << " has no ports)\n";
    return 0;
  }
  const int64_t t0 = probing::MonotonicNs();
  std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  auto second = OrFail(live::ReadRdmaPorts(root));
  const double secs = static_cast<double>(probing::MonotonicNs() - t0) / 1e9;
  auto opt = [](const std::optional<double>& v) { return v ? Cell(*v) : Cell(std::monostate{}); };
  auto counter = [](const live::RdmaPort& p, const char* name) {
    auto it = p.counters.find(name);
    return it == p.counters.end() ? Cell(std::monostate{}) : Cell(static_cast<int64_t>(it->second));
  };
  std::vector<std::vector<Cell>> rows;
  for (const auto& r : live::RdmaRates(first, second, secs)) {
    const auto& p = r.port;
    rows.push_back({p.device, static_cast<int64_t>(p.port), p.state, p.rate, p.link_layer,
                    static_cast<int64_t>(p.tx_bytes()), static_cast<int64_t>(p.rx_bytes()),
                    opt(r.tx_bytes_per_s), opt(r.rx_bytes_per_s), counter(p, "port_xmit_packets"),
                    counter(p, "port_rcv_packets"), opt(r.tx_packets_per_s),
                    opt(r.rx_packets_per_s), static_cast<int64_t>(r.errors)});
  }
  Print(o,
        {"device", "port", "state", "rate", "link_layer", "tx_bytes", "rx_bytes", "tx_bytes_per_s",
         "rx_bytes_per_s", "tx_packets", "rx_packets", "tx_packets_per_s", "rx_packets_per_s",
         "errors"},
        rows);
  return 0;
}

int CmdList(const Options& o, bool gc, bool gc_all) {
  const std::string dir = live::DefaultDataDir();
  if (gc_all && !gc) throw Usage("--all goes with --gc: probing list --gc --all");
  if (gc) {
    std::vector<std::string> problems;
    const live::Retention keep = live::RetentionFromEnvironment(&problems);
    for (const auto& p : problems) std::cerr << "probing: " << p << "\n";
    auto c = gc_all ? live::CollectDead(dir) : live::ApplyRetention(dir, keep, probing::RealtimeNs());
    for (const auto& f : c.failed) std::cerr << "probing: could not remove " << f << "\n";
    std::ostringstream bounds;
    if (!gc_all)
      bounds << " (kept: the newest, up to " << keep.days << " days old and " << keep.max_mb
             << " MB together; --all removes every dead process's data)";
    std::cerr << "probing: removed the data of " << c.dirs << " dead process(es), "
              << c.bytes / 1024 << " KiB" << bounds.str() << "\n";
  }
  std::vector<std::vector<Cell>> rows;
  for (const auto& r : live::ListRecorders(dir)) {
    std::string state = r.alive ? "running" : "dead (rings readable)";
    if (!r.has_metadata) state = r.alive ? "starting" : "dead (start interrupted)";
    auto opt = [](const std::optional<int64_t>& v) {
      return v ? Cell(*v) : Cell(std::monostate{});
    };
    rows.push_back({int64_t{r.pid}, r.ppid ? Cell(int64_t{*r.ppid}) : Cell(std::monostate{}),
                    r.role.empty() ? Cell(std::monostate{}) : Cell(r.role), opt(r.rank),
                    r.run_id.empty() ? Cell(std::monostate{}) : Cell(r.run_id), r.command,
                    r.python_version, state, r.socket, static_cast<int64_t>(r.bytes)});
  }
  Print(
      o,
      {"pid", "ppid", "role", "rank", "job", "command", "python", "state", "socket", "data_bytes"},
      rows);
  return 0;
}

int CmdInstall(const Options& o, const live::InstallOptions& io) {
  if (!o.target.empty())
    throw Usage("install takes no target: probing install --python PATH/TO/python");
  auto done = OrFail(live::InstallHook(io));
  if (io.remove) {
    if (done.changed)
      std::cout << "Removed the start-up hook of " << done.executable << " (" << done.pth << ")\n";
    else
      std::cout << "No start-up hook of probing in " << done.executable << " (" << done.pth
                << " does not exist)\n";
    return 0;
  }
  std::cout << "Installed the start-up hook for " << done.executable << " (Python "
            << done.version << "): " << done.pth << "\n  package: " << done.package_dir
            << "\n  recorder: " << done.recorder << "\nTry: PROBING=1 " << io.python
            << " your_script.py   (probing list shows it)\n";
  return 0;
}

// Set by SIGINT/SIGTERM while the dashboard serves.
std::atomic<bool> g_web_stop{false};
void OnWebStop(int) { g_web_stop.store(true); }

int CmdWeb(const Options& o, probing::web::ServerOptions wo) {
  if (!o.target.empty()) wo.targets.insert(wo.targets.begin(), o.target);
  if (wo.target_token.empty()) wo.target_token = o.token;
  auto server = OrFail(probing::web::Server::Create(wo));
  struct sigaction sa = {};
  sa.sa_handler = OnWebStop;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::cout << "probing web: serving " << server->url() << " (Ctrl-C stops)" << std::endl;
  OrFail(server->Run(g_web_stop));
  std::cerr << "probing web: stopped\n";
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{
      "probing: look inside a running Python/PyTorch process.\n"
      "Start one with the recorder: PROBING=1 python train.py (docs/recorder.md).\n"
      "A target is a pid, host:port (with --token), a ring directory a process left, or a\n"
      "recording; give it with -t, or first: probing 4242 backtrace."};
  app.set_version_flag("--version", "probing 0.1.0 (trace format v1)");
  app.require_subcommand(1);
  app.fallthrough();  // -t, --token, --format and --timeout may also come after the command
  Options o;
  app.add_option("-t,--target", o.target,
                 "the target: a pid, host:port, a ring directory, or a .ptrace recording")
      ->envname("PROBING_TARGET");
  app.add_option("--token", o.token,
                 "token for a host:port target (none: a recorder of yours on this host that "
                 "made its own lends it)")
      ->envname("PROBING_AUTH_TOKEN");
  app.add_option("--format", o.format, "how rows are printed: table, csv, json, jsonl")
      ->check(CLI::IsMember({"table", "csv", "json", "jsonl"}));
  app.add_option("--timeout", o.timeout,
                 "seconds to wait for the target's answer (default 30; eval adds its own)")
      ->check(CLI::Range(0.01, 86400.0));
  std::string target_first;
  app.add_option("target", target_first, "the target, as -t gives it (probing 4242 info)");

  auto* inject = app.add_subcommand(
      "inject", "load the recorder into a running Python process (ptrace; docs/inject.md)");
  double inject_timeout = 5;
  std::string inject_library;
  std::vector<std::string> inject_settings;
  inject
      ->add_option("--timeout", inject_timeout,
                   "seconds to look for a safe point to stop a thread at (default 5)")
      ->check(CLI::Range(0.01, 600.0));
  inject->add_option("--library", inject_library,
                     "this recorder build instead of the one matching the target's Python");
  inject->add_option("--set", inject_settings,
                     "KEY=VALUE: a setting applied once the recorder answers (repeatable)");

  auto* tables = app.add_subcommand(
      "tables", "list every SQL table and its columns (with a target: its own too)");
  auto* info = app.add_subcommand("info", "what the recorder in the target says about itself");
  auto* bt = app.add_subcommand("backtrace", "every thread's Python stack, innermost first");
  protocol::BacktraceRequest bt_request;
  bt->add_option("--thread", bt_request.thread, "only this thread (OS thread id)");
  bt->add_flag("--locals", bt_request.locals,
               "show each frame's local variables (needs the GIL within 5 s)");
  bt->add_flag("--native", bt_request.native,
               "native (C/C++) frames too, with the Python frames in place of the interpreter's");
  auto* ev = app.add_subcommand("eval", "run Python code in the target's __main__ namespace");
  std::string code;
  double eval_timeout = 30;
  ev->add_option("code", code, "the code; the value of a final expression is printed")->required();
  ev->add_option("--timeout", eval_timeout, "seconds before the code is interrupted (default 30)")
      ->check(CLI::Range(0.001, 3600.0));
  auto* repl = app.add_subcommand(
      "repl",
      "an interactive Python prompt running in the target's __main__ (Tab completes there)");
  probing::cli::ReplOptions repl_options;
  {
    const char* h = std::getenv("PROBING_HISTORY");
    const char* home = std::getenv("HOME");
    repl_options.history = h != nullptr      ? h
                           : home != nullptr ? std::string(home) + "/.probing_history"
                                             : "";
  }
  repl->add_option("--history", repl_options.history,
                   "history file (default $PROBING_HISTORY or ~/.probing_history; '' keeps none)");
  repl->add_option("--timeout", repl_options.timeout,
                   "seconds each statement may run in the target before it is interrupted")
      ->check(CLI::Range(0.001, 86400.0));
  auto* cfg = app.add_subcommand("config", "show all settings, one (KEY), or set one (KEY=VALUE)");
  std::string cfg_arg;
  cfg->add_option("setting", cfg_arg, "KEY or KEY=VALUE");
  auto* query = app.add_subcommand(
      "query", "SQL over the target's rings (or recording) and live tables (probing tables)");
  std::string sql;
  query->add_option("sql", sql, "one SQL statement (SQLite; now() and interval '5 minutes' work)")
      ->required();
  auto* mem = app.add_subcommand(
      "memory",
      "memory now, and its trend, from the target's rings; --top: where Python memory grows");
  int last = 60;
  mem->add_option("--last", last, "how many of the latest samples (one a second)")
      ->check(CLI::Range(1, 100000));
  bool mem_top = false;
  double mem_interval = 5;
  size_t mem_limit = 10;
  mem->add_flag("--top", mem_top,
                "where Python memory grows: start tracemalloc in the target (unless it runs "
                "already), compare a snapshot now with one --interval seconds later, list the "
                "allocation sites that grew most, then stop it (docs/memory.md)");
  mem->add_option("--interval", mem_interval,
                  "with --top: seconds between the two snapshots (default 5)")
      ->check(CLI::Range(0.1, 3600.0));
  mem->add_option("--limit", mem_limit, "with --top: rows (default 10)")
      ->check(CLI::Range(1, 100000));
  auto* list =
      app.add_subcommand("list", "processes with the recorder on (from the data directory)");
  bool gc = false, gc_all = false;
  list->add_flag("--gc", gc,
                 "remove dead processes' data beyond the retention bounds (older than "
                 "PROBING_RETENTION_DAYS, default 7; beyond PROBING_RETENTION_MAX_MB together, "
                 "default 1024, oldest first), and say how much");
  list->add_flag("--all", gc_all, "with --gc: remove the data of every dead process");

  auto* record = app.add_subcommand(
      "record",
      "save what the target records to a .ptrace file: -t TARGET, or -- COMMAND... "
      "(docs/record.md)");
  live::RecordOptions ro;
  record->add_option("-o,--output", ro.output, "the recording to write (replaced)")->required();
  record
      ->add_option("--duration", ro.duration,
                   "seconds to record (default: until Ctrl-C or the target ends)")
      ->check(CLI::Range(0.0, 1e9));
  record->add_option("--interval", ro.interval, "seconds between copies from the rings")
      ->check(CLI::Range(0.01, 10.0));
  record
      ->add_option("--level", ro.level,
                   "zstd compression level of the recording, 1 (fastest) to 19 (smallest)")
      ->check(CLI::Range(1, 19));
  record->add_option("command", ro.command,
                     "after --: a command to start with PROBING=1 and record (it is interrupted "
                     "when the recording ends first)");
  record->positionals_at_end();

  auto* flame = app.add_subcommand(
      "flamegraph", "a flame graph (interactive SVG) of the stack samples in the target's rings");
  std::string flame_out;
  bool flame_folded = false;
  double flame_duration = 60;
  long flame_thread = 0;
  bool flame_idle = false, flame_lines = false;
  flame->add_option("-o,--output", flame_out,
                    "the file to write, for either format ('-': standard output; default "
                    "flamegraph-PID.svg, with --folded standard output)");
  flame->add_flag("--folded", flame_folded,
                  "folded stacks (flamegraph.pl's input) instead of an SVG");
  flame
      ->add_option("--duration", flame_duration,
                   "only the latest S seconds of samples (default 60; 0: all the rings hold, "
                   "start-up included)")
      ->check(CLI::Range(0.0, 1e9));
  flame->add_option("--thread", flame_thread, "only this thread (OS thread id)");
  flame->add_flag("--idle", flame_idle,
                  "keep idle threads' samples (not holding the GIL, a known waiting call such as "
                  "threading's wait or selectors' select innermost: docs/record.md); by default "
                  "they are left out and counted");
  flame->add_flag("--lines", flame_lines,
                  "a frame per line executed (func (file:line)) rather than per function");

  auto* top = app.add_subcommand(
      "top",
      "where the target spends its time now, refreshed in place: functions by own and total "
      "share of the last few seconds' stack samples, PyTorch modules per step when traced "
      "(docs/record.md#probing-top)");
  probing::cli::TopOptions top_options;
  top->add_option("--interval", top_options.interval, "seconds between views (default 1)")
      ->check(CLI::Range(0.05, 3600.0));
  top->add_option("--window", top_options.window,
                  "seconds of samples each view covers, up to now (default 5)")
      ->check(CLI::Range(0.1, 86400.0));
  top->add_flag("--once", top_options.once,
                "print one view and exit (for scripts; without a terminal, views otherwise "
                "follow one another until Ctrl-C)");
  top->add_flag("--idle", top_options.idle,
                "keep idle threads' samples (not holding the GIL, in a known waiting call); by "
                "default they are left out and counted");
  top->add_option("--limit", top_options.limit, "rows of functions and of modules (default 20)")
      ->check(CLI::Range(1, 100000));

  auto* cluster = app.add_subcommand(
      "cluster",
      "every rank of a distributed job, from any one of them (docs/distributed.md); SQL over "
      "all ranks: probing -t PID query \"... FROM cluster.stacks ...\"");
  cluster->require_subcommand(1);
  auto* c_attach = cluster->add_subcommand(
      "attach",
      "inject the recorder into every rank of a job on this host that lacks one, then list them");
  double c_attach_timeout = 5;
  c_attach
      ->add_option("--wait", c_attach_timeout,
                   "seconds to find a safe point in each rank (default 5)")
      ->check(CLI::Range(0.01, 600.0));
  auto* c_list = cluster->add_subcommand(
      "list", "every rank: local rank, host, pid, address, state, step, clock offset");
  auto* c_bt = cluster->add_subcommand(
      "backtrace",
      "every rank's stacks, ranks with the same stack grouped, the odd ones out first");
  auto* c_record = cluster->add_subcommand(
      "record", "one recording per rank in a directory, with a manifest (probing-analyze DIR)");
  std::string c_record_dir;
  double c_record_duration = 0;
  c_record->add_option("-o,--output", c_record_dir, "the directory to write into")->required();
  c_record
      ->add_option("--duration", c_record_duration,
                   "seconds to record (default: until Ctrl-C or the ranks end)")
      ->check(CLI::Range(0.0, 1e9));
  auto* c_flame = cluster->add_subcommand(
      "flamegraph", "one flame graph of every rank's samples, each rank its own root");
  std::string c_flame_out;
  bool c_flame_folded = false;
  double c_flame_duration = 60;
  int64_t c_flame_rank = -1;
  bool c_flame_idle = false, c_flame_lines = false;
  c_flame->add_option("-o,--output", c_flame_out, "the file to write (default flamegraph-RUN.svg)");
  c_flame->add_flag("--folded", c_flame_folded, "folded stacks instead of an SVG");
  c_flame
      ->add_option("--duration", c_flame_duration,
                   "only the latest S seconds of samples (default 60; 0: all the rings hold, "
                   "start-up included)")
      ->check(CLI::Range(0.0, 1e9));
  c_flame->add_flag("--idle", c_flame_idle,
                    "keep idle threads' samples (by default they are left out and counted, as "
                    "in probing flamegraph)");
  c_flame->add_flag("--lines", c_flame_lines,
                    "a frame per line executed (func (file:line)) rather than per function");
  c_flame->add_option("--rank", c_flame_rank, "only this rank");

  auto* c_strag = cluster->add_subcommand(
      "stragglers",
      "the rank that arrives last at the collectives, how late, and where it was meanwhile "
      "(not the rank whose collective takes longest: that one waits for it)");
  int64_t c_strag_steps = 20;
  c_strag->add_option("--steps", c_strag_steps, "compare the last N whole steps (default 20)")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  cluster->add_subcommand(
      "hang",
      "why the job is stuck: the rank that never reached the collective the others wait in "
      "(with its frame), a mismatch, a dead or stopped rank, or all stuck in one place");
  auto* rdma = app.add_subcommand(
      "rdma", "RDMA ports of this machine: state, rate, traffic counters and rates (sysfs)");
  std::string rdma_root = "/sys/class/infiniband";
  double rdma_interval = 1.0;
  rdma->add_option("--sysfs", rdma_root, "where the devices are (default /sys/class/infiniband)");
  rdma->add_option("--interval", rdma_interval, "seconds between the two readings for rates")
      ->check(CLI::Range(0.05, 3600.0));

  auto* install = app.add_subcommand(
      "install",
      "install the PROBING=1 start-up hook for a Python interpreter, venv or conda environment "
      "(docs/recorder.md)");
  live::InstallOptions install_options;
  install->add_option("--python", install_options.python,
                      "the interpreter: a path, or a name in PATH (default python3; for a venv: "
                      "its bin/python)");
  install->add_flag("--user", install_options.user,
                    "into the interpreter's user site-packages (~/.local) rather than its own");
  install->add_flag("--remove", install_options.remove, "take the hook out again");

  auto* web = app.add_subcommand(
      "web",
      "a dashboard in the browser: processes, recordings, stacks, flame graphs, step times, "
      "memory, SQL (docs/web.md)");
  probing::web::ServerOptions web_options;
  web->add_option("--port", web_options.port, "port to listen on (default 8686; 0: any free one)")
      ->check(CLI::Range(0, 65535));
  web->add_option("--host", web_options.host,
                  "address to listen on (default 127.0.0.1; any other needs --token)");
  web->add_option("--token", web_options.token,
                  "a token every request must carry (needed beyond 127.0.0.1); the address "
                  "printed carries it")
      ->envname("PROBING_WEB_TOKEN");
  web->add_option("--target-token", web_options.target_token,
                  "token for host:port targets (default: probing's --token, PROBING_AUTH_TOKEN)");
  web->add_option("--timeout", web_options.timeout_s,
                  "seconds to wait for a target's answer (default 5)")
      ->check(CLI::Range(0.01, 3600.0));
  web->add_option("--query-timeout", web_options.query_timeout_s,
                  "seconds an SQL statement from the console may run (default 10)")
      ->check(CLI::Range(0.01, 3600.0));
  web->add_option("targets", web_options.targets,
                  "pids, recordings (.ptrace), ring directories or host:port to show besides "
                  "this machine's recorders (one given: / opens it)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    if (!target_first.empty()) {
      if (!o.target.empty() && o.target != target_first)
        throw Usage("two targets: '" + target_first + "' and -t " + o.target);
      o.target = target_first;
    }
    if (*inject) return CmdInject(o, inject_timeout, inject_library, inject_settings);
    if (*tables) return CmdTables(o);
    if (*info) return CmdInfo(o);
    if (*bt) return CmdBacktrace(o, bt_request);
    if (*ev) return CmdEval(o, code, eval_timeout);
    if (*repl) {
      auto session = Open(o, "repl");
      return probing::cli::RunRepl(*session, repl_options);
    }
    if (*cfg) return CmdConfig(o, cfg_arg);
    if (*list) return CmdList(o, gc, gc_all);
    if (*mem) {
      if (!mem_top && (mem->count("--interval") > 0 || mem->count("--limit") > 0))
        throw Usage("memory: --interval and --limit go with --top");
      return mem_top ? CmdMemoryTop(o, mem_interval, mem_limit) : CmdMemory(o, last);
    }
    if (*query) return CmdQuery(o, sql);
    if (*rdma) return CmdRdma(o, rdma_root, rdma_interval);
    if (*record) return CmdRecord(o, ro);
    if (*flame)
      return CmdFlamegraph(o, flame_out, flame_folded, flame_duration, flame_thread, flame_idle,
                           flame_lines);
    if (*top) return CmdTop(o, top_options);
    if (*c_attach) return CmdClusterAttach(o, c_attach_timeout);
    if (*c_list) return CmdClusterList(o);
    if (*c_bt) return CmdClusterBacktrace(o);
    if (*c_record) return CmdClusterRecord(o, c_record_dir, c_record_duration);
    if (*c_strag) return CmdClusterStragglers(o, c_strag_steps);
    if (*cluster->get_subcommand("hang")) return CmdClusterHang(o);
    if (*c_flame)
      return CmdClusterFlamegraph(o, c_flame_out, c_flame_folded, c_flame_duration, c_flame_rank,
                                  c_flame_idle, c_flame_lines);
    if (*web) return CmdWeb(o, web_options);
    if (*install) return CmdInstall(o, install_options);
  } catch (const Usage& e) {
    std::cerr << "probing: " << e.what() << "\n";
    return 2;
  }
  return 2;
}

}  // namespace

// Exceptions stop here, once: a one-line message and exit code 1.
int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "probing: " << e.what() << "\n";
    return 1;
  }
}
