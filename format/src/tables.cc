#include "probing/format/tables.h"

#include <array>
#include <string>

namespace probing::format {
namespace {

using enum ColumnType;

constexpr Column kStacksColumns[] = {
    {"ts", kReal, "sample time, seconds since the Unix epoch"},
    {"thread_id", kInteger, "OS thread id"},
    {"thread_name", kText, "Python thread name"},
    {"sample_id", kInteger, "identifies one sample (all frames of one stack share it)"},
    {"depth", kInteger, "0 = innermost frame"},
    {"func", kText, "function name: qualified (Class.method) on Python 3.11+, plain on 3.8-3.10"},
    {"file", kText, "source file"},
    {"lineno", kInteger, "current line in that frame"},
    {"holds_gil", kInteger, "1 if the thread held the GIL when sampled"},
    {"pid", kInteger,
     "process id of the recorder that wrote the row (tells several recordings apart)"},
};
constexpr Column kTorchColumns[] = {
    {"step", kInteger, "training step (optimizer steps; outermost forwards in inference)"},
    {"seq", kInteger, "order of the call within its step"},
    {"module", kText, "qualified module name in the model, e.g. layer1.0.conv1"},
    {"stage", kText, "forward, backward or step"},
    {"allocated", kReal, "CUDA memory allocated, MB; NULL without CUDA"},
    {"max_allocated", kReal, "peak CUDA memory allocated, MB; NULL without CUDA"},
    {"cached", kReal, "CUDA memory reserved by the caching allocator, MB; NULL without CUDA"},
    {"duration", kReal, "seconds"},
    {"time", kReal, "start of the call, seconds since the Unix epoch"},
    {"thread_id", kInteger, "OS thread id"},
    {"rank", kInteger, "distributed rank; NULL when unknown"},
    {"operation_name", kText, "the seeds' name of module"},
    {"duration_ms", kReal, "duration in milliseconds (the seeds' name)"},
    {"timestamp", kReal, "the seeds' name of time"},
    {"pid", kInteger,
     "process id of the recorder that wrote the row (tells several recordings apart)"},
};
constexpr Column kVariablesColumns[] = {
    {"step", kInteger, "training step"},
    {"func", kText, "function the variable lives in"},
    {"name", kText, "variable name"},
    {"value", kText, "repr of the value (capped); a one-element tensor as its number"},
    {"time", kReal, "seconds since the Unix epoch"},
    {"thread_id", kInteger, "OS thread id"},
    {"pid", kInteger,
     "process id of the recorder that wrote the row (tells several recordings apart)"},
};
constexpr Column kMemoryColumns[] = {
    {"ts", kReal, "seconds since the Unix epoch"},
    {"rss", kInteger, "resident set size, bytes"},
    {"vms", kInteger, "virtual memory size, bytes"},
    {"py_blocks", kInteger,
     "blocks allocated by Python's allocator; NULL when the GIL was not to be had"},
    {"gc_gen0", kInteger, "GC generation 0 count (gc.get_count()); NULL as py_blocks"},
    {"gc_gen1", kInteger, "GC generation 1 count; NULL as py_blocks"},
    {"gc_gen2", kInteger, "GC generation 2 count; NULL as py_blocks"},
    {"gc_collections", kInteger, "GC collections so far, all generations; NULL as py_blocks"},
    {"threads", kInteger, "threads in the process"},
    {"cuda_allocated", kInteger, "CUDA memory allocated, bytes; NULL without CUDA"},
    {"cuda_reserved", kInteger, "CUDA memory reserved, bytes; NULL without CUDA"},
    {"pid", kInteger,
     "process id of the recorder that wrote the row (tells several recordings apart)"},
};
constexpr Column kCollectivesColumns[] = {
    {"time", kReal, "when the rank entered the call (its arrival), seconds since the Unix epoch"},
    {"end_time", kReal, "when it returned (async: when its wait() returned); NULL when unknown"},
    {"duration", kReal, "end_time - time, seconds; NULL when unknown"},
    {"process_group", kText, "the process group: default, or the ranks of a new_group"},
    {"seq", kInteger, "the group's sequence number of the call: the same call has the same number on every rank"},
    {"op", kText, "all_reduce, broadcast, all_gather, reduce_scatter, barrier, send, recv, ...; NULL for counted calls"},
    {"bytes", kInteger, "bytes of the tensors it took (all of a list); NULL for counted calls"},
    {"dtype", kText, "element type, e.g. torch.float32; NULL for counted calls"},
    {"numel", kInteger, "elements of the tensors it took; NULL for counted calls"},
    {"peer", kInteger, "send/recv: the other rank; NULL otherwise"},
    {"async_op", kInteger, "1 when called with async_op=True"},
    {"step", kInteger, "the training step it belongs to (python.torch_trace's step)"},
    {"source", kText, "python (a call of torch.distributed's Python API, timed) or counted (issued from C++, e.g. DDP's gradient all-reduce: known from the group's sequence number, time = when it was noticed)"},
    {"thread_id", kInteger, "OS thread id of the caller"},
    {"rank", kInteger, "distributed rank; NULL when unknown"},
    {"pid", kInteger, "process id of the recorder that wrote the row (tells several recordings apart)"},
};
constexpr Column kMetricsColumns[] = {
    {"name", kText, "metric name given to @probing.metric"},
    {"value", kReal, "reading"},
    {"time", kReal, "seconds since the Unix epoch"},
    {"pid", kInteger,
     "process id of the recorder that wrote the row (tells several recordings apart)"},
};
constexpr Column kProcessColumns[] = {
    {"pid", kInteger, "process id"},
    {"cmdline", kText, "command line, arguments joined by spaces"},
    {"python_version", kText, "e.g. 3.11.2"},
    {"start_time", kReal, "process start, seconds since the Unix epoch"},
    {"host", kText, "host name"},
    {"rank", kInteger, "distributed rank; NULL when unknown"},
    {"run_id", kText,
     "the job it belongs to (TORCHELASTIC_RUN_ID, SLURM_JOB_ID, or MASTER_ADDR:MASTER_PORT); NULL "
     "outside a job"},
    {"world_size", kInteger, "ranks in the job; NULL when unknown"},
    {"local_rank", kInteger, "rank on its node; NULL when unknown"},
    {"node", kText, "node name (SLURMD_NODENAME, else the host name); NULL outside a job"},
    {"role", kText,
     "rank, launcher (torchrun's agent), child (a forked child), or process; NULL in recordings of "
     "older recorders"},
};
constexpr Column kBacktraceColumns[] = {
    {"func", kText, "function name: qualified (Class.method) on Python 3.11+, plain on 3.8-3.10 (native frames: the symbol)"},
    {"file", kText, "source file (native frames: the shared object)"},
    {"lineno", kInteger, "current line; NULL for native frames"},
    {"depth", kInteger, "0 = innermost frame"},
    {"frame_type", kText, "Python or Native"},
    {"thread_id", kInteger, "OS thread id"},
    {"thread_name", kText, "Python thread name"},
};
constexpr Column kSettingsColumns[] = {
    {"name", kText, "configuration key"},
    {"value", kText, "current value"},
};

constexpr Column kGpuColumns[] = {
    {"timestamp", kReal, "when read, seconds since the Unix epoch"},
    {"gpu", kInteger, "device index (NVML's, as nvidia-smi numbers them)"},
    {"gpu_util", kInteger, "percent of the driver's last sample period a kernel was running; NULL when the driver would not say"},
    {"memory_util", kInteger, "percent of that period device memory was read or written; NULL as gpu_util"},
    {"memory_used", kInteger, "device memory in use, bytes (all processes); NULL when the driver would not say"},
    {"memory_total", kInteger, "device memory, bytes; NULL as memory_used"},
    {"pid", kInteger,
     "process id of the recorder that wrote the row (tells several recordings apart)"},
};
constexpr Column kAllocationsColumns[] = {
    {"timestamp", kReal, "the tracemalloc snapshot, seconds since the Unix epoch"},
    {"function_name", kText, "the function around the line (Class.method, <module>); empty when its source could not be read"},
    {"file", kText, "source file"},
    {"line", kInteger, "line that allocated"},
    {"allocated_bytes", kInteger, "bytes allocated at that line and not yet freed at the snapshot"},
    {"count", kInteger, "memory blocks those bytes are in"},
    {"pid", kInteger,
     "process id of the recorder that wrote the row (tells several recordings apart)"},
};

constexpr Column kTorchStepsColumns[] = {
    {"step", kInteger, "training step (as python.torch_trace's step)"},
    {"time", kReal, "start of the step (the previous step's end), seconds since the Unix epoch"},
    {"duration", kReal, "seconds from the previous step's end to this step's end"},
    {"traced", kInteger,
     "1 when the step's module calls were traced (rows in python.torch_trace), else 0"},
    {"decision", kText,
     "traced, sample_rate (probing.sample_rate left it out) or budget (the overhead budget left "
     "it out)"},
    {"cost", kReal,
     "seconds the tracer's own code took in this step (measured by the tracer, with its estimate "
     "of what it cannot time)"},
    {"budget", kReal,
     "probing.torch.budget as a fraction of step time (0.01 for 1%); NULL when the budget is off"},
    {"thread_id", kInteger, "OS thread id that ended the step"},
    {"rank", kInteger, "distributed rank; NULL when unknown (as other tables fill it)"},
    {"pid", kInteger,
     "process id of the recorder that wrote the row (tells several recordings apart)"},
};

constexpr TableSchema kTables[] = {
    {TableId::kStacks, "python.stacks", TableSource::kRing,
     "stack samples: one row per frame of each sampled thread", kStacksColumns},
    {TableId::kTorchTrace, "python.torch_trace", TableSource::kRing,
     "one row per traced nn.Module forward/backward and optimizer step", kTorchColumns},
    {TableId::kVariables, "python.variables", TableSource::kRing,
     "tracked variables, once per traced step", kVariablesColumns},
    {TableId::kMemory, "python.memory", TableSource::kRing, "memory samples, once a second",
     kMemoryColumns},
    {TableId::kMetrics, "python.metrics", TableSource::kRing, "@probing.metric readings",
     kMetricsColumns},
    {TableId::kCollectives, "python.collectives", TableSource::kRing,
     "torch.distributed collective and point-to-point calls, one row each", kCollectivesColumns},
    {TableId::kProcess, "system.process", TableSource::kRing, "the recorded process",
     kProcessColumns},
    {TableId::kBacktrace, "python.backtrace", TableSource::kControl,
     "a fresh backtrace of every thread (live only)", kBacktraceColumns},
    {TableId::kSettings, "information_schema.df_settings", TableSource::kControl,
     "configuration keys and values (live only)", kSettingsColumns},
    {TableId::kGpu, "system.gpu", TableSource::kRing,
     "GPU utilization and memory per device, once a second (NVML); the seeds' gpu_metrics",
     kGpuColumns},
    {TableId::kAllocations, "python.allocations", TableSource::kRing,
     "the largest tracemalloc allocation sites, one snapshot every probing.memory.interval "
     "seconds while probing.memory.allocations is on; the seeds' memory_allocations",
     kAllocationsColumns},
    {TableId::kTorchSteps, "python.torch_steps", TableSource::kRing,
     "one row per training step, traced or not: its time, whether it was traced and why not, "
     "and what tracing cost",
     kTorchStepsColumns},
};
static_assert(std::size(kTables) == static_cast<size_t>(TableId::kTorchSteps) + 1,
              "kTables is indexed by TableId");

double Seconds(int64_t ns) { return static_cast<double>(ns) / 1e9; }
Value Mb(const std::optional<uint64_t>& bytes) {
  if (!bytes) return std::monostate{};
  return static_cast<double>(*bytes) / (1024.0 * 1024.0);
}
Value Int(const std::optional<uint64_t>& v) {
  if (!v) return std::monostate{};
  return static_cast<int64_t>(*v);
}

// The rank of the segment's writer, NULL when unknown.
Value Rank(const Segment& seg) {
  if (seg.processes.empty() || seg.processes.front().rank < 0) return std::monostate{};
  return int64_t{seg.processes.front().rank};
}

}  // namespace

const char* ColumnTypeName(ColumnType t) {
  switch (t) {
    case kInteger: return "INTEGER";
    case kReal: return "REAL";
    case kText: return "TEXT";
  }
  return "TEXT";
}

std::span<const TableSchema> AllTables() { return kTables; }

const TableSchema& GetTable(TableId id) { return kTables[static_cast<size_t>(id)]; }

const TableSchema* FindTable(std::string_view name) {
  for (const TableSchema& t : kTables)
    if (t.name == name) return &t;
  return nullptr;
}

void StackRow(const Segment& seg, size_t sample, uint32_t callsite, int64_t depth,
              std::span<Value> row) {
  const StackSample& s = seg.samples[sample];
  const Thread& th = seg.threads[s.thread];
  const CallSite& c = seg.callsites[callsite];
  const Frame& f = seg.frames[c.frame];
  row[0] = Seconds(s.ts);
  row[1] = static_cast<int64_t>(th.tid);
  row[2] = seg.String(th.name);
  // Stable across readers: the segment's seq and the sample's place in it.
  row[3] = static_cast<int64_t>((seg.info.seq << 24) + sample);
  row[4] = depth;
  row[5] = seg.String(f.func);
  row[6] = seg.String(f.file);
  row[7] = int64_t{c.line};
  row[8] = int64_t{(s.flags & kSampleHoldsGil) ? 1 : 0};
  row[9] = int64_t{seg.info.pid};
}

std::optional<Stream> TableStream(TableId id) {
  switch (id) {
    case TableId::kStacks: return Stream::kStacks;
    case TableId::kTorchTrace:
    case TableId::kTorchSteps: return Stream::kTorch;
    case TableId::kVariables: return Stream::kVariables;
    case TableId::kMemory: return Stream::kMemory;
    case TableId::kMetrics: return Stream::kMetrics;
    case TableId::kCollectives: return Stream::kCollectives;
    case TableId::kGpu:
    case TableId::kAllocations: return Stream::kMemory;
    case TableId::kProcess:
    case TableId::kBacktrace:
    case TableId::kSettings: return std::nullopt;
  }
  return std::nullopt;
}

void SegmentRows(const Segment& seg, TableId table, RowContext& ctx, const RowCallback& emit) {
  auto thread_tid = [&](uint32_t t) { return static_cast<int64_t>(seg.threads[t].tid); };
  switch (table) {
    case TableId::kStacks: {
      std::array<Value, 10> row;
      for (size_t i = 0; i < seg.samples.size(); ++i) {
        int64_t depth = 0;
        // Parents always precede children, so this walk ends; cap it against a corrupt cycle.
        for (uint32_t cs = seg.samples[i].callsite; cs != 0 && depth < 100000;
             cs = seg.callsites[cs].parent, ++depth) {
          StackRow(seg, i, cs, depth, row);
          emit(row);
        }
      }
      return;
    }
    case TableId::kTorchTrace: {
      Value rank = Rank(seg);
      std::array<Value, 15> row;
      row[14] = int64_t{seg.info.pid};
      for (const TorchEvent& e : seg.torch) {
        row[0] = static_cast<int64_t>(e.step);
        row[1] = static_cast<int64_t>(e.seq);
        row[2] = seg.String(e.module);
        row[3] = std::string_view(TorchStageName(e.stage));
        row[4] = Mb(e.allocated);
        row[5] = Mb(e.max_allocated);
        row[6] = Mb(e.cached);
        row[7] = static_cast<double>(e.duration_ns) / 1e9;
        row[8] = Seconds(e.ts);
        row[9] = thread_tid(e.thread);
        row[10] = rank;
        row[11] = row[2];
        row[12] = static_cast<double>(e.duration_ns) / 1e6;
        row[13] = row[8];
        emit(row);
      }
      return;
    }
    case TableId::kVariables: {
      std::array<Value, 7> row;
      row[6] = int64_t{seg.info.pid};
      for (const VariableEvent& e : seg.variables) {
        row[0] = static_cast<int64_t>(e.step);
        row[1] = seg.String(e.func);
        row[2] = seg.String(e.name);
        row[3] = std::string_view(e.value);
        row[4] = Seconds(e.ts);
        row[5] = thread_tid(e.thread);
        emit(row);
      }
      return;
    }
    case TableId::kMemory: {
      std::array<Value, 12> row;
      row[11] = int64_t{seg.info.pid};
      for (const MemoryEvent& e : seg.memory) {
        row[0] = Seconds(e.ts);
        row[1] = static_cast<int64_t>(e.rss);
        row[2] = static_cast<int64_t>(e.vms);
        auto py = [&](uint64_t v) {
          return e.has_python_stats ? Value{static_cast<int64_t>(v)} : Value{};
        };
        row[3] = py(e.py_blocks);
        row[4] = py(e.gc_count[0]);
        row[5] = py(e.gc_count[1]);
        row[6] = py(e.gc_count[2]);
        row[7] = py(e.gc_collections);
        row[8] = static_cast<int64_t>(e.threads);
        row[9] = Int(e.cuda_allocated);
        row[10] = Int(e.cuda_reserved);
        emit(row);
      }
      return;
    }
    case TableId::kMetrics: {
      std::array<Value, 4> row;
      row[3] = int64_t{seg.info.pid};
      for (const MetricEvent& e : seg.metrics) {
        row[0] = seg.String(e.name);
        row[1] = e.value;
        row[2] = Seconds(e.ts);
        emit(row);
      }
      return;
    }
    case TableId::kCollectives: {
      std::array<Value, 16> row;
      const Value rank = Rank(seg);
      for (const CollectiveEvent& e : seg.collectives) {
        auto text = [&](uint32_t id) { return id == 0 ? Value{} : Value{seg.String(id)}; };
        row[0] = Seconds(e.ts);
        row[1] = e.end_ts == 0 ? Value{} : Value{Seconds(e.end_ts)};
        row[2] = e.end_ts == 0 ? Value{} : Value{Seconds(e.end_ts - e.ts)};
        row[3] = text(e.group);
        row[4] = static_cast<int64_t>(e.seq);
        row[5] = text(e.op);
        row[6] = e.counted ? Value{} : Value{static_cast<int64_t>(e.bytes)};
        row[7] = text(e.dtype);
        row[8] = e.counted ? Value{} : Value{static_cast<int64_t>(e.numel)};
        row[9] = e.peer < 0 ? Value{} : Value{e.peer};
        row[10] = int64_t{e.async_op ? 1 : 0};
        row[11] = static_cast<int64_t>(e.step);
        row[12] = std::string_view(e.counted ? "counted" : "python");
        row[13] = e.thread == 0 ? Value{} : Value{thread_tid(e.thread)};
        row[14] = rank;
        row[15] = int64_t{seg.info.pid};
        emit(row);
      }
      return;
    }
    case TableId::kProcess: {
      std::array<Value, 11> row;
      auto text = [&](uint32_t id) { return id == 0 ? Value{} : Value{seg.String(id)}; };
      auto number = [](int32_t v) { return v < 0 ? Value{} : Value{int64_t{v}}; };
      for (const ProcessEvent& p : seg.processes) {
        // One row per process and identity: a process that learned its rank later (its
        // torch.distributed initialized after the recorder started) has a row for each.
        const std::string identity =
            std::to_string(p.rank) + "/" + std::string(seg.String(p.run_id)) + "/" +
            std::to_string(p.world_size) + "/" + std::to_string(p.local_rank);
        if (!ctx.seen_processes
                 .emplace(std::to_string(p.pid) + "/" + std::to_string(p.start_ts) + "/" + identity)
                 .second)
          continue;
        row[0] = int64_t{p.pid};
        row[1] = seg.String(p.cmdline);
        row[2] = seg.String(p.python_version);
        row[3] = Seconds(p.start_ts);
        row[4] = seg.String(p.host);
        row[5] = number(p.rank);
        row[6] = text(p.run_id);
        row[7] = number(p.world_size);
        row[8] = number(p.local_rank);
        row[9] = text(p.node);
        row[10] = text(p.role);
        emit(row);
      }
      return;
    }
    case TableId::kGpu: {
      std::array<Value, 7> row;
      row[6] = int64_t{seg.info.pid};
      auto opt = [](const auto& v) { return v ? Value{static_cast<int64_t>(*v)} : Value{}; };
      for (const GpuEvent& e : seg.gpus) {
        row[0] = Seconds(e.ts);
        row[1] = int64_t{e.gpu};
        row[2] = opt(e.gpu_util);
        row[3] = opt(e.memory_util);
        row[4] = opt(e.memory_used);
        row[5] = opt(e.memory_total);
        emit(row);
      }
      return;
    }
    case TableId::kAllocations: {
      std::array<Value, 7> row;
      row[6] = int64_t{seg.info.pid};
      for (const AllocationEvent& e : seg.allocations) {
        row[0] = Seconds(e.ts);
        row[1] = seg.String(e.func);
        row[2] = seg.String(e.file);
        row[3] = int64_t{e.line};
        row[4] = static_cast<int64_t>(e.bytes);
        row[5] = static_cast<int64_t>(e.count);
        emit(row);
      }
      return;
    }
    case TableId::kTorchSteps: {
      const Value rank = Rank(seg);
      std::array<Value, 10> row;
      row[9] = int64_t{seg.info.pid};
      for (const TorchStepEvent& e : seg.torch_steps) {
        row[0] = static_cast<int64_t>(e.step);
        row[1] = Seconds(e.ts_ns);
        row[2] = static_cast<double>(e.duration_ns) / 1e9;
        row[3] = int64_t{e.decision == kStepTraced ? 1 : 0};
        row[4] = std::string_view(StepDecisionName(e.decision));
        row[5] = static_cast<double>(e.cost_ns) / 1e9;
        row[6] = e.budget_ppm == 0 ? Value{} : Value{e.budget_ppm / 1e6};
        row[7] = e.thread == 0 ? Value{} : Value{thread_tid(e.thread)};
        row[8] = rank;
        emit(row);
      }
      return;
    }
    case TableId::kBacktrace:
    case TableId::kSettings:
      return;  // live-only tables: the control socket answers them, not segments
  }
}

}  // namespace probing::format
