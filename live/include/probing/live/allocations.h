// Where a live process's Python memory grows: tracemalloc started in the target on demand
// (through the session's eval), a snapshot now and one later, and the allocation sites
// (file:line, with the function around that line) that grew most between the two. tracemalloc
// is stopped again afterwards, on every path (Finish, Abandon, the destructor, and a timer in
// the target should this client vanish), unless the program was already tracing: then its
// tracing is left exactly as it was. Cost: docs/memory.md.
//
//   PROBING_ASSIGN_OR_RETURN(AllocationTrace trace, AllocationTrace::Start(*session, 60, 10));
//   sleep(5);
//   PROBING_ASSIGN_OR_RETURN(AllocationGrowth g, trace.Finish());
//   for (const AllocationSite& s : g.sites) Print(s.file, s.line, s.size_diff);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "probing/base/status.h"

namespace probing::live {

class Session;

struct AllocationSite {
  std::string file;
  int64_t line = 0;
  std::string function;    // qualified, from the file's source; empty when it cannot be read
  int64_t size_diff = 0;   // bytes held now less bytes held at the first snapshot
  int64_t count_diff = 0;  // blocks, the same way
  int64_t size = 0;        // bytes held now (of what tracemalloc has traced)
  int64_t count = 0;       // blocks held now
};

struct AllocationGrowth {
  double seconds = 0;                 // between the two snapshots
  bool was_tracing = false;           // the program traced already: its tracemalloc was left alone
  int64_t frames = 0;                 // tracemalloc's traceback limit
  std::vector<AllocationSite> sites;  // grown only, most bytes first, at most `limit`
  int64_t sites_grown = 0;            // sites that grew, listed or not
  int64_t grown_bytes = 0;            // their growth, all of it
  int64_t traced_bytes = 0;           // tracemalloc's traced memory now
  int64_t overhead_bytes = 0;         // what tracemalloc itself uses (tracemalloc_memory)
};

class AllocationTrace {
 public:
  // Starts tracemalloc in the target unless it runs already, and takes the first snapshot.
  // Fails (one line) where the target has no control server or its Python code fails. A guard
  // in the target ends the trace by itself `guard_s` seconds from now if neither Finish nor
  // Abandon came. Finish lists at most `limit` sites.
  static Result<AllocationTrace> Start(Session& session, double guard_s, size_t limit);
  AllocationTrace(AllocationTrace&& other) noexcept;
  AllocationTrace& operator=(AllocationTrace&&) = delete;
  AllocationTrace(const AllocationTrace&) = delete;
  ~AllocationTrace();  // Abandon() unless Finish or Abandon ran

  // The second snapshot, compared with the first; then tracemalloc stops (where we started it).
  Result<AllocationGrowth> Finish();
  // Ends the trace without a comparison (Ctrl-C). Best effort.
  Status Abandon();
  bool was_tracing() const { return was_tracing_; }

 private:
  AllocationTrace(Session* session, std::string key) : session_(session), key_(std::move(key)) {}
  Session* session_;
  std::string key_;  // this trace's first snapshot, among others' in the target
  bool was_tracing_ = false;
  size_t limit_ = 10;
  bool open_ = true;
};

}  // namespace probing::live
