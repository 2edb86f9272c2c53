/* Computes ProbingPyOffsets from the CPython headers this build is compiled against. One of the
 * two places (with compat.h) where CPython versions differ; every PY_VERSION_HEX test of the
 * recorder's data layout is here. Compiled with Py_BUILD_CORE for the internal headers. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <frameobject.h>
#include <stddef.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030B0000
#include <internal/pycore_frame.h>
#endif
#if PY_VERSION_HEX >= 0x030C0000
#include <internal/pycore_gil.h>
#include <internal/pycore_interp.h>
#elif PY_VERSION_HEX >= 0x03090000
#include <internal/pycore_runtime.h>
#else
#include <internal/pycore_pystate.h>
#endif

#include "py_offsets.h"

static void StateBits(ProbingPyOffsets* o) {
  /* Find the bit positions of the unicode state bitfield by setting each field. */
  PyASCIIObject a;
  uint32_t raw;
  memset(&a, 0, sizeof a);
  a.state.kind = 7;
  memcpy(&raw, (char*)&a + offsetof(PyASCIIObject, state), sizeof raw);
  o->state_kind_mask = 7;
  o->state_kind_shift = (uint32_t)__builtin_ctz(raw);
  memset(&a, 0, sizeof a);
  a.state.compact = 1;
  memcpy(&raw, (char*)&a + offsetof(PyASCIIObject, state), sizeof raw);
  o->state_compact_bit = (uint32_t)__builtin_ctz(raw);
  memset(&a, 0, sizeof a);
  a.state.ascii = 1;
  memcpy(&raw, (char*)&a + offsetof(PyASCIIObject, state), sizeof raw);
  o->state_ascii_bit = (uint32_t)__builtin_ctz(raw);
}

static ProbingPyOffsets Compute(void) {
  ProbingPyOffsets o;
  memset(&o, 0xff, sizeof o); /* every field PROBING_NO_OFFSET until set */
  o.version_hex = PY_VERSION_HEX;
  o.ts_next = offsetof(PyThreadState, next);
  o.ts_interp = offsetof(PyThreadState, interp);
  o.ts_thread_id = offsetof(PyThreadState, thread_id);
#if PY_VERSION_HEX >= 0x030D0000
  o.ts_native_thread_id = offsetof(PyThreadState, native_thread_id);
  o.ts_frame = offsetof(PyThreadState, current_frame);
#elif PY_VERSION_HEX >= 0x030B0000
  o.ts_native_thread_id = offsetof(PyThreadState, native_thread_id);
  o.ts_cframe = offsetof(PyThreadState, cframe);
  o.cframe_current_frame = offsetof(_PyCFrame, current_frame);
#else
  o.ts_frame = offsetof(PyThreadState, frame);
#endif

#if PY_VERSION_HEX >= 0x030B0000
  o.frame_back = offsetof(_PyInterpreterFrame, previous);
  o.frame_owner = offsetof(_PyInterpreterFrame, owner);
  o.owned_by_generator = FRAME_OWNED_BY_GENERATOR;
#if PY_VERSION_HEX >= 0x030D0000
  o.frame_code = offsetof(_PyInterpreterFrame, f_executable);
  o.frame_instr = offsetof(_PyInterpreterFrame, instr_ptr);
#else
  o.frame_code = offsetof(_PyInterpreterFrame, f_code);
  o.frame_instr = offsetof(_PyInterpreterFrame, prev_instr);
#endif
#if PY_VERSION_HEX >= 0x030C0000
  o.owned_by_cstack = FRAME_OWNED_BY_CSTACK;
#else
  o.frame_is_entry = offsetof(_PyInterpreterFrame, is_entry);
#endif
  o.code_adaptive = offsetof(PyCodeObject, co_code_adaptive);
  o.code_qualname = offsetof(PyCodeObject, co_qualname);
  o.code_firsttraceable = offsetof(PyCodeObject, _co_firsttraceable);
#else
  o.frame_back = offsetof(PyFrameObject, f_back);
  o.frame_code = offsetof(PyFrameObject, f_code);
  o.frame_lasti = offsetof(PyFrameObject, f_lasti);
#endif

  o.code_name = offsetof(PyCodeObject, co_name);
  o.code_filename = offsetof(PyCodeObject, co_filename);
  o.code_firstlineno = offsetof(PyCodeObject, co_firstlineno);
#if PY_VERSION_HEX >= 0x030A0000
  o.code_linetable = offsetof(PyCodeObject, co_linetable);
#else
  o.code_linetable = offsetof(PyCodeObject, co_lnotab);
#endif

  o.unicode_length = offsetof(PyASCIIObject, length);
  o.unicode_state = offsetof(PyASCIIObject, state);
  o.unicode_ascii_size = sizeof(PyASCIIObject);
  o.unicode_compact_size = sizeof(PyCompactUnicodeObject);
  StateBits(&o);

  o.bytes_size = offsetof(PyVarObject, ob_size);
  o.bytes_data = offsetof(PyBytesObject, ob_sval);

#if PY_VERSION_HEX >= 0x030C0000
  o.tstate_current_addr = 0;
  o.interp_gil = offsetof(PyInterpreterState, ceval.gil);
  o.gil_last_holder = offsetof(struct _gil_runtime_state, last_holder);
  o.gil_locked = offsetof(struct _gil_runtime_state, locked);
  o.gil_locked_size = sizeof(((struct _gil_runtime_state*)0)->locked);
#else
  o.tstate_current_addr = (uintptr_t)&_PyRuntime.gilstate.tstate_current;
#endif
  return o;
}

const ProbingPyOffsets* ProbingGetPyOffsets(void) {
  static ProbingPyOffsets offsets;
  static int ready = 0;
  if (!ready) { /* first call is made before any sampler thread starts */
    offsets = Compute();
    ready = 1;
  }
  return &offsets;
}
