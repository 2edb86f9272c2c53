"""Idle: the main thread sleeps in idle_main(); three named threads wait on an Event in waiter()."""
import sys
import threading
import time

stop = threading.Event()


def waiter():
    stop.wait()  # WAITER-LINE


def idle_main(seconds):
    time.sleep(seconds)  # IDLE-LINE


if __name__ == "__main__":
    threads = [threading.Thread(target=waiter, name="waiter-%d" % i) for i in range(3)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    idle_main(float(sys.argv[1]))
    stop.set()
    for t in threads:
        t.join()
    sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
