// RAII for the CPython state the recorder touches by hand: the GIL (PyGILState_Ensure /
// Release) and owned references (Py_XDECREF on every path). Include after <Python.h>.
//
//   GilGuard gil;                                  // this thread holds the GIL until scope end
//   PyRef r(PyObject_CallObject(fn, nullptr));     // a new reference, or null with an error set
//   if (!r) { PyErr_Clear(); return; }
//   PyRef s(PyObject_Str(r.get()));
#pragma once

#include <Python.h>

#include <utility>

namespace probing::recorder {

class GilGuard {
 public:
  GilGuard() : state_(PyGILState_Ensure()) {}
  ~GilGuard() { PyGILState_Release(state_); }
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
      Py_XDECREF(p_);
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  ~PyRef() { Py_XDECREF(p_); }

  PyObject* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }
  // Gives the reference to the caller.
  PyObject* release() { return std::exchange(p_, nullptr); }

 private:
  PyObject* p_ = nullptr;
};

}  // namespace probing::recorder
