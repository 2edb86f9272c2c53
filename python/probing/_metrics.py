"""@probing.metric: numbers the recorder reads from the program about once a second (on its
memory tick) into the `python.metrics` ring table (name, value, time), so they are queryable
live and kept in recordings.

    import probing

    @probing.metric("queue_depth")
    def queue_depth():
        return len(work_queue)

A metric function takes no argument and returns a number (int, float, bool, or anything
float() accepts: a NumPy scalar, a one-element tensor). It runs on the recorder's Python thread
with the GIL, so it should be cheap. One that raises or returns something else is skipped for
that reading, and said once on standard error; the others go on.
"""
import math
import sys
import time

REGISTRY = {}
_complained = set()


def metric(name):
    """Registers the decorated function as metric `name` in python.metrics."""
    if not isinstance(name, str) or not name:
        raise ValueError("metric name must be a non-empty string: %r" % (name,))

    def register(fn):
        if not callable(fn):
            raise TypeError("@probing.metric decorates a function, not %s" % type(fn).__name__)
        REGISTRY[name] = fn
        return fn

    return register


def _complain(name, why):
    if name not in _complained:
        _complained.add(name)
        print("probing: metric %s skipped: %s (said once)" % (name, why), file=sys.stderr)


def read_all():
    """[(name, value, unix_time_ns)] for every registered metric that reads as a finite number."""
    out = []
    for name, fn in list(REGISTRY.items()):
        try:
            value = float(fn())
        except Exception as e:  # a metric must never harm the program or the other metrics
            _complain(name, "%s: %s" % (type(e).__name__, e))
            continue
        if not math.isfinite(value):
            _complain(name, "not a finite number (%r)" % value)
            continue
        out.append((name, value, time.time_ns()))
    return out
