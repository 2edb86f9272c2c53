// Reads every Python thread's stack without the GIL and without stopping any thread. Every
// read of interpreter memory goes through SafeReader, so a frame freed under us gives a short
// (truncated) stack, never a crash. Code objects are cached by address and re-validated on use.
//
//   StackSampler s(*ProbingGetPyOffsets(), reader);
//   s.SampleAll([](const ThreadStack& t) { ... });
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "py_offsets.h"
#include "safe_read.h"

namespace probing::recorder {

struct CodeInfo {
  std::string name;
  std::string file;
  int first_line = 0;
  int first_traceable = 0;  // 3.11+: instructions before it belong to a frame not yet started
  std::string line_table;
  uint64_t checked_pass = 0;  // the sampler pass that last validated this entry
  // What validated this entry: the code object's fields as last read.
  uintptr_t name_ptr = 0, file_ptr = 0, table_ptr = 0;
};

struct FrameRef {
  const CodeInfo* code = nullptr;  // owned by the sampler's cache; valid until the next pass
  uintptr_t code_addr = 0;
  int line = 0;
  // The outermost Python frame of one C-level call of the eval loop: a native backtrace shows
  // this frame and the ones inside it in place of that eval-loop frame.
  bool entry = true;
};

struct ThreadStack {
  uintptr_t tstate = 0;
  uint64_t pthread_id = 0;
  uint64_t native_id = 0;  // 0 when unknown
  bool holds_gil = false;
  bool truncated = false;        // a read failed part-way: the stack is cut short
  std::vector<FrameRef> frames;  // innermost first
};

class StackSampler {
 public:
  static constexpr int kMaxDepth = 512;
  static constexpr int kMaxThreads = 4096;

  StackSampler(const ProbingPyOffsets& offsets, const SafeReader& reader);

  // Samples every thread of the main interpreter (or only the one with OS thread id `only`).
  // `emit` is called once per thread.
  void SampleAll(const std::function<void(const ThreadStack&)>& emit, uint64_t only = 0);

  size_t cached_code_objects() const { return codes_.size(); }

 private:
  bool ReadString(uintptr_t obj, std::string* out);
  const CodeInfo* Code(uintptr_t addr);
  bool ReadThread(uintptr_t tstate, uintptr_t gil_holder, uint64_t only, ThreadStack* out);
  uintptr_t GilHolder(uintptr_t interp, bool* gil_locked);
  uint64_t NativeIdFromPthread(uint64_t pthread_id);

  const ProbingPyOffsets& o_;
  const SafeReader& r_;
  uintptr_t code_type_;
  uintptr_t unicode_type_;
  uintptr_t bytes_type_;
  size_t frame_window_;
  size_t code_window_;
  long pthread_tid_offset_ = -1;  // offset of the kernel tid inside glibc's struct pthread
  uint64_t pass_ = 0;
  std::unordered_map<uintptr_t, CodeInfo> codes_;
  std::vector<char> buf_;        // one code object's header
  std::vector<char> frame_buf_;  // one frame
};

}  // namespace probing::recorder
