// Collective tracing in C, and the rank's progress. torch_tracer.py wraps torch.distributed's
// collective and point-to-point functions with `_probing_recorder.collective_call(...)`: each
// call is timed around the original in C and described (input tensors' bytes, dtype and
// elements, process group and its sequence number, peer, async) and queued to the sink as one
// row of python.collectives. Collectives issued from C++ (DDP's gradient all-reduce) are counted
// from the group's sequence number (`collectives_count`, at each step end and once a second).
//
// Progress (the step, each group's last sequence number and when it moved, the call a thread
// is in now) is kept here too, readable without the GIL: GET /progress and the hang watch use it.
//
//   AddCollectiveHooks(module);  // collective_call, collectives_configure, collectives_count
//   Progress p = GetProgress();  // any thread, no GIL
#pragma once

#include <Python.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "py_module.h"

namespace probing::recorder {

// Adds collective_call, collectives_configure and collectives_count to `module`. False with a
// Python error set.
bool AddCollectiveHooks(PyObject* module);
// Where the rows go.
void SetCollectivesSink(PythonSink* sink);

struct GroupProgress {
  uint64_t seq = 0;        // its last sequence number seen (a call made, or counted)
  int64_t changed_ns = 0;  // Unix time it last moved
};

struct Progress {
  uint64_t step = 0;
  int64_t step_changed_ns = 0;  // Unix time the step last moved (0: never seen)
  std::map<std::string, GroupProgress> groups;
  struct Current {
    std::string op, group;
    uint64_t seq = 0;       // the sequence number it will take (the group's + 1)
    int64_t since_ns = 0;   // Unix time it entered
    uint64_t thread = 0;
  };
  std::optional<Current> current;  // a Python collective call under way
  int64_t collectives = 0;         // calls seen (python and counted)
};

// A copy of the progress now (any thread, no GIL).
Progress GetProgress();
// The sampler thread tells the step it sees (from the tracer's state), once a tick.
void ObserveStep(uint64_t step, int64_t now_ns);

}  // namespace probing::recorder
