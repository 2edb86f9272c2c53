#include "py_module.h"

#include <Python.h>

#include <atomic>

#include "config.h"
#include "log.h"
#include "torch_hooks.h"
#include "torch_tracer_py.h"  // kTorchTracerSource, generated from torch_tracer.py

namespace probing::recorder {
namespace {

PythonSink* g_sink = nullptr;
std::atomic<bool> g_installed{false}, g_traced{false}, g_hooks{false};
std::atomic<uint64_t> g_step{0};
PyObject* g_namespace = nullptr;  // the tracer's globals (owned, never freed)

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

// settings(generation) -> (torch enabled, sample rate, exprs, calls, generation), or None when
// nothing changed since `generation`.
PyObject* Settings(PyObject*, PyObject* arg) {
  Config& c = Config::Get();
  const uint64_t generation = c.generation();
  const unsigned long long known = PyLong_AsUnsignedLongLongMask(arg);
  if (PyErr_Occurred()) return nullptr;
  if (known == generation) Py_RETURN_NONE;
  return Py_BuildValue("(NdssK)", PyBool_FromLong(c.torch_enabled()), c.sample_rate(),
                       c.torch_exprs().c_str(), c.torch_calls().c_str(),
                       static_cast<unsigned long long>(generation));
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
    g_sink->VariableRows(thread, step, out);
    Py_END_ALLOW_THREADS;
  }
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"settings", Settings, METH_O,
     "(torch enabled, sample rate, exprs, calls, generation), None if at this generation"},
    {"log", LogMessage, METH_O, "one line on stderr, prefixed probing:"},
    {"state", StateFn, METH_VARARGS, "the tracer's (step, traced, hooks on)"},
    {"variable_rows", VariableRowsFn, METH_VARARGS, "rows of python.variables for one step"},
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
  PyObject* ns = PyDict_New();
  if (ns == nullptr) {
    PyErr_Clear();
    *why = "out of memory";
    return nullptr;
  }
  PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins());
  for (const PyGlobal& g : globals)
    PyDict_SetItemString(ns, g.name, static_cast<PyObject*>(g.value));
  PyObject* r = PyRun_String(source, Py_file_input, ns, ns);
  if (r == nullptr) {
    PyObject *type, *value, *trace;
    PyErr_Fetch(&type, &value, &trace);
    PyObject* text = value != nullptr ? PyObject_Str(value) : nullptr;
    const char* msg = text != nullptr ? PyUnicode_AsUTF8(text) : nullptr;
    *why = std::string(type != nullptr ? reinterpret_cast<PyTypeObject*>(type)->tp_name : "error") +
           ": " + (msg != nullptr ? msg : "");
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(trace);
    PyErr_Clear();
    Py_DECREF(ns);
    return nullptr;
  }
  Py_DECREF(r);
  return ns;
}

bool InstallPython(PythonSink* sink, std::string* why) {
  g_sink = sink;  // a forked child's new recorder takes over
  SetTorchSink(sink);
  // Called with the GIL by the start-up hook and by the recorder's own thread; running the
  // tracer's source may let the GIL go to the other one, which must not load a second tracer.
  static bool installing = false;
  if (g_namespace != nullptr || installing) return true;
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  PyObject* m = PyDict_GetItemString(modules, "_probing_recorder");
  if (m == nullptr) {
    m = PyModule_Create(&kModule);
    if (m == nullptr || !AddTorchHooks(m) ||
        PyDict_SetItemString(modules, "_probing_recorder", m) != 0) {
      PyErr_Clear();
      *why = "could not create _probing_recorder";
      return false;
    }
    Py_DECREF(m);
  }
  PyObject* name = PyUnicode_FromString("_probing_torch_tracer");
  installing = true;
  void* ns = RunPythonSource(kTorchTracerSource, {{"__name__", name}}, why);
  Py_XDECREF(name);
  installing = false;
  if (ns == nullptr) {
    *why = "the PyTorch tracer did not load: " + *why;
    return false;
  }
  g_namespace = static_cast<PyObject*>(ns);
  PollPython();
  return true;
}

void PollPython() {
  if (PyObject* r = CallTracer("probing_torch_poll")) Py_DECREF(r);
}

TorchState GetTorchState() {
  return {g_installed.load(), g_step.load(), g_traced.load(), g_hooks.load()};
}

}  // namespace probing::recorder
