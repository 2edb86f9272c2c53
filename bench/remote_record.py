"""Does a remote `probing record` keep up? A 20-thread target (tests/targets/many_threads.py)
sampled at --hz (default 1000), recorded for --seconds twice at once: over TCP
(`probing -t 127.0.0.1:PORT record`, every segment fetched with GET /segments) and by pid (the
rings read in place), with the same --interval. Reports, for each: segments, events, lost
segments and events per second, and the remote one's events over the local one's (1.00 means it
missed nothing the local one saw).

    /usr/bin/python3 bench/remote_record.py [--seconds 20] [--hz 1000] [--interval 0.1]
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import tempfile
import time

from probing_bench import free_port, start_target

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROBING = ROOT / "build" / "bin" / "probing"
ANALYZE = ROOT / "build" / "bin" / "probing-analyze"


def stack_events(path, env):
    r = subprocess.run([str(ANALYZE), str(path), "--format", "json",
                        "SELECT count(DISTINCT sample_id) AS n FROM python.stacks"],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout)[0]["n"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--hz", type=int, default=1000)
    p.add_argument("--interval", type=float, default=0.1)
    args = p.parse_args()
    data = tempfile.mkdtemp(prefix="probing-bench-remote-")
    port = free_port()
    env = dict(os.environ, PROBING_DATA_DIR=data, PROBING_AUTH_TOKEN="bench")
    target = start_target("many_threads.py", [3600], data, args.hz, port)
    try:
        time.sleep(1)
        outs = {"remote": os.path.join(data, "remote.ptrace"), "local": os.path.join(data, "local.ptrace")}
        targets = {"remote": "127.0.0.1:%d" % port, "local": str(target.pid)}
        recs = {k: subprocess.Popen([str(PROBING), "-t", targets[k], "record", "-o", outs[k],
                                     "--duration", str(args.seconds), "--interval", str(args.interval)],
                                    stderr=subprocess.PIPE, text=True, env=env)
                for k in outs}
        results = {}
        for k, r in recs.items():
            _, err = r.communicate(timeout=args.seconds + 120)
            if r.returncode != 0:
                raise SystemExit("%s recording failed: %s" % (k, err.strip()))
            m = re.search(r"recorded (\d+) segments \((\d+) events", err)
            lost = re.search(r"(\d+) segment\(s\) were overwritten", err)
            results[k] = (int(m.group(1)), int(m.group(2)), int(lost.group(1)) if lost else 0,
                          stack_events(outs[k], env))
        print("20 threads at %d Hz, %.0f s, --interval %g" % (args.hz, args.seconds, args.interval))
        print("%-8s %10s %12s %6s %14s %12s" % ("record", "segments", "events", "lost",
                                                "stack samples", "events/s"))
        for k, (segs, events, lost, samples) in results.items():
            print("%-8s %10d %12d %6d %14d %12.0f" % (k, segs, events, lost, samples,
                                                      events / args.seconds))
        print("remote / local events: %.3f" % (results["remote"][1] / max(1, results["local"][1])))
    finally:
        target.kill()
        target.wait()


if __name__ == "__main__":
    main()
