#include "probing/analyzer/summary.h"

#include <gtest/gtest.h>

#include "../../format/tests/test_events.h"
#include "probing/analyzer/export.h"

namespace probing::analyzer {
namespace {

using format::FrameLine;
using format::SegmentBuilder;
using format::Stream;
using format::TorchEvent;
using format::TorchStage;
using format::testing::kBaseTs;

constexpr int64_t kMs = 1'000'000;

format::Segment Seal(SegmentBuilder& b) {
  std::string bytes;
  EXPECT_TRUE(b.Seal(format::Codec::kZstd, 0, &bytes).ok());
  auto seg = format::DecodeSegment(bytes);
  EXPECT_TRUE(seg.ok());
  return std::move(seg).value();
}

TEST(Summarize, Fixture) {
  Summary s = Summarize(format::testing::FixtureSegments());
  EXPECT_EQ(s.segments, 3u);
  EXPECT_EQ(s.events["stack samples"], 9u);
  EXPECT_EQ(s.events["torch calls"], 6u);
  EXPECT_EQ(s.steps, 1u);
  ASSERT_EQ(s.processes.size(), 1u);
  EXPECT_EQ(s.processes[0],
            "pid 4242: python train.py --lr 0.1 (Python 3.11.2, host node7, rank 3)");
  EXPECT_EQ(s.threads, (std::vector<std::string>{"4242 MainThread", "4250 loader-0"}));
  ASSERT_EQ(s.per_process.size(), 1u);
  const ProcessSummary& p = s.per_process[0];
  EXPECT_EQ(p.rank, 3);
  ASSERT_FALSE(p.top_functions.empty());
  EXPECT_EQ(p.top_functions[0].name, "forward (model.py)");
  EXPECT_EQ(p.top_functions[0].count, 6u);
  EXPECT_EQ(p.top_modules.size(), 2u);
  EXPECT_EQ(p.timed_steps, 0u);  // one step: no next step to end it
  EXPECT_EQ(s.last_ts - s.first_ts, 50'000'000);
}

// Steps 1-4 at 100 ms intervals but step 3 takes 200 ms; each step: a 30 ms forward of "model"
// with a 10 ms "model.layer" inside it, a 40 ms backward, a 10 ms optimizer step.
format::Segment Training() {
  SegmentBuilder b(Stream::kTorch, 7);
  b.SetProcess(format::ProcessInfo::Of(7, kBaseTs, 0, "3.11.2", "python train.py", "h"));
  uint32_t t = b.InternThread(7, b.InternString("MainThread"));
  uint32_t model = b.InternString("model"), layer = b.InternString("model.layer"),
           opt = b.InternString("SGD");
  const int64_t starts[] = {0, 100, 200, 400};
  for (uint64_t step = 1; step <= 4; ++step) {
    const int64_t at = kBaseTs + starts[step - 1] * kMs;
    TorchEvent e;
    e.thread = t;
    e.step = step;
    e.ts = at;
    e.module = model;
    e.duration_ns = 30 * kMs;
    b.AddTorch(e);
    e.ts = at + 5 * kMs;
    e.module = layer;
    e.duration_ns = 10 * kMs;
    b.AddTorch(e);
    e.ts = at + 30 * kMs;
    e.module = model;
    e.stage = TorchStage::kBackward;
    e.duration_ns = 40 * kMs;
    b.AddTorch(e);
    e.ts = at + 70 * kMs;
    e.module = opt;
    e.stage = TorchStage::kStep;
    e.duration_ns = 10 * kMs;
    b.AddTorch(e);
  }
  return Seal(b);
}

TEST(Summarize, StepTimesAndWhereAStepGoes) {
  Summary s = Summarize({Training()});
  ASSERT_EQ(s.per_process.size(), 1u);
  const ProcessSummary& p = s.per_process[0];
  EXPECT_EQ(p.steps, 4u);
  EXPECT_EQ(p.timed_steps, 3u);  // 1, 2 and 3; step 4 has no next step
  EXPECT_DOUBLE_EQ(p.p50_ms, 100);
  EXPECT_DOUBLE_EQ(p.p90_ms, 200);
  EXPECT_DOUBLE_EQ(p.max_ms, 200);
  ASSERT_EQ(p.slowest_steps.size(), 3u);
  EXPECT_EQ(p.slowest_steps[0].step, 3u);
  EXPECT_DOUBLE_EQ(p.slowest_steps[0].ms, 200);
  // The nested layer is inside the forward: counted once.
  EXPECT_DOUBLE_EQ(p.forward_ms, 30);
  EXPECT_DOUBLE_EQ(p.backward_ms, 40);
  EXPECT_DOUBLE_EQ(p.optimizer_ms, 10);
  EXPECT_DOUBLE_EQ(p.other_ms, (20 + 20 + 120) / 3.0);
}

// The same process's python.torch_steps: steps 0-7, each 50 ms but step 3 (200 ms), steps 1-4
// traced and the rest left out by the budget.
format::Segment StepRows() {
  SegmentBuilder b(Stream::kTorch, 7);
  b.SetProcess(format::ProcessInfo::Of(7, kBaseTs, 0, "3.11.2", "python train.py", "h"));
  uint32_t t = b.InternThread(7, b.InternString("MainThread"));
  for (uint64_t step = 0; step < 8; ++step) {
    format::TorchStepEvent e;
    e.thread = t;
    e.step = step;
    e.ts_ns = kBaseTs + static_cast<int64_t>(step) * 50 * kMs;
    e.duration_ns = (step == 3 ? 200 : 50) * kMs;
    e.decision = step >= 1 && step <= 4 ? format::kStepTraced : format::kStepOverBudget;
    b.AddTorchStep(e);
  }
  return Seal(b);
}

TEST(Summarize, StepTimesOfEveryStepFromTheStepRows) {
  Summary s = Summarize({Training(), StepRows()});
  ASSERT_EQ(s.per_process.size(), 1u);
  const ProcessSummary& p = s.per_process[0];
  EXPECT_EQ(p.steps, 4u);  // traced
  EXPECT_EQ(p.all_steps, 8u);
  EXPECT_EQ(p.timed_steps, 8u);  // every step, the last and the untraced ones too
  EXPECT_DOUBLE_EQ(p.p50_ms, 50);
  EXPECT_DOUBLE_EQ(p.max_ms, 200);
  ASSERT_FALSE(p.slowest_steps.empty());
  EXPECT_EQ(p.slowest_steps[0].step, 3u);
  // The parts: over the four traced steps, each with its row's time.
  EXPECT_EQ(p.parted_steps, 4u);
  EXPECT_DOUBLE_EQ(p.forward_ms, 30);
  EXPECT_DOUBLE_EQ(p.backward_ms, 40);
  EXPECT_DOUBLE_EQ(p.other_ms, (0 + 0 + 120 + 0) / 4.0);
}

TEST(Summarize, ModulesBySelfAndTotalTime) {
  Summary s = Summarize({Training()});
  const ProcessSummary& p = s.per_process[0];
  ASSERT_FALSE(p.top_modules.empty());
  EXPECT_EQ(p.top_modules[0].name, "model backward");
  EXPECT_NEAR(p.top_modules[0].seconds, 0.160, 1e-9);
  const NamedCount* fwd = nullptr;
  for (const auto& m : p.top_modules_self)
    if (m.name == "model forward") fwd = &m;
  ASSERT_NE(fwd, nullptr);
  EXPECT_EQ(fwd->count, 4u);
  EXPECT_NEAR(fwd->seconds, 0.120, 1e-9);
  EXPECT_NEAR(fwd->self_seconds, 0.080, 1e-9);  // less the 10 ms layer inside each
  EXPECT_EQ(p.top_modules_self[0].name, "model backward");
  EXPECT_EQ(p.top_modules_self[1].name, "model forward");
}

format::Segment Waiting() {
  SegmentBuilder b(Stream::kStacks, 9);
  b.SetProcess(format::ProcessInfo::Of(9, kBaseTs, -1, "3.11.2", "python t.py", "h"));
  uint32_t main_t = b.InternThread(9, b.InternString("MainThread"));
  uint32_t waiter = b.InternThread(10, b.InternString("waiter"));
  FrameLine work[] = {{"work", "t.py", 5, 6}};
  FrameLine wait[] = {{"wait", "/usr/lib/python3.11/threading.py", 300, 320},
                      {"run", "t.py", 9, 10}};
  FrameLine mine[] = {{"wait", "/src/mythreading.py", 3, 4}};  // not the standard library's
  for (int i = 0; i < 3; ++i)
    b.AddStackSample(kBaseTs + i, main_t, b.InternStack(work), format::kSampleHoldsGil);
  for (int i = 0; i < 5; ++i) b.AddStackSample(kBaseTs + i, waiter, b.InternStack(wait), 0);
  // Holding the GIL inside wait: running Python code, not waiting.
  b.AddStackSample(kBaseTs + 9, waiter, b.InternStack(wait), format::kSampleHoldsGil);
  b.AddStackSample(kBaseTs + 10, waiter, b.InternStack(mine), 0);
  format::MemoryEvent m;
  m.ts = kBaseTs;
  m.rss = 100'000'000;
  m.has_python_stats = true;
  m.py_blocks = 1000;
  b.AddMemory(m);
  m.ts = kBaseTs + 30'000 * kMs;
  m.rss = 250'000'000;
  m.py_blocks = 4000;
  b.AddMemory(m);
  m.ts = kBaseTs + 120'000 * kMs;  // two minutes after the first
  m.rss = 200'000'000;
  m.has_python_stats = false;
  b.AddMemory(m);
  return Seal(b);
}

TEST(Summarize, IdleSamplesLeftOutAndCounted) {
  format::Segment seg = Waiting();
  Summary s = Summarize({seg});
  const ProcessSummary& p = s.per_process[0];
  EXPECT_EQ(p.samples, 10u);
  EXPECT_EQ(p.idle_samples, 5u);
  EXPECT_FALSE(p.idle_included);
  ASSERT_EQ(p.top_functions.size(), 3u);
  EXPECT_EQ(p.top_functions[0].name, "work (t.py)");
  EXPECT_EQ(p.top_functions[0].count, 3u);

  SummaryOptions with;
  with.idle = true;
  Summary all = Summarize({seg}, with);
  EXPECT_EQ(all.per_process[0].top_functions[0].name, "wait (/usr/lib/python3.11/threading.py)");
  EXPECT_EQ(all.per_process[0].top_functions[0].count, 6u);
}

// A main thread in leaf() under a recursive rec(), a waiter that only ever waits, and one
// sample 100 ms later than the rest.
format::Segment Nested() {
  SegmentBuilder b(Stream::kStacks, 11);
  b.SetProcess(format::ProcessInfo::Of(11, kBaseTs, -1, "3.11.2", "python t.py", "h"));
  uint32_t main_t = b.InternThread(11, b.InternString("MainThread"));
  uint32_t waiter = b.InternThread(12, b.InternString("waiter"));
  FrameLine leaf[] = {{"leaf", "t.py", 1, 2},
                      {"rec", "t.py", 5, 6},
                      {"rec", "t.py", 5, 7},
                      {"main", "t.py", 9, 10}};
  FrameLine rec[] = {{"rec", "t.py", 5, 6}, {"main", "t.py", 9, 10}};
  FrameLine wait[] = {{"wait", "/usr/lib/python3.11/threading.py", 300, 320},
                      {"run", "t.py", 12, 13}};
  for (int i = 0; i < 4; ++i)
    b.AddStackSample(kBaseTs + i * kMs, main_t, b.InternStack(leaf), format::kSampleHoldsGil);
  for (int i = 0; i < 2; ++i)
    b.AddStackSample(kBaseTs + i * kMs, main_t, b.InternStack(rec), format::kSampleHoldsGil);
  for (int i = 0; i < 3; ++i) b.AddStackSample(kBaseTs + i * kMs, waiter, b.InternStack(wait), 0);
  b.AddStackSample(kBaseTs + 100 * kMs, main_t, b.InternStack(leaf), format::kSampleHoldsGil);
  return Seal(b);
}

TEST(Summarize, OwnAndTotalSamplesInAWindow) {
  SummaryOptions o;
  o.since_ns = kBaseTs;
  o.until_ns = kBaseTs + 50 * kMs;
  o.with_callers = true;
  Summary s = Summarize({Nested()}, o);
  const ProcessSummary& p = s.per_process[0];
  EXPECT_EQ(p.samples, 9u);  // the later sample is outside the window
  EXPECT_EQ(p.idle_samples, 3u);
  EXPECT_EQ(p.threads, 2u);
  EXPECT_EQ(p.idle_threads, 1u);
  ASSERT_EQ(p.top_functions.size(), 3u);
  EXPECT_EQ(p.top_functions[0].name, "leaf (t.py)");
  EXPECT_EQ(p.top_functions[0].count, 4u);
  EXPECT_EQ(p.top_functions[0].total, 4u);
  EXPECT_EQ(p.top_functions[1].name, "rec (t.py)");
  EXPECT_EQ(p.top_functions[1].count, 2u);
  EXPECT_EQ(p.top_functions[1].total, 6u);  // twice on the leaf's stacks, counted once
  EXPECT_EQ(p.top_functions[2].name, "main (t.py)");
  EXPECT_EQ(p.top_functions[2].count, 0u);
  EXPECT_EQ(p.top_functions[2].total, 6u);

  // Without the window and the callers: every sample, only innermost functions.
  Summary all = Summarize({Nested()});
  EXPECT_EQ(all.per_process[0].samples, 10u);
  ASSERT_EQ(all.per_process[0].top_functions.size(), 2u);
  EXPECT_EQ(all.per_process[0].top_functions[0].count, 5u);
  EXPECT_EQ(all.per_process[0].top_functions[0].total, 5u);
}

TEST(Summarize, MemoryStartEndPeakAndGrowth) {
  Summary s = Summarize({Waiting()});
  const MemorySummary& m = s.per_process[0].memory;
  EXPECT_EQ(m.readings, 3u);
  EXPECT_DOUBLE_EQ(m.minutes, 2);
  EXPECT_TRUE(m.rss.present);
  EXPECT_EQ(m.rss.start, 100'000'000u);
  EXPECT_EQ(m.rss.end, 200'000'000u);
  EXPECT_EQ(m.rss.peak, 250'000'000u);
  EXPECT_DOUBLE_EQ(m.rss.per_minute, 50'000'000);
  // Python's figures from the readings that had them.
  EXPECT_TRUE(m.python_blocks.present);
  EXPECT_EQ(m.python_blocks.start, 1000u);
  EXPECT_EQ(m.python_blocks.end, 4000u);
  EXPECT_FALSE(m.cuda_allocated.present);
}

TEST(Summarize, OneSectionPerProcessRanksFirst) {
  Summary s = Summarize({Waiting(), Training()});
  ASSERT_EQ(s.per_process.size(), 2u);
  EXPECT_EQ(s.per_process[0].pid, 7u);  // rank 0
  EXPECT_EQ(s.per_process[1].pid, 9u);  // no rank
  EXPECT_EQ(s.per_process[0].samples, 0u);
  EXPECT_EQ(s.per_process[1].steps, 0u);
  EXPECT_EQ(s.steps, 4u);
}

TEST(IsIdleSample, StandardLibraryWaitsWithoutTheGil) {
  format::Segment seg = Waiting();
  int idle = 0;
  for (const auto& smp : seg.samples) idle += IsIdleSample(seg, smp) ? 1 : 0;
  EXPECT_EQ(idle, 5);
  EXPECT_NE(IdleCalls().find("wait (threading.py)"), std::string::npos);
}

}  // namespace
}  // namespace probing::analyzer
