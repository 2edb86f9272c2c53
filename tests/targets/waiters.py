"""A busy main thread beside idle ones: one waits on an Event, one on an empty queue.Queue."""
import queue
import sys
import threading
import time


def inner_work(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


if __name__ == "__main__":
    stop = threading.Event()
    q = queue.Queue()
    threading.Thread(target=stop.wait, name="event-waiter", daemon=True).start()
    threading.Thread(target=q.get, name="queue-waiter", daemon=True).start()
    print("ready", flush=True)
    deadline = time.time() + (float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
    while time.time() < deadline:
        inner_work(10000)
    stop.set()
