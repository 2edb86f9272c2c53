"""A busy pure-Python loop: the main thread spends its time in inner_work() (line marked)."""
import sys
import time


def inner_work(n):
    total = 0
    for i in range(n):
        total += i * i  # BUSY-LINE
    return total


def outer(seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        inner_work(10000)


if __name__ == "__main__":
    print("ready", flush=True)
    outer(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
    sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
