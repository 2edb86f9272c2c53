// Reads every Python thread's stack without the GIL and without stopping any thread. Reads go
// through SafeReader, so a frame freed under us gives a failed read, never a crash.
//
// A thread runs on while its stack is read, so a stack read frame by frame can mix two moments
// (torn). Each read is checked, and a stack is reported consistent only when the checks show it
// was the thread's real stack at one moment:
//  1. the innermost two frames are read between two reads of the thread's current frame that
//     agree (they were the top of the stack then);
//  2. the chain below them is followed to its end with no frame seen twice, and ends on a frame
//     the eval loop was entered on (3.11+);
//  3. afterwards, the innermost frame is still on the thread's stack, unchanged: nothing below
//     it can have been popped and pushed again meanwhile (a stack only changes at its top). Had
//     it returned, its caller ran on and may have called again at the same address between
//     the two reads of step 1: what was read of the two can mix two moments;
//  4. every frame below it, suspended in a call, reads again as it did, instruction included.
// A read that fails a check is retried (SampleOptions::attempts); after the last attempt the
// stack is reported with consistent = false and the frames as last read.
//
//   StackSampler s(*ProbingGetPyOffsets(), reader);
//   s.SampleAll([](const ThreadStack& t) { if (t.consistent) ... }, {});
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "compat.h"
#include "py_offsets.h"
#include "safe_read.h"

namespace probing::recorder {

struct CodeInfo {
  std::string name;  // qualified name (co_qualname) on 3.11+, co_name on 3.8-3.10
  std::string file;
  int first_line = 0;
  int first_traceable = 0;  // 3.11+: instructions before it belong to a frame not yet started
  std::string line_table;
  uint64_t checked_pass = 0;  // the sampler pass that last validated this entry
  // What validated this entry: the code object's fields as last read.
  uintptr_t name_ptr = 0, file_ptr = 0, table_ptr = 0;
  // The lines of the last few instruction offsets looked up (a line table is scanned from its
  // start, and a thread usually sits on a few instructions).
  struct LineCache {
    long offset = -1;
    int line = 0;
  };
  LineCache lines[4];
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
  bool truncated = false;   // deeper than StackSampler::kMaxDepth: the outermost frames are left out
  bool consistent = true;   // false: it changed while read on every attempt; frames as last read
  int attempts = 0;         // reads it took (1 = the first was consistent)
  bool same_as_last = false;  // the same frames (and lines) as this thread's previous read
  std::vector<FrameRef> frames;  // innermost first
};

struct SampleOptions {
  int attempts = 2;   // reads of one thread's stack before it is reported inconsistent
  uint64_t only = 0;  // the thread with this OS id only; 0 = every thread
  bool fault_guard = true;  // allow plain loads behind the fault guard (SafeReader::BeginPass)
  // When set and the thread holding the GIL is one of these (the recorder's own), the GIL is
  // looked at again every millisecond, for at most `gil_wait_ms`, until another thread or none
  // holds it: right after the recorder starts, its own threads take the GIL for a while, and
  // the program's holder is the one worth showing.
  std::function<bool(uint64_t native_id)> ours;
  // True while one of the recorder's threads waits for the GIL or holds it: a GIL that nobody
  // holds then is being handed over between it and the program, and is looked at again too.
  std::function<bool()> ours_busy;
  int gil_wait_ms = 0;
};

class StackSampler {
 public:
  static constexpr int kMaxDepth = 2048;
  static constexpr int kMaxThreads = 4096;

  StackSampler(const ProbingPyOffsets& offsets, const SafeReader& reader);

  // Samples every thread of the main interpreter (or only options.only); `emit` is called once
  // per thread, consistent or not.
  void SampleAll(const std::function<void(const ThreadStack&)>& emit, const SampleOptions& options);

  size_t cached_code_objects() const { return codes_.size(); }
  // How the last pass read memory (SafeReader::mode()).
  std::string read_mode() const { return r_.mode(); }

 private:
  enum class Read { kOk, kChanged, kGone };
  struct ThreadHead {
    uintptr_t next = 0, interp = 0;
    uint64_t pthread_id = 0, native_id = 0;
  };

  bool ReadHead(const SafeReader::Pass& p, uintptr_t ts, ThreadHead* out);
  bool CurrentFrame(const SafeReader::Pass& p, uintptr_t ts, uintptr_t* frame);
  bool ReadFrame(const SafeReader::Pass& p, uintptr_t addr, compat::RawFrame* f);
  Read ReadStack(const SafeReader::Pass& p, uintptr_t ts, bool last, ThreadStack* out);
  Read Snapshot(const SafeReader::Pass& p, uintptr_t ts);
  bool Decode(const SafeReader::Pass& p, ThreadStack* out);
  bool ReadString(const SafeReader::Pass& p, uintptr_t obj, std::string* out);
  CodeInfo* Code(const SafeReader::Pass& p, uintptr_t addr);
  int Line(CodeInfo* code, long offset);
  uintptr_t GilHolder(const SafeReader::Pass& p, uintptr_t interp);
  uint64_t NativeIdFromPthread(const SafeReader::Pass& p, uint64_t pthread_id);

  const ProbingPyOffsets& o_;
  const SafeReader& r_;
  uintptr_t code_type_;
  uintptr_t unicode_type_;
  uintptr_t bytes_type_;
  compat::FrameLayout frame_;  // the part of a frame read
  size_t code_window_;
  size_t head_window_;
  long pthread_tid_offset_ = -1;  // offset of the kernel tid inside glibc's struct pthread
  uint64_t pass_ = 0;
  std::unordered_map<uintptr_t, CodeInfo> codes_;
  uint64_t codes_epoch_ = 0;  // moves when an entry of codes_ is replaced or dropped
  // Each thread's last consistent read: a stack that reads the same again (a thread that waits,
  // or runs below an unchanged stack) is not decoded again.
  struct LastRead {
    std::vector<compat::RawFrame> raw;
    std::vector<FrameRef> frames;
    uint64_t epoch = 0;
    uint64_t pass = 0;
  };
  std::unordered_map<uintptr_t, LastRead> last_;  // by thread state
  std::vector<char> buf_;  // one code object's or thread state's first bytes
  // The frames of the stack being read, sized once: no allocation per read.
  std::vector<compat::RawFrame> raw_;
  alignas(8) char frame_buf_[256];
  std::vector<uintptr_t> recheck_addrs_;  // step 4 of a read: where each frame is read again
  std::vector<char> recheck_;
  int depth_ = 0;
  bool truncated_ = false;
};

}  // namespace probing::recorder
