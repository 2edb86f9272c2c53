#include "stack_sampler.h"

#include <Python.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "compat.h"

namespace probing::recorder {
namespace {

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
  for (long off = 0; off < 2048; off += 4) {
    pid_t v;
    if (r.Read(self + static_cast<uintptr_t>(off), &v) && v == tid) return off;
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
  frame_window_ = Window(
      {o.frame_back, o.frame_code, o.frame_lasti, o.frame_instr, o.frame_owner, o.frame_is_entry});
  code_window_ =
      Window({o.code_name, o.code_filename, o.code_firstlineno, o.code_linetable,
              o.code_firsttraceable, static_cast<uint32_t>(offsetof(PyObject, ob_type))});
  frame_buf_.resize(frame_window_);
  buf_.resize(code_window_);
  if (o.ts_native_thread_id == PROBING_NO_OFFSET) pthread_tid_offset_ = FindPthreadTidOffset(r);
}

uint64_t StackSampler::NativeIdFromPthread(uint64_t pthread_id) {
  if (pthread_tid_offset_ < 0 || pthread_id == 0) return 0;
  pid_t tid = 0;
  if (!r_.Read(pthread_id + static_cast<uintptr_t>(pthread_tid_offset_), &tid) || tid <= 0)
    return 0;
  return static_cast<uint64_t>(tid);
}

bool StackSampler::ReadString(uintptr_t obj, std::string* out) {
  uintptr_t type = 0;
  if (!r_.ReadPtr(obj + offsetof(PyObject, ob_type), &type) || type != unicode_type_) return false;
  Py_ssize_t length = 0;
  uint32_t state = 0;
  if (!r_.Read(obj + o_.unicode_length, &length) || !r_.Read(obj + o_.unicode_state, &state))
    return false;
  uint32_t data_off;
  int width;
  if (length < 0 || length > 4096 || !compat::UnicodeLayout(o_, state, &data_off, &width))
    return false;
  std::string raw(static_cast<size_t>(length) * width, '\0');
  if (!raw.empty() && !r_.ReadBytes(obj + data_off, raw.data(), raw.size())) return false;
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

const CodeInfo* StackSampler::Code(uintptr_t addr) {
  // A code object already validated in this pass (threads share code) is not read again.
  auto hit = codes_.find(addr);
  if (hit != codes_.end() && hit->second.checked_pass == pass_) return &hit->second;
  if (!r_.ReadBytes(addr, buf_.data(), buf_.size())) return nullptr;
  if (Field<uintptr_t>(buf_, offsetof(PyObject, ob_type)) != code_type_) return nullptr;
  auto name = Field<uintptr_t>(buf_, o_.code_name);
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
  if (codes_.size() > 100000) codes_.clear();  // bound memory on pathological code churn
  CodeInfo info;
  info.name_ptr = name;
  info.file_ptr = file;
  info.table_ptr = table;
  info.first_line = first;
  info.first_traceable = Field<int>(buf_, o_.code_firsttraceable);
  info.checked_pass = pass_;
  if (!ReadString(name, &info.name)) info.name = "<unknown>";
  if (!ReadString(file, &info.file)) info.file = "<unknown>";
  uintptr_t btype = 0;
  Py_ssize_t size = 0;
  if (r_.ReadPtr(table + offsetof(PyObject, ob_type), &btype) && btype == bytes_type_ &&
      r_.Read(table + o_.bytes_size, &size) && size >= 0 && size < (1 << 20)) {
    info.line_table.resize(static_cast<size_t>(size));
    if (size > 0 &&
        !r_.ReadBytes(table + o_.bytes_data, info.line_table.data(), info.line_table.size()))
      info.line_table.clear();
  }
  auto [pos, _] = codes_.insert_or_assign(addr, std::move(info));
  return &pos->second;
}

uintptr_t StackSampler::GilHolder(uintptr_t interp, bool* locked) {
  *locked = true;
  uintptr_t holder = 0;
  if (o_.tstate_current_addr != 0) {
    // <= 3.11: the runtime's current thread state is the GIL holder (NULL when released).
    if (!r_.ReadPtr(o_.tstate_current_addr, &holder)) return 0;
    *locked = holder != 0;
    return holder;
  }
  uintptr_t gil = 0;
  if (!r_.ReadPtr(interp + o_.interp_gil, &gil) || gil == 0) return 0;
  int32_t lk = 0;
  if (!r_.ReadBytes(gil + o_.gil_locked, &lk, std::min<size_t>(o_.gil_locked_size, sizeof lk)))
    return 0;
  *locked = lk != 0;
  if (!*locked) return 0;
  r_.ReadPtr(gil + o_.gil_last_holder, &holder);
  return holder;
}

bool StackSampler::ReadThread(uintptr_t ts, uintptr_t gil_holder, uint64_t only, ThreadStack* out) {
  out->tstate = ts;
  out->holds_gil = gil_holder != 0 && gil_holder == ts;
  out->truncated = false;
  out->frames.clear();
  r_.Read(ts + o_.ts_thread_id, &out->pthread_id);
  out->native_id = 0;
  if (o_.ts_native_thread_id != PROBING_NO_OFFSET) {
    r_.Read(ts + o_.ts_native_thread_id, &out->native_id);
  } else {
    out->native_id = NativeIdFromPthread(out->pthread_id);
  }
  if (only != 0 && out->native_id != only) return false;

  uintptr_t frame = 0;
  if (o_.ts_cframe != PROBING_NO_OFFSET) {
    uintptr_t cframe = 0;
    if (!r_.ReadPtr(ts + o_.ts_cframe, &cframe)) return false;
    if (cframe != 0 && !r_.ReadPtr(cframe + o_.cframe_current_frame, &frame)) return false;
  } else if (!r_.ReadPtr(ts + o_.ts_frame, &frame)) {
    return false;
  }

  const bool new_frames = compat::HasInterpreterFrames(o_);
  std::vector<char>& fbuf = frame_buf_;  // sized once: no allocation per thread per tick
  for (int depth = 0; frame != 0 && depth < kMaxDepth; ++depth) {
    if (!r_.ReadBytes(frame, fbuf.data(), fbuf.size())) {
      out->truncated = true;
      break;
    }
    uintptr_t code_addr = Field<uintptr_t>(fbuf, o_.frame_code);
    uintptr_t back = Field<uintptr_t>(fbuf, o_.frame_back);
    if (new_frames) {
      auto owner = static_cast<uint32_t>(Field<char>(fbuf, o_.frame_owner));
      if (o_.owned_by_cstack != PROBING_NO_OFFSET && owner == o_.owned_by_cstack) {
        // The shim frame each C-level call of the eval loop pushes first (3.12+): the frame
        // seen just before it is that call's outermost one.
        if (!out->frames.empty()) out->frames.back().entry = true;
        frame = back;
        continue;
      }
      const CodeInfo* code = Code(code_addr);
      if (code == nullptr) {  // 3.13 f_executable may be None; or a torn frame
        frame = back;
        continue;
      }
      auto instr = Field<uintptr_t>(fbuf, o_.frame_instr);
      long lasti = static_cast<long>(instr - (code_addr + o_.code_adaptive)) / 2;
      if (owner != o_.owned_by_generator && lasti < code->first_traceable) {
        frame = back;  // not started yet: CPython hides these incomplete frames too
        continue;
      }
      if (lasti < 0 || lasti > (1 << 24)) lasti = 0;
      int line = compat::LineForAddress(o_, code->line_table, code->first_line,
                                        static_cast<int>(lasti * 2));
      // 3.11 marks entry frames itself; 3.12+ marks them through the shim frames above.
      const bool entry =
          o_.frame_is_entry != PROBING_NO_OFFSET && Field<bool>(fbuf, o_.frame_is_entry);
      out->frames.push_back({code, code_addr, line < 0 ? code->first_line : line, entry});
    } else {
      const CodeInfo* code = Code(code_addr);
      if (code == nullptr) {
        out->truncated = true;
        break;
      }
      int lasti = Field<int>(fbuf, o_.frame_lasti);
      if (lasti < 0) lasti = 0;
      // 3.10 counts f_lasti in code units; 3.8 and 3.9 in bytes.
      int addr = o_.version_hex >= 0x030A0000 ? lasti * 2 : lasti;
      int line = compat::LineForAddress(o_, code->line_table, code->first_line, addr);
      out->frames.push_back({code, code_addr, line < 0 ? code->first_line : line, true});
    }
    frame = back;
  }
  return true;
}

void StackSampler::SampleAll(const std::function<void(const ThreadStack&)>& emit, uint64_t only) {
  PyInterpreterState* interp = PyInterpreterState_Head();  // lives as long as the process
  if (interp == nullptr) return;
  ++pass_;
  auto interp_addr = reinterpret_cast<uintptr_t>(interp);
  bool locked = false;
  uintptr_t holder = GilHolder(interp_addr, &locked);
  auto ts = reinterpret_cast<uintptr_t>(PyInterpreterState_ThreadHead(interp));
  ThreadStack stack;
  for (int n = 0; ts != 0 && n < kMaxThreads; ++n) {
    if (ReadThread(ts, holder, only, &stack)) emit(stack);
    uintptr_t next = 0;
    if (!r_.ReadPtr(ts + o_.ts_next, &next)) break;
    ts = next;
  }
}

}  // namespace probing::recorder
