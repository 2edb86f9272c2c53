#include "probing/analyzer/diff.h"

#include <gtest/gtest.h>

#include <sstream>

#include "../../format/tests/test_events.h"

namespace probing::analyzer {
namespace {

using namespace probing::format;
using testing::kBaseTs;

constexpr int64_t kMs = 1'000'000;

Segment Seal(SegmentBuilder& b) {
  std::string bytes;
  EXPECT_TRUE(b.Seal(Codec::kZstd, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  EXPECT_TRUE(seg.ok());
  return std::move(seg).value();
}

// A run of one process: `work` samples in train -> work, `load` in train -> load, and two
// steps in which fc1's forward takes fc1_ms. `shift` moves work's first line, as an edit
// between two runs would.
Segment RunOf(uint32_t pid, int work, int load, int64_t fc1_ms, uint32_t shift = 0) {
  SegmentBuilder b(Stream::kStacks, pid);
  b.SetProcess(ProcessInfo::Of(pid, kBaseTs, -1, "3.11.2", "python t.py", "h"));
  uint32_t t = b.InternThread(pid, b.InternString("MainThread"));
  FrameLine w[] = {{"work", "t.py", 5 + shift, 6 + shift}, {"train", "t.py", 1, 3}};
  FrameLine l[] = {{"load", "t.py", 20, 21}, {"train", "t.py", 1, 4}};
  for (int i = 0; i < work; ++i) b.AddStackSample(kBaseTs + i, t, b.InternStack(w), 1);
  for (int i = 0; i < load; ++i) b.AddStackSample(kBaseTs + 100 + i, t, b.InternStack(l), 1);
  for (uint64_t step = 0; step < 2; ++step) {
    TorchEvent e;
    e.ts = kBaseTs + static_cast<int64_t>(step) * 100 * kMs;
    e.thread = t;
    e.step = step;
    e.seq = 0;
    e.module = b.InternString("fc1");
    e.duration_ns = static_cast<uint64_t>(fc1_ms * kMs);
    b.AddTorch(e);
  }
  return Seal(b);
}

TEST(Diff, FunctionsAndModulesByChange) {
  // A: work 3 of 4 samples, load 1; B (another pid, work moved by an edit): work 1, load 3.
  Diff d = DiffRecordings({RunOf(100, 3, 1, 2)}, {RunOf(200, 1, 3, 5, 10)});
  EXPECT_EQ(d.samples_a, 4u);
  EXPECT_EQ(d.samples_b, 4u);
  ASSERT_EQ(d.functions.size(), 3u);  // work and load change by half; train not at all
  EXPECT_EQ(d.functions[2].name, "train (t.py)");
  EXPECT_DOUBLE_EQ(d.functions[2].total_a, 1.0);
  EXPECT_DOUBLE_EQ(d.functions[2].total_b, 1.0);
  EXPECT_DOUBLE_EQ(d.functions[2].Change(), 0.0);
  for (const auto& f : {d.functions[0], d.functions[1]}) {
    EXPECT_DOUBLE_EQ(f.Change(), 0.5);
    if (f.name == "load (t.py)") {
      EXPECT_DOUBLE_EQ(f.self_a, 0.25);
      EXPECT_DOUBLE_EQ(f.self_b, 0.75);
    } else {
      EXPECT_EQ(f.name, "work (t.py)");
      EXPECT_DOUBLE_EQ(f.total_b - f.total_a, -0.5);
    }
  }
  ASSERT_TRUE(d.modules_compared);
  EXPECT_EQ(d.steps_a, 2u);
  ASSERT_EQ(d.modules.size(), 1u);
  EXPECT_EQ(d.modules[0].name, "fc1 forward");
  EXPECT_DOUBLE_EQ(d.modules[0].ms_a, 2.0);
  EXPECT_DOUBLE_EQ(d.modules[0].ms_b, 5.0);
  EXPECT_DOUBLE_EQ(d.modules[0].calls_b, 1.0);
  // The stacks of the two runs meet: same thread root, frames without ids or lines.
  EXPECT_EQ(d.stacks_a.stacks.count("MainThread;train (t.py);work (t.py)"), 1u);
  EXPECT_EQ(d.stacks_b.stacks.count("MainThread;train (t.py);work (t.py)"), 1u);
}

TEST(Diff, NoTorchTraceNoModules) {
  SegmentBuilder b(Stream::kStacks, 5);
  uint32_t t = b.InternThread(5, b.InternString("MainThread"));
  FrameLine w[] = {{"work", "t.py", 5, 6}};
  b.AddStackSample(kBaseTs, t, b.InternStack(w), 1);
  Diff d = DiffRecordings({Seal(b)}, {RunOf(6, 1, 1, 1)});
  EXPECT_FALSE(d.modules_compared);
  EXPECT_TRUE(d.modules.empty());
  EXPECT_EQ(d.steps_b, 2u);
}

TEST(Diff, FlameGraphColoursByChange) {
  Diff d = DiffRecordings({RunOf(100, 3, 1, 2)}, {RunOf(200, 1, 3, 2)});
  std::ostringstream out;
  WriteDiffFlameGraphSvg(d, {}, out);
  const std::string svg = out.str();
  auto fill_of = [&](const std::string& name) {
    size_t at = svg.find("data-name=\"" + name + "\"");
    EXPECT_NE(at, std::string::npos) << name;
    at = svg.find("fill=\"", at);
    return svg.substr(at + 6, svg.find('"', at + 6) - at - 6);
  };
  EXPECT_EQ(fill_of("load (t.py)"), "rgb(255,0,0)");       // grew the most: full red
  EXPECT_EQ(fill_of("work (t.py)"), "rgb(0,0,255)");       // shrank the most: full blue
  EXPECT_EQ(fill_of("train (t.py)"), "rgb(225,225,225)");  // unchanged: grey
  EXPECT_NE(svg.find("(3 samples, 75.00%; A 25%, B 75%: +50 points)"), std::string::npos);
}

}  // namespace
}  // namespace probing::analyzer
