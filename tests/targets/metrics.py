"""A program with a custom table and metrics: `ticks` counts loop turns, `broken` always raises,
`nan` is not a number. Runs for argv[1] seconds (default 60)."""
import sys
import time

import probing

ticks = 0


@probing.metric("ticks")
def read_ticks():
    return ticks


@probing.metric("broken")
def broken():
    raise RuntimeError("this metric is broken on purpose")


@probing.metric("nan")
def nan():
    return float("nan")


@probing.table("progress")
def progress():
    return [{"what": "ticks", "value": ticks}]


if __name__ == "__main__":
    print("ready", flush=True)
    end = time.time() + (float(sys.argv[1]) if len(sys.argv) > 1 else 60)
    while time.time() < end:
        ticks += 1
        time.sleep(0.01)
