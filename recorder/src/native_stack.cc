#include "native_stack.h"

#include <cxxabi.h>
#include <libunwind-ptrace.h>
#include <libunwind.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>

#include "probing/base/clock.h"
#include "probing/procfs/proc_maps.h"
#include "probing/procfs/unwind_accessors.h"

namespace probing::recorder {
namespace {

// How long the server waits for a thread to take the signal, and the most a thread waits in
// the handler before going on by itself.
constexpr int64_t kStopWaitNs = 100'000'000;
constexpr int64_t kParkBudgetNs = 250'000'000;

// The slot shared with the signal handler: plain atomics and a fixed array, nothing else.
enum SlotState : int {
  kIdle,
  kRequested,  // server: signal sent to `tid`
  kCapturing,  // handler: copying registers
  kStopped,    // handler: registers copied, waiting
  kRelease,    // server: done, go on
  kLeft,       // handler: deadline passed, went on by itself
};

struct Slot {
  std::atomic<int> state{kIdle};
  std::atomic<pid_t> tid{0};
  std::atomic<int64_t> deadline_ns{0};
  std::atomic<int64_t> stopped_at_ns{0};
  greg_t regs[NGREG];
};
Slot g_slot;
const greg_t* g_regs = nullptr;  // the registers being unwound (server thread, under g_mu)
const SafeReader* g_reader = nullptr;
// The stopped thread's stack, copied from its stack pointer up while it was stopped, so that it
// is unwound after it goes on (server thread, under g_mu).
const char* g_stack = nullptr;
uintptr_t g_stack_base = 0;
size_t g_stack_size = 0;
std::mutex g_mu;

int Signal() { return SIGRTMAX - 2; }

// Async-signal-safe: atomics, memcpy of the context, clock_gettime, sched_yield.
void OnSignal(int, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  if (info->si_code == SI_TKILL && info->si_pid == getpid() &&
      static_cast<pid_t>(syscall(SYS_gettid)) == g_slot.tid.load()) {
    int expected = kRequested;
    if (g_slot.state.compare_exchange_strong(expected, kCapturing)) {
      g_slot.stopped_at_ns.store(MonotonicNs());
      std::memcpy(g_slot.regs, static_cast<ucontext_t*>(context)->uc_mcontext.gregs,
                  sizeof g_slot.regs);
      g_slot.state.store(kStopped);
      const int64_t deadline = g_slot.deadline_ns.load();
      for (int spins = 0;; ++spins) {
        if (g_slot.state.load() == kRelease) {
          g_slot.state.store(kIdle);
          break;
        }
        if (MonotonicNs() > deadline) {
          expected = kStopped;
          if (g_slot.state.compare_exchange_strong(expected, kLeft)) break;
          continue;  // released just now
        }
        if (spins > 64) sched_yield();
      }
    }
  }
  errno = saved_errno;
}

int GregFor(unw_regnum_t reg) {
  switch (reg) {
    case UNW_X86_64_RAX: return REG_RAX;
    case UNW_X86_64_RDX: return REG_RDX;
    case UNW_X86_64_RCX: return REG_RCX;
    case UNW_X86_64_RBX: return REG_RBX;
    case UNW_X86_64_RSI: return REG_RSI;
    case UNW_X86_64_RDI: return REG_RDI;
    case UNW_X86_64_RBP: return REG_RBP;
    case UNW_X86_64_RSP: return REG_RSP;
    case UNW_X86_64_R8: return REG_R8;
    case UNW_X86_64_R9: return REG_R9;
    case UNW_X86_64_R10: return REG_R10;
    case UNW_X86_64_R11: return REG_R11;
    case UNW_X86_64_R12: return REG_R12;
    case UNW_X86_64_R13: return REG_R13;
    case UNW_X86_64_R14: return REG_R14;
    case UNW_X86_64_R15: return REG_R15;
    case UNW_X86_64_RIP: return REG_RIP;
    default: return -1;
  }
}

// libunwind's view of this process: memory through SafeReader, registers from the stopped
// thread's copy, unwind tables and symbols from the ELF files (libunwind-ptrace's helpers read
// /proc/<pid>/maps and the files; they never call ptrace).
int AccessMem(unw_addr_space_t, unw_word_t addr, unw_word_t* val, int write, void*) {
  if (write != 0) return -UNW_EINVAL;
  if (addr >= g_stack_base && addr - g_stack_base + sizeof *val <= g_stack_size) {
    std::memcpy(val, g_stack + (addr - g_stack_base), sizeof *val);
    return 0;
  }
  return g_reader->Read(addr, val) ? 0 : -UNW_EINVAL;
}

int AccessReg(unw_addr_space_t, unw_regnum_t reg, unw_word_t* val, int write, void*) {
  const int i = GregFor(reg);
  if (write != 0 || i < 0 || g_regs == nullptr) return -UNW_EBADREG;
  *val = static_cast<unw_word_t>(g_regs[i]);
  return 0;
}

std::string Demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (d == nullptr) return name;
  std::string out = d;
  std::free(d);
  return out;
}

}  // namespace

NativeUnwinder* NativeUnwinder::Get(const SafeReader& reader, std::string* why) {
  static std::once_flag once;
  static NativeUnwinder* instance = nullptr;
  static std::string init_error;
  std::call_once(once, [&] {
    auto* u = new NativeUnwinder(reader);  // lives as long as the process
    if (u->Init(&init_error)) {
      instance = u;
    } else {
      delete u;
    }
  });
  if (instance == nullptr) *why = init_error;
  return instance;
}

bool NativeUnwinder::Init(std::string* why) {
  if (!reader_.Available()) {
    *why = "native frames need fault-safe reads: " + reader_.why_unavailable();
    return false;
  }
  struct sigaction old {};
  if (sigaction(Signal(), nullptr, &old) != 0 ||
      (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)) {
    *why = "native frames are off: signal " + std::to_string(Signal()) +
           " already has a handler in this process";
    return false;
  }
  static unw_accessors_t accessors =
      procfs::UnwindAccessors(_UPT_find_proc_info, _UPT_put_unwind_info, AccessMem, AccessReg);
  unw_addr_space_t as = unw_create_addr_space(&accessors, 0);
  void* upt = _UPT_create(getpid());
  if (as == nullptr || upt == nullptr) {
    *why = "native frames are off: libunwind could not be set up";
    return false;
  }
  unw_set_caching_policy(as, UNW_CACHE_GLOBAL);
  struct sigaction sa {};
  sa.sa_sigaction = OnSignal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigfillset(&sa.sa_mask);
  if (sigaction(Signal(), &sa, nullptr) != 0) {
    *why = std::string("native frames are off: sigaction: ") + std::strerror(errno);
    return false;
  }
  address_space_ = as;
  upt_ = upt;
  g_reader = &reader_;
  return true;
}

void NativeUnwinder::Unwind(std::vector<uintptr_t>* ips) {
  auto as = static_cast<unw_addr_space_t>(address_space_);
  unw_cursor_t cursor;
  if (unw_init_remote(&cursor, as, upt_) != 0) return;
  for (int n = 0; n < kMaxFrames; ++n) {
    unw_word_t ip = 0;
    if (unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
    ips->push_back(ip);
    if (unw_step(&cursor) <= 0) break;
  }
}

void NativeUnwinder::Symbolize(const std::vector<uintptr_t>& ips, std::vector<NativeFrame>* out) {
  std::vector<procfs::MapEntry> maps = procfs::ReadProcMaps("/proc/self/maps");
  for (size_t i = 0; i < ips.size(); ++i) {
    NativeFrame f;
    f.ip = ips[i];
    // A return address may point past the end of a call to a noreturn function: look up ip-1.
    const uintptr_t lookup = i == 0 ? f.ip : f.ip - 1;
    for (const procfs::MapEntry& m : maps) {
      if (m.path.empty() || lookup < m.start || lookup >= m.end) continue;
      f.module = m.path;
      f.offset = lookup - m.start + m.offset;  // file offset until a symbol is found
      const procfs::ElfSymbols::Module* mod = symbols_.Load(m.path);
      if (mod == nullptr) break;
      auto vaddr = mod->VaddrOfFileOffset(lookup - m.start + m.offset);
      if (!vaddr) break;
      if (auto hit = mod->Lookup(*vaddr)) {
        f.symbol = Demangle(hit->name);
        f.offset = hit->offset + (f.ip - lookup);
      }
      break;
    }
    out->push_back(std::move(f));
  }
}

bool NativeUnwinder::Capture(pid_t tid, std::vector<NativeFrame>* out,
                             const std::function<void()>& while_stopped, int64_t* stopped_ns,
                             std::string* why) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto wait_for = [](auto done, int64_t ns) {
    const int64_t until = MonotonicNs() + ns;
    for (int spins = 0; !done(); ++spins) {
      if (MonotonicNs() > until) return false;
      if (spins < 2000) {
        sched_yield();  // the thread usually takes the signal within microseconds
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    return true;
  };
  g_slot.tid.store(tid);
  g_slot.deadline_ns.store(MonotonicNs() + kStopWaitNs + kParkBudgetNs);
  g_slot.state.store(kRequested);
  if (syscall(SYS_tgkill, getpid(), tid, Signal()) != 0) {
    g_slot.state.store(kIdle);
    *why = "thread " + std::to_string(tid) + " is gone";
    return false;
  }
  const bool stopped = wait_for([] { return g_slot.state.load() == kStopped; }, kStopWaitNs);
  if (!stopped) {
    int expected = kRequested;
    if (g_slot.state.compare_exchange_strong(expected, kIdle)) {
      // The signal stays pending and is ignored when it comes: the slot no longer asks.
      *why =
          "the thread did not take the signal within 100 ms (it blocks signals, or is in an "
          "uninterruptible call)";
      return false;
    }
    wait_for([] { return g_slot.state.load() != kCapturing; }, kParkBudgetNs);
  }
  greg_t regs[NGREG];
  std::memcpy(regs, g_slot.regs, sizeof regs);
  const size_t copied = CopyStack(static_cast<uintptr_t>(regs[REG_RSP]));
  while_stopped();
  int expected = kStopped;
  if (!g_slot.state.compare_exchange_strong(expected, kRelease)) {
    g_slot.state.store(kIdle);  // it went on by itself: what was read may be torn
    *why = "the thread went on before its stack was read";
    return false;
  }
  *stopped_ns = MonotonicNs() - g_slot.stopped_at_ns.load();
  wait_for([] { return g_slot.state.load() == kIdle; }, kParkBudgetNs);

  std::vector<uintptr_t> ips;
  g_regs = regs;
  g_stack = stack_.data();
  g_stack_base = static_cast<uintptr_t>(regs[REG_RSP]);
  g_stack_size = copied;
  unw_flush_cache(static_cast<unw_addr_space_t>(address_space_), 0, 0);
  Unwind(&ips);
  g_regs = nullptr;
  g_stack_size = 0;
  Symbolize(ips, out);
  return true;
}

size_t NativeUnwinder::CopyStack(uintptr_t sp) {
  // Page by page from the stack pointer up: the copy ends at the first unreadable page.
  stack_.resize(kMaxStackCopy);
  constexpr uintptr_t kPage = 4096;
  iovec local{stack_.data(), kMaxStackCopy};
  iovec remote[kMaxStackCopy / kPage];
  int n = 0;
  size_t total = 0;
  for (uintptr_t at = sp; total < kMaxStackCopy && n < static_cast<int>(std::size(remote)); ++n) {
    size_t len = std::min<size_t>(kPage - at % kPage, kMaxStackCopy - total);
    remote[n] = {reinterpret_cast<void*>(at), len};
    at += len;
    total += len;
  }
  ssize_t got = process_vm_readv(getpid(), &local, 1, remote, static_cast<unsigned long>(n), 0);
  return got > 0 ? static_cast<size_t>(got) : 0;
}

bool NativeUnwinder::IsEvalFrame(const NativeFrame& f) {
  return f.symbol == "_PyEval_EvalFrameDefault";
}

}  // namespace probing::recorder
