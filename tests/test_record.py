"""`probing record` and the exports of probing-analyze and `probing flamegraph`, against real
targets: recordings made by attaching and by launching, ended by the duration, Ctrl-C, the
target's death (SIGKILL) and the recorder's own death; several recordings at once; an SQLite
file; folded stacks, speedscope JSON checked against speedscope's published schema, a Chrome
trace, and flame graph SVGs rendered by headless Chromium."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import BUILD, FIXTURES, ROOT, TARGETS
from png import read_png

PY = "/usr/bin/python3"
SCHEMA = BUILD / "test-assets" / "speedscope-1.25.0" / "file-format-schema.json"


def env_for(tmp_path):
    """The recorded programs' environment: the overhead budget off, as these tests check that
    every step's calls reach the recording (the budget's own tests: test_torch_trace.py)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update({"PROBING_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1",
                "PYTHONUSERBASE": str(BUILD / "pyuser"), "PROBING_TORCH_BUDGET": "off"})
    return env


@pytest.fixture
def procs():
    """Processes started by a test, killed on every path."""
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def start(procs, tmp_path, *argv, probing="1"):
    env = env_for(tmp_path)
    env["PROBING"] = probing
    p = subprocess.Popen([*map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    procs.append(p)
    return p


def wait_rings(tmp_path, pid, timeout=30):
    meta = tmp_path / "data" / str(pid) / "process.json"
    deadline = time.time() + timeout
    while not meta.exists():
        assert time.time() < deadline, "no rings for %d" % pid
        time.sleep(0.05)


def record(probing_bin, tmp_path, *args, timeout=120):
    return subprocess.run([str(probing_bin), "record", *map(str, args)], capture_output=True,
                          text=True, env=env_for(tmp_path), timeout=timeout)


def analyze(analyze_bin, *args, timeout=120):
    r = subprocess.run([str(analyze_bin), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    return r


def sql(analyze_bin, inputs, query):
    r = analyze(analyze_bin, *inputs, query, "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def stats_row(analyze_bin, path):
    r = analyze(analyze_bin, path, "--stats")
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith(str(path))][0]
    return line.split()


# ------------------------------------------------------------------------------------------
# Recording


def test_record_attached_for_a_duration(procs, tmp_path, probing_bin, analyze_bin):
    train = start(procs, tmp_path, PY, ROOT / "samples" / "train_mlp.py")
    wait_rings(tmp_path, train.pid)
    time.sleep(1.5)  # some steps before the recording starts: those still in the rings come too
    out = tmp_path / "run.ptrace"
    r = record(probing_bin, tmp_path, "-t", train.pid, "-o", out, "--duration", "3")
    assert r.returncode == 0, r.stderr
    assert "recording process" not in r.stderr  # no progress line when not on a terminal
    assert re.search(r"recorded \d+ segments \(\d+ events, .*\) from process %d in 3\.\d s to %s; "
                     r"the duration was reached" % (train.pid, re.escape(str(out))), r.stderr)
    assert train.poll() is None  # an attached target keeps running
    row = stats_row(analyze_bin, out)
    assert row[1:8] == ["ptrace", row[2], "0", "0", "0", "yes", "no"]
    counts = sql(analyze_bin, [out], "SELECT (SELECT count(DISTINCT sample_id) FROM python.stacks) "
                 "AS samples, (SELECT count(DISTINCT step) FROM python.torch_trace) AS steps, "
                 "(SELECT count(*) FROM python.memory) AS memory, "
                 "(SELECT max(ts) - min(ts) FROM python.stacks) AS span")[0]
    assert counts["samples"] > 200 and counts["steps"] > 100 and counts["memory"] >= 3
    assert counts["span"] > 3.0


def test_record_launched_from_the_first_step(tmp_path, probing_bin, analyze_bin):
    out = tmp_path / "run.ptrace"
    r = record(probing_bin, tmp_path, "-o", out, "--", PY, ROOT / "samples" / "train_mlp.py",
               "--steps", "120")
    assert r.returncode == 0, r.stderr
    assert "step 100 loss" in r.stdout  # the command's own output passes through
    assert "ended" in r.stderr
    steps = sql(analyze_bin, [out], "SELECT min(step) AS first, max(step) AS last, "
                "count(DISTINCT step) AS n FROM python.torch_trace")[0]
    assert steps == {"first": 0, "last": 119, "n": 120}
    # Every layer's forward, every step: nothing lost between the rings and the file.
    rows = sql(analyze_bin, [out], "SELECT count(*) AS n FROM python.torch_trace "
               "WHERE stage = 'forward' AND module = '0'")[0]
    assert rows["n"] == 120


def test_record_launched_passes_on_the_exit_code(tmp_path, probing_bin, analyze_bin):
    out = tmp_path / "run.ptrace"
    r = record(probing_bin, tmp_path, "-o", out, "--", PY, TARGETS / "busy.py", "1.0", "3")
    assert r.returncode == 3, r.stderr
    assert "exited with code 3" in r.stderr
    funcs = {row["func"] for row in sql(analyze_bin, [out], "SELECT DISTINCT func FROM python.stacks")}
    assert {"inner_work", "outer"} <= funcs


def test_record_ends_when_the_duration_stops_a_launched_command(tmp_path, probing_bin, analyze_bin):
    out = tmp_path / "run.ptrace"
    t0 = time.time()
    r = record(probing_bin, tmp_path, "-o", out, "--duration", "2", "--", PY,
               TARGETS / "busy.py", "60")
    assert r.returncode == 0, r.stderr
    assert time.time() - t0 < 30  # interrupted, not waited for
    assert stats_row(analyze_bin, out)[6] == "yes"


def test_record_ends_with_a_sigkilled_target(procs, tmp_path, probing_bin, analyze_bin):
    train = start(procs, tmp_path, PY, ROOT / "samples" / "train_mlp.py")
    wait_rings(tmp_path, train.pid)
    out = tmp_path / "run.ptrace"
    rec = subprocess.Popen([str(probing_bin), "record", "-t", str(train.pid), "-o", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env_for(tmp_path))
    procs.append(rec)
    time.sleep(3)
    train.kill()
    _, err = rec.communicate(timeout=30)
    assert rec.returncode == 0, err
    assert "process %d ended" % train.pid in err
    row = stats_row(analyze_bin, out)
    assert row[6] == "yes" and row[3] == "0"  # closed properly, nothing corrupt
    n = sql(analyze_bin, [out], "SELECT count(DISTINCT step) AS n FROM python.torch_trace")[0]["n"]
    assert n > 100


def test_record_interrupted_and_killed(procs, tmp_path, probing_bin, analyze_bin):
    busy = start(procs, tmp_path, PY, TARGETS / "busy.py", "60")
    wait_rings(tmp_path, busy.pid)
    # Ctrl-C: a clean end, index written.
    out = tmp_path / "int.ptrace"
    rec = subprocess.Popen([str(probing_bin), "record", "-t", str(busy.pid), "-o", str(out)],
                           stderr=subprocess.PIPE, text=True, env=env_for(tmp_path))
    procs.append(rec)
    time.sleep(2.5)
    rec.send_signal(signal.SIGINT)
    _, err = rec.communicate(timeout=30)
    assert rec.returncode == 0, err
    assert "; interrupted" in err
    assert stats_row(analyze_bin, out)[6] == "yes"
    # SIGKILL of the recorder itself: no index, still readable up to its last whole segment.
    out = tmp_path / "killed.ptrace"
    rec = subprocess.Popen([str(probing_bin), "record", "-t", str(busy.pid), "-o", str(out)],
                           stderr=subprocess.PIPE, text=True, env=env_for(tmp_path))
    procs.append(rec)
    time.sleep(2.5)
    rec.kill()
    rec.wait()
    row = stats_row(analyze_bin, out)
    assert row[6:8] == ["no", "(scanned)"] and int(row[2]) > 0
    assert sql(analyze_bin, [out], "SELECT count(*) AS n FROM python.stacks")[0]["n"] > 0


def test_record_errors(tmp_path, probing_bin):
    r = record(probing_bin, tmp_path, "-t", "1")  # no -o
    assert r.returncode == 2 and "--output is required" in r.stderr
    r = record(probing_bin, tmp_path, "-o", tmp_path / "x.ptrace")
    assert r.returncode == 2 and "record needs -t TARGET, or a command" in r.stderr
    r = record(probing_bin, tmp_path, "-t", "1", "-o", tmp_path / "x.ptrace", "--", PY)
    assert r.returncode == 2 and "not both" in r.stderr
    r = record(probing_bin, tmp_path, "-t", "4194304", "-o", tmp_path / "x.ptrace")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no such process 4194304" in r.stderr
    r = record(probing_bin, tmp_path, "-o", tmp_path / "x.ptrace", "--", "/bin/true")
    assert r.returncode == 1 and "exited (code 0) before its recorder started" in r.stderr
    r = record(probing_bin, tmp_path, "-o", tmp_path / "x.ptrace", "--", tmp_path / "missing")
    assert r.returncode == 1 and "cannot run" in r.stderr
    r = record(probing_bin, tmp_path, "-o", tmp_path / "no" / "dir" / "x.ptrace", "--", PY,
               TARGETS / "busy.py", "5")
    assert r.returncode == 1 and "x.ptrace" in r.stderr.splitlines()[-1]


# ------------------------------------------------------------------------------------------
# Analysis of real recordings: several files, an SQLite file, exports


@pytest.fixture(scope="module")
def busy_recordings(tmp_path_factory, probing_bin):
    """Two recordings of busy.py (separate processes), 3 s each, made once for this module."""
    tmp = tmp_path_factory.mktemp("busy")
    paths = []
    for i in range(2):
        out = tmp / ("busy%d.ptrace" % i)
        r = record(probing_bin, tmp, "-o", out, "--", PY, TARGETS / "busy.py", "3")
        assert r.returncode == 0, r.stderr
        paths.append(out)
    return paths


def test_several_recordings_told_apart_by_pid(busy_recordings, analyze_bin):
    rows = sql(analyze_bin, busy_recordings,
               "SELECT pid, count(DISTINCT sample_id) AS n FROM python.stacks GROUP BY pid")
    assert len(rows) == 2 and all(r["n"] > 100 for r in rows)
    procs = sql(analyze_bin, busy_recordings, "SELECT pid FROM system.process ORDER BY pid")
    assert sorted(r["pid"] for r in rows) == [p["pid"] for p in procs]


def test_db_file_opens_in_sqlite(busy_recordings, analyze_bin, tmp_path):
    db = tmp_path / "runs.db"
    r = analyze(analyze_bin, *busy_recordings, "--db", db)
    assert r.returncode == 0, r.stderr
    assert "rows to %s" % db in r.stderr
    ours = sql(analyze_bin, busy_recordings, "SELECT count(*) AS n FROM python.stacks")[0]["n"]
    con = sqlite3.connect(db)
    try:
        assert con.execute('SELECT count(*) FROM "python.stacks"').fetchone()[0] == ours
        tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"python.stacks", "python.torch_trace", "system.process"} <= tables
        assert con.execute('SELECT typeof(ts), typeof(pid) FROM "python.stacks" LIMIT 1').fetchone() \
            == ("real", "integer")
    finally:
        con.close()


def test_damaged_recordings_load_what_is_whole(busy_recordings, analyze_bin, tmp_path):
    data = busy_recordings[0].read_bytes()
    whole = sql(analyze_bin, [busy_recordings[0]], "SELECT count(*) AS n FROM python.stacks")[0]["n"]
    segments = int(stats_row(analyze_bin, busy_recordings[0])[2])
    # Cut anywhere: the segments before the cut load, the rest is reported as cut off.
    loaded = []
    for fraction in (0.3, 0.6, 0.95):
        cut = tmp_path / ("cut%d.ptrace" % int(fraction * 100))
        cut.write_bytes(data[:int(len(data) * fraction)])
        row = stats_row(analyze_bin, cut)
        assert row[6:8] == ["no", "(scanned)"], row
        loaded.append(int(row[2]))
        n = sql(analyze_bin, [cut], "SELECT count(*) AS n FROM python.stacks")[0]["n"]
        assert n <= whole
    assert 0 < loaded[0] <= loaded[1] <= loaded[2] <= segments and loaded[0] < segments
    # Bytes flipped inside a segment: that segment is counted corrupt, the others load.
    bad = bytearray(data)
    for at in range(len(data) // 2, len(data) // 2 + 64):
        bad[at] ^= 0x5A
    damaged = tmp_path / "flipped.ptrace"
    damaged.write_bytes(bytes(bad))
    r = analyze(analyze_bin, damaged, "SELECT count(*) AS n FROM python.stacks", "--format", "json")
    assert r.returncode == 0 and "damaged and skipped; --stats tells what" in r.stderr
    import json as _json
    assert 0 < _json.loads(r.stdout)[0]["n"] < whole
    row = stats_row(analyze_bin, damaged)
    assert int(row[3]) + int(row[5] != "0") >= 1  # a corrupt segment, or skipped bytes


def folded_lines(text):
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"(.+) (\d+)", line)
        assert m, "not a folded line: %r" % line
        frames = m.group(1).split(";")
        assert all(frames), "empty frame in %r" % line
        out.append((frames, int(m.group(2))))
    return out


def test_folded_follows_flamegraph_pl_rules(busy_recordings, analyze_bin):
    path = busy_recordings[0]
    r = analyze(analyze_bin, path, "--folded", "-")
    assert r.returncode == 0, r.stderr
    lines = folded_lines(r.stdout)
    total = sum(n for _, n in lines)
    samples = sql(analyze_bin, [path], "SELECT count(DISTINCT sample_id) AS n FROM python.stacks")
    assert total == samples[0]["n"]
    pid = sql(analyze_bin, [path], "SELECT pid FROM system.process")[0]["pid"]
    startup = 0
    for frames, n in lines:  # root first: the thread, then the script's module frame
        assert frames[0] == "MainThread (%d)" % pid
        if not frames[1].startswith("<module> (%s:1)" % (TARGETS / "busy.py")):
            # Before the script's first line: the interpreter's own start-up imports, called
            # from C (the recorder starts in site's .pth processing).
            assert frames[1].startswith("_find_and_load (<frozen importlib._bootstrap>"), frames
            startup += n
    assert startup <= total * 0.05
    hot = sum(n for frames, n in lines if frames[-1].startswith("inner_work ("))
    assert hot > total * 0.5
    # --where keeps whole samples whose frames match; --thread and --since narrow them.
    r = analyze(analyze_bin, path, "--folded", "-", "--where", "func = 'inner_work'")
    assert all(any(f.startswith("inner_work (") for f in frames)
               for frames, _ in folded_lines(r.stdout))
    assert sum(n for _, n in folded_lines(r.stdout)) == sum(
        n for frames, n in lines if any(f.startswith("inner_work (") for f in frames))
    # An export that would be empty is an error, with the reason, and writes nothing.
    r = analyze(analyze_bin, path, "--folded", "-", "--thread", "1")
    assert r.returncode == 1 and r.stdout == ""
    assert "no stack samples with Python frames to export" in r.stderr
    assert "matched none" in r.stderr
    r = analyze(analyze_bin, path, "--folded", "-", "--since", "1", "--until", "2")
    part = sum(n for _, n in folded_lines(r.stdout))
    assert 0.15 * total < part < 0.6 * total  # about a third of a 3 s run


@pytest.mark.skipif(not SCHEMA.exists(), reason="speedscope's schema is fetched by make test "
                    "(scripts/fetch-test-assets)")
def test_speedscope_matches_its_published_schema(busy_recordings, analyze_bin, tmp_path):
    import jsonschema

    out = tmp_path / "profile.speedscope.json"
    r = analyze(analyze_bin, *busy_recordings, "--speedscope", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert len(doc["profiles"]) == 2  # one per thread: two processes' main threads
    frames = doc["shared"]["frames"]
    names = {frames[i]["name"] for p in doc["profiles"] for s in p["samples"] for i in s}
    assert {"<module>", "outer", "inner_work"} <= names


def nesting_problems(doc):
    """What a JavaScript importer (speedscope's) sees, in doubles as Python's floats are: per
    thread, times less the thread's first (and as written), events by start and then longest
    first, each ending at ts + dur. Every event that ends after the one around it, or after its
    next sibling starts, is a problem."""
    threads = {}
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            threads.setdefault((e["pid"], e["tid"]), []).append(e)
    problems = []
    for events in threads.values():
        first = min(e["ts"] for e in events)
        for shift in (0.0, first):
            spans = sorted(((e["ts"] - shift, (e["ts"] - shift) + e["dur"], e["name"]) for e in events),
                           key=lambda s: (s[0], -(s[1] - s[0])))
            open_ = []
            for ts, end, name in spans:
                while open_ and open_[-1][1] <= ts:
                    open_.pop()
                if open_ and (end > open_[-1][1] or ts < open_[-1][0]):
                    problems.append("%s [%r, %r] not inside %s [%r, %r]" % (name, ts, end, *open_[-1][2:],
                                                                           *open_[-1][:2]))
                open_.append((ts, end, name))
    return problems


NOT_NESTED = FIXTURES / "chrome_trace_not_nested.json"


def test_nesting_check_sees_what_doubles_break():
    # The fixture nests in decimal (0 + 0.3 = 0.1 + 0.2) but not in doubles.
    problems = nesting_problems(json.loads(NOT_NESTED.read_text()))
    assert problems and "child" in problems[0], problems


@pytest.fixture(scope="module")
def mlp_recording(tmp_path_factory, probing_bin):
    """train_mlp.py for 30 steps, recorded from its start, once for this module."""
    tmp = tmp_path_factory.mktemp("mlp")
    rec = tmp / "mlp.ptrace"
    r = record(probing_bin, tmp, "-o", rec, "--", PY, ROOT / "samples" / "train_mlp.py",
               "--steps", "30")
    assert r.returncode == 0, r.stderr
    return rec


@pytest.fixture(scope="module")
def mlp_chrome_trace(mlp_recording, analyze_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("chrome") / "trace.json"
    r = analyze(analyze_bin, mlp_recording, "--chrome-trace", out)
    assert r.returncode == 0, r.stderr
    return out, r.stderr


def test_chrome_trace_nests_modules_in_steps(mlp_recording, mlp_chrome_trace, analyze_bin):
    out, stderr = mlp_chrome_trace
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    rows = sql(analyze_bin, [mlp_recording], "SELECT count(*) AS n FROM python.torch_trace")[0]["n"]
    assert "wrote %d PyTorch calls" % rows in stderr
    calls = [e for e in events if e["ph"] == "X" and e["cat"] != "train_step"]
    steps = {e["args"]["step"]: e for e in events if e["ph"] == "X" and e["cat"] == "train_step"}
    assert len(calls) == rows and len(steps) == 30
    # Exactly, in doubles: calls in their step, the model's forward around its layers'.
    assert nesting_problems(doc) == []
    for c in calls:
        s = steps[c["args"]["step"]]
        assert s["ts"] <= c["ts"] and c["ts"] + c["dur"] <= s["ts"] + s["dur"]
    model = [c for c in calls if c["name"] == "Sequential" and c["cat"] == "forward"]
    layer = [c for c in calls if c["name"] == "0" and c["cat"] == "forward"]
    assert len(model) == len(layer) == 30
    for m, l in zip(sorted(model, key=lambda e: e["ts"]), sorted(layer, key=lambda e: e["ts"])):
        assert m["ts"] <= l["ts"] and l["ts"] + l["dur"] <= m["ts"] + m["dur"]
    # Perfetto rounds microseconds to whole nanoseconds: the recorded ones come back.
    zero = doc["otherData"]["unix_time_ns_at_zero"]
    recorded = {(r["seq"], r["step"]): r for r in sql(
        analyze_bin, [mlp_recording], "SELECT step, seq, time, duration FROM python.torch_trace")}
    for c in calls:
        r = recorded[(c["args"]["seq"], c["args"]["step"])]
        assert abs((round(c["ts"] * 1000) + zero) / 1e9 - r["time"]) < 1e-6  # SQL's time: a double
        assert round(c["dur"] * 1000) == round(r["duration"] * 1e9)
    # One named process, named threads for every thread with events.
    pids = {e["pid"] for e in events if e["ph"] in "XC"}
    named = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert pids == named and len(pids) == 1
    tids = {(e["pid"], e["tid"]) for e in events if e["ph"] == "X"}
    assert tids == {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert any(e["ph"] == "C" and e["name"] == "memory" for e in events)


SPEEDSCOPE_APP = BUILD / "test-assets" / "speedscope-1.25.0" / "release"
NODE_MODULES = BUILD / "test-assets" / "node_modules"


def speedscope_import(path, tmp_path):
    """speedscope's own importer on path, in Chromium: its report (tests/web/speedscope_import.mjs)."""
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
    r = subprocess.run(["node", str(ROOT / "tests" / "web" / "speedscope_import.mjs"),
                        "--app", str(SPEEDSCOPE_APP), "--file", str(path)],
                       capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    # Chromium's software GL reports its own stalls as warnings: not the importer's.
    report["warnings"] = [w for w in report["warnings"] if not w.startswith("[.WebGL-")]
    return report


needs_speedscope = pytest.mark.skipif(
    not (SPEEDSCOPE_APP / "index.html").exists() or not (NODE_MODULES / "playwright-core").exists()
    or not os.path.exists("/usr/bin/chromium"),
    reason="speedscope, playwright-core and Chromium come from scripts/fetch-test-assets and "
           "scripts/install-deps")


@needs_speedscope
def test_chrome_trace_opens_in_speedscope_without_warnings(mlp_chrome_trace, tmp_path):
    out, _ = mlp_chrome_trace
    report = speedscope_import(out, tmp_path)
    assert report["loaded"], report
    assert report["warnings"] == [] and report["errors"] == [], report
    assert report["outside"] == []
    assert "train_mlp.py" in report["text"] and "MainThread" in report["text"], report["text"]


@needs_speedscope
def test_speedscope_check_fails_on_a_trace_that_does_not_nest(tmp_path):
    report = speedscope_import(NOT_NESTED, tmp_path)
    assert report["loaded"], report
    assert any("Tried to end" in w for w in report["warnings"]), report


def test_export_usage_errors(busy_recordings, analyze_bin, tmp_path):
    r = analyze(analyze_bin, busy_recordings[0], "--thread", "5")
    assert r.returncode == 2 and "choose what an export" in r.stderr
    r = analyze(analyze_bin, busy_recordings[0], "--folded", "-", "--since", "soon")
    assert r.returncode == 1 and "'soon' is not a time" in r.stderr
    r = analyze(analyze_bin, busy_recordings[0], "--folded", "-", "--where", "nope = 1")
    assert r.returncode == 1 and "no such column: nope" in r.stderr
    r = analyze(analyze_bin, busy_recordings[0], "--folded", "-", "--speedscope", "-")
    assert r.returncode == 2 and "only one output can go to standard output" in r.stderr
    r = analyze(analyze_bin, busy_recordings[0], "--folded", "-", "--since", "nan")
    assert r.returncode == 1 and "'nan' is not a time" in r.stderr
    r = analyze(analyze_bin, busy_recordings[0], "--flamegraph", tmp_path / "no" / "f.svg")
    assert r.returncode == 1 and "cannot write" in r.stderr


# ------------------------------------------------------------------------------------------
# Flame graphs in a real browser

CHROMIUM = "/usr/bin/chromium"


def screenshot(svg, fragment, out, width, height):
    profile = out.parent / ("chromium-" + out.stem)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", "--user-data-dir=%s" % profile,
           "--window-size=%d,%d" % (width, height), "--screenshot=%s" % out,
           "file://%s%s" % (svg, fragment)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and out.exists(), r.stderr[-2000:]
    return read_png(out)


def frame_of(svg_text, func):
    """(id, x, y, width, fill) of the widest frame whose name starts with func."""
    best = None
    for m in re.finditer(r'<g class="f" id="(f\d+)"[^>]*data-name="([^"]*)"><title>[^<]*</title>'
                         r'<rect x="([\d.]+)" y="(\d+)" width="([\d.]+)" height="\d+" rx="2" '
                         r'fill="rgb\((\d+),(\d+),(\d+)\)"', svg_text):
        if m.group(2).startswith(func + " (") and (best is None or float(m.group(5)) > best[3]):
            best = (m.group(1), float(m.group(3)), int(m.group(4)), float(m.group(5)),
                    tuple(int(m.group(i)) for i in (6, 7, 8)))
    assert best, "no frame %s in the SVG" % func
    return best


def near(a, b, tol=12):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is installed by scripts/install-deps")
def test_flamegraph_svg_in_headless_chromium(busy_recordings, analyze_bin, tmp_path):
    svg = tmp_path / "flame.svg"
    r = analyze(analyze_bin, busy_recordings[0], "--flamegraph", svg, "--title", "busy.py")
    assert r.returncode == 0, r.stderr
    text = svg.read_text()
    width = int(re.search(r'<svg[^>]* width="(\d+)"', text).group(1))
    height = int(re.search(r'<svg[^>]* height="(\d+)"', text).group(1))
    fid, x, y, w, fill = frame_of(text, "inner_work")
    outer = frame_of(text, "outer")
    assert w > width * 0.4  # the hot function is the widest frame on its row
    # As drawn: inner_work's colour where the SVG put it, above outer.
    _, _, pixel = screenshot(svg, "", tmp_path / "plain.png", width, height)
    assert near(pixel(x + w / 2, y + 1), fill), pixel(x + w / 2, y + 1)
    assert near(pixel(outer[1] + 2, outer[2] + 1), outer[4])
    assert outer[2] > y  # callers below callees
    # The script runs: a search turns matches magenta ...
    _, _, pixel = screenshot(svg, "#search=inner_work", tmp_path / "search.png", width, height)
    assert near(pixel(x + w / 2, y + 1), (230, 0, 230)), pixel(x + w / 2, y + 1)
    assert near(pixel(outer[1] + 2, outer[2] + 1), outer[4])  # outer is not a match
    # ... and a zoom stretches the frame over the whole width.
    _, _, pixel = screenshot(svg, "#zoom=" + fid, tmp_path / "zoom.png", width, height)
    assert near(pixel(11, y + 7), fill) and near(pixel(width - 14, y + 7), fill)


def test_live_flamegraph(procs, tmp_path, probing_bin):
    busy = start(procs, tmp_path, PY, TARGETS / "busy.py", "60")
    wait_rings(tmp_path, busy.pid)
    time.sleep(2.5)
    env = env_for(tmp_path)

    def probing(*args):
        return subprocess.run([str(probing_bin), "-t", str(busy.pid), "flamegraph", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)

    r = probing()
    default = tmp_path / ("flamegraph-%d.svg" % busy.pid)
    assert r.returncode == 0, r.stderr
    assert "Wrote a flame graph of" in r.stdout and default.exists()
    assert "inner_work (" in default.read_text()
    r = probing("--folded", "--duration", "1")
    assert r.returncode == 0, r.stderr
    recent = folded_lines(r.stdout)
    r = probing("--folded")
    everything = folded_lines(r.stdout)
    assert 0 < sum(n for _, n in recent) < sum(n for _, n in everything)
    r = probing("--folded", "--thread", busy.pid)
    assert r.returncode == 0 and all(f[0] == "MainThread (%d)" % busy.pid for f, _ in folded_lines(r.stdout))
    r = probing("--thread", "1", "-o", tmp_path / "x.svg")
    assert r.returncode == 1 and "no stack samples with Python frames" in r.stderr
    r = subprocess.run([str(probing_bin), "flamegraph"], capture_output=True, text=True)
    assert r.returncode == 2 and "needs -t" in r.stderr
    # -o for every format; '-' is standard output for the SVG too.
    r = probing("--folded", "-o", tmp_path / "f.folded")
    assert r.returncode == 0 and "folded stacks" in r.stdout, r.stderr
    assert folded_lines((tmp_path / "f.folded").read_text())
    r = probing("-o", "-")
    assert r.returncode == 0 and r.stdout.startswith("<?xml"), r.stderr
    # The default window is the last 60 s; --duration 0 takes all the rings hold.
    r = probing("--folded", "--duration", "0")
    assert r.returncode == 0 and folded_lines(r.stdout), r.stderr
    # --lines: inner_work's frame split by the line it was executing, the busy line foremost.
    r = probing("--folded", "--lines")
    assert r.returncode == 0, r.stderr
    busy_line = [i for i, l in enumerate((TARGETS / "busy.py").read_text().splitlines(), 1)
                 if "BUSY-LINE" in l][0]
    by_line = {}
    for frames, n in folded_lines(r.stdout):
        if frames[-1].startswith("inner_work ("):
            by_line[frames[-1]] = by_line.get(frames[-1], 0) + n
    top = max(by_line, key=by_line.get)
    assert top.endswith(":%d)" % busy_line), by_line


def test_idle_threads_left_out_by_default(procs, tmp_path, probing_bin, analyze_bin):
    w = start(procs, tmp_path, PY, TARGETS / "waiters.py", "60")
    wait_rings(tmp_path, w.pid)
    time.sleep(2.5)
    env = env_for(tmp_path)

    def flame(*args):
        return subprocess.run([str(probing_bin), "-t", str(w.pid), "flamegraph", "--folded",
                               *map(str, args)], capture_output=True, text=True, env=env,
                              timeout=60)

    def per_root(out):
        n = {}
        for f, k in folded_lines(out):
            root = f[0].split(" (")[0]
            n[root] = n.get(root, 0) + k
        return n

    r = flame()
    assert r.returncode == 0, r.stderr
    busy = per_root(r.stdout)
    assert "samples of idle threads (--idle takes them)" in r.stderr
    r = flame("--idle")
    assert r.returncode == 0, r.stderr
    every = per_root(r.stdout)
    # The waiters' samples are left out, but for the few from before they blocked (starting up,
    # or waiting for the GIL the main thread holds, is not idle).
    assert busy.get("MainThread", 0) > 0, busy
    for name in ("event-waiter", "queue-waiter"):
        assert every.get(name, 0) >= 100 and busy.get(name, 0) <= 5, (name, busy, every)
    leaves = {f[0].split(" (")[0]: f[-1] for f, _ in folded_lines(r.stdout)}
    waiter_tid = [f[0] for f, _ in folded_lines(r.stdout) if f[0].startswith("event-waiter")][0]
    waiter_tid = waiter_tid.split("(")[1].rstrip(")")
    assert leaves["event-waiter"].split(" (")[0].split(".")[-1] == "wait"  # Condition.wait on 3.11+
    assert "threading.py" in leaves["event-waiter"]
    assert "queue-waiter" in leaves
    # Only an idle thread chosen: an error that says why. (Its few samples from before it
    # blocked, running threading's Python code with the GIL, are not idle and may remain.)
    r = flame("--thread", waiter_tid)
    if r.returncode == 0:
        assert sum(n for _, n in folded_lines(r.stdout)) <= 5 and "left out" in r.stderr, r.stdout
    else:
        assert r.returncode == 1 and "idle threads left out (--idle takes them)" in r.stderr, r.stderr
    # The same in a recording's summary and exports.
    rec = tmp_path / "w.ptrace"
    r = record(probing_bin, tmp_path, "-t", w.pid, "-o", rec, "--duration", "2")
    assert r.returncode == 0, r.stderr
    r = analyze(analyze_bin, rec)
    assert r.returncode == 0, r.stderr
    top = r.stdout.split("Top functions")[1]
    assert "idle of" in top and "--idle includes them" in top
    rows = [l.split(None, 1) for l in top.split("\n\n")[0].splitlines()[3:] if l[:1].isdigit()]
    idle = int(re.search(r"leaving out (\d+) idle", top).group(1))
    assert "threading.py" not in rows[0][1], top
    assert sum(int(n) for n, f in rows if "threading.py" in f) < idle / 10, top
    r = analyze(analyze_bin, rec, "--idle")
    assert "wait (" in r.stdout.split("Top functions")[1] and "including" in r.stdout
    r = analyze(analyze_bin, rec, "--folded", "-")
    assert r.returncode == 0 and "left out" in r.stderr
    assert "event-waiter" not in r.stdout
    r = analyze(analyze_bin, rec, "--folded", "-", "--idle")
    assert "event-waiter" in r.stdout


def test_summary_answers_for_a_training_run(tmp_path, probing_bin, analyze_bin):
    rec = tmp_path / "mlp.ptrace"
    r = record(probing_bin, tmp_path, "-o", rec, "--", PY, ROOT / "samples" / "train_mlp.py",
               "--steps", "30")
    assert r.returncode == 0, r.stderr
    r = analyze(analyze_bin, rec)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"Steps: 30 \(30 traced\); step time p50 [0-9.]+ ms, p90 [0-9.]+ ms, "
                     r"max [0-9.]+ ms \(30 steps\)", out), out
    assert re.search(r"Slowest steps: \d+ \([0-9.]+ ms\)", out), out
    assert re.search(r"Per traced step \(mean of 30\): forward [0-9.]+ ms, backward [0-9.]+ ms, optimizer "
                     r"[0-9.e-]+ ms, the rest \(data loading, untraced\) [0-9.e-]+ ms", out), out
    assert "Top modules by self time" in out and "Top modules by total time" in out
    assert re.search(r"RSS\s+[0-9.]+ MB\s+[0-9.]+ MB\s+[0-9.]+ MB", out), out
    # Three significant digits in the figures (the header's times of day aside).
    for number in re.findall(r"(?<![\d.:])\d+\.\d+", out.split("Steps:")[1]):
        assert len(number.replace(".", "").lstrip("0")) <= 3, (number, out)
    # Full precision, one row per figure, in json and csv.
    r = analyze(analyze_bin, rec, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    fig = {(x["section"], x["name"], x["metric"]): x["value"] for x in rows}
    assert fig[("steps", "steps", "count")] == fig[("steps", "all_steps", "count")] == 30
    assert fig[("steps", "p50", "ms")] <= fig[("steps", "p90", "ms")] <= fig[("steps", "max", "ms")]
    parts = sum(fig[("step_parts", k, "mean_ms")] for k in ("forward", "backward", "optimizer", "rest"))
    assert parts >= fig[("steps", "p50", "ms")] * 0.5
    assert fig[("memory", "rss_bytes", "peak")] >= fig[("memory", "rss_bytes", "start")] > 0
    assert any(x["section"] == "modules_by_self" for x in rows)
    r = analyze(analyze_bin, rec, "--format", "csv")
    assert r.returncode == 0 and r.stdout.startswith("pid,rank,section,name,metric,value")


# ------------------------------------------------------------------------------------------
# probing-analyze --diff: two runs of a program, the second spending more of its time in one
# function


@pytest.fixture(scope="module")
def shifted_runs(tmp_path_factory, probing_bin):
    """shifting.py recorded twice: grows() takes 20% of the time in A, 70% in B."""
    tmp = tmp_path_factory.mktemp("shift")
    paths = []
    for name, share in (("a", "0.2"), ("b", "0.7")):
        out = tmp / ("%s.ptrace" % name)
        r = record(probing_bin, tmp, "-o", out, "--", PY, TARGETS / "shifting.py", "3", share)
        assert r.returncode == 0, r.stderr
        paths.append(out)
    return paths


def test_diff_names_the_function_that_grew(shifted_runs, analyze_bin, tmp_path):
    a, b = shifted_runs
    r = analyze(analyze_bin, "--diff", a, b)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "A: %s (" % a in out and "B: %s (" % b in out
    table = out.split("Functions, biggest change first")[1].split("\n\n")[0].splitlines()
    assert table[1].split()[:7] == ["self_a", "self_b", "self_change", "total_a", "total_b",
                                    "total_change", "function"], table
    top2 = [l for l in table[3:5]]
    grows = [l for l in top2 if " grows (" in l]
    steady = [l for l in top2 if " steady (" in l]
    assert grows and steady, out  # the two biggest changes
    assert float(grows[0].split()[5]) > 25 and float(steady[0].split()[5]) < -25, out
    assert "PyTorch modules: not compared (neither recording has traced steps)" in out
    # Full precision, every function, in json; shares from 0 to 1.
    r = analyze(analyze_bin, "--diff", a, b, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    total = {x["name"].split(" (")[0]: x for x in rows
             if x["section"] == "functions" and x["metric"] == "total_share"}
    g = total["grows"]
    assert 0.1 < g["a"] < 0.35 and 0.55 < g["b"] < 0.85 and g["change"] == pytest.approx(g["b"] - g["a"])
    assert total["steady"]["change"] < -0.25
    assert "shifting.py" in [x for x in total["grows"]["name"].split()][-1]
    samples = [x for x in rows if x["section"] == "recording" and x["name"] == "samples"][0]
    assert samples["a"] > 100 and samples["b"] > 100
    r = analyze(analyze_bin, "--diff", a, b, "--format", "csv")
    assert r.returncode == 0 and r.stdout.startswith("section,name,metric,a,b,change")
    # The differential flame graph: B's, grows red, steady blue.
    svg = tmp_path / "diff.svg"
    r = analyze(analyze_bin, "--diff", a, b, "-o", svg)
    assert r.returncode == 0, r.stderr
    assert "wrote a differential flame graph to %s" % svg in r.stderr
    text = svg.read_text()
    fills = {}
    for m in re.finditer(r'data-name="([^"]*)"><title>([^<]*)</title><rect [^>]*fill="rgb\((\d+),(\d+),(\d+)\)"',
                         text):
        fills[m.group(1).split(" (")[0]] = (tuple(int(m.group(i)) for i in (3, 4, 5)), m.group(2))
    (r_, g_, b_), title = fills["grows"]
    assert r_ == 255 and g_ < 150 and b_ < 150, fills["grows"]
    assert re.search(r"A [\d.]+%, B [\d.]+%: \+[\d.]+ points", title), title
    (r_, g_, b_), _ = fills["steady"]
    assert b_ == 255 and r_ < 150, fills["steady"]


def test_diff_compares_pytorch_modules(mlp_recording, shifted_runs, analyze_bin):
    r = analyze(analyze_bin, "--diff", mlp_recording, mlp_recording, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    ms = {x["name"]: x for x in rows if x["section"] == "modules" and x["metric"] == "ms_per_step"}
    assert "0 forward" in ms and "Sequential forward" in ms  # a layer, and the model around it
    assert ms["0 forward"]["a"] > 0 and ms["0 forward"]["change"] == 0
    calls = [x for x in rows if x["section"] == "modules" and x["metric"] == "calls_per_step"]
    assert all(x["a"] == x["b"] for x in calls)
    r = analyze(analyze_bin, "--diff", mlp_recording, mlp_recording)
    assert r.returncode == 0 and "PyTorch modules, biggest change first (ms per step; 30 steps" in r.stdout
    r = analyze(analyze_bin, "--diff", shifted_runs[0], mlp_recording)
    assert "PyTorch modules: not compared (A has no traced steps)" in r.stdout


def test_diff_errors(shifted_runs, analyze_bin, tmp_path, probing_bin):
    a, b = shifted_runs
    missing = tmp_path / "missing.ptrace"
    r = analyze(analyze_bin, "--diff", a, missing)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and str(missing) in r.stderr, r.stderr
    junk = tmp_path / "junk.ptrace"
    junk.write_bytes(os.urandom(4096))
    r = analyze(analyze_bin, "--diff", junk, b)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and str(junk) in r.stderr, r.stderr
    cut = tmp_path / "cut.ptrace"
    cut.write_bytes(a.read_bytes()[:40])
    r = analyze(analyze_bin, "--diff", a, cut)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and str(cut) in r.stderr, r.stderr
    # A process's rings without its stack ring: memory readings only, no samples.
    data = tmp_path / "data"
    env = env_for(tmp_path)
    env["PROBING"] = "1"
    p = subprocess.run([PY, str(TARGETS / "busy.py"), "1"], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    (rings,) = [d for d in data.iterdir() if d.is_dir()]
    stacks = [f for f in rings.iterdir() if "stack" in f.name]
    assert stacks, list(rings.iterdir())
    for f in stacks:
        f.unlink()
    r = analyze(analyze_bin, "--diff", a, rings)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "%s has no stack samples with Python frames to compare" % rings in r.stderr
    # Usage.
    r = analyze(analyze_bin, "--diff", a)
    assert r.returncode == 2 and "--diff compares two recordings" in r.stderr
    r = analyze(analyze_bin, "--diff", a, b, "--flamegraph", tmp_path / "x.svg")
    assert r.returncode == 2 and "--diff takes two recordings" in r.stderr
    r = analyze(analyze_bin, a, "-o", tmp_path / "x.svg")
    assert r.returncode == 2 and "-o names the differential flame graph" in r.stderr
    r = analyze(analyze_bin, "--diff", a, b, "-o", a)
    assert r.returncode == 1 and "would destroy" in r.stderr
    r = analyze(analyze_bin, "--help")
    assert "--diff" in r.stdout and "differential flame graph" in r.stdout
