"""The stack sampler against programs whose stacks never hold still, under every interpreter:
every stored sample and every backtrace is a stack the program really had (never two moments
mixed), by start-up (PROBING=1) and by inject; thread names from the first sample; qualified
names; the line of a thread waiting for the GIL in a loop; locals cut with a mark; the GIL
holder right after inject; and the fault guard beside faulthandler, with no change to how the
program's own faults end."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import BUILD, TARGETS, line_of, read_table, samples_by_thread
from control_client import request, wait_for_server

REC = line_of("recursion.py", "REC-LINE")
LEAF_CALL = line_of("recursion.py", "LEAF-CALL")
MAIN = line_of("recursion.py", "MAIN-LINE")
MODULE = line_of("recursion.py", "MODULE-LINE")


def version_of(python):
    out = subprocess.run([python, "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
                         capture_output=True, text=True).stdout.split()
    return tuple(map(int, out))


def why_torn(stack):
    """None for a stack recursion.py can have, else what is wrong with it. `stack`: innermost
    first, [(func, file, line)]."""
    s = [(f if file.endswith("recursion.py") else "%s@%s" % (f, file), ln)
         for f, file, ln in reversed(stack)]  # outermost first
    if not s or s[0] != ("<module>", MODULE):
        return "bottom is %r, not <module> at line %d" % (s[:1], MODULE)
    if len(s) < 2 or s[1][0] != "main":
        return "no main above <module>"
    if len(s) > 2 and s[1][1] != MAIN:
        return "main at line %d with callees" % s[1][1]
    recs = s[2:]
    leafed = bool(recs) and recs[-1][0] == "leaf"
    if leafed:
        recs = recs[:-1]
    if any(f != "rec" for f, _ in recs):
        return "recursion not contiguous: %s" % [f for f, _ in s]
    if len(recs) > 20:
        return "%d recursion frames (at most 20)" % len(recs)
    for k, (_, ln) in enumerate(recs):
        last = k == len(recs) - 1
        if last and not leafed:
            continue  # the innermost frame may be on any of its lines
        if ln != (LEAF_CALL if last else REC):
            return "rec frame %d at line %d" % (k, ln)
    return None


def main_stacks(rows):
    """MainThread's stored stacks, in time order: [(ts, [(func, file, line)])]."""
    by_sample = {}
    for r in rows:
        if r["thread_name"] == "MainThread":
            by_sample.setdefault((r["pid"], r["sample_id"]), []).append(r)
    out = []
    for frames in by_sample.values():
        frames.sort(key=lambda r: r["depth"])
        out.append((frames[0]["ts"], [(r["func"], r["file"], r["lineno"]) for r in frames]))
    return sorted(out)


def main_sample_count(analyze_bin, ring_dir):
    r = subprocess.run([str(analyze_bin), str(ring_dir), "--format", "json",
                        "SELECT count(DISTINCT sample_id) AS n FROM python.stacks "
                        "WHERE thread_name = 'MainThread' AND func = 'main' "
                        "AND file LIKE '%recursion.py'"],
                       capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout)[0]["n"] if r.returncode == 0 else 0


def start_recursion(python, target, probing_bin, mode, tmp_path):
    """recursion.py running until killed, with the recorder at 1000 Hz: started with it or
    injected."""
    if mode == "startup":
        t = target(python, "recursion.py", 0, extra_env={"PROBING_SAMPLER_HZ": "1000"})
        t.wait_ready()
    else:
        t = target(python, "recursion.py", 0, probing="0")
        t.wait_ready()
        env = dict(os.environ, PROBING_DATA_DIR=str(t.data_dir))
        r = subprocess.run([str(probing_bin), "-t", str(t.proc.pid), "inject", "--set",
                            "probing.sampler.hz=1000"], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
    wait_for_server(t.proc.pid)
    return t


@pytest.mark.parametrize("mode", ["startup", "inject"])
def test_no_torn_stack_is_ever_stored_or_shown(python, mode, target, probing_bin, analyze_bin,
                                               tmp_path):
    t = start_recursion(python, target, probing_bin, mode, tmp_path)
    ring_dir = t.data_dir / str(t.proc.pid)
    # Right after "ready" the main thread may still be on its way into main().
    deadline = time.time() + 10
    while time.time() < deadline:
        bt = request(t.proc.pid, "GET", "/backtrace")[1]
        if any(f["func"] == "main" for th in bt["threads"] for f in th["frames"]):
            break
        time.sleep(0.05)
    # 100 backtraces while it runs: each consistent, and a stack the program can have.
    for i in range(100):
        status, bt = request(t.proc.pid, "GET", "/backtrace")
        assert status == 200, bt
        [main] = [th for th in bt["threads"] if th["thread_name"] == "MainThread"]
        assert main["inconsistent"] is False and main["truncated"] is False, main
        stack = [(f["func"], f["file"], f["lineno"]) for f in main["frames"]]
        assert why_torn(stack) is None, (i, why_torn(stack), stack)
    # 1,000 stored samples, every one a real stack.
    deadline = time.time() + 40
    while main_sample_count(analyze_bin, ring_dir) < 1000 and time.time() < deadline:
        time.sleep(0.5)
    # What was stored, read twice or dropped is counted (info) and said in the rings too (a
    # sampler stats record with each segment): with sampling switched off the counts hold
    # still, and once the last segment is sealed both say the same.
    env = dict(os.environ, PROBING_DATA_DIR=str(t.data_dir))
    subprocess.run([str(probing_bin), "-t", str(t.proc.pid), "config",
                    "probing.sampler.enabled=false"], check=True, env=env, timeout=60)
    time.sleep(0.2)
    info = request(t.proc.pid, "GET", "/info")[1]
    counts = info["stack_samples"]
    assert counts["stored"] >= 1000 and info["stack_reads"] == "fault guard", info
    time.sleep(1.5)  # the last segment is sealed
    summary = subprocess.run([str(analyze_bin), str(ring_dir)], capture_output=True, text=True,
                             timeout=60).stdout
    said = {line.split(":")[0].strip(): int(line.split(":")[1])
            for line in summary.splitlines() if line.startswith("  stack samples")}
    assert said.get("stack samples dropped (changed while read)", 0) == \
        counts["dropped_changed_while_read"], (said, counts)
    assert said.get("stack samples read twice (changed once)", 0) == counts["read_twice"]
    t.kill()
    stacks = main_stacks(read_table(analyze_bin, [ring_dir], "python.stacks"))
    in_main = [ts for ts, s in stacks
               if any(f == "main" and file.endswith("recursion.py") for f, file, _ in s)]
    assert len(in_main) >= 1000, "%d samples in main; counts %s" % (len(in_main), counts)
    torn = [(why_torn(s), s) for ts, s in stacks if in_main[0] <= ts <= in_main[-1] and why_torn(s)]
    assert not torn, "%d torn of %d, e.g. %s" % (len(torn), len(in_main), torn[:3])


def test_thread_names_are_known_from_the_first_sample(python, target, analyze_bin):
    t = target(python, "zoo.py", 1.2)
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 0, err
    [d] = [p for p in t.data_dir.iterdir() if p.is_dir()]
    rows = read_table(analyze_bin, [d], "python.stacks")
    pairs = {(r["thread_id"], r["thread_name"]) for r in rows}
    by_id = {}
    for tid, name in pairs:
        by_id.setdefault(tid, set()).add(name)
    assert all(len(names) == 1 for names in by_id.values()), by_id
    names = {n for (n,) in by_id.values()}
    assert names == {"MainThread", "early-0", "early-1", "early-2", "late-0", "late-1"}, names


def test_thread_names_after_inject(target, probing_bin, analyze_bin):
    t = target("/usr/bin/python3", "zoo.py", 1.5, probing="0")
    t.wait_ready()
    env = dict(os.environ, PROBING_DATA_DIR=str(t.data_dir))
    r = subprocess.run([str(probing_bin), "-t", str(t.proc.pid), "inject"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    rc, _, err = t.finish()
    assert rc == 0, err
    rows = read_table(analyze_bin, [t.data_dir / str(t.proc.pid)], "python.stacks")
    by_id = {}
    for r in rows:
        by_id.setdefault(r["thread_id"], set()).add(r["thread_name"])
    assert all(len(names) == 1 for names in by_id.values()), by_id
    assert {"early-0", "early-1", "early-2", "late-0", "late-1"} <= {n for (n,) in by_id.values()}


def test_methods_have_qualified_names_and_loops_their_lines(python, target, analyze_bin,
                                                             tmp_path):
    t = target(python, "zoo.py", 1.0)
    t.wait_ready()
    rc, _, err = t.finish()
    assert rc == 0, err
    [d] = [p for p in t.data_dir.iterdir() if p.is_dir()]
    rows = read_table(analyze_bin, [d], "python.stacks")
    stacks = samples_by_thread(rows)
    qualified = version_of(python) >= (3, 11)  # co_qualname; 3.8-3.10 have the plain name
    zebra, quokka = ("Zebra.graze", "Quokka.graze") if qualified else ("graze", "graze")
    for name, func, marker in (("early-1", zebra, "ZEBRA"), ("late-0", quokka, "QUOKKA")):
        tops = [s[0] for s in stacks[name] if s and s[0][0] == func]
        assert len(tops) >= 0.9 * len(stacks[name]), (name, len(tops), len(stacks[name]))
        # Waiting for the GIL in its loops or running them: always on a line of the loops (3.11
        # used to put a thread waiting at a loop's jump back on its def line).
        lines = {ln for _, ln in tops}
        loop = {line_of("zoo.py", marker + m) for m in ("-WHILE", "-FOR", "-LINE")}
        assert lines <= loop, (name, lines, loop)
        assert line_of("zoo.py", marker + "-DEF") not in lines
    if qualified:  # the flame graph and the summary say it too
        folded = subprocess.run([str(analyze_bin), str(d), "--folded", "-"], capture_output=True,
                                text=True, timeout=60).stdout
        assert "Zebra.graze" in folded and "Quokka.graze" in folded
        summary = subprocess.run([str(analyze_bin), str(d)], capture_output=True, text=True,
                                 timeout=60).stdout
        assert "Zebra.graze" in summary


def test_locals_cut_short_end_with_a_mark(target, probing_bin):
    t = target("/usr/bin/python3", "locals_target.py")
    t.wait_ready()
    wait_for_server(t.proc.pid)

    def hold_locals():
        status, bt = request(t.proc.pid, "GET", "/backtrace?locals=1")
        assert status == 200, bt
        [th] = [th for th in bt["threads"] if th["thread_name"] == "holder"]
        [f] = [f for f in th["frames"] if f["func"] == "hold"]
        assert f["lineno"] == line_of("locals_target.py", "HOLD-LINE")
        return f["locals"]

    loc = hold_locals()
    assert len(loc["big"]) == 200 and loc["big"].endswith("...") and loc["big"][:3] == "100"
    assert len(loc["text"]) == 200 and loc["text"] == "'" + "x" * 196 + "..."
    assert loc["many"] == "{}"  # short values are whole
    # 4,000 characters a frame: the 20 long locals do not all fit; a "..." entry says so.
    assert loc["..."].endswith("more locals not shown)")
    env = dict(os.environ, PROBING_DATA_DIR=str(t.data_dir))
    for kv in ("probing.locals.value_size=50", "probing.locals.frame_size=100000"):
        r = subprocess.run([str(probing_bin), "-t", str(t.proc.pid), "config", kv],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
    loc = hold_locals()
    assert len(loc["big"]) == 50 and loc["big"].endswith("...")
    assert "..." not in loc and loc["a19"] == "'" + "z" * 46 + "..."
    out = subprocess.run([str(probing_bin), "-t", str(t.proc.pid), "backtrace", "--locals"],
                         capture_output=True, text=True, env=env, timeout=60).stdout
    assert "big = " + "1" + "0" * 46 + "..." in out


@pytest.mark.parametrize("python", ["system", "3.12"], indirect=True)
def test_gil_holder_is_right_on_the_first_backtrace_after_inject(python, target, probing_bin):
    for trial in range(10):
        t = target(python, "recursion.py", 0, probing="0")
        t.wait_ready()
        env = dict(os.environ, PROBING_DATA_DIR=str(t.data_dir))
        r = subprocess.run([str(probing_bin), "-t", str(t.proc.pid), "inject"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        status, bt = request(t.proc.pid, "GET", "/backtrace")
        assert status == 200, bt
        holders = [th["thread_name"] for th in bt["threads"] if th["holds_gil"]]
        assert holders == ["MainThread"], (trial, holders, bt)
        t.kill()


def crash(python, target, how, probing="1"):
    """crash.py under `how` faulthandler ("none", "before", "after"): (returncode, stderr, info
    of the recorder before the crash or None)."""
    t = target(python, "crash.py", how, probing=probing,
               extra_env={"PROBING_SAMPLER_HZ": "1000",
                          "PYTHONFAULTHANDLER": "1" if how == "before" else ""})
    t.wait_ready()
    info = None
    if probing != "0":
        wait_for_server(t.proc.pid)
        time.sleep(0.3)  # some passes of the sampler, reading a changing stack
        info = request(t.proc.pid, "GET", "/info")[1]
    t.proc.send_signal(signal.SIGUSR1)
    rc, _, err = t.finish()
    return rc, err, info


@pytest.mark.parametrize("how", ["none", "before", "after"])
def test_the_programs_own_fault_ends_as_without_the_recorder(python, how, target):
    rc0, err0, _ = crash(python, target, how, probing="0")
    rc, err, info = crash(python, target, how)
    assert rc == rc0 == -11, (rc, rc0, err)
    fatal = "Fatal Python error: Segmentation fault"
    assert (fatal in err) == (fatal in err0) == (how != "none"), err
    if how != "none":  # faulthandler ran and showed the program's own frame
        assert "crash_here" in err and "line %d" % line_of("crash.py", "CRASH-LINE") in err
    # faulthandler installed after the recorder displaces its guard: reads go by system call.
    assert info["stack_reads"] == ("fault guard" if how != "after" else
                                   "process_vm_readv (a SIGSEGV or SIGBUS handler was installed "
                                   "after the recorder's)"), info
    assert info["stack_samples"]["stored"] > 0
