"""`probing top`: the live view of where a process spends its time, against real targets: the
busy function first, idle threads left out and counted, PyTorch modules per step, views one after
another without a terminal, a dead process's last window, host:port, and the usage errors."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import FIXTURES, TARGETS, run_probing
from control_client import wait_for_server

PY = "/usr/bin/python3"


def rows_of(stdout):
    """{(section, name, metric): value} of one view printed with --format json."""
    return {(r["section"], r["name"], r["metric"]): r["value"] for r in json.loads(stdout)}


def functions(rows):
    """[(name, own, total)] in the order printed."""
    out = []
    for (section, name, metric), value in rows.items():
        if section == "functions" and metric == "own":
            out.append((name, value, rows[(section, name, "total")]))
    return out


def waiting(function):
    """Whether a function row is one of the waits of tests/targets/waiters.py's idle threads
    (Condition.wait under Event.wait, Queue.get; unqualified before 3.11)."""
    name, _, where = function.partition(" (")
    return name.split(".")[-1] in ("wait", "get") and ("threading.py" in where or
                                                         "queue.py" in where)


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "data"))


def test_once_names_the_spinning_function_first(python, target, run, probing_bin, data_env):
    t = target(python, "busy.py", "30")
    t.wait_ready()
    time.sleep(2.5)  # a couple of seconds of samples
    r = run(probing_bin, "-t", t.proc.pid, "top", "--once", "--window", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("probing top: process %d, the last 2 s to " % t.proc.pid), lines[0]
    assert "Ctrl-C" not in lines[0]  # --once: nothing to quit
    head = next(i for i, l in enumerate(lines) if l.split()[:2] == ["own%", "total%"])
    first = lines[head + 2]
    assert first.endswith("inner_work (%s)" % (TARGETS / "busy.py")), r.stdout
    assert "\x1b[" not in r.stdout  # not a terminal: no screen control
    # The same as rows: inner_work owns most samples; outer is on every stack, owning none.
    r = run(probing_bin, "-t", t.proc.pid, "--format", "json", "top", "--once", "--window", "2")
    assert r.returncode == 0, r.stderr
    rows = rows_of(r.stdout)
    samples = rows[("window", "samples", "count")]
    assert samples >= 50  # 100 Hz for 2 s, less what a loaded machine drops
    assert rows[("window", "threads", "count")] == 1, r.stdout
    funcs = functions(rows)
    name, own, total = funcs[0]
    assert name == "inner_work (%s)" % (TARGETS / "busy.py")
    assert own >= 0.8 * samples and total >= own
    outer = [f for f in funcs if f[0].startswith("outer ")]
    assert outer and outer[0][1] <= 0.1 * samples and outer[0][2] >= 0.9 * samples
    assert all(f[1] <= f[2] <= samples for f in funcs)


def test_idle_threads_left_out_and_counted(target, run, probing_bin, data_env):
    t = target(PY, "waiters.py", "30")
    t.wait_ready()
    time.sleep(2.5)
    # The last 2 s: not the waiters' start, when they ran Python code or waited for the GIL (not
    # idle), before they blocked.
    r = run(probing_bin, "-t", t.proc.pid, "--format", "json", "top", "--window", "2", "--once")
    assert r.returncode == 0, r.stderr
    rows = rows_of(r.stdout)
    assert rows[("window", "idle_threads", "count")] == 2  # the event and queue waiters
    assert rows[("window", "idle_samples", "count")] > 50
    assert rows[("window", "threads", "count")] == 1, r.stdout
    assert not [f for f in functions(rows) if waiting(f[0])]
    r = run(probing_bin, "-t", t.proc.pid, "top", "--window", "2", "--once")
    assert r.returncode == 0, r.stderr
    assert "(2 threads only waiting), --idle keeps them" in r.stdout
    # --idle keeps them: the waits are there, and every thread counts.
    r = run(probing_bin, "-t", t.proc.pid, "--format", "json", "top", "--window", "2", "--once",
            "--idle")
    rows = rows_of(r.stdout)
    assert rows[("window", "threads", "count")] == 3
    waits = [f for f in functions(rows) if waiting(f[0])]
    # Both waiters end in Condition.wait (Queue.get waits on a Condition too): it owns their
    # samples; Event.wait and Queue.get are on the stacks of one each.
    assert max(f[1] for f in waits) >= rows[("window", "idle_samples", "count")] * 0.9
    assert len(waits) >= 2 and sum(f[2] for f in waits) > sum(f[1] for f in waits)


def test_views_follow_one_another_without_a_terminal(target, probing_bin, data_env):
    t = target(PY, "busy.py", "30")
    t.wait_ready()
    time.sleep(1.5)
    top = subprocess.Popen([str(probing_bin), "-t", str(t.proc.pid), "top", "--interval", "0.3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)
        top.send_signal(signal.SIGINT)  # Ctrl-C ends it, cleanly
        out, err = top.communicate(timeout=20)
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
    assert top.returncode == 0, err
    views = [l for l in out.splitlines() if l.startswith("probing top: ")]
    assert len(views) >= 3, out
    assert all("every 0.3 s, Ctrl-C quits" in v for v in views)
    assert "\x1b[" not in out


def test_a_finished_process_shows_its_last_window(target, run, probing_bin, data_env, tmp_path):
    t = target(PY, "busy.py", "2")
    t.wait_ready()
    assert t.finish()[0] == 0
    time.sleep(0.5)
    for spec in (str(t.proc.pid), str(tmp_path / "data" / str(t.proc.pid))):
        r = run(probing_bin, "-t", spec, "top")  # no --once needed: one view, then it ends
        assert r.returncode == 0, r.stderr
        assert "is not running: top shows its last 5 s of samples, once" in r.stderr
        assert "(not running)" in r.stdout.splitlines()[0]
        assert "inner_work (%s)" % (TARGETS / "busy.py") in r.stdout
    r = run(probing_bin, "-t", FIXTURES / "format_v1.ptrace", "top")  # a recording: the same
    assert r.returncode == 0, r.stderr
    assert "is no running process: top shows its last 5 s of samples, once" in r.stderr
    assert "forward (model.py)" in r.stdout


def test_torch_modules_per_step(target, run, probing_bin, data_env):
    t = target(PY, "web_train.py", "60")
    t.wait_ready(timeout=120)
    time.sleep(3)
    r = run(probing_bin, "-t", t.proc.pid, "--format", "json", "top", "--once", "--window", "2")
    assert r.returncode == 0, r.stderr
    rows = rows_of(r.stdout)
    steps = rows[("window", "steps", "count")]
    assert steps >= 3
    modules = {name: v for (s, name, m), v in rows.items()
               if s == "modules" and m == "calls_per_step"}
    # One call of each Linear forward per step (two of them, named by their place in the model).
    linear = [n for n in modules if "forward" in n and ("0" in n or "2" in n)]
    assert linear, sorted(modules)
    assert all(abs(modules[n] - 1) < 0.5 for n in linear), modules
    assert rows[("step_parts", "forward", "mean_ms")] > 0
    r = run(probing_bin, "-t", t.proc.pid, "top", "--once", "--window", "2")
    assert r.returncode == 0, r.stderr
    assert "Modules per step (" in r.stdout and "step time p50 " in r.stdout
    assert "prepare_batch (%s)" % (TARGETS / "web_train.py") in r.stdout


def test_host_port_target(served_tcp, probing_bin):
    t, addr = served_tcp
    time.sleep(1.5)
    r = run_probing(probing_bin, "-t", addr, "--format", "json", "top", "--once", "--idle",
                    token="tok")
    assert r.returncode == 0, r.stderr
    rows = rows_of(r.stdout)
    assert rows[("window", "samples", "count")] > 0 and rows[("window", "live", "bool")] == 1


def test_usage_errors(run, probing_bin, data_env):
    r = run(probing_bin, "top")
    assert r.returncode == 2
    assert "top needs -t TARGET" in r.stderr and "subcommand is required" not in r.stderr
    r = run(probing_bin, "-t", "999999", "top", "--once")
    assert (r.returncode, r.stderr) == (1, "probing: no such process 999999\n")
    r = run(probing_bin, "-t", "1", "top", "--interval", "0")
    assert r.returncode == 2
