"""Cost of one stack-sampler pass, in CPU time of the sampler thread itself.

Scenarios: one thread with a 30-frame stack; 20 threads with 30-frame stacks (all sleeping, so
the stacks hold still). The sampler thread's CPU time comes from /proc/self/task/<tid>/schedstat
(nanoseconds on CPU); passes = seconds x rate. The pass includes memory sampling and sealing.

    python3 bench/sampler_cost.py [--seconds 5] [--hz 100]
"""
import argparse
import os
import threading
import time

from probing_bench import config, ensure_recorder, recorder




def sampler_cpu_ns():
    for tid in os.listdir("/proc/self/task"):
        with open("/proc/self/task/%s/comm" % tid) as f:
            if f.read().strip() == "probing-sampler":
                with open("/proc/self/task/%s/schedstat" % tid) as s:
                    return int(s.read().split()[0])
    raise SystemExit("no probing-sampler thread: is the recorder running?")


def deep(n, stop):
    if n > 1:
        return deep(n - 1, stop)
    stop.wait()


def run(threads, depth, seconds, hz):
    config(recorder(), "probing.sampler.hz", hz)
    stop = threading.Event()
    # The thread's own frames (run, _bootstrap_inner, _bootstrap) come on top of `depth - 3`.
    ts = [threading.Thread(target=deep, args=(depth - 3, stop), daemon=True)
          for _ in range(threads)]
    for t in ts:
        t.start()
    try:
        time.sleep(0.5)
        c0, t0 = sampler_cpu_ns(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = sampler_cpu_ns(), time.monotonic()
    finally:
        stop.set()
        for t in ts:
            t.join()
    passes = (t1 - t0) * hz
    per_pass = (c1 - c0) / passes / 1e3
    return per_pass, (c1 - c0) / (t1 - t0) / 1e9


def main():
    ensure_recorder()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--hz", type=int, default=100)
    args = p.parse_args()
    print("scenario                   per pass     sampler CPU (share of one core) at %d Hz" % args.hz)
    for threads in (1, 20):
        per_pass, share = run(threads, 30, args.seconds, args.hz)
        print("%2d thread(s) x 30 frames  %8.1f us   %.2f%%  (%.1f us per thread-sample)"
              % (threads, per_pass, share * 100, per_pass / threads), flush=True)


if __name__ == "__main__":
    main()
