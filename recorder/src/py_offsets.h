/* Where the recorder finds things inside CPython's structures, for the Python version this
 * build of the recorder was compiled against. Filled in by compat_offsets.c, which the compiler
 * computes from that version's own headers (offsetof), so no offset is typed by hand.
 * Plain C: compat_offsets.c includes it. kNone (UINT32_MAX) marks a field this version lacks. */
#ifndef PROBING_RECORDER_PY_OFFSETS_H_
#define PROBING_RECORDER_PY_OFFSETS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PROBING_NO_OFFSET UINT32_MAX

typedef struct ProbingPyOffsets {
  uint32_t version_hex; /* PY_VERSION_HEX of the headers */

  /* PyThreadState */
  uint32_t ts_next;
  uint32_t ts_interp;
  uint32_t ts_thread_id;        /* pthread_t */
  uint32_t ts_native_thread_id; /* 3.11+ */
  uint32_t ts_frame;            /* <=3.10 frame (PyFrameObject*), 3.13 current_frame */
  uint32_t ts_cframe;           /* 3.11, 3.12: _PyCFrame* */
  uint32_t cframe_current_frame;

  /* Frames: PyFrameObject (<=3.10) or _PyInterpreterFrame (3.11+) */
  uint32_t frame_back;  /* f_back / previous */
  uint32_t frame_code;  /* f_code / f_executable */
  uint32_t frame_lasti; /* <=3.10: int f_lasti */
  uint32_t frame_instr; /* 3.11, 3.12: prev_instr; 3.13: instr_ptr */
  uint32_t frame_owner; /* 3.11+: char owner */
  uint32_t owned_by_generator;
  uint32_t owned_by_cstack; /* 3.12+, else PROBING_NO_OFFSET */
  uint32_t frame_is_entry;  /* 3.11 only: bool is_entry (first frame of a C-level eval call) */

  /* PyCodeObject */
  uint32_t code_name;
  uint32_t code_qualname; /* 3.11+: co_qualname */
  uint32_t code_filename;
  uint32_t code_firstlineno;
  uint32_t code_linetable;      /* co_lnotab (<=3.9) or co_linetable */
  uint32_t code_adaptive;       /* 3.11+: co_code_adaptive */
  uint32_t code_firsttraceable; /* 3.11+: _co_firsttraceable */

  /* PyUnicodeObject */
  uint32_t unicode_length;
  uint32_t unicode_state;
  uint32_t unicode_ascii_size;   /* sizeof(PyASCIIObject): compact ASCII data follows */
  uint32_t unicode_compact_size; /* sizeof(PyCompactUnicodeObject) */
  uint32_t state_kind_shift, state_kind_mask;
  uint32_t state_compact_bit, state_ascii_bit;

  /* PyBytesObject */
  uint32_t bytes_size;
  uint32_t bytes_data;

  /* The GIL holder: <=3.11 through the runtime's tstate_current; 3.12+ the interpreter's GIL */
  uintptr_t tstate_current_addr; /* 0 when not used */
  uint32_t interp_gil;           /* 3.12+: offset of ceval.gil in PyInterpreterState */
  uint32_t gil_last_holder;
  uint32_t gil_locked;
  uint32_t gil_locked_size; /* bytes of `locked` */
} ProbingPyOffsets;

/* The offsets of the Python version this recorder was built for. */
const ProbingPyOffsets* ProbingGetPyOffsets(void);

#ifdef __cplusplus
}
#endif

#endif /* PROBING_RECORDER_PY_OFFSETS_H_ */
