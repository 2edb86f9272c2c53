#include "torch_hooks.h"

#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "compat.h"

namespace probing::recorder {
namespace {

constexpr uint8_t kForward = 0, kBackward = 1, kStep = 2;

int64_t Now(clockid_t clock = CLOCK_MONOTONIC) {  // perf_counter_ns's clock on Linux
  timespec ts;
  clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

PyObject* CallNoArgs(PyObject* f) {
  return PyObject_CallObject(f, nullptr);
}  // 3.8 has no
   // CallNoArgs
struct Row {
  uint64_t seq = 0;
  uint32_t name = 0;
  uint8_t stage = kForward;
  int64_t start = -1, end = -1;
  bool has_memory = false;
  uint64_t allocated = 0, max_allocated = 0, cached = 0;
};

struct ModuleName {
  PyObject* weakref;  // owned
  uint32_t name;
};

// A tensor whose gradient starts some modules' backward rows (it is their output) and ends
// others' (it is their input). Called by autograd when that gradient is ready.
struct SlotObject {
  PyObject_HEAD uint64_t generation;
  PyObject* weakref;  // to the tensor (owned)
  std::vector<uint32_t>* starts;
  std::vector<uint32_t>* ends;
};

// Everything below is touched with the GIL held only.
struct State {
  PythonSink* sink = nullptr;
  // Set once by configure().
  PyObject* resolve = nullptr;          // resolve(module, parent name or None) -> [(module, name)]
  PyObject* inference_end = nullptr;    // called when an outermost call ends in inference
  PyTypeObject* tensor_type = nullptr;  // torch.Tensor
  PyObject* grad_enabled = nullptr;     // torch.is_grad_enabled
  PyObject* queue_callback = nullptr;   // the autograd engine's queue_callback
  PyObject* memory = nullptr;           // () -> (allocated, max_allocated, reserved) bytes
  PyObject* backward_done = nullptr;    // our _backward_done
  bool fast_hooks = false;              // torch 1.x: fill _backward_hooks directly
  // Per step.
  bool traced = false, training = false, cuda = false;
  uint64_t generation = 1;  // bumps at every step end; older stacks and slots are ignored
  uint64_t seq = 0;
  bool backward_queued = false;
  std::vector<Row> rows, backward;
  std::unordered_map<PyObject*, SlotObject*> slots;  // tensor -> slot (owned)
  std::unordered_map<PyObject*, ModuleName> modules;
  std::vector<std::string> names;  // interned: each distinct name once
  std::unordered_map<std::string, uint32_t> name_ids;
  PyTypeObject* slot_type = nullptr;
  PyObject *s_requires_grad, *s_backward_hooks, *s_grad_fn, *s_register_hook_dict, *s_register_hook;
};
State g;

struct ThreadStack {
  uint64_t generation = 0;
  std::vector<int64_t> rows;  // index into g.rows, -1 for a call of an untraced step
};
thread_local ThreadStack t_stack;

std::vector<int64_t>& Stack() {
  if (t_stack.generation != g.generation) {
    t_stack.rows.clear();
    t_stack.generation = g.generation;
  }
  return t_stack.rows;
}

uint32_t Intern(const char* name) {
  auto [it, added] = g.name_ids.try_emplace(name, static_cast<uint32_t>(g.names.size()));
  if (added) g.names.emplace_back(name);
  return it->second;
}

bool LookupName(PyObject* module, uint32_t* out) {
  auto it = g.modules.find(module);
  if (it == g.modules.end()) return false;
  if (compat::WeakTarget(it->second.weakref) != module) {  // freed, address reused
    Py_DECREF(it->second.weakref);
    g.modules.erase(it);
    return false;
  }
  *out = it->second.name;
  return true;
}

// The module's qualified name; asks torch_tracer.py on a miss (named_modules of the outermost).
uint32_t NameOf(PyObject* module, const std::vector<int64_t>& stack) {
  uint32_t name;
  if (LookupName(module, &name)) return name;
  PyObject* parent = Py_None;
  for (auto it = stack.rbegin(); it != stack.rend(); ++it) {
    if (*it >= 0) {
      parent = PyUnicode_FromString(g.names[g.rows[static_cast<size_t>(*it)].name].c_str());
      break;
    }
  }
  if (parent == Py_None) Py_INCREF(parent);
  PyObject* pairs = PyObject_CallFunctionObjArgs(g.resolve, module, parent, nullptr);
  Py_DECREF(parent);
  if (pairs != nullptr && PyList_Check(pairs)) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); ++i) {
      PyObject* p = PyList_GET_ITEM(pairs, i);
      if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 2) continue;
      PyObject* m = PyTuple_GET_ITEM(p, 0);
      const char* n = PyUnicode_AsUTF8(PyTuple_GET_ITEM(p, 1));
      if (n == nullptr) {
        PyErr_Clear();
        continue;
      }
      uint32_t existing;
      if (LookupName(m, &existing)) continue;
      PyObject* wr = PyWeakref_NewRef(m, nullptr);
      if (wr == nullptr) {
        PyErr_Clear();
        continue;
      }
      g.modules[m] = {wr, Intern(n)};
    }
  }
  Py_XDECREF(pairs);
  PyErr_Clear();
  if (LookupName(module, &name)) return name;
  return Intern(Py_TYPE(module)->tp_name);
}

bool IsTensor(PyObject* o) {
  return g.tensor_type != nullptr && PyObject_TypeCheck(o, g.tensor_type);
}

PyObject* FirstTensor(PyObject* v) {  // borrowed or null
  if (IsTensor(v)) return v;
  if (PyTuple_Check(v) || PyList_Check(v)) {
    PyObject* seq = v;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PySequence_Fast_GET_ITEM(seq, i);
      if (IsTensor(item)) return item;
    }
  }
  return nullptr;
}

bool RequiresGrad(PyObject* t) {
  PyObject* r = PyObject_GetAttr(t, g.s_requires_grad);
  if (r == nullptr) {
    PyErr_Clear();
    return false;
  }
  bool yes = r == Py_True;
  Py_DECREF(r);
  return yes;
}

// The slot of `tensor` for this step, creating it and hooking it into autograd on first use.
SlotObject* SlotFor(PyObject* tensor) {
  auto it = g.slots.find(tensor);
  if (it != g.slots.end() && compat::WeakTarget(it->second->weakref) == tensor) return it->second;
  auto* slot = PyObject_New(SlotObject, g.slot_type);
  if (slot == nullptr) return nullptr;
  slot->generation = g.generation;
  slot->weakref = PyWeakref_NewRef(tensor, nullptr);
  slot->starts = new std::vector<uint32_t>();
  slot->ends = new std::vector<uint32_t>();
  if (slot->weakref == nullptr) {
    Py_DECREF(slot);
    return nullptr;
  }
  bool hooked = false;
  if (g.fast_hooks) {
    // What Tensor.register_hook does on torch 1.x, without its handle and checks.
    PyObject* hooks = PyObject_GetAttr(tensor, g.s_backward_hooks);
    if (hooks == Py_None) {
      Py_DECREF(hooks);
      hooks = PyDict_New();
      PyObject* gf = nullptr;
      if (hooks != nullptr && PyObject_SetAttr(tensor, g.s_backward_hooks, hooks) == 0 &&
          (gf = PyObject_GetAttr(tensor, g.s_grad_fn)) != nullptr) {
        if (gf != Py_None) {
          PyObject* r = PyObject_CallMethodObjArgs(gf, g.s_register_hook_dict, tensor, nullptr);
          Py_XDECREF(r);
        }
      }
      Py_XDECREF(gf);
    }
    hooked = hooks != nullptr && !PyErr_Occurred() && PyDict_Check(hooks) &&
             PyDict_SetItem(hooks, reinterpret_cast<PyObject*>(slot),
                            reinterpret_cast<PyObject*>(slot)) == 0;
    Py_XDECREF(hooks);
    PyErr_Clear();
  }
  if (!hooked) {
    PyObject* r = PyObject_CallMethodObjArgs(tensor, g.s_register_hook, slot, nullptr);
    if (r == nullptr) {
      PyErr_Clear();
      Py_DECREF(slot);
      return nullptr;
    }
    Py_DECREF(r);
  }
  if (it != g.slots.end()) {
    Py_DECREF(it->second);
    it->second = slot;
  } else {
    g.slots.emplace(tensor, slot);
  }
  return slot;
}

void ResetStep() {
  g.rows.clear();
  g.backward.clear();
  for (auto& [t, s] : g.slots) Py_DECREF(s);
  g.slots.clear();
  g.seq = 0;
  g.backward_queued = false;
  ++g.generation;
}

// ---- Python-facing functions -------------------------------------------------------------

void SlotDealloc(PyObject* self) {
  auto* s = reinterpret_cast<SlotObject*>(self);
  PyTypeObject* type = Py_TYPE(self);
  Py_XDECREF(s->weakref);
  delete s->starts;
  delete s->ends;
  PyObject_Free(self);
  Py_DECREF(type);  // instances of a heap type hold a reference to it
}

// Autograd calls this with the gradient once it is ready. Returns None: the gradient is kept.
PyObject* SlotCall(PyObject* self, PyObject*, PyObject*) {
  auto* s = reinterpret_cast<SlotObject*>(self);
  if (s->generation != g.generation) Py_RETURN_NONE;
  const int64_t t = Now();
  if (!g.backward_queued && g.queue_callback != nullptr) {
    g.backward_queued = true;  // end of the backward pass: rows without an end get it
    PyObject* r = PyObject_CallFunctionObjArgs(g.queue_callback, g.backward_done, nullptr);
    Py_XDECREF(r);
    PyErr_Clear();
  }
  for (uint32_t i : *s->starts) {
    Row& row = g.backward[i];
    if (row.start < 0) {
      row.start = t;
      row.seq = g.seq++;
    }
  }
  for (uint32_t i : *s->ends)
    if (g.backward[i].end < 0) g.backward[i].end = t;
  Py_RETURN_NONE;
}

PyObject* BackwardDone(PyObject*, PyObject*) {
  const int64_t t = Now();
  g.backward_queued = false;
  for (Row& row : g.backward)
    if (row.start >= 0 && row.end < 0) row.end = t;
  Py_RETURN_NONE;
}

void ReadMemory(Row* row) {
  PyObject* r = CallNoArgs(g.memory);
  unsigned long long a, m, c;
  if (r != nullptr && PyArg_ParseTuple(r, "KKK", &a, &m, &c)) {
    row->has_memory = true;
    row->allocated = a;
    row->max_allocated = m;
    row->cached = c;
  }
  Py_XDECREF(r);
  PyErr_Clear();
}

PyObject* Pre(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1) Py_RETURN_NONE;
  std::vector<int64_t>& stack = Stack();
  if (!g.traced) {
    stack.push_back(-1);
    Py_RETURN_NONE;
  }
  Row row;
  row.seq = g.seq++;
  row.name = NameOf(args[0], stack);
  row.stage = kForward;
  row.start = Now();
  g.rows.push_back(row);
  stack.push_back(static_cast<int64_t>(g.rows.size() - 1));
  Py_RETURN_NONE;
}

void BackwardRow(uint32_t name, PyObject* inputs, PyObject* output) {
  PyObject* out = FirstTensor(output);
  if (out == nullptr || !RequiresGrad(out)) return;
  PyObject* enabled = CallNoArgs(g.grad_enabled);
  bool grad = enabled == Py_True;
  Py_XDECREF(enabled);
  PyErr_Clear();
  if (!grad) return;
  SlotObject* s = SlotFor(out);
  if (s == nullptr) return;
  Row row;
  row.name = name;
  row.stage = kBackward;
  g.backward.push_back(row);
  const auto index = static_cast<uint32_t>(g.backward.size() - 1);
  s->starts->push_back(index);
  PyObject* in = FirstTensor(inputs);
  if (in != nullptr && RequiresGrad(in))
    if (SlotObject* e = SlotFor(in)) e->ends->push_back(index);
}

PyObject* Post(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 3) Py_RETURN_NONE;
  std::vector<int64_t>& stack = Stack();
  if (stack.empty()) Py_RETURN_NONE;  // hooks came on during this call
  const int64_t index = stack.back();
  stack.pop_back();
  if (index >= 0 && static_cast<size_t>(index) < g.rows.size()) {
    Row& row = g.rows[static_cast<size_t>(index)];
    row.end = Now();
    if (g.cuda && g.memory != nullptr) ReadMemory(&row);
    BackwardRow(g.rows[static_cast<size_t>(index)].name, args[1], args[2]);
  }
  if (stack.empty() && !g.training && g.inference_end != nullptr) {
    PyObject* r = CallNoArgs(g.inference_end);  // one outermost call: one step
    Py_XDECREF(r);
    PyErr_Clear();
  }
  Py_RETURN_NONE;
}

// configure(resolve, inference_end, Tensor, is_grad_enabled, queue_callback, memory, fast_hooks)
PyObject* Configure(PyObject* self, PyObject* args) {
  PyObject *resolve, *inference_end, *tensor, *grad_enabled, *queue, *memory;
  int fast;
  if (!PyArg_ParseTuple(args, "OOO!OOOp", &resolve, &inference_end, &PyType_Type, &tensor,
                        &grad_enabled, &queue, &memory, &fast))
    return nullptr;
  auto keep = [](PyObject** slot, PyObject* v) {
    Py_XDECREF(*slot);
    Py_INCREF(v);
    *slot = v;
  };
  keep(&g.resolve, resolve);
  keep(&g.inference_end, inference_end);
  keep(reinterpret_cast<PyObject**>(&g.tensor_type), tensor);
  keep(&g.grad_enabled, grad_enabled);
  keep(&g.queue_callback, queue);
  keep(&g.memory, memory);
  g.fast_hooks = fast != 0;
  PyObject* done = PyObject_GetAttrString(self, "_backward_done");
  if (done == nullptr) return nullptr;
  Py_XDECREF(g.backward_done);
  g.backward_done = done;
  Py_RETURN_NONE;
}

// begin(traced, training, cuda): what the coming step does.
PyObject* Begin(PyObject*, PyObject* args) {
  int traced, training, cuda;
  if (!PyArg_ParseTuple(args, "ppp", &traced, &training, &cuda)) return nullptr;
  g.traced = traced != 0;
  g.training = training != 0;
  g.cuda = cuda != 0;
  Py_RETURN_NONE;
}

// end_step(step, optimizer name or None, start_ns, end_ns) -> number of rows written.
PyObject* EndStep(PyObject*, PyObject* args) {
  unsigned long long step;
  PyObject* optimizer;
  long long start, end;
  if (!PyArg_ParseTuple(args, "KOLL", &step, &optimizer, &start, &end)) return nullptr;
  std::vector<TorchRow> out;
  if (g.traced) {
    if (optimizer != Py_None) {
      const char* n = PyUnicode_AsUTF8(optimizer);
      if (n == nullptr) return nullptr;
      Row row;
      row.seq = g.seq++;
      row.name = Intern(n);
      row.stage = kStep;
      row.start = start;
      row.end = end;
      g.rows.push_back(row);
    }
    const int64_t offset = Now(CLOCK_REALTIME) - Now();
    auto add = [&](const Row& r) {
      if (r.start < 0 || r.end < r.start) return;
      TorchRow t;
      t.seq = r.seq;
      t.module = g.names[r.name];
      t.stage = r.stage;
      t.start_ns = r.start + offset;
      t.duration_ns = static_cast<uint64_t>(r.end - r.start);
      if (r.has_memory) {
        t.allocated = r.allocated;
        t.max_allocated = r.max_allocated;
        t.cached = r.cached;
      }
      out.push_back(std::move(t));
    };
    for (const Row& r : g.rows) add(r);
    for (const Row& r : g.backward) add(r);
  }
  ResetStep();
  if (g.sink != nullptr && !out.empty()) {
    const auto tid = static_cast<uint64_t>(syscall(SYS_gettid));
    Py_BEGIN_ALLOW_THREADS;
    g.sink->TorchRows(tid, step, out);
    Py_END_ALLOW_THREADS;
  }
  return PyLong_FromSize_t(out.size());
}

PyMethodDef kHookMethods[] = {
    {"pre", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Pre)), METH_FASTCALL,
     "global module forward pre-hook"},
    {"post", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Post)), METH_FASTCALL,
     "global module forward hook"},
    {"_backward_done", BackwardDone, METH_NOARGS, "end of a backward pass"},
    {"configure", Configure, METH_VARARGS, "the tracer's callables, once"},
    {"begin", Begin, METH_VARARGS, "(traced, training, cuda) for the coming step"},
    {"end_step", EndStep, METH_VARARGS, "writes the step's rows; starts the next"},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot kSlotSlots[] = {{Py_tp_dealloc, reinterpret_cast<void*>(SlotDealloc)},
                            {Py_tp_call, reinterpret_cast<void*>(SlotCall)},
                            {0, nullptr}};
PyType_Spec kSlotSpec = {"_probing_recorder.GradSlot", sizeof(SlotObject), 0, Py_TPFLAGS_DEFAULT,
                         kSlotSlots};

}  // namespace

void SetTorchSink(PythonSink* sink) { g.sink = sink; }

bool AddTorchHooks(PyObject* module) {
  if (g.slot_type == nullptr) {
    g.slot_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&kSlotSpec));
    if (g.slot_type == nullptr) return false;
    g.s_requires_grad = PyUnicode_InternFromString("requires_grad");
    g.s_backward_hooks = PyUnicode_InternFromString("_backward_hooks");
    g.s_grad_fn = PyUnicode_InternFromString("grad_fn");
    g.s_register_hook_dict = PyUnicode_InternFromString("_register_hook_dict");
    g.s_register_hook = PyUnicode_InternFromString("register_hook");
  }
  return PyModule_AddFunctions(module, kHookMethods) == 0;
}

}  // namespace probing::recorder
