#include "views.h"

#include <gtest/gtest.h>

#include "probing/format/segment.h"

namespace probing::web {
namespace {

using format::Codec;
using format::FrameLine;
using format::SegmentBuilder;
using format::Stream;
using format::TorchStage;

constexpr int64_t kT0 = 1'700'000'000'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kS = 1'000'000'000;

// Segments built as the recorder builds them, sealed and decoded again.
class Data {
 public:
  SegmentBuilder& builder(Stream stream) {
    auto it = builders_.find(stream);
    if (it == builders_.end()) {
      it = builders_.emplace(stream, std::make_unique<SegmentBuilder>(stream, 4242)).first;
      format::ProcessInfo p;
      p.pid = 4242;
      p.start_ts = kT0 - 10 * kS;
      p.rank = 2;
      p.python_version = "3.11.2";
      p.cmdline = "python train.py";
      p.host = "node7";
      it->second->SetProcess(p);
    }
    return *it->second;
  }
  // Seals every builder into one segment each.
  void Seal() {
    for (auto& [stream, b] : builders_) {
      if (b->empty()) continue;
      std::string bytes;
      ASSERT_TRUE(b->Seal(Codec::kLz4, seq_++, &bytes).ok());
      auto seg = format::DecodeSegment(bytes);
      ASSERT_TRUE(seg.ok()) << seg.status().message();
      decoded_.push_back(std::make_shared<format::Segment>(std::move(seg).value()));
    }
  }
  Segments segments() const {
    Segments out;
    for (const auto& s : decoded_) out.push_back(s.get());
    return out;
  }

 private:
  std::map<Stream, std::unique_ptr<SegmentBuilder>> builders_;
  std::vector<std::shared_ptr<format::Segment>> decoded_;
  uint64_t seq_ = 0;
};

// Samples: the main thread in outer -> inner (line 7 then 8), a loader thread in wait, and a
// thread that stopped being sampled 10 s before the end.
void AddSamples(Data& d) {
  SegmentBuilder& b = d.builder(Stream::kStacks);
  const uint32_t main_t = b.InternThread(4242, b.InternString("MainThread"));
  const uint32_t loader = b.InternThread(4250, b.InternString("loader"));
  const uint32_t old = b.InternThread(4260, b.InternString("finished"));
  FrameLine inner[] = {{"inner", "t.py", 5, 7}, {"outer", "t.py", 1, 3}};
  FrameLine inner2[] = {{"inner", "t.py", 5, 8}, {"outer", "t.py", 1, 3}};
  FrameLine wait[] = {{"wait", "threading.py", 300, 320}};
  b.AddStackSample(kT0 - 10 * kS, old, b.InternStack(wait), 0);
  for (int i = 0; i < 100; ++i) {  // one a 100 ms over the last 10 s
    const int64_t ts = kT0 - 10 * kS + i * 100 * kMs;
    b.AddStackSample(ts, main_t, b.InternStack(i == 99 ? inner2 : inner), format::kSampleHoldsGil);
    // The loader's newest sample has no Python frames (the thread ending).
    b.AddStackSample(ts, loader, i == 99 ? 0 : b.InternStack(wait), 0);
  }
}

TEST(Views, LatestStacksAreEachThreadsNewestSample) {
  Data d;
  AddSamples(d);
  d.Seal();
  StacksReply r = LatestStacks(d.segments());
  EXPECT_EQ(r.source, "samples");
  EXPECT_DOUBLE_EQ(r.ts, static_cast<double>(kT0 - 10 * kS + 99 * 100 * kMs) / 1e9);
  ASSERT_EQ(r.threads.size(), 2u);           // "finished" ended long before the newest sample
  const ThreadStack& main_t = r.threads[0];  // the GIL holder first
  EXPECT_EQ(main_t.thread_id, 4242u);
  EXPECT_EQ(main_t.thread_name, "MainThread");
  EXPECT_TRUE(main_t.holds_gil);
  ASSERT_EQ(main_t.frames.size(), 2u);
  EXPECT_EQ(main_t.frames[0].func, "inner");  // innermost first, at its latest line
  EXPECT_EQ(main_t.frames[0].lineno, 8);
  EXPECT_EQ(main_t.frames[1].func, "outer");
  EXPECT_EQ(main_t.frames[1].file, "t.py");
  EXPECT_DOUBLE_EQ(*main_t.ts, r.ts);
  // A thread whose newest sample had no Python frames shows its last stack that had some.
  const ThreadStack& loader = r.threads[1];
  EXPECT_FALSE(loader.holds_gil);
  EXPECT_EQ(loader.thread_name, "loader");
  ASSERT_EQ(loader.frames.size(), 1u);
  EXPECT_EQ(loader.frames[0].func, "wait");
  EXPECT_DOUBLE_EQ(*loader.ts, r.ts - 0.1);
}

// A node's child by the start of its name.
const FlameNode* Child(const FlameReply& f, const FlameNode& n, const std::string& prefix) {
  for (const auto& c : n.children)
    if (f.names[c.name].rfind(prefix, 0) == 0) return &c;
  return nullptr;
}

TEST(Views, FlameGraphTreeByWindowAndThread) {
  Data d;
  AddSamples(d);
  d.Seal();
  FlameReply all = Flame(d.segments(), 0, std::nullopt);
  EXPECT_EQ(all.samples, 200u);  // the loader's last sample has no Python frame to draw
  EXPECT_EQ(all.names[all.root.name], "all");
  EXPECT_EQ(all.root.value, 200u);
  ASSERT_EQ(all.root.children.size(), 3u);
  // Children in name order; each thread under the root as FoldStacks names it.
  EXPECT_EQ(all.names[all.root.children[0].name], "MainThread (4242)");
  EXPECT_EQ(all.names[all.root.children[1].name], "finished (4260)");
  EXPECT_EQ(all.names[all.root.children[2].name], "loader (4250)");
  const FlameNode* outer = Child(all, all.root.children[0], "outer (");
  ASSERT_NE(outer, nullptr);
  EXPECT_EQ(all.names[outer->name], "outer (t.py:1)");
  EXPECT_EQ(outer->value, 100u);
  ASSERT_EQ(outer->children.size(), 1u);  // lines differ, the frame is one
  EXPECT_EQ(all.names[outer->children[0].name], "inner (t.py:5)");
  EXPECT_EQ(all.threads.size(), 3u);
  EXPECT_EQ(all.threads[0].samples, 100u);

  // The last 2 s: 21 samples of each live thread (the newest sample's and 20 before it), less
  // the loader's last.
  FlameReply recent = Flame(d.segments(), 2, std::nullopt);
  EXPECT_EQ(recent.samples, 41u);
  EXPECT_EQ(recent.threads.size(), 2u);
  EXPECT_NEAR(recent.to_ts - recent.from_ts, 2.0, 1e-6);

  FlameReply loader = Flame(d.segments(), 0, 4250);
  EXPECT_EQ(loader.samples, 99u);
  ASSERT_EQ(loader.root.children.size(), 1u);
  EXPECT_EQ(loader.names[loader.root.children[0].name], "loader (4250)");
  EXPECT_EQ(loader.threads.size(), 3u);  // the selector still lists every thread

  FlameReply none = Flame({}, 10, std::nullopt);
  EXPECT_EQ(none.samples, 0u);
  EXPECT_EQ(none.root.value, 0u);
}

format::TorchEvent Call(SegmentBuilder& b, uint64_t step, uint64_t seq, const char* module,
                        TorchStage stage, int64_t start, int64_t duration) {
  format::TorchEvent e;
  e.ts = start;
  e.thread = b.InternThread(4242, b.InternString("MainThread"));
  e.step = step;
  e.seq = seq;
  e.module = b.InternString(module);
  e.stage = stage;
  e.duration_ns = static_cast<uint64_t>(duration);
  return e;
}

TEST(Views, StepsSplitWallTimeWithoutCountingNestedModulesTwice) {
  Data d;
  SegmentBuilder& b = d.builder(Stream::kTorch);
  // Steps 0..3 every 100 ms: 10 ms data loading, forward 30 ms (its child layer 20 ms), loss
  // 5 ms, backward 40 ms, optimizer 5 ms. Step 4 has begun: no optimizer row yet.
  for (int64_t step = 0; step <= 4; ++step) {
    const int64_t t = kT0 + step * 100 * kMs + 10 * kMs;
    b.AddTorch(Call(b, step, 0, "MLP", TorchStage::kForward, t, 30 * kMs));
    b.AddTorch(Call(b, step, 1, "MLP.layer", TorchStage::kForward, t + 5 * kMs, 20 * kMs));
    b.AddTorch(Call(b, step, 2, "CrossEntropyLoss", TorchStage::kForward, t + 30 * kMs, 5 * kMs));
    if (step == 4) break;
    b.AddTorch(Call(b, step, 3, "MLP", TorchStage::kBackward, t + 35 * kMs, 40 * kMs));
    b.AddTorch(Call(b, step, 4, "MLP.layer", TorchStage::kBackward, t + 40 * kMs, 30 * kMs));
    b.AddTorch(Call(b, step, 5, "SGD", TorchStage::kStep, t + 85 * kMs, 5 * kMs));
  }
  d.Seal();
  StepsReply r = Steps(d.segments(), 100);
  EXPECT_EQ(r.steps_recorded, 4u);
  ASSERT_EQ(r.steps.size(), 4u);
  const StepRow& s1 = r.steps[1];
  EXPECT_EQ(s1.step, 1);
  EXPECT_NEAR(s1.wall, 0.100, 1e-9);  // end of step 0 to end of step 1
  EXPECT_NEAR(s1.forward, 0.035, 1e-9);
  EXPECT_NEAR(s1.backward, 0.040, 1e-9);
  EXPECT_NEAR(s1.optimizer, 0.005, 1e-9);
  EXPECT_NEAR(s1.rest, 0.020, 1e-9);
  EXPECT_NEAR(r.steps[0].wall, 0.090, 1e-9);  // no step before it: its own span
  EXPECT_NEAR(r.steps[0].rest, 0.010, 1e-9);
  // Modules over the steps shown, most time first, nested ones with their own time.
  ASSERT_FALSE(r.modules.empty());
  EXPECT_EQ(r.modules[0].module, "MLP");
  EXPECT_EQ(r.modules[0].stage, "backward");
  EXPECT_NEAR(r.modules[0].per_step, 0.040, 1e-9);
  EXPECT_NEAR(r.modules[0].calls_per_step, 1.0, 1e-9);
  // The latest 2 only.
  StepsReply last = Steps(d.segments(), 2);
  ASSERT_EQ(last.steps.size(), 2u);
  EXPECT_EQ(last.steps[0].step, 2);
  EXPECT_EQ(last.steps_recorded, 4u);
}

TEST(Views, MemoryCurveWindowNullsAndThinning) {
  Data d;
  SegmentBuilder& b = d.builder(Stream::kMemory);
  const int64_t n = 5000;  // more than kMaxMemoryPoints
  for (int64_t i = 0; i < n; ++i) {
    format::MemoryEvent m;
    m.ts = kT0 + i * kS;
    m.rss = static_cast<uint64_t>(1000 + i);
    m.vms = 5000;
    m.has_python_stats = i % 2 == 0;
    m.py_blocks = static_cast<uint64_t>(i);
    b.AddMemory(m);
    if (b.raw_size() > 200000) d.Seal();
  }
  d.Seal();
  MemoryReply all = Memory(d.segments(), 0);
  ASSERT_LE(all.ts.size(), kMaxMemoryPoints);
  ASSERT_GE(all.ts.size(), kMaxMemoryPoints / 2);
  EXPECT_EQ(all.rss.back(), 1000 + n - 1);  // the newest is always shown
  EXPECT_TRUE(std::is_sorted(all.ts.begin(), all.ts.end()));
  EXPECT_EQ(all.ts.size(), all.py_blocks.size());
  EXPECT_FALSE(all.cuda_allocated.back().has_value());  // CPU only: null, not 0

  MemoryReply recent = Memory(d.segments(), 9.5);
  ASSERT_EQ(recent.ts.size(), 10u);
  EXPECT_EQ(recent.rss.front(), 1000 + n - 10);
  EXPECT_EQ(recent.py_blocks.back(), std::nullopt);  // odd i: no Python figures
  EXPECT_EQ(recent.py_blocks[recent.py_blocks.size() - 2], n - 2);
}

TEST(Views, VariablesAndMetricsAreTheLatestOfEach) {
  Data d;
  SegmentBuilder& b = d.builder(Stream::kVariables);
  const uint32_t t = b.InternThread(4242, b.InternString("MainThread"));
  for (uint64_t step = 0; step < 3; ++step)
    b.AddVariable(kT0 + static_cast<int64_t>(step) * kS, t, step, b.InternString("train_step"),
                  b.InternString("loss"), std::to_string(3 - step) + ".5");
  SegmentBuilder& m = d.builder(Stream::kMetrics);
  m.AddMetric(kT0, m.InternString("lr"), 0.1);
  m.AddMetric(kT0 + kS, m.InternString("lr"), 0.05);
  d.Seal();
  VariablesReply r = Variables(d.segments());
  ASSERT_EQ(r.variables.size(), 1u);
  EXPECT_EQ(r.variables[0].func, "train_step");
  EXPECT_EQ(r.variables[0].name, "loss");
  EXPECT_EQ(r.variables[0].value, "1.5");
  EXPECT_EQ(r.variables[0].step, 2);
  ASSERT_EQ(r.metrics.size(), 1u);
  EXPECT_DOUBLE_EQ(r.metrics[0].value, 0.05);
}

TEST(Views, OverviewFromTheData) {
  Data d;
  AddSamples(d);
  SegmentBuilder& b = d.builder(Stream::kTorch);
  b.AddTorch(Call(b, 7, 0, "MLP", TorchStage::kForward, kT0, kMs));
  b.AddTorch(Call(b, 8, 0, "MLP", TorchStage::kForward, kT0 + kS, kMs));
  d.Seal();
  OverviewReply o;
  FillOverview(d.segments(), &o);
  EXPECT_EQ(o.pid, 4242);
  EXPECT_EQ(o.command, "python train.py");
  EXPECT_EQ(o.python_version, "3.11.2");
  EXPECT_EQ(o.host, "node7");
  EXPECT_EQ(o.rank, 2);
  EXPECT_EQ(o.samples, 201u);
  EXPECT_EQ(o.steps, 2u);
  EXPECT_DOUBLE_EQ(o.first_ts, static_cast<double>(kT0 - 10 * kS) / 1e9);
  EXPECT_DOUBLE_EQ(o.last_ts, static_cast<double>(kT0 + kS) / 1e9);
  ASSERT_EQ(o.threads.size(), 3u);
  EXPECT_EQ(o.threads[0].samples, 100u);
}

TEST(Views, ClusterStepsGridOfRanksAndSteps) {
  // Rank 0 steps every 100 ms; rank 1 took 300 ms over its step 3 and has not traced step 1;
  // step 5 is running on rank 0 (no optimizer row yet).
  std::vector<RankStep> rows;
  for (int64_t step = 0; step <= 4; ++step) rows.push_back({0, step, 10.0 + 0.1 * step, true});
  rows.push_back({0, 5, 10.55, false});
  for (int64_t step : {0, 2, 3, 4})
    rows.push_back({1, step, 10.0 + 0.1 * step + (step >= 3 ? 0.2 : 0), true});
  ClusterStepsReply r = ClusterSteps(rows, 3);
  EXPECT_EQ(r.ranks, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(r.steps, (std::vector<int64_t>{2, 3, 4}));
  ASSERT_EQ(r.wall.size(), 2u);
  EXPECT_NEAR(*r.wall[0][0], 0.1, 1e-9);
  EXPECT_FALSE(r.wall[1][0].has_value());  // its step 1 is missing
  EXPECT_NEAR(*r.wall[1][1], 0.3, 1e-9);
  EXPECT_NEAR(*r.wall[1][2], 0.1, 1e-9);
  EXPECT_EQ(ClusterSteps(rows, 100).steps.front(), 0);
  EXPECT_TRUE(ClusterSteps({}, 10).steps.empty());
}

}  // namespace
}  // namespace probing::web
