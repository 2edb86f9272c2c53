#include "tracee.h"

#include <elf.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "probing/base/clock.h"

namespace probing::injector {
namespace {

constexpr uint64_t kEflagsTrap = 0x100;       // TF
constexpr uint64_t kEflagsDirection = 0x400;  // DF: must be clear when a function is called
constexpr int64_t kSlowCallNs = 3'000'000'000;

// One field of /proc/<pid>/status ("Uid", "TracerPid", "Seccomp", "CapEff"), or "".
std::string StatusField(const std::string& file, const std::string& field) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, field.size() + 1, field + ":") == 0) {
      std::string v = line.substr(field.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  return "";
}

std::string ReadLine(const std::string& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

bool HasCapSysPtrace() {
  const std::string eff = StatusField("/proc/self/status", "CapEff");
  if (eff.empty()) return false;
  return (std::strtoull(eff.c_str(), nullptr, 16) >> 19) & 1;  // CAP_SYS_PTRACE
}

}  // namespace

// Why PTRACE_SEIZE said EPERM (or ENOSYS), as the user can act on it.
std::string PermissionReason(pid_t pid, int err) {
  const std::string who = "process " + std::to_string(pid);
  const std::string status = "/proc/" + std::to_string(pid) + "/status";
  if (err == ENOSYS || StatusField("/proc/self/status", "Seccomp") == "2")
    return "cannot ptrace " + who +
           ": a seccomp filter on probing blocks ptrace (in a container: allow ptrace in its "
           "seccomp profile, e.g. docker run --cap-add=SYS_PTRACE)";
  const std::string tracer = StatusField(status, "TracerPid");
  if (!tracer.empty() && tracer != "0") {
    std::string comm = ReadLine("/proc/" + tracer + "/comm");
    return "cannot ptrace " + who + ": it is already traced by process " + tracer +
           (comm.empty() ? "" : " (" + comm + ")") + "; detach that debugger first";
  }
  const bool cap = HasCapSysPtrace();
  std::istringstream uids(StatusField(status, "Uid"));
  uid_t real = 0, effective = 0, saved = 0;
  if (uids >> real >> effective >> saved && !cap) {
    const uid_t me = getuid();
    if (real != me || effective != me || saved != me)
      return "cannot ptrace " + who + ": it belongs to uid " + std::to_string(real) +
             " and probing runs as uid " + std::to_string(me) +
             "; run probing as that user or as root";
  }
  const std::string scope = ReadLine("/proc/sys/kernel/yama/ptrace_scope");
  if (!scope.empty() && scope != "0" && !(cap && scope != "3"))
    return "cannot ptrace " + who + ": Yama ptrace_scope is " + scope +
           (scope == "1"   ? " (only a parent may attach)"
            : scope == "2" ? " (only CAP_SYS_PTRACE may attach)"
                           : " (no attaching)") +
           "; run as root, or set /proc/sys/kernel/yama/ptrace_scope to 0";
  // Running as root (or with CAP_SYS_PTRACE) already: "run as root" would send the user in a
  // circle. Pid 1 of this namespace and processes a security module guards are refused anyway.
  if (cap)
    return "cannot ptrace " + who + ": the kernel refuses it even with CAP_SYS_PTRACE" +
           (pid == 1 ? std::string(" (pid 1, the namespace's init, cannot be traced from "
                                   "inside it)")
                     : std::string(" (a security module such as AppArmor or SELinux, or a "
                                   "user namespace it belongs to, forbids it)"));
  return "cannot ptrace " + who + ": permission denied (it may have made itself undumpable " +
         "with prctl(PR_SET_DUMPABLE, 0); run probing as root)";
}

namespace {

bool IsEpoll(uint64_t nr) {
  return nr == SYS_epoll_wait || nr == SYS_epoll_pwait
#ifdef SYS_epoll_pwait2
         || nr == SYS_epoll_pwait2
#endif
      ;
}

}  // namespace

Result<std::unique_ptr<Tracee>> Tracee::Seize(pid_t pid, pid_t tid) {
  std::unique_ptr<Tracee> t(new Tracee(pid, tid));
  if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
    const int err = errno;
    if (err == ESRCH) return NotFound("thread " + std::to_string(tid) + " is gone");
    if (err == EPERM || err == ENOSYS) return Unavailable(PermissionReason(pid, err));
    return Internal("ptrace(PTRACE_SEIZE, " + std::to_string(tid) + "): " + std::strerror(err));
  }
  t->attached_ = true;
  return t;
}

Tracee::~Tracee() {
  if (!attached_) return;
  if (stopped_) {
    if (modified_) (void)Restore();
    (void)Detach();
  }
  // A thread that never stopped is detached by the kernel when this process exits; its pending
  // interrupt is dropped with the tracer.
}

Status Tracee::Exited(int status) const {
  std::string how =
      WIFSIGNALED(status) ? " (killed by signal " + std::to_string(WTERMSIG(status)) + ")" : "";
  return Unavailable("process " + std::to_string(pid_) + " exited during injection" + how);
}

Status Tracee::Wait(int* status, int64_t deadline_ns) {
  // SIGCHLD is blocked by the caller: each tracee stop raises it, so sigtimedwait wakes at once.
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  for (;;) {
    pid_t r = waitpid(tid_, status, __WALL | WNOHANG);
    if (r == tid_) return Status::Ok();
    if (r < 0 && errno != EINTR) {
      attached_ = false;  // ECHILD: the thread is gone, and our tracing with it
      return Unavailable("process " + std::to_string(pid_) + " exited during injection");
    }
    int64_t wait_ns = 50'000'000;
    if (deadline_ns > 0) {
      const int64_t left = deadline_ns - MonotonicNs();
      if (left <= 0) return Unavailable("timeout");
      wait_ns = std::min(wait_ns, left);
    }
    timespec ts{static_cast<time_t>(wait_ns / 1'000'000'000),
                static_cast<long>(wait_ns % 1'000'000'000)};
    sigtimedwait(&chld, nullptr, &ts);
  }
}

Status Tracee::Stop(int64_t deadline_ns) {
  if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0)
    return Unavailable("thread " + std::to_string(tid_) + " is gone");
  for (;;) {
    int status = 0;
    Status s = Wait(&status, deadline_ns);
    if (!s.ok()) return s;
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      attached_ = false;
      return Exited(status);
    }
    if (!WIFSTOPPED(status)) continue;
    if ((status >> 16) == PTRACE_EVENT_STOP) {  // our interrupt (or a group stop): stopped
      stopped_ = true;
      return Status::Ok();
    }
    // A signal on its way to the thread: let it through, our interrupt stays pending.
    ptrace(PTRACE_CONT, tid_, nullptr,
           reinterpret_cast<void*>(static_cast<intptr_t>(WSTOPSIG(status))));
  }
}

Status Tracee::Save() {
  if (ptrace(PTRACE_GETREGS, tid_, nullptr, &saved_) != 0)
    return Internal(std::string("ptrace(PTRACE_GETREGS): ") + std::strerror(errno));
  xstate_.assign(64 * 1024, 0);
  iovec iov{xstate_.data(), xstate_.size()};
  if (ptrace(PTRACE_GETREGSET, tid_, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) == 0) {
    xstate_kind_ = NT_X86_XSTATE;
    xstate_.resize(iov.iov_len);
  } else {
    xstate_.assign(sizeof(user_fpregs_struct), 0);
    if (ptrace(PTRACE_GETFPREGS, tid_, nullptr, xstate_.data()) != 0)
      return Internal(std::string("ptrace(PTRACE_GETFPREGS): ") + std::strerror(errno));
    xstate_kind_ = NT_PRFPREG;
  }
  saved_valid_ = true;
  return Status::Ok();
}

Status Tracee::SetRegs(const user_regs_struct& regs) {
  if (ptrace(PTRACE_SETREGS, tid_, nullptr, &regs) != 0)
    return Internal(std::string("ptrace(PTRACE_SETREGS): ") + std::strerror(errno));
  return Status::Ok();
}

Result<uint64_t> Tracee::Call(uintptr_t fn, const std::vector<uint64_t>& args, uintptr_t stack_top,
                              const std::string& what,
                              const std::function<void(const std::string&)>& on_slow) {
  if (!saved_valid_ || args.size() > 6) return Internal("Call before Save");
  user_regs_struct regs = saved_;
  unsigned long long* argument_regs[] = {&regs.rdi, &regs.rsi, &regs.rdx,
                                         &regs.rcx, &regs.r8,  &regs.r9};
  for (size_t i = 0; i < args.size(); ++i) *argument_regs[i] = args[i];
  const uintptr_t sp = (stack_top & ~uintptr_t{15}) - 8;  // as if `call` had pushed the return
  const uint64_t return_address = 0;
  PROBING_RETURN_IF_ERROR(Write(sp, &return_address, sizeof return_address));
  regs.rsp = sp;
  regs.rip = fn;
  regs.rax = 0;                               // no vector registers used by a variadic callee
  regs.orig_rax = static_cast<uint64_t>(-1);  // not in a system call: the kernel restarts nothing
  regs.eflags &= ~(kEflagsDirection | kEflagsTrap);
  modified_ = true;
  PROBING_RETURN_IF_ERROR(SetRegs(regs));
  if (ptrace(PTRACE_CONT, tid_, nullptr, nullptr) != 0)
    return Internal(std::string("ptrace(PTRACE_CONT): ") + std::strerror(errno));
  stopped_ = false;
  const int64_t started = MonotonicNs();
  bool told = false;
  for (;;) {
    int status = 0;
    int64_t deadline = told ? 0 : started + kSlowCallNs;
    Status s = Wait(&status, deadline);
    if (!s.ok() && attached_ && !told) {  // still running after 3 s
      told = true;
      if (on_slow)
        on_slow("the call to " + what + " in process " + std::to_string(pid_) +
                " is taking long (another thread holds the loader lock?); waiting for it");
      continue;
    }
    if (!s.ok()) return s;
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      attached_ = false;
      return Exited(status);
    }
    if (!WIFSTOPPED(status)) continue;
    if ((status >> 16) == PTRACE_EVENT_STOP) {  // a group stop (SIGSTOP) during the call
      ptrace(PTRACE_CONT, tid_, nullptr, nullptr);
      continue;
    }
    const int sig = WSTOPSIG(status);
    stopped_ = true;
    user_regs_struct now{};
    if (ptrace(PTRACE_GETREGS, tid_, nullptr, &now) != 0)
      return Internal(std::string("ptrace(PTRACE_GETREGS): ") + std::strerror(errno));
    if (sig == SIGSEGV && now.rip == 0 && now.rsp == sp + 8) return now.rax;  // returned
    siginfo_t info{};
    ptrace(PTRACE_GETSIGINFO, tid_, nullptr, &info);
    if (sig == SIGSYS && info.si_code == 1 /* SYS_SECCOMP */)
      return Unavailable("a seccomp filter in process " + std::to_string(pid_) +
                         " blocks system call " + std::to_string(info.si_syscall) + " (in " + what +
                         "); the target was left as it was");
    if (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGABRT ||
        sig == SIGSYS) {
      char at[32];
      snprintf(at, sizeof at, "0x%llx", static_cast<unsigned long long>(now.rip));
      return Internal("the call to " + what + " in process " + std::to_string(pid_) +
                      " failed with signal " + std::to_string(sig) + " at " + at +
                      "; its thread was put back where it was");
    }
    // Any other signal is the process's own: delivered now, on our stack, as it would have been.
    stopped_ = false;
    ptrace(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(static_cast<intptr_t>(sig)));
  }
}

Status Tracee::Write(uintptr_t addr, const void* data, size_t size) {
  iovec local{const_cast<void*>(data), size};
  iovec remote{reinterpret_cast<void*>(addr), size};
  if (process_vm_writev(tid_, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(size))
    return Status::Ok();
  // /proc/<pid>/mem is allowed where process_vm_writev is not (older container profiles).
  const std::string mem = "/proc/" + std::to_string(tid_) + "/mem";
  std::fstream f(mem, std::ios::in | std::ios::out | std::ios::binary);
  if (f) {
    f.seekp(static_cast<std::streamoff>(addr));
    f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (f.flush()) return Status::Ok();
  }
  return Internal("cannot write the memory of process " + std::to_string(pid_));
}

Status Tracee::Read(uintptr_t addr, void* out, size_t size) {
  iovec local{out, size};
  iovec remote{reinterpret_cast<void*>(addr), size};
  if (process_vm_readv(tid_, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(size))
    return Status::Ok();
  std::ifstream f("/proc/" + std::to_string(tid_) + "/mem", std::ios::binary);
  if (f) {
    f.seekg(static_cast<std::streamoff>(addr));
    if (f.read(static_cast<char*>(out), static_cast<std::streamsize>(size))) return Status::Ok();
  }
  return Internal("cannot read the memory of process " + std::to_string(pid_));
}

Status Tracee::Restore() {
  if (!saved_valid_ || !stopped_) return Internal("nothing to restore");
  iovec iov{xstate_.data(), xstate_.size()};
  if (ptrace(PTRACE_SETREGSET, tid_, reinterpret_cast<void*>(xstate_kind_), &iov) != 0 &&
      !(xstate_kind_ == NT_PRFPREG && ptrace(PTRACE_SETFPREGS, tid_, nullptr, xstate_.data()) == 0))
    return Internal(std::string("ptrace(PTRACE_SETREGSET): ") + std::strerror(errno));
  PROBING_RETURN_IF_ERROR(SetRegs(saved_));
  modified_ = false;
  return Status::Ok();
}

// epoll_wait fails with EINTR when its thread is stopped by ptrace, even without a signal
// handler (signal(7)). When the stop was ours alone, the thread is sent back into the call:
// its arguments are still in their registers, and the kernel's own restart does the same.
void Tracee::ReenterEpollAfterEintr(user_regs_struct* regs) {
  if (!IsEpoll(regs->orig_rax) || static_cast<int64_t>(regs->rax) != -EINTR) return;
  const std::string status =
      "/proc/" + std::to_string(pid_) + "/task/" + std::to_string(tid_) + "/status";
  for (const char* field : {"SigPnd", "ShdPnd"})
    if (std::strtoull(StatusField(status, field).c_str(), nullptr, 16) != 0) return;  // real
  uint8_t insn[2] = {0, 0};
  if (!Read(regs->rip - 2, insn, 2).ok() || insn[0] != 0x0f || insn[1] != 0x05) return;
  regs->rax = regs->orig_rax;
  regs->rip -= 2;
}

Status Tracee::Detach() {
  if (!attached_) return Status::Ok();
  if (stopped_) {
    user_regs_struct regs{};
    if (ptrace(PTRACE_GETREGS, tid_, nullptr, &regs) == 0) {
      user_regs_struct fixed = regs;
      ReenterEpollAfterEintr(&fixed);
      if (fixed.rip != regs.rip) (void)SetRegs(fixed);
    }
  }
  long r = ptrace(PTRACE_DETACH, tid_, nullptr, nullptr);
  attached_ = false;
  stopped_ = false;
  if (r != 0 && errno != ESRCH)
    return Internal(std::string("ptrace(PTRACE_DETACH): ") + std::strerror(errno));
  return Status::Ok();
}

}  // namespace probing::injector
