"""What PyTorch module tracing costs the training job, against plain and against torch.profiler.

Method (../shared/BENCHMARKING.md): one process under the recorder (PROBING=1), stack sampling
off so that only tracing is measured. Each round runs one block in each mode, in an order drawn
at random every round (a fixed seed), so that every mode follows every other as often:
- plain: probing.torch.enabled=false (no wrapper, no hooks: nn.Module as torch made it);
- traced: every step, every module (sample_rate 1, probing.torch.budget off);
- idle: tracing on at sample_rate 0, so no step is traced: what the untraced steps of a lower
  sample_rate cost (the call wrapper stays in place and passes calls through);
- torch.profiler (CPU activity), our tracing off.
A block is three untimed steps, then three timed ones (--steps). A new setting takes effect at
the end of the first untimed step; when it puts nn.Module.__call__ in place or back, Python's
type caches and specialized bytecode are invalidated and take a few steps to settle (a cost
paid once per switch, never in a steady run); the profiler warms up. Blocks are short because
the machine's noise drifts over seconds, and short blocks side by side cancel it best. A mode's
figure is the median over rounds of its timed steps divided by the same round's plain ones, with a 95% confidence interval of that median (order
statistics), min and max. Times are the training thread's wall time; its CPU time
(time.thread_time) is beside it. torch.profiler is entered before a block's untimed step and
left after its timed one (start-up and post-processing are not timed: its steady state).

At sample_rate 0.1 one step in ten is traced and the rest are idle, so its figure is
0.1 x traced + 0.9 x idle, from the two medians.

The overhead budget (probing.torch.budget, on at 1% by default) is measured apart, with --budget
(or --budget-only): rounds of two long blocks, plain and budget (sample_rate 1, the budget at
its default), in random order; a block is three untimed steps, then --budget-steps timed ones
(long, so that every block holds several traced steps: the budget traces few), and a round's
figure is budget / plain; beside the median, the 10%-trimmed mean of the rounds with a
bootstrap interval (the budget holds down a long-run average, which a median of blocks that
hold one traced step more or less does not show). The budget's own account of those blocks (its measured cost over the
step time, the share of steps it traced) is read from its accumulators and printed beside it.

The cost of one traced module call is the median extra training-thread CPU time of a traced
step over its round's plain step, divided by the module calls (forward and backward) in it;
with the whole process's CPU time beside it (it includes the recorder thread, which encodes the
rows). It is read best on `tiny` (64 modules of 8 features), where the calls are a large share
of a step, far above the noise.

    python3 bench/torch_overhead.py [--workload mlp|transformer|resnet|tiny|all] [--rounds N]
                                    [--steps N] [--calls auto|wrap|hooks]
                                    [--budget | --budget-only] [--budget-steps N]

Re-executes itself with PROBING=1 and the build tree's package when started without them.
"""
import argparse
import math
import random
import statistics
import time

from probing_bench import config, ensure_recorder, recorder


def linear_stack(width, layers, activation, batch):
    """`layers` Linear(width, width) with `activation` between them, then Linear(width, 10)."""
    import torch
    from torch import nn

    blocks = []
    for _ in range(layers - 1):
        blocks += [nn.Linear(width, width), activation()]
    model = nn.Sequential(*blocks, nn.Linear(width, 10))
    return model, torch.randn(batch, width), torch.randint(0, 10, (batch,))


def mlp():
    from torch import nn

    return linear_stack(128, 8, nn.ReLU, 32)


def transformer():
    import torch
    from torch import nn

    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, num_layers=4), nn.Flatten(),
                          nn.Linear(64 * 16, 10))
    x, y = torch.randn(16, 16, 64), torch.randint(0, 10, (16,))
    return model, x, y


def resnet():
    import torch
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    return model, x, y


def tiny():
    """Many tiny modules: the hooks' cost dominates, so the cost per call is measured well above
    the machine's noise."""
    from torch import nn

    return linear_stack(8, 33, nn.Tanh, 4)


WORKLOADS = {"mlp": mlp, "transformer": transformer, "resnet": resnet, "tiny": tiny}


ROUNDS = {"mlp": 600, "tiny": 600, "transformer": 150, "resnet": 100}
UNTIMED = 3
MODES = ["plain", "traced", "idle", "torch.profiler"]


def median_ci(values):
    """(median, low, high): a 95% confidence interval of the median from order statistics."""
    v = sorted(values)
    n = len(v)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)))
    hi = min(n - 1, int(math.ceil(n / 2 + half)))
    return statistics.median(v), v[lo], v[hi]


def training(name):
    """One training step of the workload, as a function (one thread, seeded)."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model, x, y = WORKLOADS[name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return step


def measure(lib, name, rounds, steps):
    import torch

    step = training(name)
    rounds = rounds or ROUNDS[name]

    # Module calls per step (forward; backward rows are as many), counted once.
    calls = [0]

    def count(module, inputs):
        calls[0] += 1

    h = torch.nn.modules.module.register_module_forward_pre_hook(count)
    step()
    h.remove()

    def block(mode):
        config(lib, "probing.torch.enabled", "false" if mode in ("plain", "torch.profiler")
               else "true")
        config(lib, "probing.sample_rate", "0" if mode == "idle" else "1")
        config(lib, "probing.torch.budget", "off")
        prof = None
        if mode == "torch.profiler":
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            prof.__enter__()
        for _ in range(UNTIMED):
            step()  # untimed: the setting takes effect at the first's end; the profiler warms up
        w, c, p = time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()
        for _ in range(steps):
            step()
        w, c, p = (time.perf_counter_ns() - w, time.thread_time_ns() - c,
                   time.process_time_ns() - p)
        if prof is not None:
            prof.__exit__(None, None, None)  # its post-processing is not timed
        return w, c, p

    for _ in range(3):  # warm-up
        for m in MODES:
            block(m)
    times = {m: [] for m in MODES}
    rng = random.Random(0)
    for _ in range(rounds):
        for m in rng.sample(MODES, len(MODES)):
            times[m].append(block(m))
    plain = times["plain"]
    print("%s: %d module calls per step, %.2f ms/step plain (median), %d rounds of %d timed "
          "steps" % (name, calls[0], statistics.median(t[0] for t in plain) / steps / 1e6,
                       rounds, steps))
    print("  %-15s %-8s %-16s %-12s %s" % ("mode", "ratio", "95% CI", "min-max", "CPU-time ratio"))
    result = {}
    for m in MODES[1:]:
        ratios = [t[0] / p[0] for t, p in zip(times[m], plain)]
        med, lo, hi = median_ci(ratios)
        cpu = statistics.median(t[1] / p[1] for t, p in zip(times[m], plain))
        print("  %-15s %-8.4f %-16s %-12s %.4f" % (m, med, "%.4f-%.4f" % (lo, hi),
                                                  "%.2f-%.2f" % (min(ratios), max(ratios)), cpu))
        result[m] = med
    result["sample_rate 0.1"] = 0.1 * result["traced"] + 0.9 * result["idle"]
    print("  %-15s %-8.4f (0.1 x traced + 0.9 x idle)" % ("sample_rate 0.1",
                                                          result["sample_rate 0.1"]))
    n = steps * calls[0] * 2
    thread = statistics.median(t[1] - p[1] for t, p in zip(times["traced"], plain)) / n
    process = statistics.median(t[2] - p[2] for t, p in zip(times["traced"], plain)) / n
    print("  one traced module call (forward or backward): %.2f us training-thread CPU, "
          "%.2f us process CPU" % (thread / 1e3, process / 1e3))
    return result


def measure_budget(lib, name, rounds, steps):
    """plain against the budget at its default, in long blocks (see the docstring)."""
    step = training(name)
    rounds = rounds or max(20, ROUNDS[name] // 10)

    def block(mode):
        config(lib, "probing.torch.enabled", "false" if mode == "plain" else "true")
        config(lib, "probing.sample_rate", "1")
        config(lib, "probing.torch.budget", "1%")
        for _ in range(UNTIMED):
            step()
        w = time.perf_counter_ns()
        for _ in range(steps):
            step()
        return time.perf_counter_ns() - w

    for _ in range(2):  # warm-up
        block("plain")
        block("budget")
    times = {"plain": [], "budget": []}
    rng = random.Random(1)
    for _ in range(rounds):
        for m in rng.sample(sorted(times), 2):
            times[m].append(block(m))
    ratios = [b / p for b, p in zip(times["budget"], times["plain"])]
    med, lo, hi = median_ci(ratios)
    print("%s, budget 1%% (sample_rate 1): %d rounds of %d timed steps, %.2f ms/step plain" % (
        name, rounds, steps, statistics.median(times["plain"]) / steps / 1e6))
    tm, tlo, thi = trimmed_mean_ci(ratios)
    print("  budget / plain: median %.4f (95%% CI %.4f-%.4f); 10%%-trimmed mean %.4f (95%% CI "
          "%.4f-%.4f, bootstrap); min-max %.2f-%.2f" % (med, lo, hi, tm, tlo, thi, min(ratios),
                                                       max(ratios)))
    account = own_account()
    if account:
        print("  the budget's own account (python.torch_steps of its blocks): %d steps, %.1f%% "
              "traced, cost / step time %.4f (traced steps %.4f, untraced %.4f)" % account)
    return med


def trimmed_mean(values, cut=0.1):
    v = sorted(values)
    k = int(len(v) * cut)
    return statistics.mean(v[k:len(v) - k] or v)


def trimmed_mean_ci(values, resamples=2000):
    """The 10%-trimmed mean (the budget is about the long run, so a mean; trimmed, as a busy
    machine's stalls land in single blocks) and a 95% bootstrap interval of it."""
    rng = random.Random(2)
    means = sorted(trimmed_mean([rng.choice(values) for _ in values]) for _ in range(resamples))
    return trimmed_mean(values), means[int(0.025 * resamples)], means[int(0.975 * resamples)]


def own_account():
    """What python.torch_steps says of the steps run under the budget, read from this process's
    rings by the CLI (as a user would), or None when it cannot be read."""
    import json
    import os
    import subprocess

    from probing_bench import ROOT

    sql = ("SELECT count(*) AS n, avg(traced) AS traced, sum(cost) / sum(duration) AS share, "
           "sum(CASE WHEN traced = 1 THEN cost END) / sum(CASE WHEN traced = 1 THEN duration END)"
           " AS t, sum(CASE WHEN traced = 0 THEN cost END) / "
           "sum(CASE WHEN traced = 0 THEN duration END) AS u "
           "FROM python.torch_steps WHERE budget IS NOT NULL")
    r = subprocess.run([os.path.join(ROOT, "build", "bin", "probing"), "-t", str(os.getpid()),
                        "--format", "json", "query", sql], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        print("  (the budget's own account could not be read: %s)" % r.stderr.strip())
        return None
    row = json.loads(r.stdout)[0]
    return (row["n"], 100 * (row["traced"] or 0), row["share"] or 0, row["t"] or 0,
            row["u"] or 0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS) + ["all"], default="all")
    p.add_argument("--calls", choices=["auto", "wrap", "hooks"], default="auto",
                   help="probing.torch.calls: how module calls are seen (default auto)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per block (default 3)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--budget", action="store_true",
                       help="also measure the overhead budget (probing.torch.budget 1%%)")
    group.add_argument("--budget-only", action="store_true",
                       help="measure only the overhead budget")
    p.add_argument("--budget-steps", type=int, default=100,
                   help="timed steps per block of the budget's measurement (default 100)")
    p.add_argument("--rounds", type=int, default=0,
                   help="rounds per workload (default: %s)" % ", ".join(
                       "%s %d" % kv for kv in sorted(ROUNDS.items())))
    args = p.parse_args()
    ensure_recorder()
    lib = recorder()
    config(lib, "probing.sampler.enabled", "false")
    config(lib, "probing.torch.calls", args.calls)
    names = sorted(WORKLOADS) if args.workload == "all" else [args.workload]
    for name in names:
        if not args.budget_only:
            measure(lib, name, args.rounds, args.steps)
        if args.budget or args.budget_only:
            measure_budget(lib, name, args.rounds, args.budget_steps)


if __name__ == "__main__":
    main()
