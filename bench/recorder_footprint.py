"""What the recorder adds to a process: resident memory, and start-up time when it is off.

RSS: an idle target (tests/targets/idle.py) started with PROBING=0 and PROBING=1 in turn;
VmRSS and RssShmem (the ring pages) read from /proc after the recorder has settled.
Start-up: `python -c pass` with the start-up hook installed but PROBING unset, against the
same interpreter without the hook, interleaved; median of per-pair ratios, min and max.

    python3 bench/recorder_footprint.py [--runs 5] [--startup-runs 40]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYUSER = os.path.join(ROOT, "build", "pyuser")


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss(probing, data_dir):
    env = dict(os.environ, PROBING=probing, PYTHONUSERBASE=PYUSER, PROBING_DATA_DIR=data_dir)
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "targets", "idle.py"), "3"],
                         stdout=subprocess.PIPE, env=env, text=True)
    try:
        p.stdout.readline()
        time.sleep(2.0)
        return status_kb(p.pid, "VmRSS"), status_kb(p.pid, "RssFile") + status_kb(p.pid, "RssShmem")
    finally:
        p.kill()
        p.wait()


def startup(with_hook):
    env = dict(os.environ, PYTHONUSERBASE=PYUSER if with_hook else "/nonexistent")
    env.pop("PROBING", None)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--startup-runs", type=int, default=40)
    args = p.parse_args()
    data = tempfile.mkdtemp(prefix="probing-bench-")
    added, mapped = [], []
    for _ in range(args.runs):
        off, off_file = rss("0", data)
        on, on_file = rss("1", data)
        added.append(on - off)
        mapped.append(on_file - off_file)
    print("RSS added by the recorder: median %.1f MB (min %.1f, max %.1f), of which file-backed "
          "pages (the rings, the library) %.1f MB"
          % (statistics.median(added) / 1024, min(added) / 1024, max(added) / 1024,
             statistics.median(mapped) / 1024))
    for _ in range(3):  # warm the page cache
        startup(True), startup(False)
    ratios, base = [], []
    for i in range(args.startup_runs):
        if i % 2:
            a, b = startup(True), startup(False)
        else:
            b, a = startup(False), startup(True)
        ratios.append(a / b)
        base.append(b)
    print("start-up with the hook installed, PROBING unset: ratio %.3f (min %.3f, max %.3f) "
          "over %d pairs; plain `python -c pass` %.1f ms"
          % (statistics.median(ratios), min(ratios), max(ratios), args.startup_runs,
             statistics.median(base) * 1e3))


if __name__ == "__main__":
    main()
