"""`probing -t PID inject` into real Python processes started without the recorder, under every
interpreter found: the recorder answers, its rings fill, and the target goes on and exits with
its own code. Errors are one line with a non-zero exit and leave the target running."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import BUILD, TARGETS, _find_python

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["PROBING_DATA_DIR"] = str(tmp_path / "data")
    return e


@pytest.fixture
def spawn(tmp_path, env):
    """spawn(python, mode, seconds) -> Popen of tests/targets/inject_target.py, ready; killed
    on every path."""
    started = []
    helper_dir = tmp_path / "helper"
    helper_dir.mkdir()

    def _spawn(python, mode, seconds, extra_env=None):
        e = dict(env, PROBING="0", PYTHONUNBUFFERED="1", **(extra_env or {}))
        p = subprocess.Popen([python, str(TARGETS / "inject_target.py"), str(helper_dir), mode,
                              str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=e)
        started.append(p)
        line = p.stdout.readline()
        assert line.strip() == "ready", "target said %r; stderr: %s" % (line, p.stderr.read())
        time.sleep(0.2)  # into its blocking call or loop
        return p

    yield _spawn
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def inject(probing_bin, env, pid, *args, timeout=60):
    return subprocess.run([str(probing_bin), "-t", str(pid), "inject", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def query(probing_bin, env, pid, sql):
    r = subprocess.run([str(probing_bin), "-t", str(pid), "query", sql, "--format", "json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_injected(probing_bin, env, p):
    r = inject(probing_bin, env, p.pid, "--format", "json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)[0]
    assert not row["already_running"]
    assert row["thread"] > 0 and row["stopped_ms"] > 0
    info = subprocess.run([str(probing_bin), "-t", str(p.pid), "info", "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert info.returncode == 0, info.stderr
    assert {"key": "pid", "value": p.pid} in json.loads(info.stdout)
    return row


def finish(p, probing_bin, env):
    out, err = p.communicate(timeout=60)
    assert p.returncode == 7, "exit %d; stderr: %s" % (p.returncode, err)
    samples = query(probing_bin, env, p.pid, "SELECT count(*) AS n FROM python.stacks")
    assert samples[0]["n"] > 0, "no stack samples in the rings"
    return out


def test_idle_in_sleep(python, spawn, probing_bin, env):
    p = spawn(python, "sleep", 2.5)
    check_injected(probing_bin, env, p)
    out = finish(p, probing_bin, env)
    slept = float(out.split()[1])
    assert 2.45 <= slept < 4, out  # the interrupted sleep went on for its full length


def test_blocked_reading_a_pipe(python, spawn, probing_bin, env):
    p = spawn(python, "pipe", 2.0)
    check_injected(probing_bin, env, p)
    assert finish(p, probing_bin, env).strip() == "read hello"


def test_busy_pure_python_loop(python, spawn, probing_bin, env):
    p = spawn(python, "busy", 2.0)
    check_injected(probing_bin, env, p)
    assert int(finish(p, probing_bin, env).split()[1]) > 0


def test_twenty_threads(python, spawn, probing_bin, env):
    p = spawn(python, "threads", 2.0)
    check_injected(probing_bin, env, p)
    out = finish(p, probing_bin, env)
    assert int(out.split()[-1]) > 10, out  # every thread kept counting
    names = query(probing_bin, env, p.pid,
                  "SELECT count(DISTINCT thread_id) AS n FROM python.stacks")
    assert names[0]["n"] >= 20


@needs_cc
def test_eight_threads_hammering_malloc(python, spawn, probing_bin, env):
    p = spawn(python, "malloc", 2.0)
    check_injected(probing_bin, env, p)
    out = finish(p, probing_bin, env)
    assert int(out.split()[-1]) > 0, out


@needs_cc
def test_epoll_wait_is_not_cut_short(python, spawn, probing_bin, env):
    """epoll_wait fails with EINTR when its thread is stopped by ptrace; the injector sends the
    thread back into it, so C code that does not retry sees nothing."""
    p = spawn(python, "epoll", 2.0)
    row = check_injected(probing_bin, env, p)
    assert row["thread"] == p.pid  # the main thread, the one in epoll_wait
    assert finish(p, probing_bin, env).strip() == "eintr 0"


def test_torch_training_is_traced_after_injection(spawn, probing_bin, env):
    python = _find_python("system")
    if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0:
        pytest.skip("PyTorch is not installed for %s" % python)
    p = spawn(python, "torch", 4.0)
    check_injected(probing_bin, env, p)
    finish(p, probing_bin, env)
    rows = query(probing_bin, env, p.pid,
                 "SELECT count(*) AS n FROM python.torch_trace WHERE stage = 'forward'")
    assert rows[0]["n"] > 0


def test_a_target_in_a_virtual_environment(python, spawn, probing_bin, env, tmp_path):
    """A venv of its own, without our package: the recorder is found beside `probing`."""
    venv = tmp_path / "venv"
    r = subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip("no venv module for %s: %s" % (python, r.stderr.strip()[-200:]))
    p = spawn(str(venv / "bin" / "python"), "sleep", 1.5)
    check_injected(probing_bin, env, p)
    finish(p, probing_bin, env)


def test_twice_says_already_running_and_changes_nothing(spawn, probing_bin, env):
    p = spawn(_find_python("system"), "sleep", 3)
    check_injected(probing_bin, env, p)
    def mapped_files():  # anonymous memory moves on its own (the recorder's threads allocate)
        lines = open("/proc/%d/maps" % p.pid).read().splitlines()
        return sorted(line.split(None, 5)[5] for line in lines if len(line.split(None, 5)) == 6)

    files_before = mapped_files()
    r = inject(probing_bin, env, p.pid)
    assert r.returncode == 0
    assert "already running" in r.stderr
    assert mapped_files() == files_before  # nothing loaded twice
    finish(p, probing_bin, env)


def test_settings_are_applied(spawn, probing_bin, env):
    p = spawn(_find_python("system"), "sleep", 2)
    r = inject(probing_bin, env, p.pid, "--set", "probing.sampler.hz=50")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Successfully injected probes into process %d" % p.pid)
    cfg = subprocess.run([str(probing_bin), "-t", str(p.pid), "config", "probing.sampler.hz",
                          "--format", "json"], capture_output=True, text=True, env=env)
    assert json.loads(cfg.stdout)[0]["value"] == "50"
    finish(p, probing_bin, env)


# ---- errors: one line, exit 1 (2 for usage), target untouched ----------------------------

def one_line_error(r, *words):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("probing: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_no_such_process(probing_bin, env):
    one_line_error(inject(probing_bin, env, 4000000), "no such process 4000000")


def test_pid_1_as_root_is_refused_with_the_reason(probing_bin, env):
    """Root may not trace the namespace's init: the reason in one line, never "run probing as
    root" to root."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    try:
        init = os.path.basename(os.readlink("/proc/1/exe"))
    except OSError:
        init = ""
    if init.startswith("python"):
        pytest.skip("pid 1 is a Python process here: the test would inject into it")
    r = inject(probing_bin, env, 1)
    one_line_error(r, "process 1")
    assert "pid 1, the namespace's init" in r.stderr or "not a Python process" in r.stderr, \
        r.stderr
    assert "as root" not in r.stderr, r.stderr


def test_not_a_python_process(probing_bin, env):
    p = subprocess.Popen(["sleep", "30"])
    try:
        one_line_error(inject(probing_bin, env, p.pid), "not a Python process")
    finally:
        p.kill()
        p.wait()


def test_no_recorder_build_for_its_version(spawn, probing_bin, env, tmp_path):
    p = spawn(_find_python("system"), "sleep", 1.5)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = inject(probing_bin, dict(env, PROBING_RECORDER_DIR=str(empty)), p.pid)
    one_line_error(r, "no recorder build for Python 3.", str(empty))
    assert p.wait(timeout=30) == 7


def test_another_user_is_refused_with_the_reason(spawn, probing_bin, env):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    p = spawn(_find_python("system"), "sleep", 1.5)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        str(probing_bin), "-t", str(p.pid), "inject"],
                       capture_output=True, text=True, env=env, timeout=60)
    one_line_error(r, "uid 0", "uid 65534")
    assert p.wait(timeout=30) == 7


@needs_cc
def test_no_safe_point_times_out_and_leaves_the_target_alone(spawn, probing_bin, env):
    # The only thread sits in dlopen (the loader lock held) for 3 s.
    p = spawn(_find_python("system"), "loader", 3)
    began = time.monotonic()
    r = inject(probing_bin, env, p.pid, "--timeout", "1")
    one_line_error(r, "no safe point", "ld-linux")
    assert time.monotonic() - began < 3
    out, err = p.communicate(timeout=30)
    assert p.returncode == 7, err
    assert out.startswith("loaded after")


@needs_cc
def test_target_exiting_during_injection(spawn, probing_bin, env):
    p = spawn(_find_python("system"), "loader", 1, extra_env={"PROBING_TEST_EXIT": "1"})
    r = inject(probing_bin, env, p.pid, "--timeout", "10")
    one_line_error(r, "exited during injection")
    assert p.wait(timeout=30) == 3


def test_usage_errors(probing_bin, env):
    r = subprocess.run([str(probing_bin), "inject"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "inject needs -t TARGET" in r.stderr
    r = subprocess.run([str(probing_bin), "-t", "1", "inject", "--set", "nokey"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr


@needs_cc
def test_a_hundred_fresh_malloc_heavy_processes(tmp_path, probing_bin, env):
    """Back to back: inject into a fresh process hammering malloc from 8 threads, 100 times.
    None may hang or crash."""
    python = _find_python("system")
    helper_dir = tmp_path / "helper"
    helper_dir.mkdir()
    e = dict(env, PROBING="0", PYTHONUNBUFFERED="1")
    failures = []
    injected = 0
    for trial in range(100):
        p = subprocess.Popen([python, str(TARGETS / "inject_target.py"), str(helper_dir), "malloc",
                              "0.3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=e)
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(0.05)
            r = inject(probing_bin, env, p.pid, timeout=30)
            out, err = p.communicate(timeout=30)
            # The target lives 0.3 s: on a loaded machine it may end before its recorder
            # answers, which the command must say (and the target end as it would).
            raced = "exited while its recorder was starting" in r.stderr
            injected += r.returncode == 0
            if p.returncode != 7 or (r.returncode != 0 and not raced):
                failures.append((trial, r.stderr.strip(), p.returncode, err[-300:]))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not failures, failures
    assert injected >= 50, "only %d of 100 injections answered before the target ended" % injected
