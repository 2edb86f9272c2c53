"""What PyTorch module tracing costs the training job, against plain and against torch.profiler.

Method (../shared/BENCHMARKING.md): one process under the recorder (PROBING=1), stack sampling
off so that only tracing is measured. Each round runs one block of steps in each mode, in an
order that rotates every round (a block is one untimed step, as a setting takes effect at the
next step, then a few timed ones: short blocks, many rounds): plain (probing.torch.enabled=false), traced (every step, every
module), traced at probing.sample_rate 0.1, and torch.profiler (CPU activity) with our tracing
off. A mode's figure is the median over rounds of its block time divided by the same round's
plain block, with min and max, in wall time and in the process's CPU time (which the other
tenants of a shared machine disturb less). The cost of one traced module call is the median
extra CPU time of a traced block over its plain block, divided by the module calls (forward and
backward) in it. torch.profiler is entered before a block's untimed step and left after its
timed ones (its start-up and post-processing are not timed: its steady state).

    python3 bench/torch_overhead.py [--workload mlp|transformer|resnet|tiny|all] [--rounds N]

`tiny` (64 modules of 8 features) is where the cost of one call is read: there the hooks are a
large share of the step, far above the machine's noise.

Re-executes itself with PROBING=1 and the build tree's package when started without them.
"""
import argparse
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

    return (*linear_stack(128, 8, nn.ReLU, 32), 10)


def transformer():
    import torch
    from torch import nn

    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, num_layers=4), nn.Flatten(),
                          nn.Linear(64 * 16, 10))
    x, y = torch.randn(16, 16, 64), torch.randint(0, 10, (16,))
    return model, x, y, 3


def resnet():
    import torch
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    return model, x, y, 2


def tiny():
    """Many tiny modules: the hooks' cost dominates, so the cost per call is measured well above
    the machine's noise."""
    from torch import nn

    return (*linear_stack(8, 33, nn.Tanh, 4), 10)


WORKLOADS = {"mlp": mlp, "transformer": transformer, "resnet": resnet, "tiny": tiny}


def measure(lib, name, rounds):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model, x, y, steps = WORKLOADS[name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    # Module calls per step (forward; backward rows are as many), counted once.
    calls = [0]

    def count(module, inputs):
        calls[0] += 1

    h = torch.nn.modules.module.register_module_forward_pre_hook(count)
    step()
    h.remove()

    def block(mode):
        traced = mode in ("traced", "traced 0.1")
        config(lib, "probing.torch.enabled", "true" if traced else "false")
        config(lib, "probing.sample_rate", "0.1" if mode == "traced 0.1" else "1")
        prof = None
        if mode == "torch.profiler":
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            prof.__enter__()
        step()  # untimed: the setting takes effect at the next step; the profiler warms up
        t, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        w, c = time.perf_counter() - t, time.process_time() - c
        if prof is not None:
            prof.__exit__(None, None, None)  # its post-processing is not timed
        return w, c

    modes = ["plain", "traced", "traced 0.1", "torch.profiler"]
    for m in modes:  # warm-up
        block(m)
    wall = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for m in order:
            w, c = block(m)
            wall[m].append(w)
            cpu[m].append(c)
    print("%s: %d module calls per step, %d steps per block, %.2f ms/step plain (median), %d rounds"
          % (name, calls[0], steps, statistics.median(wall["plain"]) / steps * 1e3, rounds))
    print("  %-15s %-30s %s" % ("mode", "wall-time ratio (min, max)", "CPU-time ratio (min, max)"))
    for m in modes[1:]:
        cells = []
        for times in (wall, cpu):
            ratios = [t / p for t, p in zip(times[m], times["plain"])]
            cells.append("%.3f (%.2f, %.2f)" % (statistics.median(ratios), min(ratios), max(ratios)))
        print("  %-15s %-30s %s" % (m, cells[0], cells[1]))
    extra = statistics.median([t - p for t, p in zip(cpu["traced"], cpu["plain"])])
    per_call = extra / (steps * calls[0] * 2)
    print("  one traced module call (forward or backward, CPU time): %.2f us" % (per_call * 1e6))
    return per_call


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS) + ["all"], default="all")
    p.add_argument("--rounds", type=int, default=40)
    args = p.parse_args()
    ensure_recorder()
    lib = recorder()
    config(lib, "probing.sampler.enabled", "false")
    names = sorted(WORKLOADS) if args.workload == "all" else [args.workload]
    for name in names:
        measure(lib, name, args.rounds)


if __name__ == "__main__":
    main()
