// Native (C/C++) stacks of the other threads of this process, for `backtrace?native=1`.
//
// A thread is stopped by a signal whose handler only copies the interrupted registers and then
// waits, with a deadline, until it is let go. While it waits, the server thread copies its stack
// (fault-safe, at most 512 KiB from the stack pointer up) and runs `while_stopped`; after it is
// let go, the copy is unwound with libunwind and unwind tables read from the ELF files on disk,
// so nothing here takes the loader lock or touches memory that could fault, and a thread that
// holds the GIL, the loader lock or malloc's lock is read all the same. A thread that blocks the
// signal, or does not take it within 100 ms, is reported as such; the deadline means it is never
// held longer than 250 ms.
//
//   std::string why;
//   NativeUnwinder* u = NativeUnwinder::Get(reader, &why);
//   std::vector<NativeFrame> frames;
//   if (u && u->Capture(tid, &frames, [] { /* read its Python stack */ }, &why)) ...
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "probing/procfs/elf_symbols.h"
#include "safe_read.h"

namespace probing::recorder {

struct NativeFrame {
  uintptr_t ip = 0;
  std::string symbol;    // demangled; empty when the ELF files have no symbol covering it
  uintptr_t offset = 0;  // from the symbol's start, or from the module's start without one
  std::string module;    // the mapped file, empty for anonymous memory
};

class NativeUnwinder {
 public:
  static constexpr int kMaxFrames = 256;
  static constexpr size_t kMaxStackCopy = 512 * 1024;  // of a stopped thread's stack

  // The one unwinder of this process, installing its signal handler on first use. Null with
  // `why` when the signal is already used by someone else or libunwind cannot be set up.
  static NativeUnwinder* Get(const SafeReader& reader, std::string* why);

  // Stops thread `tid`, unwinds it, runs `while_stopped` (the thread is still stopped), lets it
  // go and then names the frames. False with `why` when the thread could not be read. Callers
  // serialize (one capture at a time). `stopped_ns`: how long the thread was held.
  bool Capture(pid_t tid, std::vector<NativeFrame>* out, const std::function<void()>& while_stopped,
               int64_t* stopped_ns, std::string* why);

  // True for the interpreter's eval loop, whose place the Python frames take in a merged stack.
  static bool IsEvalFrame(const NativeFrame& f);

 private:
  explicit NativeUnwinder(const SafeReader& reader) : reader_(reader) {}
  bool Init(std::string* why);
  void Unwind(std::vector<uintptr_t>* ips);
  size_t CopyStack(uintptr_t sp);  // into stack_; bytes copied
  void Symbolize(const std::vector<uintptr_t>& ips, std::vector<NativeFrame>* out);

  const SafeReader& reader_;
  void* address_space_ = nullptr;  // unw_addr_space_t
  void* upt_ = nullptr;            // struct UPT_info*: ELF unwind tables of this pid
  procfs::ElfSymbols symbols_;
  std::vector<char> stack_;
};

}  // namespace probing::recorder
