#include "probing/format/segment.h"

#include <cstring>
#include <limits>

#include "internal.h"
#include "probing/format/crc32c.h"
#include "raw_headers.h"

namespace probing::format {

const char* StreamName(Stream s) {
  switch (s) {
    case Stream::kMixed: return "mixed";
    case Stream::kStacks: return "stacks";
    case Stream::kTorch: return "torch";
    case Stream::kMemory: return "memory";
    case Stream::kVariables: return "variables";
    case Stream::kMetrics: return "metrics";
    case Stream::kCollectives: return "collectives";
  }
  return "unknown";
}

const char* TorchStageName(TorchStage s) {
  switch (s) {
    case TorchStage::kForward: return "forward";
    case TorchStage::kBackward: return "backward";
    case TorchStage::kStep: return "step";
  }
  return "unknown";
}

const char* StepDecisionName(uint8_t decision) {
  switch (decision) {
    case kStepTraced: return "traced";
    case kStepSampledOut: return "sample_rate";
    case kStepOverBudget: return "budget";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// Builder

SegmentBuilder::SegmentBuilder(Stream stream, uint32_t pid) : stream_(stream), pid_(pid) {
  payload_.reserve(64 << 10);
}

void SegmentBuilder::SetProcess(const ProcessInfo& info) {
  process_ = info;
  has_process_ = true;
  if (empty()) {
    Reset();  // put the process record first in the current segment too
  }
}

void SegmentBuilder::Reset() {
  payload_.clear();
  event_count_ = 0;
  has_events_ = false;
  has_time_ = false;
  last_ts_ = first_ts_ = min_ts_ = max_ts_ = 0;
  has_range_ = false;
  strings_.clear();
  frames_.clear();
  callsites_.clear();
  threads_.clear();
  ++generation_;
  StartSegment();
}

void SegmentBuilder::StartSegment() {
  if (!has_process_) return;
  uint32_t pv = InternString(process_.python_version);
  uint32_t cmd = InternString(process_.cmdline);
  uint32_t host = InternString(process_.host);
  BeginRecord(RecordKind::kProcess);
  payload_.PutVarint(process_.pid);
  payload_.PutVarint(static_cast<uint64_t>(process_.start_ts));
  payload_.PutZigzag(process_.rank);
  payload_.PutVarint(pv);
  payload_.PutVarint(cmd);
  payload_.PutVarint(host);
  if (process_.run_id.empty() && process_.role.empty()) return;
  const uint32_t run = InternString(process_.run_id);
  const uint32_t node = InternString(process_.node);
  const uint32_t role = InternString(process_.role);
  ByteWriter job;
  job.PutVarint(run);
  job.PutZigzag(process_.world_size);
  job.PutZigzag(process_.local_rank);
  job.PutVarint(node);
  job.PutVarint(role);
  BeginRecord(static_cast<RecordKind>(kJobRecordKind));
  payload_.PutLengthPrefixed(job.view());
}

uint32_t SegmentBuilder::InternString(std::string_view s) {
  if (s.size() > kMaxStringSize) s = s.substr(0, kMaxStringSize);
  auto it = strings_.find(s);
  if (it != strings_.end()) return it->second;
  uint32_t id = static_cast<uint32_t>(strings_.size()) + 1;
  strings_.emplace(std::string(s), id);
  BeginRecord(RecordKind::kString);
  payload_.PutLengthPrefixed(s);
  return id;
}

uint32_t SegmentBuilder::InternFrame(uint32_t func, uint32_t file, uint32_t first_line) {
  auto [it, inserted] =
      frames_.try_emplace(Key3{func, file, first_line}, static_cast<uint32_t>(frames_.size()) + 1);
  if (inserted) {
    BeginRecord(RecordKind::kFrame);
    payload_.PutVarint(func);
    payload_.PutVarint(file);
    payload_.PutVarint(first_line);
  }
  return it->second;
}

uint32_t SegmentBuilder::InternCallSite(uint32_t parent, uint32_t frame, uint32_t line) {
  auto [it, inserted] = callsites_.try_emplace(Key3{parent, frame, line},
                                               static_cast<uint32_t>(callsites_.size()) + 1);
  if (inserted) {
    BeginRecord(RecordKind::kCallSite);
    payload_.PutVarint(parent);
    payload_.PutVarint(frame);
    payload_.PutVarint(line);
  }
  return it->second;
}

uint32_t SegmentBuilder::InternThread(uint64_t tid, uint32_t name) {
  auto [it, inserted] =
      threads_.try_emplace(Key3{static_cast<uint32_t>(tid), static_cast<uint32_t>(tid >> 32), name},
                           static_cast<uint32_t>(threads_.size()) + 1);
  if (inserted) {
    BeginRecord(RecordKind::kThread);
    payload_.PutVarint(tid);
    payload_.PutVarint(name);
  }
  return it->second;
}

uint32_t SegmentBuilder::InternStack(std::span<const FrameLine> innermost_first) {
  uint32_t parent = 0;
  for (auto it = innermost_first.rbegin(); it != innermost_first.rend(); ++it) {
    uint32_t frame = InternFrame(InternString(it->func), InternString(it->file), it->first_line);
    parent = InternCallSite(parent, frame, it->line);
  }
  return parent;
}

void SegmentBuilder::NoteTime(int64_t ts) {
  if (!has_range_) {
    has_range_ = true;
    min_ts_ = max_ts_ = ts;
  }
  if (ts < min_ts_) min_ts_ = ts;
  if (ts > max_ts_) max_ts_ = ts;
}

void SegmentBuilder::PutTime(int64_t ts) {
  if (!has_time_) {
    has_time_ = true;
    first_ts_ = ts;
    payload_.PutZigzag(ts);
  } else {
    // Wrapping subtraction: any two int64 times round-trip through the zigzag delta.
    payload_.PutZigzag(
        static_cast<int64_t>(static_cast<uint64_t>(ts) - static_cast<uint64_t>(last_ts_)));
  }
  NoteTime(ts);
  last_ts_ = ts;
}

void SegmentBuilder::AddStackSample(int64_t ts, uint32_t thread, uint32_t callsite, uint8_t flags) {
  BeginRecord(RecordKind::kStackSample);
  PutTime(ts);
  // Flags ride in the low bits of the thread id: one byte less per sample.
  payload_.PutVarint((uint64_t{thread} << kSampleFlagBits) | (flags & kSampleFlagMask));
  payload_.PutVarint(callsite);
  has_events_ = true;
}

void SegmentBuilder::AddTorch(const TorchEvent& e) {
  BeginRecord(RecordKind::kTorch);
  PutTime(e.ts);
  payload_.PutVarint(e.thread);
  payload_.PutVarint(e.step);
  payload_.PutVarint(e.seq);
  payload_.PutVarint(e.module);
  payload_.PutByte(static_cast<uint8_t>(e.stage));
  payload_.PutVarint(e.duration_ns);
  uint8_t present = (e.allocated ? 1 : 0) | (e.max_allocated ? 2 : 0) | (e.cached ? 4 : 0);
  payload_.PutByte(present);
  if (e.allocated) payload_.PutVarint(*e.allocated);
  if (e.max_allocated) payload_.PutVarint(*e.max_allocated);
  if (e.cached) payload_.PutVarint(*e.cached);
  has_events_ = true;
}

void SegmentBuilder::AddMemory(const MemoryEvent& e) {
  BeginRecord(RecordKind::kMemory);
  PutTime(e.ts);
  uint8_t present =
      (e.cuda_allocated ? 1 : 0) | (e.cuda_reserved ? 2 : 0) | (e.has_python_stats ? 4 : 0);
  payload_.PutByte(present);
  payload_.PutVarint(e.rss);
  payload_.PutVarint(e.vms);
  payload_.PutVarint(e.threads);
  if (e.has_python_stats) {
    payload_.PutVarint(e.py_blocks);
    for (uint64_t g : e.gc_count) payload_.PutVarint(g);
    payload_.PutVarint(e.gc_collections);
  }
  if (e.cuda_allocated) payload_.PutVarint(*e.cuda_allocated);
  if (e.cuda_reserved) payload_.PutVarint(*e.cuda_reserved);
  has_events_ = true;
}

void SegmentBuilder::AddVariable(int64_t ts, uint32_t thread, uint64_t step, uint32_t func,
                                 uint32_t name, std::string_view value) {
  if (value.size() > kMaxStringSize) value = value.substr(0, kMaxStringSize);
  BeginRecord(RecordKind::kVariable);
  PutTime(ts);
  payload_.PutVarint(thread);
  payload_.PutVarint(step);
  payload_.PutVarint(func);
  payload_.PutVarint(name);
  payload_.PutLengthPrefixed(value);
  has_events_ = true;
}

void SegmentBuilder::AddMetric(int64_t ts, uint32_t name, double value) {
  BeginRecord(RecordKind::kMetric);
  PutTime(ts);
  payload_.PutVarint(name);
  payload_.PutDouble(value);
  has_events_ = true;
}

void SegmentBuilder::AddLost(Stream stream, uint64_t segments) {
  BeginRecord(RecordKind::kLost);
  payload_.PutByte(static_cast<uint8_t>(stream));
  payload_.PutVarint(segments);
  has_events_ = true;
}

void SegmentBuilder::AddCollective(const CollectiveEvent& e) {
  // All of it inside the length-prefixed body, its time absolute: a reader that skips the
  // record keeps the other records' time deltas right.
  ByteWriter c;
  c.PutZigzag(e.ts);
  c.PutZigzag(e.end_ts == 0 ? -1 : e.end_ts - e.ts);
  c.PutVarint(e.thread);
  c.PutVarint(e.group);
  c.PutVarint(e.seq);
  c.PutVarint(e.op);
  c.PutVarint(e.bytes);
  c.PutVarint(e.dtype);
  c.PutVarint(e.numel);
  c.PutZigzag(e.peer);
  c.PutVarint(e.step);
  c.PutByte(static_cast<uint8_t>((e.async_op ? 1 : 0) | (e.counted ? 2 : 0)));
  BeginRecord(static_cast<RecordKind>(kCollectiveRecordKind));
  payload_.PutLengthPrefixed(c.view());
  NoteTime(e.ts);
  has_events_ = true;
}

void SegmentBuilder::AddGpu(const GpuEvent& e) {
  ByteWriter g;
  g.PutZigzag(e.ts);
  g.PutVarint(e.gpu);
  g.PutByte(static_cast<uint8_t>((e.gpu_util ? 1 : 0) | (e.memory_util ? 2 : 0) |
                                 (e.memory_used ? 4 : 0) | (e.memory_total ? 8 : 0)));
  if (e.gpu_util) g.PutVarint(*e.gpu_util);
  if (e.memory_util) g.PutVarint(*e.memory_util);
  if (e.memory_used) g.PutVarint(*e.memory_used);
  if (e.memory_total) g.PutVarint(*e.memory_total);
  BeginRecord(static_cast<RecordKind>(kGpuRecordKind));
  payload_.PutLengthPrefixed(g.view());
  NoteTime(e.ts);
  has_events_ = true;
}

void SegmentBuilder::AddAllocation(const AllocationEvent& e) {
  ByteWriter a;
  a.PutZigzag(e.ts);
  a.PutVarint(e.func);
  a.PutVarint(e.file);
  a.PutVarint(e.line);
  a.PutVarint(e.bytes);
  a.PutVarint(e.count);
  BeginRecord(static_cast<RecordKind>(kAllocationRecordKind));
  payload_.PutLengthPrefixed(a.view());
  NoteTime(e.ts);
  has_events_ = true;
}

void SegmentBuilder::AddTorchStep(const TorchStepEvent& e) {
  ByteWriter t;
  t.PutZigzag(e.ts_ns);
  t.PutVarint(e.duration_ns);
  t.PutVarint(e.thread);
  t.PutVarint(e.step);
  t.PutByte(e.decision);
  t.PutVarint(e.cost_ns);
  t.PutVarint(e.budget_ppm);
  BeginRecord(static_cast<RecordKind>(kTorchStepRecordKind));
  payload_.PutLengthPrefixed(t.view());
  NoteTime(e.ts_ns);
  has_events_ = true;
}

void SegmentBuilder::AddSamplerStats(const SamplerStatsEvent& e) {
  // Skippable: kind, length, then the fields; a reader takes the fields it knows and ignores
  // any that a later version appends.
  ByteWriter body;
  body.PutVarint(e.dropped);
  body.PutVarint(e.retried);
  BeginRecord(static_cast<RecordKind>(kSamplerStatsKind));
  payload_.PutLengthPrefixed(body.view());
  has_events_ = true;
}

Status SegmentBuilder::Seal(Codec codec, uint64_t seq, std::string* out, int zstd_level) {
  if (payload_.size() > kMaxRawSegmentSize) {
    size_t n = payload_.size();
    Reset();
    return OutOfRange("segment payload of " + std::to_string(n) + " bytes exceeds the " +
                      std::to_string(kMaxRawSegmentSize) + "-byte limit");
  }
  Status st = Compress(codec, payload_.view(), &scratch_, zstd_level);
  if (!st.ok()) {
    Reset();
    return st;
  }
  raw::SegmentHeader h{};
  h.magic = kSegmentMagic;
  h.version_major = kVersionMajor;
  h.version_minor = kVersionMinor;
  h.codec = static_cast<uint8_t>(codec);
  h.stream = static_cast<uint8_t>(stream_);
  h.header_size = kSegmentHeaderSize;
  h.payload_size = static_cast<uint32_t>(scratch_.size());
  h.raw_size = static_cast<uint32_t>(payload_.size());
  h.event_count = event_count_;
  h.seq = seq;
  h.first_ts = min_ts_;
  h.last_ts = max_ts_;
  h.pid = pid_;
  h.checksum = 0;
  uint32_t crc = Crc32c(&h, sizeof h);
  h.checksum = Crc32cExtend(crc, scratch_.data(), scratch_.size());
  out->resize(sizeof h + scratch_.size());
  std::memcpy(out->data(), &h, sizeof h);
  std::memcpy(out->data() + sizeof h, scratch_.data(), scratch_.size());
  Reset();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Decoder

void ShiftTimes(Segment* seg, int64_t delta_ns) {
  if (delta_ns == 0) return;
  if (seg->info.first_ts != 0 || seg->info.last_ts != 0) {
    seg->info.first_ts += delta_ns;
    seg->info.last_ts += delta_ns;
  }
  for (auto& e : seg->samples) e.ts += delta_ns;
  for (auto& e : seg->torch) e.ts += delta_ns;
  for (auto& e : seg->memory) e.ts += delta_ns;
  for (auto& e : seg->variables) e.ts += delta_ns;
  for (auto& e : seg->metrics) e.ts += delta_ns;
  for (auto& e : seg->collectives) {
    e.ts += delta_ns;
    if (e.end_ts != 0) e.end_ts += delta_ns;
  }
  for (auto& e : seg->gpus) e.ts += delta_ns;
  for (auto& e : seg->allocations) e.ts += delta_ns;
  for (auto& e : seg->torch_steps) e.ts_ns += delta_ns;
}

Result<SegmentInfo> ParseSegmentHeader(std::string_view bytes) {
  if (bytes.size() < kSegmentHeaderSize)
    return DataLoss("segment truncated: " + std::to_string(bytes.size()) +
                    " bytes, a header needs " + std::to_string(kSegmentHeaderSize));
  raw::SegmentHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (h.magic != kSegmentMagic) return DataLoss("not a segment (bad magic)");
  if (h.version_major > kVersionMajor) return internal::NewerVersion("", h.version_major);
  if (h.version_major == 0) return DataLoss("segment version 0 is not a valid version");
  if (h.header_size < kSegmentHeaderSize)
    return DataLoss("segment header size " + std::to_string(h.header_size) + " is too small");
  if (h.codec > kMaxCodec) return DataLoss("unknown codec " + std::to_string(h.codec));
  if (h.stream > kMaxStream) return DataLoss("unknown stream " + std::to_string(h.stream));
  if (h.raw_size > kMaxRawSegmentSize)
    return DataLoss("segment declares " + std::to_string(h.raw_size) +
                    " raw bytes, over the limit of " + std::to_string(kMaxRawSegmentSize));
  SegmentInfo info;
  info.version_major = h.version_major;
  info.version_minor = h.version_minor;
  info.codec = h.codec;
  info.stream = static_cast<Stream>(h.stream);
  info.header_size = h.header_size;
  info.payload_size = h.payload_size;
  info.raw_size = h.raw_size;
  info.event_count = h.event_count;
  info.seq = h.seq;
  info.first_ts = h.first_ts;
  info.last_ts = h.last_ts;
  info.pid = h.pid;
  info.checksum = h.checksum;
  return info;
}

namespace {

// Decodes records into `seg`; `in` is the raw payload.
class RecordDecoder {
 public:
  RecordDecoder(std::string_view in, Segment* seg) : r_(in), seg_(seg) {}

  Status Run() {
    uint32_t count = 0;
    while (!r_.empty()) {
      uint8_t kind;
      r_.GetByte(&kind);
      ++count;
      Status st = One(kind);
      if (!st.ok())
        return st.WithContext("record " + std::to_string(count) + " (kind " + std::to_string(kind) +
                              ")");
    }
    if (count != seg_->info.event_count)
      return DataLoss("segment holds " + std::to_string(count) + " records, its header says " +
                      std::to_string(seg_->info.event_count));
    return Status::Ok();
  }

 private:
  Status Truncated() { return DataLoss("record truncated"); }

  bool Id(uint64_t limit, uint32_t* out) {
    uint64_t v;
    if (!r_.GetVarint(&v) || v >= limit) return false;
    *out = static_cast<uint32_t>(v);
    return true;
  }
  bool StringId(uint32_t* out) { return Id(seg_->strings.size(), out); }
  bool ThreadId(uint32_t* out) { return Id(seg_->threads.size(), out); }
  bool U32(uint32_t* out) {
    uint64_t v;
    if (!r_.GetVarint(&v) || v > std::numeric_limits<uint32_t>::max()) return false;
    *out = static_cast<uint32_t>(v);
    return true;
  }
  bool Time(int64_t* out) {
    int64_t d;
    if (!r_.GetZigzag(&d)) return false;
    ts_ =
        has_time_ ? static_cast<int64_t>(static_cast<uint64_t>(ts_) + static_cast<uint64_t>(d)) : d;
    has_time_ = true;
    *out = ts_;
    return true;
  }
  static Status BadRef(const char* what) {
    return DataLoss(std::string("reference to an undefined ") + what + " or a truncated record");
  }

  // A collective: length-prefixed, its time absolute (skippable records leave the deltas alone).
  Status Collective() {
    CollectiveEvent e;
    std::string_view body;
    if (!r_.GetLengthPrefixed(&body, kMaxRawSegmentSize)) return Truncated();
    ByteReader c(body);
    int64_t dur = 0;
    if (!c.GetZigzag(&e.ts)) return Truncated();
    uint64_t thread = 0, group = 0, op = 0, dtype = 0;
    uint8_t flags = 0;
    if (!c.GetZigzag(&dur) || !c.GetVarint(&thread) || !c.GetVarint(&group) ||
        !c.GetVarint(&e.seq) || !c.GetVarint(&op) || !c.GetVarint(&e.bytes) ||
        !c.GetVarint(&dtype) || !c.GetVarint(&e.numel) || !c.GetZigzag(&e.peer) ||
        !c.GetVarint(&e.step) || !c.GetByte(&flags))
      return Truncated();
    if (thread >= seg_->threads.size() || group >= seg_->strings.size() ||
        op >= seg_->strings.size() || dtype >= seg_->strings.size())
      return BadRef("thread or string");
    e.end_ts = dur < 0 ? 0 : e.ts + dur;
    e.thread = static_cast<uint32_t>(thread);
    e.group = static_cast<uint32_t>(group);
    e.op = static_cast<uint32_t>(op);
    e.dtype = static_cast<uint32_t>(dtype);
    e.async_op = (flags & 1) != 0;
    e.counted = (flags & 2) != 0;
    seg_->collectives.push_back(e);
    return Status::Ok();  // later fields, from newer writers, are ignored
  }

  // A GPU reading: length-prefixed, its time absolute; later fields are ignored.
  Status Gpu() {
    std::string_view body;
    if (!r_.GetLengthPrefixed(&body, kMaxRawSegmentSize)) return Truncated();
    ByteReader g(body);
    GpuEvent e;
    uint64_t gpu = 0;
    uint8_t present = 0;
    if (!g.GetZigzag(&e.ts) || !g.GetVarint(&gpu) || !g.GetByte(&present) ||
        gpu > std::numeric_limits<uint32_t>::max())
      return DataLoss("gpu record too short");
    e.gpu = static_cast<uint32_t>(gpu);
    auto percent = [&](std::optional<uint32_t>* out) {
      uint64_t v;
      if (!g.GetVarint(&v) || v > 100) return false;
      *out = static_cast<uint32_t>(v);
      return true;
    };
    auto bytes = [&](std::optional<uint64_t>* out) {
      uint64_t v;
      if (!g.GetVarint(&v)) return false;
      *out = v;
      return true;
    };
    if (((present & 1) && !percent(&e.gpu_util)) || ((present & 2) && !percent(&e.memory_util)) ||
        ((present & 4) && !bytes(&e.memory_used)) || ((present & 8) && !bytes(&e.memory_total)))
      return DataLoss("gpu record too short or a percentage over 100");
    seg_->gpus.push_back(e);
    return Status::Ok();
  }

  // An allocation site of a tracemalloc snapshot.
  Status Allocation() {
    std::string_view body;
    if (!r_.GetLengthPrefixed(&body, kMaxRawSegmentSize)) return Truncated();
    ByteReader a(body);
    AllocationEvent e;
    uint64_t func = 0, file = 0, line = 0;
    if (!a.GetZigzag(&e.ts) || !a.GetVarint(&func) || !a.GetVarint(&file) ||
        !a.GetVarint(&line) || !a.GetVarint(&e.bytes) || !a.GetVarint(&e.count))
      return DataLoss("allocation record too short");
    if (func >= seg_->strings.size() || file >= seg_->strings.size()) return BadRef("string");
    if (line > std::numeric_limits<uint32_t>::max()) return DataLoss("line out of range");
    e.func = static_cast<uint32_t>(func);
    e.file = static_cast<uint32_t>(file);
    e.line = static_cast<uint32_t>(line);
    seg_->allocations.push_back(e);
    return Status::Ok();
  }

  // A training step: length-prefixed, its time absolute; later fields are ignored.
  Status TorchStep() {
    std::string_view body;
    if (!r_.GetLengthPrefixed(&body, kMaxRawSegmentSize)) return Truncated();
    ByteReader t(body);
    TorchStepEvent e;
    uint64_t thread = 0, budget = 0;
    if (!t.GetZigzag(&e.ts_ns) || !t.GetVarint(&e.duration_ns) || !t.GetVarint(&thread) ||
        !t.GetVarint(&e.step) || !t.GetByte(&e.decision) || !t.GetVarint(&e.cost_ns) ||
        !t.GetVarint(&budget))
      return DataLoss("torch step record too short");
    if (thread >= seg_->threads.size()) return BadRef("thread");
    if (e.decision > kMaxStepDecision)
      return DataLoss("torch step record: unknown decision " + std::to_string(e.decision) +
                      " (0 traced, 1 sample_rate, 2 budget)");
    if (budget > std::numeric_limits<uint32_t>::max())
      return DataLoss("torch step record: budget out of range");
    e.thread = static_cast<uint32_t>(thread);
    e.budget_ppm = static_cast<uint32_t>(budget);
    seg_->torch_steps.push_back(e);
    return Status::Ok();
  }

  // What the stack sampler dropped or read twice since the writer's previous such record.
  Status SamplerStats() {
    std::string_view body;
    if (!r_.GetLengthPrefixed(&body, kMaxRawSegmentSize)) return Truncated();
    ByteReader b(body);
    SamplerStatsEvent e;
    if (!b.GetVarint(&e.dropped) || !b.GetVarint(&e.retried))
      return DataLoss("sampler stats record too short");
    seg_->sampler_stats.push_back(e);
    return Status::Ok();  // later fields, from newer writers, are ignored
  }

  // The job record: the place in a distributed job of the process record before it.
  Status Job() {
    std::string_view body;
    if (!r_.GetLengthPrefixed(&body, kMaxRawSegmentSize)) return Truncated();
    if (seg_->processes.empty()) return DataLoss("a job record without a process record");
    ByteReader j(body);
    ProcessEvent& p = seg_->processes.back();
    int64_t world = 0, local = 0;
    auto string_id = [&](uint32_t* out) {
      uint64_t v;
      if (!j.GetVarint(&v) || v >= seg_->strings.size()) return false;
      *out = static_cast<uint32_t>(v);
      return true;
    };
    if (!string_id(&p.run_id) || !j.GetZigzag(&world) || !j.GetZigzag(&local) ||
        !string_id(&p.node) || !string_id(&p.role))
      return BadRef("string");
    if (world < -1 || world > std::numeric_limits<int32_t>::max() || local < -1 ||
        local > std::numeric_limits<int32_t>::max())
      return DataLoss("world size or local rank out of range");
    p.world_size = static_cast<int32_t>(world);
    p.local_rank = static_cast<int32_t>(local);
    return Status::Ok();  // later fields, from newer writers, are ignored
  }

  Status One(uint8_t kind) {
    switch (static_cast<RecordKind>(kind)) {
      case RecordKind::kString: {
        std::string_view s;
        if (!r_.GetLengthPrefixed(&s, kMaxStringSize)) return Truncated();
        seg_->strings.emplace_back(s);
        return Status::Ok();
      }
      case RecordKind::kFrame: {
        Frame f;
        if (!StringId(&f.func) || !StringId(&f.file)) return BadRef("string");
        if (!U32(&f.first_line)) return Truncated();
        seg_->frames.push_back(f);
        return Status::Ok();
      }
      case RecordKind::kCallSite: {
        CallSite c;
        if (!Id(seg_->callsites.size(), &c.parent)) return BadRef("call site");
        if (!Id(seg_->frames.size(), &c.frame) || c.frame == 0) return BadRef("frame");
        if (!U32(&c.line)) return Truncated();
        seg_->callsites.push_back(c);
        return Status::Ok();
      }
      case RecordKind::kThread: {
        Thread t;
        if (!r_.GetVarint(&t.tid)) return Truncated();
        if (!StringId(&t.name)) return BadRef("string");
        seg_->threads.push_back(t);
        return Status::Ok();
      }
      case RecordKind::kStackSample: {
        StackSample s;
        uint64_t thread_flags;
        if (!Time(&s.ts) || !r_.GetVarint(&thread_flags)) return Truncated();
        s.flags = static_cast<uint8_t>(thread_flags & kSampleFlagMask);
        if ((thread_flags >> kSampleFlagBits) >= seg_->threads.size()) return BadRef("thread");
        s.thread = static_cast<uint32_t>(thread_flags >> kSampleFlagBits);
        if (!Id(seg_->callsites.size(), &s.callsite)) return BadRef("call site");
        seg_->samples.push_back(s);
        return Status::Ok();
      }
      case RecordKind::kTorch: {
        TorchEvent e;
        uint8_t stage, present;
        if (!Time(&e.ts)) return Truncated();
        if (!ThreadId(&e.thread)) return BadRef("thread");
        if (!r_.GetVarint(&e.step) || !r_.GetVarint(&e.seq)) return Truncated();
        if (!StringId(&e.module)) return BadRef("string");
        if (!r_.GetByte(&stage) || !r_.GetVarint(&e.duration_ns) || !r_.GetByte(&present))
          return Truncated();
        if (stage > kMaxTorchStage) return DataLoss("unknown torch stage " + std::to_string(stage));
        e.stage = static_cast<TorchStage>(stage);
        uint64_t v;
        if (present & 1) {
          if (!r_.GetVarint(&v)) return Truncated();
          e.allocated = v;
        }
        if (present & 2) {
          if (!r_.GetVarint(&v)) return Truncated();
          e.max_allocated = v;
        }
        if (present & 4) {
          if (!r_.GetVarint(&v)) return Truncated();
          e.cached = v;
        }
        seg_->torch.push_back(e);
        return Status::Ok();
      }
      case RecordKind::kMemory: {
        MemoryEvent e;
        uint8_t present;
        if (!Time(&e.ts) || !r_.GetByte(&present)) return Truncated();
        if (!r_.GetVarint(&e.rss) || !r_.GetVarint(&e.vms) || !r_.GetVarint(&e.threads))
          return Truncated();
        e.has_python_stats = (present & 4) != 0;
        if (e.has_python_stats && (!r_.GetVarint(&e.py_blocks) || !r_.GetVarint(&e.gc_count[0]) ||
                                   !r_.GetVarint(&e.gc_count[1]) || !r_.GetVarint(&e.gc_count[2]) ||
                                   !r_.GetVarint(&e.gc_collections)))
          return Truncated();
        uint64_t v;
        if (present & 1) {
          if (!r_.GetVarint(&v)) return Truncated();
          e.cuda_allocated = v;
        }
        if (present & 2) {
          if (!r_.GetVarint(&v)) return Truncated();
          e.cuda_reserved = v;
        }
        seg_->memory.push_back(e);
        return Status::Ok();
      }
      case RecordKind::kVariable: {
        VariableEvent e;
        if (!Time(&e.ts)) return Truncated();
        if (!ThreadId(&e.thread)) return BadRef("thread");
        if (!r_.GetVarint(&e.step)) return Truncated();
        if (!StringId(&e.func) || !StringId(&e.name)) return BadRef("string");
        std::string_view v;
        if (!r_.GetLengthPrefixed(&v, kMaxStringSize)) return Truncated();
        e.value.assign(v);
        seg_->variables.push_back(std::move(e));
        return Status::Ok();
      }
      case RecordKind::kMetric: {
        MetricEvent e;
        if (!Time(&e.ts)) return Truncated();
        if (!StringId(&e.name)) return BadRef("string");
        if (!r_.GetDouble(&e.value)) return Truncated();
        seg_->metrics.push_back(e);
        return Status::Ok();
      }
      case RecordKind::kProcess: {
        ProcessEvent e;
        uint64_t start;
        int64_t rank;
        if (!U32(&e.pid) || !r_.GetVarint(&start) || !r_.GetZigzag(&rank)) return Truncated();
        if (rank < -1 || rank > std::numeric_limits<int32_t>::max())
          return DataLoss("rank out of range");
        e.start_ts = static_cast<int64_t>(start);
        e.rank = static_cast<int32_t>(rank);
        if (!StringId(&e.python_version) || !StringId(&e.cmdline) || !StringId(&e.host))
          return BadRef("string");
        seg_->processes.push_back(e);
        return Status::Ok();
      }
      case RecordKind::kLost: {
        LostEvent e;
        uint8_t stream;
        if (!r_.GetByte(&stream) || !r_.GetVarint(&e.segments)) return Truncated();
        if (stream > kMaxStream) return DataLoss("unknown stream " + std::to_string(stream));
        e.stream = static_cast<Stream>(stream);
        seg_->lost.push_back(e);
        return Status::Ok();
      }
    }
    if (kind == kJobRecordKind) return Job();
    if (kind == kCollectiveRecordKind) return Collective();
    if (kind == kSamplerStatsKind) return SamplerStats();
    if (kind == kGpuRecordKind) return Gpu();
    if (kind == kAllocationRecordKind) return Allocation();
    if (kind == kTorchStepRecordKind) return TorchStep();
    if (kind >= kFirstSkippableKind && kind <= kLastSkippableKind) {
      std::string_view skipped;
      if (!r_.GetLengthPrefixed(&skipped, kMaxRawSegmentSize)) return Truncated();
      ++seg_->skipped_records;
      return Status::Ok();
    }
    return DataLoss("unknown record kind " + std::to_string(kind));
  }

  ByteReader r_;
  Segment* seg_;
  int64_t ts_ = 0;
  bool has_time_ = false;
};

}  // namespace

Result<Segment> DecodeSegment(std::string_view bytes, size_t* consumed) {
  PROBING_ASSIGN_OR_RETURN(SegmentInfo info, ParseSegmentHeader(bytes));
  if (bytes.size() < info.header_size || info.payload_size > bytes.size() - info.header_size)
    return DataLoss(
        "segment truncated: payload of " + std::to_string(info.payload_size) + " bytes declared, " +
        std::to_string(bytes.size() > info.header_size ? bytes.size() - info.header_size : 0) +
        " present");
  // The checksum covers our 64 header bytes (checksum zeroed), then the payload.
  raw::SegmentHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  h.checksum = 0;
  std::string_view stored = bytes.substr(info.header_size, info.payload_size);
  uint32_t crc = Crc32cExtend(Crc32c(&h, sizeof h), stored.data(), stored.size());
  if (crc != info.checksum) return DataLoss("segment checksum mismatch (corrupt data)");

  Segment seg;
  seg.info = info;
  std::string raw_buf;
  std::string_view payload = stored;
  if (static_cast<Codec>(info.codec) != Codec::kNone || stored.size() != info.raw_size) {
    PROBING_RETURN_IF_ERROR(
        Decompress(static_cast<Codec>(info.codec), stored, info.raw_size, &raw_buf));
    payload = raw_buf;
  }
  PROBING_RETURN_IF_ERROR(RecordDecoder(payload, &seg).Run());
  if (consumed != nullptr) *consumed = info.total_size();
  return seg;
}

}  // namespace probing::format
