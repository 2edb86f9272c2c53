"""Cost of the stack sampler, in CPU time of the sampler thread itself, and Austin's beside it.

Target: 20 threads, each waiting under a 30-frame stack (so stacks hold still and every sampler
reads the same thing), plus the main thread. One process, the recorder started with PROBING=1.
For each rate, rounds of blocks in random order (../shared/BENCHMARKING.md):

  on       our sampler reading stacks: CPU of the probing-sampler thread (schedstat)
  off      our sampler thread still waking at the same rate, stacks off
           (probing.sampler.enabled=false): what a pass costs without reading a stack
  guard    only with --syscalls: stacks read with process_vm_readv instead of plain loads
           (probing.sampler.fault_guard=false), the way reads were made before the guard
  austin   only with --austin PATH: Austin (out of process) sampling this process at the same
           interval, our stacks off; its CPU from its /proc/<pid>/stat, its samples counted in
           its output

Figures per thread sample (21 threads a pass): "on" is the whole sampler thread per thread
sample (wake-ups, memory samples and sealing included); "on - off" is what reading one stack
adds. Austin's is its whole process CPU (start-up included) per sample it wrote. Each figure is
the median over rounds with min and max; the ratio austin / on is taken within each round.

    python3 bench/sampler_cost.py [--seconds 2] [--rounds 5] [--hz 100 1000] [--austin PATH]
"""
import argparse
import os
import random
import resource
import statistics
import subprocess
import tempfile
import threading
import time

from probing_bench import config, ensure_recorder, recorder

THREADS = 20
DEPTH = 30


def sampler_tid():
    for tid in os.listdir("/proc/self/task"):
        with open("/proc/self/task/%s/comm" % tid) as f:
            if f.read().strip() == "probing-sampler":
                return tid
    raise SystemExit("no probing-sampler thread: is the recorder running?")


def thread_cpu_ns(tid):
    with open("/proc/self/task/%s/schedstat" % tid) as s:
        return int(s.read().split()[0])


def process_cpu_ns(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


def deep(n, stop):
    if n > 1:
        return deep(n - 1, stop)
    stop.wait()


def stored_samples():
    import probing

    return probing.connect(os.getpid()).info()["stack_samples"]["stored"]


def ours(lib, tid, on, seconds):
    config(lib, "probing.sampler.enabled", "true" if on else "false")
    time.sleep(0.05)  # the pass under way finishes
    n0, c0, t0 = stored_samples(), thread_cpu_ns(tid), time.monotonic()
    time.sleep(seconds)
    n1, c1, t1 = stored_samples(), thread_cpu_ns(tid), time.monotonic()
    return c1 - c0, n1 - n0, t1 - t0


def austin(lib, path, hz, seconds):
    config(lib, "probing.sampler.enabled", "false")
    with tempfile.NamedTemporaryFile(suffix=".austin") as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([path, "-i", str(1000000 // hz), "-x", str(max(1, round(seconds))), "-p",
                        str(os.getpid()), "-o", out.name],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # Austin is our only child
        cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e9
        with open(out.name) as f:
            samples = sum(1 for line in f if line.startswith("P"))
    return cpu, samples


def summary(values):
    return statistics.median(values), min(values), max(values)


def fmt(values, unit=" us"):
    m, lo, hi = summary(values)
    return "%7.2f%s (%.2f-%.2f)" % (m, unit, lo, hi)


def main():
    ensure_recorder()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=2, help="seconds a block (Austin takes whole seconds)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--hz", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--austin", help="path of an Austin 3.x binary to run beside ours")
    p.add_argument("--syscalls", action="store_true",
                   help="also measure reads with process_vm_readv (fault guard off)")
    args = p.parse_args()
    lib = recorder()
    stop = threading.Event()
    # The thread's own frames (run, _bootstrap_inner, _bootstrap) come on top of `DEPTH - 3`.
    ts = [threading.Thread(target=deep, args=(DEPTH - 3, stop), daemon=True)
          for _ in range(THREADS)]
    for t in ts:
        t.start()
    tid = sampler_tid()
    threads = THREADS + 1
    rng = random.Random(1)
    print("%d threads x %d frames + the main thread; %d rounds of %.1f s blocks"
          % (THREADS, DEPTH, args.rounds, args.seconds), flush=True)
    try:
        time.sleep(3.5)  # past the recorder's first seconds (it seals more often then)
        for hz in args.hz:
            config(lib, "probing.sampler.hz", hz)
            rows = {"on": [], "delta": [], "share": [], "guard": [], "austin": [], "ratio": []}
            for _ in range(args.rounds):
                modes = ["on", "off"] + (["guard"] if args.syscalls else []) + \
                        (["austin"] if args.austin else [])
                rng.shuffle(modes)
                got = {}
                for m in modes:
                    if m == "austin":
                        got[m] = austin(lib, args.austin, hz, args.seconds)
                    elif m == "guard":
                        config(lib, "probing.sampler.fault_guard", "false")
                        got[m] = ours(lib, tid, True, args.seconds)
                        config(lib, "probing.sampler.fault_guard", "true")
                    else:
                        got[m] = ours(lib, tid, m == "on", args.seconds)
                cpu_on, n_on, t_on = got["on"]
                cpu_off, _, t_off = got["off"]
                per_on = cpu_on / n_on / 1e3
                rows["on"].append(per_on)
                rows["share"].append(cpu_on / t_on / 1e9 * 100)
                rows["delta"].append((cpu_on / t_on - cpu_off / t_off) * t_on / n_on / 1e3)
                if "guard" in got:
                    cpu_g, n_g, _ = got["guard"]
                    rows["guard"].append(cpu_g / n_g / 1e3)
                if "austin" in got:
                    cpu_a, n_a = got["austin"]
                    rows["austin"].append(cpu_a / max(n_a, 1) / 1e3)
                    rows["ratio"].append(rows["austin"][-1] / per_on)
            print("\n%d Hz (%d thread samples a second asked)" % (hz, hz * threads))
            print("  ours, sampler thread CPU per thread sample  %s" % fmt(rows["on"]))
            print("  ours, of which reading the stack (on - off) %s" % fmt(rows["delta"]))
            print("  ours, sampler thread share of one core      %s" % fmt(rows["share"], " %"))
            if rows["guard"]:
                print("  ours with process_vm_readv, per sample      %s" % fmt(rows["guard"]))
            if rows["austin"]:
                print("  austin, process CPU per sample              %s" % fmt(rows["austin"]))
                print("  austin / ours (per round)                   %s" % fmt(rows["ratio"], "x"))
    finally:
        stop.set()
        for t in ts:
            t.join()


if __name__ == "__main__":
    main()
