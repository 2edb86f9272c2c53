"""Two busy functions sharing the main thread's time: `python3 shifting.py SECONDS SHARE`
spends SHARE (0..1) of each round in grows() and the rest in steady(). Two runs with other
shares are what `probing-analyze --diff` compares. Rounds last 3 to 30 ms at random: rounds of
a fixed length in step with the sampler's period would show it one function only."""
import random
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
        round_s = random.uniform(0.003, 0.03)
        grows(round_s * share)
        steady(round_s * (1 - share))


if __name__ == "__main__":
    print("ready", flush=True)
    main(float(sys.argv[1]), float(sys.argv[2]))
