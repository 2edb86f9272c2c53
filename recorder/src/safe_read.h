// Fault-safe reads of this process's own memory. The sampler reads other threads' interpreter
// state without the GIL, so any pointer may dangle; a read of freed or unmapped memory must fail,
// not crash the host. Two ways, chosen per pass:
//
// - Plain loads behind a fault guard (the fast way): a SIGSEGV/SIGBUS handler, installed once per
//   process, recognises a fault inside our copy routine (guarded_copy.h) by the faulting
//   instruction and makes that copy fail. Every other fault -- another thread's, or ours outside
//   the routine, or a signal sent with kill -- goes on to the handler that was installed before
//   ours (faulthandler, torch, ...) or to the default action, exactly as without us. A handler
//   installed after ours would see our faults first, so each pass checks that ours is still the
//   one installed, and reads with process_vm_readv when it is not.
// - process_vm_readv on our own pid (the fallback): EFAULT instead of a crash, one system call a
//   read. Used where the guard cannot be installed, is displaced, or is switched off
//   (probing.sampler.fault_guard).
//
//   SafeReader r;                                // installs the guard on first use
//   SafeReader::Pass p = r.BeginPass(true);      // once per pass, on the reading thread
//   uint64_t v;
//   if (p.Read(addr, &v)) { ... }
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace probing::recorder {

class SafeReader {
 public:
  SafeReader();

  // False when neither way of reading works here; `why` says why.
  bool Available() const { return available_; }
  const std::string& why_unavailable() const { return why_; }

  // process_vm_readv, from any thread at any time. False on any fault (nothing partial is
  // trusted).
  bool ReadBytes(uintptr_t addr, void* out, size_t size) const noexcept;
  template <typename T>
  bool Read(uintptr_t addr, T* out) const noexcept {
    return ReadBytes(addr, out, sizeof(T));
  }
  bool ReadPtr(uintptr_t addr, uintptr_t* out) const noexcept { return Read(addr, out); }

  // The reads of one pass on the calling thread. Valid on that thread only, for a short while
  // (a pass): the guard's state is checked when it is made.
  class Pass {
   public:
    bool ReadBytes(uintptr_t addr, void* out, size_t size) const noexcept;
    template <typename T>
    bool Read(uintptr_t addr, T* out) const noexcept {
      return ReadBytes(addr, out, sizeof(T));
    }
    bool ReadPtr(uintptr_t addr, uintptr_t* out) const noexcept { return Read(addr, out); }
    // Reads `n` ranges of `size` bytes, at addrs[i], into out + i * size: plain loads one after
    // the other, or one process_vm_readv call for many. False when any fails.
    bool ReadMany(const uintptr_t* addrs, size_t n, size_t size, char* out) const noexcept;
    bool guarded() const { return guarded_; }

   private:
    friend class SafeReader;
    Pass(const SafeReader* r, bool guarded) : r_(r), guarded_(guarded) {}
    const SafeReader* r_;
    bool guarded_;
  };

  // Starts a pass: plain loads when `allow_guard` and our handler is the one installed for
  // SIGSEGV and SIGBUS (and the calling thread then has both unblocked), else process_vm_readv.
  Pass BeginPass(bool allow_guard) const noexcept;

  // How the last pass read, for `info`: "fault guard" or "process_vm_readv (<why>)".
  std::string mode() const;

  // For tests: true when the guard's handler is installed and still the one the kernel calls.
  static bool GuardInstalled() noexcept;

 private:
  pid_t pid_;
  bool available_ = false;
  std::string why_;
};

}  // namespace probing::recorder
