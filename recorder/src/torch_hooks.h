// The hot path of PyTorch tracing in C: what sees module calls (a replacement for
// nn.Module.__call__, or global module forward hooks), the tensor hooks that time backward, and
// the rows of the step being traced. torch_tracer.py keeps the rest (settings, optimizer
// wrapping, names, variables) and calls in here; every function runs with the GIL held. A traced
// module call costs one C call (two with hooks) and, for backward, one tensor-hook registration
// and one C call from autograd (bench/torch_overhead.py).
//
//   AddTorchHooks(module);    // _probing_recorder.module_call, .pre, .post, .configure, .begin,
//                             // .end_step
//   SetTorchSink(recorder);   // where end_step hands a step's rows
#pragma once

#include <Python.h>

#include "py_module.h"

namespace probing::recorder {

// Adds the hook functions to `module` (_probing_recorder): module_call, pre, post, configure,
// begin, end_step. False with a Python error set.
bool AddTorchHooks(PyObject* module);

// Where end_step sends a step's rows.
void SetTorchSink(PythonSink* sink);

}  // namespace probing::recorder
