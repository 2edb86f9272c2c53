"""Shared fixtures for the end-to-end tests: where the built binaries are, and helpers to run
them. Tests drive the real binaries (built by `make build`) as a user would."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("PROBING_BUILD_DIR", ROOT / "build"))
FIXTURES = ROOT / "tests" / "fixtures"


def _binary(name):
    path = BUILD / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make build` first")
    return path


@pytest.fixture(scope="session")
def probing_bin():
    return _binary("probing")


@pytest.fixture(scope="session")
def analyze_bin():
    return _binary("probing-analyze")


@pytest.fixture
def run():
    """run(binary, *args) -> CompletedProcess with text stdout/stderr; never hangs."""

    def _run(binary, *args, timeout=60):
        return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)

    return _run


# ------------------------------------------------------------------------------------------
# Interpreters: /usr/bin/python3 and every ~/.pyenv/versions/3.8 .. 3.13 found. A test taking
# `python` runs once per interpreter and skips, saying why, where one is absent or unbuilt.

VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]
TARGETS = ROOT / "tests" / "targets"


def _find_python(version):
    import glob

    if version == "system":
        return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else None
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python3" % version)))
    return found[-1] if found else None


@pytest.fixture(params=["system"] + VERSIONS)
def python(request):
    exe = _find_python(request.param)
    if exe is None:
        pytest.skip("Python %s is not on this machine" % request.param)
    out = subprocess.run([exe, "-c", "import sys; print('%d%d' % sys.version_info[:2])"],
                         capture_output=True, text=True).stdout.strip()
    if not (BUILD / "lib" / ("probing_recorder_cp%s.so" % out)).exists():
        pytest.skip("no recorder build for %s (Python %s): rebuild after installing it" % (exe, out))
    return exe


class Target:
    """A target program started with the recorder, killed on every path."""

    def __init__(self, python, script, args, data_dir, probing="1", extra_env=None):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update({"PROBING": probing, "PROBING_DATA_DIR": str(data_dir),
                    "PYTHONUSERBASE": str(BUILD / "pyuser"), "PYTHONUNBUFFERED": "1"})
        env.update(extra_env or {})
        self.proc = subprocess.Popen([python, str(TARGETS / script), *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.data_dir = data_dir

    def wait_ready(self, timeout=30):
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", "target said %r; stderr: %s" % (line, self.proc.stderr.read())

    def finish(self, timeout=60):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def target(tmp_path):
    started = []

    def _start(python, script, *args, probing="1", extra_env=None):
        t = Target(python, script, args, tmp_path / "data", probing, extra_env)
        started.append(t)
        return t

    yield _start
    for t in started:
        t.kill()


@pytest.fixture
def served(target, tmp_path, monkeypatch):
    """tests/targets/serve.py under /usr/bin/python3 with the recorder, its server answering;
    PROBING_DATA_DIR points at its data for the commands the test runs."""
    from control_client import wait_for_server

    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "data"))
    t = target("/usr/bin/python3", "serve.py")
    t.wait_ready()
    wait_for_server(t.proc.pid)
    return t


@pytest.fixture
def served_tcp(target, tmp_path, monkeypatch):
    """serve.py as `served`, also on a free TCP port with the token "tok": (target, "host:port")."""
    import socket

    from control_client import wait_for_server

    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "data"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = target("/usr/bin/python3", "serve.py",
               extra_env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "tok"})
    t.wait_ready()
    wait_for_server(t.proc.pid)
    return t, "127.0.0.1:%d" % port


def read_table(analyze, inputs, table):
    """Rows of a ring table, as dicts, read through probing-analyze."""
    import json

    r = subprocess.run([str(analyze), *map(str, inputs), "--table", table, "--format", "json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def samples_by_thread(rows):
    """{thread_name: [stack, ...]} where a stack is [(func, lineno), ...] innermost first."""
    stacks = {}
    for row in rows:
        key = (row["thread_name"], row["sample_id"])
        stacks.setdefault(key, []).append((row["depth"], row["func"], row["lineno"], row))
    out = {}
    for (name, _), frames in stacks.items():
        frames.sort(key=lambda f: f[0])
        out.setdefault(name, []).append([(f[1], f[2]) for f in frames])
    return out


def line_of(script, marker):
    for n, text in enumerate((TARGETS / script).read_text().splitlines(), 1):
        if marker in text:
            return n
    raise AssertionError("no %s in %s" % (marker, script))


def free_port():
    """A TCP port free on loopback now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_probing(probing_bin, *args, token=None, timeout=120):
    """`probing ARGS` with exactly this token (none: $PROBING_AUTH_TOKEN unset)."""
    env = dict(os.environ)
    env.pop("PROBING_AUTH_TOKEN", None)
    if token is not None:
        env["PROBING_AUTH_TOKEN"] = token
    return subprocess.run([str(probing_bin), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
