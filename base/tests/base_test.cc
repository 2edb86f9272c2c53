#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>

#include "probing/base/clock.h"
#include "probing/base/status.h"
#include "probing/base/unique_fd.h"

namespace probing {
namespace {

Result<int> Half(int v) {
  if (v % 2 != 0) return InvalidArgument(std::to_string(v) + " is odd");
  return v / 2;
}

Result<int> Quarter(int v) {
  PROBING_ASSIGN_OR_RETURN(int h, Half(v));
  return Half(h);
}

TEST(Status, CarriesCodeMessageAndContext) {
  EXPECT_TRUE(Status::Ok().ok());
  Status st = NotFound("no table x").WithContext("query");
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "query: no table x");
  EXPECT_EQ(ErrnoStatus("open /x", ENOENT).message(), "open /x: No such file or directory");
}

TEST(Result, AssignOrReturnPropagatesTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "3 is odd");
}

TEST(UniqueFd, ClosesOnceAndMoves) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    UniqueFd a(raw);
    UniqueFd b(std::move(a));
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), raw);
    EXPECT_EQ(fcntl(raw, F_GETFD), FD_CLOEXEC);
  }
  EXPECT_EQ(fcntl(raw, F_GETFD), -1);  // closed by b
  UniqueFd c(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int released = c.Release();
  EXPECT_FALSE(c.valid());
  EXPECT_EQ(::close(released), 0);
}

TEST(Clock, MonotonicNeverGoesBackAndRealtimeIsUnixTime) {
  int64_t a = MonotonicNs();
  int64_t b = MonotonicNs();
  EXPECT_LE(a, b);
  EXPECT_GT(RealtimeSeconds(), 1.6e9);  // after 2020
}

}  // namespace
}  // namespace probing
