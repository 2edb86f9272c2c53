// One thread of another process under ptrace: seized, stopped, made to call functions, and put
// back exactly as it was. Detaches on every path (the destructor), restoring the saved state
// first if a call was made and not yet undone.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "probing/base/clock.h"
#include "probing/base/status.h"

namespace probing::injector {

class Tracee {
 public:
  // PTRACE_SEIZE of thread `tid` of process `pid`; the thread keeps running. Permission errors
  // name the reason (docs/inject.md): another user, Yama ptrace_scope, another tracer, seccomp.
  static Result<std::unique_ptr<Tracee>> Seize(pid_t pid, pid_t tid);
  ~Tracee();
  Tracee(const Tracee&) = delete;
  Tracee& operator=(const Tracee&) = delete;

  pid_t tid() const { return tid_; }

  // Interrupts the thread and waits for it to stop, until `deadline_ns` (CLOCK_MONOTONIC).
  // Signals that arrive meanwhile are delivered as usual.
  Status Stop(int64_t deadline_ns);
  // The stopped thread's registers (general, and the whole x87/SSE/AVX state) and errno's
  // address are kept; Restore() puts them back.
  Status Save();
  const user_regs_struct& saved() const { return saved_; }

  // Calls `fn(args...)` in the stopped thread on the stack ending at `stack_top`, and returns
  // its rax. The call returns to address 0; the fault is caught and hidden. `what` names the
  // call in errors. `on_slow` is told once when it takes more than 3 s.
  Result<uint64_t> Call(uintptr_t fn, const std::vector<uint64_t>& args, uintptr_t stack_top,
                        const std::string& what,
                        const std::function<void(const std::string&)>& on_slow = nullptr);

  Status Write(uintptr_t addr, const void* data, size_t size);
  Status Read(uintptr_t addr, void* out, size_t size);

  // Puts back what Save() kept (registers, then the thread resumes as if never stopped).
  Status Restore();
  // Lets the thread go. A system call the stop interrupted resumes: the kernel restarts most;
  // epoll_wait, which would fail with EINTR, is re-entered.
  Status Detach();

 private:
  Tracee(pid_t pid, pid_t tid) : pid_(pid), tid_(tid) {}
  // waitpid for this thread until `deadline_ns` (0: no deadline).
  Status Wait(int* status, int64_t deadline_ns);
  Status Exited(int status) const;
  Status SetRegs(const user_regs_struct& regs);
  void ReenterEpollAfterEintr(user_regs_struct* regs);

  pid_t pid_, tid_;
  bool attached_ = false;
  bool stopped_ = false;
  bool saved_valid_ = false;
  bool modified_ = false;  // registers changed since Save()
  user_regs_struct saved_{};
  std::vector<uint8_t> xstate_;  // PTRACE_GETREGSET NT_X86_XSTATE, or NT_PRFPREG when that fails
  int xstate_kind_ = 0;
};

using probing::MonotonicNs;  // probing/base/clock.h

// Why this process may not ptrace `pid`, in words the user can act on: another user, Yama
// ptrace_scope, another tracer, a seccomp filter (`err` ENOSYS), an undumpable target.
std::string PermissionReason(pid_t pid, int err);

}  // namespace probing::injector
