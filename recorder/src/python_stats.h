// What only the interpreter can tell (thread names, GC and allocator figures, CUDA memory),
// gathered about once a second by a native thread that waits for the GIL like any other thread,
// and sooner when asked (a new thread was seen: its name is wanted). If the GIL is never
// released, the figures just go stale; nothing else waits for them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "py_module.h"

namespace probing::recorder {

// One @probing.metric reading (python/probing/_metrics.py).
struct MetricReading {
  std::string name;
  double value = 0;
  int64_t ts = 0;  // CLOCK_REALTIME ns, when read
};

// One allocation site of a tracemalloc snapshot (python.allocations).
struct AllocationSite {
  int64_t ts = 0;  // CLOCK_REALTIME ns of the snapshot
  std::string function, file;
  uint32_t line = 0;
  uint64_t bytes = 0, count = 0;
};

struct PythonStats {
  int64_t taken_ns = 0;    // CLOCK_MONOTONIC when gathered; 0 = never
  int64_t started_ns = 0;  // CLOCK_MONOTONIC when gathering began (the GIL was had)
  uint64_t py_blocks = 0;
  uint64_t gc_count[3] = {0, 0, 0};
  uint64_t gc_collections = 0;
  std::optional<uint64_t> cuda_allocated;
  std::optional<uint64_t> cuda_reserved;
  std::map<uint64_t, std::string> thread_names;  // native id -> threading name
  bool threading_loaded = false;  // the program imported threading (else no thread has a name)
  std::vector<MetricReading> metrics;             // this snapshot's @probing.metric readings
};

class PythonWorker {
 public:
  // `library_path`: this recorder's own file, so Python can register its exit and fork hooks.
  // `sink` receives the PyTorch tracer's rows (py_module.h).
  PythonWorker(std::string library_path, PythonSink* sink)
      : library_path_(std::move(library_path)), sink_(sink) {}
  // Starts its thread; false (with why) when there is none to be had.
  bool Start(std::string* why);
  // Stops Python-side work; waits (at most `timeout_ms`) for a job under way to finish.
  void Stop(int timeout_ms);

  PythonStats Snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  uint64_t native_id() const { return native_id_.load(); }
  // True while it waits for the GIL or holds it.
  bool busy() const { return busy_.load(); }
  // Changes each time a new snapshot is published.
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  // The allocation sites of the snapshots taken since the last call (probing.memory.allocations).
  std::vector<AllocationSite> TakeAllocations();
  // Why python.allocations gets no rows ("" while snapshots are taken), for `probing info`.
  std::string AllocationsNote() const;
  // Gathers the thread names again as soon as the GIL can be had (the rest keeps its pace of
  // once a second).
  void RequestSoon();

 private:
  void Run();
  bool Setup();
  bool Collect();
  bool CollectNames();
  // Under the GIL: takes a snapshot when one is due, or stops tracemalloc when the setting went
  // off (only if we started it).
  void Allocations();

  std::string library_path_;
  PythonSink* sink_;
  mutable std::mutex mu_;
  PythonStats stats_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> busy_{false};
  std::atomic<uint64_t> native_id_{0};
  std::atomic<uint64_t> version_{0};
  std::mutex wake_mu_;
  std::condition_variable wake_;
  bool wake_requested_ = false;  // under wake_mu_
  void* collect_fn_ = nullptr;  // PyObject*, owned
  void* names_fn_ = nullptr;    // PyObject*, owned
  void* allocations_fn_ = nullptr;  // PyObject*, owned
  // Allocation snapshots: the worker's thread only, but for the queue and the note (under mu_).
  int64_t next_snapshot_ns_ = 0;  // CLOCK_MONOTONIC
  bool tracing_ours_ = false;     // tracemalloc was started by us
  uint64_t failed_generation_ = ~0ull;  // the settings generation the last failure happened in
  std::vector<AllocationSite> allocations_;  // under mu_
  std::string allocations_failure_;          // under mu_
};

}  // namespace probing::recorder
