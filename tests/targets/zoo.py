"""Named threads and methods of the same name: three threads named early-0..2 start at once and
two more, late-0..1, a little later; early ones graze as Zebra, late ones as Quokka. Every
thread runs a pure-Python `for` loop, so they take turns with the GIL (most samples find a
thread waiting for it in its loop). argv: SECONDS."""
import sys
import threading
import time

stop = threading.Event()


class Zebra:
    def graze(self):  # ZEBRA-DEF
        total = 0
        while not stop.is_set():  # ZEBRA-WHILE
            for i in range(1000):  # ZEBRA-FOR
                total += i  # ZEBRA-LINE
        return total


class Quokka:
    def graze(self):  # QUOKKA-DEF
        total = 0
        while not stop.is_set():  # QUOKKA-WHILE
            for i in range(1000):  # QUOKKA-FOR
                total += i  # QUOKKA-LINE
        return total


if __name__ == "__main__":
    threads = [threading.Thread(target=Zebra().graze, name="early-%d" % i) for i in range(3)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    time.sleep(0.3)
    late = [threading.Thread(target=Quokka().graze, name="late-%d" % i) for i in range(2)]
    for t in late:
        t.start()
    time.sleep(float(sys.argv[1]))
    stop.set()
    for t in threads + late:
        t.join()
