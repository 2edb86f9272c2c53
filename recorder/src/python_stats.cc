#include "python_stats.h"

#include <Python.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <thread>
#include <utility>

#include "config.h"
#include "log.h"
#include "probing/base/clock.h"
#include "probing/live/function_names_py.h"
#include "py_ref.h"

extern "C" void probing_shutdown(void);
extern "C" void probing_after_fork_child(void);

namespace probing::recorder {
namespace {

// Runs in the target's interpreter, in a private namespace. Only the standard library.
constexpr const char* kSetupSource = R"PY(
# Never import threading here: the thread that first imports it becomes threading's main
# thread, and this is not the program's main thread. Nor any module the program may not have
# loaded (ctypes, json): after inject, in a program whose threads keep the GIL busy, every file
# read of an import gives the GIL away and waits its turn to get it back (seconds, not
# milliseconds). Only built-in modules and those every interpreter loads at start.
import atexit, gc, os, sys

# Hooks are registered once per process lineage: a forked child inherits its parent's.
if not getattr(sys, "_probing_hooks_registered", False):
    atexit.register(_probing_shutdown)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_probing_after_fork_child)
    sys._probing_hooks_registered = True

def _probing_names():
    """{native id: threading name}, or None when the program has not imported threading."""
    threading = sys.modules.get("threading")
    if threading is None:
        return None
    names = {}
    for t in threading.enumerate():
        nid = getattr(t, "native_id", None)
        if nid is not None:
            names[nid] = t.name
    return names

def _probing_collect():
    names = _probing_names()
    counts = gc.get_count()
    collections = sum(s.get("collections", 0) for s in gc.get_stats())
    cuda = None
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                cuda = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved())
        except Exception:
            cuda = None
    # @probing.metric readings, only once a program has registered one (the module is loaded).
    metrics = []
    registry = sys.modules.get("probing._metrics")
    if registry is not None:
        try:
            metrics = registry.read_all()
        except Exception:
            metrics = []
    return names, counts, collections, sys.getallocatedblocks(), cuda, metrics

_probing_sources = {}  # function_at's cache: {file: spans}

def _probing_allocations(top, on, ours):
    """With on: the `top` largest allocation sites of a tracemalloc snapshot, as
    (started, [(function, file, line, bytes, blocks)]); tracemalloc is started first when it is
    not tracing (started: True, and no snapshot yet: it has seen nothing). With on False: stops
    tracemalloc when `ours` (we started it). Imported only when asked for."""
    import tracemalloc
    if not on:
        if ours and tracemalloc.is_tracing():
            tracemalloc.stop()
        _probing_sources.clear()
        return (False, [])
    if not tracemalloc.is_tracing():
        tracemalloc.start(1)
        return (True, [])
    snapshot = tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<probing*"),
    ])
    if len(_probing_sources) > 1000:
        _probing_sources.clear()
    sites = []
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        sites.append((function_at(frame.filename, frame.lineno, _probing_sources),
                      frame.filename, frame.lineno, stat.size, stat.count))
    return (False, sites)
)PY";

// The exit and fork hooks, as Python callables. The GIL is let go around them (as ctypes did):
// shutting down waits for the recorder's own threads, which may be waiting for it.
PyObject* ShutdownFn(PyObject*, PyObject*) {
  PyThreadState* saved = PyEval_SaveThread();
  probing_shutdown();
  PyEval_RestoreThread(saved);
  Py_RETURN_NONE;
}

PyObject* AfterForkChildFn(PyObject*, PyObject*) {
  PyThreadState* saved = PyEval_SaveThread();
  probing_after_fork_child();
  PyEval_RestoreThread(saved);
  Py_RETURN_NONE;
}

PyMethodDef kShutdownDef = {"probing_shutdown", ShutdownFn, METH_NOARGS,
                            "seal the recorder's rings (at exit)"};
PyMethodDef kAfterForkDef = {"probing_after_fork_child", AfterForkChildFn, METH_NOARGS,
                             "the recorder in a forked child (PROBING=2: its own)"};

bool IsFinalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

uint64_t AsU64(PyObject* o) {
  unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (PyErr_Occurred()) {
    PyErr_Clear();
    return 0;
  }
  return v;
}

}  // namespace

bool PythonWorker::Start(std::string* why) {
  try {
    std::thread([this] { Run(); }).detach();
    return true;
  } catch (const std::exception& e) {
    *why = std::string("no thread for the recorder's Python work: ") + e.what();
    return false;
  }
}

void PythonWorker::RequestSoon() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    wake_requested_ = true;
  }
  wake_.notify_one();
}

void PythonWorker::Stop(int timeout_ms) {
  stop_ = true;
  { std::lock_guard<std::mutex> lock(wake_mu_); }  // a waiter sees stop_ or gets the notify
  wake_.notify_one();
  for (int waited = 0; busy_.load() && waited < timeout_ms; ++waited) usleep(1000);
}

void PythonWorker::Run() {
  pthread_setname_np(pthread_self(), "probing-python");
  native_id_ = static_cast<uint64_t>(syscall(SYS_gettid));
  // Wait for the interpreter (the start-up hook may run before it is fully ready).
  for (int i = 0; i < 1000 && !Py_IsInitialized(); ++i) usleep(10000);
  bool ready = false;
  int64_t next_full = 0;  // the next full gathering; in between, names only, when asked
  while (!stop_.load()) {
    // busy_ is raised before stop_ is checked, so Stop() either sees us busy and waits, or we
    // see stop_ and never touch the interpreter again.
    busy_ = true;
    if (stop_.load() || !Py_IsInitialized() || IsFinalizing()) {
      busy_ = false;
      break;
    }
    {
      std::lock_guard<std::mutex> lock(wake_mu_);
      wake_requested_ = false;  // this round answers the requests made so far
    }
    const bool full = MonotonicNs() >= next_full;
    {
      GilGuard gil;
      if (!ready) ready = Setup();
      if (ready) full ? Collect() : CollectNames();
    }
    busy_ = false;
    if (!ready) break;  // Setup logged why
    if (full) next_full = MonotonicNs() + 1'000'000'000;
    std::unique_lock<std::mutex> lock(wake_mu_);
    wake_.wait_for(lock, std::chrono::nanoseconds(std::max<int64_t>(0, next_full - MonotonicNs())),
                   [this] { return wake_requested_ || stop_.load(); });
  }
}

bool PythonWorker::Setup() {
  std::string why;
  PyRef shutdown(PyCFunction_New(&kShutdownDef, nullptr));
  PyRef after_fork(PyCFunction_New(&kAfterForkDef, nullptr));
  const std::string source = std::string(kSetupSource) + live::kFunctionNamesPython;
  PyRef ns(shutdown && after_fork
               ? static_cast<PyObject*>(RunPythonSource(
                     source.c_str(),
                     {{"_probing_shutdown", shutdown.get()},
                      {"_probing_after_fork_child", after_fork.get()}},
                     &why))
               : nullptr);
  if (!ns) {
    PyErr_Clear();
    Log("Python-side set-up failed (" + why + "); thread names and Python memory figures are off");
    return false;
  }
  PyObject* fn = PyDict_GetItemString(ns.get(), "_probing_collect");  // borrowed
  Py_XINCREF(fn);  // kept for the life of the process
  collect_fn_ = fn;
  PyObject* names = PyDict_GetItemString(ns.get(), "_probing_names");  // borrowed
  Py_XINCREF(names);  // kept for the life of the process
  names_fn_ = names;
  PyObject* allocations = PyDict_GetItemString(ns.get(), "_probing_allocations");  // borrowed
  Py_XINCREF(allocations);  // kept for the life of the process
  allocations_fn_ = allocations;
  if (!InstallPython(sink_, &why)) Log(why + "; PyTorch tracing is off");
  return fn != nullptr;
}

// Thread names into {native id: name}; false when threading is not imported.
static bool ReadNames(PyObject* names, std::map<uint64_t, std::string>* out) {
  PyObject *key, *value;
  Py_ssize_t pos = 0;
  while (PyDict_Check(names) && PyDict_Next(names, &pos, &key, &value)) {
    const char* name = PyUnicode_Check(value) ? PyUnicode_AsUTF8(value) : nullptr;
    if (name == nullptr) {
      PyErr_Clear();
      continue;
    }
    (*out)[AsU64(key)] = name;
  }
  return names != Py_None;
}

// Between full gatherings: thread names only, for a thread the sampler has just seen.
bool PythonWorker::CollectNames() {
  const int64_t started = MonotonicNs();
  auto* fn = static_cast<PyObject*>(names_fn_);
  PyObject* r = fn != nullptr ? PyObject_CallObject(fn, nullptr) : nullptr;
  if (r == nullptr) {
    PyErr_Clear();
    return false;
  }
  std::map<uint64_t, std::string> names;
  const bool loaded = ReadNames(r, &names);
  Py_DECREF(r);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.thread_names = std::move(names);
    stats_.threading_loaded = loaded;
    stats_.started_ns = started;
  }
  version_.fetch_add(1, std::memory_order_release);
  return true;
}

std::vector<AllocationSite> PythonWorker::TakeAllocations() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(allocations_, {});
}

std::string PythonWorker::AllocationsNote() const {
  if (!Config::Get().allocations())
    return "memory_allocations: off (probing.memory.allocations=false; tracemalloc's cost: "
           "docs/memory.md)";
  std::lock_guard<std::mutex> lock(mu_);
  return allocations_failure_.empty() ? "" : "memory_allocations: " + allocations_failure_;
}

void PythonWorker::Allocations() {
  const Config& config = Config::Get();
  const bool on = config.allocations() && failed_generation_ != config.generation();
  auto* fn = static_cast<PyObject*>(allocations_fn_);
  if (fn == nullptr || (!on && !tracing_ours_)) return;
  const int64_t now = MonotonicNs();
  if (on && now < next_snapshot_ns_) return;
  const int64_t ts = RealtimeNs();
  PyRef r(PyObject_CallFunction(fn, "iOO", config.allocations_top(), on ? Py_True : Py_False,
                                tracing_ours_ ? Py_True : Py_False));
  if (!on) {  // stopped (or it failed to stop: never tried again either way)
    PyErr_Clear();
    tracing_ours_ = false;
    return;
  }
  next_snapshot_ns_ = now + int64_t{config.allocations_interval()} * 1'000'000'000;
  PyObject* sites = r && PyTuple_Check(r.get()) && PyTuple_GET_SIZE(r.get()) == 2
                        ? PyTuple_GET_ITEM(r.get(), 1)
                        : nullptr;
  if (sites == nullptr || !PyList_Check(sites)) {
    // Off until the settings change; tracemalloc stopped if we started it.
    std::string why = "tracemalloc snapshot failed";
    if (PyErr_Occurred()) {
      PyObject *type, *value, *tb;
      PyErr_Fetch(&type, &value, &tb);
      PyRef t(type), v(value), b(tb);
      PyRef text(v ? PyObject_Str(v.get()) : nullptr);
      const char* msg = text ? PyUnicode_AsUTF8(text.get()) : nullptr;
      if (t) why += std::string(": ") + reinterpret_cast<PyTypeObject*>(t.get())->tp_name;
      if (msg != nullptr && *msg != '\0') why += std::string(": ") + msg;
      PyErr_Clear();
    }
    failed_generation_ = config.generation();
    Log(why + "; memory_allocations is off until a setting changes");
    if (tracing_ours_) {
      PyRef stop(PyObject_CallFunction(fn, "iOO", 0, Py_False, Py_True));
      PyErr_Clear();
      tracing_ours_ = false;
    }
    std::lock_guard<std::mutex> lock(mu_);
    allocations_failure_ = why + " (off until a setting changes)";
    return;
  }
  if (PyTuple_GET_ITEM(r.get(), 0) == Py_True) {
    tracing_ours_ = true;
    next_snapshot_ns_ = now + 1'000'000'000;  // the first snapshot soon, once it has seen some
  }
  std::vector<AllocationSite> out;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(sites); ++i) {
    PyObject* s = PyList_GET_ITEM(sites, i);  // borrowed: (function, file, line, bytes, blocks)
    if (!PyTuple_Check(s) || PyTuple_GET_SIZE(s) != 5) continue;
    const char* func = PyUnicode_Check(PyTuple_GET_ITEM(s, 0))
                           ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(s, 0))
                           : nullptr;
    const char* file = PyUnicode_Check(PyTuple_GET_ITEM(s, 1))
                           ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(s, 1))
                           : nullptr;
    if (func == nullptr || file == nullptr) {
      PyErr_Clear();
      continue;
    }
    AllocationSite a;
    a.ts = ts;
    a.function = func;
    a.file = file;
    a.line = static_cast<uint32_t>(AsU64(PyTuple_GET_ITEM(s, 2)));
    a.bytes = AsU64(PyTuple_GET_ITEM(s, 3));
    a.count = AsU64(PyTuple_GET_ITEM(s, 4));
    out.push_back(std::move(a));
  }
  PyErr_Clear();
  std::lock_guard<std::mutex> lock(mu_);
  allocations_failure_.clear();
  if (allocations_.size() < 10000)  // never unbounded, should the sampler stop taking them
    allocations_.insert(allocations_.end(), std::make_move_iterator(out.begin()),
                        std::make_move_iterator(out.end()));
}

bool PythonWorker::Collect() {
  PollPython();
  Allocations();
  const int64_t started = MonotonicNs();  // the names below are as of this moment or later
  auto* fn = static_cast<PyObject*>(collect_fn_);
  PyRef result(PyObject_CallObject(fn, nullptr));
  PyObject* r = result.get();
  if (r == nullptr || !PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 6) {
    PyErr_Clear();
    return false;
  }
  PythonStats s;
  s.taken_ns = MonotonicNs();
  s.started_ns = started;
  s.threading_loaded = ReadNames(PyTuple_GET_ITEM(r, 0), &s.thread_names);
  PyObject* counts = PyTuple_GET_ITEM(r, 1);
  for (Py_ssize_t i = 0; i < 3 && PyTuple_Check(counts) && i < PyTuple_GET_SIZE(counts); ++i)
    s.gc_count[i] = AsU64(PyTuple_GET_ITEM(counts, i));
  s.gc_collections = AsU64(PyTuple_GET_ITEM(r, 2));
  s.py_blocks = AsU64(PyTuple_GET_ITEM(r, 3));
  PyObject* cuda = PyTuple_GET_ITEM(r, 4);
  if (PyTuple_Check(cuda) && PyTuple_GET_SIZE(cuda) == 2) {
    s.cuda_allocated = AsU64(PyTuple_GET_ITEM(cuda, 0));
    s.cuda_reserved = AsU64(PyTuple_GET_ITEM(cuda, 1));
  }
  PyObject* metrics = PyTuple_GET_ITEM(r, 5);
  for (Py_ssize_t i = 0; PyList_Check(metrics) && i < PyList_GET_SIZE(metrics); ++i) {
    PyObject* m = PyList_GET_ITEM(metrics, i);  // (name, value, ts_ns), checked in Python
    if (!PyTuple_Check(m) || PyTuple_GET_SIZE(m) != 3) continue;
    const char* name = PyUnicode_Check(PyTuple_GET_ITEM(m, 0))
                           ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(m, 0))
                           : nullptr;
    double value = PyFloat_AsDouble(PyTuple_GET_ITEM(m, 1));
    long long ts = PyLong_AsLongLong(PyTuple_GET_ITEM(m, 2));
    if (name == nullptr || PyErr_Occurred()) {
      PyErr_Clear();
      continue;
    }
    s.metrics.push_back({name, value, static_cast<int64_t>(ts)});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = std::move(s);
  }
  version_.fetch_add(1, std::memory_order_release);
  return true;
}

}  // namespace probing::recorder
