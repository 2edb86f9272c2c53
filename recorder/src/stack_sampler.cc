#include "stack_sampler.h"

#include <Python.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace probing::recorder {
namespace {

using compat::RawFrame;

// Tries at reading the innermost two frames between two equal reads of the current frame. A
// thread that calls small functions in a loop changes its top frame every few tens of
// nanoseconds; a try takes a few.
constexpr int kBracketTries = 16;

template <typename T>
T Field(const std::vector<char>& buf, uint32_t off) {
  T v{};
  if (off != PROBING_NO_OFFSET && off + sizeof(T) <= buf.size())
    std::memcpy(&v, buf.data() + off, sizeof v);
  return v;
}

size_t Window(std::initializer_list<uint32_t> offsets) {
  uint32_t m = 0;
  for (uint32_t o : offsets)
    if (o != PROBING_NO_OFFSET) m = std::max(m, o);
  return m + 8;
}

// glibc keeps the kernel tid inside struct pthread, which pthread_t points to. Its offset is
// found by looking for our own tid in our own struct (the fields before it are pointers and
// flags, which do not look like a tid); -1 when not found: native ids are then unknown on
// Python <= 3.10, which has no native_thread_id.
long FindPthreadTidOffset(const SafeReader& r) {
  pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  auto self = reinterpret_cast<uintptr_t>(pthread_self());
  SafeReader::Pass p = r.BeginPass(true);
  for (long off = 0; off < 2048; off += 4) {
    pid_t v;
    if (p.Read(self + static_cast<uintptr_t>(off), &v) && v == tid) return off;
  }
  return -1;
}

}  // namespace

StackSampler::StackSampler(const ProbingPyOffsets& o, const SafeReader& r)
    : o_(o),
      r_(r),
      code_type_(reinterpret_cast<uintptr_t>(&PyCode_Type)),
      unicode_type_(reinterpret_cast<uintptr_t>(&PyUnicode_Type)),
      bytes_type_(reinterpret_cast<uintptr_t>(&PyBytes_Type)) {
  frame_ = compat::MakeFrameLayout(o);
  code_window_ = Window({o.code_name, o.code_qualname, o.code_filename, o.code_firstlineno,
                         o.code_linetable, o.code_firsttraceable,
                         static_cast<uint32_t>(offsetof(PyObject, ob_type))});
  head_window_ = Window({o.ts_next, o.ts_interp, o.ts_thread_id, o.ts_native_thread_id,
                         o.ts_frame, o.ts_cframe});
  buf_.resize(std::max(code_window_, head_window_));
  if (frame_.size > sizeof frame_buf_) frame_.size = 0;  // never: frames' fields are near their start
  raw_.resize(kMaxDepth);
  if (o.ts_native_thread_id == PROBING_NO_OFFSET) pthread_tid_offset_ = FindPthreadTidOffset(r);
}

uint64_t StackSampler::NativeIdFromPthread(const SafeReader::Pass& p, uint64_t pthread_id) {
  if (pthread_tid_offset_ < 0 || pthread_id == 0) return 0;
  pid_t tid = 0;
  if (!p.Read(pthread_id + static_cast<uintptr_t>(pthread_tid_offset_), &tid) || tid <= 0)
    return 0;
  return static_cast<uint64_t>(tid);
}

bool StackSampler::ReadString(const SafeReader::Pass& p, uintptr_t obj, std::string* out) {
  uintptr_t type = 0;
  if (!p.ReadPtr(obj + offsetof(PyObject, ob_type), &type) || type != unicode_type_) return false;
  Py_ssize_t length = 0;
  uint32_t state = 0;
  if (!p.Read(obj + o_.unicode_length, &length) || !p.Read(obj + o_.unicode_state, &state))
    return false;
  uint32_t data_off;
  int width;
  if (length < 0 || length > 4096 || !compat::UnicodeLayout(o_, state, &data_off, &width))
    return false;
  std::string raw(static_cast<size_t>(length) * width, '\0');
  if (!raw.empty() && !p.ReadBytes(obj + data_off, raw.data(), raw.size())) return false;
  out->clear();
  if (width == 1) {
    for (unsigned char c : raw) compat::AppendUtf8(out, c);
  } else {
    for (size_t i = 0; i < raw.size(); i += width) {
      uint32_t c = 0;
      std::memcpy(&c, raw.data() + i, width);
      compat::AppendUtf8(out, c);
    }
  }
  return true;
}

CodeInfo* StackSampler::Code(const SafeReader::Pass& p, uintptr_t addr) {
  // A code object already validated in this pass (threads share code) is not read again.
  auto hit = codes_.find(addr);
  if (hit != codes_.end() && hit->second.checked_pass == pass_) return &hit->second;
  buf_.resize(code_window_);
  if (!p.ReadBytes(addr, buf_.data(), buf_.size())) return nullptr;
  if (Field<uintptr_t>(buf_, offsetof(PyObject, ob_type)) != code_type_) return nullptr;
  // 3.11+ code objects carry their qualified name (Class.method); older ones only the name.
  auto name = Field<uintptr_t>(
      buf_, o_.code_qualname != PROBING_NO_OFFSET ? o_.code_qualname : o_.code_name);
  auto file = Field<uintptr_t>(buf_, o_.code_filename);
  auto table = Field<uintptr_t>(buf_, o_.code_linetable);
  int first = Field<int>(buf_, o_.code_firstlineno);
  auto it = hit;
  if (it != codes_.end() && it->second.name_ptr == name && it->second.file_ptr == file &&
      it->second.table_ptr == table && it->second.first_line == first) {
    it->second.checked_pass = pass_;
    return &it->second;
  }
  // New, or the address now holds another code object: read it afresh.
  if (it != codes_.end()) ++codes_epoch_;  // the entry is replaced: FrameRefs to it change
  if (codes_.size() > 100000) {  // bound memory on pathological code churn
    codes_.clear();
    ++codes_epoch_;
  }
  CodeInfo info;
  info.name_ptr = name;
  info.file_ptr = file;
  info.table_ptr = table;
  info.first_line = first;
  info.first_traceable = Field<int>(buf_, o_.code_firsttraceable);
  info.checked_pass = pass_;
  if (!ReadString(p, name, &info.name)) info.name = "<unknown>";
  if (!ReadString(p, file, &info.file)) info.file = "<unknown>";
  uintptr_t btype = 0;
  Py_ssize_t size = 0;
  if (p.ReadPtr(table + offsetof(PyObject, ob_type), &btype) && btype == bytes_type_ &&
      p.Read(table + o_.bytes_size, &size) && size >= 0 && size < (1 << 20)) {
    info.line_table.resize(static_cast<size_t>(size));
    if (size > 0 &&
        !p.ReadBytes(table + o_.bytes_data, info.line_table.data(), info.line_table.size()))
      info.line_table.clear();
  }
  auto [pos, _] = codes_.insert_or_assign(addr, std::move(info));
  return &pos->second;
}

int StackSampler::Line(CodeInfo* code, long offset) {
  for (const CodeInfo::LineCache& c : code->lines)
    if (c.offset == offset) return c.line;
  int line = compat::LineForAddress(o_, code->line_table, code->first_line, static_cast<int>(offset));
  if (line < 0) line = code->first_line;
  // Round robin over the slots: the oldest lookup goes.
  std::move(std::begin(code->lines) + 1, std::end(code->lines), std::begin(code->lines));
  code->lines[3] = {offset, line};
  return line;
}

uintptr_t StackSampler::GilHolder(const SafeReader::Pass& p, uintptr_t interp) {
  uintptr_t holder = 0;
  if (o_.tstate_current_addr != 0) {
    // <= 3.11: the runtime's current thread state is the GIL holder (NULL when released).
    if (!p.ReadPtr(o_.tstate_current_addr, &holder)) return 0;
    return holder;
  }
  uintptr_t gil = 0;
  if (!p.ReadPtr(interp + o_.interp_gil, &gil) || gil == 0) return 0;
  int32_t lk = 0;
  if (!p.ReadBytes(gil + o_.gil_locked, &lk, std::min<size_t>(o_.gil_locked_size, sizeof lk)))
    return 0;
  if (lk == 0) return 0;
  if (!p.ReadPtr(gil + o_.gil_last_holder, &holder)) return 0;
  return holder;
}

bool StackSampler::ReadHead(const SafeReader::Pass& p, uintptr_t ts, ThreadHead* out) {
  buf_.resize(head_window_);
  if (!p.ReadBytes(ts, buf_.data(), buf_.size())) return false;
  out->next = Field<uintptr_t>(buf_, o_.ts_next);
  out->interp = Field<uintptr_t>(buf_, o_.ts_interp);
  out->pthread_id = Field<uint64_t>(buf_, o_.ts_thread_id);
  out->native_id = o_.ts_native_thread_id != PROBING_NO_OFFSET
                       ? Field<uint64_t>(buf_, o_.ts_native_thread_id)
                       : NativeIdFromPthread(p, out->pthread_id);
  return true;
}

bool StackSampler::CurrentFrame(const SafeReader::Pass& p, uintptr_t ts, uintptr_t* frame) {
  if (o_.ts_cframe != PROBING_NO_OFFSET) {  // 3.11, 3.12: through the C frame of the eval call
    uintptr_t cframe = 0;
    if (!p.ReadPtr(ts + o_.ts_cframe, &cframe)) return false;
    if (cframe == 0) {
      *frame = 0;
      return true;
    }
    return p.ReadPtr(cframe + o_.cframe_current_frame, frame);
  }
  return p.ReadPtr(ts + o_.ts_frame, frame);
}

bool StackSampler::ReadFrame(const SafeReader::Pass& p, uintptr_t addr, RawFrame* f) {
  if (frame_.size == 0 || !p.ReadBytes(addr + frame_.begin, frame_buf_, frame_.size)) return false;
  compat::DecodeFrame(frame_, addr, frame_buf_, f);
  return true;
}

// The checks of the header (stack_sampler.h), in order. Leaves the frames in raw_[0, depth_).
StackSampler::Read StackSampler::Snapshot(const SafeReader::Pass& p, uintptr_t ts) {
  depth_ = 0;
  truncated_ = false;
  // 1. The top two frames, between two equal reads of the current frame.
  bool bracketed = false;
  for (int tries = 0; tries < kBracketTries && !bracketed; ++tries) {
    uintptr_t before = 0, after = 0;
    if (!CurrentFrame(p, ts, &before)) return Read::kGone;
    if (before == 0) return Read::kOk;  // no Python frames
    int n = 0;
    if (!ReadFrame(p, before, &raw_[0])) continue;
    n = 1;
    if (raw_[0].back != 0) {
      if (raw_[0].back == before || !ReadFrame(p, raw_[0].back, &raw_[1])) continue;
      n = 2;
    }
    if (!CurrentFrame(p, ts, &after)) return Read::kGone;
    if (before == after) {
      bracketed = true;
      depth_ = n;
    }
  }
  if (!bracketed) return Read::kChanged;

  // 2. The chain below, to its end, no frame twice (Brent's cycle check: each frame against
  // the one at the last power-of-two depth), ending where the eval loop was entered.
  if (depth_ == 2 && raw_[1].addr == raw_[0].addr) return Read::kChanged;
  uintptr_t anchor = raw_[depth_ - 1].addr;
  int next_anchor = 2 * depth_;
  for (uintptr_t next = raw_[depth_ - 1].back; next != 0; next = raw_[depth_ - 1].back) {
    if (depth_ == kMaxDepth) {
      truncated_ = true;
      break;
    }
    if (next == anchor || !ReadFrame(p, next, &raw_[depth_])) return Read::kChanged;
    if (++depth_ == next_anchor) {
      anchor = next;
      next_anchor *= 2;
    }
  }
  if (!truncated_ && !compat::CanBeOutermost(o_, raw_[depth_ - 1])) return Read::kChanged;

  // 3. One of the top two frames still on the thread's stack (found from its current frame).
  uintptr_t at = 0;
  if (!CurrentFrame(p, ts, &at)) return Read::kGone;
  int live = -1;
  for (int hops = 0; at != 0 && hops <= kMaxDepth; ++hops) {
    if (at == raw_[0].addr) {
      live = 0;
      break;
    }
    if (depth_ > 1 && at == raw_[1].addr) {
      live = 1;
      break;
    }
    if (!p.ReadPtr(at + o_.frame_back, &at)) return Read::kChanged;
  }
  // The innermost frame returned meanwhile: what was read of it (and of its caller, which ran
  // on) may mix two moments (a frame at a reused address). Read again.
  if (live != 0) return Read::kChanged;

  // 4. Read again: the innermost frame holds the same code and caller (not popped and replaced);
  // every frame below it, suspended in a call, holds exactly what it held, its instruction too
  // (a caller read while it ran between two calls at the same address is caught here).
  const int n = depth_ - live;
  recheck_addrs_.resize(static_cast<size_t>(n));
  recheck_.resize(static_cast<size_t>(n) * frame_.size);
  for (int i = 0; i < n; ++i) recheck_addrs_[i] = raw_[live + i].addr + frame_.begin;
  if (!p.ReadMany(recheck_addrs_.data(), static_cast<size_t>(n), frame_.size, recheck_.data()))
    return Read::kChanged;
  RawFrame again;
  for (int i = live; i < depth_; ++i) {
    compat::DecodeFrame(frame_, raw_[i].addr, recheck_.data() + (i - live) * frame_.size, &again);
    if (i == 0 ? (again.code != raw_[i].code || again.back != raw_[i].back) : !(again == raw_[i]))
      return Read::kChanged;
  }
  return Read::kOk;
}

// Turns raw_ into frames with code and line. False when a frame's code object cannot be read.
bool StackSampler::Decode(const SafeReader::Pass& p, ThreadStack* out) {
  out->frames.clear();
  for (int i = 0; i < depth_; ++i) {
    const RawFrame& f = raw_[i];
    if (compat::IsShimFrame(o_, f)) {
      // The frame seen just before a shim is the outermost of that C-level eval call.
      if (!out->frames.empty()) out->frames.back().entry = true;
      continue;
    }
    CodeInfo* code = Code(p, f.code);
    if (code == nullptr) {
      uintptr_t type = 0;
      // 3.13's f_executable may be another object than a code object: not a Python frame.
      if (compat::HasInterpreterFrames(o_) && p.ReadPtr(f.code + offsetof(PyObject, ob_type), &type))
        continue;
      return false;
    }
    long offset = compat::InstructionOffset(o_, f, code->first_traceable);
    if (offset < 0) continue;  // not started yet: CPython hides these frames too
    int line = Line(code, offset);
    out->frames.push_back({code, f.code, line, compat::MarksEntry(o_, f)});
  }
  return true;
}

StackSampler::Read StackSampler::ReadStack(const SafeReader::Pass& p, uintptr_t ts, bool last,
                                           ThreadStack* out) {
  Read r = Snapshot(p, ts);
  out->truncated = truncated_;
  out->same_as_last = false;
  if (r == Read::kChanged && last) Decode(p, out);  // the frames as last read, for a report
  if (r != Read::kOk) return r;
  LastRead& prev = last_[ts];
  if (prev.epoch == codes_epoch_ && prev.raw.size() == static_cast<size_t>(depth_) &&
      std::equal(prev.raw.begin(), prev.raw.end(), raw_.begin())) {
    // Same frames at the same instructions as last time. The innermost code object is checked
    // again (the one most likely to be new at an old address); the rest are held by live frames.
    const CodeInfo* top = nullptr;
    for (int i = 0; i < depth_ && top == nullptr; ++i)
      if (!compat::IsShimFrame(o_, raw_[i])) top = Code(p, raw_[i].code);
    if (prev.frames.empty() || (top == prev.frames.front().code && prev.epoch == codes_epoch_)) {
      out->frames = prev.frames;
      out->same_as_last = true;
      prev.pass = pass_;
      return r;
    }
  }
  if (!Decode(p, out)) return Read::kChanged;
  prev.raw.assign(raw_.begin(), raw_.begin() + depth_);
  prev.frames = out->frames;
  prev.epoch = codes_epoch_;
  prev.pass = pass_;
  return r;
}

void StackSampler::SampleAll(const std::function<void(const ThreadStack&)>& emit,
                             const SampleOptions& options) {
  PyInterpreterState* interp = PyInterpreterState_Head();  // lives as long as the process
  if (interp == nullptr) return;
  ++pass_;
  SafeReader::Pass p = r_.BeginPass(options.fault_guard);
  auto interp_addr = reinterpret_cast<uintptr_t>(interp);
  uintptr_t holder = GilHolder(p, interp_addr);
  bool saw_ours = false;  // then a free GIL must stay free a moment to be believed
  for (int waited = 0, free_reads = 0; options.ours && waited < options.gil_wait_ms; ++waited) {
    if (holder != 0) {
      ThreadHead h;
      if (!ReadHead(p, holder, &h) || !options.ours(h.native_id)) break;
      saw_ours = true;
      free_reads = 0;
    } else if (options.ours_busy && options.ours_busy()) {
      saw_ours = true;
      free_reads = 0;
    } else if (!saw_ours || ++free_reads >= 3) {
      break;
    }
    usleep(1000);
    p = r_.BeginPass(options.fault_guard);
    holder = GilHolder(p, interp_addr);
  }
  auto ts = reinterpret_cast<uintptr_t>(PyInterpreterState_ThreadHead(interp));
  ThreadStack stack;
  for (int n = 0; ts != 0 && n < kMaxThreads; ++n) {
    ThreadHead h;
    // A thread state that is not (or no longer) this interpreter's: the list changed under us.
    if (!ReadHead(p, ts, &h) || h.interp != interp_addr) break;
    stack.tstate = ts;
    stack.pthread_id = h.pthread_id;
    stack.native_id = h.native_id;
    stack.holds_gil = holder != 0 && holder == ts;
    if (options.only == 0 || h.native_id == options.only) {
      Read r = Read::kChanged;
      const int attempts = std::max(1, options.attempts);
      for (int a = 1; a <= attempts && r == Read::kChanged; ++a) {
        r = ReadStack(p, ts, a == attempts, &stack);
        stack.attempts = a;
      }
      stack.consistent = r == Read::kOk;
      if (r != Read::kGone) emit(stack);  // kGone: the thread ended while we read it
    }
    ts = h.next;
  }
  if ((pass_ & 127) == 0) {  // forget the threads gone
    for (auto it = last_.begin(); it != last_.end();)
      it = pass_ - it->second.pass > 128 ? last_.erase(it) : std::next(it);
  }
}

}  // namespace probing::recorder
