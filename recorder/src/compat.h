// Every CPython version difference in how the recorder *interprets* interpreter state (where
// the data lives is in compat_offsets.c): the three line-number table formats, the current
// instruction of a frame, and string storage. Facts from CPython's own documentation of these
// tables (Objects/lnotab_notes.txt for 3.8-3.10, InternalDocs/locations.md for 3.11+).
#pragma once

#include <Python.h>

#include <cstdint>
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
  if (o.version_hex < 0x030B0000) {
    // 3.10: co_linetable, pairs (byte length of the range, signed line delta; -128 = no line).
    int line = first_line, start = 0;
    for (; p + 1 < end; p += 2) {
      int len = p[0];
      int delta = static_cast<int8_t>(p[1]);
      if (delta != -128) line += delta;
      if (addr >= start && addr < start + len) return delta == -128 ? -1 : line;
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
  int line = first_line, start = 0;
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
    if (addr >= start && addr < start + len) return has_line ? line : -1;
    start += len;
  }
  return -1;
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
