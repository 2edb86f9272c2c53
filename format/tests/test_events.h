// Test helpers: a segment holding every event kind, and checks on it written as literals (so
// a reader that decodes an old fixture is checked against what v1 meant, not against the
// current writer).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "probing/format/ptrace.h"
#include "probing/format/segment.h"

namespace probing::format::testing {

inline constexpr int64_t kBaseTs = 1'700'000'000'000'000'000;

inline void FillAllKinds(SegmentBuilder& b) {
  ProcessInfo process;
  process.pid = 4242;
  process.start_ts = kBaseTs - 5'000'000'000;
  process.rank = 3;
  process.python_version = "3.11.2";
  process.cmdline = "python train.py --lr 0.1";
  process.host = "node7";
  b.SetProcess(process);
  uint32_t main_t = b.InternThread(4242, b.InternString("MainThread"));
  uint32_t worker = b.InternThread(4250, b.InternString("loader-0"));
  FrameLine deep[] = {{"forward", "model.py", 20, 25},
                      {"train_step", "train.py", 10, 14},
                      {"<module>", "train.py", 1, 40}};
  uint32_t cs = b.InternStack(deep);
  b.AddStackSample(kBaseTs, main_t, cs, kSampleHoldsGil);
  b.AddStackSample(kBaseTs, worker, 0, 0);
  FrameLine moved[] = {{"forward", "model.py", 20, 26},
                       {"train_step", "train.py", 10, 14},
                       {"<module>", "train.py", 1, 40}};
  b.AddStackSample(kBaseTs + 10'000'000, main_t, b.InternStack(moved), kSampleTruncated);

  TorchEvent fwd;
  fwd.ts = kBaseTs + 1'000;  // later-written record with an earlier time: negative delta
  fwd.thread = main_t;
  fwd.step = 7;
  fwd.seq = 0;
  fwd.module = b.InternString("layer1.0.conv1");
  fwd.stage = TorchStage::kForward;
  fwd.duration_ns = 1'500'000;
  b.AddTorch(fwd);
  TorchEvent bwd = fwd;
  bwd.ts = kBaseTs + 20'000'000;
  bwd.seq = 1;
  bwd.stage = TorchStage::kBackward;
  bwd.allocated = 100u << 20;
  bwd.max_allocated = 200u << 20;
  bwd.cached = 300u << 20;
  b.AddTorch(bwd);

  MemoryEvent m;
  m.ts = kBaseTs + 30'000'000;
  m.rss = 123456789;
  m.vms = 987654321;
  m.has_python_stats = true;
  m.py_blocks = 55555;
  m.gc_count[0] = 700;
  m.gc_count[1] = 8;
  m.gc_count[2] = 1;
  m.gc_collections = 42;
  m.threads = 5;
  m.cuda_reserved = 1u << 30;
  b.AddMemory(m);

  b.AddVariable(kBaseTs + 40'000'000, main_t, 7, b.InternString("train"), b.InternString("loss"),
                "0.6931");
  b.AddMetric(kBaseTs + 50'000'000, b.InternString("throughput"), 1234.5);
  b.AddLost(Stream::kStacks, 3);
}

// What FillAllKinds wrote, spelled out.
inline void CheckAllKinds(const Segment& s) {
  ASSERT_EQ(s.processes.size(), 1u);
  const ProcessEvent& p = s.processes[0];
  EXPECT_EQ(p.pid, 4242u);
  EXPECT_EQ(p.start_ts, kBaseTs - 5'000'000'000);
  EXPECT_EQ(p.rank, 3);
  EXPECT_EQ(s.String(p.python_version), "3.11.2");
  EXPECT_EQ(s.String(p.cmdline), "python train.py --lr 0.1");
  EXPECT_EQ(s.String(p.host), "node7");

  ASSERT_EQ(s.samples.size(), 3u);
  EXPECT_EQ(s.samples[0].ts, kBaseTs);
  EXPECT_EQ(s.samples[0].flags, kSampleHoldsGil);
  EXPECT_EQ(s.threads[s.samples[0].thread].tid, 4242u);
  EXPECT_EQ(s.String(s.threads[s.samples[0].thread].name), "MainThread");
  EXPECT_EQ(s.samples[1].callsite, 0u);
  EXPECT_EQ(s.String(s.threads[s.samples[1].thread].name), "loader-0");
  EXPECT_EQ(s.samples[2].ts, kBaseTs + 10'000'000);
  EXPECT_EQ(s.samples[2].flags, kSampleTruncated);
  // Walk the first and third stacks, innermost first.
  auto walk = [&](uint32_t cs) {
    std::vector<std::string> out;
    for (; cs != 0; cs = s.callsites[cs].parent) {
      const CallSite& c = s.callsites[cs];
      const Frame& f = s.frames[c.frame];
      out.push_back(std::string(s.String(f.func)) + "@" + std::string(s.String(f.file)) + ":" +
                    std::to_string(c.line) + "/" + std::to_string(f.first_line));
    }
    return out;
  };
  EXPECT_EQ(walk(s.samples[0].callsite),
            (std::vector<std::string>{"forward@model.py:25/20", "train_step@train.py:14/10",
                                      "<module>@train.py:40/1"}));
  EXPECT_EQ(walk(s.samples[2].callsite),
            (std::vector<std::string>{"forward@model.py:26/20", "train_step@train.py:14/10",
                                      "<module>@train.py:40/1"}));
  // The two stacks share their callers: 3 + 1 call sites.
  EXPECT_EQ(s.callsites.size(), 1u + 4u);

  ASSERT_EQ(s.torch.size(), 2u);
  EXPECT_EQ(s.torch[0].ts, kBaseTs + 1'000);
  EXPECT_EQ(s.torch[0].step, 7u);
  EXPECT_EQ(s.String(s.torch[0].module), "layer1.0.conv1");
  EXPECT_EQ(s.torch[0].stage, TorchStage::kForward);
  EXPECT_EQ(s.torch[0].duration_ns, 1'500'000u);
  EXPECT_FALSE(s.torch[0].allocated.has_value());
  EXPECT_EQ(s.torch[1].stage, TorchStage::kBackward);
  EXPECT_EQ(s.torch[1].seq, 1u);
  EXPECT_EQ(s.torch[1].allocated, std::optional<uint64_t>(100u << 20));
  EXPECT_EQ(s.torch[1].max_allocated, std::optional<uint64_t>(200u << 20));
  EXPECT_EQ(s.torch[1].cached, std::optional<uint64_t>(300u << 20));

  ASSERT_EQ(s.memory.size(), 1u);
  EXPECT_EQ(s.memory[0].rss, 123456789u);
  EXPECT_EQ(s.memory[0].vms, 987654321u);
  EXPECT_TRUE(s.memory[0].has_python_stats);
  EXPECT_EQ(s.memory[0].py_blocks, 55555u);
  EXPECT_EQ(s.memory[0].gc_count[0], 700u);
  EXPECT_EQ(s.memory[0].gc_count[2], 1u);
  EXPECT_EQ(s.memory[0].gc_collections, 42u);
  EXPECT_EQ(s.memory[0].threads, 5u);
  EXPECT_FALSE(s.memory[0].cuda_allocated.has_value());
  EXPECT_EQ(s.memory[0].cuda_reserved, std::optional<uint64_t>(1u << 30));

  ASSERT_EQ(s.variables.size(), 1u);
  EXPECT_EQ(s.variables[0].step, 7u);
  EXPECT_EQ(s.String(s.variables[0].func), "train");
  EXPECT_EQ(s.String(s.variables[0].name), "loss");
  EXPECT_EQ(s.variables[0].value, "0.6931");

  ASSERT_EQ(s.metrics.size(), 1u);
  EXPECT_EQ(s.String(s.metrics[0].name), "throughput");
  EXPECT_EQ(s.metrics[0].value, 1234.5);

  ASSERT_EQ(s.lost.size(), 1u);
  EXPECT_EQ(s.lost[0].stream, Stream::kStacks);
  EXPECT_EQ(s.lost[0].segments, 3u);

  EXPECT_EQ(s.info.first_ts, kBaseTs);
  EXPECT_EQ(s.info.last_ts, kBaseTs + 50'000'000);
  EXPECT_EQ(s.info.pid, 4242u);
}

// The segments of the checked-in recording tests/fixtures/format_v1.ptrace, decoded.
inline std::vector<Segment> FixtureSegments() {
  auto r = PtraceReader::Open(std::string(PROBING_SOURCE_DIR) + "/tests/fixtures/format_v1.ptrace");
  EXPECT_TRUE(r.ok());
  std::vector<Segment> out;
  for (size_t i = 0; r.ok() && i < r->segments().size(); ++i) {
    auto seg = r->ReadSegment(i);
    EXPECT_TRUE(seg.ok());
    if (seg.ok()) out.push_back(std::move(seg).value());
  }
  return out;
}

inline std::string SealAllKinds(Codec codec, uint64_t seq = 0) {
  SegmentBuilder b(Stream::kMixed, 4242);
  FillAllKinds(b);
  std::string out;
  EXPECT_TRUE(b.Seal(codec, seq, &out).ok());
  return out;
}

}  // namespace probing::format::testing
