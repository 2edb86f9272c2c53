// The recorder's face inside the interpreter: the built-in module `_probing_recorder`, through
// which the PyTorch tracer (torch_tracer.py, embedded at build time) hands over its rows once per
// traced step and reads the settings. Everything here runs with the GIL held.
//
//   InstallPython(&sink, &why);   // once: the module, then the tracer (now or at `import torch`)
//   PollPython();                 // about once a second: installs the tracer once torch is there
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace probing::recorder {

struct TorchRow {
  uint64_t seq = 0;
  std::string_view module;  // the tracer's interned name: lives as long as the process
  uint8_t stage = 0;        // format::TorchStage
  int64_t start_ns = 0;     // since the Unix epoch
  uint64_t duration_ns = 0;
  std::optional<uint64_t> allocated, max_allocated, cached;  // bytes
};

struct CollectiveRow {
  int64_t ts_ns = 0;   // entered, Unix time
  int64_t end_ns = 0;  // returned; 0 unknown (async, counted)
  uint64_t thread = 0;
  std::string group, op, dtype;
  uint64_t seq = 0, bytes = 0, numel = 0, step = 0;
  int64_t peer = -1;
  bool async_op = false, counted = false;
};

// One step as the tracer saw it (python.torch_steps): every step, traced or not.
struct TorchStepRow {
  uint64_t thread = 0, step = 0;
  int64_t start_ns = 0;  // the previous step's end, Unix time
  uint64_t duration_ns = 0;
  uint8_t decision = 0;     // format::kStepTraced, kStepSampledOut or kStepOverBudget
  uint64_t cost_ns = 0;     // the tracer's own cost in this step
  uint32_t budget_ppm = 0;  // probing.torch.budget in parts per million; 0 off
};

struct VariableRow {
  int64_t ts_ns = 0;
  std::string func, name, value;
};

class PythonSink {
 public:
  virtual ~PythonSink() = default;
  // Takes a traced step's rows; called on the training thread with the GIL held, so it only
  // queues them.
  virtual void TorchRows(uint64_t thread, uint64_t step, std::vector<TorchRow>&& rows) = 0;
  // One step's row; every step, so it only queues it (GIL held).
  virtual void TorchStep(const TorchStepRow& row) = 0;
  virtual void VariableRows(uint64_t thread, uint64_t step,
                            const std::vector<VariableRow>& rows) = 0;
  // Collective calls; like TorchRows, called with the GIL held, so it only queues them.
  virtual void CollectiveRows(std::vector<CollectiveRow>&& rows) = 0;
  // torch.distributed says this process is `rank` of `world_size` (once it is initialized).
  // Returns the process's place as the recorder now knows it, for registration in the job's
  // store: run id, local rank, node, host, pid, TCP port (0: none).
  struct Place {
    std::string run_id, node, host;
    int64_t local_rank = -1, pid = 0, tcp_port = 0;
  };
  virtual Place JobIdentity(int64_t rank, int64_t world_size) = 0;
  // The job's members as read from its store (JSON text, docs/protocol.md GET /cluster).
  virtual void JobMembers(std::string json) = 0;
};

// Runs Python source of ours in a fresh namespace holding `__builtins__` and `globals` (borrowed
// values). The namespace (a new reference), or null with `why` = "Type: message" of the error.
struct PyGlobal {
  const char* name;
  void* value;  // PyObject*, borrowed
};
void* RunPythonSource(const char* source, std::initializer_list<PyGlobal> globals,
                      std::string* why);

// Creates `_probing_recorder` (once per process) and starts the tracer. False with `why`.
bool InstallPython(PythonSink* sink, std::string* why);
// Installs the tracer once torch is fully imported (the import hook does it sooner).
void PollPython();
// The tracer's state as of its last step end (no GIL needed); all false before it installs.
struct TorchState {
  bool installed = false;
  uint64_t step = 0;
  bool traced = false;
  bool hooks = false;
};
TorchState GetTorchState();

}  // namespace probing::recorder
