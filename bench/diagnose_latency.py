"""How soon the cluster diagnoses answer, on 4 gloo ranks of samples/train_ddp.py started with
torchrun's environment on this machine:

1. Stragglers: rank 2 sleeps --slow-ms per step from step --slow-from (after every rank has
   registered). `probing cluster stragglers --steps 10` is asked again and again; reported per
   run: how many steps after the slowing began rank 2 was first named (first in the table, and
   the only rank flagged), counted from the job's step as `cluster list` gives it right after
   the answer, and how many of the --answers later answers were wrong (another rank first, or
   another rank also flagged).
2. Hangs: rank 1 stops for ever before step --hang-step, with probing.hang.seconds = --hang-seconds.
   From the moment it says so, `probing cluster hang` is asked every half second; reported: the
   seconds until its verdict names rank 1, and until every rank's recorder wrote a probing.hang
   reading (python.metrics) dated after that moment.

    python3 bench/diagnose_latency.py [--runs 5] [--slow-ms 60] [--slow-from 200] [--hang-seconds 5]
                                      [--only stragglers|hangs]
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probing_bench  # noqa: E402

ROOT = probing_bench.ROOT
PROBING = os.path.join(ROOT, "build", "bin", "probing")


def start_job(data, args, env_extra=None, world=4):
    port = probing_bench.free_port()
    run_id = "bench-" + uuid.uuid4().hex[:8]
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_RUN_ID=run_id,
                   PROBING="1", PROBING_DATA_DIR=data, PROBING_BANNER="off",
                   PYTHONUSERBASE=os.path.join(ROOT, "build", "pyuser"), OMP_NUM_THREADS="1",
                   PYTHONUNBUFFERED="1", **(env_extra or {}))
        env.pop("PYTHONPATH", None)
        procs.append(subprocess.Popen(
            ["/usr/bin/python3", os.path.join(ROOT, "samples", "train_ddp.py"), "--pace-ms", "20",
             *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env))
    return procs


def kill(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()


def probing(data, *args):
    r = subprocess.run([PROBING, *map(str, args)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PROBING_DATA_DIR=data))
    return r


def wait_line(p, text, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            raise SystemExit("a rank exited")
        if text in line:
            return line
    raise SystemExit("no %r" % text)


def registered(data, pid, world):
    deadline = time.time() + 90
    while time.time() < deadline:
        r = probing(data, "-t", pid, "--format", "json", "cluster", "list")
        if r.returncode == 0 and sum(x["state"] == "running" for x in json.loads(r.stdout)) == world:
            return
        time.sleep(0.5)
    raise SystemExit("the ranks did not register")


def job_step(data, pid):
    st = probing(data, "-t", pid, "--format", "json", "cluster", "list")
    return max((x["step"] or 0) for x in json.loads(st.stdout)) if st.returncode == 0 else None


def straggler_run(args):
    data = tempfile.mkdtemp(prefix="probing-bench-")
    procs = start_job(data, ["--slow-rank", "2", "--slow-ms", str(args.slow_ms),
                             "--slow-from", str(args.slow_from)])
    try:
        for p in procs:
            wait_line(p, "ready")
        pid = procs[0].pid
        registered(data, pid, 4)
        step = job_step(data, pid)
        if step is None or step >= args.slow_from:
            raise SystemExit("the ranks registered at step %s, after --slow-from %d: raise it"
                             % (step, args.slow_from))
        wait_line(procs[2], "slow from step")
        named_at, answers, wrong = None, 0, 0
        while answers < args.answers:
            r = probing(data, "-t", pid, "--format", "json", "cluster", "stragglers", "--steps", 10)
            step = job_step(data, pid)
            if r.returncode == 0:
                rows = json.loads(r.stdout)
                right = rows[0]["rank"] == 2 and [x["rank"] for x in rows if x["late"]] == [2]
                if named_at is None and right:
                    named_at = step - args.slow_from
                if named_at is not None:
                    answers += 1
                    wrong += not right
                    time.sleep(0.5)
        return named_at, wrong
    finally:
        kill(procs)
        shutil.rmtree(data, ignore_errors=True)


def hang_run(args):
    data = tempfile.mkdtemp(prefix="probing-bench-")
    procs = start_job(data, ["--hang-rank", "1", "--hang-step", str(args.hang_step)],
                      {"PROBING_HANG_SECONDS": str(args.hang_seconds)})
    try:
        for p in procs:
            wait_line(p, "ready")
        pid = procs[0].pid
        registered(data, pid, 4)
        wait_line(procs[1], "hangs before step")
        t0 = time.time()
        # A rank that waited longer than probing.hang.seconds while the job started said so
        # then: only readings after the hang began count.
        named = metric = None
        while time.time() - t0 < args.hang_seconds + 60 and (named is None or metric is None):
            if named is None:
                r = probing(data, "-t", pid, "cluster", "hang")
                if r.returncode == 0 and "rank 1 never reached" in r.stdout:
                    named = time.time() - t0
            if metric is None:
                r = probing(data, "-t", pid, "--format", "json", "query",
                            "SELECT count(DISTINCT rank) AS n FROM cluster.metrics "
                            "WHERE name = 'probing.hang' AND time >= %f" % t0)
                if r.returncode == 0 and json.loads(r.stdout)[0]["n"] == 4:
                    metric = time.time() - t0
            time.sleep(0.5)
        return named, metric
    finally:
        kill(procs)
        shutil.rmtree(data, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--answers", type=int, default=10)
    p.add_argument("--slow-ms", type=float, default=60)
    p.add_argument("--slow-from", type=int, default=200)
    p.add_argument("--hang-step", type=int, default=30)
    p.add_argument("--hang-seconds", type=int, default=5)
    p.add_argument("--only", choices=("stragglers", "hangs"))
    args = p.parse_args()
    if args.only != "hangs":
        stragglers(args)
    if args.only != "stragglers":
        hangs(args)


def stragglers(args):
    steps, wrongs = [], 0
    for i in range(args.runs):
        at, wrong = straggler_run(args)
        print("straggler run %d: rank 2 first named %s steps after it slowed; %d of %d later "
              "answers wrong"
              % (i + 1, at, wrong, args.answers), flush=True)
        steps.append(at)
        wrongs += wrong
    named = [s for s in steps if s is not None]
    print("stragglers: rank 2 named in %d of %d runs, %s steps after it slowed (median; min %s, "
          "max %s); "
          "%d wrong answers of %d after it was named"
          % (len(named), args.runs, statistics.median(named) if named else "-",
             min(named) if named else "-", max(named) if named else "-", wrongs,
             args.runs * args.answers))


def hangs(args):
    hangs, metrics = [], []
    for i in range(args.runs):
        named_s, metric_s = hang_run(args)
        print("hang run %d: rank 1 named after %s s; every rank's probing.hang after %s s "
              "(probing.hang.seconds = %d)" % (i + 1, named_s and round(named_s, 1),
                                                metric_s and round(metric_s, 1),
                                                args.hang_seconds), flush=True)
        hangs.append(named_s)
        metrics.append(metric_s)
    ok = [h for h in hangs if h is not None]
    okm = [m for m in metrics if m is not None]
    print("hangs: named in %d of %d runs, after %s s (median; max %s); probing.hang on every rank "
          "after %s s (median; max %s), with probing.hang.seconds = %d"
          % (len(ok), args.runs, ok and round(statistics.median(ok), 1), ok and round(max(ok), 1),
             okm and round(statistics.median(okm), 1), okm and round(max(okm), 1),
             args.hang_seconds))


if __name__ == "__main__":
    main()
