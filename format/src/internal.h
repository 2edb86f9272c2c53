// Helpers shared by the format's own sources; not part of its public interface.
#pragma once

#include <time.h>

#include <cstdint>
#include <string>

#include "probing/format/events.h"
#include "probing/format/status.h"

namespace probing::format::internal {

inline int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// The one message for input newer than this build: "trace format v3 is newer than this build
// (reads up to v1)", after an optional "path: " prefix.
inline Status NewerVersion(const std::string& prefix, uint16_t major) {
  return Unimplemented(prefix + "trace format v" + std::to_string(major) +
                       " is newer than this build (reads up to v" + std::to_string(kVersionMajor) +
                       ")");
}

}  // namespace probing::format::internal
