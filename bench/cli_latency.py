"""Whole-process wall time of `probing` commands a user types, against `probing --version` (the
cost of starting the program at all) in the same run.

Target: tests/targets/many_threads.py (21 threads) with the recorder sampling at --hz until the
stack ring holds about --rows rows of python.stacks, its control server also on a loopback TCP
port with a token. Then, --runs times each, interleaved:
  probing --version
  probing -t PID query "SELECT count(*) FROM python.stacks"
  probing -t 127.0.0.1:PORT --token T query "SELECT count(*) FROM python.stacks"   (remote)
  probing -t PID backtrace
Reports median and p90 in ms, each median over the --version median, and the remote query's
median over the local one's (the remote one moves every stack segment over TCP and decodes it
here, as it would from another host).

    /usr/bin/python3 bench/cli_latency.py [--rows 100000] [--runs 20]
"""
import argparse
import os
import pathlib
import statistics
import subprocess
import tempfile
import time

from probing_bench import free_port, start_target

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROBING = ROOT / "build" / "bin" / "probing"


def timed(argv, env):
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = (time.perf_counter() - t0) * 1e3
    if r.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(argv), r.stderr.strip()))
    return elapsed, r.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100000)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--hz", type=int, default=200)
    args = p.parse_args()
    data = tempfile.mkdtemp(prefix="probing-bench-cli-")
    port = free_port()
    env = dict(os.environ, PROBING_DATA_DIR=data, PROBING_AUTH_TOKEN="bench")
    target = start_target("many_threads.py", [3600], data, args.hz, port)
    try:
        pid = str(target.pid)
        count = ["SELECT count(*) FROM python.stacks"]
        deadline = time.time() + 600
        rows = 0
        while rows < args.rows:
            if time.time() > deadline:
                raise SystemExit("the rings hold only %d rows after 10 minutes" % rows)
            time.sleep(1)
            _, out = timed([str(PROBING), "-t", pid, "query", *count, "--format", "csv"], env)
            rows = int(out.splitlines()[1])
        print("python.stacks holds %d rows (%d threads at %d Hz)" % (rows, 21, args.hz))
        commands = {
            "--version": [str(PROBING), "--version"],
            "query count(*)": [str(PROBING), "-t", pid, "query", *count],
            "remote query": [str(PROBING), "-t", "127.0.0.1:%d" % port, "query", *count],
            "backtrace": [str(PROBING), "-t", pid, "backtrace"],
        }
        times = {k: [] for k in commands}
        for _ in range(args.runs):
            for k, argv in commands.items():
                times[k].append(timed(argv, env)[0])
        base = statistics.median(times["--version"])
        print("%-16s %10s %10s %8s" % ("command", "median ms", "p90 ms", "ratio"))
        for k, t in times.items():
            t.sort()
            print("%-16s %10.2f %10.2f %8.2f" % (k, statistics.median(t), t[int(len(t) * 0.9) - 1],
                                                 statistics.median(t) / base))
        pairs = sorted(r / l for r, l in zip(times["remote query"], times["query count(*)"]))
        print("remote query / local query, per interleaved pair: median %.2f (min %.2f, max %.2f)"
              % (statistics.median(pairs), pairs[0], pairs[-1]))
    finally:
        target.kill()
        target.wait()


if __name__ == "__main__":
    main()
