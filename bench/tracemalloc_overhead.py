"""What `probing memory --top` costs the target while it traces: the speed of a loop with
tracemalloc on (as memory --top starts it: tracemalloc.start(1), one frame per allocation)
against the same loop with it off, in one process with the recorder on (PROBING=1).

Workloads:
  alloc     allocation-heavy pure Python: small dicts, lists and strings made and dropped
  ints      arithmetic on ints beyond CPython's small-int cache: every result is a new object,
            as in most pure-Python number crunching
  small     arithmetic on small ints only (cached objects, a loop over itertools.repeat): no
            allocation at all, the floor
  torch     a 3-layer MLP training step (Debian torch, one thread), when torch imports: tensor
            memory comes from torch's own allocator, which tracemalloc does not see

Pairs of blocks alternate off/on, the order flipping each pair (../shared/BENCHMARKING.md);
the figure is the median of the per-pair ratios (on / off) with min and max.

    python3 bench/tracemalloc_overhead.py [--pairs 10] [--frames 1] [--workloads alloc ints small torch]
"""
import argparse
import itertools
import statistics
import time
import tracemalloc

from probing_bench import ensure_recorder


def alloc(n):
    kept = 0
    for i in range(n):
        d = {"i": i, "s": str(i), "l": [i, i + 1, i + 2]}
        kept += len(d["s"]) + len(d["l"])
    return kept


def ints(n):
    total = 0
    for i in range(n):
        total = (total + i * i) % 1000003
    return total


def small(n):
    x = 0
    for _ in itertools.repeat(None, n):
        x = (x ^ 5) & 0x7F
    return x


def torch_step():
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))

    def step(steps):
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    return step


def block(fn, arg, traced, frames):
    if traced:
        tracemalloc.start(frames)
    t0 = time.perf_counter()
    fn(arg)
    dt = time.perf_counter() - t0
    if traced:
        tracemalloc.stop()
    return dt


def measure(fn, arg, pairs, frames):
    block(fn, arg, False, frames)  # warm up both ways
    block(fn, arg, True, frames)
    ratios, plain = [], []
    for p in range(pairs):
        order = (False, True) if p % 2 == 0 else (True, False)
        times = {traced: block(fn, arg, traced, frames) for traced in order}
        ratios.append(times[True] / times[False])
        plain.append(times[False])
    return statistics.median(plain), ratios


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--frames", type=int, default=1, help="tracemalloc's traceback limit")
    ap.add_argument("--workloads", nargs="+", default=["alloc", "ints", "small", "torch"])
    args = ap.parse_args()
    ensure_recorder()
    runs = {"alloc": (alloc, 300000), "ints": (ints, 1000000), "small": (small, 2000000)}
    if "torch" in args.workloads:
        try:
            runs["torch"] = (torch_step(), 20)
        except ImportError:
            print("torch: not installed, left out")
    print("tracemalloc.start(%d), %d pairs; ratio on/off: median (min-max)" % (args.frames,
                                                                                 args.pairs))
    print("%-8s %12s %24s" % ("workload", "plain block", "ratio"))
    for name in args.workloads:
        if name not in runs:
            continue
        fn, arg = runs[name]
        plain, ratios = measure(fn, arg, args.pairs, args.frames)
        print("%-8s %9.0f ms %10.2f (%.2f-%.2f)" % (name, plain * 1e3, statistics.median(ratios),
                                                   min(ratios), max(ratios)))


if __name__ == "__main__":
    main()
