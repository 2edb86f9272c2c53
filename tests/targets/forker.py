"""Forks: the child runs child_work() for a while and exits 7; the parent waits and exits 0."""
import os
import sys
import time


def child_work(seconds):
    deadline = time.time() + seconds
    n = 0
    while time.time() < deadline:
        n += 1  # CHILD-LINE
    return n


if __name__ == "__main__":
    pid = os.fork()
    if pid == 0:
        child_work(1.5)
        os._exit(7)
    print("child", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    sys.exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7 else 1)
