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

// The overhead budget's recent figures, for `info` (any thread).
struct TorchBudget {
  double fraction = 0;  // probing.torch.budget; 0: off
  // Sums over about the last 100 steps (each older step weighs 1% less).
  double cost_ns = 0, step_ns = 0, traced = 0, steps = 0;
  double traced_cost_ns = 0;    // what tracing a step adds, smoothed (the budget's charge)
  double untraced_cost_ns = 0;  // an untraced step's (the bookkeeping every step pays)
  uint64_t left_out = 0;        // steps the budget left out, in all
  uint64_t stride = 1;          // traced steps are multiples of it (of the picked steps)
  bool calibrated = false;
  double wrap_ns = 0, hooks_ns = 0, grad_ns = 0;  // calibrate()'s prices
};
TorchBudget GetTorchBudget();

}  // namespace probing::recorder
