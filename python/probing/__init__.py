"""Probing: look inside a running Python/PyTorch process.

Start a program with the recorder on::

    PROBING=1 python train.py      # this process only
    PROBING=2 python train.py      # and its children (DataLoader workers, subprocesses)

The recorder samples every thread's stack and memory into ring files under
``$PROBING_DATA_DIR/<pid>/`` (default ``/dev/shm/probing-<uid>/<pid>/``), read by the
``probing`` and ``probing-analyze`` commands.
"""

from probing._recorder import library_path
from probing._tables import table

__version__ = "0.1.0"
__all__ = ["library_path", "table", "__version__"]
