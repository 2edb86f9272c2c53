#include "probing/analyzer/summary.h"

#include <gtest/gtest.h>

#include "../../format/tests/test_events.h"

namespace probing::analyzer {
namespace {

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
  ASSERT_FALSE(s.top_functions.empty());
  EXPECT_EQ(s.top_functions[0].name, "forward (model.py)");
  EXPECT_EQ(s.top_functions[0].count, 6u);
  ASSERT_EQ(s.top_modules.size(), 2u);
  EXPECT_EQ(s.last_ts - s.first_ts, 50'000'000);
}

}  // namespace
}  // namespace probing::analyzer
