// The fault guard (safe_read.h): guarded reads of bad memory fail instead of crashing, and
// every fault that is not ours ends exactly as it would without the guard (same handler called,
// same exit or signal). The guard is process-wide and installed once, so every test runs in a
// forked child; this process never installs it, and each "with the guard" child is compared
// with a child that does the same thing without it.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "guarded_copy.h"
#include "safe_read.h"

namespace probing::recorder {
namespace {

// How a child ended: "exit N" or "signal N".
std::string RunChild(const std::function<void()>& body) {
  fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(5);  // a child that hangs (a fault handled over and over) ends as "signal 14"
    body();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "other";
}

// Child exit codes of the checks below (any other failure: 1..9).
void Check(bool ok, int code) {
  if (!ok) _exit(code);
}

void* MapGone() {  // a page that was mapped and is not any more
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(p, 4096);
  return p;
}

volatile int* volatile g_null = nullptr;
void Crash() { *g_null = 1; }  // a fault of the program, not of the guard

void InstallForeign(int sig, void (*fn)(int, siginfo_t*, void*), int flags = 0) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = fn;
  sa.sa_flags = SA_SIGINFO | flags;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, nullptr);
}
void ExitWith42(int, siginfo_t*, void*) { _exit(42); }
std::atomic<int> g_foreign_calls{0};
void CountAndExit43(int, siginfo_t* info, void*) {
  ++g_foreign_calls;
  _exit(info->si_code > 0 ? 43 : 45);
}
// Like faulthandler: a plain handler, one-shot (SA_RESETHAND) and SA_NODEFER, that reports and
// returns, so that the fault comes back and takes the default action.
void Report(int) { (void)!write(2, "foreign handler ran\n", 20); }

// Guarded reads of memory a running program could point at: all fail, none crashes.
void BadReads(const SafeReader::Pass& p) {
  int64_t out = 0, v = 42;
  Check(p.Read(reinterpret_cast<uintptr_t>(&v), &out) && out == 42, 2);
  Check(!p.Read(uintptr_t{8}, &out), 3);
  Check(!p.Read(reinterpret_cast<uintptr_t>(MapGone()), &out), 4);
  void* none = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  Check(!p.Read(reinterpret_cast<uintptr_t>(none), &out), 5);
  Check(!p.Read(uintptr_t{0xdead000000000000}, &out), 6);  // not canonical: #GP, not #PF
  // A read that starts on a mapped page and runs into an unmapped one fails as a whole.
  char* two = static_cast<char*>(
      mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  munmap(two + 4096, 4096);
  char buf[64];
  Check(!p.ReadBytes(reinterpret_cast<uintptr_t>(two + 4096 - 16), buf, sizeof buf), 7);
  Check(p.ReadBytes(reinterpret_cast<uintptr_t>(two + 4096 - 16), buf, 16), 8);
}

TEST(FaultGuard, GuardedReadsOfBadMemoryFail) {
  if (!GuardedCopySupported()) GTEST_SKIP() << "no guarded copy on this architecture";
  EXPECT_EQ(RunChild([] {
              SafeReader r;
              Check(SafeReader::GuardInstalled(), 1);
              SafeReader::Pass p = r.BeginPass(true);
              Check(p.guarded(), 1);
              BadReads(p);
              Check(r.mode() == "fault guard", 9);
            }),
            "exit 0");
}

TEST(FaultGuard, SigbusOfATruncatedFileFails) {
  if (!GuardedCopySupported()) GTEST_SKIP() << "no guarded copy on this architecture";
  EXPECT_EQ(RunChild([] {
              SafeReader r;
              char path[] = "/tmp/probing-guard-XXXXXX";
              int fd = mkstemp(path);
              unlink(path);
              Check(ftruncate(fd, 8192) == 0, 2);
              auto* m = static_cast<char*>(mmap(nullptr, 8192, PROT_READ, MAP_SHARED, fd, 0));
              Check(ftruncate(fd, 0) == 0, 3);  // the mapping now lies past the file's end
              int64_t out;
              Check(!r.BeginPass(true).Read(reinterpret_cast<uintptr_t>(m), &out), 4);
            }),
            "exit 0");
}

TEST(FaultGuard, ProcessVmReadvWhenSwitchedOff) {
  EXPECT_EQ(RunChild([] {
              SafeReader r;
              SafeReader::Pass p = r.BeginPass(false);
              Check(!p.guarded(), 1);
              BadReads(p);
              Check(r.mode().find("probing.sampler.fault_guard is off") != std::string::npos, 9);
            }),
            "exit 0");
}

// Each scenario ends the same with and without the guard: `setup` (handlers the program
// installs) runs first, then the guard is installed (when "with"), then `action` runs while
// another thread makes guarded reads of bad memory, each in a pass of its own as the sampler does.
void SameWithAndWithout(const std::function<void()>& setup, const std::function<void()>& action,
                        const std::string& expected) {
  std::string without = RunChild([&] {
    setup();
    action();
  });
  std::string with = RunChild([&] {
    setup();
    static SafeReader* r = new SafeReader();
    Check(r->BeginPass(true).guarded(), 8);
    static std::atomic<int> reads{0};
    std::thread([] {
      int64_t out;
      for (;; ++reads) r->BeginPass(true).Read(reinterpret_cast<uintptr_t>(MapGone()), &out);
    }).detach();
    while (reads.load() < 100) usleep(1000);
    action();
  });
  EXPECT_EQ(without, expected);
  EXPECT_EQ(with, without);
}

void Nothing() {}

TEST(FaultGuard, AFaultOfTheProgramTakesTheDefaultAction) {
  SameWithAndWithout(Nothing, Crash, "signal " + std::to_string(SIGSEGV));
}

TEST(FaultGuard, AFaultOfTheProgramReachesTheHandlerInstalledBefore) {
  SameWithAndWithout([] { InstallForeign(SIGSEGV, ExitWith42); }, Crash, "exit 42");
}

TEST(FaultGuard, AFaultOnAnotherThreadReachesTheHandlerInstalledBefore) {
  SameWithAndWithout([] { InstallForeign(SIGSEGV, CountAndExit43); },
                     [] { std::thread(Crash).join(); }, "exit 43");
}

TEST(FaultGuard, AOneShotHandlerLikeFaulthandlerRunsThenTheDefault) {
  SameWithAndWithout(
      [] {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_handler = Report;
        sa.sa_flags = SA_RESETHAND | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, nullptr);
      },
      Crash, "signal " + std::to_string(SIGSEGV));
}

TEST(FaultGuard, ASentSigsegvIsNotTakenForAFault) {
  auto send = [] {
    kill(getpid(), SIGSEGV);
    usleep(100000);
  };
  SameWithAndWithout(Nothing, send, "signal " + std::to_string(SIGSEGV));
  SameWithAndWithout([] { InstallForeign(SIGSEGV, CountAndExit43); }, send, "exit 45");
  SameWithAndWithout([] { signal(SIGSEGV, SIG_IGN); }, send, "exit 0");
}

TEST(FaultGuard, ASigbusOfTheProgramTakesTheDefaultAction) {
  SameWithAndWithout(
      Nothing,
      [] {
        char path[] = "/tmp/probing-guard-XXXXXX";
        int fd = mkstemp(path);
        unlink(path);
        (void)!ftruncate(fd, 4096);
        auto* m = static_cast<volatile char*>(mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0));
        (void)!ftruncate(fd, 0);
        (void)m[0];
      },
      "signal " + std::to_string(SIGBUS));
}

TEST(FaultGuard, AHandlerInstalledAfterOursGetsTheProgramsFaultsAndNoneOfOurs) {
  if (!GuardedCopySupported()) GTEST_SKIP() << "no guarded copy on this architecture";
  EXPECT_EQ(RunChild([] {
              SafeReader r;
              Check(r.BeginPass(true).guarded(), 1);
              InstallForeign(SIGSEGV, CountAndExit43);  // displaces ours
              Check(!SafeReader::GuardInstalled(), 2);
              SafeReader::Pass p = r.BeginPass(true);  // reads fall back to process_vm_readv
              Check(!p.guarded(), 3);
              Check(r.mode().find("installed after") != std::string::npos, 4);
              BadReads(p);
              Check(g_foreign_calls.load() == 0, 5);
              Crash();  // the program's own fault: the foreign handler has it
            }),
            "exit 43");
}

}  // namespace
}  // namespace probing::recorder
