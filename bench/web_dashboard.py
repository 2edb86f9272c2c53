"""How fast `probing web` paints a process's page, how much JavaScript it sends, and what an open,
refreshing dashboard costs the training job. Measured in Debian's Chromium, headless, driven by
playwright-core (`make test-assets` fetches it) through bench/web_browser.mjs.

Target: a training process under the recorder (PROBING=1): BENCHMARKING.md's 8-layer MLP (128
wide, batch 32, torch.set_num_threads(1)), with 8 threads sleeping beside it (so the rings fill
with stack samples sooner), stacks sampled at --hz per thread; it writes each step's end time
and duration to a file.

1. First paint of /p/<pid> once the rings hold --samples stack samples. Cold: each of --runs
   runs starts a fresh `probing web` (nothing decoded yet) and opens the page in a fresh browser
   context (nothing cached). Warm: one dashboard, --runs fresh contexts. For each: first
   contentful paint, and "ready": every section has drawn its first data (threads, the flame
   graph of the last 10 s, the step chart, memory, variables; the app marks the moment), both
   from the start of navigation (Performance API). Median, min and max. JavaScript per page:
   bytes on the wire (gzip) and unpacked (Resource Timing).
2. The target's step time with the page open and refreshing, over closed. --pairs pairs of
   --block-second windows, on/off and off/on in turn (ABBA), the first second after each switch
   left out; per pair, the ratio of the windows' median step times, and the ratio of the target
   process's CPU time per step (all its threads: training, sampler, and the control server
   answering the dashboard's backtraces and seals; /proc/<pid>/stat), which the machine's other
   load moves far less than wall time; and the CPU time of the target's threads other than the
   training one (sampler, control server), open minus closed, in ms per second: what answering
   the dashboard costs the target itself. Reported: medians over the pairs, min and max. Twice:
   (a) the page in Chromium on this machine, whose rendering competes with the target for the
   machine's 2 cores; (b) the page's own requests each second made by a light client (what the
   training host sees when the browser is elsewhere). The dashboard server runs throughout; only
   the page comes and goes.

    python3 bench/web_dashboard.py [--samples 100000] [--runs 10] [--pairs 10] [--block 6]
                                   [--skip-paint]
"""
import argparse
import gzip
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROBING = ROOT / "build" / "bin" / "probing"
NODE_MODULES = ROOT / "build" / "test-assets" / "node_modules"
APP = ROOT / "web" / "app"


def target(out_path):
    """The training job: steps until killed, each step's end and duration appended to out_path."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(1)
    def sleeper():
        while True:
            time.sleep(0.01)

    for i in range(8):
        threading.Thread(target=sleeper, name="sleeper-%d" % i, daemon=True).start()
    blocks = []
    for _ in range(7):
        blocks += [nn.Linear(128, 128), nn.ReLU()]
    model = nn.Sequential(*blocks, nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 128), torch.randint(0, 10, (32,))
    print("ready", flush=True)
    with open(out_path, "w", buffering=1) as out:  # a line per step, readable at once
        while True:
            t0 = time.perf_counter()
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            t1 = time.perf_counter()
            out.write("%.6f %.9f\n" % (t1, t1 - t0))


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def start_web(env):
    p = subprocess.Popen([str(PROBING), "web", "--port", "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    line = p.stdout.readline()
    if not line.startswith("probing web: serving "):
        raise SystemExit("probing web did not start: %r" % line)
    return p, line.split()[3]


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def node(*argv, **kw):
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
    return subprocess.Popen(["node", str(ROOT / "bench" / "web_browser.mjs"), *argv], env=env,
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def summary(values, unit=""):
    values = sorted(values)
    return "median %.0f%s (min %.0f, max %.0f, n=%d)" % (statistics.median(values), unit, values[0],
                                                          values[-1], len(values))


def paint(url, runs):
    p = node("paint", "--url", url, "--runs", str(runs))
    out, _ = p.communicate(timeout=600)
    if p.returncode != 0:
        raise SystemExit("the browser failed: " + out)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def step_times(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                rows.append((float(parts[0]), float(parts[1])))
    return rows


def cpu_seconds(pid, tid=None):
    """CPU time so far, seconds: of the whole process (all its threads, ended ones included),
    or of one of its threads."""
    path = "/proc/%d/stat" % pid if tid is None else "/proc/%d/task/%d/stat" % (pid, tid)
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overhead(label, switch_on, switch_off, steps_path, pairs, block, pid):
    """Median ratios, dashboard on over off, ABBA: the training step's wall time, and the target
    process's CPU time per step (every thread: training, sampler, the control server answering
    the dashboard), which the machine's other load moves far less."""
    windows = []  # (state, start, end, cpu at start, cpu at end, other threads' CPU)
    order = []
    for i in range(pairs):
        order += [True, False] if i % 2 == 0 else [False, True]
    for on in order:
        (switch_on if on else switch_off)()
        time.sleep(1.0)  # the switch settles
        start, cpu0, main0 = time.perf_counter(), cpu_seconds(pid), cpu_seconds(pid, pid)
        time.sleep(block - 1.0)
        end, cpu1, main1 = time.perf_counter(), cpu_seconds(pid), cpu_seconds(pid, pid)
        windows.append((on, start, end, cpu0, cpu1, (cpu1 - cpu0 - (main1 - main0)) / (end - start)))
    switch_off()
    time.sleep(0.5)
    rows = step_times(steps_path)
    ratios, cpu_ratios, on_ms, off_ms, extra = [], [], [], [], []
    for i in range(0, len(windows), 2):
        meds, cpu, other = {}, {}, {}
        for on, a, b, c0, c1, rest in windows[i:i + 2]:
            other[on] = rest
            d = [dur for t, dur in rows if a <= t <= b]
            if len(d) < 10:
                raise SystemExit("only %d steps in a %s window" % (len(d), "on" if on else "off"))
            meds[on] = statistics.median(d)
            cpu[on] = (c1 - c0) / len(d)
        ratios.append(meds[True] / meds[False])
        cpu_ratios.append(cpu[True] / cpu[False])
        extra.append((other[True] - other[False]) * 1e3)
        on_ms.append(meds[True] * 1e3)
        off_ms.append(meds[False] * 1e3)
    ratios.sort()
    cpu_ratios.sort()
    extra.sort()
    print("  %s: step time open/closed median %.3f (min %.3f, max %.3f); target CPU per step "
          "open/closed median %.3f (min %.3f, max %.3f); the target's threads other than the "
          "training one, CPU open minus closed: median %.1f ms/s (min %.1f, max %.1f); %d pairs; "
          "median step %.2f ms closed, %.2f ms open" % (
              label, statistics.median(ratios), ratios[0], ratios[-1],
              statistics.median(cpu_ratios), cpu_ratios[0], cpu_ratios[-1],
              statistics.median(extra), extra[0], extra[-1], len(ratios),
              statistics.median(off_ms), statistics.median(on_ms)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=100000)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--block", type=float, default=6.0)
    p.add_argument("--hz", type=int, default=200)
    p.add_argument("--skip-paint", action="store_true", help="only the step time (part 2)")
    p.add_argument("--target", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.target:
        return target(args.target)
    if not (NODE_MODULES / "playwright-core").exists():
        raise SystemExit("playwright-core is missing: run `make test-assets`")

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="probing-bench-web-"))
    env = dict(os.environ, PROBING_DATA_DIR=str(tmp / "data"),
               PYTHONUSERBASE=str(ROOT / "build" / "pyuser"))
    env.pop("PYTHONPATH", None)
    steps = tmp / "steps.txt"
    train = subprocess.Popen(["/usr/bin/python3", __file__, "--target", str(steps)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True,
                             env=dict(env, PROBING="1", PROBING_SAMPLER_HZ=str(args.hz)))
    procs = [train]
    try:
        assert train.stdout.readline().strip() == "ready"
        web, url = start_web(env)
        procs.append(web)
        page = "%sp/%d" % (url, train.pid)
        deadline = time.time() + 900
        samples = 0
        while samples < args.samples:
            if time.time() > deadline:
                raise SystemExit("the rings hold only %d samples after 15 minutes" % samples)
            time.sleep(2)
            now = get("%sapi/p/%d/overview" % (url, train.pid))["samples"]
            if now <= samples and samples > 0:
                raise SystemExit("the rings hold no more than %d samples (they wrap): ask for "
                                 "fewer with --samples" % samples)
            samples = now
        print("the rings hold %d stack samples (9 threads at %d Hz), %d steps" % (
            samples, args.hz, get("%sapi/p/%d/overview" % (url, train.pid))["steps"]))

        # 1. First paint, warm (this dashboard has decoded the rings) and cold (fresh ones).
        if not args.skip_paint:
            first_paint(args, env, page, train.pid)
        # 2. What an open page costs the target.
        overheads(args, url, page, train.pid, steps, procs)
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def first_paint(args, env, page, pid):
    warm = paint(page, args.runs)
    cold = []
    for _ in range(args.runs):
        fresh, fresh_url = start_web(env)
        try:
            cold += paint("%sp/%d" % (fresh_url, pid), 1)
        finally:
            stop(fresh)
    print("first paint of /p/%d in Chromium, from navigation start:" % pid)
    for label, runs in [("cold (a fresh probing web each run)", cold),
                        ("warm (the same probing web)", warm)]:
        print("  %s: first contentful paint %s, every section drawn %s" % (
            label, summary([r["fcp_ms"] for r in runs], " ms"),
            summary([r["ready_ms"] for r in runs], " ms")))
    r = cold[0]
    app_js = sorted(APP.rglob("*.js"))
    local_gz = sum(len(gzip.compress(f.read_bytes(), 9)) for f in app_js)
    print("JavaScript per page: %d files, %d bytes on the wire (gzip), %d bytes unpacked "
          "(the app's %d modules gzipped one by one here: %d bytes)" % (
              r["js_files"], r["js_wire_bytes"], r["js_bytes"], len(app_js), local_gz))


def overheads(args, url, page, pid, steps, procs):
    print("the target's step time and CPU per step, dashboard page open (refreshing every "
          "second) over closed:")
    browser = node("hold", "--url", page)
    procs.append(browser)
    assert browser.stdout.readline().strip() == "started"

    def command(c, answer):
        browser.stdin.write(c + "\n")
        browser.stdin.flush()
        got = browser.stdout.readline().strip()
        if got != answer:
            raise SystemExit("the browser said %r to %s" % (got, c))

    state = {"open": False}

    def browser_on():
        if not state["open"]:
            command("open", "opened")
            state["open"] = True

    def browser_off():
        if state["open"]:
            command("close", "closed")
            state["open"] = False

    overhead("(a) Chromium on this machine", browser_on, browser_off, steps, args.pairs,
             args.block, pid)
    browser.stdin.write("quit\n")
    browser.stdin.flush()
    browser.wait(timeout=30)

    polling = threading.Event()
    api = "%sapi/p/%d/" % (url, pid)
    views = ["overview", "stacks", "flame?seconds=10", "steps?last=100", "memory?seconds=300",
             "variables"]

    def poller():
        while True:
            polling.wait()
            began = time.time()
            threads = [threading.Thread(target=get, args=(api + v,)) for v in views]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(max(0.0, 1.0 - (time.time() - began)))

    threading.Thread(target=poller, daemon=True).start()
    overhead("(b) the page's requests from a light client", polling.set, polling.clear, steps,
             args.pairs, args.block, pid)


if __name__ == "__main__":
    sys.exit(main())
