#include "probing/sql/sql.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include <filesystem>

#include <filesystem>

#include "../../format/tests/test_events.h"
#include "probing/base/clock.h"

namespace probing::sql {
namespace {

// The checked-in recording, and a segment of collectives (the recording predates them): one
// timed all_reduce and one counted call.
std::vector<format::Segment> Fixture() {
  auto out = format::testing::FixtureSegments();
  const format::Segment& first = out.front();  // the same process
  const format::ProcessEvent& p = first.processes.front();
  const auto process = format::ProcessInfo::Of(p.pid, p.start_ts, p.rank,
                                               std::string(first.String(p.python_version)),
                                               std::string(first.String(p.cmdline)),
                                               std::string(first.String(p.host)));
  format::SegmentBuilder b(format::Stream::kCollectives, 4242);
  b.SetProcess(process);
  format::CollectiveEvent e;
  e.ts = 1'700'000'001'000'000'000;
  e.end_ts = e.ts + 2'000'000;
  e.thread = b.InternThread(4242, b.InternString("MainThread"));
  e.group = b.InternString("default");
  e.seq = 11;
  e.op = b.InternString("all_reduce");
  e.bytes = 4;
  e.numel = 1;
  e.dtype = b.InternString("torch.float32");
  e.step = 7;
  b.AddCollective(e);
  format::CollectiveEvent counted;
  counted.ts = e.ts + 5'000'000;
  counted.group = e.group;
  counted.seq = 12;
  counted.step = 7;
  counted.counted = true;
  b.AddCollective(counted);
  std::string bytes;
  EXPECT_TRUE(b.Seal(format::Codec::kLz4, 0, &bytes).ok());
  auto seg = format::DecodeSegment(bytes);
  EXPECT_TRUE(seg.ok());
  if (seg.ok()) out.push_back(std::move(seg).value());
  // A GPU reading and a tracemalloc site, as the memory ring carries them.
  format::SegmentBuilder m(format::Stream::kMemory, 4242);
  m.SetProcess(process);
  format::GpuEvent g;
  g.ts = 1'700'000'002'000'000'000;
  g.gpu_util = 87;
  g.memory_used = 1 << 30;
  m.AddGpu(g);
  format::AllocationEvent a;
  a.ts = g.ts;
  a.func = m.InternString("prepare_batch");
  a.file = m.InternString("train.py");
  a.line = 42;
  a.bytes = 4096;
  a.count = 3;
  m.AddAllocation(a);
  bytes.clear();
  EXPECT_TRUE(m.Seal(format::Codec::kLz4, 0, &bytes).ok());
  auto mem = format::DecodeSegment(bytes);
  EXPECT_TRUE(mem.ok());
  if (mem.ok()) out.push_back(std::move(mem).value());
  // A traced step and one the sampling left out, as the torch ring carries them.
  format::SegmentBuilder t(format::Stream::kTorch, 4242);
  t.SetProcess(process);
  format::TorchStepEvent step;
  step.ts_ns = 1'700'000'003'000'000'000;
  step.duration_ns = 100'000'000;
  step.thread = t.InternThread(4242, t.InternString("MainThread"));
  step.step = 7;
  step.cost_ns = 1'000'000;
  t.AddTorchStep(step);
  step.ts_ns += step.duration_ns;
  step.step = 8;
  step.decision = format::kStepSampledOut;
  step.cost_ns = 1'000;
  t.AddTorchStep(step);
  bytes.clear();
  EXPECT_TRUE(t.Seal(format::Codec::kLz4, 0, &bytes).ok());
  auto steps = format::DecodeSegment(bytes);
  EXPECT_TRUE(steps.ok());
  if (steps.ok()) out.push_back(std::move(steps).value());
  return out;
}

std::unique_ptr<Database> Loaded() {
  auto segments = Fixture();
  auto db = Database::Create();
  EXPECT_TRUE(db.ok());
  EXPECT_TRUE((*db)->LoadSegments(segments).ok());
  return std::move(db).value();
}

TEST(Sql, RingTablesAnswerAsWritten) {
  auto db = Loaded();
  auto r = db->Query("SELECT count(*), count(DISTINCT sample_id) FROM python.stacks");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 18);  // 3 segments x two 3-frame samples
  EXPECT_EQ(std::get<int64_t>(r->rows[0][1]), 6);   // the third sample of each has no frames
  r = db->Query("SELECT func, lineno FROM python.stacks WHERE depth = 0 GROUP BY 1, 2 ORDER BY 2");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->rows.size(), 2u);
  EXPECT_EQ(std::get<std::string>(r->rows[0][0]), "forward");
  // The seeds' torch_trace query, unchanged.
  r = db->Query("SELECT module, AVG(duration) FROM python.torch_trace GROUP BY module");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->columns, (std::vector<std::string>{"module", "AVG(duration)"}));
  EXPECT_DOUBLE_EQ(std::get<double>(r->rows[0][1]), 0.0015);
  r = db->Query("SELECT allocated FROM python.torch_trace WHERE stage = 'forward' LIMIT 1");
  EXPECT_TRUE(std::holds_alternative<std::monostate>(r->rows[0][0]));  // NULL on CPU, not 0
  // Every step, traced or not, and what tracing cost against the time it took.
  r = db->Query("SELECT step, traced, decision, rank FROM python.torch_steps ORDER BY step");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->rows.size(), 2u);
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 7);
  EXPECT_EQ(std::get<int64_t>(r->rows[0][1]), 1);
  EXPECT_EQ(std::get<std::string>(r->rows[1][2]), "sample_rate");
  EXPECT_EQ(std::get<int64_t>(r->rows[1][3]), 3);
  r = db->Query("SELECT sum(cost) / sum(duration), count(budget) FROM python.torch_steps");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_DOUBLE_EQ(std::get<double>(r->rows[0][0]), 0.001001 / 0.2);
  EXPECT_EQ(std::get<int64_t>(r->rows[0][1]), 0);  // no budget: NULL
  r = db->Query("SELECT pid, rank FROM system.process");
  ASSERT_EQ(r->rows.size(), 1u);  // one row per process, however many segments
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 4242);
}

TEST(Sql, TimeArithmeticOfTheSeeds) {
  EXPECT_EQ(RewriteIntervals("ts > now() - interval '5 minutes'"), "ts > now() - 300");
  EXPECT_EQ(RewriteIntervals("x - INTERVAL '2 hours' + interval '1.5 sec'"), "x - 7200 + 1.5");
  EXPECT_EQ(RewriteIntervals("no intervals 'here'"), "no intervals 'here'");
  auto db = Loaded();
  // The fixture is from 2023: nothing in the last 5 minutes, everything before now.
  auto r = db->Query("SELECT count(*) FROM python.memory WHERE ts > now() - interval '5 minutes'");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 0);
  r = db->Query("SELECT count(*) FROM python.memory WHERE ts < now() - 60");
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 3);
}

TEST(Sql, ErrorsAreSqlitesOwnAndNameTheKnownTables) {
  auto db = Loaded();
  auto r = db->Query("SELEC 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "SQL: near \"SELEC\": syntax error");
  r = db->Query("SELECT * FROM python.nope");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(
                "no such table: python.nope; known tables: python.allocations, python.backtrace"),
            std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("system.process"), std::string::npos);
}

TEST(Sql, LiveAndCustomTablesLoadFromRows) {
  auto db = Database::Create();
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)
                  ->LoadRows("information_schema.df_settings", {"name", "value"}, {},
                             {{std::string("probing.sampler.hz"), std::string("100")}})
                  .ok());
  ASSERT_TRUE((*db)
                  ->LoadRows("python.inventory", {"item", "count"}, {"TEXT", "INTEGER"},
                             {{std::string("apple"), int64_t{3}}, {std::monostate{}, int64_t{1}}})
                  .ok());
  auto r = (*db)->Query("SELECT name, value FROM information_schema.df_settings");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<std::string>(r->rows[0][1]), "100");
  r = (*db)->Query("SELECT sum(count), count(item) FROM python.inventory");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 4);
  EXPECT_EQ(std::get<int64_t>(r->rows[0][1]), 1);
}

// A ring table read through the virtual table (AttachSegments, AttachLoader) holds exactly the
// rows LoadSegments copies in, in the same order, for every ring table.
TEST(Sql, VirtualTablesMatchLoadedOnes) {
  const auto segments = Fixture();
  auto loaded = Loaded();
  auto attached = Database::Create();
  ASSERT_TRUE(attached.ok());
  auto lazy = Database::Create();
  ASSERT_TRUE(lazy.ok());
  int loads = 0;
  int ring_tables = 0;
  for (const auto& t : format::AllTables()) {
    if (t.source != format::TableSource::kRing) continue;
    ++ring_tables;
    ASSERT_TRUE((*attached)->AttachSegments(segments, t.id).ok());
    ASSERT_TRUE((*lazy)
                    ->AttachLoader(t.id,
                                   [&]() -> Result<std::vector<format::Segment>> {
                                     ++loads;
                                     return segments;
                                   })
                    .ok());
  }
  EXPECT_EQ(loads, 0);  // nothing is read before a query scans it
  for (const auto& t : format::AllTables()) {
    if (t.source != format::TableSource::kRing) continue;
    const std::string sql = "SELECT * FROM " + std::string(t.name);
    auto want = loaded->Query(sql);
    ASSERT_TRUE(want.ok()) << want.status().message();
    for (Database* db : {attached->get(), lazy->get()}) {
      auto got = db->Query(sql);
      ASSERT_TRUE(got.ok()) << got.status().message();
      EXPECT_EQ(got->columns, want->columns);
      EXPECT_EQ(got->rows, want->rows) << t.name;
      EXPECT_FALSE(want->rows.empty()) << t.name;
    }
  }
  auto twice =
      (*lazy)->Query("SELECT count(*) FROM python.stacks a JOIN python.stacks b USING (sample_id)");
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(std::get<int64_t>(twice->rows[0][0]), 6 * 9);  // 6 samples of 3 frames, squared each
  EXPECT_EQ(loads, ring_tables);  // one load per ring table, kept across scans
}

TEST(Sql, AFailedLoadFailsTheQueryWithItsMessage) {
  auto db = Database::Create();
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)
                  ->AttachLoader(format::TableId::kMemory,
                                 []() -> Result<std::vector<format::Segment>> {
                                   return DataLoss("memory.ring: bad magic");
                                 })
                  .ok());
  auto r = (*db)->Query("SELECT count(*) FROM python.memory");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("memory.ring: bad magic"), std::string::npos);
}

TEST(Sql, ReadOnlyLimitsRefuseWhatWritesAndStopWhatRunsOn) {
  auto db = Loaded();
  QueryLimits ro;
  ro.read_only = true;
  // Reads, as before: plain, with a CTE, a virtual-table-free self-join, a describing PRAGMA.
  auto r = db->Query("SELECT count(*) FROM python.stacks", ro);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 18);
  r = db->Query(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) "
      "SELECT sum(x) FROM c",
      ro);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 15);
  r = db->Query("PRAGMA python.table_info(stacks)", ro);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_FALSE(r->rows.empty());
  // Everything that writes, or reaches a file, is refused before it runs.
  const std::string dir = ::testing::TempDir();
  for (const std::string& sql :
       {std::string("DELETE FROM python.stacks"), std::string("CREATE TABLE t(x)"),
        std::string("INSERT INTO python.memory(ts) VALUES (1)"),
        "ATTACH DATABASE '" + dir + "/web_attached.db' AS x",
        "VACUUM INTO '" + dir + "/web_vacuumed.db'", std::string("PRAGMA journal_mode=WAL"),
        std::string("SELECT fts3_tokenizer('simple')"), std::string("BEGIN"),
        std::string("DETACH DATABASE python")}) {
    r = db->Query(sql, ro);
    ASSERT_FALSE(r.ok()) << sql;
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied)
        << sql << ": " << r.status().message();
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/web_attached.db"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/web_vacuumed.db"));
  // The tables are as they were, and the limits are gone for the next caller.
  r = db->Query("SELECT count(*) FROM python.stacks");
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 18);
  EXPECT_TRUE(db->Query("CREATE TEMP TABLE scratch(x)").ok());
  // One statement at a time; a trailing semicolon or comment is no second one.
  r = db->Query("SELECT 1; SELECT 2", ro);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "SQL: one statement at a time");
  EXPECT_TRUE(db->Query("SELECT 1; -- done\n", ro).ok());
  // A runaway query is stopped at its deadline.
  QueryLimits quick = ro;
  quick.timeout_s = 0.2;
  const int64_t began = MonotonicNs();
  r = db->Query(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
      "SELECT count(*) FROM c",
      quick);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(r.status().message(), "SQL: the query ran longer than 0.2 s and was stopped");
  EXPECT_LT(MonotonicNs() - began, 2'000'000'000);
  // Rows beyond max_rows are not read, and the result says so.
  QueryLimits few = ro;
  few.max_rows = 4;
  r = db->Query("SELECT * FROM python.stacks", few);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rows.size(), 4u);
  EXPECT_TRUE(r->truncated);
  r = db->Query("SELECT * FROM python.stacks LIMIT 4", few);
  EXPECT_EQ(r->rows.size(), 4u);
  EXPECT_FALSE(r->truncated);
}

}  // namespace
}  // namespace probing::sql

namespace probing::sql {
namespace {

// cluster.<table>: one table over several members' segments, each row with its member's
// values in the extra columns; the same rows as the members' own tables, in member order.
TEST(Sql, PartsReadAsOneTableWithTheirOwnExtraColumns) {
  const auto segments = format::testing::FixtureSegments();
  auto db = Database::Create();
  ASSERT_TRUE(db.ok());
  std::vector<Database::Part> parts = {{&segments, {int64_t{0}, std::string("node-a")}},
                                       {&segments, {int64_t{1}, std::string("node-b")}}};
  ASSERT_TRUE((*db)
                  ->AttachParts("cluster.stacks", format::TableId::kStacks,
                                {{"member", "INTEGER"}, {"host", "TEXT"}}, parts)
                  .ok());
  std::vector<Database::Part> process_parts = {{&segments, {int64_t{0}}},
                                               {&segments, {int64_t{1}}}};
  ASSERT_TRUE((*db)
                  ->AttachParts("cluster.process", format::TableId::kProcess,
                                {{"member", "INTEGER"}}, process_parts)
                  .ok());
  auto clash = (*db)->AttachParts("cluster.p2", format::TableId::kProcess, {{"host", "TEXT"}},
                                  {{&segments, {std::string("x")}}});
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.message(), "cluster.p2 already has a column host (from system.process)");
  auto r = (*db)->Query(
      "SELECT member, host, count(*) AS n FROM cluster.stacks GROUP BY 1, 2 ORDER BY 1");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->rows.size(), 2u);
  EXPECT_EQ(std::get<std::string>(r->rows[1][1]), "node-b");
  EXPECT_EQ(std::get<int64_t>(r->rows[0][2]), 18);
  EXPECT_EQ(std::get<int64_t>(r->rows[1][2]), 18);
  // Each member's processes are its own: one process row each, not one for both.
  r = (*db)->Query("SELECT member, pid FROM cluster.process ORDER BY member");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->rows.size(), 2u);
  // Joins across members, as any SQL.
  r = (*db)->Query(
      "SELECT count(*) FROM cluster.stacks a JOIN cluster.stacks b "
      "ON a.sample_id = b.sample_id AND a.depth = b.depth AND a.member < b.member");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 18);
  EXPECT_FALSE((*db)->AttachParts("nodot", format::TableId::kStacks, {}, {{&segments, {}}}).ok());
  EXPECT_FALSE(
      (*db)
          ->AttachParts("cluster.bad", format::TableId::kStacks, {{"x", "TEXT"}}, {{&segments, {}}})
          .ok());  // a value for every extra column
}

}  // namespace
}  // namespace probing::sql

namespace probing::sql {
namespace {

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "probing_sql_test_" + std::to_string(getpid()) + "_" + name;
}

// Whoever typed it, no statement loads code or hands out memory (SQLite's defensive mode);
// read-only ones also keep a ';' inside a string or a comment for what it is.
TEST(SqlDefence, NoExtensionsAndNoTokenizerPointersEvenWithoutLimits) {
  auto db = Loaded();
  EXPECT_FALSE(db->Query("SELECT load_extension('/tmp/x.so')").ok());
  EXPECT_FALSE(db->Query("SELECT fts3_tokenizer('simple', x'0000000000000000')").ok());
  QueryLimits ro;
  ro.read_only = true;
  for (const char* fine : {"SELECT 1;", "SELECT 1 ; -- a comment", "SELECT 1 /* c */ ;\n  ",
                           "SELECT ';' || '--'"})
    EXPECT_TRUE(db->Query(fine, ro).ok()) << fine;
  const std::string file = TempPath("second.db");
  std::remove(file.c_str());
  EXPECT_FALSE(db->Query("SELECT 1; ATTACH DATABASE '" + file + "' AS y", ro).ok());
  EXPECT_FALSE(Exists(file));
}

// A custom table's names and types come from the target: nothing in them runs as SQL.
TEST(SqlDefence, CustomTableNamesAreNeverSql) {
  auto db = Database::Create();
  ASSERT_TRUE(db.ok());
  const std::string file = TempPath("injected.db");
  const std::string evil = "a\" TEXT); ATTACH DATABASE '" + file + "' AS z; --";
  ASSERT_TRUE((*db)->LoadRows("python.odd", {evil, "b"}, {"TEXT", "INTEGER"},
                              {{std::string("v"), int64_t{2}}})
                  .ok());
  EXPECT_FALSE(Exists(file));
  auto r = (*db)->Query("SELECT b FROM python.odd");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(std::get<int64_t>(r->rows[0][0]), 2);
  auto bad = (*db)->LoadRows("python.odd2", {"a"}, {"TEXT); ATTACH DATABASE 'x' AS q; --"},
                             {{std::string("v")}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("a column is TEXT, INTEGER"), std::string::npos);
  const std::string saved = TempPath("odd.db");
  ASSERT_TRUE((*db)->SaveTo(saved).ok());
  EXPECT_FALSE(Exists(file));
  std::remove(saved.c_str());
}

// A save that fails leaves nothing behind: no half file, no journal, the old file untouched.
TEST(SqlDefence, AFailedSaveLeavesNothing) {
  auto db = Loaded();
  EXPECT_FALSE(db->SaveTo(TempPath("no/such/dir/out.db")).ok());
  // The last step fails (the destination is a directory that holds something): the temporary
  // file written beside it is gone again.
  namespace fs = std::filesystem;
  const fs::path dir = TempPath("savedir");
  fs::remove_all(dir);
  fs::create_directories(dir / "out.db" / "inside");
  auto st = db->SaveTo((dir / "out.db").string());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("cannot write"), std::string::npos) << st.message();
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"out.db"});
  fs::remove_all(dir);
}

}  // namespace
}  // namespace probing::sql
