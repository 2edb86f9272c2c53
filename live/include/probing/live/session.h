// A session: one target, resolved once, whatever it is. Every front end (the CLI, the Python
// API through it, cluster fan-out, the web server) reaches targets through this type and never
// resolves pids, paths or addresses on its own.
//
//   "4242"                      a process on this host: its rings by pid, its control socket
//   "/dev/shm/probing-0/4242"   a ring directory (a dead process's, or a live one's)
//   "run.ptrace" (one or more)  recordings
//   "node7:9922" + token        a recorder on another host: control over TCP, and its sealed
//                               segments fetched over the same connection (GET /segments)
//
// Data (queries, recordings, flame graphs, memory) comes from segments(), the same way for
// every kind; things only a live process can answer (backtrace, eval, config, custom tables)
// come from its control server, and fail with a one-line reason where there is none
// ("backtrace needs a live process; the recording run.ptrace has none").
//
//   SessionOptions o;
//   o.token = "...";
//   PROBING_ASSIGN_OR_RETURN(auto s, Session::Open("node7:9922", o));
//   PROBING_ASSIGN_OR_RETURN(sql::QueryResult r, s->Query("SELECT count(*) FROM python.stacks"));
//   PROBING_ASSIGN_OR_RETURN(protocol::BacktraceReply bt, s->Backtrace({}));
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "probing/base/status.h"
#include "probing/live/control_client.h"
#include "probing/live/protocol.h"
#include "probing/live/segment_source.h"
#include "probing/sql/sql.h"

namespace probing::live {

enum class TargetKind {
  kProcess,        // a pid on this host (alive, or dead with its rings left)
  kRingDirectory,  // a directory of ring files
  kRecording,      // .ptrace files (or ring files given by name)
  kRemote,         // host:port
};
const char* TargetKindName(TargetKind kind);  // "process", "ring directory", ...

struct SessionOptions {
  // For host:port targets (and for nothing else). Empty and the target a live recorder of this
  // user on this host that made its own token (PROBING_PORT without PROBING_AUTH_TOKEN): that
  // one, read from its ring directory under data_dir (docs/protocol.md).
  std::string token;
  double timeout_s = 30;  // every request to a control server, and every SQL query
  std::string data_dir;   // where local recorders write; empty: DefaultDataDir()
};

class Session {
 public:
  // `target`: a pid, host:port, a ring directory or a recording. Fails with a one-line reason
  // when it is none of these, or names nothing that exists.
  static Result<std::unique_ptr<Session>> Open(const std::string& target,
                                               const SessionOptions& options);
  // Several recordings or ring directories read as one (probing-analyze a.ptrace b.ptrace).
  static Result<std::unique_ptr<Session>> OpenFiles(const std::vector<std::string>& paths);

  TargetKind kind() const { return kind_; }
  // "process 4242", "node7:9922", "the ring directory /dev/shm/...", "the recording run.ptrace".
  std::string Describe() const;
  // The local process behind the target (kProcess; kRingDirectory when its process.json says).
  std::optional<pid_t> pid() const { return pid_; }
  const SessionOptions& options() const { return options_; }

  // ---- the control server (a live process only) ----
  // Whether there is one to ask (it may still fail to answer).
  bool has_control();
  Result<protocol::InfoReply> Info();
  Result<protocol::BacktraceReply> Backtrace(const protocol::BacktraceRequest& request);
  Result<protocol::EvalReply> Eval(const protocol::EvalRequest& request);
  Result<protocol::ConfigReply> GetConfig(const std::string& key = "");
  Result<protocol::ConfigReply> SetConfig(const std::string& key, const std::string& value);
  Result<protocol::TablesReply> CustomTables();
  Result<protocol::TableRowsReply> CustomTable(const std::string& name);
  // The transport itself, for what the typed calls do not cover (the repl's completion). Fails
  // like the calls above where there is none.
  Result<ControlClient*> Control(std::string_view what);

  // ---- recorded data (every kind) ----
  Result<SegmentSource*> Segments();
  // The files and directories on this host it reads: its ring directory (once Segments() found
  // it) or its recordings. An output is checked against them (CheckNotAnInput).
  std::vector<std::string> Inputs() const;
  // One SQL statement over the ring tables (read from segments(), the newest second sealed
  // first where the target is live) and, for a live target, the tables only it can answer
  // (python.backtrace, information_schema.df_settings, its @probing.table tables).
  // `more` may add tables of its own before the statement runs (cluster.<table>). The
  // statement reads only (QueryLimits::read_only, always) and is stopped after
  // `limits.timeout_s`, or SessionOptions::timeout_s where that is 0; `limits.max_rows` caps
  // the rows of a server's answer (`probing web`).
  using MoreTables = std::function<Status(sql::Database& db)>;
  Result<sql::QueryResult> Query(const std::string& sql, const MoreTables& more = {},
                                 const sql::QueryLimits& limits = {});

 private:
  Session() = default;
  Status NoControl(std::string_view what) const;
  Status ResolveRings();

  TargetKind kind_ = TargetKind::kProcess;
  std::string target_;  // as given
  SessionOptions options_;
  std::optional<pid_t> pid_;
  std::string ring_dir_;  // kProcess, kRingDirectory: where the rings are (once known)
  std::unique_ptr<ControlClient> control_;
  bool control_checked_ = false;  // kRingDirectory: whether its process was looked for
  std::unique_ptr<SegmentSource> source_;
  std::vector<std::string> paths_;  // kRecording
};

}  // namespace probing::live
