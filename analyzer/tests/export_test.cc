#include "probing/analyzer/export.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "../../format/tests/test_events.h"
#include "probing/format/segment.h"

namespace probing::analyzer {
namespace {

using namespace probing::format;
using json = nlohmann::json;
using testing::kBaseTs;

// Two threads: main runs train -> forward (3 samples) and train -> load (1); the loader thread
// runs fetch (2 samples), and once has no Python frame at all.
Segment TwoThreads(uint32_t pid = 100, uint64_t seq = 0) {
  SegmentBuilder b(Stream::kStacks, pid);
  b.SetProcess(ProcessInfo::Of(pid, kBaseTs, -1, "3.11.2", "python t.py", "h"));
  uint32_t main_t = b.InternThread(pid, b.InternString("MainThread"));
  uint32_t loader = b.InternThread(pid + 1, b.InternString("loader;0"));
  FrameLine fwd[] = {{"forward", "m.py", 5, 6}, {"train", "t.py", 1, 3}};
  FrameLine load[] = {{"load", "t.py", 9, 10}, {"train", "t.py", 1, 4}};
  FrameLine fetch[] = {{"fetch", "d.py", 2, 2}};
  for (int i = 0; i < 3; ++i) b.AddStackSample(kBaseTs + i * 10, main_t, b.InternStack(fwd), 1);
  b.AddStackSample(kBaseTs + 30, main_t, b.InternStack(load), 1);
  b.AddStackSample(kBaseTs + 5, loader, b.InternStack(fetch), 0);
  b.AddStackSample(kBaseTs + 15, loader, b.InternStack(fetch), 0);
  b.AddStackSample(kBaseTs + 25, loader, 0, 0);
  std::string bytes;
  EXPECT_TRUE(b.Seal(Codec::kZstd, seq, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  EXPECT_TRUE(seg.ok());
  return std::move(seg).value();
}

TEST(FoldStacks, RootFirstPerThreadWithCounts) {
  FoldedStacks f = FoldStacks({TwoThreads()}, {});
  std::ostringstream out;
  WriteFolded(f, out);
  // ';' inside a name would split a frame: it becomes ':'. Lines sorted.
  EXPECT_EQ(out.str(),
            "MainThread (100);train (t.py:1);forward (m.py:5) 3\n"
            "MainThread (100);train (t.py:1);load (t.py:9) 1\n"
            "loader:0 (101);fetch (d.py:2) 2\n");
  EXPECT_EQ(f.samples, 6u);
  EXPECT_EQ(f.without_frames, 1u);
}

TEST(FoldStacks, Filters) {
  SampleFilter by_thread;
  by_thread.thread = 101;
  EXPECT_EQ(FoldStacks({TwoThreads()}, by_thread).samples, 2u);
  SampleFilter by_time;
  by_time.since_ns = kBaseTs + 10;
  by_time.until_ns = kBaseTs + 20;
  EXPECT_EQ(FoldStacks({TwoThreads()}, by_time).samples, 3u);  // main @10, @20; loader @15
  SampleFilter by_id;
  by_id.samples.emplace();
  by_id.samples->insert({100, 3});  // the 4th sample of segment 0: train -> load
  FoldedStacks f = FoldStacks({TwoThreads()}, by_id);
  ASSERT_EQ(f.stacks.size(), 1u);
  EXPECT_EQ(f.stacks.begin()->first, "MainThread (100);train (t.py:1);load (t.py:9)");
}

TEST(FoldStacks, LinesSplitFramesByTheLineExecuted) {
  SampleFilter by_line;
  by_line.lines = true;
  std::ostringstream out;
  WriteFolded(FoldStacks({TwoThreads()}, by_line), out);
  EXPECT_EQ(out.str(),
            "MainThread (100);train (t.py:3);forward (m.py:6) 3\n"
            "MainThread (100);train (t.py:4);load (t.py:10) 1\n"
            "loader:0 (101);fetch (d.py:2) 2\n");
}

TEST(FoldStacks, IdleSamplesLeftOutAndCounted) {
  SegmentBuilder b(Stream::kStacks, 5);
  b.SetProcess(ProcessInfo::Of(5, kBaseTs, -1, "3.11.2", "python t.py", "h"));
  uint32_t t = b.InternThread(5, b.InternString("MainThread"));
  FrameLine wait[] = {{"wait", "/usr/lib/python3.11/threading.py", 300, 320},
                      {"run", "t.py", 9, 10}};
  FrameLine sel[] = {{"select", "/usr/lib/python3.11/selectors.py", 400, 415}};
  b.AddStackSample(kBaseTs, t, b.InternStack(wait), 0);
  b.AddStackSample(kBaseTs + 1, t, b.InternStack(sel), 0);
  b.AddStackSample(kBaseTs + 2, t, b.InternStack(wait), kSampleHoldsGil);  // running: kept
  std::string bytes;
  ASSERT_TRUE(b.Seal(Codec::kZstd, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok());
  SampleFilter busy;
  busy.idle = false;
  FoldedStacks f = FoldStacks({*seg}, busy);
  EXPECT_EQ(f.samples, 1u);
  EXPECT_EQ(f.idle, 2u);
  FoldedStacks all = FoldStacks({*seg}, {});
  EXPECT_EQ(all.samples, 3u);
  EXPECT_EQ(all.idle, 0u);
}

TEST(FoldStacks, SeveralProcessesGetAProcessRoot) {
  FoldedStacks f = FoldStacks({TwoThreads(100), TwoThreads(200)}, {});
  EXPECT_EQ(f.samples, 12u);
  EXPECT_EQ(f.stacks.count("process 200;loader:0 (201);fetch (d.py:2)"), 1u);
}

TEST(FlameGraphSvg, OneFramePerNodeWithTooltips) {
  std::ostringstream out;
  FlameGraphOptions o;
  o.title = "t <&> py";
  WriteFlameGraphSvg(FoldStacks({TwoThreads()}, {}), o, out);
  std::string svg = out.str();
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("t &lt;&amp;&gt; py"), std::string::npos);  // escaped
  // Two thread roots, train, forward, load, fetch: 6 frames.
  size_t frames = 0;
  for (size_t at = 0; (at = svg.find("<g class=\"f\"", at)) != std::string::npos; ++at) ++frames;
  EXPECT_EQ(frames, 6u);
  EXPECT_NE(svg.find("<title>train (t.py:1) (4 samples, 66.67%)</title>"), std::string::npos);
  EXPECT_NE(svg.find("data-total=\"6\""), std::string::npos);
  EXPECT_NE(svg.find("function zoom"), std::string::npos);  // the script is inside
  EXPECT_EQ(svg.find("]]>"), svg.rfind("]]>"));             // and cannot end its CDATA early
}

TEST(FlameGraphSvg, EmptySaysSo) {
  std::ostringstream out;
  WriteFlameGraphSvg({}, {}, out);
  EXPECT_NE(out.str().find("No samples with Python frames"), std::string::npos);
}

TEST(Speedscope, OneSampledProfilePerThreadInTimeOrder) {
  std::ostringstream out;
  WriteSpeedscope({TwoThreads()}, {}, "run", out);
  json doc = json::parse(out.str());
  EXPECT_EQ(doc["$schema"], "https://www.speedscope.app/file-format-schema.json");
  ASSERT_EQ(doc["profiles"].size(), 2u);
  const json& main_p = doc["profiles"][0];
  EXPECT_EQ(main_p["type"], "sampled");
  EXPECT_EQ(main_p["name"], "MainThread (100)");
  ASSERT_EQ(main_p["samples"].size(), 4u);
  EXPECT_EQ(main_p["endValue"], 4);
  const json& frames = doc["shared"]["frames"];
  const json& last = main_p["samples"][3];  // train -> load, root first
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(frames[last[0].get<size_t>()]["name"], "train");
  EXPECT_EQ(frames[last[1].get<size_t>()]["name"], "load");
  EXPECT_EQ(frames[last[1].get<size_t>()]["line"], 9);
}

TEST(ChromeTrace, TorchCallsNestInTheirStep) {
  SegmentBuilder b(Stream::kTorch, 100);
  b.SetProcess(ProcessInfo::Of(100, kBaseTs, 2, "3.11.2", "python t.py", "h"));
  uint32_t t = b.InternThread(100, b.InternString("MainThread"));
  TorchEvent outer;
  outer.ts = kBaseTs;
  outer.thread = t;
  outer.step = 4;
  outer.module = b.InternString("");
  outer.duration_ns = 1'000'000;
  b.AddTorch(outer);
  TorchEvent inner = outer;
  inner.ts = kBaseTs + 100'000;
  inner.seq = 1;
  inner.module = b.InternString("fc1");
  inner.duration_ns = 200'000;
  b.AddTorch(inner);
  std::string bytes;
  ASSERT_TRUE(b.Seal(Codec::kZstd, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok());
  std::ostringstream out;
  EXPECT_EQ(WriteChromeTrace({*seg}, {}, out).calls, 2u);
  json doc = json::parse(out.str());
  int complete = 0;
  for (const json& e : doc["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "process_name") {
      EXPECT_EQ(e["args"]["name"], "python t.py (rank 2)");
    }
    if (e["ph"] != "X") continue;
    ++complete;
    if (e["name"] == "step 4") {
      EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 1000.0);  // microseconds
    }
    if (e["name"] == "fc1") {
      EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 200.0);
      EXPECT_EQ(e["args"]["seq"], 1);
    }
  }
  EXPECT_EQ(complete, 3);
}

// What a JavaScript importer (speedscope's) does with complete events, in doubles: per thread,
// times less the thread's first, events by start and then longest first, each closing at
// ts + dur. Returns every event that starts before, or ends after, the one around it, and
// every event that ends after its next sibling starts.
std::vector<std::string> NestingProblems(const json& doc) {
  struct Ev {
    double ts, end;
    std::string name;
  };
  std::map<std::pair<int64_t, int64_t>, std::vector<json>> threads;
  for (const json& e : doc["traceEvents"])
    if (e["ph"] == "X") threads[{e["pid"].get<int64_t>(), e["tid"].get<int64_t>()}].push_back(e);
  std::vector<std::string> problems;
  for (auto& [key, list] : threads) {
    double first = list.front()["ts"].get<double>();
    for (const json& e : list) first = std::min(first, e["ts"].get<double>());
    for (bool relative : {false, true}) {
      std::vector<Ev> evs;
      for (const json& e : list) {
        const double ts = e["ts"].get<double>() - (relative ? first : 0.0);
        evs.push_back({ts, ts + e["dur"].get<double>(), e["name"].get<std::string>()});
      }
      std::stable_sort(evs.begin(), evs.end(), [](const Ev& a, const Ev& b) {
        return a.ts != b.ts ? a.ts < b.ts : (a.end - a.ts) > (b.end - b.ts);
      });
      std::vector<Ev> open;
      for (const Ev& e : evs) {
        while (!open.empty() && open.back().end <= e.ts) open.pop_back();
        if (!open.empty() && e.end > open.back().end)
          problems.push_back(e.name + " ends after " + open.back().name);
        open.push_back(e);
      }
    }
  }
  return problems;
}

TEST(ChromeTrace, TheCheckerSeesWhatDoublesBreak) {
  // 0.1 + 0.2 is 0.30000000000000004 in doubles: the child ends after its parent.
  json bad = json::parse(R"({"traceEvents": [
      {"name": "parent", "ph": "X", "ts": 0, "dur": 0.3, "pid": 1, "tid": 1},
      {"name": "child", "ph": "X", "ts": 0.1, "dur": 0.2, "pid": 1, "tid": 1}]})");
  EXPECT_EQ(NestingProblems(bad),
            std::vector<std::string>({"child ends after parent", "child ends after parent"}));
}

TEST(ChromeTrace, NestsExactlyInDoubles) {
  // Steps of calls inside calls whose ends coincide with their parents' and whose starts
  // coincide with their siblings' ends, at nanosecond times that decimal microseconds do not
  // hold exactly: written as ns / 1e3, many of them would break.
  SegmentBuilder b(Stream::kTorch, 100);
  b.SetProcess(ProcessInfo::Of(100, kBaseTs, 0, "3.11.2", "python t.py", "h"));
  uint32_t t = b.InternThread(100, b.InternString("MainThread"));
  std::mt19937_64 rng(7);
  int64_t now = kBaseTs + 123'456'789;
  uint64_t seq = 0, calls = 0;
  for (uint64_t step = 0; step < 40; ++step) {
    // model [a, e) holds fc1 [a, m) and fc2 [m, e), fc2 holds act [m + 1, e).
    const int64_t a = now + static_cast<int64_t>(rng() % 1000);
    const int64_t m = a + 1 + static_cast<int64_t>(rng() % 100'000);
    const int64_t e = m + 2 + static_cast<int64_t>(rng() % 100'000);
    auto add = [&](const char* name, int64_t from, int64_t to) {
      TorchEvent ev;
      ev.ts = from;
      ev.duration_ns = static_cast<uint64_t>(to - from);
      ev.thread = t;
      ev.step = step;
      ev.seq = seq++;
      ev.module = b.InternString(name);
      b.AddTorch(ev);
      ++calls;
    };
    add("", a, e);
    add("fc1", a, m);
    add("fc2", m, e);
    add("act", m + 1, e);
    now = e + static_cast<int64_t>(rng() % 3);  // the next step may start where this one ends
  }
  std::string bytes;
  ASSERT_TRUE(b.Seal(Codec::kZstd, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok());
  std::ostringstream out;
  ChromeTraceStats stats = WriteChromeTrace({*seg}, {}, out);
  EXPECT_EQ(stats.calls, calls);
  EXPECT_EQ(stats.cut, 0u);
  json doc = json::parse(out.str());
  EXPECT_EQ(NestingProblems(doc), std::vector<std::string>{});
  // Perfetto rounds microseconds to whole nanoseconds: it gets the recorded ones back.
  int64_t zero = doc["otherData"]["unix_time_ns_at_zero"].get<int64_t>();
  size_t checked = 0;
  for (const json& ev : doc["traceEvents"]) {
    if (ev["ph"] != "X" || ev["cat"] == "train_step") continue;
    const int64_t ts = std::llround(ev["ts"].get<double>() * 1000.0) + zero;
    const int64_t dur = std::llround(ev["dur"].get<double>() * 1000.0);
    bool found = false;
    for (const auto& te : seg->torch)
      if (te.seq == ev["args"]["seq"].get<uint64_t>() && te.ts == ts &&
          te.duration_ns == static_cast<uint64_t>(dur))
        found = true;
    EXPECT_TRUE(found) << ev.dump();
    ++checked;
  }
  EXPECT_EQ(checked, calls);
}

TEST(ChromeTrace, OverlapsAreCutAndZeroLengthIsAnInstant) {
  SegmentBuilder b(Stream::kTorch, 100);
  uint32_t t = b.InternThread(100, b.InternString("MainThread"));
  auto add = [&](const char* name, int64_t from, int64_t to, uint64_t seq) {
    TorchEvent ev;
    ev.ts = kBaseTs + from;
    ev.duration_ns = static_cast<uint64_t>(to - from);
    ev.thread = t;
    ev.seq = seq;
    ev.module = b.InternString(name);
    b.AddTorch(ev);
  };
  add("outer", 0, 1000, 0);
  add("late", 500, 1500, 1);  // starts inside outer, ends after it: cut at 1000
  add("blip", 700, 700, 2);
  std::string bytes;
  ASSERT_TRUE(b.Seal(Codec::kZstd, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok());
  std::ostringstream out;
  ChromeTraceStats stats = WriteChromeTrace({*seg}, {}, out);
  EXPECT_EQ(stats.calls, 3u);
  EXPECT_EQ(stats.cut, 1u);
  json doc = json::parse(out.str());
  EXPECT_EQ(NestingProblems(doc), std::vector<std::string>{});
  bool process_named = false;
  for (const json& e : doc["traceEvents"]) {
    if (e["name"] == "late") {
      EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 0.5);
    }
    if (e["name"] == "blip") {
      EXPECT_EQ(e["ph"], "i");
      EXPECT_FALSE(e.contains("dur"));
    }
    if (e["name"] == "thread_name") {
      EXPECT_EQ(e["args"]["name"], "MainThread (100)");
    }
    // No process record: the process is still named.
    if (e["name"] == "process_name") process_named = e["args"]["name"] == "pid 100";
  }
  EXPECT_TRUE(process_named);
}

TEST(ChromeTrace, MicrosecondsOnABinaryGrid) {
  EXPECT_EQ(ChromeTraceMicros(0), 0.0);
  EXPECT_EQ(ChromeTraceMicros(1000), 1.0);
  EXPECT_EQ(ChromeTraceMicros(125), 0.125);
  for (int64_t ns : {int64_t{1}, int64_t{999}, int64_t{123'456'789}, int64_t{86'400'000'000'000}}) {
    const double us = ChromeTraceMicros(ns);
    EXPECT_EQ(us * 4096, std::floor(us * 4096));  // on the grid
    EXPECT_EQ(std::llround(us * 1000), ns);       // back to the nanosecond
  }
}

}  // namespace
}  // namespace probing::analyzer
