"""`probing memory --top`: tracemalloc started on demand in a real target, the allocation site
that grows named with its line and function, tracemalloc stopped again afterwards (and a
program's own tracing left alone), and the errors: no such process, a dead one, no recorder,
Python code that fails in the target, usage."""
import json
import signal
import subprocess
import time

import pytest

from conftest import TARGETS, line_of
from control_client import wait_for_server

PY = "/usr/bin/python3"


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "data"))


def is_tracing(run, probing_bin, pid):
    r = run(probing_bin, "-t", pid, "eval", "import tracemalloc as _t; _t.is_tracing()")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip() == "True"


def test_names_the_growing_line_and_stops_tracemalloc(python, target, run, probing_bin,
                                                      data_env):
    t = target(python, "grower.py", "60")
    t.wait_ready()
    wait_for_server(t.proc.pid)
    assert not is_tracing(run, probing_bin, t.proc.pid)
    r = run(probing_bin, "-t", t.proc.pid, "--format", "json", "memory", "--top", "--interval",
            "1.5", "--limit", "5")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert 1 <= len(rows) <= 5
    first = rows[0]
    assert (first["file"], first["line"]) == (str(TARGETS / "grower.py"),
                                              line_of("grower.py", "# GROW-LINE"))
    assert first["function"] == "Keeper.grow"
    # About a thousand 1 KB strings a second, less what a loaded machine does not run.
    assert first["count_diff"] >= 100 and first["size_diff"] >= 100 * 1000
    assert first["size"] >= first["size_diff"] and first["count"] >= first["count_diff"]
    # The churning line allocates as much but keeps nothing: it does not lead.
    assert all(r["line"] != line_of("grower.py", "# CHURN-LINE") or r["size_diff"] < first["size_diff"]
               for r in rows)
    assert not is_tracing(run, probing_bin, t.proc.pid)  # stopped again
    # Nothing was left in the program's namespace.
    r = run(probing_bin, "-t", t.proc.pid, "eval", "sorted(k for k in globals() if 'probing' in k)")
    assert r.stdout.strip() == "[]", r.stdout
    # The table, for people.
    r = run(probing_bin, "-t", t.proc.pid, "memory", "--top", "--interval", "1")
    assert r.returncode == 0, r.stderr
    assert "tracemalloc started for this, stopped after" in r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Allocation sites that grew over 1")
    assert lines[3].endswith("%s:%d (Keeper.grow)" % (TARGETS / "grower.py",
                                                      line_of("grower.py", "# GROW-LINE"))), r.stdout
    assert " grew, by " in lines[-1] and "tracemalloc traces" in lines[-1]


def test_the_programs_own_tracemalloc_is_left_alone(target, run, probing_bin, data_env):
    t = target(PY, "grower.py", "60", "traced")
    t.wait_ready()
    wait_for_server(t.proc.pid)
    r = run(probing_bin, "-t", t.proc.pid, "memory", "--top", "--interval", "1")
    assert r.returncode == 0, r.stderr
    assert "with its own tracemalloc, left as it is" in r.stderr
    assert "(Keeper.grow)" in r.stdout
    assert is_tracing(run, probing_bin, t.proc.pid)  # still on: it was the program's
    r = run(probing_bin, "-t", t.proc.pid, "eval",
            "import tracemalloc as _t; _t.get_traceback_limit()")
    assert r.stdout.strip() == "1"


def test_ctrl_c_between_the_snapshots_stops_tracemalloc(target, run, probing_bin, data_env):
    t = target(PY, "grower.py", "60")
    t.wait_ready()
    wait_for_server(t.proc.pid)
    p = subprocess.Popen([str(probing_bin), "-t", str(t.proc.pid), "memory", "--top",
                          "--interval", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.time() + 20
        while not is_tracing(run, probing_bin, t.proc.pid):
            assert time.time() < deadline, "tracemalloc never started"
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1
    assert err.splitlines()[-1] == ("probing: interrupted before the second snapshot; tracing "
                                    "ended in the target")
    assert not is_tracing(run, probing_bin, t.proc.pid)


def test_errors(target, run, probing_bin, data_env):
    r = run(probing_bin, "-t", "999999", "memory", "--top", "--interval", "0.2")
    assert (r.returncode, r.stderr) == (1, "probing: no such process 999999\n")
    plain = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    try:
        r = run(probing_bin, "-t", plain.pid, "memory", "--top", "--interval", "0.2")
        assert (r.returncode, r.stderr) == (
            1, "probing: no recorder in process %d: run `probing -t %d inject` first\n"
            % (plain.pid, plain.pid))
    finally:
        plain.kill()
        plain.wait()
    # Python that fails in the target: a program where tracemalloc cannot be imported.
    t = target(PY, "grower.py", "60", "broken")
    t.wait_ready()
    wait_for_server(t.proc.pid)
    r = run(probing_bin, "-t", t.proc.pid, "memory", "--top", "--interval", "0.2")
    assert r.returncode == 1 and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.startswith("probing: tracemalloc in process %d failed: " % t.proc.pid), line
    assert "ImportError" in line or "ModuleNotFoundError" in line
    # A process that has ended, its rings left.
    t.kill()
    r = run(probing_bin, "-t", t.proc.pid, "memory", "--top", "--interval", "0.2")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("probing: process %d is gone" % t.proc.pid), r.stderr
    r = run(probing_bin, "-t", "1", "memory", "--interval", "2")
    assert r.returncode == 2 and "--interval and --limit go with --top" in r.stderr
