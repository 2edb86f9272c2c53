// The recorders of this host: every process directory under the data directory, alive or dead,
// with what its process.json says (`probing list`), and the removal of dead ones' rings
// (`probing list --gc`). A directory without process.json (a start or an inject interrupted
// early) is listed too, and collected once its pid is gone.
//
// Retention: the data of dead processes is kept for post-mortem queries, within two bounds (an
// age and a total size, PROBING_RETENTION_DAYS and PROBING_RETENTION_MAX_MB). Every recorder
// applies them once as it starts, and `probing list --gc` does too. A small library of its own:
// the recorder links it.
//
//   for (const RecorderEntry& e : ListRecorders(DefaultDataDir())) ...
//   Collected c = CollectDead(DefaultDataDir());   // c.dirs removed, c.bytes freed
//   Collected k = ApplyRetention(dir, RetentionFromEnvironment(&problems), RealtimeNs());
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
  // When its data last changed (Unix ns): the newest modification time of the directory and its
  // files. A running recorder touches its directory every minute (writes through mmap do not
  // move a file's time), so for a dead one this is within a minute of its end.
  int64_t last_written_ns = 0;
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

// How long, and how much, the data of dead processes is kept.
struct Retention {
  double days = 7;         // dead longer than this (last written): removed; 0: no age bound
  uint64_t max_mb = 1024;  // dead processes' data together; oldest removed first; 0: no bound
};
inline constexpr const char* kRetentionDaysEnv = "PROBING_RETENTION_DAYS";
inline constexpr const char* kRetentionMaxMbEnv = "PROBING_RETENTION_MAX_MB";

// Parse one bound; "" on success, else a message naming the accepted values (*out unchanged).
std::string ParseRetentionDays(const std::string& text, double* out);
std::string ParseRetentionMaxMb(const std::string& text, uint64_t* out);

// The bounds from PROBING_RETENTION_DAYS and PROBING_RETENTION_MAX_MB (defaults where unset); a
// bad value keeps the default and adds "VAR=value ignored: why" to *problems.
Retention RetentionFromEnvironment(std::vector<std::string>* problems);

// Removes the directories of dead processes last written more than r.days ago, then the oldest
// of the rest until dead processes' data takes at most r.max_mb. Running processes are never
// touched. Only in a directory of our own (as CollectDead).
Collected ApplyRetention(const std::string& data_dir, const Retention& r, int64_t now_real_ns);

}  // namespace probing::live
