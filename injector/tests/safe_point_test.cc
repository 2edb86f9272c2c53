#include "safe_point.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tracee.h"

namespace probing::injector {
namespace {

TEST(SafePoint, LoaderAndLockingLibcFramesAreUnsafe) {
  EXPECT_TRUE(FrameHoldsLock("ld-linux-x86-64.so.2", "_dl_map_object"));
  EXPECT_TRUE(FrameHoldsLock("ld-linux-x86-64.so.2", ""));  // unnamed loader code too
  EXPECT_TRUE(FrameHoldsLock("libc.so.6", "malloc"));
  EXPECT_TRUE(FrameHoldsLock("libc.so.6", "__libc_malloc"));
  EXPECT_TRUE(FrameHoldsLock("libc.so.6", "free"));
  EXPECT_TRUE(FrameHoldsLock("libc.so.6", "realloc"));
  EXPECT_TRUE(FrameHoldsLock("libc.so.6", "dl_iterate_phdr"));
  EXPECT_TRUE(FrameHoldsLock("libc.so.6", "dlopen"));
  EXPECT_TRUE(FrameHoldsLock("libc.so.6", "_IO_fflush"));
  EXPECT_TRUE(FrameHoldsLock("libc.so.6", "fork"));
  EXPECT_TRUE(FrameHoldsLock("libc.so.6", "pthread_create"));
  EXPECT_TRUE(FrameHoldsLock("libc-2.31.so", "malloc"));
}

TEST(SafePoint, BlockingCallsAndOtherLibrariesAreSafe) {
  EXPECT_FALSE(FrameHoldsLock("libc.so.6", "clock_nanosleep"));
  EXPECT_FALSE(FrameHoldsLock("libc.so.6", "read"));
  EXPECT_FALSE(FrameHoldsLock("libc.so.6", "epoll_wait"));
  EXPECT_FALSE(FrameHoldsLock("libc.so.6", "pthread_cond_wait"));
  EXPECT_FALSE(FrameHoldsLock("libc.so.6", ""));  // static helpers, e.g. a futex wait
  EXPECT_FALSE(FrameHoldsLock("python3.11", "_PyEval_EvalFrameDefault"));
  EXPECT_FALSE(FrameHoldsLock("libtorch_cpu.so", "free_stuff"));  // only libc's names count
}

// A real stopped process: a child blocked in pause() is at a safe point, its frames unwound.
TEST(SafePoint, AChildBlockedInPauseIsSafe) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (;;) pause();
  }
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &chld, &old);
  usleep(50000);
  {
    auto t = Tracee::Seize(child, child);
    ASSERT_TRUE(t.ok()) << t.status().message();
    ASSERT_TRUE((*t)->Stop(MonotonicNs() + 5'000'000'000).ok());
    auto image = ProcessImage::Read(child);
    ASSERT_TRUE(image.ok());
    SafePoint sp = CheckSafePoint(child, *image);
    EXPECT_TRUE(sp.safe) << sp.why;
    EXPECT_GE(sp.frames, 2);
  }  // detached
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace
}  // namespace probing::injector
