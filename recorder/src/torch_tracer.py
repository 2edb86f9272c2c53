# PyTorch module tracing and variable tracking, run inside the target (embedded in the recorder
# library at build time; docs/torch.md says what it measures). Rows go to the recorder through
# the built-in module _probing_recorder, whose C functions (torch_hooks.cc) are the module hooks
# and keep the step's rows. Standard library and torch only; never imports threading. Nothing
# here may raise into the user's code: the first failure turns tracing off and is logged once.
import os
import sys
import time
import _thread

_rec = sys.modules["_probing_recorder"]
_perf = time.perf_counter_ns
_VALUE_CAP = 200


class _Tracer:
    def __init__(self, torch):
        self.torch = torch
        self.torch1 = torch.__version__.startswith("1.")
        self.Tensor = torch.Tensor
        self.step = 0
        self.traced = False
        self.training = False  # an optimizer exists: steps are optimizer steps
        self.in_step = False
        self.handles = None
        self.enabled = False
        self.rate = 1.0
        self.budget = 0.0  # probing.torch.budget, a fraction of step time; 0: off
        self.prices = [0.0, 0.0, 0.0]  # calibrate()'s: wrapper, hooks, autograd's hook call
        self.grad_priced = False
        self.exprs = []
        self.generation = -1
        self.failed = False
        self.cuda = False
        # How module calls are seen (probing.torch.calls): "wrap", nn.Module.__call__ replaced
        # while tracing is on (one C call per module call, and torch keeps its fast path; the
        # default on torch 1.x), or "hooks", global module hooks (the default on 2.x, where
        # torch.compile knows them).
        self.wrap_call = False
        self.calls = "auto"  # probing.torch.calls
        self.limited = False  # the budget leaves steps out
        # The rows, the per-call hooks and backward timing live in C (torch_hooks.cc).
        # torch 1.x: tensor hooks are added to _backward_hooks directly (what
        # Tensor.register_hook does, without building its handle); else through it.
        _rec.configure(self.resolve, self.inference_end, torch.Tensor, torch.is_grad_enabled,
                       torch.autograd.Variable._execution_engine.queue_callback, self.memory,
                       torch.__version__.startswith("1."))
        self.calibrate()
        self.refresh()

    # -- settings and hooks ----------------------------------------------------------------
    def refresh(self, t0=-1):
        """Re-reads the settings when they changed; decides whether the coming step is traced.
        At a step's end, `t0` is when it was seen to end (perf_counter_ns): the tracer's work
        since then is the step's cost too (the budget, docs/torch.md#overhead-budget)."""
        settings = _rec.settings(self.generation)
        if settings is not None:
            enabled, self.rate, exprs, calls, self.generation, self.budget = settings
            self.enabled = enabled and not self.failed
            self.exprs = []
            for item in exprs.split(","):
                item = item.strip()
                if "@" in item:
                    name, func = item.split("@", 1)
                    self.exprs.append((func.strip(), name.strip()))
            self.calls = calls
        self.traced, self.limited = _rec.decide(self.step, self.enabled, self.rate, self.budget,
                                                t0)
        # auto: the wrapper on torch 1.x, but in training while the budget leaves steps out,
        # global hooks put in place for the traced steps only, so that the steps in between
        # cost nothing (the wrapper costs a little in every call, and putting it in place and
        # back changes nn.Module's type, which costs far more: docs/torch.md).
        wrap = self.calls == "wrap" or (self.calls == "auto" and self.torch1 and
                                        not (self.training and self.limited))
        if wrap != self.wrap_call:
            self.set_hooks(False)
            self.wrap_call = wrap
        # Training: hooks only while a traced step runs (the wrapper stays while enabled and
        # passes calls straight through in other steps). Inference: always, to see step edges.
        on = self.enabled and (self.traced or not self.training or self.wrap_call)
        if on != (self.handles is not None):
            self.set_hooks(on)
        _rec.begin(self.traced, self.training, self.cuda, self.handles is not None,
                   self.wrap_call)
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
                _rec.begin(False, self.training, False, False, False)
            except Exception:
                pass

    def calibrate(self, grad=False):
        """What calls cost that the tracer cannot time from inside them, for the budget: a call
        through the wrapper of nn.Module.__call__, a module call through the global hooks (torch
        takes its slow path), and (with `grad`) autograd's call into a tensor hook. Each is the
        difference between two loops, one with and one without the call, measured once (a few
        milliseconds). Autograd's is measured at the end of the first training step, never at
        install: a first backward starts autograd's threads, after which a fork-based
        multiprocessing child cannot use autograd, so only the program's own backward may.
        On a failure the budget counts only what it times."""
        try:
            torch, perf = self.torch, _perf

            def per_call(plain, hooked, n, rounds=7):
                """(hooked - plain) / n, each the fastest of `rounds` runs in alternating
                order: the least noisy estimate of a fixed cost on a busy machine."""
                best = {plain: None, hooked: None}
                for i in range(rounds):
                    for f in ((plain, hooked) if i % 2 == 0 else (hooked, plain)):
                        t = f(n)
                        best[f] = t if best[f] is None else min(best[f], t)
                return max(0.0, (best[hooked] - best[plain]) / n)

            if grad:
                self.prices[2] = self.grad_price(torch, perf, per_call)
                _rec.calibrate(*self.prices)
                return

            def call(self_, *args, **kwargs):  # nn.Module.__call__'s signature
                return None

            plain_type = type("_ProbingPlain", (), {"__call__": call})
            wrapped_type = type("_ProbingWrapped", (), {"__call__": _rec.module_call(call)})
            x = torch.zeros(1)

            def calls(obj):
                def run(n):
                    t = perf()
                    for _ in range(n):
                        obj(x)
                    return perf() - t
                return run

            wrap_ns = per_call(calls(plain_type()), calls(wrapped_type()), 2000)

            m = self.torch.nn.modules.module
            identity = torch.nn.Identity()

            def modules(hooks):
                def run(n):
                    handles = []
                    try:
                        if hooks:
                            handles.append(m.register_module_forward_pre_hook(_rec.noop))
                            handles.append(m.register_module_forward_hook(_rec.noop))
                        t = perf()
                        for _ in range(n):
                            identity(x)
                        return perf() - t
                    finally:
                        for h in handles:
                            h.remove()
                return run

            hooks_ns = per_call(modules(False), modules(True), 200, rounds=5)
            self.prices = [wrap_ns, hooks_ns, 0.0]
            _rec.calibrate(*self.prices)
        except Exception as e:
            _rec.log("the PyTorch tracing budget counts only what it times (calibration failed: "
                     "%s: %s)" % (type(e).__name__, e))

    @staticmethod
    def grad_price(torch, perf, per_call):
        def backward(hooks):
            """Backward through n multiplications, with a tensor hook on each or not: its time
            alone (the graph's building is left out)."""
            def run(n):
                with torch.enable_grad():
                    y = torch.zeros((), requires_grad=True)
                    for _ in range(n):
                        y = y * 1.0
                        if hooks:
                            y.register_hook(_rec.idle_slot())
                    t = perf()
                    y.backward()
                    return perf() - t
            return run

        return per_call(backward(False), backward(True), 32, rounds=9)

    def resolve(self, module, parent):
        """[(module, qualified name)] to remember: everything under an outermost module (itself
        named by its class), or one module called under a parent it is not registered in."""
        if parent is None:
            return [(sub, qual or type(sub).__name__) for qual, sub in module.named_modules()]
        return [(module, parent + "." + type(module).__name__)]

    def inference_end(self, end):
        """An outermost call ended in inference: a step, which ended at `end` (perf_counter_ns;
        0 when it was not read), from which on the tracer's work is the step's cost."""
        try:
            if not self.training:
                self.end_step(None, end or _perf())
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
                end = _perf()
                self.end_step((type(args[0]).__name__, start, end), end)
            except Exception as e:
                self.fail(e)

    def end_step(self, step_row, t0):
        traced = self.traced
        if step_row is not None and not self.grad_priced:
            self.grad_priced = True  # the program's backward has run: autograd's threads are up
            before = _perf()
            self.calibrate(grad=True)
            t0 += _perf() - before  # a cost paid once, not the step's: the budget leaves it out
        if step_row is None:
            _rec.end_step(self.step, None, 0, 0)
        else:
            _rec.end_step(self.step, step_row[0], step_row[1], step_row[2])
        if traced and self.exprs:
            offset = time.time_ns() - _perf()
            _rec.variable_rows(self.variables(offset), _thread.get_native_id(), self.step)
        self.step += 1
        if _collectives.active:
            try:
                _collectives.count()
            except Exception as e:
                _collectives.active = False
                _rec.log("collectives are no longer counted: %s: %s" % (type(e).__name__, e))
        try:
            self.cuda = bool(self.torch.cuda.is_initialized())
        except Exception:
            self.cuda = False
        self.refresh(t0)

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
            try:
                _tracer.training = True
                _tracer.refresh()
            except Exception as e:
                _tracer.fail(e)

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
        try:
            _collectives.install(torch)
        except Exception as e:
            _rec.log("collectives are not traced: %s: %s" % (type(e).__name__, e))


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


class _Collectives:
    """torch.distributed's collective and point-to-point functions, each replaced by a C wrapper
    that times and describes every call into python.collectives (collectives.cc); the calls
    issued from C++ (DDP's gradient all-reduce) are counted from the default group's sequence
    number at each step end and about once a second."""

    # name: (payload position, payload keyword, group position, peer position, peer keyword,
    # async_op position), as torch 1.13 to 2.x spell them; -1 / None: no such argument.
    SIGNATURES = {
        "all_reduce": (0, "tensor", 2, -1, None, 3),
        "broadcast": (0, "tensor", 2, 1, "src", 3),
        "reduce": (0, "tensor", 3, 1, "dst", 4),
        "all_gather": (1, "tensor", 2, -1, None, 3),
        "all_gather_into_tensor": (1, "input_tensor", 2, -1, None, 3),
        "_all_gather_base": (1, "input_tensor", 2, -1, None, 3),
        "reduce_scatter": (1, "input_list", 3, -1, None, 4),
        "reduce_scatter_tensor": (1, "input", 3, -1, None, 4),
        "_reduce_scatter_base": (1, "input", 3, -1, None, 4),
        "all_to_all": (1, "input_tensor_list", 2, -1, None, 3),
        "all_to_all_single": (1, "input", 4, -1, None, 5),
        "gather": (0, "tensor", 3, 2, "dst", 4),
        "scatter": (0, "tensor", 3, 2, "src", 4),
        "barrier": (-1, None, 0, -1, None, 1),
        "send": (0, "tensor", 2, 1, "dst", -1),
        "recv": (0, "tensor", 2, 1, "src", -1),
        "isend": (0, "tensor", 2, 1, "dst", -1),
        "irecv": (0, "tensor", 2, 1, "src", -1),
    }

    def __init__(self):
        self.active = False

    def install(self, torch):
        dist = getattr(torch, "distributed", None)
        if dist is None or not dist.is_available():
            return
        c10d = dist.distributed_c10d
        self.c10d = c10d
        self.dist = dist
        _rec.collectives_configure(self.seq_of, c10d.GroupMember)
        for name, (pp, pk, gp, rp, rk, ap) in self.SIGNATURES.items():
            orig = getattr(c10d, name, None)
            if orig is None or type(orig).__name__ == "CollectiveCall":
                continue
            wrapper = _rec.collective_call(orig, name, pp, pk, gp, "group", rp, rk, ap)
            setattr(c10d, name, wrapper)
            if getattr(dist, name, None) is orig:
                setattr(dist, name, wrapper)
        self.active = True

    def seq_of(self, group):
        """(name, its bound _get_sequence_number_for_group) of a process group, once per group
        (the C side keeps them)."""
        c10d = self.c10d
        if group is c10d._get_default_group():
            name = "default"
        else:
            ranks = sorted(getattr(c10d, "_pg_group_ranks", {}).get(group, {}).keys())
            name = "ranks " + ",".join(map(str, ranks)) if ranks else "group %x" % id(group)
        return name, group._get_sequence_number_for_group

    def count(self):
        """Rows for the collectives issued from C++ since the last look (the default group)."""
        if self.active and self.dist.is_initialized():
            _rec.collectives_count(None)


_collectives = _Collectives()


class _Job:
    """This process's place in a distributed job, once torch.distributed is initialized (also
    in a process the recorder was injected into): told to the recorder (system.process, info),
    registered in the job's own store (the c10d store at MASTER_ADDR:MASTER_PORT) so that a
    client that reaches any one rank finds every rank, and the others' registrations read back
    for GET /cluster. A store connection of our own, opened only after the job's process group
    exists (earlier, it would count as one of the workers the store waits for)."""

    def __init__(self):
        self.known = False
        self.failed = False
        self.store = None
        self.world = 0
        self.members = {}
        self.next_read = 0.0
        self.first_read = 0.0

    def poll(self):
        try:
            _collectives.count()
        except Exception as e:
            _collectives.active = False
            _rec.log("collectives are no longer counted: %s: %s" % (type(e).__name__, e))
        if self.failed or (self.known and len(self.members) >= self.world):
            return
        dist = sys.modules.get("torch.distributed")
        if dist is None:
            return
        try:
            if not (dist.is_available() and dist.is_initialized()):
                return
            if not self.known:
                self.start(dist)
            if self.store is not None and time.monotonic() >= self.next_read:
                self.read()
        except Exception as e:
            self.failed = True
            _rec.log("the job's members will not be known from its store: %s: %s"
                     % (type(e).__name__, e))

    def start(self, dist):
        import json  # here, not at the top: an import may wait long for the GIL (see Setup)

        rank, world = dist.get_rank(), dist.get_world_size()
        run_id, local_rank, node, host, pid, port = _rec.job(rank, world)
        self.known = True
        self.world = world
        self.prefix = "probing/%s/" % run_id
        self.members[rank] = {"rank": rank, "local_rank": local_rank, "host": host, "node": node,
                              "pid": pid, "port": port or None}
        self.publish()
        addr, store_port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not addr or not (store_port or "").isdigit() or world <= 1:
            return  # no store to register in: the ring directory finds local ranks
        from datetime import timedelta

        self.store = dist.TCPStore(addr, int(store_port), None, False, timedelta(seconds=2),
                                   wait_for_workers=False)
        self.store.set(self.prefix + str(rank), json.dumps(self.members[rank]))
        self.store.add(self.prefix + "registered", 1)
        self.first_read = time.monotonic()

    def read(self):
        import json
        from datetime import timedelta

        registered = self.store.add(self.prefix + "registered", 0)
        now = time.monotonic()
        # Every rank's key once all have registered; before that, now and then, those present.
        if registered >= self.world or now - self.first_read > 10:
            for r in range(self.world):
                if r in self.members:
                    continue
                key = self.prefix + str(r)
                try:
                    self.store.wait([key], timedelta(milliseconds=1))
                except Exception:
                    continue
                self.members[r] = json.loads(self.store.get(key))
            self.publish()
        self.next_read = now + 2

    def publish(self):
        import json

        _rec.members(json.dumps([self.members[r] for r in sorted(self.members)]))


_job = _Job()


def probing_torch_poll():
    """Called at start and then about once a second: installs when torch is (fully) imported;
    then learns the process's place in a distributed job."""
    if _tracer is not None:
        _job.poll()
        return
    torch = sys.modules.get("torch")
    if torch is not None and _ready(torch):
        _install(torch)
    elif not any(isinstance(f, _TorchFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchFinder())
