// Every build reads the fixture written by the first build of format v1.
// To write it anew (only when the major version changes, into a new file name):
//   PROBING_WRITE_FIXTURE=tests/fixtures/format_vN.ptrace build/tests/format_compat_test
#include <gtest/gtest.h>

#include <cstdlib>

#include "probing/format/ptrace.h"
#include "probing/format/segment.h"
#include "test_events.h"

namespace probing::format {
namespace {

TEST(Compat, ReadsTheV1Fixture) {
  if (const char* out = std::getenv("PROBING_WRITE_FIXTURE")) {
    auto w = PtraceWriter::Create(out, 4242);
    ASSERT_TRUE(w.ok());
    for (Codec c : {Codec::kNone, Codec::kLz4, Codec::kZstd})
      ASSERT_TRUE(w->Append(testing::SealAllKinds(c, static_cast<uint64_t>(c))).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  auto r = PtraceReader::Open(std::string(PROBING_SOURCE_DIR) + "/tests/fixtures/format_v1.ptrace");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->stats().used_index);
  EXPECT_EQ(r->info().version_major, 1);
  ASSERT_EQ(r->segments().size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    auto seg = r->ReadSegment(i);
    ASSERT_TRUE(seg.ok()) << seg.status().message();
    EXPECT_EQ(seg->info.codec, i);  // none, lz4, zstd: every codec v1 knows
    testing::CheckAllKinds(*seg);
  }
}

}  // namespace
}  // namespace probing::format
