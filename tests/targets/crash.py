"""Crashes with a segmentation fault of its own (a read of address 0 through ctypes) when sent
SIGUSR1, after enabling faulthandler as argv[1] says: "none", "before" (already
enabled with -X faulthandler: nothing to do here) or "after" (enabled now, after the recorder
started, so faulthandler's handler is installed after the recorder's). Meanwhile it recurses
and returns, so the sampler reads stacks that change."""
import ctypes
import faulthandler
import signal
import sys
import threading
import time


def churn(n, stop):
    while not stop.is_set():
        def rec(k):
            return rec(k - 1) if k else 0
        rec(n)


def crash_here():
    ctypes.string_at(0)  # CRASH-LINE


if __name__ == "__main__":
    if sys.argv[1] == "after":
        faulthandler.enable()
    stop = threading.Event()
    threading.Thread(target=churn, args=(15, stop), daemon=True).start()
    signal.signal(signal.SIGUSR1, lambda *_: crash_here())
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
