// Loading the recorder into a Python process that is already running (`probing -t PID inject`).
//
// One thread of the target is stopped with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT; the others
// keep running) at a safe point: its unwound stack holds no frame of the dynamic loader, of
// malloc's family or of another libc function that takes a lock the load needs. In that thread
// the target's own libc functions are called, found in its ELF files on disk: mmap (a private
// stack and the path), dlopen of the recorder build for the target's Python version, munmap,
// then the recorder's `probing_start_detached` (which starts it in a thread of its own). Each
// call returns to address 0, a fault we catch. Every register (general, x87/SSE/AVX), errno and
// every byte written are restored, and a system call the thread was blocked in resumes as if
// nothing had happened. No Python code runs in the
// hijacked thread: the recorder's own thread takes the GIL later (docs/inject.md).
//
//   probing::injector::Options o;
//   o.pid = 4242;
//   o.recorder_dirs = {"/opt/probing/lib"};
//   auto r = probing::injector::Inject(o);
//   if (!r.ok()) std::cerr << r.status().message() << "\n";  // one line, target untouched
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "probing/base/status.h"

namespace probing::injector {

struct Options {
  pid_t pid = 0;
  // Where recorder builds (probing_recorder_cp3XX.so) are looked for, in order.
  std::vector<std::string> recorder_dirs;
  std::string library;  // this build instead of a search (tests, custom builds)
  // How long to look for a safe point before giving up, target untouched.
  int64_t safe_point_timeout_ms = 5000;
  // Told once when a call into the target takes long (another thread holds the loader lock).
  std::function<void(const std::string&)> on_slow;
};

struct Outcome {
  bool already_running = false;  // the recorder was loaded before: nothing was changed
  std::string library;           // the recorder build loaded
  std::string python;            // "3.11"
  pid_t thread = 0;              // the thread that was stopped to load it
  int attempts = 0;              // stops until a safe point was found
  int64_t stopped_ns = 0;        // how long that thread was stopped for the load
  int64_t checks_ns = 0;         // the other stops (safe-point checks), summed
  // Parts of stopped_ns: the safe-point check, dlopen, and probing_start_detached.
  int64_t check_ns = 0, dlopen_ns = 0, start_ns = 0;
  int64_t total_ns = 0;  // from the start of Inject to its return
};

// Errors are one line: no such process, not a Python process, no recorder build for its version,
// permission (other user, Yama ptrace_scope, a seccomp filter, another tracer), the target
// exiting, no safe point in time, or the load failing in the target (with dlerror's message).
Result<Outcome> Inject(const Options& options);

}  // namespace probing::injector
