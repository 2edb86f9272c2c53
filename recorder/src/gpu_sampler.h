// GPU utilization and memory per device (the seeds' gpu_metrics), from NVML, the NVIDIA driver's
// management library, loaded at run time with dlopen("libnvidia-ml.so.1"): never linked, so the
// recorder loads and runs where there is no driver. Its own thread loads NVML and reads every
// device about once a second, so a slow or stuck driver call delays neither the stack sampler
// nor the program; it never touches Python. When NVML is absent or fails, the thread ends and
// note() says why, once, for `probing info`. Untested on a machine with a GPU (docs/torch.md).
//
//   GpuSampler gpus;                       // or GpuSampler("libother.so") in a test
//   gpus.Start();
//   for (const format::GpuEvent& e : gpus.Take()) builder.AddGpu(e);
//   std::string why = gpus.note();         // "" while it reads; else e.g. "no NVML (...)"
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "probing/format/events.h"

namespace probing::recorder {

class GpuSampler {
 public:
  explicit GpuSampler(std::string library = "libnvidia-ml.so.1");
  // Asks the thread to end; never waits for it (it may be inside a driver call), and never in a
  // forked child, where the thread does not exist.
  ~GpuSampler();
  GpuSampler(const GpuSampler&) = delete;
  GpuSampler& operator=(const GpuSampler&) = delete;

  // Starts the reading thread; with no thread to be had, note() says so.
  void Start();
  void Stop();
  // The readings since the last call (at most a minute of them are kept).
  std::vector<format::GpuEvent> Take();
  // "" while NVML answers (or before it was tried); else why there are no readings.
  std::string note() const;
  // Blocks until NVML was tried (or `timeout_ms` passed): for tests.
  bool WaitTried(int timeout_ms) const;

  struct State;  // shared with the thread, which may outlive this object

 private:
  std::string library_;
  std::shared_ptr<State> state_;
};

}  // namespace probing::recorder
