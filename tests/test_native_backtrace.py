"""Native backtraces (`backtrace?native=1`, `probing backtrace --native`) against real targets
under every interpreter found: C frames merged with Python ones in place of the eval loop, a
thread inside dlopen (holding the loader lock), a thread that blocks every signal, and a thread
holding the GIL in C."""
import json
import shutil
import time

import pytest

from conftest import line_of
from control_client import request, wait_for_server

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")


def by_name(bt):
    return {t["thread_name"]: t for t in bt["threads"]}


def funcs(thread):
    return [f["func"] for f in thread["frames"]]


@pytest.fixture
def native_target(python, target, tmp_path):
    def _start(*args):
        t = target(python, "native.py", tmp_path, *args)
        t.wait_ready()
        wait_for_server(t.proc.pid)
        return t

    return _start


def test_merged_frames_and_a_thread_blocking_signals(native_target, python):
    t = native_target()
    start = time.time()
    s, bt = request(t.proc.pid, "GET", "/backtrace?native=1")
    assert s == 200, bt
    assert time.time() - start < 5
    threads = by_name(bt)
    main = threads["MainThread"]["frames"]
    # Innermost: the C sleep inside time.sleep, then the Python frames where the eval loop was,
    # then the interpreter's start-up down to main.
    # (time.sleep is clock_nanosleep on 3.11+, select before)
    assert main[0]["frame_type"] == "Native"
    assert "sleep" in main[0]["func"] or "select" in main[0]["func"]
    py = [f for f in main if f["frame_type"] == "Python"]
    assert [f["func"] for f in py] == ["sleeper", "<module>"]
    assert py[0]["lineno"] == line_of("native.py", "MAIN-LINE")
    assert "Py_BytesMain" in funcs(threads["MainThread"])
    assert "_PyEval_EvalFrameDefault" not in funcs(threads["MainThread"])
    assert [f["depth"] for f in main] == list(range(len(main)))
    first_py = main.index(py[0])
    assert all(f["frame_type"] == "Native" for f in main[:first_py])

    blocked = threads["blocked"]
    assert "did not take the signal" in blocked["native_error"]
    assert [f["func"] for f in blocked["frames"]][:1] == ["signals_blocked"]
    assert all(f["frame_type"] == "Python" for f in blocked["frames"])

    # The target is unharmed: it goes on, answers, and its sleep was not cut short.
    assert request(t.proc.pid, "POST", "/eval", {"code": "1 + 1"})[1]["value"] == "2"
    assert t.proc.poll() is None


def test_a_thread_inside_dlopen_holding_the_loader_lock(native_target):
    t = native_target("dlopen")
    time.sleep(1)  # the loader thread is inside dlopen by now
    start = time.time()
    s, bt = request(t.proc.pid, "GET", "/backtrace?native=1")
    assert s == 200, bt
    assert time.time() - start < 5
    loader = [t for t in bt["threads"] if "in_dlopen" in funcs(t)][0]
    assert "native_error" not in loader
    names = funcs(loader)
    assert "probing_test_slow_init" in names and "dlopen" in " ".join(names), names
    assert names.index("probing_test_slow_init") < names.index("in_dlopen")
    assert t.proc.poll() is None


def test_native_frames_of_a_thread_holding_the_gil(native_target, probing_bin, run):
    t = native_target("hog")
    time.sleep(0.5)
    start = time.time()
    r = run(probing_bin, "-t", t.proc.pid, "backtrace", "--native", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert time.time() - start < 5
    rows = [row for row in json.loads(r.stdout) if row["thread_name"] == "MainThread"]
    assert rows[0]["frame_type"] == "Native"
    names = [row["func"] for row in rows]
    assert any("sre" in n.lower() or "match" in n.lower() or "+0x" in n for n in names[:8]), names
    py = [row for row in rows if row["frame_type"] == "Python"]
    assert [row["func"] for row in py] == ["match", "<module>"]
    hog = py[1]
    assert hog["lineno"] == line_of("native.py", "HOG-LINE")
    assert rows[0]["holds_gil"] == 1


def test_text_output_shows_modules_and_lines(native_target, probing_bin, run):
    t = native_target()
    time.sleep(0.5)
    r = run(probing_bin, "-t", t.proc.pid, "backtrace", "--native")
    assert r.returncode == 0, r.stderr
    assert "Thread" in r.stdout and "[libc.so.6]" in r.stdout
    assert "sleeper (" in r.stdout and "native.py:%d)" % line_of("native.py", "MAIN-LINE") in r.stdout
    assert "(native frames: the thread did not take the signal" in r.stdout
