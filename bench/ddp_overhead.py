"""The recorder's cost on a 4-rank gloo DDP job (samples/train_ddp.py), its cluster view idle:
every rank records (PROBING=1: stacks at 100 Hz, memory, PyTorch tracing, its registration in
the job's store), nobody queries. Whole jobs alternate, recorded and plain, in --pairs pairs
(order alternating within pairs so drift favours neither); each job's time is the mean over its
ranks of the training loop's wall time (process-group set-up excluded). Reports the median of
the per-pair ratios (recorded / plain) with min and max.

    /usr/bin/python3 bench/ddp_overhead.py [--pairs 6] [--steps 150] [--world 4]
"""
import argparse
import os
import pathlib
import re
import statistics
import subprocess
import tempfile
import uuid

from probing_bench import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent


def job(world, steps, probing, data):
    port, run_id = free_port(), "bench-" + uuid.uuid4().hex[:6]
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_RUN_ID=run_id,
                   PROBING=probing, PROBING_DATA_DIR=data, OMP_NUM_THREADS="1",
                   PYTHONUSERBASE=str(ROOT / "build" / "pyuser"))
        procs.append(subprocess.Popen(["/usr/bin/python3", str(ROOT / "samples" / "train_ddp.py"),
                                       "--steps", str(steps)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, env=env))
    seconds = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        m = re.search(r"steps in ([0-9.]+) s", out)
        if p.returncode != 0 or not m:
            raise SystemExit("a rank failed (exit %s): %s" % (p.returncode, out[-500:]))
        seconds.append(float(m.group(1)))
    return statistics.mean(seconds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--world", type=int, default=4)
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="probing-bench-ddp-")
    job(args.world, 20, "0", data)  # warm-up: imports, page cache
    ratios, plain_s, recorded_s = [], [], []
    for i in range(args.pairs):
        order = ("0", "1") if i % 2 == 0 else ("1", "0")
        t = {mode: job(args.world, args.steps, mode, data) for mode in order}
        plain_s.append(t["0"])
        recorded_s.append(t["1"])
        ratios.append(t["1"] / t["0"])
        print("pair %d: plain %.2f s, recorded %.2f s, ratio %.3f" % (i + 1, t["0"], t["1"], ratios[-1]))
    print("%d ranks, %d steps: plain %.2f s, recorded %.2f s (medians); recorded / plain: median "
          "%.3f (min %.3f, max %.3f) over %d pairs" %
          (args.world, args.steps, statistics.median(plain_s), statistics.median(recorded_s),
           statistics.median(ratios), min(ratios), max(ratios), args.pairs))


if __name__ == "__main__":
    main()
