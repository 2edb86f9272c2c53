"""Grows a list at a known line (GROW-LINE) and churns short-lived objects at another
(CHURN-LINE), for `probing memory --top`. Runs for argv[1] seconds (default 30).
argv[2]: "traced" starts the program's own tracemalloc first; "broken" makes tracemalloc
unimportable (sys.modules["tracemalloc"] = None)."""
import sys
import time


class Keeper:
    def __init__(self):
        self.kept = []

    def grow(self):
        if len(self.kept) < 200000:
            self.kept.append("x" * 1000 + str(len(self.kept)))  # GROW-LINE


def churn():
    scratch = [str(i) * 20 for i in range(200)]  # CHURN-LINE
    return len(scratch)


if __name__ == "__main__":
    mode = sys.argv[2] if len(sys.argv) > 2 else ""
    if mode == "traced":
        import tracemalloc

        tracemalloc.start()
    elif mode == "broken":
        sys.modules["tracemalloc"] = None
    keeper = Keeper()
    print("ready", flush=True)
    deadline = time.time() + (float(sys.argv[1]) if len(sys.argv) > 1 else 30.0)
    while time.time() < deadline:
        keeper.grow()
        churn()
        time.sleep(0.001)
