#include "safe_read.h"

#include <pthread.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "guarded_copy.h"

namespace probing::recorder {
namespace {

// The guard's state, process-wide (a forked child inherits the handler and these with it).
// Written before the handler is installed; read by the handler.
struct sigaction g_prev_segv;
struct sigaction g_prev_bus;
std::atomic<bool> g_guard_installed{false};
std::string* g_guard_why = nullptr;  // why the guard is not installed; set once, never freed

struct sigaction* PreviousFor(int sig) { return sig == SIGSEGV ? &g_prev_segv : &g_prev_bus; }

// Hands a fault that is not ours to whoever would have had it without us, as the kernel would
// have: the previous handler (with its signal mask, and its SA_NODEFER and SA_RESETHAND), or the
// default action. Async-signal-safe.
void Chain(int sig, siginfo_t* info, void* ucontext) {
  struct sigaction* prev = PreviousFor(sig);
  const bool sent = info->si_code <= 0;  // kill, tgkill, sigqueue: not a fault of an instruction
  const bool siginfo = (prev->sa_flags & SA_SIGINFO) != 0;
  void (*handler)(int) = prev->sa_handler;
  void (*action)(int, siginfo_t*, void*) = prev->sa_sigaction;
  if (!siginfo && handler == SIG_IGN && sent) return;  // ignored, as before
  if (siginfo ? action != nullptr : (handler != SIG_DFL && handler != SIG_IGN)) {
    sigset_t mask, old;
    mask = prev->sa_mask;
    if ((prev->sa_flags & SA_NODEFER) == 0) sigaddset(&mask, sig);
    pthread_sigmask(SIG_BLOCK, &mask, &old);
    if ((prev->sa_flags & SA_NODEFER) != 0) {
      sigset_t self;
      sigemptyset(&self);
      sigaddset(&self, sig);
      pthread_sigmask(SIG_UNBLOCK, &self, nullptr);
    }
    if ((prev->sa_flags & SA_RESETHAND) != 0) {  // one-shot: the next one takes the default
      prev->sa_handler = SIG_DFL;
      prev->sa_flags &= ~SA_SIGINFO;
    }
    if (siginfo) {
      action(sig, info, ucontext);
    } else {
      handler(sig);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return;
  }
  // The default action (a fault cannot be ignored: the kernel would have taken the default for
  // it too). A fault comes back when the instruction runs again; a sent signal is raised again,
  // and arrives once this handler returns.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  if (sent) raise(sig);
}

void OnFault(int sig, siginfo_t* info, void* ucontext) {
  const int saved_errno = errno;
  // Ours: a fault of an instruction (not a sent signal) inside probing_guarded_copy.
  if (!(info->si_code > 0 && RedirectGuardedFault(ucontext))) Chain(sig, info, ucontext);
  errno = saved_errno;
}

bool IsOurs(const struct sigaction& a) {
  return (a.sa_flags & SA_SIGINFO) != 0 && a.sa_sigaction == &OnFault;
}

bool InstallFor(int sig, std::string* why) {
  struct sigaction cur;
  if (sigaction(sig, nullptr, &cur) != 0) {
    *why = std::string("sigaction: ") + std::strerror(errno);
    return false;
  }
  if (IsOurs(cur)) return true;  // already (a forked child, or a second recorder)
  *PreviousFor(sig) = cur;
  struct sigaction ours;
  std::memset(&ours, 0, sizeof ours);
  ours.sa_sigaction = &OnFault;
  // SA_ONSTACK: a thread with an alternate stack (faulthandler gives the main thread one) still
  // reaches the previous handler after a stack overflow.
  ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&ours.sa_mask);
  struct sigaction replaced;
  if (sigaction(sig, &ours, &replaced) != 0) {
    *why = std::string("sigaction: ") + std::strerror(errno);
    return false;
  }
  // Someone installed a handler between the two calls: that one is the previous.
  if (!IsOurs(replaced)) *PreviousFor(sig) = replaced;
  return true;
}

void InstallGuardOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto* why = new std::string();
    if (!GuardedCopySupported()) {
      *why = "no fault guard for this architecture";
    } else if (InstallFor(SIGSEGV, why) && InstallFor(SIGBUS, why)) {
      g_guard_installed.store(true);
    }
    g_guard_why = why;
  });
}

// A fault in a thread that blocks SIGSEGV or SIGBUS kills the process whatever the handler: the
// recorder's threads block every signal, so a reading thread unblocks these two, once.
void UnblockFaultSignals() {
  static thread_local bool done = false;
  if (done) return;
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGSEGV);
  sigaddset(&s, SIGBUS);
  pthread_sigmask(SIG_UNBLOCK, &s, nullptr);
  done = true;
}

enum Mode : int { kGuarded, kOff, kDisplaced, kNoGuard };
std::atomic<int> g_last_mode{kGuarded};

bool VmRead(pid_t pid, uintptr_t addr, void* out, size_t size) {
  struct iovec local = {out, size};
  struct iovec remote = {reinterpret_cast<void*>(addr), size};
  return process_vm_readv(pid, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(size);
}

}  // namespace

SafeReader::SafeReader() : pid_(getpid()) {
  InstallGuardOnce();
  uint64_t probe = 0x1234, copy = 0;
  if (VmRead(pid_, reinterpret_cast<uintptr_t>(&probe), &copy, sizeof copy) && copy == probe) {
    available_ = true;
    return;
  }
  int err = errno;
  why_ = std::string("process_vm_readv on our own process failed (") + std::strerror(err) +
         (err == EPERM || err == ENOSYS ? "; a seccomp profile may forbid it)" : ")");
  // Plain loads still work while the guard is ours; passes without it read nothing.
  available_ = g_guard_installed.load();
}

bool SafeReader::GuardInstalled() noexcept {
  if (!g_guard_installed.load()) return false;
  struct sigaction segv, bus;
  return sigaction(SIGSEGV, nullptr, &segv) == 0 && sigaction(SIGBUS, nullptr, &bus) == 0 &&
         IsOurs(segv) && IsOurs(bus);
}

SafeReader::Pass SafeReader::BeginPass(bool allow_guard) const noexcept {
  int mode = kGuarded;
  if (!allow_guard) {
    mode = kOff;
  } else if (!g_guard_installed.load()) {
    mode = kNoGuard;
  } else if (!GuardInstalled()) {
    mode = kDisplaced;
  }
  if (mode == kGuarded) UnblockFaultSignals();
  g_last_mode.store(mode, std::memory_order_relaxed);
  return Pass(this, mode == kGuarded);
}

std::string SafeReader::mode() const {
  switch (g_last_mode.load(std::memory_order_relaxed)) {
    case kGuarded: return "fault guard";
    case kOff: return "process_vm_readv (probing.sampler.fault_guard is off)";
    case kDisplaced:
      return "process_vm_readv (a SIGSEGV or SIGBUS handler was installed after the recorder's)";
    default:
      return "process_vm_readv (" + (g_guard_why != nullptr ? *g_guard_why : std::string()) + ")";
  }
}

bool SafeReader::ReadBytes(uintptr_t addr, void* out, size_t size) const noexcept {
  if (addr == 0 || size == 0) return false;
  return VmRead(pid_, addr, out, size);
}

bool SafeReader::Pass::ReadBytes(uintptr_t addr, void* out, size_t size) const noexcept {
  if (addr < 4096 || size == 0) return false;
  if (guarded_) return probing_guarded_copy(out, reinterpret_cast<const void*>(addr), size) == 0;
  return r_->ReadBytes(addr, out, size);
}

bool SafeReader::Pass::ReadMany(const uintptr_t* addrs, size_t n, size_t size,
                                char* out) const noexcept {
  if (guarded_) {
    for (size_t i = 0; i < n; ++i)
      if (!ReadBytes(addrs[i], out + i * size, size)) return false;
    return true;
  }
  constexpr size_t kBatch = 256;  // well under IOV_MAX
  struct iovec local[kBatch], remote[kBatch];
  for (size_t done = 0; done < n;) {
    const size_t k = std::min(kBatch, n - done);
    for (size_t i = 0; i < k; ++i) {
      if (addrs[done + i] < 4096) return false;
      local[i] = {out + (done + i) * size, size};
      remote[i] = {reinterpret_cast<void*>(addrs[done + i]), size};
    }
    if (process_vm_readv(r_->pid_, local, k, remote, k, 0) != static_cast<ssize_t>(k * size))
      return false;
    done += k;
  }
  return true;
}

}  // namespace probing::recorder
