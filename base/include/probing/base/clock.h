// The clocks every component reads, in nanoseconds as int64_t. Async-signal-safe
// (clock_gettime only), so the recorder's signal handlers may call them.
//
//   const int64_t began = MonotonicNs();
//   ... ;
//   double ms = static_cast<double>(MonotonicNs() - began) / 1e6;
//   event.ts = RealtimeNs();   // Unix time: what rows in the tables carry
#pragma once

#include <time.h>

#include <cstdint>

namespace probing {

inline int64_t ClockNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
// CLOCK_MONOTONIC: durations and deadlines.
inline int64_t MonotonicNs() { return ClockNs(CLOCK_MONOTONIC); }
// CLOCK_REALTIME: Unix time, for timestamps that leave the process.
inline int64_t RealtimeNs() { return ClockNs(CLOCK_REALTIME); }
// Unix time in seconds, as SQL's now() gives it.
inline double RealtimeSeconds() { return static_cast<double>(RealtimeNs()) / 1e9; }

}  // namespace probing
