"""Probing: look inside a running Python/PyTorch process.

Start a program with the recorder on::

    PROBING=1 python train.py      # this process only
    PROBING=2 python train.py      # and its children (DataLoader workers, subprocesses)

The recorder samples every thread's stack and memory into ring files under
``$PROBING_DATA_DIR/<pid>/`` (default ``/dev/shm/probing-<uid>/<pid>/``), read by the
``probing`` and ``probing-analyze`` commands, and from Python::

    p = probing.connect(pid=4242)
    p.query("SELECT count(*) AS n FROM python.stacks")
    probing.open("run.ptrace").query("SELECT count(*) AS n FROM python.stacks")
"""

from probing._recorder import library_path
from probing._metrics import metric
from probing._tables import table

__version__ = "0.1.0"
__all__ = ["library_path", "table", "metric", "connect", "open", "query", "Probe", "ProbingError",
           "RemoteError", "__version__"]

_CLIENT = ("connect", "open", "query", "Probe", "ProbingError", "RemoteError", "EvalResult")


def __getattr__(name):
    # The client (probing.connect, probing.query) loads on first use: a recorded process that
    # never asks for it pays nothing for its imports.
    if name in _CLIENT:
        from probing import _client

        return getattr(_client, name)
    raise AttributeError("module 'probing' has no attribute %r" % name)
