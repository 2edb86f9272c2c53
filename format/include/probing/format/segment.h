// Segments: build one (interning, delta timestamps, varints, then a codec and a checksum) and
// decode one (distrusting every byte). A segment is self-contained: its interning tables start
// empty, so it reads without any other segment. Format: docs/format.md.
//
//   SegmentBuilder b(Stream::kStacks, getpid());
//   uint32_t t = b.InternThread(gettid(), b.InternString("MainThread"));
//   uint32_t cs = b.InternStack({{"train", "train.py", 10, 42}, {"<module>", "train.py", 1, 99}});
//   b.AddStackSample(now_ns, t, cs, kSampleHoldsGil);
//   std::string bytes;
//   PROBING_RETURN_IF_ERROR(b.Seal(Codec::kLz4, /*seq=*/0, &bytes));   // also resets b
//   PROBING_ASSIGN_OR_RETURN(Segment seg, DecodeSegment(bytes));
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "probing/base/status.h"
#include "probing/format/bytes.h"
#include "probing/format/codec.h"
#include "probing/format/events.h"

namespace probing::format {

inline constexpr uint32_t kSegmentMagic = 0x47455350;  // "PSEG"
inline constexpr size_t kSegmentHeaderSize = 64;
inline constexpr size_t kMaxRawSegmentSize = 64u << 20;
inline constexpr size_t kMaxStringSize = 1u << 20;

// One frame of a stack given by value, innermost first when passed to InternStack.
struct FrameLine {
  std::string_view func;
  std::string_view file;
  uint32_t first_line = 0;
  uint32_t line = 0;
};

// What a process record says, by value (the builder interns the strings itself).
struct ProcessInfo {
  uint32_t pid = 0;
  int64_t start_ts = 0;
  int32_t rank = -1;
  std::string python_version;
  std::string cmdline;
  std::string host;
  // Its place in a distributed job (written as a job record when run_id or role is set).
  std::string run_id;
  int32_t world_size = -1;
  int32_t local_rank = -1;
  std::string node;
  std::string role;

  // The fields every process has (the job's come from elsewhere, or stay unknown).
  static ProcessInfo Of(uint32_t pid, int64_t start_ts, int32_t rank, std::string python_version,
                        std::string cmdline, std::string host) {
    ProcessInfo p;
    p.pid = pid;
    p.start_ts = start_ts;
    p.rank = rank;
    p.python_version = std::move(python_version);
    p.cmdline = std::move(cmdline);
    p.host = std::move(host);
    return p;
  }
};

// Builds segments. Not thread-safe: one builder per writer. Ids it returns are valid until the
// next Seal()/Reset(); generation() changes then, so a caller caching ids knows to drop them.
class SegmentBuilder {
 public:
  SegmentBuilder(Stream stream, uint32_t pid);

  // Recorded as the first record of this and every later segment.
  void SetProcess(const ProcessInfo& info);

  uint32_t InternString(std::string_view s);
  uint32_t InternFrame(uint32_t func, uint32_t file, uint32_t first_line);
  uint32_t InternCallSite(uint32_t parent, uint32_t frame, uint32_t line);
  uint32_t InternThread(uint64_t tid, uint32_t name);
  // Interns a whole stack given innermost first; returns the innermost call site (0 if empty).
  uint32_t InternStack(std::span<const FrameLine> innermost_first);

  void AddStackSample(int64_t ts, uint32_t thread, uint32_t callsite, uint8_t flags);
  void AddTorch(const TorchEvent& e);
  void AddMemory(const MemoryEvent& e);
  void AddVariable(int64_t ts, uint32_t thread, uint64_t step, uint32_t func, uint32_t name,
                   std::string_view value);
  void AddMetric(int64_t ts, uint32_t name, double value);
  void AddLost(Stream stream, uint64_t segments);
  // A collective call (written as a skippable record: older readers skip it).
  void AddCollective(const CollectiveEvent& e);
  // A GPU reading and an allocation site (skippable records: older readers skip them).
  void AddGpu(const GpuEvent& e);
  void AddAllocation(const AllocationEvent& e);
  // A training step's time and tracing decision (skippable: older readers skip it). Its thread
  // is an id from InternThread, as TorchEvent's.
  void AddTorchStep(const TorchStepEvent& e);
  // What the stack sampler dropped or read twice (skippable, format 1.1).
  void AddSamplerStats(const SamplerStatsEvent& e);

  // Bytes of payload so far (before compression) and records so far.
  size_t raw_size() const { return payload_.size(); }
  uint32_t event_count() const { return event_count_; }
  // True when no event besides the automatic process record has been added.
  bool empty() const { return !has_events_; }
  uint64_t generation() const { return generation_; }

  // Writes header + (compressed) payload to *out, then starts a new, empty segment.
  // A payload over kMaxRawSegmentSize is refused (kOutOfRange) and dropped.
  Status Seal(Codec codec, uint64_t seq, std::string* out, int zstd_level = 3);
  // Drops everything added since the last seal.
  void Reset();

 private:
  struct Key3 {
    uint32_t a, b, c;
    bool operator==(const Key3&) const = default;
  };
  struct Key3Hash {
    size_t operator()(const Key3& k) const {
      uint64_t h = (uint64_t{k.a} * 0x9E3779B97F4A7C15ull) ^ (uint64_t{k.b} << 21) ^ k.c;
      return static_cast<size_t>(h ^ (h >> 29));
    }
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  void PutTime(int64_t ts);
  void BeginRecord(RecordKind kind) {
    payload_.PutByte(static_cast<uint8_t>(kind));
    ++event_count_;
  }
  void StartSegment();

  Stream stream_;
  uint32_t pid_;
  bool has_process_ = false;
  ProcessInfo process_;
  ByteWriter payload_;
  std::string scratch_;
  uint32_t event_count_ = 0;
  bool has_events_ = false;
  bool has_time_ = false;
  int64_t last_ts_ = 0;
  int64_t first_ts_ = 0;
  int64_t min_ts_ = 0;
  int64_t max_ts_ = 0;
  bool has_range_ = false;  // min_ts_/max_ts_ hold a time (also from skippable records)
  void NoteTime(int64_t ts);
  uint64_t generation_ = 0;
  std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>> strings_;
  std::unordered_map<Key3, uint32_t, Key3Hash> frames_;
  std::unordered_map<Key3, uint32_t, Key3Hash> callsites_;
  std::unordered_map<Key3, uint32_t, Key3Hash> threads_;
};

// Parses and checks the fixed header at the start of `bytes` (no payload checks).
Result<SegmentInfo> ParseSegmentHeader(std::string_view bytes);

// Moves every event time of `seg` by `delta_ns` (a recording of a rank whose clock ran ahead of
// the client's, by its measured offset).
void ShiftTimes(Segment* seg, int64_t delta_ns);

// Decodes the segment at the start of `bytes` (which may hold more after it). Checks the header,
// the checksum and every record. `consumed` gets the segment's total size.
Result<Segment> DecodeSegment(std::string_view bytes, size_t* consumed = nullptr);

}  // namespace probing::format
