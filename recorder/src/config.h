// The recorder's configuration: every key with its value, default, description and valid range,
// in one place. Keys and environment variables follow the seeds (probing.sample_rate,
// probing.buffer_size, probing.server.port, probing.torch.enabled; PROBING_PORT,
// PROBING_TORCH_PROFILING, PROBING_SAMPLE_RATE, PROBE_TORCH_EXPRS) plus ours (probing.sampler.*,
// probing.locals.*,
// PROBING_SAMPLER_HZ, PROBING_DATA_DIR). Documented in docs/configuration.md.
//
//   Config& c = Config::Get();
//   std::string err = c.Set("probing.sample_rate", "0.5");   // "" on success
//   int hz = c.sampler_hz();                                  // lock-free, for hot paths
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "probing/live/recorders.h"

namespace probing::recorder {

struct ConfigEntry {
  std::string name;
  std::string value;
  std::string default_value;
  std::string description;
  std::string env;  // environment variable that sets it at start, or ""
  // Fixed once the recorder started (the server's port, the rings' size and place): only its
  // environment variable sets it, and setting it at run time is refused, never pretended.
  bool read_only = false;
};

// probing.max_memory's bounds (other than 0, no cap): 1 MiB, the least buffer_size takes, to 1 PiB.
inline constexpr uint64_t kMinMaxMemory = uint64_t{1} << 20;
inline constexpr uint64_t kMaxMaxMemory = uint64_t{1} << 50;

class Config {
 public:
  // The process-wide configuration (never destroyed: recorder threads may outlive statics).
  static Config& Get();

  // Applies the environment; returns one message per rejected variable (the default stays).
  std::vector<std::string> LoadEnvironment();
  // Sets one key. Returns "" on success, else a message naming the key and the accepted values;
  // the old value stays.
  std::string Set(const std::string& key, const std::string& value);
  // "" and false when the key is unknown.
  bool Lookup(const std::string& key, std::string* value) const;
  std::vector<ConfigEntry> All() const;

  // Lock-free reads for the recorder's threads.
  double sample_rate() const { return sample_rate_.load(std::memory_order_relaxed); }
  int sampler_hz() const { return sampler_hz_.load(std::memory_order_relaxed); }
  // Seconds without progress (step or collective) before the recorder says its rank is stuck.
  int hang_seconds() const { return hang_seconds_.load(std::memory_order_relaxed); }
  bool sampler_enabled() const { return sampler_enabled_.load(std::memory_order_relaxed); }
  bool fault_guard() const { return fault_guard_.load(std::memory_order_relaxed); }
  long locals_value_size() const { return locals_value_size_.load(std::memory_order_relaxed); }
  long locals_frame_size() const { return locals_frame_size_.load(std::memory_order_relaxed); }
  long buffer_kib() const { return buffer_kib_.load(std::memory_order_relaxed); }
  // probing.max_memory in bytes; 0: no cap.
  uint64_t max_memory() const { return max_memory_.load(std::memory_order_relaxed); }
  // What the rings may take together, their headers included: the smaller of
  // probing.buffer_size and probing.max_memory.
  uint64_t ring_bytes() const;
  int server_port() const { return server_port_.load(std::memory_order_relaxed); }
  bool torch_enabled() const { return torch_enabled_.load(std::memory_order_relaxed); }
  // probing.torch.budget as a fraction of step time (0.01 for 1%); 0: no budget.
  double torch_budget() const { return torch_budget_.load(std::memory_order_relaxed); }
  // The most of the interpreter's time that control requests needing the GIL may take.
  double gil_share() const { return gil_share_.load(std::memory_order_relaxed); }
  // Allocation snapshots (python.allocations): on, seconds between them, sites kept of each.
  bool allocations() const { return allocations_.load(std::memory_order_relaxed); }
  int allocations_interval() const { return allocations_interval_.load(std::memory_order_relaxed); }
  int allocations_top() const { return allocations_top_.load(std::memory_order_relaxed); }
  std::string data_dir() const;
  // How long and how much dead processes' data is kept (applied once as the recorder starts).
  live::Retention retention() const;
  bool banner() const;  // say "probing: enabled for process N" at start
  std::string torch_exprs() const;
  std::string torch_calls() const;
  // Changes on every successful Set: readers on hot paths re-read only when it moved.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

 private:
  Config();
  std::string SetLocked(const std::string& key, const std::string& value, bool at_start);

  mutable std::mutex mu_;
  std::vector<ConfigEntry> entries_;
  std::atomic<double> sample_rate_{1.0};
  std::atomic<int> sampler_hz_{100};
  std::atomic<bool> sampler_enabled_{true};
  std::atomic<bool> fault_guard_{true};
  std::atomic<long> locals_value_size_{200};
  std::atomic<long> locals_frame_size_{4000};
  std::atomic<long> buffer_kib_{10000};
  std::atomic<uint64_t> max_memory_{0};
  std::atomic<int> hang_seconds_{60};
  live::Retention retention_;  // under mu_
  std::atomic<int> server_port_{0};
  std::atomic<bool> torch_enabled_{true};
  std::atomic<double> torch_budget_{0.01};
  std::atomic<double> gil_share_{0.05};
  std::atomic<bool> allocations_{false};
  std::atomic<int> allocations_interval_{10};
  std::atomic<int> allocations_top_{20};
  std::atomic<uint64_t> generation_{0};
};

}  // namespace probing::recorder
