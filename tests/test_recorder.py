"""The recorder in real target processes, under every interpreter found: PROBING=1 start-up,
stacks that name the functions and current lines the target is really in, GIL-free sampling
while a thread holds the GIL in C, idle threads, forks, and the target's own exit code."""
import ctypes
import json
import os
import stat
import subprocess

import pytest

from conftest import line_of, read_table, samples_by_thread


def pid_dirs(data_dir):
    return sorted(p for p in data_dir.iterdir() if p.is_dir()) if data_dir.exists() else []


def test_busy_loop_names_functions_and_current_lines(python, target, analyze_bin):
    t = target(python, "busy.py", 2.5, 3)
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 3, err
    [d] = pid_dirs(t.data_dir)
    stacks = samples_by_thread(read_table(analyze_bin, [d], "python.stacks"))
    main = stacks["MainThread"]
    assert len(main) >= 100, "expected ~250 samples at 100 Hz over 2.5 s, got %d" % len(main)
    in_work = [s for s in main if s and s[0][0] == "inner_work"]
    assert len(in_work) >= 0.8 * len(main)
    busy = line_of("busy.py", "BUSY-LINE")
    lines = [s[0][1] for s in in_work]
    # Every line is one of inner_work's own (def+1 .. return); the loop's two lines dominate.
    assert set(lines) <= set(range(busy - 2, busy + 2)), set(lines)
    assert sum(1 for ln in lines if ln in (busy - 1, busy)) >= 0.8 * len(lines)
    assert [f for f, _ in in_work[0][1:3]] == ["outer", "<module>"]
    assert in_work[0][1][1] == line_of("busy.py", "inner_work(10000)")


def test_process_metadata_and_permissions(python, target):
    t = target(python, "busy.py", 0.5)
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 0, err
    [d] = pid_dirs(t.data_dir)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(t.data_dir.stat().st_mode) == 0o700
    for f in d.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    meta = json.loads((d / "process.json").read_text())
    assert meta["pid"] == int(d.name) == t.proc.pid
    assert meta["cmdline"][1:] == [str(t.proc.args[1]), "0.5"]
    ver = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True).stdout.strip()
    assert meta["python_version"] == ver
    assert meta["socket"] == "@probing-%d" % t.proc.pid


def test_idle_threads_appear_with_their_names(python, target, analyze_bin):
    t = target(python, "idle.py", 2.0, 4)
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 4, err
    [d] = pid_dirs(t.data_dir)
    stacks = samples_by_thread(read_table(analyze_bin, [d], "python.stacks"))
    def dominant(samples):  # the stack a thread showed most (the first and last may be in flux)
        return max(set(map(tuple, samples)), key=lambda s: samples.count(list(s)))

    for i in range(3):
        name = "waiter-%d" % i
        assert name in stacks, sorted(stacks)
        top = dominant(stacks[name])
        frames = [f for f, _ in top]
        # qualified names on 3.11+ (co_qualname): Thread._bootstrap
        assert "waiter" in frames and frames[-1] in ("_bootstrap", "Thread._bootstrap"), frames
        assert dict(top)["waiter"] == line_of("idle.py", "WAITER-LINE")
    assert dominant(stacks["MainThread"])[0] == ("idle_main", line_of("idle.py", "IDLE-LINE"))


def test_thread_holding_the_gil_in_c_is_still_sampled(python, target, analyze_bin):
    t = target(python, "gil_hog.py")
    t.wait_ready()
    rc, out, err = t.finish(timeout=120)
    assert rc == 5, err
    took = float(out.split()[-1])
    [d] = pid_dirs(t.data_dir)
    rows = read_table(analyze_bin, [d], "python.stacks")
    stacks = samples_by_thread(rows)
    hog_line = line_of("gil_hog.py", "HOG-LINE")
    # re.match (Python) calls the C matcher that holds the GIL: hog() is the frame below it.
    hogging = [s for s in stacks["MainThread"] if len(s) > 1 and s[1] == ("hog", hog_line)]
    # The sampler never needs the GIL: it keeps sampling at ~100 Hz through the whole C call.
    assert len(hogging) >= 50 * took, (len(hogging), took)
    assert {s[0][0] for s in hogging} == {"match"}
    # Inside the C call the GIL is never released; a sample may still fall in re.match's own
    # bytecode while the recorder's Python-side thread briefly has the GIL.
    holds = [r["holds_gil"] for r in rows if r["thread_name"] == "MainThread" and r["func"] == "hog"]
    assert sum(holds) >= 0.95 * len(holds)
    # The sleeping thread is sampled meanwhile, without the GIL. Its threading name cannot be
    # asked of the interpreter while the GIL is held, so it is found by its function.
    sleeper_line = line_of("gil_hog.py", "SLEEPER-LINE")
    sleeper = [s for name, ss in stacks.items() for s in ss if ("sleeper_fn", sleeper_line) in s]
    assert len(sleeper) >= 50 * took
    assert {r["holds_gil"] for r in rows if r["func"] == "sleeper_fn"} == {0}


def test_twenty_threads(python, target, analyze_bin):
    t = target(python, "many_threads.py", 1.5)
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 0, err
    [d] = pid_dirs(t.data_dir)
    stacks = samples_by_thread(read_table(analyze_bin, [d], "python.stacks"))
    names = {"t%02d" % i for i in range(20)}
    assert names <= set(stacks), sorted(names - set(stacks))
    line = line_of("many_threads.py", "THREAD-LINE")
    for n in names:
        assert any(("spin_wait", line) in s for s in stacks[n]), n


def test_forked_child_writes_nothing_with_probing_1(python, target, analyze_bin):
    t = target(python, "forker.py", probing="1")
    rc, out, err = t.finish()
    assert rc == 0, err
    child = int(out.split()[1])
    dirs = pid_dirs(t.data_dir)
    assert [d.name for d in dirs] == [str(t.proc.pid)]
    rows = read_table(analyze_bin, dirs, "python.stacks")
    assert not any(r["func"] == "child_work" for r in rows)  # never in the parent's rings
    assert child != t.proc.pid


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_forked_child_records_its_own_rings_with_probing_2(python, how, target, analyze_bin):
    t = target(python, "forker.py", 0.6, how, probing="2")
    rc, out, err = t.finish()
    assert rc == 0, err
    child = int(out.split()[1])
    dirs = {d.name: d for d in pid_dirs(t.data_dir)}
    assert set(dirs) == {str(t.proc.pid), str(child)}
    rows = read_table(analyze_bin, [dirs[str(child)]], "python.stacks")
    line = line_of("forker.py", "CHILD-LINE")
    # The child leaves by os._exit or SIGKILL, running no exit handler. In a recorder's first
    # seconds segments are sealed every 100 ms (docs/recorder.md), so of 0.6 s of work at
    # 100 Hz (about 60 samples) at most the last ~0.1 s is lost.
    work = [r for r in rows if r["func"] == "child_work" and r["depth"] == 0]
    assert len(work) >= 40, len(work)
    # child_work's own lines: its first ones (deadline, n = 0) while it starts, then the loop.
    assert {r["lineno"] for r in work} <= set(range(line - 3, line + 1))
    assert sum(r["lineno"] in (line - 1, line) for r in work) >= 0.9 * len(work)
    parent_rows = read_table(analyze_bin, [dirs[str(t.proc.pid)]], "python.stacks")
    assert not any(r["func"] == "child_work" for r in parent_rows)


def test_probing_unset_or_bad_leaves_the_program_alone(python, target):
    t = target(python, "busy.py", 0.2, 2, probing="0")
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 2 and err == ""
    assert not t.data_dir.exists()
    t = target(python, "busy.py", 0.2, 2, probing="yes")
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 2
    assert "PROBING='yes' is not 0, 1 or 2; the recorder stays off" in err
    assert not t.data_dir.exists()


def test_probe_is_probing_and_the_recorder_says_it_started(target):
    # The seeds' PROBE=1, when PROBING is not set; one line on stderr names the process.
    t = target("/usr/bin/python3", "busy.py", 0.2, 2, probing="", extra_env={"PROBE": "1"})
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 2
    assert "probing: enabled for process %d (" % t.proc.pid in err, err
    assert (t.data_dir / str(t.proc.pid)).is_dir()
    t = target("/usr/bin/python3", "busy.py", 0.2, 2, extra_env={"PROBING_BANNER": "off"})
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 2 and "enabled for process" not in err, err
    assert (t.data_dir / str(t.proc.pid)).is_dir()


def test_the_module_call_wrapper_on_every_interpreter(python, target):
    # torch is only under /usr/bin/python3; the wrapper's type is built on every interpreter.
    t = target(python, "module_call.py")
    rc, out, err = t.finish()
    assert rc == 0, err
    assert out.splitlines() == [
        "('orig', 'Sub', (1, 2), {'x': 3}) ('orig', 'M', (), {}) ('orig', 'Sub', (5,), {})",
        "(*a, **k) M.__call__ True",
        "raised KeyError('k')"]


def test_starting_twice_says_so_and_changes_nothing(python, tmp_path):
    code = ("import ctypes, probing; lib = ctypes.CDLL(probing.library_path()); "
            "print(lib.probing_start(), lib.probing_start())")
    from conftest import BUILD
    env = dict(os.environ, PYTHONUSERBASE=str(BUILD / "pyuser"), PROBING="0",
               PROBING_DATA_DIR=str(tmp_path / "d"))
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "1"]
    assert "already running" in r.stderr


def _rings_bytes(ring_dir):
    return sum(p.stat().st_size for p in ring_dir.glob("*.ring"))


@pytest.mark.parametrize("env,cap", [
    ({"PROBING_MAX_MEMORY": "2MB"}, 2_000_000),                             # caps buffer_size
    ({"PROBING_MAX_MEMORY": "1.5 MiB"}, 1_572_864),
    ({"PROBING_MAX_MEMORY": "1GB", "PROBING_BUFFER_SIZE": "1024"}, 1 << 20),  # buffer_size is less
    ({"PROBING_MAX_MEMORY": "0"}, 10000 * 1024),                            # no cap
])
def test_max_memory_caps_the_rings_on_disk(python, target, probing_bin, env, cap, monkeypatch):
    """probing.max_memory (PROBING_MAX_MEMORY, with units): the rings' files together take at
    most the smaller of it and probing.buffer_size, and not much less; shown by config; refused
    at run time, since the rings are mapped at start."""
    from conftest import run_probing
    from control_client import wait_for_server

    t = target(python, "serve.py", extra_env=env)
    t.wait_ready()
    wait_for_server(t.proc.pid)
    ring_dir = t.data_dir / str(t.proc.pid)
    total = _rings_bytes(ring_dir)
    assert 0.9 * cap < total <= cap, (total, cap)
    monkeypatch.setenv("PROBING_DATA_DIR", str(t.data_dir))
    r = run_probing(probing_bin, "-t", t.proc.pid, "config", "probing.max_memory")
    assert r.returncode == 0 and env["PROBING_MAX_MEMORY"] in r.stdout, r.stdout + r.stderr
    r = run_probing(probing_bin, "-t", t.proc.pid, "config", "probing.max_memory=1GB")
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    assert "probing.max_memory is read-only at run time" in r.stderr
    assert "PROBING_MAX_MEMORY" in r.stderr
    assert _rings_bytes(ring_dir) == total


@pytest.mark.parametrize("bad", ["lots", "1MB", "12", "1GBs", "-1GB", "2PB"])
def test_max_memory_bad_values_are_named_and_ignored(target, bad):
    t = target("/usr/bin/python3", "serve.py", extra_env={"PROBING_MAX_MEMORY": bad})
    t.wait_ready()
    total = _rings_bytes(t.data_dir / str(t.proc.pid))
    t.kill()
    err = t.proc.stderr.read()
    assert ("probing: PROBING_MAX_MEMORY=%s ignored: probing.max_memory must be 0 (no cap) or a "
            "size from 1MiB to 1PiB with a unit: KB, MB, GB, TB (1000-based) or KiB, MiB, GiB, "
            "TiB (1024-based), e.g. 512MB or 1.5GiB, not '%s'" % (bad, bad)) in err, err
    assert 0.9 * 10000 * 1024 < total <= 10000 * 1024  # the default: probing.buffer_size alone
