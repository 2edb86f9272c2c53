"""What the recorder adds to each torch.distributed call: the same all_reduce of one float,
in one single-rank gloo group, called through the recorder's wrapper and through the function it
wraps (`__wrapped__`), in alternating blocks of one run. Prints the median per-call time of each
and their difference (the cost added per collective call), with a 95% interval of the
difference from the blocks.

    python3 bench/collectives_overhead.py [--blocks 30] [--calls 2000]
"""
import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probing_bench  # noqa: E402

probing_bench.ensure_recorder()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=30)
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(probing_bench.free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    wrapped = dist.all_reduce
    plain = getattr(wrapped, "__wrapped__", None)
    if plain is None:
        raise SystemExit("torch.distributed.all_reduce is not the recorder's wrapper: "
                         "collectives are not recorded in this process")
    t = torch.ones(1)

    def block(fn):
        t0 = time.perf_counter_ns()
        for _ in range(args.calls):
            fn(t)
        return (time.perf_counter_ns() - t0) / args.calls

    for fn in (wrapped, plain):  # warm up
        block(fn)
    diffs, on, off = [], [], []
    for _ in range(args.blocks):
        order = [wrapped, plain]
        random.shuffle(order)
        got = {id(fn): block(fn) for fn in order}
        on.append(got[id(wrapped)])
        off.append(got[id(plain)])
        diffs.append(got[id(wrapped)] - got[id(plain)])
    diffs.sort()
    k = max(0, int(len(diffs) / 2 - 1.96 * (len(diffs) ** 0.5) / 2))
    print("all_reduce of one float32, 1-rank gloo, %d blocks x %d calls" % (args.blocks, args.calls))
    print("  through the recorder's wrapper: %8.2f us per call (median of blocks)"
          % (statistics.median(on) / 1e3))
    print("  the wrapped function:           %8.2f us per call" % (statistics.median(off) / 1e3))
    print("  added per call: %.2f us (95%% interval %.2f to %.2f); ratio %.3f"
          % (statistics.median(diffs) / 1e3, diffs[k] / 1e3, diffs[-1 - k] / 1e3,
             statistics.median(on) / statistics.median(off)))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
