// Every CPython version difference in how the recorder *interprets* interpreter state (where
// the data lives is in compat_offsets.c): the three line-number table formats, the current
// instruction of a frame, and string storage. Facts from CPython's own documentation of these
// tables (Objects/lnotab_notes.txt for 3.8-3.10, InternalDocs/locations.md for 3.11+).
#pragma once

#include <Python.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "py_offsets.h"

namespace probing::recorder::compat {

inline bool HasInterpreterFrames(const ProbingPyOffsets& o) { return o.version_hex >= 0x030B0000; }

// The source line of the instruction at byte offset `addr` of a code object, from its line
// table `table` and first line. -1 when the table says the instruction has no line.
inline int LineForAddress(const ProbingPyOffsets& o, std::string_view table, int first_line,
                          int addr) {
  const auto* p = reinterpret_cast<const uint8_t*>(table.data());
  const uint8_t* end = p + table.size();
  if (o.version_hex < 0x030A0000) {
    // 3.8, 3.9: co_lnotab, pairs (address increment, signed line increment).
    int line = first_line, at = 0;
    for (; p + 1 < end; p += 2) {
      at += p[0];
      if (at > addr) break;
      line += static_cast<int8_t>(p[1]);
    }
    return line;
  }
  // An instruction without a line of its own (a loop's jump back, which is where a thread waits
  // for the GIL in a loop) is on the line of the last instruction before it that has one: the
  // line it is running. -1 only when no instruction up to it has a line.
  if (o.version_hex < 0x030B0000) {
    // 3.10: co_linetable, pairs (byte length of the range, signed line delta; -128 = no line).
    int line = first_line, start = 0, last = -1;
    for (; p + 1 < end; p += 2) {
      int len = p[0];
      int delta = static_cast<int8_t>(p[1]);
      if (delta != -128) line += delta;
      if (addr >= start && addr < start + len) return delta == -128 ? last : line;
      if (delta != -128 && len > 0) last = line;
      start += len;
    }
    return -1;
  }
  // 3.11+: the location table. Each entry: a first byte 1cccclll (code c, length l+1 code
  // units), then code-specific bytes; line deltas are 6-bit-chunk varints (signed: low bit).
  auto varint = [&](uint32_t* out) {
    if (p >= end) return false;
    uint32_t b = *p++, val = b & 63, shift = 0;
    while (b & 64) {
      if (p >= end || shift > 24) return false;
      b = *p++;
      shift += 6;
      val |= (b & 63) << shift;
    }
    *out = val;
    return true;
  };
  auto svarint = [&](int* out) {
    uint32_t u;
    if (!varint(&u)) return false;
    *out = (u & 1) ? -static_cast<int>(u >> 1) : static_cast<int>(u >> 1);
    return true;
  };
  int line = first_line, start = 0, last = -1;
  while (p < end) {
    uint8_t first = *p++;
    if (!(first & 0x80)) return -1;  // not at an entry boundary: a corrupt or torn table
    int code = (first >> 3) & 15;
    int len = ((first & 7) + 1) * 2;  // bytes (code units are 2 bytes)
    int delta = 0;
    bool has_line = true;
    uint32_t skip;
    if (code == 15) {
      has_line = false;
    } else if (code == 14) {
      if (!svarint(&delta) || !varint(&skip) || !varint(&skip) || !varint(&skip)) return -1;
    } else if (code == 13) {
      if (!svarint(&delta)) return -1;
    } else if (code >= 10) {
      delta = code - 10;
      p += 2;
    } else {
      p += 1;
    }
    line += delta;
    if (addr >= start && addr < start + len) return has_line ? line : last;
    if (has_line) last = line;
    start += len;
  }
  return -1;
}

// One frame as the sampler copied it: PyFrameObject (3.8-3.10) or _PyInterpreterFrame (3.11+).
struct RawFrame {
  uintptr_t addr = 0;
  uintptr_t code = 0;   // f_code / f_executable
  uintptr_t back = 0;   // f_back / previous
  uintptr_t instr = 0;  // 3.11+: prev_instr / instr_ptr
  int lasti = 0;        // 3.8-3.10: f_lasti
  uint8_t owner = 0;    // 3.11+
  bool is_entry = false;  // 3.11
  bool operator==(const RawFrame&) const = default;
};

// Where a frame's fields are inside the part of it the sampler copies: the span from its first
// to its last field, in whole 8-byte words (a frame, and what follows its fields, is at least
// that long). Offsets are relative to the span; PROBING_NO_OFFSET for a field this version lacks.
struct FrameLayout {
  uint32_t begin = 0;  // offset of the span in the frame
  uint32_t size = 0;
  uint32_t code, back, instr, lasti, owner, is_entry;
};

inline FrameLayout MakeFrameLayout(const ProbingPyOffsets& o) {
  const uint32_t fields[] = {o.frame_code, o.frame_back, o.frame_instr, o.frame_lasti,
                             o.frame_owner, o.frame_is_entry};
  uint32_t lo = UINT32_MAX, hi = 0;
  for (uint32_t off : fields)
    if (off != PROBING_NO_OFFSET) {
      lo = off < lo ? off : lo;
      hi = off > hi ? off : hi;
    }
  FrameLayout l;
  l.begin = lo & ~7u;
  l.size = ((hi + 8 - l.begin) + 7) & ~7u;
  auto rel = [&](uint32_t off) { return off == PROBING_NO_OFFSET ? off : off - l.begin; };
  l.code = rel(o.frame_code);
  l.back = rel(o.frame_back);
  l.instr = rel(o.frame_instr);
  l.lasti = rel(o.frame_lasti);
  l.owner = rel(o.frame_owner);
  l.is_entry = rel(o.frame_is_entry);
  return l;
}

// Decodes the copy `span` (layout.size bytes) of the frame at `addr`.
inline void DecodeFrame(const FrameLayout& l, uintptr_t addr, const char* span, RawFrame* f) {
  f->addr = addr;
  std::memcpy(&f->code, span + l.code, sizeof f->code);
  std::memcpy(&f->back, span + l.back, sizeof f->back);
  f->instr = 0;
  f->lasti = 0;
  f->owner = 0;
  f->is_entry = false;
  if (l.instr != PROBING_NO_OFFSET) std::memcpy(&f->instr, span + l.instr, sizeof f->instr);
  if (l.lasti != PROBING_NO_OFFSET) std::memcpy(&f->lasti, span + l.lasti, sizeof f->lasti);
  if (l.owner != PROBING_NO_OFFSET) f->owner = static_cast<uint8_t>(span[l.owner]);
  if (l.is_entry != PROBING_NO_OFFSET) f->is_entry = span[l.is_entry] != 0;
}

// 3.12+: the shim frame each C-level call of the eval loop pushes first (owned by the C stack).
inline bool IsShimFrame(const ProbingPyOffsets& o, const RawFrame& f) {
  return o.owned_by_cstack != PROBING_NO_OFFSET && f.owner == o.owned_by_cstack;
}

// True when `f` can be the outermost frame of a thread: the frame on which the eval loop was
// entered from C (3.11 marks it is_entry; 3.12+ pushes a shim frame first). A chain that ends
// anywhere else was cut short by a frame that changed while it was read. 3.8-3.10 mark nothing.
inline bool CanBeOutermost(const ProbingPyOffsets& o, const RawFrame& f) {
  if (o.version_hex >= 0x030C0000) return IsShimFrame(o, f);
  if (o.version_hex >= 0x030B0000) return f.is_entry;
  return true;
}

// The frame a native backtrace's eval-loop call begins with (3.11: is_entry; 3.12+: the frame
// just inside a shim, marked by the caller; 3.8-3.10: every frame).
inline bool MarksEntry(const ProbingPyOffsets& o, const RawFrame& f) {
  if (o.version_hex >= 0x030C0000) return false;
  if (o.version_hex >= 0x030B0000) return f.is_entry;
  return true;
}

// The byte offset, in the code object's bytecode, of the instruction the frame is executing;
// -1 for a 3.11+ frame that has not started (its first instructions before _co_firsttraceable
// copy free variables; CPython hides such frames too). Generator frames are always started.
inline long InstructionOffset(const ProbingPyOffsets& o, const RawFrame& f, int first_traceable) {
  if (HasInterpreterFrames(o)) {
    long units = static_cast<long>(f.instr - (f.code + o.code_adaptive)) / 2;
    if (f.owner != o.owned_by_generator && units < first_traceable) return -1;
    if (units < 0 || units > (1 << 24)) units = 0;
    return units * 2;
  }
  int lasti = f.lasti < 0 ? 0 : f.lasti;  // -1 before the first instruction
  // 3.10 counts f_lasti in code units; 3.8 and 3.9 in bytes.
  return o.version_hex >= 0x030A0000 ? long{lasti} * 2 : long{lasti};
}

// Unicode objects: compact ASCII data follows PyASCIIObject; other compact strings follow
// PyCompactUnicodeObject with 1, 2 or 4 bytes a character. Returns the byte offset of the data
// and its character width, or false for a non-compact (legacy) string.
inline bool UnicodeLayout(const ProbingPyOffsets& o, uint32_t state, uint32_t* data_offset,
                          int* width) {
  bool compact = (state >> o.state_compact_bit) & 1;
  bool ascii = (state >> o.state_ascii_bit) & 1;
  uint32_t kind = (state >> o.state_kind_shift) & o.state_kind_mask;
  if (!compact || (kind != 1 && kind != 2 && kind != 4)) return false;
  *data_offset = ascii ? o.unicode_ascii_size : o.unicode_compact_size;
  *width = static_cast<int>(kind);
  return true;
}

// Appends code point `c` as UTF-8.
inline void AppendUtf8(std::string* out, uint32_t c) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

inline  // The object a weak reference points to, for an identity check only (never
        // dereferenced): 3.13
    // deprecates PyWeakref_GetObject for PyWeakref_GetRef, which 3.8-3.12 lack.
    const void*
    WeakTarget(PyObject* ref) {
#if PY_VERSION_HEX >= 0x030D0000
  PyObject* obj = nullptr;
  if (PyWeakref_GetRef(ref, &obj) <= 0) return nullptr;
  Py_DECREF(obj);
  return obj;
#else
  return PyWeakref_GetObject(ref);
#endif
}

}  // namespace probing::recorder::compat
