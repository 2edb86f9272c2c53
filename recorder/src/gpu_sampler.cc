#include "gpu_sampler.h"

#include <dlfcn.h>
#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>

#include "probing/base/clock.h"

namespace probing::recorder {
namespace {

// The few NVML declarations we use, from the public NVML API reference (nvml.h). The ABI of
// these versioned entry points is stable: NVML adds new names (_v3) instead of changing them.
using NvmlReturn = int;    // nvmlReturn_t: 0 is NVML_SUCCESS
using NvmlDevice = void*;  // nvmlDevice_t, an opaque handle
struct NvmlUtilization {   // nvmlUtilization_t
  unsigned int gpu;        // percent of the last sample period a kernel ran
  unsigned int memory;     // percent of it device memory was read or written
};
struct NvmlMemory {  // nvmlMemory_t (v1)
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
static_assert(sizeof(NvmlUtilization) == 8 && sizeof(NvmlMemory) == 24, "nvml.h layouts");

struct Nvml {
  NvmlReturn (*init)();                                     // nvmlInit_v2
  NvmlReturn (*shutdown)();                                 // nvmlShutdown
  NvmlReturn (*count)(unsigned int*);                       // nvmlDeviceGetCount_v2
  NvmlReturn (*handle)(unsigned int, NvmlDevice*);          // nvmlDeviceGetHandleByIndex_v2
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*);  // nvmlDeviceGetUtilizationRates
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*);            // nvmlDeviceGetMemoryInfo
  const char* (*error)(NvmlReturn);                         // nvmlErrorString
};

// One dlopen handle, closed on every path.
class Library {
 public:
  explicit Library(const std::string& name) : h_(dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) {}
  ~Library() {
    if (h_ != nullptr) dlclose(h_);
  }
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;
  bool ok() const { return h_ != nullptr; }
  template <typename F>
  bool Get(const char* name, F* out) const {
    *out = reinterpret_cast<F>(dlsym(h_, name));
    return *out != nullptr;
  }

 private:
  void* h_;
};

constexpr size_t kMaxKept = 60 * 16;  // a minute of readings of 16 devices

}  // namespace

struct GpuSampler::State {
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  bool stop = false;
  bool tried = false;
  std::string note;
  std::vector<format::GpuEvent> readings;
};

namespace {

std::string ErrorText(const Nvml& nvml, NvmlReturn r) {
  const char* s = nvml.error != nullptr ? nvml.error(r) : nullptr;
  return s != nullptr ? std::string(s) : "NVML error " + std::to_string(r);
}

void Run(std::shared_ptr<GpuSampler::State> st, std::string library) {
  pthread_setname_np(pthread_self(), "probing-gpu");
  auto done = [&](std::string why) {
    std::lock_guard<std::mutex> lock(st->mu);
    st->note = std::move(why);
    st->tried = true;
    st->cv.notify_all();
  };
  Library lib(library);
  if (!lib.ok()) return done("no NVML (" + library + " not found)");
  Nvml nvml{};
  if (!lib.Get("nvmlInit_v2", &nvml.init) || !lib.Get("nvmlShutdown", &nvml.shutdown) ||
      !lib.Get("nvmlDeviceGetCount_v2", &nvml.count) ||
      !lib.Get("nvmlDeviceGetHandleByIndex_v2", &nvml.handle) ||
      !lib.Get("nvmlDeviceGetUtilizationRates", &nvml.utilization) ||
      !lib.Get("nvmlDeviceGetMemoryInfo", &nvml.memory))
    return done("no NVML (" + library + " lacks the functions it needs)");
  lib.Get("nvmlErrorString", &nvml.error);  // optional: only for messages
  if (NvmlReturn r = nvml.init(); r != 0) return done("NVML did not start: " + ErrorText(nvml, r));
  unsigned int n = 0;
  std::vector<NvmlDevice> devices;
  if (NvmlReturn r = nvml.count(&n); r != 0) {
    nvml.shutdown();
    return done("NVML did not count the GPUs: " + ErrorText(nvml, r));
  }
  for (unsigned int i = 0; i < n; ++i) {
    NvmlDevice d = nullptr;
    devices.push_back(nvml.handle(i, &d) == 0 ? d : nullptr);
  }
  if (devices.empty()) {
    nvml.shutdown();
    return done("NVML sees no GPU");
  }
  done("");
  std::unique_lock<std::mutex> lock(st->mu);
  while (!st->stop) {
    lock.unlock();
    std::vector<format::GpuEvent> batch;
    const int64_t now = RealtimeNs();
    for (size_t i = 0; i < devices.size(); ++i) {
      if (devices[i] == nullptr) continue;
      format::GpuEvent e;
      e.ts = now;
      e.gpu = static_cast<uint32_t>(i);
      NvmlUtilization u{};
      if (nvml.utilization(devices[i], &u) == 0 && u.gpu <= 100 && u.memory <= 100) {
        e.gpu_util = u.gpu;
        e.memory_util = u.memory;
      }
      NvmlMemory m{};
      if (nvml.memory(devices[i], &m) == 0) {
        e.memory_used = m.used;
        e.memory_total = m.total;
      }
      batch.push_back(e);
    }
    lock.lock();
    for (auto& e : batch)
      if (st->readings.size() < kMaxKept) st->readings.push_back(e);
    st->cv.wait_for(lock, std::chrono::seconds(1), [&] { return st->stop; });
  }
  lock.unlock();
  nvml.shutdown();
}

}  // namespace

GpuSampler::GpuSampler(std::string library)
    : library_(std::move(library)), state_(std::make_shared<State>()) {}

GpuSampler::~GpuSampler() { Stop(); }

void GpuSampler::Start() {
  try {
    std::thread(Run, state_, library_).detach();
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->note = std::string("no thread to read the GPUs: ") + e.what();
    state_->tried = true;
  }
}

void GpuSampler::Stop() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->stop = true;
  state_->cv.notify_all();
}

std::vector<format::GpuEvent> GpuSampler::Take() {
  std::lock_guard<std::mutex> lock(state_->mu);
  return std::exchange(state_->readings, {});
}

std::string GpuSampler::note() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->note;
}

bool GpuSampler::WaitTried(int timeout_ms) const {
  std::unique_lock<std::mutex> lock(state_->mu);
  return state_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                             [&] { return state_->tried; });
}

}  // namespace probing::recorder
