// A process's facts from /proc/<pid>/stat that more than one component reads: when it started
// (in Unix time, so that a pid reused by a later process is told apart) and its parent.
//
//   std::optional<int64_t> started = ProcessStartNs(4242);   // nullopt: no such process
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace probing::procfs {

// When process `pid` (0: this one) started, nanoseconds since the Unix epoch, from field 22 of
// its stat (clock ticks after boot) and the boot time. Nullopt when it cannot be read.
std::optional<int64_t> ProcessStartNs(pid_t pid = 0);

// Its parent's pid (field 4), or nullopt.
std::optional<pid_t> ParentPid(pid_t pid);

}  // namespace probing::procfs
