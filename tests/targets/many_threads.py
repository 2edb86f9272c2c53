"""Twenty threads, named t00..t19, each sleeping in its own loop in spin_wait()."""
import sys
import threading
import time

stop = threading.Event()


def spin_wait():
    while not stop.is_set():
        time.sleep(0.01)  # THREAD-LINE


if __name__ == "__main__":
    threads = [threading.Thread(target=spin_wait, name="t%02d" % i) for i in range(20)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    time.sleep(float(sys.argv[1]))
    stop.set()
    for t in threads:
        t.join()
