"""Finding the recorder build that matches an interpreter."""

import os
import sys

try:
    from probing._build_info import LIB_DIR
except ImportError:  # running from a source tree without a build
    LIB_DIR = None


def library_path(version=None):
    """Path of the recorder shared library for ``version`` (default: this interpreter).

    Searched in ``$PROBING_RECORDER_DIR``, then where this package was built or installed.
    Raises LookupError, saying where it looked, when there is none.
    """
    major, minor = (version or sys.version_info)[:2]
    name = "probing_recorder_cp%d%d.so" % (major, minor)
    dirs = [d for d in (os.environ.get("PROBING_RECORDER_DIR"), LIB_DIR) if d]
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    raise LookupError("no recorder build for Python %d.%d (%s not found in %s)"
                      % (major, minor, name, ", ".join(dirs) or "no directory"))
