"""Shared by the recorder benchmarks: run the benchmark itself under the recorder."""
import ctypes
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure_recorder():
    """Re-executes this script with PROBING=1 and the build tree's package, once."""
    if os.environ.get("PROBING_BENCH_CHILD") == "1":
        return
    env = dict(os.environ, PROBING="1", PROBING_BENCH_CHILD="1",
               PYTHONUSERBASE=os.path.join(ROOT, "build", "pyuser"),
               PROBING_DATA_DIR=tempfile.mkdtemp(prefix="probing-bench-"))
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def recorder():
    """The recorder library loaded in this process."""
    from probing import library_path

    return ctypes.CDLL(library_path())


def config(lib, key, value):
    err = ctypes.create_string_buffer(256)
    if lib.probing_config_set(key.encode(), str(value).encode(), err, len(err)) != 0:
        raise SystemExit("config %s=%s: %s" % (key, value, err.value.decode()))
