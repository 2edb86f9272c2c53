"""Stragglers and hangs on a real job: 4 gloo ranks of samples/train_ddp.py with a fault in one
rank (slow, hung in a function of its own, killed, or calling a different collective), diagnosed
live through `probing cluster stragglers|hang` and from a recorded bundle through
`probing-analyze DIR --stragglers|--hang`. Every process started here is killed at the end."""
import json
import os
import signal
import time

import pytest

from conftest import run_probing as probing
from test_cluster import job, rows, wait_registered  # noqa: F401 (job is a fixture)


def wait_line(j, rank, text, timeout=90):
    """Reads rank's output until a line containing text."""
    deadline = time.time() + timeout
    while True:
        assert time.time() < deadline, "rank %d never printed %r" % (rank, text)
        line = j.procs[rank].stdout.readline()
        assert line, "rank %d exited: %s" % (rank, j.procs[rank].stderr.read())
        if text in line:
            return line


def diagnose(probing_bin, j, *args):
    return probing(probing_bin, "-t", str(j.pid(0)), "--timeout", "10", "cluster", *args)


@pytest.mark.parametrize("python_collectives", [True, False], ids=["allreduce", "ddp-only"])
def test_the_slow_rank_is_named_with_its_frame(probing_bin, analyze_bin, job, tmp_path,
                                               python_collectives):
    args = ["--slow-rank", "2", "--slow-ms", "40"]
    if python_collectives:
        args.append("--allreduce-loss")
    j = job(args=args)
    wait_registered(probing_bin, str(j.pid(0)), j.world)
    wait_line(j, 0, "step 40")
    r = diagnose(probing_bin, j, "--format", "json", "stragglers", "--steps", "20")
    got = rows(r)
    assert [x["rank"] for x in got][0] == 2, got
    first, others = got[0], got[1:]
    assert first["late"] == 1 and first["late_ms"] > 20, got
    assert all(x["late"] == 0 and x["late_ms"] < first["late_ms"] / 2 for x in others), got
    assert first["steps"] == 20
    assert "slow_data_loading" in first["frame"], got
    # The table names the rank, its lateness and its frame in one line.
    r = diagnose(probing_bin, j, "stragglers")
    assert r.returncode == 0, r.stderr
    assert "rank 2 arrives" in r.stdout and "slow_data_loading" in r.stdout, r.stdout
    expect = "backward start and collectives" if python_collectives else "backward start"
    assert "Arrival at %s, steps" % expect in r.stdout, r.stdout
    if not python_collectives:
        return
    # The same from a recorded bundle, after the job is gone.
    bundle = tmp_path / "bundle"
    r = diagnose(probing_bin, j, "record", "-o", str(bundle), "--duration", "1")
    assert r.returncode == 0, r.stderr
    j.kill()
    r = probing(analyze_bin, str(bundle), "--stragglers", "--format",
                "json")
    got = rows(r)
    assert got[0]["rank"] == 2 and got[0]["late"] == 1, got


def test_python_collectives_are_rows(probing_bin, job):
    j = job(args=["--allreduce-loss"])
    wait_line(j, 0, "step 20")
    got = rows(probing(probing_bin, "-t", str(j.pid(1)), "--format", "json", "query",
                       "SELECT source, op, process_group, count(*) AS n, count(DISTINCT seq) AS s, "
                       "min(bytes) AS b FROM python.collectives GROUP BY source, op "
                       "ORDER BY source"))
    by = {(x["source"], x["op"]): x for x in got}
    # The loss all-reduce from Python: timed, sized (one float32), one sequence number each.
    py = by[("python", "all_reduce")]
    assert py["process_group"] == "default" and py["b"] == 4 and py["n"] == py["s"] >= 15, got
    # DDP's gradient all-reduce from C++: counted from the group's sequence number.
    counted = by[("counted", None)]
    assert counted["n"] >= 15, got
    # Every sequence number once, none taken twice: python and counted rows never share one.
    got = rows(probing(probing_bin, "-t", str(j.pid(1)), "--format", "json", "query",
                       "SELECT count(*) AS n, count(DISTINCT seq) AS s FROM python.collectives "
                       "WHERE process_group = 'default'"))
    assert got[0]["n"] == got[0]["s"], got
    got = rows(probing(probing_bin, "-t", str(j.pid(1)), "--format", "json", "query",
                       "SELECT count(*) AS calls, avg(latency_ms) AS ms FROM comm_metrics WHERE op = 'all_reduce'"))
    assert got and got[0]["calls"] >= 15, got


def hang_verdict(probing_bin, j, expect, timeout=40):
    """`cluster hang` until its verdict says expect (a hang needs a few seconds to be one)."""
    deadline = time.time() + timeout
    while True:
        r = diagnose(probing_bin, j, "hang")
        if r.returncode == 0 and expect in r.stdout:
            return r.stdout
        assert time.time() < deadline, "no %r in: %s %s" % (expect, r.stdout, r.stderr)
        time.sleep(2)


def test_a_hung_rank_is_named_with_its_frame(probing_bin, job):
    j = job(args=["--hang-rank", "1", "--hang-step", "15"], env={"PROBING_HANG_SECONDS": "3"})
    wait_registered(probing_bin, str(j.pid(0)), j.world)
    wait_line(j, 1, "hangs before step")
    out = hang_verdict(probing_bin, j, "rank 1 never reached")
    assert "wait_for_a_lock_forever" in out, out
    got = rows(diagnose(probing_bin, j, "--format", "json", "hang"))
    assert {x["rank"]: x["state"] for x in got} == {0: "ok", 1: "ok", 2: "ok", 3: "ok"}, got
    behind = [x for x in got if x["rank"] == 1][0]
    assert all(x["collective"] > behind["collective"] for x in got if x["rank"] != 1), got
    # Each rank's recorder noticed the stall by itself: a probing.hang metric once stalled for
    # probing.hang.seconds (3 s here).
    deadline = time.time() + 20
    while True:
        got = rows(probing(probing_bin, "-t", str(j.pid(2)), "--format", "json", "query",
                           "SELECT value FROM python.metrics WHERE name = 'probing.hang'"))
        if got:
            assert got[0]["value"] >= 3, got
            break
        assert time.time() < deadline, "no probing.hang metric"
        time.sleep(1)


def test_a_killed_rank_is_named_dead(probing_bin, job):
    j = job()
    wait_registered(probing_bin, str(j.pid(0)), j.world)
    os.kill(j.pid(3), signal.SIGKILL)
    j.procs[3].wait()
    out = hang_verdict(probing_bin, j, "rank 3 is dead")
    assert "rank 3" in out


def test_a_mismatched_collective_is_named(probing_bin, job):
    j = job(args=["--allreduce-loss", "--mismatch-rank", "3", "--hang-step", "10"])
    wait_registered(probing_bin, str(j.pid(0)), j.world)
    wait_line(j, 3, "broadcasts where the others all-reduce")
    out = hang_verdict(probing_bin, j, "mismatch at collective")
    assert "ranks 0,1,2 in all_reduce, rank 3 in broadcast" in out, out
