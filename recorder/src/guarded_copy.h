// The one machine-specific piece of the fault guard (safe_read.h): a copy routine whose faults
// the guard's SIGSEGV/SIGBUS handler recognises by the faulting instruction's address and turns
// into a failed copy. A fault is ours exactly when that instruction lies inside this routine, so
// the handler needs no per-thread state and never mistakes another thread's fault for ours.
// One file per architecture, chosen by the build (guarded_copy_x86_64.*; guarded_copy_generic.cc
// elsewhere, where GuardedCopySupported() is false and reads use process_vm_readv).
//
//   if (GuardedCopySupported() && probing_guarded_copy(dst, src, n) == 0) { ... }
#pragma once

#include <cstddef>

extern "C" {
// Copies n bytes from src to dst with plain loads: 0 when done, -1 when a load faulted (only
// with the guard's handler installed; without it a fault is a crash).
int probing_guarded_copy(void* dst, const void* src, size_t n);
}

namespace probing::recorder {

// False where this architecture has no guarded copy.
bool GuardedCopySupported();

// Called by the fault handler with its ucontext_t: when the fault happened inside
// probing_guarded_copy, moves the thread to the routine's failure exit and returns true;
// otherwise changes nothing and returns false. Async-signal-safe.
bool RedirectGuardedFault(void* ucontext);

}  // namespace probing::recorder
