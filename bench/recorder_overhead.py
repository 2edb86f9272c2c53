"""Overhead of the recorder's stack sampler on the process it lives in.

Method (../shared/BENCHMARKING.md): one process, the recorder started with PROBING=1; blocks of
the same work alternate with sampling on and off (probing.sampler.enabled), the order flipping
every pair; the figure is the median of the per-pair ratios (on / off), with min and max.

    build/... : python3 bench/recorder_overhead.py [--workload loop|resnet|all] [--pairs N]

Re-executes itself with PROBING=1 and the build tree's package when started without them.
"""
import argparse
import statistics
import time

from probing_bench import config, ensure_recorder, recorder






def loop_workload():
    def work(n):
        total = 0
        for i in range(n):
            total += i * i % 7
        return total

    def step():
        work(1000000)

    return step


def resnet_workload():
    import torch
    import torchvision

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 3, 64, 64)
    y = torch.randint(0, 10, (8,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def measure(lib, step, steps, pairs, hz):
    config(lib, "probing.sampler.hz", str(hz))

    def block(on):
        config(lib, "probing.sampler.enabled", "true" if on else "false")
        t = time.perf_counter()
        for _ in range(steps):
            step()
        return time.perf_counter() - t

    for _ in range(steps):  # warm-up
        step()
    ratios, plain = [], []
    for i in range(pairs):
        if i % 2 == 0:
            on = block(True)
            off = block(False)
        else:
            off = block(False)
            on = block(True)
        ratios.append(on / off)
        plain.append(off / steps)
    config(lib, "probing.sampler.enabled", "true")
    return statistics.median(ratios), min(ratios), max(ratios), statistics.median(plain)


def main():
    ensure_recorder()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=["loop", "resnet", "all"], default="all")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--steps", type=int, default=10, help="steps per block")
    args = p.parse_args()
    lib = recorder()
    workloads = ["loop", "resnet"] if args.workload == "all" else [args.workload]
    print("workload  rate     plain step   ratio on/off: median (min-max)   [%d pairs of %d-step blocks]"
          % (args.pairs, args.steps))
    for name in workloads:
        step = loop_workload() if name == "loop" else resnet_workload()
        for hz in (100, 1000):
            med, lo, hi, plain = measure(lib, step, args.steps, args.pairs, hz)
            print("%-8s  %4d Hz  %7.1f ms    %.3f (%.3f-%.3f)" % (name, hz, plain * 1e3, med, lo, hi),
                  flush=True)


if __name__ == "__main__":
    main()
