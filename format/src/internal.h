// Helpers shared by the format's own sources; not part of its public interface.
#pragma once

#include <cstdint>
#include <string>

#include "probing/base/status.h"
#include "probing/format/events.h"

namespace probing::format::internal {

// The one message for input newer than this build: "trace format v3 is newer than this build
// (reads up to v1)", after an optional "path: " prefix.
inline Status NewerVersion(const std::string& prefix, uint16_t major) {
  return Unimplemented(prefix + "trace format v" + std::to_string(major) +
                       " is newer than this build (reads up to v" + std::to_string(kVersionMajor) +
                       ")");
}

}  // namespace probing::format::internal
