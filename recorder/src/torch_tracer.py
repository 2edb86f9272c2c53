# PyTorch module tracing and variable tracking, run inside the target (embedded in the recorder
# library at build time; docs/torch.md says what it measures). Rows go to the recorder through
# the built-in module _probing_recorder, once per traced step. Standard library and torch only;
# never imports threading. Nothing here may raise into the user's code: every hook catches
# everything, and the first failure turns tracing off and is logged once.
import sys
import time
from collections import OrderedDict
import weakref
import _thread

_rec = sys.modules["_probing_recorder"]
_perf = time.perf_counter_ns
_FORWARD, _BACKWARD, _STEP = 0, 1, 2
_VALUE_CAP = 200


class _Slot:
    """A tensor whose gradient marks the start of some modules' backward (its producers) and the
    end of others' (its consumers)."""

    __slots__ = ("ref", "starts", "ends", "tracer")

    def __init__(self, tensor, tracer):
        self.ref = weakref.ref(tensor)
        self.starts = []
        self.ends = []
        self.tracer = tracer

    def __call__(self, grad):
        tr = self.tracer
        try:
            t = _perf()
            if not tr.backward_done_queued:
                tr.backward_seen()
            for row in self.starts:
                if row[3] is None:
                    row[3] = t
                    row[0] = tr.seq
                    tr.seq += 1
            for row in self.ends:
                if row[4] is None:
                    row[4] = t
        except Exception as e:  # never into autograd
            tr.fail(e)
        return None


class _Tracer:
    def __init__(self, torch):
        self.torch = torch
        self.Tensor = torch.Tensor
        self.names = {}  # id(module) -> (weakref, qualified name)
        self.local = _thread._local()
        self.step = 0
        self.seq = 0
        self.traced = False
        self.training = False  # an optimizer exists: steps are optimizer steps
        self.in_step = False
        self.rows = []  # [seq, module, stage, start, end, allocated, max_allocated, cached]
        self.backward_rows = []
        self.slots = {}
        self.backward_done_queued = False
        self.handles = None
        self.enabled = False
        self.rate = 1.0
        self.exprs = []
        self.generation = -1
        self.failed = False
        self.cuda = None
        self.fast_hooks = torch.__version__.startswith("1.")
        self.grad_enabled = torch.is_grad_enabled
        self.refresh()

    # -- settings and hooks ----------------------------------------------------------------
    def refresh(self):
        """Re-reads the settings when they changed; decides whether the coming step is traced."""
        enabled, rate, exprs, generation = _rec.settings()
        if generation != self.generation:
            self.generation = generation
            self.enabled, self.rate = enabled and not self.failed, rate
            self.exprs = []
            for item in exprs.split(","):
                item = item.strip()
                if "@" in item:
                    name, func = item.split("@", 1)
                    self.exprs.append((func.strip(), name.strip()))
        s, r = self.step, self.rate
        self.traced = self.enabled and int((s + 1) * r) > int(s * r)
        # Training: hooks only while a traced step runs. Inference: always, to see step edges.
        self.set_hooks(self.enabled and (self.traced or not self.training))
        _rec.state(self.step, self.traced, self.handles is not None)

    def set_hooks(self, on):
        if on and self.handles is None:
            m = self.torch.nn.modules.module
            self.handles = (m.register_module_forward_pre_hook(self.pre),
                            m.register_module_forward_hook(self.post))
        elif not on and self.handles is not None:
            for h in self.handles:
                h.remove()
            self.handles = None

    def fail(self, e):
        if not self.failed:
            self.failed = True
            self.enabled = False
            _rec.log("PyTorch tracing turned off after an error: %s: %s" % (type(e).__name__, e))
            try:
                self.set_hooks(False)
            except Exception:
                pass

    # -- names ---------------------------------------------------------------------------------
    def name_of(self, module, stack):
        entry = self.names.get(id(module))
        if entry is not None and entry[0]() is module:
            return entry[1]
        if not stack:  # outermost: name it and everything under it
            for qual, sub in module.named_modules():
                e = self.names.get(id(sub))
                if e is None or e[0]() is not sub:
                    self.names[id(sub)] = (weakref.ref(sub), qual or type(sub).__name__)
            return self.names[id(module)][1]
        name = stack[-1][0][1] + "." + type(module).__name__  # not a registered child
        self.names[id(module)] = (weakref.ref(module), name)
        return name

    # -- forward -------------------------------------------------------------------------------
    def pre(self, module, inputs):
        try:
            local = self.local
            stack = getattr(local, "stack", None)
            if stack is None:
                stack = local.stack = []
            if not self.traced:
                stack.append(None)
                return None
            row = [self.seq, self.name_of(module, stack), _FORWARD, _perf(), None, None, None, None]
            self.seq += 1
            stack.append((row, inputs))
        except Exception as e:
            self.fail(e)
        return None

    def post(self, module, inputs, output):
        try:
            stack = self.local.stack
            if not stack:
                return None  # hooks came on during this call
            top = stack.pop()
            if top is not None:
                row = top[0]
                row[4] = _perf()
                if self.cuda:
                    self.memory(row)
                self.rows.append(row)
                if self.grad_enabled():
                    Tensor = self.Tensor
                    out = output if isinstance(output, Tensor) else self.first_tensor(output)
                    if out is not None and out.requires_grad:
                        self.backward_row(row[1], inputs, out)
            if not stack and not self.training:
                self.end_step(None)  # inference: one outermost forward is a step
        except Exception as e:
            self.fail(e)
        return None

    def memory(self, row):
        c = self.torch.cuda
        row[5] = c.memory_allocated()
        row[6] = c.max_memory_allocated()
        row[7] = c.memory_reserved()

    # -- backward ------------------------------------------------------------------------------
    def first_tensor(self, value):
        if isinstance(value, self.Tensor):
            return value
        if isinstance(value, (tuple, list)):
            for v in value:
                if isinstance(v, self.Tensor):
                    return v
        return None

    def slot(self, tensor):
        s = self.slots.get(id(tensor))
        if s is None or s.ref() is not tensor:
            s = self.slots[id(tensor)] = _Slot(tensor, self)
            if self.fast_hooks:
                try:
                    # What Tensor.register_hook does on torch 1.x, without its handle and
                    # checks: 1.5 us instead of 7 per module call.
                    hooks = tensor._backward_hooks
                    if hooks is None:
                        hooks = tensor._backward_hooks = OrderedDict()
                        if tensor.grad_fn is not None:
                            tensor.grad_fn._register_hook_dict(tensor)
                    hooks[s] = s
                    return s
                except Exception:
                    self.fast_hooks = False
            tensor.register_hook(s)
        return s

    def backward_row(self, name, inputs, out):
        """A module's backward starts when its output's gradient is ready and ends when its
        input's is (or, for an input needing no gradient, when the backward pass ends). Tensor
        hooks only: they neither wrap outputs nor break in-place operations."""
        row = [None, name, _BACKWARD, None, None, None, None, None]
        self.slot(out).starts.append(row)
        inp = inputs[0] if inputs and isinstance(inputs[0], self.Tensor) else None
        if inp is None and inputs:
            inp = self.first_tensor(inputs)
        if inp is not None and inp.requires_grad:
            self.slot(inp).ends.append(row)
        self.backward_rows.append(row)

    def backward_seen(self):
        self.backward_done_queued = True
        self.torch.autograd.Variable._execution_engine.queue_callback(self.backward_done)

    def backward_done(self):
        t = _perf()
        self.backward_done_queued = False
        for row in self.backward_rows:
            if row[3] is not None and row[4] is None:
                row[4] = t

    # -- steps ---------------------------------------------------------------------------------
    def optimizer_step(self, fn, args, kwargs):
        if self.in_step:  # a subclass calling super().step()
            return fn(*args, **kwargs)
        self.in_step = True
        self.training = True
        start = _perf()
        try:
            return fn(*args, **kwargs)
        finally:
            self.in_step = False
            try:
                self.end_step((type(args[0]).__name__, start, _perf()))
            except Exception as e:
                self.fail(e)

    def end_step(self, step_row):
        if self.traced:
            if step_row is not None:
                self.rows.append([self.seq, step_row[0], _STEP, step_row[1], step_row[2],
                                  None, None, None])
            self.flush()
        self.step += 1
        self.seq = 0
        self.rows = []
        self.backward_rows = []
        self.slots = {}
        self.local.stack = []
        self.cuda = self.torch.cuda.is_initialized()
        self.refresh()

    def flush(self):
        rows = self.rows
        for row in self.backward_rows:
            if row[3] is not None and row[4] is not None:
                rows.append(row)
        offset = time.time_ns() - _perf()
        tid = _thread.get_native_id()
        _rec.torch_rows(rows, offset, tid, self.step)
        if self.exprs:
            _rec.variable_rows(self.variables(offset), tid, self.step)

    def variables(self, offset):
        out = []
        now = _perf() + offset
        wanted = {}
        for func, name in self.exprs:
            wanted.setdefault(func, []).append(name)
        f = sys._getframe(2)
        while f is not None:
            names = wanted.get(f.f_code.co_name)
            if names:
                local = f.f_locals
                for name in names:
                    if name in local:
                        out.append((now, f.f_code.co_name, name, self.value(local[name])))
            f = f.f_back
        return out

    def value(self, v):
        try:
            if isinstance(v, self.Tensor) and v.numel() == 1:
                v = v.item()
            text = repr(v)
        except Exception as e:
            text = "<repr failed: %s>" % type(e).__name__
        return text[:_VALUE_CAP]


_tracer = None


def _wrap_step(fn):
    if getattr(fn, "_probing_wrapped", False):
        return fn

    def step(*args, **kwargs):
        tr = _tracer
        if tr is None:
            return fn(*args, **kwargs)
        return tr.optimizer_step(fn, args, kwargs)

    step.__name__ = getattr(fn, "__name__", "step")
    step.__qualname__ = getattr(fn, "__qualname__", "step")
    step.__doc__ = getattr(fn, "__doc__", None)
    step.__wrapped__ = fn
    step.__dict__.update(getattr(fn, "__dict__", {}))
    step._probing_wrapped = True
    return step


def _wrap_optimizers(optim):
    """Wraps `step` of every optimizer class, now and defined later (torch 1.13 has no global
    optimizer hooks)."""
    base = optim.Optimizer
    todo = [base]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "step" in cls.__dict__:
            cls.step = _wrap_step(cls.__dict__["step"])
    previous = base.__dict__.get("__init_subclass__")

    def __init_subclass__(cls, **kwargs):
        if previous is not None:
            previous.__func__(cls, **kwargs)
        else:
            super(base, cls).__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = _wrap_step(cls.__dict__["step"])

    base.__init_subclass__ = classmethod(__init_subclass__)
    init = base.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if _tracer is not None:
            _tracer.training = True
            _tracer.refresh()

    if not getattr(init, "_probing_wrapped", False):
        __init__._probing_wrapped = True
        base.__init__ = __init__


def _install(torch):
    global _tracer
    if _tracer is not None:
        return
    try:
        _wrap_optimizers(torch.optim)
        _tracer = _Tracer(torch)
    except Exception as e:
        _rec.log("PyTorch tracing not started: %s: %s" % (type(e).__name__, e))


def _ready(module):
    return getattr(getattr(module, "optim", None), "Optimizer", None) is not None and hasattr(
        getattr(getattr(module, "nn", None), "modules", None), "module")


class _TorchFinder:
    """Installs the tracer as soon as `import torch` finishes, in the importing thread."""

    def __init__(self):
        self.busy = _thread._local()

    def find_spec(self, name, path=None, target=None):
        if name != "torch" or getattr(self.busy, "on", False):
            return None  # (another finder may look torch up again while we ask it)
        self.busy.on = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self.busy.on = False
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        real = loader.exec_module

        def exec_module(module):
            real(module)
            if _ready(module):
                _install(module)

        loader.exec_module = exec_module
        return spec


def probing_torch_poll():
    """Called at start and then about once a second: installs when torch is (fully) imported."""
    if _tracer is not None:
        return
    torch = sys.modules.get("torch")
    if torch is not None and _ready(torch):
        _install(torch)
    elif not any(isinstance(f, _TorchFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchFinder())
