// The events of a trace, as a decoder returns them: one Segment holds its own interning tables
// (strings, frames, call sites, threads) and one vector per event kind. Ids index those tables;
// id 0 means "none" in every table. See docs/format.md for the wire encoding.
//
//   const Segment& seg = ...;
//   for (const StackSample& s : seg.samples)
//     for (uint32_t cs = s.callsite; cs != 0; cs = seg.callsites[cs].parent)
//       printf("%s\n", seg.String(seg.frames[seg.callsites[cs].frame].func).data());
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace probing::format {

inline constexpr uint16_t kVersionMajor = 1;
inline constexpr uint16_t kVersionMinor = 1;  // 1.1: the sampler stats record (kind 64)

// Which ring a segment came from. kMixed is for files and tests that put every kind together.
enum class Stream : uint8_t {
  kMixed = 0,
  kStacks = 1,
  kTorch = 2,
  kMemory = 3,
  kVariables = 4,
  kMetrics = 5,
  kCollectives = 6,
};
inline constexpr uint8_t kMaxStream = 6;
const char* StreamName(Stream s);

// Record kinds on the wire (docs/format.md, "Payload records").
enum class RecordKind : uint8_t {
  kString = 1,
  kFrame = 2,
  kCallSite = 3,
  kThread = 4,
  kStackSample = 5,
  kTorch = 6,
  kMemory = 7,
  kVariable = 8,
  kMetric = 9,
  kProcess = 10,
  kLost = 11,
};
// Skippable kinds (64-127: length-prefixed; readers that do not know one skip it).
inline constexpr uint8_t kFirstSkippableKind = 64;
inline constexpr uint8_t kLastSkippableKind = 127;
// kSamplerStats (format 1.1): stack samples the sampler dropped or read twice.
inline constexpr uint8_t kSamplerStatsKind = 64;
// kJob follows a process record: the process's place in a distributed job.
inline constexpr uint8_t kJobRecordKind = 70;
// kCollective: one torch.distributed collective or point-to-point call, or a run of them counted
// from the process group's sequence number (issued from C++, as DDP's gradient all-reduce).
inline constexpr uint8_t kCollectiveRecordKind = 71;
// kGpu: one GPU's utilization and memory, as NVML reported it (memory stream).
inline constexpr uint8_t kGpuRecordKind = 72;
// kAllocation: one tracemalloc allocation site of a snapshot (memory stream).
inline constexpr uint8_t kAllocationRecordKind = 73;
// kTorchStep: one training step's time and whether its module calls were traced (torch stream).
inline constexpr uint8_t kTorchStepRecordKind = 74;

enum class TorchStage : uint8_t { kForward = 0, kBackward = 1, kStep = 2 };
inline constexpr uint8_t kMaxTorchStage = 2;
const char* TorchStageName(TorchStage s);

inline constexpr uint8_t kSampleHoldsGil = 1 << 0;
inline constexpr uint8_t kSampleTruncated = 1 << 1;
inline constexpr int kSampleFlagBits = 2;  // flags travel in the low bits of the thread field
inline constexpr uint8_t kSampleFlagMask = (1 << kSampleFlagBits) - 1;

struct Frame {
  uint32_t func = 0;  // string id
  uint32_t file = 0;  // string id
  uint32_t first_line = 0;
  bool operator==(const Frame&) const = default;
};

// A node of the stack prefix tree: `frame` at `line`, called from `parent` (0 = outermost).
struct CallSite {
  uint32_t parent = 0;
  uint32_t frame = 0;
  uint32_t line = 0;
  bool operator==(const CallSite&) const = default;
};

struct Thread {
  uint64_t tid = 0;   // OS thread id
  uint32_t name = 0;  // string id
  bool operator==(const Thread&) const = default;
};

struct StackSample {
  int64_t ts = 0;
  uint32_t thread = 0;    // thread id
  uint32_t callsite = 0;  // innermost call site; 0 = no Python frames
  uint8_t flags = 0;      // kSampleHoldsGil | kSampleTruncated
  bool operator==(const StackSample&) const = default;
};

struct TorchEvent {
  int64_t ts = 0;  // start of the call
  uint32_t thread = 0;
  uint64_t step = 0;
  uint64_t seq = 0;
  uint32_t module = 0;  // string id: qualified name in the model ("layer1.0.conv1")
  TorchStage stage = TorchStage::kForward;
  uint64_t duration_ns = 0;
  std::optional<uint64_t> allocated;  // bytes; absent without CUDA
  std::optional<uint64_t> max_allocated;
  std::optional<uint64_t> cached;
  bool operator==(const TorchEvent&) const = default;
};

struct MemoryEvent {
  int64_t ts = 0;
  uint64_t rss = 0;  // bytes
  uint64_t vms = 0;  // bytes
  // Python's own figures need the GIL; absent when the interpreter would not give it.
  bool has_python_stats = false;
  uint64_t py_blocks = 0;
  uint64_t gc_count[3] = {0, 0, 0};
  uint64_t gc_collections = 0;
  uint64_t threads = 0;
  std::optional<uint64_t> cuda_allocated;  // bytes; absent without CUDA
  std::optional<uint64_t> cuda_reserved;
  bool operator==(const MemoryEvent&) const = default;
};

struct VariableEvent {
  int64_t ts = 0;
  uint32_t thread = 0;
  uint64_t step = 0;
  uint32_t func = 0;  // string id
  uint32_t name = 0;  // string id
  std::string value;  // repr, capped by the writer
  bool operator==(const VariableEvent&) const = default;
};

struct MetricEvent {
  int64_t ts = 0;
  uint32_t name = 0;  // string id
  double value = 0;
  bool operator==(const MetricEvent&) const = default;
};

struct ProcessEvent {
  uint32_t pid = 0;
  int64_t start_ts = 0;
  int32_t rank = -1;            // -1 unknown
  uint32_t python_version = 0;  // string ids
  uint32_t cmdline = 0;
  uint32_t host = 0;
  // From the job record that follows (absent: 0 / -1).
  uint32_t run_id = 0;  // string id
  int32_t world_size = -1;
  int32_t local_rank = -1;
  uint32_t node = 0;  // string id
  uint32_t role = 0;  // string id: "rank", "launcher", "child", "process"
  bool operator==(const ProcessEvent&) const = default;
};

// One collective (or point-to-point) call of torch.distributed, as python.collectives has it.
struct CollectiveEvent {
  int64_t ts = 0;      // entered, ns since the Unix epoch
  int64_t end_ts = 0;  // returned (async: its wait() returned); 0 unknown
  uint32_t thread = 0;
  uint32_t group = 0;  // string id: the process group ("default", or its ranks)
  uint64_t seq = 0;    // the group's sequence number of this call
  uint32_t op = 0;     // string id: "all_reduce", ... ("" for counted ones)
  uint64_t bytes = 0;
  uint32_t dtype = 0;  // string id
  uint64_t numel = 0;
  int64_t peer = -1;   // send/recv: the other rank
  uint64_t step = 0;
  bool async_op = false;
  bool counted = false;  // known only from the sequence number (issued from C++)
  bool operator==(const CollectiveEvent&) const = default;
};

// One GPU at one instant (gpu_metrics). A field the driver would not give is absent.
struct GpuEvent {
  int64_t ts = 0;
  uint32_t gpu = 0;  // NVML device index
  std::optional<uint32_t> gpu_util;     // percent of the last sample period a kernel ran
  std::optional<uint32_t> memory_util;  // percent of it device memory was read or written
  std::optional<uint64_t> memory_used;  // bytes
  std::optional<uint64_t> memory_total;
  bool operator==(const GpuEvent&) const = default;
};

// One allocation site of a tracemalloc snapshot (memory_allocations): what the lines of code at
// (file, line) hold allocated at the snapshot.
struct AllocationEvent {
  int64_t ts = 0;     // the snapshot
  uint32_t func = 0;  // string id: the function around the line ("" unknown)
  uint32_t file = 0;  // string id
  uint32_t line = 0;
  uint64_t bytes = 0;  // allocated there and not yet freed
  uint64_t count = 0;  // blocks
  bool operator==(const AllocationEvent&) const = default;
};

// TorchStepEvent::decision: why a step was or was not traced.
inline constexpr uint8_t kStepTraced = 0;      // its module calls are in python.torch_trace
inline constexpr uint8_t kStepSampledOut = 1;  // probing.sample_rate left it out
inline constexpr uint8_t kStepOverBudget = 2;  // the overhead budget (probing.torch.budget) did
inline constexpr uint8_t kMaxStepDecision = 2;
const char* StepDecisionName(uint8_t decision);  // "traced", "sample_rate", "budget"

// One training step (python.torch_steps), written at its end whether it was traced or not.
struct TorchStepEvent {
  int64_t ts_ns = 0;         // start of the step (the previous step's end), ns since the epoch
  uint64_t duration_ns = 0;  // from the previous step's end to this step's end
  uint32_t thread = 0;       // thread id (InternThread) of the thread that ended it; 0 unknown
  uint64_t step = 0;
  uint8_t decision = kStepTraced;  // kStepTraced, kStepSampledOut or kStepOverBudget
  uint64_t cost_ns = 0;            // what the tracer's own code cost in this step (measured)
  uint32_t budget_ppm = 0;         // probing.torch.budget per million of step time; 0 none
  bool operator==(const TorchStepEvent&) const = default;
};

struct LostEvent {
  Stream stream = Stream::kMixed;
  uint64_t segments = 0;
  bool operator==(const LostEvent&) const = default;
};

// What the stack sampler could not store, since the writer's previous such record (format 1.1).
struct SamplerStatsEvent {
  uint64_t dropped = 0;  // stack samples dropped: the stack changed while it was read, every try
  uint64_t retried = 0;  // stack samples stored after a second read (the first one changed)
  bool operator==(const SamplerStatsEvent&) const = default;
};

// The fixed header of a segment, decoded (docs/format.md, "Segment").
struct SegmentInfo {
  uint16_t version_major = 0;
  uint16_t version_minor = 0;
  uint8_t codec = 0;
  Stream stream = Stream::kMixed;
  uint16_t header_size = 0;
  uint32_t payload_size = 0;
  uint32_t raw_size = 0;
  uint32_t event_count = 0;
  uint64_t seq = 0;
  int64_t first_ts = 0;
  int64_t last_ts = 0;
  uint32_t pid = 0;
  uint32_t checksum = 0;
  size_t total_size() const { return size_t{header_size} + payload_size; }
};

// One decoded segment. Table index 0 of every interning table is the "none" entry.
struct Segment {
  SegmentInfo info;
  std::vector<std::string> strings{""};
  std::vector<Frame> frames{Frame{}};
  std::vector<CallSite> callsites{CallSite{}};
  std::vector<Thread> threads{Thread{}};
  std::vector<StackSample> samples;
  std::vector<TorchEvent> torch;
  std::vector<MemoryEvent> memory;
  std::vector<VariableEvent> variables;
  std::vector<MetricEvent> metrics;
  std::vector<ProcessEvent> processes;
  std::vector<CollectiveEvent> collectives;
  std::vector<GpuEvent> gpus;
  std::vector<AllocationEvent> allocations;
  std::vector<TorchStepEvent> torch_steps;
  std::vector<LostEvent> lost;
  std::vector<SamplerStatsEvent> sampler_stats;
  uint32_t skipped_records = 0;  // skippable kinds this build does not know

  std::string_view String(uint32_t id) const {
    return id < strings.size() ? std::string_view(strings[id]) : std::string_view();
  }
};

}  // namespace probing::format
