"""Injection latency: `probing -t PID inject` into fresh Python processes started without the
recorder (tests/targets/inject_target.py), 50 runs per target kind.

For each run: the wall time of the whole command (from its start until it exits, which is once
the recorder answers on its socket), the injector's own figures (how long the hijacked thread
was stopped, split into safe-point check, dlopen and start; how many stops it took to find a
safe point), and, interleaved right after it on the same process, the wall time of
`probing -t PID info`, a command's floor (start the CLI, one round trip): the ratio
inject / info says what injection adds on top of any probing command. Median and p99 (min/max
for ratios) over the runs.

    python3 bench/inject_latency.py [--runs 50] [--kinds sleep,busy,malloc] [--python EXE]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBING = os.path.join(ROOT, "build", "bin", "probing")
TARGET = os.path.join(ROOT, "tests", "targets", "inject_target.py")


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


def timed(args, env):
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    return (time.perf_counter() - t0) * 1000, r


def run_kind(python, kind, runs, env, helper_dir):
    rows = []
    for _ in range(runs):
        p = subprocess.Popen([python, TARGET, helper_dir, kind, "60"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True,
                             env=dict(env, PROBING="0", PYTHONUNBUFFERED="1"))
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(0.1)
            wall, r = timed([PROBING, "-t", str(p.pid), "inject", "--format", "json"], env)
            if r.returncode != 0:
                raise SystemExit("inject failed: " + r.stderr.strip())
            row = json.loads(r.stdout)[0]
            info_ms, r = timed([PROBING, "-t", str(p.pid), "info"], env)
            assert r.returncode == 0, r.stderr
            row.update(wall_ms=wall, info_ms=info_ms, ratio=wall / info_ms)
            rows.append(row)
        finally:
            p.kill()
            p.wait()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--kinds", default="sleep,busy,malloc")
    ap.add_argument("--python", default="/usr/bin/python3")
    a = ap.parse_args()
    kinds = a.kinds.split(",")
    if "malloc" in kinds and shutil.which("cc") is None:
        print("no cc: skipping the malloc target")
        kinds.remove("malloc")
    data = tempfile.mkdtemp(prefix="probing-bench-")
    helper = tempfile.mkdtemp(prefix="probing-bench-helper-")
    env = dict(os.environ, PROBING_DATA_DIR=data)
    print("%d injections per target, %s. ms: median / p99" % (a.runs, a.python))
    print("%-7s %15s %15s %17s %15s %13s %13s %13s %9s" % (
        "target", "inject command", "info command", "ratio (min-max)", "thread stopped",
        "of it: check", "dlopen", "start", "stops"))
    for kind in kinds:
        rows = run_kind(a.python, kind, a.runs, env, helper)
        col = lambda k: [r[k] for r in rows]
        fmt = lambda xs: "%5.1f / %5.1f" % (statistics.median(xs), p99(xs))
        fmt2 = lambda xs: "%4.2f / %4.2f" % (statistics.median(xs), p99(xs))
        print("%-7s %15s %15s %5.2f (%4.2f-%4.2f) %15s %13s %13s %13s %5.0f/%3d" % (
            kind, fmt(col("wall_ms")), fmt(col("info_ms")), statistics.median(col("ratio")),
            min(col("ratio")), max(col("ratio")), fmt2(col("stopped_ms")), fmt2(col("check_ms")),
            fmt2(col("dlopen_ms")), fmt2(col("start_ms")), statistics.median(col("attempts")),
            max(col("attempts"))))
        sys.stdout.flush()
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(helper, ignore_errors=True)


if __name__ == "__main__":
    main()
