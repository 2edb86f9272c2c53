// One process's memory mappings, from /proc/<pid>/maps: what the native unwinder (this process)
// and the injector (another process) both need to place an address in a file.
//
//   for (const MapEntry& m : ReadProcMaps("/proc/self/maps"))
//     if (addr >= m.start && addr < m.end) ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace probing::procfs {

struct MapEntry {
  uintptr_t start = 0, end = 0, offset = 0;
  bool exec = false;
  std::string path;  // a mapped file's path; empty for anonymous memory and [stack] and the like
};

// Every mapping of `file` in order; empty when it cannot be read (errno tells why).
std::vector<MapEntry> ReadProcMaps(const std::string& file);

}  // namespace probing::procfs
