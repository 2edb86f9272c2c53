"""The PROBING=1/2 start-up hook, imported by probing.pth when PROBING is set (or PROBE, the
seeds' name for it, when PROBING is not).

PROBING=1: the recorder runs in this process only (under torchrun: in the launcher and in every
rank it starts); PROBING=2: also in its children (forked ones start their own recorder, exec'd
ones inherit PROBING=2). Anything else but 0: a warning,
and the recorder stays off. Nothing here may stop the program from running.
"""

import os
import sys


def _is_launcher():
    """torchrun, or python -m torch.distributed.run / .launch: the agent that starts the ranks
    (read from /proc: sys.argv is not always set this early)."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    for i, a in enumerate(args[:3]):
        if a.rsplit(b"/", 1)[-1] == b"torchrun" or a.endswith((b"torch/distributed/run.py",
                                                                 b"torch/distributed/launch.py")):
            return True
        if a == b"-m" and i + 1 < len(args) and args[i + 1] in (b"torch.distributed.run",
                                                                b"torch.distributed.launch"):
            return True
    return False


def _start():
    name = "PROBING" if os.environ.get("PROBING") else "PROBE"
    mode = os.environ.get(name, "0")
    if mode in ("", "0"):
        return
    if mode not in ("1", "2"):
        sys.stderr.write("probing: %s=%r is not 0, 1 or 2; the recorder stays off\n" % (name, mode))
        return
    os.environ["PROBING"] = mode  # the recorder reads its mode from PROBING
    if mode == "1" and not _is_launcher():
        # For this process only: programs it starts do not inherit the recorder. A launcher's
        # (torchrun) programs are the job's ranks: they keep PROBING=1, so every rank records.
        os.environ["PROBING"] = "0"
        if "PROBE" in os.environ:
            os.environ["PROBE"] = "0"
    try:
        import ctypes

        from probing._recorder import library_path

        lib = ctypes.CDLL(library_path())
        started = lib.probing_start() == 0
        if started:
            # With the GIL held: PyTorch tracing is ready before the program's first line.
            ctypes.PyDLL(library_path()).probing_python_setup()
        if started and not getattr(sys, "_probing_hooks_registered", False):
            # Now, before the program can fork: a child must know at once whether to start its
            # own recorder (PROBING=2). The recorder's own thread would register these too, but
            # only once it gets the GIL.
            import atexit

            atexit.register(lib.probing_shutdown)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=lib.probing_after_fork_child)
            sys._probing_hooks_registered = True
    except Exception as e:  # never let the hook break the user's program
        sys.stderr.write("probing: recorder not started: %s\n" % e)


_start()
