// Decoded segments with an account of where they came from: what loaded, what was damaged or
// lost, per source (a ring file, a .ptrace file, a remote ring). Readers fill it (live's
// LoadStreams); the analyzer and the SQL layer take its segments; `--stats` prints its sources.
// Bad data is counted, not fatal: every whole segment loads.
//
//   TraceSet set = ...;
//   for (const Segment& seg : set.segments) ...
//   for (const SourceStats& s : set.sources) if (s.segments_corrupt > 0) ...
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "probing/format/events.h"
#include "probing/format/segment.h"

namespace probing::format {

struct SourceStats {
  std::string path;
  std::string kind;  // "ptrace", "ring" or "remote ring"
  uint64_t segments_ok = 0;
  uint64_t segments_corrupt = 0;  // found but failed checksum or decoding
  uint64_t segments_lost = 0;     // ring: overwritten before we copied them
  uint64_t bytes_skipped = 0;     // ptrace: unparseable bytes between or after segments
  bool used_index = false;
  bool truncated_tail = false;
  std::string first_error;
  bool unreadable = false;  // the whole file was skipped (damaged header, not a regular file)
};

struct TraceSet {
  std::vector<format::Segment> segments;
  std::vector<SourceStats> sources;
};

}  // namespace probing::format
