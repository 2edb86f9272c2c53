#include "config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "safe_read.h"

namespace probing::recorder {
namespace {

TEST(Config, DefaultsFollowTheSeeds) {
  Config& c = Config::Get();
  std::string v;
  ASSERT_TRUE(c.Lookup("probing.sample_rate", &v));
  EXPECT_EQ(v, "1");
  ASSERT_TRUE(c.Lookup("probing.buffer_size", &v));
  EXPECT_EQ(v, "10000");
  ASSERT_TRUE(c.Lookup("probing.server.port", &v));
  EXPECT_EQ(v, "0");
  ASSERT_TRUE(c.Lookup("probing.torch.enabled", &v));
  EXPECT_EQ(v, "true");
  EXPECT_EQ(c.sampler_hz(), 100);
  EXPECT_FALSE(c.Lookup("probing.nope", &v));
}

TEST(Config, BadValuesNameTheKeyAndRangeAndKeepTheOldValue) {
  Config& c = Config::Get();
  EXPECT_EQ(c.Set("probing.sample_rate", "0.25"), "");
  EXPECT_DOUBLE_EQ(c.sample_rate(), 0.25);
  std::string err = c.Set("probing.sample_rate", "1.5");
  EXPECT_EQ(err, "probing.sample_rate must be a number from 0.0 to 1.0, not '1.5'");
  EXPECT_DOUBLE_EQ(c.sample_rate(), 0.25);
  EXPECT_NE(c.Set("probing.sample_rate", "abc"), "");
  EXPECT_NE(c.Set("probing.sampler.hz", "0"), "");
  EXPECT_NE(c.Set("probing.sampler.hz", "100000"), "");
  EXPECT_EQ(c.Set("probing.sampler.hz", "250"), "");
  EXPECT_EQ(c.sampler_hz(), 250);
  // Fixed at start: refused at run time, and said so (a port nothing listens on would lie).
  EXPECT_EQ(c.Set("probing.server.port", "9922"),
            "probing.server.port is read-only at run time: it was fixed when the recorder "
            "started (set PROBING_PORT in the target's environment)");
  EXPECT_EQ(c.server_port(), 0);
  EXPECT_NE(c.Set("probing.buffer_size", "20000"), "");
  EXPECT_EQ(c.buffer_kib(), 10000);
  EXPECT_NE(c.Set("probing.server.gil_share", "0"), "");
  EXPECT_EQ(c.Set("probing.server.gil_share", "0.5"), "");
  EXPECT_DOUBLE_EQ(c.gil_share(), 0.5);
  EXPECT_EQ(c.Set("probing.server.gil_share", "0.05"), "");
  EXPECT_EQ(c.Set("probing.torch.enabled", "off"), "");
  EXPECT_FALSE(c.torch_enabled());
  EXPECT_EQ(c.Set("probing.nope", "1"), "unknown key probing.nope");
  EXPECT_EQ(c.Set("probing.data_dir", "/tmp").rfind("probing.data_dir is read-only at run time", 0),
            0u);
  EXPECT_EQ(c.Set("probing.sample_rate", "1"), "");
  EXPECT_EQ(c.Set("probing.sampler.hz", "100"), "");
  EXPECT_EQ(c.Set("probing.torch.enabled", "true"), "");
}

TEST(Config, LocalsLimitsAreBoundedWholeNumbers) {
  Config& c = Config::Get();
  EXPECT_EQ(c.locals_value_size(), 200);
  EXPECT_EQ(c.locals_frame_size(), 4000);
  EXPECT_EQ(c.Set("probing.locals.value_size", "10"),
            "probing.locals.value_size must be a whole number of characters from 16 to 1000000, "
            "not '10'");
  EXPECT_NE(c.Set("probing.locals.frame_size", "lots"), "");
  EXPECT_EQ(c.locals_value_size(), 200);
  EXPECT_EQ(c.Set("probing.locals.value_size", "50"), "");
  EXPECT_EQ(c.Set("probing.locals.frame_size", "100000"), "");
  EXPECT_EQ(c.locals_value_size(), 50);
  EXPECT_EQ(c.locals_frame_size(), 100000);
  EXPECT_EQ(c.Set("probing.locals.value_size", "200"), "");
  EXPECT_EQ(c.Set("probing.locals.frame_size", "4000"), "");
  EXPECT_TRUE(c.fault_guard());
  EXPECT_EQ(c.Set("probing.sampler.fault_guard", "off"), "");
  EXPECT_FALSE(c.fault_guard());
  EXPECT_EQ(c.Set("probing.sampler.fault_guard", "on"), "");
}

TEST(Config, EnvironmentSetsKeysAndRejectsBadValues) {
  setenv("PROBING_SAMPLE_RATE", "0.5", 1);
  setenv("PROBING_PORT", "not-a-port", 1);
  setenv("PROBING_TORCH_PROFILING", "off", 1);
  setenv("PROBING_DATA_DIR", "/tmp/probing-config-test", 1);
  setenv("PROBING_BUFFER_SIZE", "2048", 1);
  auto errors = Config::Get().LoadEnvironment();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "PROBING_PORT=not-a-port ignored: probing.server.port must be a port from 0 to "
            "65535, not 'not-a-port'");
  EXPECT_EQ(Config::Get().buffer_kib(), 2048);  // read-only at run time, set at start
  setenv("PROBING_PORT", "9922", 1);
  EXPECT_TRUE(Config::Get().LoadEnvironment().empty());
  EXPECT_EQ(Config::Get().server_port(), 9922);
  setenv("PROBING_PORT", "0", 1);
  Config::Get().LoadEnvironment();
  EXPECT_DOUBLE_EQ(Config::Get().sample_rate(), 0.5);
  EXPECT_FALSE(Config::Get().torch_enabled());
  EXPECT_EQ(Config::Get().data_dir(), "/tmp/probing-config-test");
  EXPECT_EQ(Config::Get().server_port(), 0);
}

TEST(Config, MaxMemoryTakesUnitsIsReadOnlyAtRunTimeAndCapsTheRings) {
  Config& c = Config::Get();
  std::string v;
  ASSERT_TRUE(c.Lookup("probing.max_memory", &v));
  EXPECT_EQ(v, "0");
  EXPECT_EQ(c.max_memory(), 0u);
  EXPECT_EQ(c.Set("probing.max_memory", "1GB"),
            "probing.max_memory is read-only at run time: it was fixed when the recorder started "
            "(set PROBING_MAX_MEMORY in the target's environment)");
  struct Case {
    const char* text;
    uint64_t bytes;  // 0: refused
  } cases[] = {{"512MB", 512000000},   {"1GB", 1000000000},  {"1.5GiB", 1610612736},
               {"2 MiB", 2097152},     {"4mb", 4000000},     {"1048576", 1048576},
               {"3000KB", 3000000},    {"1TiB", uint64_t{1} << 40},
               {"1MB", 0},             {"12", 0},            {"1GBs", 0},
               {"GB", 0},              {"-1GB", 0},          {"1e9", 0},
               {"2PB", 0},             {"", 0},              {"1.2.3MB", 0}};
  for (const Case& k : cases) {
    setenv("PROBING_MAX_MEMORY", k.text, 1);
    auto errors = c.LoadEnvironment();
    if (k.bytes == 0) {
      if (*k.text == '\0') continue;  // unset: nothing to say
      ASSERT_EQ(errors.size(), 1u) << k.text;
      EXPECT_EQ(errors[0], std::string("PROBING_MAX_MEMORY=") + k.text +
                               " ignored: probing.max_memory must be 0 (no cap) or a size from "
                               "1MiB to 1PiB with a unit: KB, MB, GB, TB (1000-based) or KiB, "
                               "MiB, GiB, TiB (1024-based), e.g. 512MB or 1.5GiB, not '" +
                               k.text + "'");
    } else {
      EXPECT_TRUE(errors.empty()) << k.text << ": " << errors[0];
      EXPECT_EQ(c.max_memory(), k.bytes) << k.text;
      ASSERT_TRUE(c.Lookup("probing.max_memory", &v));
      EXPECT_EQ(v, k.text);
    }
  }
  // The rings take the smaller of the two.
  setenv("PROBING_MAX_MEMORY", "2MiB", 1);
  setenv("PROBING_BUFFER_SIZE", "10000", 1);
  EXPECT_TRUE(c.LoadEnvironment().empty());
  EXPECT_EQ(c.ring_bytes(), 2u << 20);
  setenv("PROBING_BUFFER_SIZE", "1024", 1);
  EXPECT_TRUE(c.LoadEnvironment().empty());
  EXPECT_EQ(c.ring_bytes(), 1u << 20);
  setenv("PROBING_MAX_MEMORY", "0", 1);
  EXPECT_TRUE(c.LoadEnvironment().empty());
  EXPECT_EQ(c.ring_bytes(), 1u << 20);
  unsetenv("PROBING_MAX_MEMORY");
  unsetenv("PROBING_BUFFER_SIZE");
}

TEST(SafeReader, ReadsValidMemoryAndFailsOnBadAddresses) {
  SafeReader r;
  ASSERT_TRUE(r.Available()) << r.why_unavailable();
  int64_t v = 42, out = 0;
  EXPECT_TRUE(r.Read(reinterpret_cast<uintptr_t>(&v), &out));
  EXPECT_EQ(out, 42);
  EXPECT_FALSE(r.Read(uintptr_t{8}, &out));  // unmapped page: EFAULT, not SIGSEGV
  EXPECT_FALSE(r.Read(uintptr_t{0}, &out));
  // Memory freed under the reader: a page we map, then unmap.
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  *static_cast<int64_t*>(page) = 7;
  EXPECT_TRUE(r.Read(reinterpret_cast<uintptr_t>(page), &out));
  munmap(page, 4096);
  EXPECT_FALSE(r.Read(reinterpret_cast<uintptr_t>(page), &out));
}

}  // namespace
}  // namespace probing::recorder
