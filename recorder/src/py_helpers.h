// Python code the control server runs inside the target (on the GilExecutor's thread, GIL
// held), kept in one place. Standard library only; never imports threading (the thread that
// first imports it becomes threading's main thread).
#pragma once

namespace probing::recorder {

inline constexpr const char* kServerHelpers = R"PY(
import ast, io, sys, time, traceback, _thread

_VALUE_CAP = 10000


class _ThreadTee:
    """Sends writes made by one thread to a buffer, everyone else's to the real stream."""

    def __init__(self, real, ident, buf):
        self._real, self._ident, self._buf = real, ident, buf

    def write(self, s):
        if _thread.get_ident() == self._ident:
            return self._buf.write(s)
        return self._real.write(s)

    def flush(self):
        if _thread.get_ident() != self._ident and self._real is not None:
            self._real.flush()

    def __getattr__(self, name):
        return getattr(self._real, name)


def _probing_eval(code, timeout):
    import __main__
    ns = __main__.__dict__
    out, err = io.StringIO(), io.StringIO()
    ident = _thread.get_ident()
    real_out, real_err = sys.stdout, sys.stderr
    tee_out, tee_err = _ThreadTee(real_out, ident, out), _ThreadTee(real_err, ident, err)
    sys.stdout, sys.stderr = tee_out, tee_err
    value = exc = None
    start = time.monotonic()
    try:
        tree = ast.parse(code, "<probing eval>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        # The timeout is enforced from outside: the recorder raises TimeoutError in this thread.
        exec(compile(tree, "<probing eval>", "exec"), ns)
        if last is not None:
            v = eval(compile(last, "<probing eval>", "eval"), ns)
            if v is not None:
                value = repr(v)[:_VALUE_CAP]
    except BaseException as e:  # SystemExit too: eval must never end the process
        if isinstance(e, TimeoutError) and not str(e):
            e = TimeoutError("eval timed out after %g s" % timeout)
        # The traceback starts at the user's code, not at this helper.
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        if isinstance(e, SyntaxError) and tb is not None and tb.tb_frame.f_code.co_filename == ast.__file__:
            tb = None  # raised by ast.parse: the frames are the parser's, not the user's
        exc = (type(e).__name__, str(e), "".join(traceback.format_exception(type(e), e, tb)))
    finally:
        if sys.stdout is tee_out:
            sys.stdout = real_out
        if sys.stderr is tee_err:
            sys.stderr = real_err
    return out.getvalue(), err.getvalue(), value, exc, time.monotonic() - start


def _probing_locals(value_cap, frame_cap):
    """{thread ident: [[func, file, line, {name: repr}], ...] innermost first}. func is the
    qualified name where the interpreter has one (3.11+), as the sampler names frames. A repr
    longer than value_cap is cut and ends with "..."; a frame's locals stop at frame_cap
    characters, and a "..." entry says how many were left out."""
    me = _thread.get_ident()
    result = {}
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        frames = []
        while frame is not None:
            loc, used = {}, 0
            try:
                items = list(frame.f_locals.items())
            except Exception:
                items = []
            for i, (k, v) in enumerate(items):
                try:
                    r = repr(v)
                except Exception as e:
                    r = "<repr failed: %s>" % type(e).__name__
                if len(r) > value_cap:
                    r = r[:value_cap - 3] + "..."
                if used + len(r) > frame_cap:
                    loc["..."] = "(%d more locals not shown)" % (len(items) - i)
                    break
                loc[str(k)] = r
                used += len(r)
            code = frame.f_code
            frames.append([getattr(code, "co_qualname", code.co_name), code.co_filename,
                           frame.f_lineno, loc])
            frame = frame.f_back
        result[ident] = frames
    return result


def _probing_thread_names():
    threading = sys.modules.get("threading")
    if threading is None:
        return {}
    return {t.native_id: t.name for t in threading.enumerate() if getattr(t, "native_id", None)}


def _probing_tables():
    reg = sys.modules.get("probing._tables")
    return sorted(reg.REGISTRY) if reg is not None else []


def _probing_table_rows(name):
    reg = sys.modules.get("probing._tables")
    if reg is None or name not in reg.REGISTRY:
        raise KeyError(name)
    return reg.rows(name)
)PY";

}  // namespace probing::recorder
