"""A target for native backtraces: the main thread sleeps in time.sleep and one thread blocks
every signal. argv[2] adds: `dlopen`, a thread inside dlopen (holding the loader lock) of a
library whose constructor sleeps; `hog`, the main thread holds the GIL in C (a catastrophic
regex). argv[1]: a directory to build the slow library in (needs cc)."""
import ctypes
import os
import re
import subprocess
import sys
import threading
import time

# Sleeps 8 s in its constructor, going back to sleep when a signal cuts it short (as C code
# that sleeps must: a native backtrace interrupts the call once).
SLOW_LIB = r"""
#include <time.h>
__attribute__((constructor)) static void probing_test_slow_init(void) {
  struct timespec left = {8, 0};
  while (nanosleep(&left, &left) != 0) {}
}
"""


def in_dlopen(path):
    ctypes.CDLL(path)  # DLOPEN-LINE


def signals_blocked():
    libc = ctypes.CDLL(None)
    every = ctypes.create_string_buffer(b"\xff" * 128)
    libc.pthread_sigmask(0, every, None)  # SIG_BLOCK every signal for this thread
    time.sleep(60)  # BLOCKED-LINE


def sleeper():
    time.sleep(60)  # MAIN-LINE


if __name__ == "__main__":
    src = os.path.join(sys.argv[1], "slow.c")
    lib = os.path.join(sys.argv[1], "libprobingslow.so")
    with open(src, "w") as f:
        f.write(SLOW_LIB)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", lib, src], check=True)
    threading.Thread(target=signals_blocked, name="blocked", daemon=True).start()
    time.sleep(0.3)
    print("ready", flush=True)
    # Last: on Python <= 3.11 ctypes holds the GIL through dlopen, so nothing else runs then.
    mode = sys.argv[2] if len(sys.argv) > 2 else "plain"
    if mode == "dlopen":
        threading.Thread(target=in_dlopen, args=(lib,), name="loader", daemon=True).start()
    if mode == "hog":
        re.match(r"(a+)+$", "a" * 29 + "!")  # HOG-LINE
    sleeper()
