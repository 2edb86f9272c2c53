#include "probing/procfs/proc_maps.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace probing::procfs {

std::vector<MapEntry> ReadProcMaps(const std::string& file) {
  std::vector<MapEntry> maps;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string range, perms, offset, dev, inode, path;
    ls >> range >> perms >> offset >> dev >> inode;
    std::getline(ls >> std::ws, path);
    const size_t dash = range.find('-');
    if (dash == std::string::npos) continue;
    MapEntry m;
    m.start = std::strtoull(range.c_str(), nullptr, 16);
    m.end = std::strtoull(range.c_str() + dash + 1, nullptr, 16);
    m.offset = std::strtoull(offset.c_str(), nullptr, 16);
    m.exec = perms.size() > 2 && perms[2] == 'x';
    if (!path.empty() && path[0] == '/') m.path = path;
    maps.push_back(std::move(m));
  }
  return maps;
}

}  // namespace probing::procfs
