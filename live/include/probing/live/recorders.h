// The recorders of this host: every process directory under the data directory, alive or dead,
// with what its process.json says (`probing list`), and the removal of dead ones' rings
// (`probing list --gc`). A directory without process.json (a start or an inject interrupted
// early) is listed too, and collected once its pid is gone.
//
//   for (const RecorderEntry& e : ListRecorders(DefaultDataDir())) ...
//   Collected c = CollectDead(DefaultDataDir());   // c.dirs removed, c.bytes freed
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace probing::live {

struct RecorderEntry {
  pid_t pid = 0;
  std::string dir;
  bool alive = false;         // the same process still runs (a reused pid is not it)
  bool has_metadata = false;  // process.json was read
  std::string command;
  std::string python_version;
  std::string socket;
  std::optional<pid_t> ppid;
  std::optional<int64_t> rank;
  // Its place in a distributed job (process.json; empty / nullopt outside one).
  std::string run_id;
  std::optional<int64_t> world_size;
  std::optional<int64_t> local_rank;
  std::string role;  // "rank", "launcher", "child", "process"
  std::string host;
  std::optional<int64_t> tcp_port;
  uint64_t bytes = 0;  // what its rings take
};

// Sorted by pid. Directories not named by a pid are not ours and are left out.
std::vector<RecorderEntry> ListRecorders(const std::string& data_dir);

struct Collected {
  uint64_t dirs = 0;
  uint64_t bytes = 0;
  std::vector<std::string> failed;  // "dir: why"
};

// Removes the directories of processes that are gone.
Collected CollectDead(const std::string& data_dir);

}  // namespace probing::live
