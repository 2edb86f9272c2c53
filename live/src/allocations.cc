#include "probing/live/allocations.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "probing/live/function_names_py.h"
#include "probing/live/session.h"

namespace probing::live {
namespace {

using json = nlohmann::json;

// Defines, in a module of its own in the target (sys.modules["_probing_memory_top"], never
// __main__), what the three evals of a trace call: start (tracemalloc on unless it is, a guard
// timer), step 1 (the first snapshot), step 2 (the second, the comparison, the end), and end.
// The two snapshots are taken by evals of the same shape, so that what an eval itself holds
// while it runs (its parsed code, its output buffers) is in both and cancels out, and whatever
// a trace creates once (the guard's thread, the filters' compiled patterns) exists before the
// first. The state says which first snapshots are open (by key) and whether tracemalloc was
// started here, so it is stopped once the last trace ends and never when the program started it.
// Each function prints one JSON object.
constexpr char kTargetCode[] = R"PY(
import json, threading, time, tracemalloc

if "traces" not in globals():
    ours = False   # tracemalloc was started here, not by the program
    traces = {}    # key -> [first snapshot, monotonic time of it, guard timer]
    lock = threading.Lock()


def take():
    # What this code and tracemalloc allocate themselves is no allocation site of the program.
    return tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<probing*"),
    ])


def end(key):
    global ours
    with lock:
        trace = traces.pop(key, None)
        if trace is not None:
            trace[2].cancel()
        if ours and not traces:
            ours = False
            if tracemalloc.is_tracing():
                tracemalloc.stop()


def start(key, guard_s):
    global ours
    guard = threading.Timer(guard_s, end, (key,))
    guard.daemon = True
    guard.name = "probing memory --top guard"
    with lock:
        was = tracemalloc.is_tracing()
        if not was:
            tracemalloc.start(1)
            ours = True
        traces[key] = [None, 0.0, guard]
        guard.start()
    try:
        take()  # the filters' patterns compiled and cached before the first snapshot
    except BaseException:
        end(key)
        raise
    print(json.dumps({"was_tracing": was and not ours}))


def step(key, which, limit):
    trace = traces.get(key)
    if trace is None:
        raise RuntimeError("the trace has ended: its guard ran out, or it was ended")
    if which == 1:
        trace[0] = take()
        trace[1] = time.monotonic()
        print("{}")
        return
    if trace[0] is None:
        raise RuntimeError("the trace has no first snapshot")
    try:
        second = take()
        seconds = time.monotonic() - trace[1]
        grown = [d for d in second.compare_to(trace[0], "lineno") if d.size_diff > 0]
        grown.sort(key=lambda d: (-d.size_diff, -d.count_diff))
        traced = tracemalloc.get_traced_memory()[0]
        overhead = tracemalloc.get_tracemalloc_memory()
        frames = tracemalloc.get_traceback_limit()
    finally:
        end(key)
    cache = {}
    sites = []
    for d in grown[:limit]:
        frame = d.traceback[0]
        sites.append({"file": frame.filename, "line": frame.lineno,
                      "function": function_at(frame.filename, frame.lineno, cache),
                      "size_diff": d.size_diff, "count_diff": d.count_diff,
                      "size": d.size, "count": d.count})
    print(json.dumps({"seconds": seconds, "frames": frames, "sites": sites,
                      "sites_grown": len(grown), "grown_bytes": sum(d.size_diff for d in grown),
                      "traced_bytes": traced, "overhead_bytes": overhead}))
)PY";

constexpr char kModule[] = "__import__('sys').modules['_probing_memory_top']";

std::string RandomKey() {
  unsigned char bytes[8] = {};
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, bytes, sizeof bytes) != static_cast<ssize_t>(sizeof bytes)) bytes[0] = 0;
    close(fd);
  }
  char hex[17];
  for (size_t i = 0; i < sizeof bytes; ++i) std::snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
  return std::string(hex, 16) + std::to_string(getpid());
}

// Runs `code` in the target and returns the JSON object it printed.
Result<json> RunInTarget(Session& session, const std::string& code) {
  protocol::EvalRequest request{code, session.options().timeout_s};
  PROBING_ASSIGN_OR_RETURN(protocol::EvalReply reply, session.Eval(request));
  if (reply.exception)
    return Internal("tracemalloc in " + session.Describe() + " failed: " + reply.exception->type +
                    ": " + reply.exception->message);
  json out = json::parse(reply.out, nullptr, /*allow_exceptions=*/false);
  if (!out.is_object())
    return DataLoss("tracemalloc in " + session.Describe() +
                    " answered what is not JSON: " + reply.out.substr(0, 200));
  return out;
}

// A call of one of kTargetCode's functions; a JSON string or number is a Python literal too.
std::string Call(const std::string& function, const json& args) {
  std::string out = std::string(kModule) + "." + function + "(";
  for (size_t i = 0; i < args.size(); ++i) out += (i ? ", " : "") + args[i].dump();
  return out + ")";
}

template <typename T>
T Get(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return fallback;
  }
}

}  // namespace

Result<AllocationTrace> AllocationTrace::Start(Session& session, double guard_s, size_t limit) {
  AllocationTrace trace(&session, RandomKey());
  trace.open_ = false;  // nothing to end in the target until start ran
  // The module, then start; `exec` in the module's own namespace leaves __main__ untouched.
  const std::string define =
      "exec(compile(" + json(std::string(kTargetCode) + kFunctionNamesPython).dump() +
      ", '<probing memory --top>', 'exec'), __import__('sys').modules.setdefault("
      "'_probing_memory_top', __import__('types').ModuleType('_probing_memory_top')).__dict__)\n";
  PROBING_ASSIGN_OR_RETURN(
      json started,
      RunInTarget(session, define + Call("start", json::array({trace.key_, guard_s}))));
  trace.open_ = true;  // from here on, the destructor ends it on every path
  trace.was_tracing_ = Get<bool>(started, "was_tracing", false);
  trace.limit_ = limit;
  PROBING_RETURN_IF_ERROR(
      RunInTarget(session, Call("step", json::array({trace.key_, 1, limit}))).status());
  return trace;
}

AllocationTrace::AllocationTrace(AllocationTrace&& other) noexcept
    : session_(other.session_),
      key_(std::move(other.key_)),
      was_tracing_(other.was_tracing_),
      limit_(other.limit_),
      open_(other.open_) {
  other.open_ = false;
}

AllocationTrace::~AllocationTrace() {
  if (open_) (void)Abandon();
}

Result<AllocationGrowth> AllocationTrace::Finish() {
  open_ = false;  // the target ends the trace whatever happens to the answer
  PROBING_ASSIGN_OR_RETURN(json j,
                           RunInTarget(*session_, Call("step", json::array({key_, 2, limit_}))));
  AllocationGrowth g;
  g.was_tracing = was_tracing_;
  g.seconds = Get<double>(j, "seconds", 0);
  g.frames = Get<int64_t>(j, "frames", 0);
  g.sites_grown = Get<int64_t>(j, "sites_grown", 0);
  g.grown_bytes = Get<int64_t>(j, "grown_bytes", 0);
  g.traced_bytes = Get<int64_t>(j, "traced_bytes", 0);
  g.overhead_bytes = Get<int64_t>(j, "overhead_bytes", 0);
  auto sites = j.find("sites");
  if (sites != j.end() && sites->is_array()) {
    for (const json& s : *sites) {
      if (!s.is_object()) continue;
      AllocationSite site;
      site.file = Get<std::string>(s, "file", "");
      site.line = Get<int64_t>(s, "line", 0);
      site.function = Get<std::string>(s, "function", "");
      site.size_diff = Get<int64_t>(s, "size_diff", 0);
      site.count_diff = Get<int64_t>(s, "count_diff", 0);
      site.size = Get<int64_t>(s, "size", 0);
      site.count = Get<int64_t>(s, "count", 0);
      g.sites.push_back(std::move(site));
    }
  }
  return g;
}

Status AllocationTrace::Abandon() {
  if (!open_) return Status::Ok();
  open_ = false;
  // end() returns None: nothing printed, so the answer is checked for an exception only.
  PROBING_ASSIGN_OR_RETURN(
      protocol::EvalReply reply,
      session_->Eval({Call("end", json::array({key_})), session_->options().timeout_s}));
  if (reply.exception)
    return Internal("ending tracemalloc in " + session_->Describe() +
                    " failed: " + reply.exception->type + ": " + reply.exception->message);
  return Status::Ok();
}

}  // namespace probing::live
