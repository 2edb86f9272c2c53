// `probing`: the command line for a running (or dead) Python process with the recorder on.
// Argument parsing and printing only; the work is in the libraries. Exit codes: 0 success,
// 1 a failed operation, 2 bad usage.
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>
#include <type_traits>

#include "printer.h"
#include "repl.h"
#include "probing/analyzer/export.h"
#include "probing/analyzer/trace_set.h"
#include "probing/format/tables.h"
#include "probing/injector/injector.h"
#include "probing/live/control_client.h"
#include "probing/live/query.h"
#include "probing/live/rdma.h"
#include "probing/live/recording.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using probing::cli::Cell;
using probing::cli::OutputFormat;

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

static_assert(std::is_same_v<Cell, probing::analyzer::SqlValue>);
Cell ToCell(const json& v) { return probing::live::JsonToValue(v); }

struct Options {
  std::string target;
  std::string token;
  std::string format = "table";
  OutputFormat fmt() const { return *probing::cli::ParseOutputFormat(format); }
};

probing::live::ControlClient Client(const Options& o) {
  if (o.target.empty()) throw Usage("this command needs -t/--target: a pid, or host:port");
  return probing::live::ControlClient(OrFail(probing::live::ParseTarget(o.target)), o.token);
}

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
    auto client = Client(o);
    json listed = OrFail(client.Get("/tables"));  // kept alive for the loop below
    for (const auto& name : listed["tables"]) {
      auto r = client.Get("/tables/" + name.get<std::string>());
      if (!r.ok()) {  // one broken table does not hide the others
        std::cerr << "probing: " << r.status().message() << "\n";
        continue;
      }
      json t = std::move(r).value();
      for (const auto& c : t["columns"])
        rows.push_back({"python." + name.get<std::string>(), c["name"].get<std::string>(),
                        c["type"].get<std::string>(), std::string("live process"),
                        std::string("registered with @probing.table")});
    }
  }
  probing::cli::PrintRows(o.fmt(), {"table", "column", "type", "source", "description"}, rows,
                          std::cout);
  return 0;
}

int CmdInfo(const Options& o) {
  json info = OrFail(Client(o).Get("/info"));
  std::vector<std::vector<Cell>> rows;
  for (auto& [k, v] : info.items()) rows.push_back({k, v.is_object() ? Cell(v.dump()) : ToCell(v)});
  probing::cli::PrintRows(o.fmt(), {"key", "value"}, rows, std::cout);
  return 0;
}

int CmdBacktrace(const Options& o, long thread, bool locals, bool native) {
  std::string path = "/backtrace?x=1";
  if (thread > 0) path += "&thread=" + std::to_string(thread);
  if (locals) path += "&locals=1";
  if (native) path += "&native=1";
  json bt = OrFail(Client(o).Get(path));
  if (o.fmt() != OutputFormat::kTable) {
    std::vector<std::vector<Cell>> rows;
    for (const auto& t : bt["threads"])
      for (const auto& f : t["frames"])
        rows.push_back({ToCell(t["thread_id"]), ToCell(t["thread_name"]), ToCell(f["depth"]),
                        ToCell(f["func"]), ToCell(f["file"]), ToCell(f["lineno"]),
                        ToCell(f["frame_type"]), ToCell(t["holds_gil"]),
                        f.contains("locals") ? Cell(f["locals"].dump()) : Cell(std::monostate{})});
    probing::cli::PrintRows(o.fmt(),
                            {"thread_id", "thread_name", "depth", "func", "file", "lineno",
                             "frame_type", "holds_gil", "locals"},
                            rows, std::cout);
    return 0;
  }
  for (const auto& t : bt["threads"]) {
    std::cout << "Thread " << t["thread_id"] << " " << t["thread_name"].get<std::string>()
              << (t["holds_gil"].get<bool>() ? "  (holds the GIL)" : "")
              << (t["truncated"].get<bool>() ? "  (stack cut short: its outermost frames are left out)"
                                             : "")
              << (t.value("inconsistent", false)
                      ? "  (inconsistent: the stack kept changing while read; shown as last read)"
                      : "")
              << "\n";
    if (t.contains("native_error"))
      std::cout << "  (native frames: " << t["native_error"].get<std::string>() << ")\n";
    for (const auto& f : t["frames"]) {
      std::cout << "  #" << f["depth"] << "  " << f["func"].get<std::string>();
      if (f["frame_type"] == "Native")  // native: the module's file name, no line
        std::cout << "  ["
                  << std::filesystem::path(f["file"].get<std::string>()).filename().string()
                  << "]\n";
      else
        std::cout << " (" << f["file"].get<std::string>() << ":" << f["lineno"] << ")\n";
      if (f.contains("locals"))
        for (auto& [k, v] : f["locals"].items())
          std::cout << "        " << k << " = " << (v.is_string() ? v.get<std::string>() : v.dump())
                    << "\n";
    }
    std::cout << "\n";
  }
  if (bt.contains("locals_error"))
    std::cerr << "probing: locals: " << bt["locals_error"].get<std::string>() << "\n";
  return 0;
}

int CmdEval(const Options& o, const std::string& code, double timeout) {
  json r = OrFail(Client(o).Post("/eval", {{"code", code}, {"timeout", timeout}}));
  std::cout << r["stdout"].get<std::string>();
  std::cerr << r["stderr"].get<std::string>();
  if (!r["value"].is_null()) std::cout << r["value"].get<std::string>() << "\n";
  if (!r["exception"].is_null()) {
    std::cerr << r["exception"]["traceback"].get<std::string>();
    return 1;
  }
  return 0;
}

// Where recorder builds are: $PROBING_RECORDER_DIR when set, else beside this program (build
// tree: build/lib; installed: lib/probing).
std::vector<std::string> RecorderDirs() {
  const char* only = std::getenv("PROBING_RECORDER_DIR");
  if (only != nullptr && *only != '\0') return {only};
  std::vector<std::string> dirs;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    dirs.push_back((exe.parent_path().parent_path() / "lib").string());
    dirs.push_back((exe.parent_path().parent_path() / "lib" / "probing").string());
  }
  return dirs;
}

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

int CmdInject(const Options& o, double timeout, const std::string& library,
              const std::vector<std::string>& settings) {
  const auto began = std::chrono::steady_clock::now();
  if (o.target.empty()) throw Usage("inject needs -t/--target: the pid of a Python process");
  auto target = OrFail(probing::live::ParseTarget(o.target));
  if (target.tcp()) throw Usage("inject works on a local pid, not host:port");
  for (const auto& kv : settings)
    if (kv.find('=') == std::string::npos || kv.front() == '=')
      throw Usage("--set takes KEY=VALUE, got '" + kv + "'");
  probing::injector::Options io;
  io.pid = target.pid;
  io.recorder_dirs = RecorderDirs();
  io.library = library;
  io.safe_point_timeout_ms = static_cast<int64_t>(timeout * 1000);
  io.on_slow = [](const std::string& m) { std::cerr << "probing: " << m << "\n"; };
  auto outcome = OrFail(probing::injector::Inject(io));
  if (outcome.already_running) {
    std::cerr << "probing: the recorder is already running in process " << target.pid
              << "; nothing was changed\n";
  }
  // The recorder answers once its control server is up; its rings fill from then on.
  probing::live::ControlClient client(target, o.token, 5);
  json info;
  for (;;) {
    auto r = client.Get("/info");
    if (r.ok()) {
      info = std::move(r).value();
      break;
    }
    if (std::chrono::steady_clock::now() - began > std::chrono::seconds(10))
      throw Failure("the recorder was loaded into process " + std::to_string(target.pid) +
                    " but does not answer (" + r.status().message() +
                    "); the target's standard error says why");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const double answered_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - began).count();
  for (const auto& kv : settings) {
    size_t eq = kv.find('=');
    OrFail(client.Post("/config", {{"key", kv.substr(0, eq)}, {"value", kv.substr(eq + 1)}}));
  }
  if (o.fmt() != OutputFormat::kTable) {
    std::vector<std::vector<Cell>> rows{
        {int64_t{target.pid}, outcome.already_running, outcome.python, outcome.library,
         int64_t{outcome.thread}, Ms(outcome.stopped_ns), Ms(outcome.check_ns),
         Ms(outcome.dlopen_ns), Ms(outcome.start_ns), int64_t{outcome.attempts},
         Ms(outcome.checks_ns), answered_ms}};
    probing::cli::PrintRows(o.fmt(),
                            {"pid", "already_running", "python", "library", "thread",
                             "stopped_ms", "check_ms", "dlopen_ms", "start_ms", "attempts",
                             "checks_ms", "answered_ms"},
                            rows, std::cout);
    return 0;
  }
  if (outcome.already_running) return 0;
  char line[256];
  std::cout << "Successfully injected probes into process " << target.pid << "\n";
  std::cout << "  python     " << outcome.python << " (" << outcome.library << ")\n";
  snprintf(line, sizeof line, "  thread     %d stopped %.2f ms to load it (%d stop%s to find a safe point)\n",
           outcome.thread, Ms(outcome.stopped_ns), outcome.attempts,
           outcome.attempts == 1 ? "" : "s");
  std::cout << line;
  snprintf(line, sizeof line, "             (safe-point check %.2f ms, dlopen %.2f ms, start %.2f ms)\n",
           Ms(outcome.check_ns), Ms(outcome.dlopen_ns), Ms(outcome.start_ns));
  std::cout << line;
  snprintf(line, sizeof line, "  answering  on %s after %.1f ms\n",
           info.value("socket", std::string("its socket")).c_str(), answered_ms);
  std::cout << line;
  return 0;
}

int CmdConfig(const Options& o, const std::string& arg) {
  auto client = Client(o);
  json r;
  size_t eq = arg.find('=');
  if (eq != std::string::npos) {
    r = OrFail(client.Post("/config", {{"key", arg.substr(0, eq)}, {"value", arg.substr(eq + 1)}}));
  } else {
    r = OrFail(client.Get(arg.empty() ? "/config" : "/config?key=" + arg));
  }
  std::vector<std::vector<Cell>> rows;
  for (const auto& s : r["settings"])
    rows.push_back(
        {ToCell(s["name"]), ToCell(s["value"]), ToCell(s["default"]), ToCell(s["description"])});
  probing::cli::PrintRows(o.fmt(), {"name", "value", "default", "description"}, rows, std::cout);
  return 0;
}

// The target's ring directory: where this user's recorders write, else where the target says.
std::string RingDir(const Options& o) {
  auto target = OrFail(probing::live::ParseTarget(o.target));
  if (!target.tcp()) {
    std::string dir = probing::live::DefaultDataDir() + "/" + std::to_string(target.pid);
    if (fs::exists(dir + "/process.json")) return dir;
  }
  if (target.tcp()) throw Failure("memory reads the rings on the target's machine; run it there");
  return OrFail(Client(o).Get("/info"))["data_dir"].get<std::string>();
}

std::string Mb(const json& v) {
  if (v.is_null()) return "NULL";
  char buf[32];
  if (snprintf(buf, sizeof buf, "%.1f", v.get<double>() / (1024 * 1024)) < 0) return "?";
  return buf;
}

int CmdMemory(const Options& o, int last) {
  std::string dir = RingDir(o);
  auto set = OrFail(probing::analyzer::LoadTraces({dir + "/memory.ring"}));
  std::vector<std::vector<Cell>> rows;
  probing::format::RowContext ctx;
  std::vector<std::string> cols;
  for (const auto& c : probing::format::GetTable(probing::format::TableId::kMemory).columns)
    cols.emplace_back(c.name);
  for (const auto& seg : set.segments) {
    probing::format::SegmentRows(seg, probing::format::TableId::kMemory, ctx,
                                 [&](std::span<const probing::format::Value> r) {
                                   std::vector<Cell> row;
                                   for (const auto& v : r) {
                                     if (auto* i = std::get_if<int64_t>(&v))
                                       row.emplace_back(*i);
                                     else if (auto* d = std::get_if<double>(&v))
                                       row.emplace_back(*d);
                                     else
                                       row.emplace_back(std::monostate{});
                                   }
                                   rows.push_back(std::move(row));
                                 });
  }
  if (rows.empty()) throw Failure("no memory samples in " + dir + " yet (one a second)");
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return std::get<double>(a[0]) < std::get<double>(b[0]);
  });
  if (static_cast<int>(rows.size()) > last) rows.erase(rows.begin(), rows.end() - last);
  if (o.fmt() != OutputFormat::kTable) {
    probing::cli::PrintRows(o.fmt(), cols, rows, std::cout);
    return 0;
  }
  // Now, then the trend: RSS and Python blocks over the samples shown.
  auto num = [](const Cell& c) -> json {
    if (auto* i = std::get_if<int64_t>(&c)) return *i;
    if (auto* d = std::get_if<double>(&c)) return *d;
    return nullptr;
  };
  const auto& now = rows.back();
  const auto& first = rows.front();
  double span = std::get<double>(now[0]) - std::get<double>(first[0]);
  std::cout << "RSS " << Mb(num(now[1])) << " MB, VMS " << Mb(num(now[2])) << " MB, threads "
            << num(now[8]).dump() << ", Python blocks " << num(now[3]).dump() << ", GC counts "
            << num(now[4]).dump() << "/" << num(now[5]).dump() << "/" << num(now[6]).dump()
            << (num(now[9]).is_null() ? std::string(", CUDA not in use")
                                      : ", CUDA allocated " + Mb(num(now[9])) + " MB, reserved " +
                                            Mb(num(now[10])) + " MB")
            << "\n";
  if (rows.size() > 1) {
    double drss = (num(now[1]).get<double>() - num(first[1]).get<double>()) / (1024 * 1024);
    std::cout << "Over the last " << static_cast<int>(span) << " s (" << rows.size()
              << " samples): RSS " << (drss >= 0 ? "+" : "") << drss << " MB";
    if (!num(now[3]).is_null() && !num(first[3]).is_null())
      std::cout << ", Python blocks "
                << (num(now[3]).get<int64_t>() - num(first[3]).get<int64_t>() >= 0 ? "+" : "")
                << num(now[3]).get<int64_t>() - num(first[3]).get<int64_t>();
    std::cout << "\n";
  }
  return 0;
}

int CmdQuery(const Options& o, const std::string& sql) {
  auto client = Client(o);
  auto target = OrFail(probing::live::ParseTarget(o.target));
  std::string dir =
      target.tcp() ? "" : probing::live::DefaultDataDir() + "/" + std::to_string(target.pid);
  if (!target.tcp() && !fs::exists(dir + "/process.json")) {
    // Not under this user's data directory: ask the target where its rings are.
    dir = OrFail(client.Get("/info"))["data_dir"].get<std::string>();
  }
  auto r = OrFail(probing::live::LiveQuery(client, dir, sql));
  probing::cli::PrintRows(o.fmt(), r.columns, r.rows, std::cout);
  return 0;
}

// Set by SIGINT/SIGTERM while recording: finish the file cleanly instead of dying.
volatile sig_atomic_t g_stop_signal = 0;
void OnStopSignal(int sig) { g_stop_signal = sig; }

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Starts `command` with the recorder on (PROBING=1). From a build tree, the probing package is
// found through its user site (build/pyuser), unless PYTHONUSERBASE says otherwise.
pid_t Launch(const std::vector<std::string>& command) {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  fs::path pyuser = exe.parent_path().parent_path() / "pyuser";
  pid_t child = fork();
  if (child < 0) throw Failure(std::string("cannot start ") + command[0] + ": " + strerror(errno));
  if (child == 0) {
    const char* probing = getenv("PROBING");  // NOLINT(concurrency-mt-unsafe): one thread here
    if (probing == nullptr || std::string(probing).empty() || std::string(probing) == "0")
      setenv("PROBING", "1", 1);
    if (getenv("PYTHONUSERBASE") == nullptr && !ec && fs::exists(pyuser, ec))
      setenv("PYTHONUSERBASE", pyuser.c_str(), 1);
    std::vector<char*> argv;
    for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    std::cerr << "probing: cannot run " << command[0] << ": " << strerror(errno) << "\n";
    _exit(127);
  }
  return child;
}

std::string Size(uint64_t bytes) {
  char buf[32];
  if (bytes >= (10u << 20))
    snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  else
    snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024);
  return buf;
}

int CmdRecord(const Options& o, const std::string& out, double duration, double interval,
              int level, const std::vector<std::string>& command) {
  if (out.empty()) throw Usage("record needs -o/--output FILE.ptrace");
  pid_t pid = 0, child = 0;
  std::string dir;
  const auto began = std::chrono::steady_clock::now();
  if (!command.empty()) {
    if (!o.target.empty()) throw Usage("record takes -t PID or a command after --, not both");
    child = pid = Launch(command);
    dir = probing::live::DefaultDataDir() + "/" + std::to_string(pid);
    // The recorder creates its rings as the interpreter starts; wait for them.
    for (;;) {
      if (fs::exists(dir + "/process.json")) break;
      int status = 0;
      if (waitpid(child, &status, WNOHANG) == child)
        throw Failure(command[0] + " exited (" +
                      (WIFEXITED(status) ? "code " + std::to_string(WEXITSTATUS(status))
                                         : "signal " + std::to_string(WTERMSIG(status))) +
                      ") before its recorder started: is it a Python program, with the probing "
                      "package importable?");
      if (Since(began) > 30) {
        kill(child, SIGTERM);
        waitpid(child, nullptr, 0);
        throw Failure("no recorder started in " + command[0] + " within 30 s (looked for " + dir +
                      "): is it a Python program, with the probing package importable?");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  } else {
    if (o.target.empty())
      throw Usage("record needs -t PID, or a command: probing record -o run.ptrace -- python train.py");
    auto target = OrFail(probing::live::ParseTarget(o.target));
    if (target.tcp()) throw Usage("record reads the rings on the target's machine; run it there");
    pid = target.pid;
    dir = RingDir(o);
  }
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;  // no SA_RESTART: the sleep below ends at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // A command started for this recording does not outlive a recording that failed.
  struct ChildGuard {
    pid_t pid;
    bool armed = true;
    ~ChildGuard() {
      if (armed && pid != 0 && kill(pid, SIGTERM) == 0) waitpid(pid, nullptr, 0);
    }
  } guard{child};
  auto rec = OrFail(probing::live::Recording::Create(dir, out, level));
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto started = std::chrono::steady_clock::now();
  auto last_line = started;
  int child_status = -1;
  bool interrupted_child = false;
  std::string ended = "the duration was reached";
  auto alive = [&] {
    if (child != 0) {
      if (child_status >= 0) return false;
      int status = 0;
      if (waitpid(child, &status, WNOHANG) == child) {
        child_status = status;
        guard.armed = false;  // reaped: its pid is no longer ours to signal
        return false;
      }
      return true;
    }
    if (kill(pid, 0) != 0 && errno != EPERM) return false;
    // A zombie has ended too: its parent has just not reaped it yet.
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    size_t paren = text.rfind(')');
    return paren == std::string::npos || paren + 2 >= text.size() || text[paren + 2] != 'Z';
  };
  for (;;) {
    OrFail(rec.Poll());
    if (tty && Since(last_line) >= 0.5) {
      last_line = std::chrono::steady_clock::now();
      const double t = Since(started);
      const auto& p = rec.progress();
      fprintf(stderr, "\rrecording process %d: %.1f s, %llu segments, %s, %.0f events/s%s   ",
              pid, t, static_cast<unsigned long long>(p.segments), Size(p.bytes).c_str(),
              t > 0 ? static_cast<double>(p.events) / t : 0.0,
              p.lost ? (", " + std::to_string(p.lost) + " lost").c_str() : "");
      fflush(stderr);
    }
    if (!alive()) {
      ended = "process " + std::to_string(pid) + " ended";
      break;
    }
    if (g_stop_signal != 0) {
      ended = g_stop_signal == SIGINT ? "interrupted" : "stopped (SIGTERM)";
      break;
    }
    if (duration > 0 && Since(started) >= duration) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  }
  if (child != 0 && child_status < 0) {
    // The command was started for this recording: it ends with it. A Ctrl-C from the terminal
    // reached it already; otherwise it gets one SIGINT, then SIGKILL after 10 s. Its recorder
    // writes its last segments as it exits, and the polls below copy them.
    const auto stop_at = std::chrono::steady_clock::now();
    bool sent = false;
    while (alive()) {
      const double waited = Since(stop_at);
      if (!sent && (g_stop_signal == 0 || waited > 2)) {
        kill(child, SIGINT);
        sent = interrupted_child = true;
      }
      if (waited > 12) kill(child, SIGKILL);
      OrFail(rec.Poll());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!sent) interrupted_child = true;  // the terminal's Ctrl-C ended it
  }
  OrFail(rec.Finish());
  guard.armed = false;
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (tty) fprintf(stderr, "\n");
  const auto& p = rec.progress();
  char line[512];
  snprintf(line, sizeof line,
           "probing: recorded %llu segments (%llu events, %s) from process %d in %.1f s to %s; %s\n",
           static_cast<unsigned long long>(p.segments), static_cast<unsigned long long>(p.events),
           Size(p.bytes).c_str(), pid, Since(started), out.c_str(), ended.c_str());
  std::cerr << line;
  if (p.lost > 0)
    std::cerr << "probing: " << p.lost
              << " segment(s) were overwritten in the rings before they could be copied"
              << (p.corrupt ? " or failed their checksum" : "")
              << "; the recording says so where they were (probing-analyze --stats)\n";
  std::cerr << "probing: analyze it with: probing-analyze " << out << "\n";
  if (child != 0 && !interrupted_child && child_status >= 0) {
    if (WIFEXITED(child_status) && WEXITSTATUS(child_status) != 0) {
      std::cerr << "probing: " << command[0] << " exited with code " << WEXITSTATUS(child_status)
                << "\n";
      return WEXITSTATUS(child_status);
    }
    if (WIFSIGNALED(child_status)) {
      std::cerr << "probing: " << command[0] << " was killed by signal " << WTERMSIG(child_status)
                << "\n";
      return 128 + WTERMSIG(child_status);
    }
  }
  return 0;
}

// A flame graph of the samples in the target's rings (the latest `duration` seconds of them).
int CmdFlamegraph(const Options& o, std::string out, bool folded, double duration, long thread) {
  if (o.target.empty()) throw Usage("flamegraph needs -t/--target: the pid of a process");
  auto target = OrFail(probing::live::ParseTarget(o.target));
  std::string dir = RingDir(o);
  auto set = OrFail(probing::analyzer::LoadTraces({dir}));
  probing::analyzer::SampleFilter filter;
  if (thread > 0) filter.thread = static_cast<uint64_t>(thread);
  if (duration > 0) {
    timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    filter.since_ns = static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec -
                      static_cast<int64_t>(duration * 1e9);
  }
  auto stacks = probing::analyzer::FoldStacks(set.segments, filter);
  if (stacks.samples == 0)
    throw Failure("no stack samples with Python frames in " + dir +
                  (duration > 0 ? " from the last " + std::to_string(static_cast<int>(duration)) + " s"
                                : std::string()) +
                  (thread > 0 ? " for thread " + std::to_string(thread) : std::string()));
  if (folded) {
    probing::analyzer::WriteFolded(stacks, std::cout);
    return 0;
  }
  if (out.empty()) out = "flamegraph-" + std::to_string(target.pid) + ".svg";
  auto summary = probing::analyzer::Summarize(set, 1);
  probing::analyzer::FlameGraphOptions fo;
  fo.title = summary.processes.size() == 1 ? "Flame graph: " + summary.processes[0] : "Flame graph";
  fo.subtitle = std::to_string(stacks.samples) + " samples" +
                (duration > 0 ? ", the last " + std::to_string(static_cast<int>(duration)) + " s"
                              : std::string(", all the rings hold")) +
                (thread > 0 ? ", thread " + std::to_string(thread) : std::string());
  std::ofstream file(out, std::ios::trunc);
  if (!file) throw Failure("cannot write " + out + ": " + strerror(errno));
  probing::analyzer::WriteFlameGraphSvg(stacks, fo, file);
  file.close();
  if (!file) throw Failure("writing " + out + " failed: " + strerror(errno));
  std::cout << "Wrote a flame graph of " << stacks.samples << " samples to " << out
            << " (open it in a browser: click to zoom, Ctrl-F to search)\n";
  return 0;
}

uint64_t DirSize(const fs::path& p) {
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(p, ec))
    if (e.is_regular_file(ec)) n += e.file_size(ec);
  return n;
}

// The machine's RDMA ports: counters now and rates over `interval` seconds.
int CmdRdma(const Options& o, const std::string& root, double interval) {
  if (!o.target.empty() && o.target.find(':') != std::string::npos)
    throw Usage("rdma reads this machine's " + root +
                "; run it on the target's host (with -t PID or without -t)");
  auto first = OrFail(probing::live::ReadRdmaPorts(root));
  if (first.empty()) {
    std::cout << "no RDMA devices found (" << root << " has no ports)\n";
    return 0;
  }
  auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  auto second = OrFail(probing::live::ReadRdmaPorts(root));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto rate = [&](uint64_t a, uint64_t b) -> Cell {
    return b >= a ? Cell(static_cast<double>(b - a) / secs) : Cell(std::monostate{});
  };
  std::vector<std::vector<Cell>> rows;
  for (const auto& p : second) {
    const probing::live::RdmaPort* before = nullptr;
    for (const auto& q : first)
      if (q.device == p.device && q.port == p.port) before = &q;
    auto c = [&](const char* name) -> Cell {
      auto it = p.counters.find(name);
      return it == p.counters.end() ? Cell(std::monostate{})
                                    : Cell(static_cast<int64_t>(it->second));
    };
    auto pc = [&](const char* name) -> uint64_t {
      auto it = p.counters.find(name);
      return it == p.counters.end() ? 0 : it->second;
    };
    auto bc = [&](const char* name) -> uint64_t {
      if (before == nullptr) return 0;
      auto it = before->counters.find(name);
      return it == before->counters.end() ? 0 : it->second;
    };
    uint64_t errors = pc("port_rcv_errors") + pc("port_xmit_discards") + pc("symbol_error") +
                      pc("link_downed") + pc("port_rcv_remote_physical_errors");
    rows.push_back(
        {p.device, static_cast<int64_t>(p.port), p.state, p.rate, p.link_layer,
         static_cast<int64_t>(p.tx_bytes()), static_cast<int64_t>(p.rx_bytes()),
         before ? rate(before->tx_bytes(), p.tx_bytes()) : Cell(std::monostate{}),
         before ? rate(before->rx_bytes(), p.rx_bytes()) : Cell(std::monostate{}),
         c("port_xmit_packets"), c("port_rcv_packets"),
         before ? rate(bc("port_xmit_packets"), pc("port_xmit_packets")) : Cell(std::monostate{}),
         before ? rate(bc("port_rcv_packets"), pc("port_rcv_packets")) : Cell(std::monostate{}),
         static_cast<int64_t>(errors)});
  }
  probing::cli::PrintRows(o.fmt(),
                          {"device", "port", "state", "rate", "link_layer", "tx_bytes", "rx_bytes",
                           "tx_bytes_per_s", "rx_bytes_per_s", "tx_packets", "rx_packets",
                           "tx_packets_per_s", "rx_packets_per_s", "errors"},
                          rows, std::cout);
  return 0;
}

int CmdList(const Options& o, bool gc) {
  std::string dir = probing::live::DefaultDataDir();
  std::vector<std::vector<Cell>> rows;
  uint64_t freed = 0, removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_directory() || !fs::exists(e.path() / "process.json")) continue;
    std::ifstream in(e.path() / "process.json");
    json meta = json::parse(in, nullptr, false);
    if (meta.is_discarded() || !meta.contains("pid")) continue;
    pid_t pid = meta["pid"].get<pid_t>();
    bool alive = kill(pid, 0) == 0 || errno == EPERM;
    uint64_t size = DirSize(e.path());
    if (gc && !alive) {
      fs::remove_all(e.path(), ec);
      if (!ec) {
        freed += size;
        ++removed;
      }
      continue;
    }
    std::string cmd;
    for (const auto& a : meta["cmdline"]) cmd += (cmd.empty() ? "" : " ") + a.get<std::string>();
    rows.push_back({int64_t{pid}, cmd, ToCell(meta["python_version"]),
                    std::string(alive ? "running" : "dead (rings readable)"),
                    ToCell(meta["socket"]), static_cast<int64_t>(size)});
  }
  if (gc)
    std::cerr << "probing: removed the data of " << removed << " dead process(es), " << freed / 1024
              << " KiB\n";
  probing::cli::PrintRows(o.fmt(), {"pid", "command", "python", "state", "socket", "data_bytes"},
                          rows, std::cout);
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{
      "probing: look inside a running Python/PyTorch process.\n"
      "Start one with the recorder: PROBING=1 python train.py (docs/recorder.md)."};
  app.set_version_flag("--version", "probing 0.1.0 (trace format v1)");
  app.require_subcommand(1);
  app.fallthrough();  // -t, --token and --format may also come after the command
  Options o;
  app.add_option("-t,--target", o.target, "target process: a pid, or host:port")
      ->envname("PROBING_TARGET");
  app.add_option("--token", o.token, "token for a host:port target")->envname("PROBING_AUTH_TOKEN");
  app.add_option("--format", o.format, "how rows are printed: table, csv, json, jsonl")
      ->check(CLI::IsMember({"table", "csv", "json", "jsonl"}));

  auto* inject = app.add_subcommand(
      "inject", "load the recorder into a running Python process (ptrace; docs/inject.md)");
  double inject_timeout = 5;
  std::string inject_library;
  std::vector<std::string> inject_settings;
  inject->add_option("--timeout", inject_timeout,
                     "seconds to look for a safe point to stop a thread at (default 5)")
      ->check(CLI::Range(0.01, 600.0));
  inject->add_option("--library", inject_library,
                     "this recorder build instead of the one matching the target's Python");
  inject->add_option("--set", inject_settings,
                     "KEY=VALUE: a setting applied once the recorder answers (repeatable)");

  auto* tables = app.add_subcommand(
      "tables", "list every SQL table and its columns (with -t: the target's own too)");
  auto* info = app.add_subcommand("info", "what the recorder in the target says about itself");
  auto* bt = app.add_subcommand("backtrace", "every thread's Python stack, innermost first");
  long thread = 0;
  bool locals = false, native = false;
  bt->add_option("--thread", thread, "only this thread (OS thread id)");
  bt->add_flag("--locals", locals, "show each frame's local variables (needs the GIL within 5 s)");
  bt->add_flag("--native", native,
               "native (C/C++) frames too, with the Python frames in place of the interpreter's");
  auto* ev = app.add_subcommand("eval", "run Python code in the target's __main__ namespace");
  std::string code;
  double timeout = 30;
  ev->add_option("code", code, "the code; the value of a final expression is printed")->required();
  ev->add_option("--timeout", timeout, "seconds before the code is interrupted")
      ->check(CLI::Range(0.001, 3600.0));
  auto* repl = app.add_subcommand(
      "repl", "an interactive Python prompt running in the target's __main__ (Tab completes there)");
  probing::cli::ReplOptions repl_options;
  {
    const char* h = std::getenv("PROBING_HISTORY");
    const char* home = std::getenv("HOME");
    repl_options.history = h != nullptr ? h : home != nullptr ? std::string(home) + "/.probing_history" : "";
  }
  repl->add_option("--history", repl_options.history,
                   "history file (default $PROBING_HISTORY or ~/.probing_history; '' keeps none)");
  repl->add_option("--timeout", repl_options.timeout,
                   "seconds each statement may run in the target before it is interrupted")
      ->check(CLI::Range(0.001, 86400.0));
  auto* cfg = app.add_subcommand("config", "show all settings, one (KEY), or set one (KEY=VALUE)");
  std::string cfg_arg;
  cfg->add_option("setting", cfg_arg, "KEY or KEY=VALUE");
  auto* query =
      app.add_subcommand("query", "SQL over the target's rings and live tables (probing tables)");
  std::string sql;
  query->add_option("sql", sql, "one SQL statement (SQLite; now() and interval '5 minutes' work)")
      ->required();
  auto* mem = app.add_subcommand("memory", "memory now, and its trend, from the target's rings");
  int last = 60;
  mem->add_option("--last", last, "how many of the latest samples (one a second)")
      ->check(CLI::Range(1, 100000));
  auto* list =
      app.add_subcommand("list", "processes with the recorder on (from the data directory)");
  bool gc = false;
  list->add_flag("--gc", gc, "remove the data of dead processes, and say how much");

  auto* record = app.add_subcommand(
      "record",
      "save what the target records to a .ptrace file: -t PID, or -- COMMAND... (docs/record.md)");
  std::string record_out;
  double record_duration = 0, record_interval = 0.1;
  std::vector<std::string> record_command;
  record->add_option("-o,--output", record_out, "the recording to write (replaced)")->required();
  record->add_option("--duration", record_duration,
                     "seconds to record (default: until Ctrl-C or the target ends)")
      ->check(CLI::Range(0.0, 1e9));
  record->add_option("--interval", record_interval, "seconds between copies from the rings")
      ->check(CLI::Range(0.01, 10.0));
  int record_level = probing::live::Recording::kDefaultLevel;
  record->add_option("--level", record_level,
                     "zstd compression level of the recording, 1 (fastest) to 19 (smallest)")
      ->check(CLI::Range(1, 19));
  record->add_option("command", record_command,
                     "after --: a command to start with PROBING=1 and record (it is interrupted "
                     "when the recording ends first)");
  record->positionals_at_end();

  auto* flame = app.add_subcommand(
      "flamegraph", "a flame graph (interactive SVG) of the stack samples in the target's rings");
  std::string flame_out;
  bool flame_folded = false;
  double flame_duration = 0;
  long flame_thread = 0;
  flame->add_option("-o,--output", flame_out, "the SVG to write (default flamegraph-PID.svg)");
  flame->add_flag("--folded", flame_folded,
                  "print folded stacks (flamegraph.pl's input) instead of writing an SVG");
  flame->add_option("--duration", flame_duration,
                    "only the latest S seconds of samples (default: all the rings hold)")
      ->check(CLI::Range(0.0, 1e9));
  flame->add_option("--thread", flame_thread, "only this thread (OS thread id)");

  auto* rdma = app.add_subcommand(
      "rdma", "RDMA ports of this machine: state, rate, traffic counters and rates (sysfs)");
  std::string rdma_root = "/sys/class/infiniband";
  double rdma_interval = 1.0;
  rdma->add_option("--sysfs", rdma_root, "where the devices are (default /sys/class/infiniband)");
  rdma->add_option("--interval", rdma_interval, "seconds between the two readings for rates")
      ->check(CLI::Range(0.05, 3600.0));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    if (*inject) return CmdInject(o, inject_timeout, inject_library, inject_settings);
    if (*tables) return CmdTables(o);
    if (*info) return CmdInfo(o);
    if (*bt) return CmdBacktrace(o, thread, locals, native);
    if (*ev) return CmdEval(o, code, timeout);
    if (*repl) {
      if (o.target.empty()) throw Usage("repl needs -t/--target: a pid, or host:port");
      return probing::cli::RunRepl(OrFail(probing::live::ParseTarget(o.target)), o.token,
                                   repl_options);
    }
    if (*cfg) return CmdConfig(o, cfg_arg);
    if (*list) return CmdList(o, gc);
    if (*mem) return CmdMemory(o, last);
    if (*query) return CmdQuery(o, sql);
    if (*rdma) return CmdRdma(o, rdma_root, rdma_interval);
    if (*record) return CmdRecord(o, record_out, record_duration, record_interval, record_level,
                                    record_command);
    if (*flame) return CmdFlamegraph(o, flame_out, flame_folded, flame_duration, flame_thread);
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
