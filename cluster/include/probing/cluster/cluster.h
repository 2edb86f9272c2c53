// Many sessions at once: every rank of a distributed training job, found from any one of them,
// and asked in parallel by the client itself (never by a training process), each with its own
// deadline. A rank that is dead, stopped, slow or was never registered is reported as such and
// never silently left out (docs/distributed.md).
//
// Discovery: from a local rank (pid or ring directory), the ring directories of this host whose
// process.json names the same job; from any rank's control server (GET /cluster), the members
// the job's own c10d store lists (each rank registers its host, pid and TCP port there once its
// process group exists). A host:port target is followed over TCP only, as if every rank were on
// another host.
//
//   cluster::Options o;
//   o.session.token = "...";
//   PROBING_ASSIGN_OR_RETURN(cluster::Job job, cluster::Discover("node7:9922", o));
//   auto answers = cluster::FanOut<protocol::InfoReply>(job, o,
//       [](live::Session& s) { return s.Info(); });
//   std::string line = cluster::Coverage(job, answers);   // "3 of 4 ranks answered; rank 2: ..."
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "probing/base/status.h"
#include "probing/live/protocol.h"
#include "probing/live/recording.h"
#include "probing/live/session.h"
#include "probing/sql/sql.h"

namespace probing::cluster {

struct Member {
  int64_t rank = -1;
  int64_t local_rank = -1;
  std::string host;
  std::string node;
  int64_t pid = 0;
  // What a session opens to reach it: a pid (this host) or host:port; empty when it cannot be
  // reached, and `problem` says why ("never registered", "no TCP port: ...").
  std::string target;
  std::string problem;
};

struct Job {
  std::string run_id;
  int64_t world_size = 0;
  std::vector<Member> members;  // one per rank, 0 .. world_size - 1
  std::string how;              // "this host's ring directories" or "the job's store via ..."
};

struct Options {
  live::SessionOptions session;  // token for host:port members; timeout per rank
  int parallel = 64;             // ranks asked at once
};

// The job the target (any one rank) belongs to, and every member. Fails when the target is
// not a rank of a job (no run id, no world size).
Result<Job> Discover(const std::string& target, const Options& options);

// One rank's answer, or why there is none.
template <typename T>
struct Answer {
  const Member* member = nullptr;
  std::optional<T> value;
  std::string state;  // "ok", or: "timeout", "stopped", "dead", "unreachable", "never
                      // registered", "error"
  std::string error;  // the one-line reason when not ok
  double seconds = 0;
};

namespace internal {
struct Task {
  std::function<void()> run;
  const Member* member;
};
// Runs the tasks, `parallel` at a time, each given `deadline_s` before it is abandoned (its
// thread finishes on its own, touching only state it shares). True for each that finished.
std::vector<bool> RunAll(std::vector<Task> tasks, int parallel, double deadline_s);
std::string StateOf(const Status& st);
}  // namespace internal

// fn(session) for every reachable member in parallel, each with the session timeout (and a
// little more) before it counts as "timeout".
template <typename T>
std::vector<Answer<T>> FanOut(const Job& job, const Options& options,
                              const std::function<Result<T>(live::Session&)>& fn) {
  struct Slot {
    Result<T> result = Status(StatusCode::kDeadlineExceeded, "");
    double seconds = 0;
  };
  std::vector<std::shared_ptr<Slot>> slots;
  std::vector<internal::Task> tasks;
  std::vector<Answer<T>> out(job.members.size());
  for (size_t i = 0; i < job.members.size(); ++i) {
    const Member& m = job.members[i];
    out[i].member = &m;
    slots.push_back(std::make_shared<Slot>());
    if (m.target.empty()) continue;
    auto slot = slots.back();
    const live::SessionOptions so = options.session;
    const std::string target = m.target;
    tasks.push_back(
        {[slot, so, target, fn] {
           const auto t0 = std::chrono::steady_clock::now();
           auto session = live::Session::Open(target, so);
           Result<T> r = session.ok() ? fn(**session) : Result<T>(session.status());
           slot->seconds =
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
           slot->result = std::move(r);
         },
         &m});
  }
  std::vector<bool> done =
      internal::RunAll(std::move(tasks), options.parallel, options.session.timeout_s + 2);
  size_t task = 0;
  for (size_t i = 0; i < job.members.size(); ++i) {
    const Member& m = job.members[i];
    Answer<T>& a = out[i];
    if (m.target.empty()) {
      a.state = m.problem.rfind("never registered", 0) == 0 ? "never registered" : "unreachable";
      a.error = m.problem;
      continue;
    }
    if (!done[task++]) {
      a.state = "timeout";
      a.error =
          "no answer in " + std::to_string(static_cast<int>(options.session.timeout_s)) + " s";
      continue;
    }
    Slot& s = *slots[i];
    a.seconds = s.seconds;
    if (s.result.ok()) {
      a.value = std::move(s.result).value();
      a.state = "ok";
    } else {
      a.state = internal::StateOf(s.result.status());
      a.error = s.result.status().message();
    }
  }
  return out;
}

// "4 of 4 ranks answered", or "3 of 4 ranks answered; rank 2: timeout (no answer in 30 s)".
template <typename T>
std::string Coverage(const std::vector<Answer<T>>& answers) {
  size_t ok = 0;
  std::string missing;
  for (const auto& a : answers) {
    if (a.state == "ok") {
      ++ok;
      continue;
    }
    missing += "; rank " + std::to_string(a.member->rank) + ": " + a.state +
               (a.error.empty() || a.error == a.state ? "" : " (" + a.error + ")");
  }
  return std::to_string(ok) + " of " + std::to_string(answers.size()) + " ranks answered" + missing;
}
template <typename T>
bool Complete(const std::vector<Answer<T>>& answers) {
  for (const auto& a : answers)
    if (a.state != "ok") return false;
  return true;
}

// The seeds' tables of every rank, as `cluster.<table>` (cluster.stacks, cluster.torch_trace,
// cluster.torch_steps, cluster.memory, cluster.variables, cluster.metrics, cluster.collectives,
// cluster.process, cluster.backtrace): each
// row with `rank`, `host` and `pid` (where the table does not have them already). Runs `sql` in
// the session of `target` (its own python.* tables answer too). `coverage` gets the
// Coverage() line of the fan-out (empty when the query names no cluster table). `limits` bound
// SQL that someone else typed (`probing web`).
Result<sql::QueryResult> Query(const std::string& target, const Options& options,
                               const std::string& sql, std::string* coverage,
                               const sql::QueryLimits& limits = {});

// Each member's state now: running (and its step), stopped, dead, ... (`probing cluster list`).
struct MemberStatus {
  const Member* member = nullptr;
  std::string state;
  std::string error;
  std::optional<int64_t> step;
  std::optional<double> clock_offset_s;  // its clock minus ours, measured ping-style
  std::string address;                   // its TCP endpoint, when it has one
};
std::vector<MemberStatus> List(const Job& job, const Options& options);

// Every rank's stacks, grouped: ranks whose thread has the same Python stack share one group.
struct StackGroup {
  std::string thread_name;
  std::vector<int64_t> ranks;
  std::vector<protocol::Frame> frames;  // innermost first
  bool holds_gil = false;               // in at least one of its ranks
};
struct MergedStacks {
  std::vector<StackGroup> groups;  // the odd ones out (fewest ranks) first, MainThread first
  std::string coverage;
};
MergedStacks Backtraces(const Job& job, const Options& options);

// One recording per rank in `dir` (rank<N>.ptrace) and a manifest.json: the job, the ranks,
// their clock offsets and how each recording ended. Records until `duration` (0: until *stop).
struct BundleOutcome {
  std::string manifest;
  std::vector<std::string> lines;  // one per rank: "rank 0: 120 segments ... ended"
  std::string coverage;
};
Result<BundleOutcome> Record(const Job& job, const Options& options, const std::string& dir,
                             double duration, const std::atomic<int>& stop);

// Every rank's stack samples, each rank's stacks under a root "rank N" (only `rank` when >= 0),
// for a flame graph; since_ns > 0 keeps only newer samples.
struct MergedSamples {
  std::vector<format::Segment> segments;
  std::vector<std::pair<int64_t, int64_t>> pid_rank;  // which pid is which rank
  std::string coverage;
};
MergedSamples StackSamples(const Job& job, const Options& options, int64_t rank);

// Ranks of this host's job that run without a recorder, found by their environment
// (TORCHELASTIC_RUN_ID, RANK) or as children of a torchrun launcher: `probing cluster attach`.
struct LocalRank {
  pid_t pid = 0;
  int64_t rank = -1;
  std::string run_id;
  bool recorded = false;  // already has a recorder
};
Result<std::vector<LocalRank>> LocalRanks(std::optional<pid_t> of, const std::string& data_dir);

}  // namespace probing::cluster
