#include "probing/format/tables.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "probing/format/segment.h"
#include "test_events.h"

namespace probing::format {
namespace {

std::vector<std::vector<Value>> Rows(const Segment& seg, TableId id, RowContext& ctx) {
  std::vector<std::vector<Value>> rows;
  SegmentRows(seg, id, ctx,
              [&](std::span<const Value> r) { rows.emplace_back(r.begin(), r.end()); });
  return rows;
}

class TablesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = DecodeSegment(testing::SealAllKinds(Codec::kLz4, 2));
    ASSERT_TRUE(s.ok());
    seg_ = std::move(s).value();
  }
  Segment seg_;
  RowContext ctx_;
};

TEST_F(TablesTest, NamesAreUniqueAndFollowTheSeeds) {
  std::set<std::string_view> names;
  for (const TableSchema& t : AllTables()) {
    EXPECT_TRUE(names.insert(t.name).second) << t.name;
    EXPECT_EQ(&GetTable(t.id), &t);
    EXPECT_EQ(FindTable(t.name), &t);
  }
  EXPECT_EQ(FindTable("python.nope"), nullptr);
  auto cols = [](TableId id) {
    std::vector<std::string_view> out;
    for (const Column& c : GetTable(id).columns) out.push_back(c.name);
    return out;
  };
  // The seeds' columns come first, in the seeds' order.
  auto torch = cols(TableId::kTorchTrace);
  EXPECT_EQ(std::vector<std::string_view>(torch.begin(), torch.begin() + 8),
            (std::vector<std::string_view>{"step", "seq", "module", "stage", "allocated",
                                           "max_allocated", "cached", "duration"}));
  auto bt = cols(TableId::kBacktrace);
  EXPECT_EQ(std::vector<std::string_view>(bt.begin(), bt.begin() + 5),
            (std::vector<std::string_view>{"func", "file", "lineno", "depth", "frame_type"}));
  auto vars = cols(TableId::kVariables);
  EXPECT_EQ(std::vector<std::string_view>(vars.begin(), vars.begin() + 4),
            (std::vector<std::string_view>{"step", "func", "name", "value"}));
  EXPECT_EQ(cols(TableId::kSettings), (std::vector<std::string_view>{"name", "value"}));
}

TEST_F(TablesTest, StacksOneRowPerFrameInnermostFirst) {
  auto rows = Rows(seg_, TableId::kStacks, ctx_);
  ASSERT_EQ(rows.size(), 3u + 0u + 3u);  // two 3-frame samples, one empty stack
  EXPECT_EQ(std::get<std::string_view>(rows[0][5]), "forward");
  EXPECT_EQ(std::get<int64_t>(rows[0][4]), 0);
  EXPECT_EQ(std::get<int64_t>(rows[0][7]), 25);
  EXPECT_EQ(std::get<std::string_view>(rows[2][5]), "<module>");
  EXPECT_EQ(std::get<int64_t>(rows[2][4]), 2);
  EXPECT_EQ(std::get<int64_t>(rows[0][8]), 1);  // holds_gil
  EXPECT_EQ(std::get<int64_t>(rows[3][8]), 0);
  EXPECT_EQ(std::get<std::string_view>(rows[0][2]), "MainThread");
  EXPECT_EQ(std::get<int64_t>(rows[0][3]), std::get<int64_t>(rows[2][3]));  // same sample
  EXPECT_NE(std::get<int64_t>(rows[0][3]), std::get<int64_t>(rows[3][3]));
  EXPECT_EQ(std::get<int64_t>(rows[0][3]), int64_t{2} << 24);
  EXPECT_DOUBLE_EQ(std::get<double>(rows[0][0]), testing::kBaseTs / 1e9);
}

TEST_F(TablesTest, TorchMemoryIsNullWithoutCudaAndMbWithIt) {
  auto rows = Rows(seg_, TableId::kTorchTrace, ctx_);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(rows[0][4]));
  EXPECT_EQ(std::get<std::string_view>(rows[0][3]), "forward");
  EXPECT_DOUBLE_EQ(std::get<double>(rows[0][7]), 0.0015);
  EXPECT_DOUBLE_EQ(std::get<double>(rows[1][4]), 100.0);
  EXPECT_DOUBLE_EQ(std::get<double>(rows[1][6]), 300.0);
  EXPECT_EQ(std::get<int64_t>(rows[1][10]), 3);  // rank from the process record
}

TEST_F(TablesTest, ProcessIsOneRowPerProcess) {
  EXPECT_EQ(Rows(seg_, TableId::kProcess, ctx_).size(), 1u);
  EXPECT_EQ(Rows(seg_, TableId::kProcess, ctx_).size(), 0u);  // same process, next segment
  auto mem = Rows(seg_, TableId::kMemory, ctx_);
  ASSERT_EQ(mem.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(mem[0][9]));
  EXPECT_EQ(std::get<int64_t>(mem[0][10]), int64_t{1} << 30);
  EXPECT_EQ(Rows(seg_, TableId::kVariables, ctx_).size(), 1u);
  EXPECT_EQ(Rows(seg_, TableId::kMetrics, ctx_).size(), 1u);
}

TEST(GpuAndAllocations, RoundTripIntoRows) {
  SegmentBuilder b(Stream::kMemory, 42);
  GpuEvent g;
  g.ts = testing::kBaseTs;
  g.gpu = 1;
  g.gpu_util = 87;
  g.memory_used = 3u << 30;
  g.memory_total = 80ull << 30;  // memory_util absent: NULL
  b.AddGpu(g);
  AllocationEvent a;
  a.ts = testing::kBaseTs + 1'000'000'000;
  a.func = b.InternString("Model.forward");
  a.file = b.InternString("train.py");
  a.line = 12;
  a.bytes = 4096;
  a.count = 3;
  b.AddAllocation(a);
  std::string bytes;
  ASSERT_TRUE(b.Seal(Codec::kLz4, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  ASSERT_EQ(seg->gpus.size(), 1u);
  EXPECT_EQ(seg->gpus[0], g);
  EXPECT_EQ(seg->skipped_records, 0u);
  RowContext ctx;
  auto gpu = Rows(*seg, TableId::kGpu, ctx);
  ASSERT_EQ(gpu.size(), 1u);
  EXPECT_EQ(std::get<int64_t>(gpu[0][1]), 1);
  EXPECT_EQ(std::get<int64_t>(gpu[0][2]), 87);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(gpu[0][3]));
  EXPECT_EQ(std::get<int64_t>(gpu[0][5]), int64_t{80} << 30);
  EXPECT_EQ(std::get<int64_t>(gpu[0][6]), 42);
  auto sites = Rows(*seg, TableId::kAllocations, ctx);
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(std::get<std::string_view>(sites[0][1]), "Model.forward");
  EXPECT_EQ(std::get<std::string_view>(sites[0][2]), "train.py");
  EXPECT_EQ(std::get<int64_t>(sites[0][3]), 12);
  EXPECT_EQ(std::get<int64_t>(sites[0][4]), 4096);
  EXPECT_EQ(std::get<int64_t>(sites[0][5]), 3);
  EXPECT_DOUBLE_EQ(std::get<double>(sites[0][0]), testing::kBaseTs / 1e9 + 1);
  EXPECT_EQ(TableStream(TableId::kGpu), Stream::kMemory);
  EXPECT_EQ(TableStream(TableId::kAllocations), Stream::kMemory);
}

TEST(TorchSteps, RoundTripIntoRows) {
  SegmentBuilder b(Stream::kTorch, 42);
  b.SetProcess(ProcessInfo::Of(42, 0, 3, "3.11", "python train.py", "node7"));
  TorchStepEvent traced;
  traced.ts_ns = testing::kBaseTs;
  traced.duration_ns = 250'000'000;
  traced.thread = b.InternThread(4242, b.InternString("MainThread"));
  traced.step = 7;
  traced.decision = kStepTraced;
  traced.cost_ns = 1'500'000;
  traced.budget_ppm = 10'000;  // 1%
  b.AddTorchStep(traced);
  TorchStepEvent skipped = traced;
  skipped.ts_ns = traced.ts_ns + traced.duration_ns;
  skipped.step = 8;
  skipped.decision = kStepOverBudget;
  skipped.cost_ns = 2'000;
  skipped.budget_ppm = 0;  // the budget off: NULL
  b.AddTorchStep(skipped);
  TorchStepEvent sampled = skipped;
  sampled.step = 9;
  sampled.decision = kStepSampledOut;
  b.AddTorchStep(sampled);
  std::string bytes;
  ASSERT_TRUE(b.Seal(Codec::kLz4, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  ASSERT_EQ(seg->torch_steps.size(), 3u);
  EXPECT_EQ(seg->torch_steps[0], traced);
  EXPECT_EQ(seg->torch_steps[1], skipped);
  EXPECT_EQ(seg->torch_steps[2], sampled);
  EXPECT_EQ(seg->skipped_records, 0u);
  EXPECT_EQ(seg->info.first_ts, traced.ts_ns);
  EXPECT_EQ(seg->info.last_ts, skipped.ts_ns);

  RowContext ctx;
  auto rows = Rows(*seg, TableId::kTorchSteps, ctx);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(std::get<int64_t>(rows[0][0]), 7);
  EXPECT_DOUBLE_EQ(std::get<double>(rows[0][1]), testing::kBaseTs / 1e9);
  EXPECT_DOUBLE_EQ(std::get<double>(rows[0][2]), 0.25);
  EXPECT_EQ(std::get<int64_t>(rows[0][3]), 1);
  EXPECT_EQ(std::get<std::string_view>(rows[0][4]), "traced");
  EXPECT_DOUBLE_EQ(std::get<double>(rows[0][5]), 0.0015);
  EXPECT_DOUBLE_EQ(std::get<double>(rows[0][6]), 0.01);
  EXPECT_EQ(std::get<int64_t>(rows[0][7]), 4242);
  EXPECT_EQ(std::get<int64_t>(rows[0][8]), 3);
  EXPECT_EQ(std::get<int64_t>(rows[0][9]), 42);
  EXPECT_EQ(std::get<int64_t>(rows[1][3]), 0);
  EXPECT_EQ(std::get<std::string_view>(rows[1][4]), "budget");
  EXPECT_TRUE(std::holds_alternative<std::monostate>(rows[1][6]));
  EXPECT_EQ(std::get<int64_t>(rows[2][3]), 0);
  EXPECT_EQ(std::get<std::string_view>(rows[2][4]), "sample_rate");
  EXPECT_EQ(TableStream(TableId::kTorchSteps), Stream::kTorch);
  // The other torch table reads none of them.
  EXPECT_TRUE(Rows(*seg, TableId::kTorchTrace, ctx).empty());
}

// docs/tables.md lists every table and column: this keeps the doc and the code in step.
TEST(TablesDoc, EveryColumnIsDocumented) {
  std::ifstream in(std::string(PROBING_SOURCE_DIR) + "/docs/tables.md");
  ASSERT_TRUE(in.good());
  std::string doc{std::istreambuf_iterator<char>(in), {}};
  for (const TableSchema& t : AllTables()) {
    std::string heading = "## `" + std::string(t.name) + "`";
    size_t at = doc.find(heading);
    ASSERT_NE(at, std::string::npos) << "docs/tables.md lacks " << heading;
    size_t end = doc.find("\n## ", at + 1);
    std::string section = doc.substr(at, end == std::string::npos ? std::string::npos : end - at);
    for (const Column& c : t.columns) {
      std::string row = "| `" + std::string(c.name) + "` | " + ColumnTypeName(c.type) + " |";
      EXPECT_NE(section.find(row), std::string::npos) << t.name << " lacks the row " << row;
    }
  }
}

}  // namespace
}  // namespace probing::format
