# PyTorch module tracing and variable tracking, run inside the target (embedded in the recorder
# library at build time; docs/torch.md says what it measures). Rows go to the recorder through
# the built-in module _probing_recorder, whose C functions (torch_hooks.cc) are the module hooks
# and keep the step's rows. Standard library and torch only; never imports threading. Nothing
# here may raise into the user's code: the first failure turns tracing off and is logged once.
import sys
import time
import _thread

_rec = sys.modules["_probing_recorder"]
_perf = time.perf_counter_ns
_VALUE_CAP = 200


class _Tracer:
    def __init__(self, torch):
        self.torch = torch
        self.Tensor = torch.Tensor
        self.step = 0
        self.traced = False
        self.training = False  # an optimizer exists: steps are optimizer steps
        self.in_step = False
        self.handles = None
        self.enabled = False
        self.rate = 1.0
        self.exprs = []
        self.generation = -1
        self.failed = False
        self.cuda = False
        # How module calls are seen (probing.torch.calls): "wrap", nn.Module.__call__ replaced
        # while tracing is on (one C call per module call, and torch keeps its fast path; the
        # default on torch 1.x), or "hooks", global module hooks (the default on 2.x, where
        # torch.compile knows them).
        self.wrap_call = False
        # The rows, the per-call hooks and backward timing live in C (torch_hooks.cc).
        # torch 1.x: tensor hooks are added to _backward_hooks directly (what
        # Tensor.register_hook does, without building its handle); else through it.
        _rec.configure(self.resolve, self.inference_end, torch.Tensor, torch.is_grad_enabled,
                       torch.autograd.Variable._execution_engine.queue_callback, self.memory,
                       torch.__version__.startswith("1."))
        self.refresh()

    # -- settings and hooks ----------------------------------------------------------------
    def refresh(self):
        """Re-reads the settings when they changed; decides whether the coming step is traced."""
        settings = _rec.settings(self.generation)
        if settings is not None:
            enabled, self.rate, exprs, calls, self.generation = settings
            self.enabled = enabled and not self.failed
            self.exprs = []
            for item in exprs.split(","):
                item = item.strip()
                if "@" in item:
                    name, func = item.split("@", 1)
                    self.exprs.append((func.strip(), name.strip()))
            wrap = calls == "wrap" or (calls == "auto" and self.torch.__version__.startswith("1."))
            if wrap != self.wrap_call:
                self.set_hooks(False)
                self.wrap_call = wrap
        s, r = self.step, self.rate
        self.traced = self.enabled and int((s + 1) * r) > int(s * r)
        # Training: hooks only while a traced step runs (the wrapper stays while enabled and
        # passes calls straight through in other steps). Inference: always, to see step edges.
        self.set_hooks(self.enabled and (self.traced or not self.training or self.wrap_call))
        _rec.begin(self.traced, self.training, self.cuda, self.handles is not None)
        _rec.state(self.step, self.traced, self.handles is not None)

    def set_hooks(self, on):
        m = self.torch.nn.modules.module
        if on and self.handles is None:
            if self.wrap_call:
                orig = m.Module.__dict__["__call__"]
                wrapper = _rec.module_call(orig)
                m.Module.__call__ = wrapper
                self.handles = (orig, wrapper)
            else:
                self.handles = (m.register_module_forward_pre_hook(_rec.pre),
                                m.register_module_forward_hook(_rec.post))
        elif not on and self.handles is not None:
            if self.wrap_call:
                orig, wrapper = self.handles
                if m.Module.__dict__.get("__call__") is wrapper:
                    m.Module.__call__ = orig
                # else: replaced after us (and maybe calling us): the wrapper stays and, with
                # begin(..., hooked=False), passes every call straight through.
            else:
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
                _rec.begin(False, self.training, False, False)
            except Exception:
                pass

    # -- names (asked by the C hooks on a miss) ------------------------------------------------
    def resolve(self, module, parent):
        """[(module, qualified name)] to remember: everything under an outermost module (itself
        named by its class), or one module called under a parent it is not registered in."""
        if parent is None:
            return [(sub, qual or type(sub).__name__) for qual, sub in module.named_modules()]
        return [(module, parent + "." + type(module).__name__)]

    def inference_end(self):
        try:
            if not self.training:
                self.end_step(None)
        except Exception as e:
            self.fail(e)

    def memory(self):
        c = self.torch.cuda
        return (c.memory_allocated(), c.max_memory_allocated(), c.memory_reserved())

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
        traced = self.traced
        if step_row is None:
            _rec.end_step(self.step, None, 0, 0)
        else:
            _rec.end_step(self.step, step_row[0], step_row[1], step_row[2])
        if traced and self.exprs:
            offset = time.time_ns() - _perf()
            _rec.variable_rows(self.variables(offset), _thread.get_native_id(), self.step)
        self.step += 1
        try:
            self.cuda = bool(self.torch.cuda.is_initialized())
        except Exception:
            self.cuda = False
        self.refresh()

    def variables(self, offset):
        out = []
        now = _perf() + offset
        wanted = {}
        for func, name in self.exprs:
            wanted.setdefault(func, []).append(name)
        f = sys._getframe(1)
        while f is not None:
            if f.f_globals is _GLOBALS:  # our own frames
                f = f.f_back
                continue
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
_GLOBALS = globals()


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


# Installing runs Python code that may give up the GIL: the importing thread (the finder below)
# and the recorder's thread (probing_torch_poll) must not both install.
_install_lock = _thread.allocate_lock()


def _install(torch):
    global _tracer
    with _install_lock:
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
