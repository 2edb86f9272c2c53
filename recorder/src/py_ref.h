// RAII for the CPython state the recorder touches by hand: the GIL (PyGILState_Ensure /
// Release) and owned references (Py_XDECREF on every path); and the guard every function the
// interpreter calls goes through (PROBING_CATCH_ALL). Include after <Python.h>.
//
//   GilGuard gil;                                  // this thread holds the GIL until scope end
//   PyRef r(PyObject_CallObject(fn, nullptr));     // a new reference, or null with an error set
//   if (!r) { PyErr_Clear(); return; }
//   PyRef s(PyObject_Str(r.get()));
#pragma once

#include <Python.h>

#include <exception>
#include <new>
#include <utility>

namespace probing::recorder {

// A thread that waits for the GIL while the interpreter finalizes is ended by CPython with
// pthread_exit, which unwinds C++ frames: the destructors below then run on a thread that does
// not hold the GIL, and must touch nothing (PyGILState_Release would abort the process: "thread
// state must be current when releasing"). PyGILState_Check says whether this thread holds it.
class GilGuard {
 public:
  GilGuard() : state_(PyGILState_Ensure()) {}
  ~GilGuard() {
    if (PyGILState_Check()) PyGILState_Release(state_);
  }
  GilGuard(const GilGuard&) = delete;
  GilGuard& operator=(const GilGuard&) = delete;

 private:
  PyGILState_STATE state_;
};

// Owns one reference (a new one: what PyObject_Call*, PyObject_Str, PyUnicode_From* return).
// Borrowed references (PyDict_GetItemString, PyTuple_GET_ITEM) are never put in one. Used only
// with the GIL held.
class PyRef {
 public:
  PyRef() = default;
  explicit PyRef(PyObject* owned) : p_(owned) {}
  PyRef(PyRef&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  PyRef& operator=(PyRef&& o) noexcept {
    if (this != &o) {
      Py_XDECREF(p_);  // with the GIL: not while unwinding
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  ~PyRef() {
    if (p_ != nullptr && PyGILState_Check()) Py_DECREF(p_);  // see GilGuard
  }

  PyObject* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }
  // Gives the reference to the caller.
  PyObject* release() { return std::exchange(p_, nullptr); }

 private:
  PyObject* p_ = nullptr;
};

// What the interpreter calls (a method, a slot, a vectorcall): a C++ exception never leaves into
// it (that would end the host process); it becomes a Python exception. The GIL is held.
//   {"job", PROBING_CATCH_ALL(JobFn), METH_VARARGS, "..."}
template <typename Sig, Sig* F>
struct CatchAll;
template <typename... A, PyObject* (*F)(A...)>
struct CatchAll<PyObject*(A...), F> {
  static PyObject* Call(A... a) noexcept {
    try {
      return F(a...);
    } catch (const std::bad_alloc&) {
      return PyErr_NoMemory();
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
      PyErr_SetString(PyExc_RuntimeError, "probing recorder: unexpected error");
    }
    return nullptr;
  }
};
#define PROBING_CATCH_ALL(f) (&::probing::recorder::CatchAll<decltype(f), f>::Call)

}  // namespace probing::recorder
