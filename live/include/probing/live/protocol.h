// The control protocol between the recorder's server and every client (CLI, Python API, the
// cluster fan-out, the web server): its paths, one struct per request and per answer, and their
// JSON, written once here and used by both ends. docs/protocol.md describes the same messages;
// protocol_test checks that it names every field defined here.
//
//   // client
//   protocol::BacktraceRequest req;
//   req.locals = true;
//   std::string target = req.Target();                // "/backtrace?locals=1"
//   PROBING_ASSIGN_OR_RETURN(auto bt, protocol::Parse<protocol::BacktraceReply>(body,
//   "backtrace"));
//   // server
//   PROBING_ASSIGN_OR_RETURN(auto req, protocol::BacktraceRequest::FromQuery(query));
//   reply.body = protocol::ToJson(answer).dump();
//
// The library is small on purpose (nlohmann/json, base, format's byte helpers): the recorder,
// which lives inside the target, links it too.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "probing/base/cell.h"
#include "probing/base/status.h"

namespace probing::protocol {

using Json = nlohmann::json;

// The control socket's abstract name, without its leading NUL: "probing-<pid>". A recorder
// that finds that name held by another process listens on "probing-<pid>.<16 hex digits>"
// instead; clients find it in /proc/net/unix and trust it, like the usual one, only when the
// target itself listens on it.
inline constexpr std::string_view kSocketPrefix = "probing-";
inline std::string SocketName(int64_t pid) {
  return std::string(kSocketPrefix) + std::to_string(pid);
}

// The file in a recorder's ring directory holding the TCP token it made when PROBING_PORT came
// without PROBING_AUTH_TOKEN: the token and a newline, mode 0600. Clients on the same host read
// it for a host:port target that is this recorder (Session::Open); it is removed at exit.
inline constexpr std::string_view kTokenFile = "token";

// Paths (GET unless noted).
inline constexpr std::string_view kInfoPath = "/info";
inline constexpr std::string_view kEvalPath = "/eval";  // POST
inline constexpr std::string_view kBacktracePath = "/backtrace";
inline constexpr std::string_view kConfigPath = "/config";  // GET, POST
inline constexpr std::string_view kTablesPath = "/tables";  // and /tables/<name>
inline constexpr std::string_view kSegmentsPath = "/segments";
inline constexpr std::string_view kSealPath = "/seal";  // POST
inline constexpr std::string_view kClusterPath = "/cluster";
inline constexpr std::string_view kProgressPath = "/progress";
// The media type of a segment batch (binary, EncodeSegmentBatch); every other answer is JSON.
inline constexpr std::string_view kSegmentsMediaType = "application/vnd.probing.segments";

// Every error answer: {"error": "<one line for the user>"} with an HTTP status.
struct ErrorReply {
  std::string error;
};

struct InfoReply {
  int64_t pid = 0;
  std::string python_version;
  std::string cmdline;
  std::string recorder_version;
  double uptime = 0;  // seconds since the recorder started
  std::string host;
  std::string data_dir;  // where its rings are, on its host
  std::string socket;    // "@probing-<pid>"
  double now = 0;        // the recorder's clock (Unix seconds) when it answered: clock offsets
  std::optional<int64_t> rank;  // distributed rank, when known
  // Its place in a distributed job (system.process has the same): absent outside a job.
  std::optional<std::string> run_id;
  std::optional<int64_t> world_size;
  std::optional<int64_t> local_rank;
  std::optional<std::string> node;
  std::string role;                 // "rank", "launcher", "child" or "process"
  std::optional<int64_t> tcp_port;  // where it listens on TCP (PROBING_PORT + local rank)
  struct Enabled {
    bool stack_sampler = false;
    bool memory_sampler = false;
    bool torch = false;
    bool tcp = false;
  } enabled;
  struct Torch {
    bool tracing = false;  // torch imported and the tracer installed
    int64_t step = 0;
    bool step_traced = false;
    bool hooks_installed = false;
    // The overhead budget (probing.torch.budget, docs/torch.md#overhead-budget): absent before
    // the tracer installs and from older recorders.
    struct Budget {
      std::optional<double> fraction;  // of step time; null: off
      double cost_share = 0;           // the tracer's cost over step time, about the last 100 steps
      double traced_share = 0;         // steps traced, about the last 100
      double traced_step_cost_ms = 0;  // what tracing a step adds, smoothed
      double untraced_step_cost_ms = 0;  // what an untraced step costs (the step's bookkeeping)
      uint64_t left_out = 0;             // steps the budget left out, since the tracer started
      uint64_t stride = 1;  // traced steps are multiples of it (among those the rate picks)
      bool calibrated = false;           // the untimed calls' prices were measured
      double wrap_call_ns = 0, hook_call_ns = 0, grad_hook_ns = 0;  // those prices
    };
    std::optional<Budget> budget;
  } torch;
  // The stack sampler's thread samples since the recorder started (absent from older recorders).
  struct StackSamples {
    uint64_t stored = 0;                      // in the rings
    uint64_t dropped_changed_while_read = 0;  // changed on both tries: left out, never stored torn
    uint64_t read_twice = 0;                  // stored after a second read
    uint64_t waiting_for_thread_name = 0;     // held until the thread's name is known
  };
  std::optional<StackSamples> stack_samples;
  // How the last pass read interpreter memory: "fault guard" or "process_vm_readv (<why>)".
  std::optional<std::string> stack_reads;
  // Why a table gets no rows, one line each ("gpu_metrics: no NVML (...)"); absent from older
  // recorders.
  std::optional<std::vector<std::string>> notes;
};

struct EvalRequest {
  std::string code;
  double timeout = 30;  // seconds, 0 < t <= 3600
};

struct EvalException {
  std::string type;
  std::string message;
  std::string traceback;
};

struct EvalReply {
  std::string out;                   // "stdout" on the wire
  std::string err;                   // "stderr" on the wire
  std::optional<std::string> value;  // repr of a final expression, when there is one
  std::optional<EvalException> exception;
  double duration = 0;
};

struct BacktraceRequest {
  uint64_t thread = 0;  // OS thread id; 0: every thread
  bool locals = false;
  bool native = false;
  // "/backtrace" with its query string.
  std::string Target() const;
  static Result<BacktraceRequest> FromQuery(const std::map<std::string, std::string>& query);
};

struct Frame {
  std::string func;
  std::string file;
  std::optional<int64_t> lineno;                             // null for native frames
  int64_t depth = 0;                                         // 0 = innermost
  std::string frame_type;                                    // "Python" or "Native"
  std::optional<std::string> ip;                             // native: "0x7f..."
  std::optional<int64_t> offset;                             // native: from the symbol's start
  std::optional<std::map<std::string, std::string>> locals;  // name -> repr
};

struct ThreadBacktrace {
  uint64_t thread_id = 0;
  std::string thread_name;
  bool holds_gil = false;
  bool truncated = false;     // deeper than the sampler reads: its outermost frames left out
  bool inconsistent = false;  // kept changing on every read: its frames as last read
  std::optional<int64_t> stopped_us;        // native: how long the thread was held
  std::optional<std::string> native_error;  // native: why its native frames are missing
  std::vector<Frame> frames;                // innermost first
};

struct BacktraceReply {
  std::vector<ThreadBacktrace> threads;
  std::optional<std::string> locals_error;
};

struct ConfigSetRequest {
  std::string key;
  std::string value;
};

struct Setting {
  std::string name;
  std::string value;
  std::string default_value;  // "default" on the wire
  std::string description;
  bool read_only = false;
};

struct ConfigReply {
  std::vector<Setting> settings;
};

struct TablesReply {
  std::vector<std::string> tables;  // names registered with @probing.table
};

struct TableColumn {
  std::string name;
  std::string type;  // INTEGER, REAL or TEXT
};

struct TableRowsReply {
  std::vector<TableColumn> columns;
  std::vector<std::vector<Cell>> rows;
};

// One member of a distributed job, as it registered itself in the job's store.
struct Member {
  int64_t rank = -1;
  int64_t local_rank = -1;
  std::string host;  // the host name its process runs on
  std::string node;
  int64_t pid = 0;
  std::optional<int64_t> port;  // its TCP control port; absent: no TCP (same host only)
};

// GET /cluster: what this rank knows of its job. Answered without the GIL, from what the
// recorder read from the job's store (docs/distributed.md).
struct ClusterReply {
  std::string run_id;
  int64_t world_size = -1;
  std::vector<Member> members;  // by rank, those registered so far
  bool complete = false;        // every rank has registered
};

// GET /progress: how far this rank has got, without the GIL (hang diagnosis).
struct ProgressReply {
  double now = 0;            // the recorder's clock when it answered (Unix seconds)
  int64_t step = 0;          // the training step (python.torch_trace's)
  double step_changed = 0;   // when it last moved (Unix seconds; 0: never seen)
  struct Group {
    std::string name;     // "default", "ranks 0,1"
    int64_t seq = 0;      // its last sequence number seen
    double changed = 0;   // when it last moved
  };
  std::vector<Group> groups;
  struct Call {
    std::string op, group;
    int64_t seq = 0;   // the number it takes (the group's + 1)
    double since = 0;  // when it entered
    int64_t thread_id = 0;
  };
  std::optional<Call> current;  // a Python collective call under way
  int64_t collectives = 0;      // calls seen so far
  double stalled = 0;           // seconds since the last progress (a step or a collective)
  int64_t hang_seconds = 0;     // probing.hang.seconds
};

struct SealReply {
  int64_t sealed = 0;  // segments sealed by this request (0: nothing was open, or sealed lately)
};

// GET /segments: sealed segments of the target's rings, as they lie in them (checksummed,
// compressed), so the client decodes them and runs the same SQL as on local rings.
struct SegmentsRequest {
  // ring name ("stacks") -> the first seq wanted; a ring not named starts at its oldest segment.
  std::map<std::string, uint64_t> from;
  std::vector<std::string> rings;         // only these rings; empty: every ring
  bool seal = false;                      // seal the open segments first (as POST /seal)
  uint64_t max_bytes = kDefaultMaxBytes;  // the answer stops after the segment that crosses it
  static constexpr uint64_t kDefaultMaxBytes = 16u << 20;
  std::string Target() const;
  static Result<SegmentsRequest> FromQuery(const std::map<std::string, std::string>& query);
};

struct RingState {
  std::string name;     // "stacks"
  uint64_t oldest = 0;  // the oldest seq still in the ring
  uint64_t next = 0;    // the seq the next sealed segment will carry
  uint64_t from = 0;    // where this answer started
  uint64_t to = 0;      // the cursor to send next time
  uint64_t lost = 0;    // segments in [from, to) that were overwritten before they were read
};

struct SegmentBatch {
  std::vector<RingState> rings;
  struct Item {
    uint32_t ring = 0;  // index into rings
    uint64_t seq = 0;
    std::string bytes;  // one sealed segment
  };
  std::vector<Item> segments;
  bool more = false;   // max_bytes was reached: ask again from the new cursors
  int64_t sealed = 0;  // segments sealed by this request's seal=1
};

// The binary body of a segment batch (docs/protocol.md): "PSB1", the header (rings, more, sealed)
// as length-prefixed JSON, then each segment as ring index, seq and length-prefixed bytes.
std::string EncodeSegmentBatch(const SegmentBatch& batch);
// Distrusts its input: any inconsistency is a DataLoss naming what was wrong.
Result<SegmentBatch> DecodeSegmentBatch(std::string_view body);

// JSON, both ways. from_json throws nlohmann's exceptions; Parse catches them.
void to_json(Json& j, const ErrorReply& v);
void from_json(const Json& j, ErrorReply& v);
void to_json(Json& j, const InfoReply& v);
void from_json(const Json& j, InfoReply& v);
void to_json(Json& j, const EvalRequest& v);
void from_json(const Json& j, EvalRequest& v);
void to_json(Json& j, const EvalReply& v);
void from_json(const Json& j, EvalReply& v);
void to_json(Json& j, const Frame& v);
void from_json(const Json& j, Frame& v);
void to_json(Json& j, const ThreadBacktrace& v);
void from_json(const Json& j, ThreadBacktrace& v);
void to_json(Json& j, const BacktraceReply& v);
void from_json(const Json& j, BacktraceReply& v);
void to_json(Json& j, const ConfigSetRequest& v);
void from_json(const Json& j, ConfigSetRequest& v);
void to_json(Json& j, const Setting& v);
void from_json(const Json& j, Setting& v);
void to_json(Json& j, const ConfigReply& v);
void from_json(const Json& j, ConfigReply& v);
void to_json(Json& j, const TablesReply& v);
void from_json(const Json& j, TablesReply& v);
void to_json(Json& j, const TableRowsReply& v);
void from_json(const Json& j, TableRowsReply& v);
void to_json(Json& j, const Member& v);
void from_json(const Json& j, Member& v);
void to_json(Json& j, const ClusterReply& v);
void from_json(const Json& j, ClusterReply& v);
void to_json(Json& j, const ProgressReply& v);
void from_json(const Json& j, ProgressReply& v);
void to_json(Json& j, const SealReply& v);
void from_json(const Json& j, SealReply& v);
void to_json(Json& j, const RingState& v);
void from_json(const Json& j, RingState& v);

// A JSON value as a cell (booleans as 0/1, arrays and objects as their JSON text), and back.
Cell CellFromJson(const Json& v);
Json CellToJson(const Cell& c);

template <typename T>
Json ToJson(const T& v) {
  Json j;
  to_json(j, v);
  return j;
}

// Parses `body` as T; a body that is not JSON or lacks a field is a DataLoss that names `what`
// ("the recorder's answer to info is not what this client expects: ...").
template <typename T>
Result<T> Parse(std::string_view body, std::string_view what) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return DataLoss("the answer to " + std::string(what) + " is not JSON");
  try {
    return j.get<T>();
  } catch (const std::exception& e) {
    return DataLoss("the answer to " + std::string(what) +
                    " is not what this client expects (another version?): " + e.what());
  }
}

// The path and the decoded query parameters of a request target ("/backtrace?thread=7").
struct RequestTarget {
  std::string path;
  std::map<std::string, std::string> query;
};
RequestTarget ParseRequestTarget(std::string_view target);
std::string UrlEncode(std::string_view s);

// Every message with the names of its fields on the wire, for the documentation check.
struct MessageFields {
  std::string message;
  std::vector<std::string> fields;
};
std::vector<MessageFields> AllMessageFields();

}  // namespace probing::protocol
