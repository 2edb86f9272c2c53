"""Round-trip latency of the recorder's control server, and what client load costs the target.

Latency: a 20-thread target (tests/targets/many_threads.py) with the recorder on; 200 requests
each of GET /info, POST /eval "1+1", GET /backtrace and GET /backtrace?native=1 (and how long
each thread was held for it) over the Unix socket, one keep-alive
connection (and, for info, a new connection per request); median and p99.

Load: samples/train_mlp.py with the recorder on; windows of ~3 s alternate with and without 8
clients sending 200 mixed requests (25 each, spread over the window: the issue's scenario); the
target's own ms/step lines are averaged per window; the figure is the median of per-pair ratios
(loaded / quiet), min and max. --flood sends as fast as the clients can instead.

Idle connections: the owner's GET /info, each on a new connection, while --idle-connections
connections (opened, nothing sent) are held against the server, and while none are; --blocks
blocks of 50 requests in turn (ABBA); the medians of each, and the ratio of the medians.

    python3 bench/control_latency.py [--requests 200] [--pairs 6] [--idle-connections 40]
                                     [--only latency|load|idle]
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Unix(http.client.HTTPConnection):
    def __init__(self, pid):
        super().__init__("localhost", timeout=30)
        self.pid = pid

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect("\0probing-%d" % self.pid)


def start(args):
    env = dict(os.environ, PROBING="1", PYTHONUSERBASE=os.path.join(ROOT, "build", "pyuser"),
               PROBING_DATA_DIR=tempfile.mkdtemp(prefix="probing-bench-"))
    p = subprocess.Popen([sys.executable] + args, stdout=subprocess.PIPE, env=env, text=True)
    for _ in range(600):
        try:
            c = Unix(p.pid)
            c.request("GET", "/info")
            c.getresponse().read()
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("the target's control server did not answer")


def timed(conn, method, path, body):
    t = time.perf_counter()
    conn.request(method, path, body=body)
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status
    return time.perf_counter() - t


def latency(n):
    p = start([os.path.join(ROOT, "tests", "targets", "many_threads.py"), "600"])
    try:
        p.stdout.readline()
        conn = Unix(p.pid)
        cases = [("info", "GET", "/info", None),
                 ("eval 1+1", "POST", "/eval", json.dumps({"code": "1+1"})),
                 ("backtrace (21 threads)", "GET", "/backtrace", None),
                 ("backtrace native", "GET", "/backtrace?native=1", None)]
        print("request                      median      p99   [%d requests, keep-alive]" % n)
        for name, method, path, body in cases:
            for _ in range(20):
                timed(conn, method, path, body)
            xs = sorted(timed(conn, method, path, body) for _ in range(n))
            print("%-26s %7.2f ms %7.2f ms" % (name, statistics.median(xs) * 1e3, xs[int(n * 0.99) - 1] * 1e3))
        stops = []
        for _ in range(20):
            conn.request("GET", "/backtrace?native=1")
            stops += [t["stopped_us"] for t in json.loads(conn.getresponse().read())["threads"]
                      if "stopped_us" in t]
        stops.sort()
        print("%-26s %7.2f ms %7.2f ms" % ("native: each thread held", statistics.median(stops) / 1e3,
                                           stops[int(len(stops) * 0.99) - 1] / 1e3))
        xs = []
        for _ in range(n):
            c = Unix(p.pid)
            xs.append(timed(c, "GET", "/info", None))
            c.close()
        xs.sort()
        print("%-26s %7.2f ms %7.2f ms" % ("info, new connection", statistics.median(xs) * 1e3,
                                           xs[int(n * 0.99) - 1] * 1e3))
    finally:
        p.kill()
        p.wait()


def load(pairs, window, flood):
    p = start([os.path.join(ROOT, "samples", "train_mlp.py")])
    lines, lock = [], threading.Lock()

    def reader():
        for line in p.stdout:
            if "ms/step" in line:
                with lock:
                    lines.append((time.monotonic(), float(line.split()[-2])))

    threading.Thread(target=reader, daemon=True).start()
    stop = threading.Event()
    calls = [("GET", "/info", None), ("POST", "/eval", json.dumps({"code": "sum(range(1000))"})),
             ("GET", "/backtrace", None), ("GET", "/backtrace?locals=1", None), ("GET", "/config", None)]

    def client(i):
        c, k = Unix(p.pid), i
        per_client = 25
        t0 = time.monotonic()
        while not stop.is_set() and (flood or k - i < per_client):
            timed(c, *calls[k % len(calls)])
            k += 1
            if not flood:
                time.sleep(max(0.0, t0 + (k - i) * window / per_client - time.monotonic()))
        return k - i

    def steps(t0, t1):
        with lock:
            xs = [ms for t, ms in lines if t0 <= t < t1]
        return statistics.mean(xs) if xs else None

    try:
        time.sleep(3)  # warm-up
        ratios, sent = [], []
        for i in range(pairs):
            order = [False, True] if i % 2 == 0 else [True, False]
            got = {}
            for loaded in order:
                t0 = time.monotonic()
                if loaded:
                    stop.clear()
                    pool = concurrent.futures.ThreadPoolExecutor(8)
                    futs = [pool.submit(client, k) for k in range(8)]
                    time.sleep(window)
                    stop.set()
                    sent.append(sum(f.result() for f in futs))
                    pool.shutdown()
                else:
                    time.sleep(window)
                got[loaded] = steps(t0 + 0.3, time.monotonic())
            if got[True] and got[False]:
                ratios.append(got[True] / got[False])
        print("training step under 8 clients' mixed requests (%d per window%s): ratio %.3f "
              "(min %.3f, max %.3f) over %d pairs of %g s windows"
              % (statistics.median(sent), ", flooding" if flood else "", statistics.median(ratios),
                 min(ratios), max(ratios), len(ratios), window))
    finally:
        p.kill()
        p.wait()


def idle_connections(held, blocks, per_block=50):
    p = start([os.path.join(ROOT, "tests", "targets", "many_threads.py"), "600"])
    try:
        p.stdout.readline()

        def block():
            xs = []
            for _ in range(per_block):
                c = Unix(p.pid)
                xs.append(timed(c, "GET", "/info", None))
                c.close()
            return xs

        with_idle, without = [], []
        for i in range(blocks):
            for idle in ((False, True) if i % 2 == 0 else (True, False)):
                socks = []
                if idle:
                    for _ in range(held):
                        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        s.connect("\0probing-%d" % p.pid)
                        socks.append(s)
                    time.sleep(0.05)  # the server has accepted them
                (with_idle if idle else without).extend(block())
                for s in socks:
                    s.close()
        a, b = statistics.median(with_idle), statistics.median(without)
        print("info on a new connection, %d idle connections held: median %.2f ms (p99 %.2f ms); "
              "none held: median %.2f ms (p99 %.2f ms); ratio %.2f  [%d blocks of %d]"
              % (held, a * 1e3, sorted(with_idle)[int(len(with_idle) * 0.99) - 1] * 1e3, b * 1e3,
                 sorted(without)[int(len(without) * 0.99) - 1] * 1e3, a / b, blocks, per_block))
    finally:
        p.kill()
        p.wait()


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--requests", type=int, default=200)
    a.add_argument("--pairs", type=int, default=6)
    a.add_argument("--window", type=float, default=3.0)
    a.add_argument("--flood", action="store_true", help="clients send without pause")
    a.add_argument("--idle-connections", type=int, default=40)
    a.add_argument("--blocks", type=int, default=10)
    a.add_argument("--only", choices=("latency", "load", "idle"))
    args = a.parse_args()
    if args.only in (None, "latency"):
        latency(args.requests)
    if args.only in (None, "idle"):
        idle_connections(args.idle_connections, args.blocks)
    if args.only in (None, "load"):
        load(args.pairs, args.window, args.flood)


if __name__ == "__main__":
    main()
