// The GPU reader where there is no NVML (every machine the tests run on so far): it says why,
// once, and reads nothing. Reading a real GPU is untested here (docs/torch.md).
#include "gpu_sampler.h"

#include <gtest/gtest.h>

namespace probing::recorder {
namespace {

TEST(GpuSampler, MissingLibraryIsANoteNotAnError) {
  GpuSampler gpus("libprobing-no-such-nvml.so.1");
  EXPECT_EQ(gpus.note(), "");  // not tried yet
  gpus.Start();
  ASSERT_TRUE(gpus.WaitTried(10000));
  EXPECT_EQ(gpus.note(), "no NVML (libprobing-no-such-nvml.so.1 not found)");
  EXPECT_TRUE(gpus.Take().empty());
}

TEST(GpuSampler, LibraryWithoutNvmlIsRefused) {
  GpuSampler gpus("libm.so.6");  // loads, but has none of NVML's functions
  gpus.Start();
  ASSERT_TRUE(gpus.WaitTried(10000));
  EXPECT_EQ(gpus.note(), "no NVML (libm.so.6 lacks the functions it needs)");
  EXPECT_TRUE(gpus.Take().empty());
}

TEST(GpuSampler, StopBeforeStartAndTwice) {
  GpuSampler gpus;
  gpus.Stop();
  gpus.Stop();
  EXPECT_TRUE(gpus.Take().empty());
}

}  // namespace
}  // namespace probing::recorder
