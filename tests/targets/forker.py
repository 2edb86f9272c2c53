"""Forks: the child runs child_work() for argv[1] seconds (default 1.5) and leaves without
running any exit handler: by os._exit(7) (argv[2] "exit", the default) or killed by SIGKILL
("kill"); the parent waits and exits 0 when the child ended that way."""
import os
import signal
import sys
import time


def child_work(seconds):
    deadline = time.time() + seconds
    n = 0
    while time.time() < deadline:
        n += 1  # CHILD-LINE
    return n


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    how = sys.argv[2] if len(sys.argv) > 2 else "exit"
    pid = os.fork()
    if pid == 0:
        child_work(seconds)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(7)
    print("child", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    if how == "kill":
        sys.exit(0 if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else 1)
    sys.exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7 else 1)
