#include "collectives.h"

#include <structmember.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include "probing/base/clock.h"
#include "py_ref.h"

#if PY_VERSION_HEX < 0x03090000  // vectorcall was provisional in 3.8
#define PyObject_Vectorcall _PyObject_Vectorcall
#define Py_TPFLAGS_HAVE_VECTORCALL _Py_TPFLAGS_HAVE_VECTORCALL
#endif

namespace probing::recorder {
namespace {

// Everything here but `progress` runs with the GIL held. The references it holds are taken by
// hand and kept for the life of the process (entries are never erased): never given back at
// exit, when the interpreter may already be finalized.
struct State {
  PythonSink* sink = nullptr;
  PyObject* seq_of = nullptr;  // seq_of(group) -> (group name, its sequence-number method); owned
  PyObject* world_owner = nullptr;  // c10d.GroupMember: .WORLD is the default group; owned
  PyObject* s_world = nullptr;
  // Groups already named: the group (a strong reference, so that its address is never reused
  // while here) -> its name and its bound _get_sequence_number_for_group. A call with no group
  // looks up the default one (GroupMember.WORLD), so a new default group is a new entry.
  struct Group {
    std::string name;
    PyObject* seq = nullptr;  // owned
  };
  std::unordered_map<PyObject*, Group> groups;
  PyTypeObject* call_type = nullptr;
  PyObject* s_numel = nullptr;
  PyObject* s_element_size = nullptr;
  PyObject* s_dtype = nullptr;
  struct Dtype {
    std::string name;
    uint64_t element_size = 0;  // 0: not known yet
  };
  std::unordered_map<PyObject*, Dtype> dtypes;  // dtypes are singletons
  std::unordered_map<std::string, uint64_t> accounted;     // group -> last seq in a row
  // group -> the sequence numbers Python calls under way started from: the counter already
  // includes theirs, which their own rows will take, so counting stops before them.
  std::unordered_map<std::string, std::multiset<uint64_t>> in_flight;
  bool failed = false;
} g;

std::mutex progress_mu;  // guards progress (read by the control server without the GIL)
Progress progress;

uint64_t ThreadId() {
  thread_local const uint64_t tid = static_cast<uint64_t>(syscall(SYS_gettid));
  return tid;
}

// One tensor's (bytes, elements, dtype name); false when `t` is not a tensor. Its dtype is
// read once per call, its element size once per dtype.
bool Describe(PyObject* t, uint64_t* bytes, uint64_t* numel, std::string* dtype) {
  if (t == nullptr) return false;
  State::Dtype* known;
  {
    PyRef d(PyObject_GetAttr(t, g.s_dtype));
    if (!d) {
      PyErr_Clear();
      return false;
    }
    auto it = g.dtypes.find(d.get());
    if (it == g.dtypes.end()) {
      State::Dtype info;
      {
        PyRef s(PyObject_Str(d.get()));
        const char* c = s ? PyUnicode_AsUTF8(s.get()) : nullptr;
        info.name = c != nullptr ? c : "";
      }
      {
        PyRef e(PyObject_CallMethodObjArgs(t, g.s_element_size, nullptr));
        if (e && PyLong_Check(e.get())) info.element_size = PyLong_AsUnsignedLongLong(e.get());
      }
      if (PyErr_Occurred()) PyErr_Clear();
      if (info.element_size == 0) return false;  // not a tensor's dtype
      it = g.dtypes.emplace(d.get(), std::move(info)).first;
      Py_INCREF(d.get());  // the map's, for ever: the key must stay this dtype
    }
    known = &it->second;
  }
  PyRef n(PyObject_CallMethodObjArgs(t, g.s_numel, nullptr));
  const bool ok = n && PyLong_Check(n.get());
  if (ok) {
    const uint64_t elements = PyLong_AsUnsignedLongLong(n.get());
    *numel += elements;
    *bytes += elements * known->element_size;
    if (dtype->empty()) *dtype = known->name;
  }
  if (PyErr_Occurred()) PyErr_Clear();
  return ok;
}

// A tensor or a list/tuple of them.
void DescribeAny(PyObject* v, uint64_t* bytes, uint64_t* numel, std::string* dtype) {
  if (v == nullptr) return;
  if (PyList_Check(v) || PyTuple_Check(v)) {
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
    for (Py_ssize_t i = 0; i < n; ++i)
      Describe(PySequence_Fast_GET_ITEM(v, i), bytes, numel, dtype);
    return;
  }
  Describe(v, bytes, numel, dtype);
}

// The argument at `pos` or named `kw` (borrowed, or null).
PyObject* Arg(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, Py_ssize_t pos,
              PyObject* kw) {
  if (pos >= 0 && pos < nargs) return args[pos];
  if (kwnames == nullptr || kw == nullptr) return nullptr;
  const Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t i = 0; i < nk; ++i)
    if (PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, i), kw) == 0) return args[nargs + i];
  return nullptr;
}

// The process group a call names (none: the default one), known by name and sequence-number
// method; null when there is none (not initialized) or it cannot be read. No error is left set.
const State::Group* GroupOf(PyObject* group) {
  PyRef world;  // the default group, when the call names none; `group` is borrowed otherwise
  if (group == nullptr || group == Py_None) {
    if (g.world_owner == nullptr) return nullptr;
    world = PyRef(PyObject_GetAttr(g.world_owner, g.s_world));
    if (!world || world.get() == Py_None) {
      PyErr_Clear();
      return nullptr;
    }
    group = world.get();
  }
  auto it = g.groups.find(group);
  if (it != g.groups.end()) return &it->second;
  if (g.seq_of == nullptr) return nullptr;
  PyRef r(PyObject_CallFunctionObjArgs(g.seq_of, group, nullptr));
  const bool ok = r && PyTuple_Check(r.get()) && PyTuple_GET_SIZE(r.get()) == 2 &&
                  PyUnicode_Check(PyTuple_GET_ITEM(r.get(), 0)) &&
                  PyCallable_Check(PyTuple_GET_ITEM(r.get(), 1));
  const State::Group* out = nullptr;
  if (ok) {
    const char* name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(r.get(), 0));
    State::Group info;
    info.name = name != nullptr ? name : "";
    info.seq = PyTuple_GET_ITEM(r.get(), 1);
    auto [pos, added] = g.groups.emplace(group, std::move(info));
    if (added) {  // the map's, for ever: the group's address is never reused while it is a key
      Py_INCREF(group);
      Py_INCREF(pos->second.seq);
    }
    out = &pos->second;
  }
  if (PyErr_Occurred()) PyErr_Clear();
  return out;
}

// The group's name and its sequence number now; false (and nothing set) when it fails.
bool SeqOf(PyObject* group, std::string* name, uint64_t* seq) {
  const State::Group* info = GroupOf(group);
  if (info == nullptr) return false;
  PyRef r(PyObject_CallObject(info->seq, nullptr));
  const bool ok = r && PyLong_Check(r.get());
  if (ok) {
    *name = info->name;
    *seq = PyLong_AsUnsignedLongLong(r.get());
  }
  if (PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  return ok;
}

// Rows for the sequence numbers of `group` no call took, up to `seq` (exclusive when a call is
// about to take `seq` itself): issued from C++, known only from the group's counter.
void Count(const std::string& group, uint64_t seq, bool up_to_and_including,
           std::vector<CollectiveRow>* rows, int64_t now_ns, uint64_t step) {
  auto it = g.accounted.find(group);
  if (it == g.accounted.end()) {  // first sight: what came before is not ours to count
    g.accounted[group] = up_to_and_including ? seq : (seq > 0 ? seq - 1 : 0);
    return;
  }
  const uint64_t last = up_to_and_including ? seq : seq - 1;
  for (uint64_t s = it->second + 1; s <= last && rows->size() < 100000; ++s) {
    CollectiveRow r;
    r.ts_ns = now_ns;
    r.group = group;
    r.seq = s;
    r.step = step;
    r.counted = true;
    r.thread = 0;
    rows->push_back(std::move(r));
  }
  if (last > it->second) it->second = last;
}

void NoteGroup(const std::string& group, uint64_t seq, int64_t now_ns, int64_t calls) {
  std::lock_guard<std::mutex> lock(progress_mu);
  GroupProgress& p = progress.groups[group];
  if (seq != p.seq) {
    p.seq = seq;
    p.changed_ns = now_ns;
  }
  progress.collectives += calls;
}

// The wrapper: a callable in place of one torch.distributed function.
struct CallObject {
  PyObject_HEAD PyObject* orig;
  PyObject* op;       // str
  PyObject* payload_kw;  // str or None
  PyObject* group_kw;
  PyObject* peer_kw;
  Py_ssize_t payload_pos, group_pos, peer_pos, async_pos;
  vectorcallfunc vectorcall;
};

struct CallObject;
void Record(CallObject* c, PyObject* const* args, Py_ssize_t n, PyObject* kwnames,
            PyObject* group, const std::string& group_name, const char* op, uint64_t thread,
            int64_t enter, int64_t end, uint64_t before, bool returned);

PyObject* CollectiveCall(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  auto* c = reinterpret_cast<CallObject*>(self);
  if (g.failed || g.sink == nullptr) return PyObject_Vectorcall(c->orig, args, nargsf, kwnames);
  const Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  PyObject* group = Arg(args, n, kwnames, c->group_pos, c->group_kw);
  std::string group_name;
  uint64_t before = 0;
  bool known = false;
  const char* op = PyUnicode_AsUTF8(c->op);
  if (op == nullptr) PyErr_Clear();
  const uint64_t thread = ThreadId();
  const int64_t enter = RealtimeNs();
  // Our bookkeeping never throws into the call: on any failure the wrapper passes calls
  // straight through from then on.
  try {
    known = SeqOf(group, &group_name, &before);
    if (known) {
      std::lock_guard<std::mutex> lock(progress_mu);
      progress.current = Progress::Current{op != nullptr ? op : "", group_name, before + 1, enter,
                                           thread};
    }
    if (known) g.in_flight[group_name].insert(before);
  } catch (...) {
    g.failed = true;
    known = false;
  }
  PyObject* out = PyObject_Vectorcall(c->orig, args, nargsf, kwnames);
  const int64_t end = RealtimeNs();
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  if (out == nullptr) PyErr_Fetch(&type, &value, &tb);  // our work must not see or lose it
  try {
    if (known) {
      auto& mine = g.in_flight[group_name];
      auto it = mine.find(before);
      if (it != mine.end()) mine.erase(it);
    }
    {
      std::lock_guard<std::mutex> lock(progress_mu);
      if (progress.current && progress.current->thread == thread) progress.current.reset();
    }
    if (known) Record(c, args, n, kwnames, group, group_name, op, thread, enter, end, before,
                      out != nullptr);
  } catch (...) {
    g.failed = true;
  }
  if (PyErr_Occurred()) PyErr_Clear();
  if (out == nullptr) PyErr_Restore(type, value, tb);
  return out;
}

// The row of one call (and rows for the numbers calls from C++ took before it).
void Record(CallObject* c, PyObject* const* args, Py_ssize_t n, PyObject* kwnames,
            PyObject* group, const std::string& group_name, const char* op, uint64_t thread,
            int64_t enter, int64_t end, uint64_t before, bool returned) {
  {
    CollectiveRow row;
    row.ts_ns = enter;
    row.thread = thread;
    row.group = group_name;
    row.op = op != nullptr ? op : "";
    PyObject* async_flag = Arg(args, n, kwnames, c->async_pos, nullptr);
    if (async_flag == nullptr && kwnames != nullptr) {
      static PyObject* s_async = PyUnicode_InternFromString("async_op");
      async_flag = Arg(args, n, kwnames, -1, s_async);
    }
    row.async_op = async_flag != nullptr && PyObject_IsTrue(async_flag) == 1;
    row.end_ns = row.async_op ? 0 : end;  // an async call returns before the work is done
    DescribeAny(Arg(args, n, kwnames, c->payload_pos, c->payload_kw), &row.bytes, &row.numel,
                &row.dtype);
    PyObject* peer = Arg(args, n, kwnames, c->peer_pos, c->peer_kw);
    if (peer != nullptr && PyLong_Check(peer)) row.peer = PyLong_AsLongLong(peer);
    if (PyErr_Occurred()) PyErr_Clear();
    std::string name;
    uint64_t after = before;
    SeqOf(group, &name, &after);
    row.seq = after;
    row.step = GetTorchState().step;
    std::vector<CollectiveRow> rows;
    // A failed call (it raised) took no sequence number worth a row of its own.
    if (returned || after != before) {
      Count(group_name, after, false, &rows, enter, row.step);
      auto it = g.accounted.find(group_name);
      if (it != g.accounted.end() && after > it->second) it->second = after;
      rows.push_back(std::move(row));
      NoteGroup(group_name, after, end, static_cast<int64_t>(rows.size()));
      g.sink->CollectiveRows(std::move(rows));
    }
  }
}

void CollectiveCallDealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  auto* c = reinterpret_cast<CallObject*>(self);
  // The object's own references (NewCollectiveCall).
  Py_XDECREF(c->orig);
  Py_XDECREF(c->op);
  Py_XDECREF(c->payload_kw);
  Py_XDECREF(c->group_kw);
  Py_XDECREF(c->peer_kw);
  PyObject_Free(self);
  Py_DECREF(type);
}

// collective_call(orig, op, payload_pos, payload_kw, group_pos, group_kw, peer_pos, peer_kw,
// async_pos) -> the wrapper. Positions are -1 when the function has no such argument.
PyObject* NewCollectiveCall(PyObject*, PyObject* args) {
  PyObject *orig, *op, *payload_kw, *group_kw, *peer_kw;
  Py_ssize_t payload_pos, group_pos, peer_pos, async_pos;
  if (!PyArg_ParseTuple(args, "OUnOnOnOn", &orig, &op, &payload_pos, &payload_kw, &group_pos,
                        &group_kw, &peer_pos, &peer_kw, &async_pos))
    return nullptr;
  auto* c = PyObject_New(CallObject, g.call_type);
  if (c == nullptr) return nullptr;
  // The object's own references, until CollectiveCallDealloc; a keyword that is None is kept
  // as null.
  auto own_keyword = [](PyObject* o) -> PyObject* {
    if (o == Py_None) return nullptr;
    Py_INCREF(o);
    return o;
  };
  Py_INCREF(orig);
  c->orig = orig;
  Py_INCREF(op);
  c->op = op;
  c->payload_kw = own_keyword(payload_kw);
  c->group_kw = own_keyword(group_kw);
  c->peer_kw = own_keyword(peer_kw);
  c->payload_pos = payload_pos;
  c->group_pos = group_pos;
  c->peer_pos = peer_pos;
  c->async_pos = async_pos;
  c->vectorcall = CollectiveCall;  // catches everything of its own (never the call's result)
  return reinterpret_cast<PyObject*>(c);
}

// collectives_configure(seq_of, group_member): how to name a group and read its sequence
// number (seq_of(group) -> (name, bound _get_sequence_number_for_group)), and where the default
// group is (group_member.WORLD).
PyObject* Configure(PyObject*, PyObject* args) {
  PyObject *seq_of, *owner;
  if (!PyArg_ParseTuple(args, "OO", &seq_of, &owner)) return nullptr;
  // Kept for the life of the process (a later configure replaces them).
  Py_XDECREF(g.seq_of);
  Py_XDECREF(g.world_owner);
  Py_INCREF(seq_of);
  Py_INCREF(owner);
  g.seq_of = seq_of;
  g.world_owner = owner;
  if (g.s_world == nullptr) g.s_world = PyUnicode_InternFromString("WORLD");
  Py_RETURN_NONE;
}

// collectives_count(group): rows for the calls issued from C++ since the last look.
PyObject* CountFn(PyObject*, PyObject* group) {
  std::string name;
  uint64_t seq = 0;
  if (g.sink == nullptr || !SeqOf(group, &name, &seq)) Py_RETURN_NONE;
  auto flying = g.in_flight.find(name);
  if (flying != g.in_flight.end() && !flying->second.empty())
    seq = std::min(seq, *flying->second.begin());
  std::vector<CollectiveRow> rows;
  const int64_t now = RealtimeNs();
  Count(name, seq, true, &rows, now, GetTorchState().step);
  NoteGroup(name, seq, now, static_cast<int64_t>(rows.size()));
  if (!rows.empty()) g.sink->CollectiveRows(std::move(rows));
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"collective_call", PROBING_CATCH_ALL(NewCollectiveCall), METH_VARARGS,
     "a torch.distributed function timing and describing its calls"},
    {"collectives_configure", PROBING_CATCH_ALL(Configure), METH_VARARGS,
     "(seq_of(group) -> (name, sequence-number method), GroupMember)"},
    {"collectives_count", PROBING_CATCH_ALL(CountFn), METH_O, "rows for the calls issued from C++ since the last look"},
    {nullptr, nullptr, 0, nullptr}};

PyObject* OrigAttr(PyObject* self, void* name) {
  return PyObject_GetAttrString(reinterpret_cast<CallObject*>(self)->orig,
                                static_cast<const char*>(name));
}
PyGetSetDef kGetSet[] = {
    {"__name__", PROBING_CATCH_ALL(OrigAttr), nullptr, nullptr, const_cast<char*>("__name__")},
    {"__qualname__", PROBING_CATCH_ALL(OrigAttr), nullptr, nullptr, const_cast<char*>("__qualname__")},
    {"__doc__", PROBING_CATCH_ALL(OrigAttr), nullptr, nullptr, const_cast<char*>("__doc__")},
    {"__module__", PROBING_CATCH_ALL(OrigAttr), nullptr, nullptr, const_cast<char*>("__module__")},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};
PyMemberDef kMembers[] = {
    {"__wrapped__", T_OBJECT, offsetof(CallObject, orig), READONLY, nullptr},
#if PY_VERSION_HEX >= 0x03090000
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(CallObject, vectorcall), READONLY, nullptr},
#endif
    {nullptr, 0, 0, 0, nullptr}};
PyType_Slot kSlots[] = {{Py_tp_dealloc, reinterpret_cast<void*>(CollectiveCallDealloc)},
                        {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
                        {Py_tp_members, kMembers},
                        {Py_tp_getset, kGetSet},
                        {0, nullptr}};
PyType_Spec kSpec = {"_probing_recorder.CollectiveCall", sizeof(CallObject), 0,
                     Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL, kSlots};

}  // namespace

void SetCollectivesSink(PythonSink* sink) { g.sink = sink; }

bool AddCollectiveHooks(PyObject* module) {
  if (g.call_type == nullptr) {
    g.call_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&kSpec));
    if (g.call_type == nullptr) return false;
#if PY_VERSION_HEX < 0x03090000
    g.call_type->tp_vectorcall_offset = offsetof(CallObject, vectorcall);
#endif
    g.s_numel = PyUnicode_InternFromString("numel");
    g.s_element_size = PyUnicode_InternFromString("element_size");
    g.s_dtype = PyUnicode_InternFromString("dtype");
  }
  return PyModule_AddFunctions(module, kMethods) == 0;
}

Progress GetProgress() {
  std::lock_guard<std::mutex> lock(progress_mu);
  return progress;
}

void ObserveStep(uint64_t step, int64_t now_ns) {
  std::lock_guard<std::mutex> lock(progress_mu);
  if (progress.step_changed_ns == 0 || step != progress.step) {
    progress.step = step;
    progress.step_changed_ns = now_ns;
  }
}

}  // namespace probing::recorder
