"""One thread holds the GIL in C for seconds (a catastrophic regex); another sleeps meanwhile."""
import re
import sys
import threading
import time


def sleeper_fn():
    time.sleep(6)  # SLEEPER-LINE


def hog():
    return re.match(r"(a+)+$", "a" * 27 + "!")  # HOG-LINE


if __name__ == "__main__":
    t = threading.Thread(target=sleeper_fn, name="sleeper", daemon=True)
    t.start()
    time.sleep(0.3)
    print("ready", flush=True)
    start = time.time()
    hog()
    print("hog took %.2f" % (time.time() - start), flush=True)
    sys.exit(5)
