// The JSON API of `probing web`: one struct per answer (and per request body), their JSON
// written once here. The dashboard's pages read nothing else; docs/web.md shows every endpoint
// with an example, and web_api_test checks that it names every field defined here.
//
//   GET  /api/targets                          TargetsReply
//   GET  /api/<t>/overview                     OverviewReply     <t>: p/<pid> or r/<n>
//   GET  /api/<t>/stacks                       StacksReply
//   GET  /api/<t>/flame?seconds=S&thread=T     FlameReply
//   GET  /api/<t>/steps?last=K                 StepsReply
//   GET  /api/<t>/memory?seconds=S             MemoryReply
//   GET  /api/<t>/variables                    VariablesReply
//   POST /api/<t>/query      QueryRequest   -> QueryReply
//   GET  /api/<t>/config                       protocol::ConfigReply
//   POST /api/<t>/config     protocol::ConfigSetRequest -> protocol::ConfigReply
//   GET  /api/cluster/<job>/overview           ClusterReply      <job>: its run id
//   GET  /api/cluster/<job>/steps?last=K       ClusterStepsReply
//   GET  /api/cluster/<job>/stacks             ClusterStacksReply
//   GET  /api/cluster/<job>/stragglers?steps=N ClusterStragglersReply
//   GET  /api/cluster/<job>/hang               ClusterHangReply
//   POST /api/cluster/<job>/query QueryRequest -> QueryReply
//   any error: {"error": "<one line>"} (protocol::ErrorReply) with an HTTP status
//
//   StepsReply steps = Steps(snapshot, 100);
//   std::string body = ToJson(steps).dump();
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "probing/base/cell.h"
#include "probing/live/protocol.h"

namespace probing::web {

using Json = protocol::Json;

// ---- GET /api/targets ----
struct ProcessEntry {
  int64_t pid = 0;
  std::string state;  // "running", "dead", "starting", "dead (start interrupted)"
  bool alive = false;
  std::string command;
  std::string python_version;
  std::optional<int64_t> rank;
  std::optional<std::string> job;  // the job it belongs to (JobEntry::job), when known
  uint64_t data_bytes = 0;
  std::string url;  // "/p/4242"
};

struct JobEntry {
  std::string job;                 // the run id process.json names, or "ranks under process <ppid>"
  std::vector<int64_t> pids;       // by rank
  std::optional<std::string> url;  // "/cluster/<run id>": its cluster page (a job with a run id)
};

// A target named on the command line that is not a local pid: a recording, a ring directory,
// host:port.
struct NamedTarget {
  int64_t id = 0;      // its n in /r/<n>
  std::string target;  // as given
  std::string kind;    // "recording", "ring directory", "remote"
  std::string description;
  std::string url;                   // "/r/0"
  std::optional<std::string> error;  // why it cannot be opened
};

struct TargetsReply {
  std::string data_dir;  // where this host's recorders write
  std::vector<ProcessEntry> processes;
  std::vector<JobEntry> jobs;
  std::vector<NamedTarget> named;
  std::optional<std::string> open;  // the page `/` opens at once (one recording given)
};

// ---- GET /api/<t>/overview ----
struct ThreadEntry {
  uint64_t thread_id = 0;
  std::string name;
  uint64_t samples = 0;
};

struct OverviewReply {
  std::string id;  // "p/4242", "r/0"
  std::string description;
  std::string kind;  // live::TargetKindName
  // "running", "stopped", "gone", "no recorder" (a local process), "recorded" (files),
  // "remote"
  std::string state;
  bool live = false;     // segments may still arrive: the page refreshes
  bool control = false;  // a control server answered: backtrace, settings and live tables
  std::optional<protocol::InfoReply> info;
  std::optional<std::string> info_error;  // why there is no info (a live target only)
  std::optional<std::string> data_error;  // why there is no recorded data (a recorder without
                                          // rings it can read)
  // From the recorded data.
  std::optional<int64_t> pid;
  std::string command;
  std::string python_version;
  std::string host;
  std::optional<int64_t> rank;
  double first_ts = 0;  // Unix seconds; 0 when nothing is recorded
  double last_ts = 0;
  uint64_t samples = 0;
  uint64_t steps = 0;  // distinct PyTorch steps traced
  uint64_t segments = 0;
  uint64_t segments_corrupt = 0;
  uint64_t segments_lost = 0;
  std::vector<ThreadEntry> threads;
};

// ---- GET /api/<t>/stacks ----
struct StackFrame {
  std::string func;
  std::string file;
  std::optional<int64_t> lineno;
};

struct ThreadStack {
  uint64_t thread_id = 0;
  std::string thread_name;
  bool holds_gil = false;
  bool truncated = false;
  // From samples: when this stack was sampled (its newest sample with Python frames).
  std::optional<double> ts;
  std::vector<StackFrame> frames;  // innermost first
};

struct StacksReply {
  std::string source;  // "backtrace" (asked now) or "samples" (the latest recorded)
  double ts = 0;       // when the stacks were taken (samples: the newest), Unix seconds
  std::vector<ThreadStack> threads;
  std::optional<std::string> note;  // why samples stand in for a backtrace
};

// ---- GET /api/<t>/flame ----
// One frame of the flame graph: names[name] with `value` samples, callees in `children`.
// On the wire an array, [name, value, [children...]], to keep 100 k samples' trees small.
struct FlameNode {
  uint32_t name = 0;
  uint64_t value = 0;
  std::vector<FlameNode> children;
};

struct FlameReply {
  double seconds = 0;  // the window asked for; 0: everything recorded
  double from_ts = 0;  // the window, Unix seconds (its end is the newest sample)
  double to_ts = 0;
  std::optional<uint64_t> thread;  // only this thread
  uint64_t samples = 0;
  std::vector<ThreadEntry> threads;  // every thread sampled in the window, for the selector
  std::vector<std::string> names;    // names[0] is the root: "all"
  FlameNode root;                    // children: one per thread ("MainThread (4242)")
};

// ---- GET /api/<t>/steps ----
// One training step: seconds of forward, backward and optimizer (outermost modules only, so
// nothing counts twice) and the rest of its wall time (data loading, Python between calls).
struct StepRow {
  int64_t step = 0;
  double start = 0;  // Unix seconds
  double wall = 0;   // end of the previous step to the end of this one (or its own span)
  double forward = 0;
  double backward = 0;
  double optimizer = 0;
  double rest = 0;
};

struct ModuleRow {
  std::string module;
  std::string stage;    // forward, backward, step
  double per_step = 0;  // seconds per step (calls included in their parents' too)
  double calls_per_step = 0;
};

struct StepsReply {
  uint64_t steps_recorded = 0;     // traced steps in the data
  std::vector<StepRow> steps;      // the latest `last`, oldest first
  std::vector<ModuleRow> modules;  // over those steps, most time first
};

// ---- GET /api/<t>/memory ----
// Columns of equal length, oldest first; bytes. null where a value does not apply (CUDA on a
// CPU run; Python's figures when the GIL was not to be had).
struct MemoryReply {
  double seconds = 0;
  std::vector<double> ts;
  std::vector<int64_t> rss;
  std::vector<int64_t> vms;
  std::vector<std::optional<int64_t>> py_blocks;
  std::vector<std::optional<int64_t>> cuda_allocated;
  std::vector<std::optional<int64_t>> cuda_reserved;
};

// ---- GET /api/<t>/variables ----
struct VariableRow {
  std::string func;
  std::string name;
  std::string value;
  int64_t step = 0;
  double time = 0;
};

struct MetricRow {
  std::string name;
  double value = 0;
  double time = 0;
};

struct VariablesReply {
  std::vector<VariableRow> variables;  // the latest value of each (function, name)
  std::vector<MetricRow> metrics;      // the latest reading of each metric
};

// ---- POST /api/<t>/query ----
struct QueryRequest {
  std::string sql;
};

struct QueryReply {
  std::vector<std::string> columns;
  std::vector<std::vector<Cell>> rows;
  bool truncated = false;  // more rows than the server sends (kMaxRows)
  double elapsed_ms = 0;
  // For cluster.<table>: which ranks answered ("3 of 4 ranks answered; rank 2: dead").
  std::optional<std::string> coverage;
};

// ---- GET /api/cluster/<job>/overview ----
struct ClusterMember {
  int64_t rank = -1;
  int64_t local_rank = -1;
  std::string host;
  std::string node;
  int64_t pid = 0;
  std::string target;  // what reaches it: a pid (this host) or host:port; empty: unreachable
  std::string state;   // running, stopped, dead, timeout, unreachable, never registered, ...
  std::string error;   // why it is not running
  std::optional<int64_t> step;
  std::optional<double> clock_offset_s;  // its clock minus ours
  std::string address;                   // its TCP endpoint, when it has one
  std::optional<std::string> url;        // "/p/<pid>" for a process on this host
};

struct ClusterReply {
  std::string job;  // the run id
  int64_t world_size = 0;
  std::string how;                     // how the members were found
  std::vector<ClusterMember> members;  // by rank
};

// ---- GET /api/cluster/<job>/steps ----
// Step time per rank and step (a heatmap): wall[i][j] is rank ranks[i]'s step steps[j], from
// the end of its step before to the end of this one; null where either is missing.
struct ClusterStepsReply {
  std::vector<int64_t> ranks;
  std::vector<int64_t> steps;  // the latest `last` complete ones, oldest first
  std::vector<std::vector<std::optional<double>>> wall;
  std::string coverage;
};

// ---- GET /api/cluster/<job>/stacks ----
// Every rank's threads, grouped: ranks whose thread has the same stack share a group.
struct ClusterStackGroup {
  std::string thread_name;
  std::vector<int64_t> ranks;
  bool holds_gil = false;          // in at least one of its ranks
  std::vector<StackFrame> frames;  // innermost first
};

struct ClusterStacksReply {
  std::vector<ClusterStackGroup> groups;  // the odd ones out (fewest ranks) first
  std::string coverage;
};

// ---- GET /api/cluster/<job>/stragglers ----
// cluster::Stragglers over the job's latest steps: the rank that arrives last, worst first.
struct StragglerRow {
  int64_t rank = -1;
  std::string host;
  int64_t pid = 0;
  double late_ms = 0;  // median over the steps of its lateness in the step
  double max_late_ms = 0;
  double step_ms = 0;
  int64_t steps = 0;
  bool late = false;
  std::string frame;  // where its main thread was while the others waited
  double frame_share = 0;
  std::vector<std::pair<int64_t, double>> arrivals;  // (step, its lateness in it, ms)
};

struct ClusterStragglersReply {
  std::string arrival;  // what was compared (backward start, collectives)
  int64_t first_step = 0, last_step = 0;
  std::string problem;  // non-empty: nothing could be compared, and why
  std::vector<StragglerRow> ranks;
  std::string coverage;
};

// ---- GET /api/cluster/<job>/hang ----
// cluster::Hang: each rank's progress and main-thread stack, and the verdict.
struct HangRow {
  int64_t rank = -1;
  std::string state;  // ok, dead, stopped, timeout, unreachable, never registered
  std::string why;
  std::optional<int64_t> step;
  std::optional<int64_t> collective;  // the highest sequence number of the default group
  std::string op;                     // the collective it is in now
  double stalled_s = 0;
  std::vector<std::string> frames;  // its main thread, innermost first
};

struct ClusterHangReply {
  std::string verdict;
  std::vector<int64_t> culprits;
  std::vector<HangRow> ranks;
};

void to_json(Json& j, const ProcessEntry& v);
void to_json(Json& j, const JobEntry& v);
void to_json(Json& j, const NamedTarget& v);
void to_json(Json& j, const TargetsReply& v);
void to_json(Json& j, const ThreadEntry& v);
void to_json(Json& j, const OverviewReply& v);
void to_json(Json& j, const StackFrame& v);
void to_json(Json& j, const ThreadStack& v);
void to_json(Json& j, const StacksReply& v);
void to_json(Json& j, const FlameNode& v);
void to_json(Json& j, const FlameReply& v);
void to_json(Json& j, const StepRow& v);
void to_json(Json& j, const ModuleRow& v);
void to_json(Json& j, const StepsReply& v);
void to_json(Json& j, const MemoryReply& v);
void to_json(Json& j, const VariableRow& v);
void to_json(Json& j, const MetricRow& v);
void to_json(Json& j, const VariablesReply& v);
void to_json(Json& j, const QueryRequest& v);
void from_json(const Json& j, QueryRequest& v);
void to_json(Json& j, const QueryReply& v);
void to_json(Json& j, const ClusterMember& v);
void to_json(Json& j, const ClusterReply& v);
void to_json(Json& j, const ClusterStepsReply& v);
void to_json(Json& j, const ClusterStackGroup& v);
void to_json(Json& j, const ClusterStacksReply& v);
void to_json(Json& j, const StragglerRow& v);
void to_json(Json& j, const ClusterStragglersReply& v);
void to_json(Json& j, const HangRow& v);
void to_json(Json& j, const ClusterHangReply& v);

template <typename T>
Json ToJson(const T& v) {
  Json j;
  to_json(j, v);
  return j;
}

// Every message with the names of its fields on the wire, for the documentation check.
std::vector<protocol::MessageFields> AllMessageFields();

}  // namespace probing::web
