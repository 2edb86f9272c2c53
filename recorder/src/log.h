// The recorder's only output channel: one line on stderr, prefixed "probing: ". Used sparingly
// (start, refusal, a feature turned off); never on a hot path.
#pragma once

#include <cstdio>
#include <string>

namespace probing::recorder {

inline void Log(const std::string& msg) {
  std::string line = "probing: " + msg + "\n";
  (void)!fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace probing::recorder
