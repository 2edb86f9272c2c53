"""A target for the control server: named threads at known lines, a known local, a custom table
and one that raises; idles (or holds the GIL in C with `hog`) until killed."""
import re
import sys
import threading
import time

import probing

stop = threading.Event()


@probing.table("inventory")
def inventory():
    return [{"item": "apple", "count": 3, "price": 0.5}, {"item": "pear", "count": 1, "price": 2}]


@probing.table("broken")
def broken():
    raise RuntimeError("this table is broken on purpose")


def worker(n):
    marker = "worker-%d" % n  # a known local
    stop.wait()  # WORKER-LINE
    return marker


def main_loop(mode):
    if mode == "hog":
        re.match(r"(a+)+$", "a" * 29 + "!")  # HOG-LINE (about 15 s holding the GIL)
    while True:
        time.sleep(0.05)  # MAIN-LINE


if __name__ == "__main__":
    for i in range(3):
        threading.Thread(target=worker, args=(i,), name="worker-%d" % i, daemon=True).start()
    print("ready", flush=True)
    main_loop(sys.argv[1] if len(sys.argv) > 1 else "idle")
