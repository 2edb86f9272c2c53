"""Whole-process time of an SQL query over every rank of a job (`cluster.stacks`), against the
same query over one rank's own table, in the same run.

Members are light recorder processes without torch (tests/targets/many_threads.py: 21 threads)
given a job's identity through torchrun's environment (RANK, WORLD_SIZE, TORCHELASTIC_RUN_ID),
so the client finds them through this host's ring directories and asks each one itself, in
parallel. Sampling runs at --hz until every member holds --rows rows of python.stacks, then
stops (probing.sampler.enabled=false), so every timing reads the same data.

  1. --members-main members (default 4) with --rows rows each (default 100 000): --runs
     interleaved runs of `query count(*) FROM cluster.stacks` and of the same over one rank's
     python.stacks; median and p90.
  2. Scaling: jobs of 1, 4, 16 and 32 idle members (tests/targets/idle.py, 4 threads) with
     --scale-rows rows each (default 10 000).

    /usr/bin/python3 bench/cluster_query.py [--rows 100000] [--runs 20] [--scale 1,4,16,32]
"""
import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid

from probing_bench import start_target

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROBING = ROOT / "build" / "bin" / "probing"


def run(argv, env):
    t0 = time.perf_counter()
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(map(str, argv)), r.stderr.strip()))
    return (time.perf_counter() - t0) * 1e3, r.stdout


def start_job(n, hz, data, target="many_threads.py"):
    run_id = "bench-" + uuid.uuid4().hex[:6]
    return [start_target(target, [3600], data, hz,
                         extra_env={"RANK": str(rank), "WORLD_SIZE": str(n),
                                    "LOCAL_RANK": str(rank), "TORCHELASTIC_RUN_ID": run_id})
            for rank in range(n)]


def fill(procs, rows, env):
    """Waits until every member holds `rows` stack rows, then stops their sampling."""
    deadline = time.time() + 900
    for p in procs:
        while True:
            _, out = run([PROBING, "-t", p.pid, "--format", "csv", "query",
                          "SELECT count(*) FROM python.stacks"], env)
            if int(out.splitlines()[1]) >= rows:
                break
            if time.time() > deadline:
                raise SystemExit("the members did not fill their rings in 15 minutes")
            time.sleep(0.5)
    for p in procs:
        run([PROBING, "-t", p.pid, "config", "probing.sampler.enabled=false"], env)
    time.sleep(1.5)  # the last open segments sealed


def timings(argv, env, runs):
    return [run(argv, env)[0] for _ in range(runs)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members-main", type=int, default=4)
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--hz", type=int, default=200)
    ap.add_argument("--scale", default="1,4,16,32")
    ap.add_argument("--scale-rows", type=int, default=10000)
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="probing-bench-cluster-")
    env = dict(os.environ, PROBING_DATA_DIR=data)
    count_all = "SELECT count(*) FROM cluster.stacks"
    count_one = "SELECT count(*) FROM python.stacks"
    try:
        procs = start_job(args.members_main, args.hz, data)
        try:
            fill(procs, args.rows, env)
            target = str(procs[0].pid)
            _, out = run([PROBING, "-t", target, "--format", "csv", "query", count_all], env)
            total = int(out.splitlines()[1])
            cluster, single = [], []
            for _ in range(args.runs):
                cluster.append(run([PROBING, "-t", target, "query", count_all], env)[0])
                single.append(run([PROBING, "-t", target, "query", count_one], env)[0])
            cluster.sort()
            single.sort()
            p90 = lambda t: t[max(0, int(len(t) * 0.9) - 1)]
            print("%d members, %d rows of cluster.stacks in all, %d runs each" %
                  (args.members_main, total, args.runs))
            print("%-34s %10s %10s" % ("query", "median ms", "p90 ms"))
            print("%-34s %10.1f %10.1f" % ("count(*) FROM cluster.stacks", statistics.median(cluster), p90(cluster)))
            print("%-34s %10.1f %10.1f" % ("count(*) FROM python.stacks (1)", statistics.median(single), p90(single)))
        finally:
            for p in procs:
                p.kill()
                p.wait()
        print()
        print("scaling: %d rows per member, median of %d runs" % (args.scale_rows, max(5, args.runs // 2)))
        print("%8s %12s %14s" % ("members", "median ms", "ms per member"))
        for n in [int(x) for x in args.scale.split(",")]:
            shutil.rmtree(data, ignore_errors=True)
            os.makedirs(data)
            # Idle members (4 threads that sleep): 32 busy ones would saturate 2 cores by
            # themselves and time the machine, not the query.
            procs = start_job(n, args.hz, data, "idle.py")
            try:
                fill(procs, args.scale_rows, env)
                t = timings([PROBING, "-t", procs[0].pid, "query", count_all], env,
                            max(5, args.runs // 2))
                m = statistics.median(t)
                print("%8d %12.1f %14.2f" % (n, m, m / n))
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
