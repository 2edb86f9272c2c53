#include "torch_hooks.h"

#include <structmember.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "compat.h"
#include "probing/format/events.h"
#include "py_ref.h"

#if PY_VERSION_HEX < 0x03090000  // vectorcall was provisional in 3.8
#define PyObject_Vectorcall _PyObject_Vectorcall
#define Py_TPFLAGS_HAVE_VECTORCALL _Py_TPFLAGS_HAVE_VECTORCALL
#endif

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

// Kept in State::modules, which lives as long as the process: its references are given back by
// hand when an entry goes (LookupName), never at exit, when the interpreter may already be gone
// (a PyRef here would decref at static destruction).
struct ModuleName {
  PyObject* weakref;  // owned
  uint32_t name;
};

// A tensor whose gradient starts some modules' backward rows (it is their output) and ends
// others' (it is their input). Called by autograd when that gradient is ready.
struct SlotObject {
  PyObject_HEAD uint64_t generation;
  PyObject* weakref;  // to the tensor (owned)
  int32_t edges;      // its first edge in State::edges, -1 for none
};

// One backward row a slot starts or ends; a slot's edges are a list through `next`.
struct Edge {
  uint32_t row;  // index into State::backward
  int32_t next;
  bool start;
};

// The last `size` values, and their median.
class Recent {
 public:
  explicit Recent(size_t size) : size_(size) {}
  void Add(double v) {
    if (values_.size() < size_)
      values_.push_back(v);
    else
      values_[next_] = v;
    next_ = (next_ + 1) % size_;
  }
  size_t count() const { return values_.size(); }
  double Median() const { return At(values_.size() / 2); }
  // The lower quartile: of 9 values, the third smallest.
  double LowerQuartile() const { return values_.empty() ? 0 : At((values_.size() - 1) / 4); }
  void Clear() { values_.clear(), next_ = 0; }

 private:
  // The value of rank `k` (0: the smallest).
  double At(size_t k) const {
    if (values_.empty()) return 0;
    std::vector<double> v = values_;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
  }
  size_t size_, next_ = 0;
  std::vector<double> values_;
};

constexpr uint64_t kNone = UINT64_MAX;  // no step index

// Everything below is touched with the GIL held only. The references it holds are taken by hand
// and kept for the life of the process (the configured callables, the interned names, the two
// types) or until the step ends (slots): never given back at exit, when the interpreter may
// already be finalized.
struct State {
  PythonSink* sink = nullptr;
  // Set once by configure().
  PyObject* resolve = nullptr;          // resolve(module, parent name or None) -> [(module, name)]
  PyObject* inference_end = nullptr;    // (end ns or 0) when an outermost call ends in inference
  PyTypeObject* tensor_type = nullptr;  // torch.Tensor
  PyObject* grad_enabled = nullptr;     // torch.is_grad_enabled
  PyObject* queue_callback = nullptr;   // the autograd engine's queue_callback
  PyObject* memory = nullptr;           // () -> (allocated, max_allocated, reserved) bytes
  PyObject* backward_done = nullptr;    // our _backward_done
  bool fast_hooks = false;              // torch 1.x: fill _backward_hooks directly
  // Per step.
  bool traced = false, training = false, cuda = false;
  bool hooked = false;      // the module hooks or wrapper are on: calls are seen
  bool wrap_on = false;     // ...and it is the wrapper: an older wrapper still in the chain after
                            // a switch to hooks passes calls through (else both would see them)
  uint64_t generation = 1;  // bumps at every step end; older stacks and slots are ignored
  uint64_t seq = 0;
  bool backward_queued = false;
  std::vector<Row> rows, backward;
  std::vector<Edge> edges;
  std::unordered_map<PyObject*, SlotObject*> slots;  // tensor -> slot (owned; ResetStep)
  std::unordered_map<PyObject*, ModuleName> modules;
  std::deque<std::string> names;  // interned, never removed: each distinct name once
  std::unordered_map<std::string, uint32_t> name_ids;
  PyTypeObject* slot_type = nullptr;
  PyTypeObject* call_type = nullptr;
  // probing.torch.budget (docs/torch.md#overhead-budget): what the tracer's own code costs in
  // each step, and the balance that lets the coming step be traced or not.
  struct {
    double fraction = 0;       // of step time; 0: no budget
    int64_t timed = 0;         // ns of our own code timed in the current step
    uint64_t wrap_calls = 0;   // module calls through the wrapper (traced or passed through)
    uint64_t hook_calls = 0;   // module calls through the global hooks
    uint64_t grad_calls = 0;   // autograd's calls into our tensor hooks and end-of-backward
    int64_t last_end = 0;      // Now() when the previous step ended; 0 before the first
    int64_t closed_at = 0;     // Now() when the previous step's accounting was closed
    bool decided = false;      // decide() ran and begin() has not yet
    double balance = 0;        // ns of cost the budget has saved up; negative: owed
    double traced_cost = 0;    // a traced step's cost, smoothed (ns)
    double untraced_cost = 0;  // an untraced step's cost: the median of the last ones (ns)
    // The last untraced steps' costs and durations (not counting a step right after a traced
    // one), and what the last traced steps added, seen from outside: its duration and the next
    // step's beyond twice the untraced ones' median (ns; Decide).
    Recent untraced_costs{31}, untraced_durations{31}, traced_extra{9}, traced_inside{9};
    double after_traced = -1;  // the previous step's duration, when it was traced; -2 after
                               // the first traced step
    uint8_t decision = format::kStepSampledOut;  // of the current step (format::kStep*)
    uint64_t since_left_out = UINT64_MAX;  // steps since the budget last left one out
    bool enabled = false;                  // tracing was on for the current step
    // Steps are traced on a stride of a power of two (of the steps the sample rate picks), so
    // that ranks, each deciding alone, trace the same steps: strides nest, and every rank
    // traces the multiples of the largest. Set at each traced step from what the balance took
    // to fill up after the one before; doubled when a step on it finds the balance owed.
    uint64_t stride = 1;
    uint64_t last_traced = kNone;     // the picked index of the last traced step
    uint64_t full_from = kNone;       // the picked index from which the balance was full
    uint64_t decided_next = kNone;    // the step the last decide() was for
    double rate = -1;                 // the sample rate it was for
    uint64_t shown_stride = 1;        // in g_budget_info
    uint64_t traced_steps = 0;        // traced steps closed since the tracer started
    // What calls cost that cannot be timed from inside them (calibrate()).
    double wrap_ns = 0, hooks_ns = 0, grad_ns = 0;
  } budget;
  PyObject *s_requires_grad, *s_backward_hooks, *s_grad_fn, *s_register_hook_dict, *s_register_hook;
};
State g;

// For `info` (read without the GIL by the control server): the budget's recent figures.
std::mutex g_budget_mu;
TorchBudget g_budget_info;  // under g_budget_mu

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
    Py_DECREF(it->second.weakref);  // the map's reference
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
  PyRef parent;  // the innermost traced call's name; none (None to resolve) when outermost
  for (auto it = stack.rbegin(); it != stack.rend(); ++it) {
    if (*it >= 0) {
      parent = PyRef(PyUnicode_FromString(g.names[g.rows[static_cast<size_t>(*it)].name].c_str()));
      if (!parent) {  // no memory: named by its type, as when resolve fails
        PyErr_Clear();
        return Intern(Py_TYPE(module)->tp_name);
      }
      break;
    }
  }
  PyRef pairs(PyObject_CallFunctionObjArgs(g.resolve, module, parent ? parent.get() : Py_None,
                                           nullptr));
  if (pairs && PyList_Check(pairs.get())) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs.get()); ++i) {
      PyObject* p = PyList_GET_ITEM(pairs.get(), i);
      if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 2) continue;
      PyObject* m = PyTuple_GET_ITEM(p, 0);
      const char* n = PyUnicode_AsUTF8(PyTuple_GET_ITEM(p, 1));
      if (n == nullptr) {
        PyErr_Clear();
        continue;
      }
      uint32_t existing;
      if (LookupName(m, &existing)) continue;
      PyRef wr(PyWeakref_NewRef(m, nullptr));
      if (!wr) {
        PyErr_Clear();
        continue;
      }
      g.modules[m] = {wr.get(), Intern(n)};
      wr.release();  // to the map
    }
  }
  pairs = PyRef();
  PyErr_Clear();
  if (LookupName(module, &name)) return name;
  return Intern(Py_TYPE(module)->tp_name);
}

bool IsTensor(PyObject* o) {
  return g.tensor_type != nullptr && PyObject_TypeCheck(o, g.tensor_type);
}

PyObject* FirstTensor(PyObject* const* items, Py_ssize_t n) {  // borrowed or null
  for (Py_ssize_t i = 0; i < n; ++i)
    if (IsTensor(items[i])) return items[i];
  return nullptr;
}

PyObject* FirstTensor(PyObject* v) {  // borrowed or null
  if (IsTensor(v)) return v;
  if (PyTuple_Check(v) || PyList_Check(v))
    return FirstTensor(PySequence_Fast_ITEMS(v), PySequence_Fast_GET_SIZE(v));
  return nullptr;
}

bool RequiresGrad(PyObject* t) {
  PyRef r(PyObject_GetAttr(t, g.s_requires_grad));
  if (!r) {
    PyErr_Clear();
    return false;
  }
  return r.get() == Py_True;
}

// The slot of `tensor` for this step, creating it and hooking it into autograd on first use;
// null (and no error set) when it cannot. Borrowed: State::slots holds it until the step ends.
SlotObject* SlotFor(PyObject* tensor) {
  auto it = g.slots.find(tensor);
  if (it != g.slots.end() && compat::WeakTarget(it->second->weakref) == tensor) return it->second;
  PyRef owned(reinterpret_cast<PyObject*>(PyObject_New(SlotObject, g.slot_type)));
  if (!owned) {
    PyErr_Clear();
    return nullptr;
  }
  auto* slot = reinterpret_cast<SlotObject*>(owned.get());
  slot->generation = g.generation;
  slot->edges = -1;
  slot->weakref = PyWeakref_NewRef(tensor, nullptr);  // the slot's own (SlotDealloc)
  if (slot->weakref == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  bool hooked = false;
  if (g.fast_hooks) {
    // What Tensor.register_hook does on torch 1.x, without its handle and checks.
    PyRef hooks(PyObject_GetAttr(tensor, g.s_backward_hooks));
    if (hooks.get() == Py_None) {
      hooks = PyRef(PyDict_New());
      if (hooks && PyObject_SetAttr(tensor, g.s_backward_hooks, hooks.get()) == 0) {
        PyRef gf(PyObject_GetAttr(tensor, g.s_grad_fn));
        if (gf && gf.get() != Py_None) {
          PyRef r(PyObject_CallMethodObjArgs(gf.get(), g.s_register_hook_dict, tensor, nullptr));
        }
      }
    }
    hooked = hooks && !PyErr_Occurred() && PyDict_Check(hooks.get()) &&
             PyDict_SetItem(hooks.get(), owned.get(), owned.get()) == 0;
    PyErr_Clear();
  }
  if (!hooked) {
    PyRef r(PyObject_CallMethodObjArgs(tensor, g.s_register_hook, owned.get(), nullptr));
    if (!r) {
      PyErr_Clear();
      return nullptr;
    }
  }
  if (it != g.slots.end()) {
    Py_DECREF(it->second);  // the map's reference to the tensor's slot of an older step
    it->second = slot;
  } else {
    g.slots.emplace(tensor, slot);
  }
  owned.release();  // to the map
  return slot;
}

void AddEdge(SlotObject* slot, uint32_t row, bool start) {
  g.edges.push_back({row, slot->edges, start});
  slot->edges = static_cast<int32_t>(g.edges.size() - 1);
}

void ResetStep() {
  g.rows.clear();
  g.backward.clear();
  g.edges.clear();
  for (auto& [t, s] : g.slots) Py_DECREF(s);  // the map's references
  g.slots.clear();
  g.seq = 0;
  g.backward_queued = false;
  ++g.generation;
}

// ---- Python-facing functions -------------------------------------------------------------

void SlotDealloc(PyObject* self) {
  auto* s = reinterpret_cast<SlotObject*>(self);
  PyTypeObject* type = Py_TYPE(self);
  Py_XDECREF(s->weakref);  // an object's own fields are given back by its dealloc
  PyObject_Free(self);
  Py_DECREF(type);  // instances of a heap type hold a reference to it
}

void ReadMemory(Row* row);

// CUDA memory at the end of a backward or step row too, as forward rows have it: read at most
// once per hook call (`*read`), before any row is touched (the read runs Python), and given to
// every row the call ends.
void ReadMemoryOnce(Row* memory, bool* read) {
  if (*read || !g.cuda || g.memory == nullptr) return;
  *read = true;
  ReadMemory(memory);
}

void CopyMemory(const Row& from, Row* to) {
  to->has_memory = from.has_memory;
  to->allocated = from.allocated;
  to->max_allocated = from.max_allocated;
  to->cached = from.cached;
}

// Autograd calls this with the gradient once it is ready. Returns None: the gradient is kept.
PyObject* SlotCall(PyObject* self, PyObject*, PyObject*) {
  auto* s = reinterpret_cast<SlotObject*>(self);
  ++g.budget.grad_calls;
  if (s->generation != g.generation) Py_RETURN_NONE;
  const int64_t t = Now();
  if (!g.backward_queued && g.queue_callback != nullptr) {
    g.backward_queued = true;  // end of the backward pass: rows without an end get it
    PyRef r(PyObject_CallFunctionObjArgs(g.queue_callback, g.backward_done, nullptr));
    PyErr_Clear();
  }
  Row memory;
  bool read = false;
  // Edges were added newest first: a module's row starts before those of modules inside it
  // that share its output (the order their forward rows have).
  for (int32_t i = s->edges; i >= 0; i = g.edges[static_cast<size_t>(i)].next) {
    const Edge& e = g.edges[static_cast<size_t>(i)];
    Row& row = g.backward[e.row];
    if (e.start && row.start < 0) {
      row.start = t;
      row.seq = g.seq++;
    } else if (!e.start && row.end < 0) {
      row.end = t;
      const uint32_t index = e.row;
      ReadMemoryOnce(&memory, &read);
      CopyMemory(memory, &g.backward[index]);  // the read ran Python: index again
    }
  }
  g.budget.timed += Now() - t;
  Py_RETURN_NONE;
}

PyObject* BackwardDone(PyObject*, PyObject*) {
  const int64_t t = Now();
  ++g.budget.grad_calls;
  g.backward_queued = false;
  Row memory;
  bool read = false;
  ReadMemoryOnce(&memory, &read);
  for (Row& row : g.backward)
    if (row.start >= 0 && row.end < 0) {
      row.end = t;
      CopyMemory(memory, &row);
    }
  g.budget.timed += Now() - t;
  Py_RETURN_NONE;
}

void ReadMemory(Row* row) {
  PyRef r(CallNoArgs(g.memory));
  unsigned long long a, m, c;
  if (r && PyArg_ParseTuple(r.get(), "KKK", &a, &m, &c)) {
    row->has_memory = true;
    row->allocated = a;
    row->max_allocated = m;
    row->cached = c;
  }
  PyErr_Clear();
}

// The start of a module call: its row (or -1 in an untraced step) on this thread's stack.
// Returns the row's start (Now()), or 0 in an untraced step.
int64_t Enter(PyObject* module) {
  std::vector<int64_t>& stack = Stack();
  if (!g.traced) {
    stack.push_back(-1);
    return 0;
  }
  Row row;
  row.seq = g.seq++;
  row.name = NameOf(module, stack);
  row.stage = kForward;
  row.start = Now();
  g.rows.push_back(row);
  stack.push_back(static_cast<int64_t>(g.rows.size() - 1));
  return row.start;
}

// Hooks the backward row of a call: its output's gradient starts it, its input's ends it.
void BackwardRow(uint32_t name, PyObject* input, PyObject* output) {
  PyObject* out = FirstTensor(output);
  if (out == nullptr || !RequiresGrad(out)) return;
  if (PyRef enabled(CallNoArgs(g.grad_enabled)); enabled.get() != Py_True) {
    PyErr_Clear();
    return;
  }
  SlotObject* s = SlotFor(out);
  if (s == nullptr) return;
  Row row;
  row.name = name;
  row.stage = kBackward;
  g.backward.push_back(row);
  const auto index = static_cast<uint32_t>(g.backward.size() - 1);
  AddEdge(s, index, true);
  if (input != nullptr && RequiresGrad(input))
    if (SlotObject* e = SlotFor(input)) AddEdge(e, index, false);
}

// The end of a module call entered with Enter, which returned at `end`: `input` its first
// tensor argument (or null), `output` what it returned, null when it raised (the row is then
// dropped).
void Leave(PyObject* input, PyObject* output, int64_t end) {
  std::vector<int64_t>& stack = Stack();
  if (stack.empty()) return;  // tracing came on during this call
  const int64_t index = stack.back();
  stack.pop_back();
  if (output != nullptr && index >= 0 && static_cast<size_t>(index) < g.rows.size()) {
    Row& row = g.rows[static_cast<size_t>(index)];
    row.end = end;
    if (g.cuda && g.memory != nullptr) ReadMemory(&row);
    BackwardRow(g.rows[static_cast<size_t>(index)].name, input, output);
  }
  if (stack.empty() && !g.training && g.inference_end != nullptr) {
    // One outermost call: one step, which ended at `end` (0: untraced, not read).
    PyRef r(PyObject_CallFunction(g.inference_end, "L", static_cast<long long>(end)));
    PyErr_Clear();
  }
}

// Adds the time since `since` to the current step's own cost, unless the step ended meanwhile
// (inference: Leave ended it), when only the time since the new one began counts.
void Timed(int64_t since) {
  const int64_t now = Now();
  g.budget.timed += now - std::max(since, g.budget.closed_at);
}

// The global forward pre-hook and forward hook (torch 2.x).
PyObject* Pre(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  ++g.budget.hook_calls;
  if (nargs >= 1 && g.traced) {
    const int64_t t = Now();
    g.budget.timed += Enter(args[0]) - t;
  } else if (nargs >= 1) {
    Enter(args[0]);
  }
  Py_RETURN_NONE;
}

PyObject* Post(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 3) Py_RETURN_NONE;
  if (!g.traced) {
    Leave(FirstTensor(args[1]), args[2], 0);
    Py_RETURN_NONE;
  }
  const int64_t end = Now();
  Leave(FirstTensor(args[1]), args[2], end);
  Timed(end);
  Py_RETURN_NONE;
}

// `wrap`: nn.Module.__call__ itself, around the original (`orig`). One C call per module call
// and torch keeps its fast path (global hooks send every call through its slow one). A method
// descriptor with vectorcall: Python calls it unbound with the module first and the arguments
// in place, so neither a bound method nor an argument tuple is made.
struct CallObject {
  PyObject_HEAD PyObject* orig;
  vectorcallfunc vectorcall;
};

PyObject* ModuleCall(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  PyObject* orig = reinterpret_cast<CallObject*>(self)->orig;
  const Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  ++g.budget.wrap_calls;
  if (n < 1 || !g.wrap_on || (!g.traced && g.training))
    return PyObject_Vectorcall(orig, args, nargsf, kwnames);
  const bool traced = g.traced;
  const int64_t entered = traced ? Now() : 0;
  if (traced)
    g.budget.timed += Enter(args[0]) - entered;
  else
    Enter(args[0]);
  PyObject* out = PyObject_Vectorcall(orig, args, nargsf, kwnames);
  const int64_t end = traced ? Now() : 0;
  PyObject *type, *value, *tb;
  if (out == nullptr) PyErr_Fetch(&type, &value, &tb);  // our work must not see or lose it
  Leave(FirstTensor(args + 1, n - 1), out, end);
  if (out == nullptr) PyErr_Restore(type, value, tb);
  if (traced) Timed(end);
  return out;
}

PyObject* ModuleCallGet(PyObject* self, PyObject* obj, PyObject*) {
  if (obj == nullptr || obj == Py_None) {
    Py_INCREF(self);  // a new reference to the caller
    return self;
  }
  return PyMethod_New(self, obj);
}

void ModuleCallDealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  Py_XDECREF(reinterpret_cast<CallObject*>(self)->orig);  // the object's own
  PyObject_Free(self);
  Py_DECREF(type);
}

// module_call(orig) -> the nn.Module.__call__ that times calls around `orig`.
PyObject* NewModuleCall(PyObject*, PyObject* orig) {
  auto* c = PyObject_New(CallObject, g.call_type);
  if (c == nullptr) return nullptr;
  Py_INCREF(orig);  // the object's own, until ModuleCallDealloc
  c->orig = orig;
  c->vectorcall = PROBING_CATCH_ALL(ModuleCall);
  return reinterpret_cast<PyObject*>(c);
}

// configure(resolve, inference_end, Tensor, is_grad_enabled, queue_callback, memory, fast_hooks)
PyObject* Configure(PyObject* self, PyObject* args) {
  PyObject *resolve, *inference_end, *tensor, *grad_enabled, *queue, *memory;
  int fast;
  if (!PyArg_ParseTuple(args, "OOO!OOOp", &resolve, &inference_end, &PyType_Type, &tensor,
                        &grad_enabled, &queue, &memory, &fast))
    return nullptr;
  // Kept for the life of the process (a later configure replaces them).
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

// begin(traced, training, cuda, hooked, wrap): what the coming step does. The time since
// decide() (the hooks put in place or taken out) is the coming step's cost.
PyObject* Begin(PyObject*, PyObject* args) {
  int traced, training, cuda, hooked, wrap;
  if (!PyArg_ParseTuple(args, "ppppp", &traced, &training, &cuda, &hooked, &wrap)) return nullptr;
  g.hooked = hooked != 0;
  g.wrap_on = g.hooked && wrap != 0;
  g.traced = traced != 0;
  g.training = training != 0;
  g.cuda = cuda != 0;
  if (g.budget.decided) {  // not after fail(), mid-step
    g.budget.decided = false;
    const int64_t now = Now();
    g.budget.timed += now - g.budget.closed_at;
    g.budget.closed_at = now;
  }
  Py_RETURN_NONE;
}

uint64_t ThreadId() {
  thread_local uint64_t tid = static_cast<uint64_t>(syscall(SYS_gettid));
  return tid;
}

// How many steps after the budget last left one out it still counts as limiting tracing.
constexpr uint64_t kLimitedSteps = 1000;
// The longest stride of traced steps (budget.stride).
constexpr uint64_t kMaxStride = uint64_t{1} << 20;

// decide(next step, enabled, sample_rate, budget fraction, t0) -> (whether the next step is
// traced, whether the budget limits tracing: it left out a step in the last kLimitedSteps).
// Closes the step that ended (when t0 >= 0: perf_counter_ns when its end was seen, from which
// on the tracer's bookkeeping ran): its cost is what was timed in it, the bookkeeping since t0,
// and each call that cannot be timed from inside at its calibrated price; its row goes to
// python.torch_steps. The budget is a balance: every step adds `fraction` of its time and takes
// away the bookkeeping (an untraced step's cost, at most half of what it adds), a traced step
// also what tracing it added, and a step the sample rate picks is traced only while the balance
// is not negative, so over any stretch the cost stays within the fraction but for one traced
// step (and but for bookkeeping over half of it).
PyObject* Decide(PyObject*, PyObject* args) {
  unsigned long long next;
  int enabled;
  double rate, fraction;
  long long t0;
  if (!PyArg_ParseTuple(args, "KpddL", &next, &enabled, &rate, &fraction, &t0)) return nullptr;
  auto& b = g.budget;
  const int64_t now = Now();
  if (t0 >= 0 && b.last_end > 0 && b.enabled) {
    const int64_t duration = std::max<int64_t>(now - b.last_end, 0);
    const double cost = static_cast<double>(b.timed + std::max<int64_t>(now - t0, 0)) +
                        static_cast<double>(b.wrap_calls) * b.wrap_ns +
                        static_cast<double>(b.hook_calls) * b.hooks_ns +
                        static_cast<double>(b.grad_calls) * b.grad_ns;
    const bool traced = b.decision == format::kStepTraced;
    const auto d = static_cast<double>(duration);
    // What tracing this step added: its measured cost beyond an untraced step's (the whole
    // cost until an untraced step was seen); and once traced steps were seen between untraced
    // ones, at least the lower quartile over the last of them of what each and the step after
    // it took beyond two untraced steps, which sees what the clock inside cannot (torch's slow
    // path with hooks, autograd's calls into Python, caches, the hooks' removal): the larger.
    // (The lower quartile, not the median: on a busy machine many of the steps can be
    // delayed by others' work, by milliseconds, and tracing is not to be charged for it.)
    double added = 0;
    const bool first = traced && b.traced_steps++ == 0;
    if (first) {
      // The first traced step: mostly start-up paid once (naming the model's modules, the
      // rows' first strings), neither charged nor a sample of what tracing a step adds (nor is
      // the step after it a sample of anything).
      b.after_traced = -2;
    } else if (traced) {
      // Inside, at most twice the median of the last traced steps' (a step that others' work
      // delayed inside the tracer's code is not all tracing's).
      added = std::max(cost - b.untraced_cost, 0.0);
      b.traced_inside.Add(added);
      if (b.traced_inside.count() >= 3) added = std::min(added, 2 * b.traced_inside.Median());
      if (b.traced_extra.count() >= 3) added = std::max(added, b.traced_extra.LowerQuartile());
      b.traced_cost = b.traced_cost == 0 ? added : 0.75 * b.traced_cost + 0.25 * added;
      b.after_traced = d;
    } else {
      if (b.after_traced >= 0) {
        if (b.untraced_durations.count() >= 5)
          b.traced_extra.Add(b.after_traced + d - 2 * b.untraced_durations.Median());
      } else if (b.after_traced == -1) {
        b.untraced_costs.Add(cost);
        b.untraced_durations.Add(d);
        b.untraced_cost = b.untraced_costs.Median();
      }
      b.after_traced = -1;
    }
    if (b.fraction > 0) {
      // Every step is charged the bookkeeping every step pays (an untraced step's cost), which
      // enabling tracing adds too, but at most half its share: the rest is tracing's, even on
      // steps so short that the bookkeeping alone is over the budget. A traced step is charged
      // what it added on top.
      const double share = b.fraction * d;
      const double per_step = b.traced_cost;
      b.balance += share - std::min(b.untraced_cost, share / 2) - added;
      // At most one traced step saved up; at most four owed (a one-off cost, such as naming a
      // model's modules on its first call, is paid back within bounds).
      b.balance = std::clamp(b.balance, -4 * per_step, per_step);
    }
    TorchStepRow row;
    row.thread = ThreadId();
    row.step = next > 0 ? next - 1 : 0;
    row.start_ns = b.last_end + (Now(CLOCK_REALTIME) - now);
    row.duration_ns = static_cast<uint64_t>(duration);
    row.decision = b.decision;
    // A traced step's cost as the budget counts it: the bookkeeping and what tracing added.
    row.cost_ns = static_cast<uint64_t>(traced && !first ? b.untraced_cost + added : cost);
    row.budget_ppm = static_cast<uint32_t>(b.fraction * 1e6 + 0.5);
    if (g.sink != nullptr) g.sink->TorchStep(row);
    std::lock_guard<std::mutex> lock(g_budget_mu);
    TorchBudget& info = g_budget_info;
    // Decayed sums over about the last 100 steps.
    constexpr double kKeep = 0.99;
    info.cost_ns = info.cost_ns * kKeep + static_cast<double>(row.cost_ns);
    info.step_ns = info.step_ns * kKeep + static_cast<double>(duration);
    info.traced = info.traced * kKeep + (traced ? 1 : 0);
    info.steps = info.steps * kKeep + 1;
    info.traced_cost_ns = b.traced_cost;
    info.untraced_cost_ns = b.untraced_cost;
    info.left_out += b.decision == format::kStepOverBudget ? 1 : 0;
  }
  if (fraction != b.fraction) {
    b.fraction = fraction;
    b.balance = 0;
    b.stride = 1;
    b.last_traced = b.full_from = kNone;
    b.traced_extra.Clear();  // measured under other conditions
    b.traced_inside.Clear();
    b.since_left_out = UINT64_MAX;
    std::lock_guard<std::mutex> lock(g_budget_mu);
    g_budget_info.fraction = fraction;
  }
  b.timed = 0;
  b.wrap_calls = b.hook_calls = b.grad_calls = 0;
  b.last_end = now;
  // The stride starts again (no traced step before) when the sample rate changes or tracing
  // is switched on: the step indexes it counted are not comparable.
  if (rate != b.rate || (enabled && !b.enabled) || b.fraction <= 0) {
    b.rate = rate;
    b.stride = 1;
    b.last_traced = b.full_from = kNone;
  }
  b.enabled = enabled != 0;
  // The step's index among those the sample rate picks (the same on every rank).
  const auto picked = static_cast<uint64_t>(static_cast<double>(next) * rate);
  const bool by_rate =
      enabled && static_cast<uint64_t>(static_cast<double>(next + 1) * rate) > picked;
  // Decided again within the step (t0 < 0: the optimizer's constructor): the same decision.
  const bool again = t0 < 0 && next == b.decided_next && by_rate && b.fraction > 0 &&
                     b.decision != format::kStepSampledOut;
  b.decided_next = next;
  if (b.fraction <= 0 || b.balance < b.traced_cost)
    b.full_from = kNone;
  else if (b.full_from == kNone)
    b.full_from = picked;
  if (again) {
  } else if (!by_rate) {
    b.decision = format::kStepSampledOut;
  } else if (b.fraction <= 0) {
    b.decision = format::kStepTraced;
  } else if (picked % b.stride != 0) {
    b.decision = format::kStepOverBudget;
  } else if (b.balance < 0) {
    // Owed on the stride: the next chance is on the stride twice as long, which every rank
    // on this one or a longer one traces too.
    b.decision = format::kStepOverBudget;
    b.stride = std::min(b.stride * 2, kMaxStride);
  } else {
    b.decision = format::kStepTraced;
    // The next stride: the smallest power of two at least the picked steps the balance took
    // to fill up again after the previous traced step (1 when it stayed full, or after none),
    // or, when it has not filled up, at least the steps since that one.
    const uint64_t took = b.last_traced == kNone || picked <= b.last_traced ? 1
                          : b.full_from == kNone                            ? picked - b.last_traced
                          : b.full_from > b.last_traced ? b.full_from - b.last_traced
                                                        : 1;
    uint64_t fits = 1;
    while (fits < took && fits < kMaxStride) fits *= 2;
    b.stride = fits;
    b.last_traced = picked;
  }
  if (b.stride != b.shown_stride) {
    b.shown_stride = b.stride;
    std::lock_guard<std::mutex> lock(g_budget_mu);
    g_budget_info.stride = b.stride;
  }
  if (again) {
  } else if (b.decision == format::kStepOverBudget) {
    b.since_left_out = 0;
  } else if (b.since_left_out != UINT64_MAX) {
    ++b.since_left_out;
  }
  const bool limited = b.fraction > 0 && b.since_left_out < kLimitedSteps;
  b.closed_at = Now();
  b.decided = true;
  return Py_BuildValue("(NN)", PyBool_FromLong(enabled && b.decision == format::kStepTraced),
                       PyBool_FromLong(limited));
}

// calibrate(wrap_ns, hooks_ns, grad_ns): what a call through the wrapper, a call through the
// global hooks and autograd's call into a tensor hook cost beyond what can be timed inside them
// (measured by torch_tracer.py when it starts).
PyObject* Calibrate(PyObject*, PyObject* args) {
  double w, h, gr;
  if (!PyArg_ParseTuple(args, "ddd", &w, &h, &gr)) return nullptr;
  auto sane = [](double v) { return v > 0 && v < 1e6 ? v : 0.0; };
  g.budget.wrap_ns = sane(w);
  g.budget.hooks_ns = sane(h);
  g.budget.grad_ns = sane(gr);
  std::lock_guard<std::mutex> lock(g_budget_mu);
  g_budget_info.calibrated = true;
  g_budget_info.wrap_ns = g.budget.wrap_ns;
  g_budget_info.hooks_ns = g.budget.hooks_ns;
  g_budget_info.grad_ns = g.budget.grad_ns;
  Py_RETURN_NONE;
}

// A tensor hook of no step (its generation is never current): what autograd's call into one
// costs, for calibrate().
PyObject* IdleSlot(PyObject*, PyObject*) {
  auto* slot = PyObject_New(SlotObject, g.slot_type);
  if (slot == nullptr) return nullptr;
  slot->generation = 0;
  slot->weakref = nullptr;
  slot->edges = -1;
  return reinterpret_cast<PyObject*>(slot);
}

PyObject* Noop(PyObject*, PyObject* const*, Py_ssize_t) { Py_RETURN_NONE; }

// end_step(step, optimizer name or None, start_ns, end_ns) -> number of rows written.
PyObject* EndStep(PyObject*, PyObject* args) {
  unsigned long long step;
  PyObject* optimizer;
  long long start, end;
  if (!PyArg_ParseTuple(args, "KOLL", &step, &optimizer, &start, &end)) return nullptr;
  std::vector<TorchRow> out;
  if (g.traced) {
    out.reserve(g.rows.size() + g.backward.size() + 1);
    if (optimizer != Py_None) {
      const char* n = PyUnicode_AsUTF8(optimizer);
      if (n == nullptr) return nullptr;
      Row row;
      row.seq = g.seq++;
      row.name = Intern(n);
      row.stage = kStep;
      row.start = start;
      row.end = end;
      if (g.cuda && g.memory != nullptr) ReadMemory(&row);
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
      out.push_back(t);
    };
    for (const Row& r : g.rows) add(r);
    for (const Row& r : g.backward) add(r);
    // Dense again where calls left no row (they raised, or their backward never ran).
    std::sort(out.begin(), out.end(),
              [](const TorchRow& a, const TorchRow& b) { return a.seq < b.seq; });
    for (size_t i = 0; i < out.size(); ++i) out[i].seq = i;
  }
  ResetStep();
  const size_t n = out.size();
  if (g.sink != nullptr && n > 0)
    g.sink->TorchRows(static_cast<uint64_t>(syscall(SYS_gettid)), step, std::move(out));
  return PyLong_FromSize_t(n);
}

PyMethodDef kHookMethods[] = {
    {"pre", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(PROBING_CATCH_ALL(Pre))),
     METH_FASTCALL, "global module forward pre-hook"},
    {"post", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(PROBING_CATCH_ALL(Post))),
     METH_FASTCALL, "global module forward hook"},
    {"_backward_done", PROBING_CATCH_ALL(BackwardDone), METH_NOARGS, "end of a backward pass"},
    {"module_call", PROBING_CATCH_ALL(NewModuleCall), METH_O,
     "nn.Module.__call__ timing calls around the original"},
    {"configure", PROBING_CATCH_ALL(Configure), METH_VARARGS, "the tracer's callables, once"},
    {"begin", PROBING_CATCH_ALL(Begin), METH_VARARGS,
     "(traced, training, cuda, hooked, wrap) for the coming step"},
    {"end_step", PROBING_CATCH_ALL(EndStep), METH_VARARGS,
     "writes the step's rows; starts the next"},
    {"decide", PROBING_CATCH_ALL(Decide), METH_VARARGS,
     "(next step, enabled, sample_rate, budget, t0): closes the step, says if the next is traced"},
    {"calibrate", PROBING_CATCH_ALL(Calibrate), METH_VARARGS,
     "(wrap_ns, hooks_ns, grad_ns): the calls' cost not timed from inside"},
    {"idle_slot", PROBING_CATCH_ALL(IdleSlot), METH_NOARGS, "a tensor hook of no step"},
    {"noop", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(PROBING_CATCH_ALL(Noop))),
     METH_FASTCALL, "does nothing (a hook for calibrate)"},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot kSlotSlots[] = {{Py_tp_dealloc, reinterpret_cast<void*>(SlotDealloc)},
                            {Py_tp_call, reinterpret_cast<void*>(PROBING_CATCH_ALL(SlotCall))},
                            {0, nullptr}};
PyType_Spec kSlotSpec = {"_probing_recorder.GradSlot", sizeof(SlotObject), 0, Py_TPFLAGS_DEFAULT,
                         kSlotSlots};

// Where the vectorcall pointer is: a member the type machinery reads (3.9+); 3.8 has the field
// set after the type is made.
// __wrapped__ is the original, and the names are its own, so inspect.signature, help() and
// reprs see what they saw before.
PyObject* OrigAttr(PyObject* self, void* name) {
  return PyObject_GetAttrString(reinterpret_cast<CallObject*>(self)->orig,
                                static_cast<const char*>(name));
}
PyGetSetDef kCallGetSet[] = {
    {"__name__", PROBING_CATCH_ALL(OrigAttr), nullptr, nullptr, const_cast<char*>("__name__")},
    {"__qualname__", PROBING_CATCH_ALL(OrigAttr), nullptr, nullptr, const_cast<char*>("__qualname__")},
    {"__doc__", PROBING_CATCH_ALL(OrigAttr), nullptr, nullptr, const_cast<char*>("__doc__")},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};
PyMemberDef kCallMembers[] = {
    {"__wrapped__", T_OBJECT, offsetof(CallObject, orig), READONLY, nullptr},
#if PY_VERSION_HEX >= 0x03090000
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(CallObject, vectorcall), READONLY, nullptr},
#endif
    {nullptr, 0, 0, 0, nullptr}};
PyType_Slot kCallSlots[] = {{Py_tp_dealloc, reinterpret_cast<void*>(ModuleCallDealloc)},
                            {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
                            {Py_tp_descr_get, reinterpret_cast<void*>(PROBING_CATCH_ALL(ModuleCallGet))},
                            {Py_tp_members, kCallMembers},
                            {Py_tp_getset, kCallGetSet},
                            {0, nullptr}};
PyType_Spec kCallSpec = {
    "_probing_recorder.ModuleCall", sizeof(CallObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_HAVE_VECTORCALL, kCallSlots};

}  // namespace

void SetTorchSink(PythonSink* sink) { g.sink = sink; }

TorchBudget GetTorchBudget() {
  std::lock_guard<std::mutex> lock(g_budget_mu);
  return g_budget_info;
}

bool AddTorchHooks(PyObject* module) {
  if (g.slot_type == nullptr) {
    g.slot_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&kSlotSpec));
    if (g.slot_type == nullptr) return false;
    g.call_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&kCallSpec));
    if (g.call_type == nullptr) return false;
#if PY_VERSION_HEX < 0x03090000
    g.call_type->tp_vectorcall_offset = offsetof(CallObject, vectorcall);
#endif
    g.s_requires_grad = PyUnicode_InternFromString("requires_grad");
    g.s_backward_hooks = PyUnicode_InternFromString("_backward_hooks");
    g.s_grad_fn = PyUnicode_InternFromString("grad_fn");
    g.s_register_hook_dict = PyUnicode_InternFromString("_register_hook_dict");
    g.s_register_hook = PyUnicode_InternFromString("register_hook");
  }
  return PyModule_AddFunctions(module, kHookMethods) == 0;
}

}  // namespace probing::recorder
