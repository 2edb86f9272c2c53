// Fault-safe reads of this process's own memory. The sampler reads other threads' interpreter
// state without the GIL, so any pointer may dangle: a read goes through process_vm_readv on our
// own pid, which fails with EFAULT instead of crashing. Where the kernel or a seccomp profile
// forbids process_vm_readv, Available() is false and the sampler turns itself off (logged once).
//
//   SafeReader r;
//   uint64_t v;
//   if (r.Read(addr, &v)) { ... }
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace probing::recorder {

class SafeReader {
 public:
  SafeReader();

  // False when process_vm_readv is not permitted here; `why` says why.
  bool Available() const { return available_; }
  const std::string& why_unavailable() const { return why_; }

  // Copies `size` bytes at `addr` into `out`. False on any fault (nothing partial is trusted).
  bool ReadBytes(uintptr_t addr, void* out, size_t size) const noexcept;

  template <typename T>
  bool Read(uintptr_t addr, T* out) const noexcept {
    return ReadBytes(addr, out, sizeof(T));
  }
  bool ReadPtr(uintptr_t addr, uintptr_t* out) const noexcept { return Read(addr, out); }

  uint64_t reads() const { return reads_; }

 private:
  pid_t pid_;
  bool available_ = false;
  std::string why_;
  mutable uint64_t reads_ = 0;
};

}  // namespace probing::recorder
