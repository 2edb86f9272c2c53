"""A stack that never holds still: the main thread recurses to a depth that swings between 1 and
20 (pure Python, no C calls in between), returns, and starts again. A sample that mixes two
moments of this stack shows recursion frames that are not contiguous, more than 20 of them, or no
<module> at the bottom. argv: SECONDS (0: until killed)."""
import sys
import time


def rec(n, depth):
    if n < depth:
        return rec(n + 1, depth)  # REC-LINE
    return leaf(n)  # LEAF-CALL


def leaf(n):
    total = 0
    for i in range(n):  # LEAF-FOR
        total += i  # LEAF-LINE
    return total


def main(seconds):
    deadline = time.time() + seconds if seconds > 0 else float("inf")
    while True:
        for i in range(200):
            rec(1, i * 7 % 20 + 1)  # MAIN-LINE (depths 1..20, in a jumping order)
        if time.time() > deadline:
            break


if __name__ == "__main__":
    print("ready", flush=True)
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0)  # MODULE-LINE
