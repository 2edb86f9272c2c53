"""A target for `probing inject`, started without the recorder: prints "ready", does MODE for
SECONDS, prints what it did and exits with code 7. argv: DIR MODE SECONDS, DIR being where the
C helper is built (modes malloc, epoll and loader need cc).

  sleep    the main thread in time.sleep
  pipe     the main thread blocked reading a pipe, written to after SECONDS
  busy     a pure Python loop
  threads  20 threads, each counting and sleeping 10 ms at a time
  malloc   8 threads hammering malloc/free in C (ctypes releases the GIL)
  epoll    the main thread in C, in epoll_wait; prints how often it failed with EINTR
  loader   the main thread inside dlopen of a library whose constructor sleeps SECONDS
           (holding the loader lock); with PROBING_TEST_EXIT=1 the constructor then exits(3)
  torch    a small PyTorch training loop
"""
import ctypes
import os
import subprocess
import sys
import threading
import time

HELPER = r"""
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

long hammer(double seconds) {
  void* keep[64] = {0};
  long n = 0;
  double end = now() + seconds;
  while (now() < end)
    for (int i = 0; i < 1000; ++i, ++n) {
      int k = (int)((n * 7) % 64);
      free(keep[k]);
      keep[k] = malloc(16 + (size_t)((n * 131) % 40000));
    }
  for (int k = 0; k < 64; ++k) free(keep[k]);
  return n;
}

long epoll_eintr(double seconds) {
  int ep = epoll_create1(0);
  struct epoll_event ev;
  long eintr = 0;
  double end = now() + seconds;
  while (now() < end) {
    int ms = (int)((end - now()) * 1000) + 1;
    if (epoll_wait(ep, &ev, 1, ms) < 0 && errno == EINTR) ++eintr;
  }
  close(ep);
  return eintr;
}
"""

SLOW = r"""
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
__attribute__((constructor)) static void probing_test_slow_init(void) {
  double s = atof(getenv("PROBING_TEST_SECONDS"));
  struct timespec left = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
  while (nanosleep(&left, &left) != 0) {}
  if (getenv("PROBING_TEST_EXIT") && getenv("PROBING_TEST_EXIT")[0] == '1') _exit(3);
}
"""


def build(directory, name, source):
    src = os.path.join(directory, name + ".c")
    lib = os.path.join(directory, "lib" + name + ".so")
    if not os.path.exists(lib):
        with open(src, "w") as f:
            f.write(source)
        subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", lib + ".tmp", src], check=True)
        os.rename(lib + ".tmp", lib)
    return lib


def helper(directory):
    lib = ctypes.CDLL(build(directory, "probinginjecthelper", HELPER))
    lib.hammer.argtypes = lib.epoll_eintr.argtypes = [ctypes.c_double]
    lib.hammer.restype = lib.epoll_eintr.restype = ctypes.c_long
    return lib


def run_threads(n, fn):
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    directory, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if mode in ("malloc", "epoll"):
        lib = helper(directory)
    if mode == "loader":
        slow = build(directory, "probinginjectslow", SLOW)
        os.environ["PROBING_TEST_SECONDS"] = str(seconds)
    if mode == "torch":
        import torch
    print("ready", flush=True)
    began = time.monotonic()
    if mode == "sleep":
        time.sleep(seconds)
        print("slept %.3f" % (time.monotonic() - began))
    elif mode == "pipe":
        r, w = os.pipe()
        threading.Timer(seconds, os.write, (w, b"hello")).start()
        print("read %s" % os.read(r, 100).decode())
    elif mode == "busy":
        n = 0
        while time.monotonic() - began < seconds:
            n += 1
        print("counted %d" % n)
    elif mode == "threads":
        counts = [0] * 20

        def count(i):
            while time.monotonic() - began < seconds:
                counts[i] += 1
                time.sleep(0.01)

        run_threads(20, count)
        print("threads counted %d, least %d" % (sum(counts), min(counts)))
    elif mode == "malloc":
        results = [0] * 8

        def run(i):
            results[i] = lib.hammer(seconds)

        run_threads(8, run)
        print("allocated %d, least %d" % (sum(results), min(results)))
    elif mode == "epoll":
        print("eintr %d" % lib.epoll_eintr(seconds))
    elif mode == "loader":
        ctypes.CDLL(slow)
        print("loaded after %.3f" % (time.monotonic() - began))
    elif mode == "torch":
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        steps = 0
        while time.monotonic() - began < seconds:
            x = torch.randn(16, 32)
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        print("steps %d" % steps)
    sys.stdout.flush()
    sys.exit(7)


if __name__ == "__main__":
    main()
