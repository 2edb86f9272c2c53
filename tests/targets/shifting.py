"""Two busy functions sharing the main thread's time: `python3 shifting.py SECONDS SHARE`
spends SHARE (0..1) of each round in grows() and the rest in steady(). Two runs with other
shares are what `probing-analyze --diff` compares."""
import sys
import time


def spin(seconds):
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def grows(seconds):
    return spin(seconds)


def steady(seconds):
    return spin(seconds)


def main(seconds, share):
    deadline = time.time() + seconds
    while time.time() < deadline:
        grows(0.01 * share)
        steady(0.01 * (1 - share))


if __name__ == "__main__":
    print("ready", flush=True)
    main(float(sys.argv[1]), float(sys.argv[2]))
