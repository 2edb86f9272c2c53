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


def free_port():
    """A TCP port free on loopback now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_target(script, args, data, hz, port=None, extra_env=None):
    """tests/targets/<script> with the recorder at `hz` writing under `data`, its control server
    also on TCP `port` with the token "bench" when one is given; returns the process once it
    said "ready"."""
    import subprocess

    env = dict(os.environ, PROBING="1", PROBING_DATA_DIR=data, PROBING_SAMPLER_HZ=str(hz),
               PYTHONUSERBASE=os.path.join(ROOT, "build", "pyuser"), **(extra_env or {}))
    if port is not None:
        env.update(PROBING_PORT=str(port), PROBING_AUTH_TOKEN="bench")
    p = subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "tests", "targets", script),
                          *map(str, args)], stdout=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline().strip()
    if line != "ready":
        p.kill()
        raise SystemExit("%s did not start (said %r)" % (script, line))
    return p
