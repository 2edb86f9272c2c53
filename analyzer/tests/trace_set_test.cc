#include "probing/analyzer/trace_set.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "../../format/tests/test_events.h"
#include "probing/format/ptrace.h"
#include "probing/format/ring.h"
#include "../../format/tests/temp_dir.h"

namespace probing::analyzer {
namespace {

namespace fs = std::filesystem;
using namespace probing::format;

std::string Fixture() {
  return std::string(PROBING_SOURCE_DIR) + "/tests/fixtures/format_v1.ptrace";
}

fs::path TempDir() { return probing::format::testing::TestTempDir(); }

TEST(LoadTraces, FixtureSummary) {
  auto set = LoadTraces({Fixture()});
  ASSERT_TRUE(set.ok()) << set.status().message();
  ASSERT_EQ(set->sources.size(), 1u);
  EXPECT_EQ(set->sources[0].segments_ok, 3u);
  EXPECT_TRUE(set->sources[0].used_index);
  Summary s = Summarize(*set);
  EXPECT_EQ(s.segments, 3u);
  EXPECT_EQ(s.events["stack samples"], 9u);
  EXPECT_EQ(s.events["torch calls"], 6u);
  EXPECT_EQ(s.steps, 1u);
  ASSERT_EQ(s.processes.size(), 1u);
  EXPECT_EQ(s.processes[0],
            "pid 4242: python train.py --lr 0.1 (Python 3.11.2, host node7, rank 3)");
  EXPECT_EQ(s.threads, (std::vector<std::string>{"4242 MainThread", "4250 loader-0"}));
  ASSERT_FALSE(s.top_functions.empty());
  EXPECT_EQ(s.top_functions[0].name, "forward (model.py)");
  EXPECT_EQ(s.top_functions[0].count, 6u);
  ASSERT_EQ(s.top_modules.size(), 2u);
  EXPECT_EQ(s.last_ts - s.first_ts, 50'000'000);
}

TEST(LoadTraces, RingDirectoryOfADeadProcess) {
  fs::path dir = TempDir() / "4242";
  fs::create_directories(dir);
  {
    auto w =
        RingWriter::Create((dir / "stacks.ring").string(), {Stream::kStacks, 64 << 10, 2, 4242});
    ASSERT_TRUE(w.ok());
    for (uint64_t i = 0; i < 3; ++i)
      ASSERT_TRUE(w->Append(testing::SealAllKinds(Codec::kLz4, i)).ok());
  }  // the writer is gone, as after a crash
  auto set = LoadTraces({dir.string()});
  ASSERT_TRUE(set.ok()) << set.status().message();
  ASSERT_EQ(set->sources.size(), 1u);
  EXPECT_EQ(set->sources[0].kind, "ring");
  EXPECT_EQ(set->sources[0].segments_ok, 2u);  // two slots: the oldest was overwritten
  EXPECT_EQ(set->sources[0].segments_lost, 0u);
}

TEST(LoadTraces, CorruptSegmentsAreCountedAndTheRestLoads) {
  std::ifstream in(Fixture(), std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), {}};
  auto clean = PtraceReader::Open(Fixture());
  ASSERT_TRUE(clean.ok());
  bytes[clean->segments()[1].offset + 100] ^= 0x40;  // payload bit flip in segment 1
  fs::path p = TempDir() / "corrupt.ptrace";
  std::ofstream(p, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  auto set = LoadTraces({p.string()});
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->sources[0].segments_ok, 2u);
  EXPECT_EQ(set->sources[0].segments_corrupt, 1u);
  EXPECT_NE(set->sources[0].first_error.find("checksum"), std::string::npos);
}

TEST(LoadTraces, ClearErrorsForWhatIsNotATrace) {
  auto missing = LoadTraces({"/nonexistent/run.ptrace"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "/nonexistent/run.ptrace: no such file or directory");
  fs::path p = TempDir() / "notes.txt";
  std::ofstream(p) << "this is not a trace, it is a text file of some length.\n";
  auto text = LoadTraces({p.string()});
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("not a .ptrace file"), std::string::npos);
  fs::path empty_dir = TempDir() / "empty";
  fs::create_directories(empty_dir);
  EXPECT_FALSE(LoadTraces({empty_dir.string()}).ok());
}

}  // namespace
}  // namespace probing::analyzer
