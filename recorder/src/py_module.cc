#include "py_module.h"

#include <Python.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <exception>
#include <new>

#include "config.h"
#include "log.h"
#include "collectives.h"
#include "py_ref.h"
#include "torch_hooks.h"
#include "torch_tracer_py.h"  // kTorchTracerSource, generated from torch_tracer.py

namespace probing::recorder {
namespace {

PythonSink* g_sink = nullptr;
std::atomic<bool> g_installed{false}, g_traced{false}, g_hooks{false};
std::atomic<uint64_t> g_step{0};
PyObject* g_namespace = nullptr;  // the tracer's globals (owned, never freed)
// Set (with the GIL) before the tracer's source runs. Running it can release the GIL (imports),
// and the program's thread (probing_python_setup) and the recorder's own thread both install:
// without this, both could run the source and two tracers would wrap every module call twice.
// The worker may get there first, while the start-up hook has let the GIL go in a ctypes call;
// g_installer is the thread that installs.
std::atomic<bool> g_installing{false};
std::atomic<long> g_installer{0};

bool ToI64(PyObject* o, int64_t* out) {
  if (!PyLong_Check(o)) return false;
  long long v = PyLong_AsLongLong(o);
  if (PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  *out = v;
  return true;
}

bool ToStr(PyObject* o, std::string* out) {
  Py_ssize_t n = 0;
  const char* s = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &n) : nullptr;
  if (s == nullptr) {
    PyErr_Clear();
    return false;
  }
  out->assign(s, static_cast<size_t>(n));
  return true;
}

PyObject* BadRow(const char* what) {
  PyErr_Format(PyExc_ValueError, "_probing_recorder: bad %s row", what);
  return nullptr;
}

// settings(generation) -> (torch enabled, sample rate, exprs, calls, generation, budget), or
// None when nothing changed since `generation`.
PyObject* Settings(PyObject*, PyObject* arg) {
  Config& c = Config::Get();
  const uint64_t generation = c.generation();
  const unsigned long long known = PyLong_AsUnsignedLongLongMask(arg);
  if (PyErr_Occurred()) return nullptr;
  if (known == generation) Py_RETURN_NONE;
  return Py_BuildValue("(NdssKd)", PyBool_FromLong(c.torch_enabled()), c.sample_rate(),
                       c.torch_exprs().c_str(), c.torch_calls().c_str(),
                       static_cast<unsigned long long>(generation), c.torch_budget());
}

// state(step, traced, hooks): the tracer's state after each step, for `info` (read without the
// GIL).
PyObject* StateFn(PyObject*, PyObject* args) {
  unsigned long long step;
  int traced, hooks;
  if (!PyArg_ParseTuple(args, "Kpp", &step, &traced, &hooks)) return nullptr;
  g_installed = true;
  g_step = step;
  g_traced = traced != 0;
  g_hooks = hooks != 0;
  Py_RETURN_NONE;
}

PyObject* LogMessage(PyObject*, PyObject* arg) {
  std::string msg;
  if (ToStr(arg, &msg)) Log(msg);
  Py_RETURN_NONE;
}

// variable_rows(rows, thread, step); a row is (ts_ns, func, name, value).
PyObject* VariableRowsFn(PyObject*, PyObject* args) {
  PyObject* rows;
  unsigned long long thread, step;
  if (!PyArg_ParseTuple(args, "O!KK", &PyList_Type, &rows, &thread, &step)) return nullptr;
  std::vector<VariableRow> out;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); ++i) {
    PyObject* r = PyList_GET_ITEM(rows, i);
    VariableRow v;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 4 || !ToI64(PyTuple_GET_ITEM(r, 0), &v.ts_ns) ||
        !ToStr(PyTuple_GET_ITEM(r, 1), &v.func) || !ToStr(PyTuple_GET_ITEM(r, 2), &v.name) ||
        !ToStr(PyTuple_GET_ITEM(r, 3), &v.value))
      return BadRow("variable");
    out.push_back(std::move(v));
  }
  if (g_sink != nullptr && !out.empty()) {
    Py_BEGIN_ALLOW_THREADS;
    try {  // nothing may leave without the GIL taken back
      g_sink->VariableRows(thread, step, out);
    } catch (...) {
    }
    Py_END_ALLOW_THREADS;
  }
  Py_RETURN_NONE;
}

// job(rank, world_size): torch.distributed's identity of this process; returns (run_id,
// local_rank, node, host, pid, tcp_port) for its registration in the job's store.
PyObject* JobFn(PyObject*, PyObject* args) {
  long long rank, world;
  if (!PyArg_ParseTuple(args, "LL", &rank, &world)) return nullptr;
  if (g_sink == nullptr) Py_RETURN_NONE;
  PythonSink::Place p;
  bool failed = false;
  Py_BEGIN_ALLOW_THREADS;  // takes the recorder's lock, which its sampler may hold a while
  try {                    // nothing may leave without the GIL taken back
    p = g_sink->JobIdentity(rank, world);
  } catch (...) {
    failed = true;
  }
  Py_END_ALLOW_THREADS;
  if (failed) return PyErr_NoMemory();
  return Py_BuildValue(
      "(sLssLL)", p.run_id.c_str(), static_cast<long long>(p.local_rank), p.node.c_str(),
      p.host.c_str(), static_cast<long long>(p.pid), static_cast<long long>(p.tcp_port));
}

// members(json): the job's members as registered in its store.
PyObject* MembersFn(PyObject*, PyObject* arg) {
  std::string json;
  if (!ToStr(arg, &json)) {
    PyErr_SetString(PyExc_TypeError, "members() takes a str");
    return nullptr;
  }
  if (g_sink != nullptr) g_sink->JobMembers(std::move(json));
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"job", PROBING_CATCH_ALL(JobFn), METH_VARARGS,
     "(rank, world_size) -> (run_id, local_rank, node, host, pid, port)"},
    {"members", PROBING_CATCH_ALL(MembersFn), METH_O, "the job's members (JSON) as read from its store"},
    {"settings", PROBING_CATCH_ALL(Settings), METH_O,
     "(torch enabled, sample rate, exprs, calls, generation), None if at this generation"},
    {"log", PROBING_CATCH_ALL(LogMessage), METH_O, "one line on stderr, prefixed probing:"},
    {"state", PROBING_CATCH_ALL(StateFn), METH_VARARGS, "the tracer's (step, traced, hooks on)"},
    {"variable_rows", PROBING_CATCH_ALL(VariableRowsFn), METH_VARARGS,
     "rows of python.variables for one step"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT,
                       "_probing_recorder",
                       "The Probing recorder inside this process (private).",
                       -1,
                       kMethods,
                       nullptr,
                       nullptr,
                       nullptr,
                       nullptr};

PyObject* CallTracer(const char* fn) {
  if (g_namespace == nullptr) return nullptr;
  PyObject* f = PyDict_GetItemString(g_namespace, fn);  // borrowed
  if (f == nullptr) return nullptr;
  PyObject* r = PyObject_CallObject(f, nullptr);
  if (r == nullptr) PyErr_Clear();
  return r;  // new reference or null
}

}  // namespace

void* RunPythonSource(const char* source, std::initializer_list<PyGlobal> globals,
                      std::string* why) {
  PyRef ns(PyDict_New());
  if (!ns) {
    PyErr_Clear();
    *why = "out of memory";
    return nullptr;
  }
  PyDict_SetItemString(ns.get(), "__builtins__", PyEval_GetBuiltins());
  for (const PyGlobal& g : globals)
    PyDict_SetItemString(ns.get(), g.name, static_cast<PyObject*>(g.value));
  // Named "<probing>" so that what this code allocates is told apart from the program's
  // (tracemalloc filters, python.allocations) and tracebacks say whose it is.
  PyRef code(Py_CompileString(source, "<probing>", Py_file_input));
  PyRef r(code ? PyEval_EvalCode(code.get(), ns.get(), ns.get()) : nullptr);
  if (!r) {
    PyObject *raw_type, *raw_value, *raw_trace;
    PyErr_Fetch(&raw_type, &raw_value, &raw_trace);
    PyRef type(raw_type), value(raw_value), trace(raw_trace);
    PyRef text(value ? PyObject_Str(value.get()) : nullptr);
    const char* msg = text ? PyUnicode_AsUTF8(text.get()) : nullptr;
    *why = std::string(type ? reinterpret_cast<PyTypeObject*>(type.get())->tp_name : "error") +
           ": " + (msg != nullptr ? msg : "");
    PyErr_Clear();
    return nullptr;
  }
  return ns.release();
}

bool InstallPython(PythonSink* sink, std::string* why) {
  g_sink = sink;  // a forked child's new recorder takes over
  SetTorchSink(sink);
  SetCollectivesSink(sink);
  if (g_namespace != nullptr) return true;
  const long self = static_cast<long>(syscall(SYS_gettid));
  if (g_installing.load()) {
    if (g_installer.load() == self) return true;  // from inside the installation
    // Another thread installs, and gave the GIL away meanwhile (its Python runs in turns with
    // ours). Returning now would let the program import torch before the import hook is in
    // place: wait for it, without the GIL, at most 5 s.
    PyThreadState* saved = PyEval_SaveThread();
    for (int i = 0; i < 5000 && g_installing.load(); ++i) usleep(1000);
    PyEval_RestoreThread(saved);
    if (g_namespace == nullptr) *why = "another thread's installation of the PyTorch tracer failed";
    return g_namespace != nullptr;
  }
  g_installer = self;
  g_installing = true;
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  if (PyDict_GetItemString(modules, "_probing_recorder") == nullptr) {
    PyRef m(PyModule_Create(&kModule));
    if (!m || !AddTorchHooks(m.get()) || !AddCollectiveHooks(m.get()) ||
        PyDict_SetItemString(modules, "_probing_recorder", m.get()) != 0) {
      PyErr_Clear();
      *why = "could not create _probing_recorder";
      g_installing = false;
      return false;
    }
  }
  PyRef name(PyUnicode_FromString("_probing_torch_tracer"));
  void* ns = name ? RunPythonSource(kTorchTracerSource, {{"__name__", name.get()}}, why) : nullptr;
  if (!name) PyErr_Clear();
  if (ns == nullptr) {
    *why = "the PyTorch tracer did not load: " + *why;
    g_installing = false;
    return false;
  }
  g_namespace = static_cast<PyObject*>(ns);
  PollPython();  // the import hook in place before a waiting thread goes on
  g_installing = false;
  return true;
}

void PollPython() {
  if (PyObject* r = CallTracer("probing_torch_poll")) Py_DECREF(r);
}

TorchState GetTorchState() {
  return {g_installed.load(), g_step.load(), g_traced.load(), g_hooks.load()};
}

}  // namespace probing::recorder
