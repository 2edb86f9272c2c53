#include "probing/cluster/cluster.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "probing/base/clock.h"
#include "probing/live/control_client.h"
#include "probing/live/recorders.h"
#include "probing/procfs/proc_stat.h"

namespace probing::cluster {
namespace {

namespace fs = std::filesystem;
using protocol::Json;

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Hostname() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return host;
}

// The ring tables a cluster.<name> can be, by name.
std::optional<format::TableId> RingTableOf(const std::string& name) {
  static const std::map<std::string, format::TableId> kTables = {
      {"stacks", format::TableId::kStacks},
      {"torch_trace", format::TableId::kTorchTrace},
      {"memory", format::TableId::kMemory},
      {"variables", format::TableId::kVariables},
      {"metrics", format::TableId::kMetrics},
      {"process", format::TableId::kProcess},
      {"collectives", format::TableId::kCollectives},
      {"torch_steps", format::TableId::kTorchSteps}};
  auto it = kTables.find(name);
  if (it == kTables.end()) return std::nullopt;
  return it->second;
}

constexpr const char* kClusterTables =
    "cluster.stacks, cluster.torch_trace, cluster.torch_steps, cluster.memory, cluster.variables, "
    "cluster.metrics, cluster.collectives, cluster.process, cluster.backtrace";

}  // namespace

namespace internal {

std::vector<bool> RunAll(std::vector<Task> tasks, int parallel, double deadline_s) {
  struct Shared {
    std::mutex m;
    std::condition_variable cv;
    std::vector<char> done;
  };
  const size_t n = tasks.size();
  auto sh = std::make_shared<Shared>();
  sh->done.assign(n, 0);
  std::vector<char> expired(n, 0);
  std::vector<std::chrono::steady_clock::time_point> deadline(n);
  const auto budget = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(deadline_s));
  const int limit = std::max(1, parallel);
  size_t next = 0;
  std::unique_lock<std::mutex> lock(sh->m);
  for (;;) {
    // A task past its deadline is abandoned: its thread ends on its own (it shares only `sh`
    // and its own captures) and no longer holds a place among the `limit` running.
    const auto now = std::chrono::steady_clock::now();
    int active = 0;
    auto wake = std::chrono::steady_clock::time_point::max();
    for (size_t i = 0; i < next; ++i) {
      if (sh->done[i] || expired[i]) continue;
      if (now >= deadline[i]) {
        expired[i] = 1;
        continue;
      }
      ++active;
      wake = std::min(wake, deadline[i]);
    }
    while (next < n && active < limit) {
      const size_t i = next++;
      deadline[i] = now + budget;
      wake = std::min(wake, deadline[i]);
      ++active;
      std::thread([sh, i, run = std::move(tasks[i].run)] {
        run();
        std::lock_guard<std::mutex> l(sh->m);
        sh->done[i] = 1;
        sh->cv.notify_all();
      }).detach();
    }
    if (active == 0 && next == n) break;
    sh->cv.wait_until(lock, wake);
  }
  std::vector<bool> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = sh->done[i] && !expired[i];
  return out;
}

std::string StateOf(const Status& st) {
  const std::string& m = st.message();
  if (m.find("is stopped") != std::string::npos) return "stopped";
  if (m.find("is gone") != std::string::npos || m.find("no process") != std::string::npos ||
      m.find("has exited") != std::string::npos)
    return "dead";
  if (st.code() == StatusCode::kDeadlineExceeded) return "timeout";
  if (st.code() == StatusCode::kPermissionDenied) return "refused";
  if (m.find("cannot reach") != std::string::npos || m.find("no recorder") != std::string::npos)
    return "unreachable";
  return "error";
}

}  // namespace internal

// ---- discovery -------------------------------------------------------------------------------

Result<Job> Discover(const std::string& target, const Options& options) {
  PROBING_ASSIGN_OR_RETURN(auto session, live::Session::Open(target, options.session));
  const live::TargetKind kind = session->kind();
  if (kind == live::TargetKind::kRecording)
    return InvalidArgument("cluster commands need a live rank; " + session->Describe() +
                           " is a recording (probing-analyze reads a bundle of them)");
  Job job;
  const std::string data_dir =
      options.session.data_dir.empty() ? live::DefaultDataDir() : options.session.data_dir;
  const bool local = kind == live::TargetKind::kProcess || kind == live::TargetKind::kRingDirectory;
  std::vector<live::RecorderEntry> here;
  int64_t target_rank = -1;
  std::string target_host;
  if (local) {
    here = live::ListRecorders(data_dir);
    for (const auto& e : here)
      if (session->pid() && e.pid == *session->pid()) {
        job.run_id = e.run_id;
        job.world_size = e.world_size.value_or(0);
        target_rank = e.rank.value_or(-1);
        target_host = e.host;
      }
  }
  // The target itself says who it is when its process.json does not (injected, or a rank
  // whose process group came up after it started) and for a remote target.
  std::optional<protocol::ClusterReply> listed;
  if (session->has_control()) {
    auto info = session->Info();
    if (info.ok()) {
      if (job.run_id.empty() && info->run_id) job.run_id = *info->run_id;
      if (job.world_size <= 0 && info->world_size) job.world_size = *info->world_size;
      if (target_rank < 0 && info->rank) target_rank = *info->rank;
      if (target_host.empty()) target_host = info->host;
      auto client = session->Control("cluster");
      if (client.ok()) {
        auto c =
            (*client)->Get<protocol::ClusterReply>(std::string(protocol::kClusterPath), "cluster");
        if (c.ok()) listed = std::move(c).value();
      }
    } else if (!local) {
      return info.status();
    }
  }
  if (job.run_id.empty() || job.world_size <= 0)
    return NotFound(session->Describe() +
                    " is not a rank of a distributed job that Probing knows: no run id and world "
                    "size (started without torchrun's or SLURM's environment, and "
                    "torch.distributed not initialized yet)");
  if (job.world_size > 1'000'000)
    return DataLoss("a world size of " + std::to_string(job.world_size));
  job.members.resize(static_cast<size_t>(job.world_size));
  for (int64_t r = 0; r < job.world_size; ++r) {
    job.members[r].rank = r;
    job.members[r].problem =
        "never registered: not on this host, and not in the job's store (is PROBING=1 set in "
        "it, and its process group initialized?)";
  }
  std::vector<std::string> how;
  if (local) {
    size_t found = 0;
    for (const auto& e : here) {
      if (e.run_id != job.run_id || !e.rank || *e.rank < 0 || *e.rank >= job.world_size) continue;
      if (e.role == "launcher" || e.role == "child") continue;
      Member& m = job.members[static_cast<size_t>(*e.rank)];
      if (!m.target.empty() && !e.alive) continue;  // a live one wins over a dead one's rings
      m.local_rank = e.local_rank.value_or(-1);
      m.host = e.host;
      m.node = e.host;
      m.pid = e.pid;
      m.target = std::to_string(e.pid);
      m.problem.clear();
      ++found;
    }
    if (found > 0) how.push_back("this host's ring directories");
  }
  if (listed) {
    size_t found = 0;
    const auto endpoint = live::ParseHostPort(target);
    for (const protocol::Member& pm : listed->members) {
      if (pm.rank < 0 || pm.rank >= job.world_size) continue;
      Member& m = job.members[static_cast<size_t>(pm.rank)];
      if (!m.target.empty()) continue;
      m.local_rank = pm.local_rank;
      m.host = pm.host;
      m.node = pm.node;
      m.pid = pm.pid;
      if (local && pm.host == Hostname()) {
        m.target = std::to_string(pm.pid);  // this host: its own socket
      } else if (pm.port) {
        // The address the user reached the job by also reaches its host's other ranks (a
        // host name registered by a rank may not resolve from here).
        const std::string host = endpoint && pm.host == target_host ? endpoint->host : pm.host;
        m.target = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                   std::to_string(*pm.port);
      } else {
        m.problem = "no TCP endpoint (PROBING_PORT is not set in it) and it runs on " + pm.host;
        continue;
      }
      m.problem.clear();
      ++found;
    }
    if (found > 0) how.push_back("the job's store, via rank " + std::to_string(target_rank));
  }
  for (size_t i = 0; i < how.size(); ++i) job.how += (i ? " and " : "") + how[i];
  return job;
}

// ---- list ------------------------------------------------------------------------------------

std::vector<MemberStatus> List(const Job& job, const Options& options) {
  struct Seen {
    protocol::InfoReply info;
    double offset = 0;
  };
  auto answers = FanOut<Seen>(job, options, [](live::Session& s) -> Result<Seen> {
    const double t0 = RealtimeSeconds();
    PROBING_ASSIGN_OR_RETURN(auto info, s.Info());
    const double t1 = RealtimeSeconds();
    Seen seen;
    seen.offset = info.now - (t0 + t1) / 2;  // its clock minus ours, half the round trip each way
    seen.info = std::move(info);
    return seen;
  });
  std::vector<MemberStatus> out;
  for (auto& a : answers) {
    MemberStatus st;
    st.member = a.member;
    st.state = a.state == "ok" ? "running" : a.state;
    st.error = a.error;
    if (a.value) {
      if (a.value->info.torch.tracing) st.step = a.value->info.torch.step;
      st.clock_offset_s = a.value->offset;
      if (a.value->info.tcp_port)
        st.address = a.member->host + ":" + std::to_string(*a.value->info.tcp_port);
    }
    if (st.address.empty() && live::ParseHostPort(a.member->target)) st.address = a.member->target;
    out.push_back(std::move(st));
  }
  return out;
}

// ---- SQL -------------------------------------------------------------------------------------

Result<sql::QueryResult> Query(const std::string& target, const Options& options,
                               const std::string& sql, std::string* coverage,
                               const sql::QueryLimits& limits) {
  live::SessionOptions so = options.session;
  PROBING_ASSIGN_OR_RETURN(auto session, live::Session::Open(target, so));
  const std::string lower = Lower(sql);
  static const std::regex cluster_table(R"(\bcluster\.([a-z_][a-z_0-9]*))");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(lower.begin(), lower.end(), cluster_table);
       it != std::sregex_iterator(); ++it)
    names.insert((*it)[1].str());
  if (names.empty()) return session->Query(sql, {}, limits);
  std::set<format::Stream> streams;
  bool backtrace = false;
  for (const std::string& n : names) {
    if (n == "backtrace") {
      backtrace = true;
      continue;
    }
    auto id = RingTableOf(n);
    if (!id)
      return InvalidArgument("no table cluster." + n + "; cluster tables: " + kClusterTables);
    if (auto stream = format::TableStream(*id)) streams.insert(*stream);
  }
  PROBING_ASSIGN_OR_RETURN(Job job, Discover(target, options));
  // Every rank's segments, each sealed first (the newest second), in parallel.
  using Segments = std::shared_ptr<std::vector<format::Segment>>;
  std::vector<format::Stream> wanted(streams.begin(), streams.end());
  const bool need_segments = names.size() > (backtrace ? 1u : 0u);
  std::vector<Answer<Segments>> segs;
  if (need_segments) {
    // system.process comes from every ring: an empty stream list reads them all.
    const bool all = names.count("process") != 0;
    segs = FanOut<Segments>(job, options, [wanted, all](live::Session& s) -> Result<Segments> {
      PROBING_ASSIGN_OR_RETURN(live::SegmentSource * source, s.Segments());
      PROBING_RETURN_IF_ERROR(source->Seal());
      PROBING_ASSIGN_OR_RETURN(
          format::TraceSet set,
          live::LoadStreams(*source, all ? std::vector<format::Stream>{} : wanted));
      return std::make_shared<std::vector<format::Segment>>(std::move(set.segments));
    });
  }
  std::vector<Answer<protocol::BacktraceReply>> stacks;
  if (backtrace)
    stacks = FanOut<protocol::BacktraceReply>(job, options,
                                              [](live::Session& s) { return s.Backtrace({}); });
  std::string cov = need_segments ? Coverage(segs) : Coverage(stacks);
  if (need_segments && backtrace && Coverage(stacks) != cov)
    cov += "; backtrace: " + Coverage(stacks);
  if (coverage != nullptr) *coverage = cov;
  return session->Query(sql, [&](sql::Database& db) -> Status {
    for (const std::string& n : names) {
      if (n == "backtrace") continue;
      const format::TableId id = *RingTableOf(n);
      std::vector<std::pair<std::string, std::string>> extra;
      for (const auto& [col, type] : std::vector<std::pair<std::string, std::string>>{
               {"rank", "INTEGER"}, {"host", "TEXT"}, {"pid", "INTEGER"}}) {
        bool has = false;
        for (const auto& c : format::GetTable(id).columns) has |= c.name == col;
        if (!has) extra.emplace_back(col, type);
      }
      std::vector<sql::Database::Part> parts;
      for (const auto& a : segs) {
        if (!a.value) continue;
        std::vector<Cell> values;
        for (const auto& [col, type] : extra) {
          if (col == "rank") values.emplace_back(a.member->rank);
          if (col == "host") values.emplace_back(a.member->host);
          if (col == "pid") values.emplace_back(a.member->pid);
        }
        parts.push_back({a.value->get(), std::move(values)});
      }
      if (parts.empty()) {
        return Unavailable("no rank answered for cluster." + n + ": " + cov);
      }
      PROBING_RETURN_IF_ERROR(db.AttachParts("cluster." + n, id, extra, std::move(parts)));
    }
    if (backtrace) {
      std::vector<std::vector<Cell>> rows;
      for (const auto& a : stacks) {
        if (!a.value) continue;
        for (const auto& t : a.value->threads)
          for (const auto& f : t.frames)
            rows.push_back({f.func, f.file, f.lineno ? Cell(*f.lineno) : Cell(std::monostate{}),
                            f.depth, f.frame_type, static_cast<int64_t>(t.thread_id), t.thread_name,
                            a.member->rank, a.member->host, a.member->pid});
      }
      PROBING_RETURN_IF_ERROR(db.LoadRows("cluster.backtrace",
                                          {"func", "file", "lineno", "depth", "frame_type",
                                           "thread_id", "thread_name", "rank", "host", "pid"},
                                          {"TEXT", "TEXT", "INTEGER", "INTEGER", "TEXT", "INTEGER",
                                           "TEXT", "INTEGER", "TEXT", "INTEGER"},
                                          rows));
    }
    // The segments must outlive the statement: they do, held by `segs` until Query returns.
    return Status::Ok();
  }, limits);
}

// ---- stacks ----------------------------------------------------------------------------------

MergedStacks Backtraces(const Job& job, const Options& options) {
  auto answers = FanOut<protocol::BacktraceReply>(job, options,
                                                  [](live::Session& s) { return s.Backtrace({}); });
  MergedStacks out;
  out.coverage = Coverage(answers);
  std::map<std::string, size_t> by_key;
  for (const auto& a : answers) {
    if (!a.value) continue;
    for (const auto& t : a.value->threads) {
      std::string key = t.thread_name + "\n";
      for (const auto& f : t.frames)
        key += f.func + "\t" + f.file + "\t" + (f.lineno ? std::to_string(*f.lineno) : "") + "\n";
      auto [it, fresh] = by_key.emplace(key, out.groups.size());
      if (fresh) out.groups.push_back({t.thread_name, {}, t.frames, false});
      StackGroup& g = out.groups[it->second];
      g.ranks.push_back(a.member->rank);
      g.holds_gil |= t.holds_gil;
    }
  }
  std::stable_sort(out.groups.begin(), out.groups.end(), [](const auto& a, const auto& b) {
    const bool am = a.thread_name == "MainThread", bm = b.thread_name == "MainThread";
    if (am != bm) return am;
    if (a.thread_name != b.thread_name) return a.thread_name < b.thread_name;
    if (a.ranks.size() != b.ranks.size()) return a.ranks.size() < b.ranks.size();
    return a.ranks < b.ranks;
  });
  return out;
}

MergedSamples StackSamples(const Job& job, const Options& options, int64_t rank) {
  Job only = job;
  if (rank >= 0) {
    only.members.clear();
    for (const auto& m : job.members)
      if (m.rank == rank) only.members.push_back(m);
  }
  using Segments = std::shared_ptr<std::vector<format::Segment>>;
  auto answers = FanOut<Segments>(only, options, [](live::Session& s) -> Result<Segments> {
    PROBING_ASSIGN_OR_RETURN(live::SegmentSource * source, s.Segments());
    PROBING_RETURN_IF_ERROR(source->Seal());
    PROBING_ASSIGN_OR_RETURN(format::TraceSet set,
                             live::LoadStreams(*source, {format::Stream::kStacks}));
    return std::make_shared<std::vector<format::Segment>>(std::move(set.segments));
  });
  MergedSamples out;
  out.coverage = Coverage(answers);
  for (auto& a : answers) {
    if (!a.value) continue;
    for (auto& seg : **a.value) {
      if (seg.info.pid != 0)
        out.pid_rank.emplace_back(static_cast<int64_t>(seg.info.pid), a.member->rank);
      out.segments.push_back(std::move(seg));
    }
  }
  std::sort(out.pid_rank.begin(), out.pid_rank.end());
  out.pid_rank.erase(std::unique(out.pid_rank.begin(), out.pid_rank.end()), out.pid_rank.end());
  return out;
}

// ---- recording a bundle ----------------------------------------------------------------------

Result<BundleOutcome> Record(const Job& job, const Options& options, const std::string& dir,
                             double duration, const std::atomic<int>& stop) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoStatus("creating " + dir, ec.value());
  if (!fs::is_directory(dir, ec)) return InvalidArgument(dir + " is not a directory");
  const std::vector<MemberStatus> before = List(job, options);
  struct Slot {
    Result<live::RecordOutcome> result = Status(StatusCode::kInternal, "did not run");
  };
  std::vector<std::shared_ptr<Slot>> slots;
  std::vector<std::thread> threads;
  for (const Member& m : job.members) {
    slots.push_back(std::make_shared<Slot>());
    if (m.target.empty()) continue;
    auto slot = slots.back();
    const std::string file = dir + "/rank" + std::to_string(m.rank) + ".ptrace";
    threads.emplace_back([slot, &options, &stop, file, target = m.target, duration] {
      auto session = live::Session::Open(target, options.session);
      if (!session.ok()) {
        slot->result = session.status();
        return;
      }
      live::RecordOptions ro;
      ro.output = file;
      ro.duration = duration;
      slot->result = live::Record(
          session->get(), ro, stop, [](const live::RecordProgress&) {}, [](const std::string&) {});
    });
  }
  for (auto& t : threads) t.join();
  BundleOutcome out;
  Json ranks = Json::array();
  size_t ok = 0;
  std::string missing;
  for (size_t i = 0; i < job.members.size(); ++i) {
    const Member& m = job.members[i];
    Json r = {{"rank", m.rank}, {"host", m.host}, {"pid", m.pid}, {"local_rank", m.local_rank}};
    if (before[i].clock_offset_s) r["clock_offset_s"] = *before[i].clock_offset_s;
    std::string line = "rank " + std::to_string(m.rank) + ": ";
    if (m.target.empty()) {
      r["error"] = m.problem;
      line += m.problem;
    } else if (!slots[i]->result.ok()) {
      r["error"] = slots[i]->result.status().message();
      line += slots[i]->result.status().message();
    } else {
      const auto& o = *slots[i]->result;
      const std::string file = "rank" + std::to_string(m.rank) + ".ptrace";
      r["file"] = file;
      r["ended"] = o.ended;
      r["segments"] = o.progress.segments;
      r["lost"] = o.progress.lost;
      line += std::to_string(o.progress.segments) + " segments, " +
              std::to_string(o.progress.events) + " events to " + file + "; " + o.ended;
      ++ok;
    }
    if (!r.contains("file"))
      missing += "; rank " + std::to_string(m.rank) + ": " + r["error"].get<std::string>();
    ranks.push_back(std::move(r));
    out.lines.push_back(std::move(line));
  }
  Json manifest = {{"format", "probing-bundle"},
                   {"version", 1},
                   {"run_id", job.run_id},
                   {"world_size", job.world_size},
                   {"recorded_at", RealtimeSeconds()},
                   {"ranks", ranks}};
  out.manifest = dir + "/manifest.json";
  const std::string tmp = out.manifest + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << manifest.dump(2) << "\n";
    if (!f) return ErrnoStatus("writing " + tmp, errno);
  }
  fs::rename(tmp, out.manifest, ec);
  if (ec) return ErrnoStatus("writing " + out.manifest, ec.value());
  out.coverage = std::to_string(ok) + " of " + std::to_string(job.members.size()) +
                 " ranks recorded" + missing;
  return out;
}

// ---- ranks of this host without a recorder ---------------------------------------------------

namespace {

std::map<std::string, std::string> Environ(pid_t pid) {
  std::map<std::string, std::string> env;
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  std::string entry;
  while (std::getline(in, entry, '\0')) {
    size_t eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  return env;
}


}  // namespace

Result<std::vector<LocalRank>> LocalRanks(std::optional<pid_t> of, const std::string& data_dir) {
  struct Proc {
    pid_t pid;
    pid_t ppid;
    std::string run_id;
    int64_t rank = -1;
  };
  std::vector<Proc> procs;
  DIR* d = opendir("/proc");
  if (d == nullptr) return ErrnoStatus("reading /proc", errno);
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::atol(name.c_str()));
    auto env = Environ(pid);
    // As the recorder names a job (recorder.cc): torchrun's run id unless it is "none".
    std::string run = env.count("TORCHELASTIC_RUN_ID") ? env["TORCHELASTIC_RUN_ID"] : "";
    if (run.empty() && env.count("SLURM_JOB_ID")) run = env["SLURM_JOB_ID"];
    if (run == "none") run.clear();
    if (run.empty() && env.count("MASTER_ADDR") && env.count("MASTER_PORT") && env.count("RANK"))
      run = env["MASTER_ADDR"] + ":" + env["MASTER_PORT"];
    int64_t rank = -1;
    if (env.count("RANK") && !env["RANK"].empty() &&
        env["RANK"].find_first_not_of("0123456789") == std::string::npos)
      rank = std::atoll(env["RANK"].c_str());
    procs.push_back({pid, procfs::ParentPid(pid).value_or(0), run, rank});
  }
  closedir(d);
  std::string run_id;
  if (of) {
    auto self =
        std::find_if(procs.begin(), procs.end(), [&](const Proc& p) { return p.pid == *of; });
    if (self == procs.end()) return NotFound("no process " + std::to_string(*of));
    run_id = self->run_id;
    if (run_id.empty()) {  // a launcher: its children are the ranks
      for (const Proc& p : procs)
        if (p.ppid == *of && !p.run_id.empty()) run_id = p.run_id;
    }
    if (run_id.empty())
      return NotFound("process " + std::to_string(*of) +
                      " is neither a rank of a job (no TORCHELASTIC_RUN_ID or RANK with "
                      "MASTER_ADDR in its environment) nor a launcher of one");
  } else {
    std::set<std::string> runs;
    for (const Proc& p : procs)
      if (!p.run_id.empty() && p.rank >= 0) runs.insert(p.run_id);
    if (runs.empty()) return NotFound("no distributed job runs on this host (no process has RANK)");
    if (runs.size() > 1) {
      std::string list;
      for (const auto& r : runs) list += (list.empty() ? "" : ", ") + r;
      return InvalidArgument("several jobs run on this host (" + list +
                             "): say which with -t PID of one of their ranks");
    }
    run_id = *runs.begin();
  }
  std::set<pid_t> recorded;
  for (const auto& e : live::ListRecorders(data_dir))
    if (e.alive && e.has_metadata) recorded.insert(e.pid);
  std::vector<LocalRank> out;
  for (const Proc& p : procs) {
    if (p.run_id != run_id || p.rank < 0) continue;
    // A DataLoader worker or other child of a rank inherits its environment: only the rank.
    bool child_of_rank = false;
    for (const Proc& q : procs)
      if (q.pid == p.ppid && q.run_id == run_id && q.rank == p.rank) child_of_rank = true;
    if (child_of_rank) continue;
    out.push_back({p.pid, p.rank, run_id, recorded.count(p.pid) != 0});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
  return out;
}

}  // namespace probing::cluster
