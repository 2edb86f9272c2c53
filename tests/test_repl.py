"""`probing -t PID repl` driven through a real terminal (tmux: send-keys, capture-pane) against a
real target: completion computed in the target, a multi-line block, Ctrl-C on a line and while
waiting, Ctrl-D, the history file; and the same statements piped in without a terminal."""
import os
import shutil
import subprocess
import time
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is installed by scripts/install-deps")


class Terminal:
    """A tmux server of our own (its own socket) running one command in a 150x40 pane."""

    def __init__(self, command, env):
        self.socket = "probing-test-" + uuid.uuid4().hex[:8]
        self.tmux(["new-session", "-d", "-s", "t", "-x", "150", "-y", "40",
                   " ".join(command)], env=env)

    def tmux(self, args, env=None):
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              env=env, timeout=30)

    def keys(self, *keys):
        self.tmux(["send-keys", "-t", "t", *keys])

    def screen(self):
        return self.tmux(["capture-pane", "-t", "t", "-p"]).stdout

    def wait_for(self, text, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError("%r never showed; the screen:\n%s" % (text, self.screen()))

    def alive(self):
        return self.tmux(["has-session", "-t", "t"]).returncode == 0

    def close(self):
        self.tmux(["kill-server"])


@pytest.fixture
def terminal():
    opened = []

    def _open(command, env):
        t = Terminal(command, env)
        opened.append(t)
        return t

    yield _open
    for t in opened:
        t.close()


def test_repl_in_a_terminal(served, terminal, probing_bin, tmp_path):
    pid = served.proc.pid
    history = tmp_path / "history"
    env = dict(os.environ, PROBING_HISTORY=str(history))
    term = terminal([str(probing_bin), "-t", str(pid), "repl"], env)
    term.wait_for("Tab completes, Ctrl-C drops the line, Ctrl-D leaves.")
    # Completion comes from the target's namespace: `inventory` is defined in serve.py only.
    term.keys("invent", "Tab")
    screen = term.wait_for(">>> inventory(")
    if ">>> inventory()" not in screen:  # rlcompleter adds the ')' itself from Python 3.10 on
        term.keys(")")
    term.keys("Enter")
    term.wait_for("[{'item': 'apple', 'count': 3, 'price': 0.5}")
    # Several candidates are listed.
    term.keys("sys.version", "Tab", "Tab")
    term.wait_for("sys.version_info")
    term.keys("C-c")
    term.wait_for("KeyboardInterrupt")
    # A multi-line block: the target's compiler asks for more lines until the empty one.
    term.keys("total = 0", "Enter")
    term.keys("for i in range(4):", "Enter")
    term.wait_for(">>> for i in range(4):\n...")  # the continuation prompt
    term.keys("    total += i * 10", "Enter", "Enter")
    term.keys("print('total is', total)", "Enter")
    term.wait_for("total is 60")
    # Ctrl-C on a half-typed line drops it; the target is untouched.
    term.keys("this is not run", "C-c")
    term.keys("'still here'", "Enter")
    term.wait_for("'still here'\n")
    # Ctrl-C while waiting stops the waiting, not the target.
    term.keys("import time; time.sleep(2); print('slept')", "Enter")
    time.sleep(0.5)
    term.keys("C-c")
    term.wait_for("stopped waiting; the code runs on in the target")
    assert served.proc.poll() is None
    term.keys("6 * 7", "Enter")
    term.wait_for("\n42\n")  # after the sleep ends: one eval at a time in the target
    # An exception is shown as Python shows it; the session goes on.
    term.keys("1/0", "Enter")
    term.wait_for("ZeroDivisionError: division by zero")
    # Ctrl-D leaves and writes the history (one entry per statement, blocks whole).
    term.keys("C-d")
    deadline = time.time() + 10
    while term.alive() and time.time() < deadline:
        time.sleep(0.1)
    assert not term.alive()
    saved = history.read_text()
    assert "inventory()" in saved and "print('total\\040is',\\040total)" in saved
    assert "this\\040is\\040not\\040run" not in saved
    assert served.proc.poll() is None  # the target lives on


def test_repl_reads_statements_without_a_terminal(served, probing_bin):
    script = "x = 5\nfor i in range(2):\n    print('line', i * x)\n\nx * 3\nundefined_name\n"
    r = subprocess.run([str(probing_bin), "-t", str(served.proc.pid), "repl"], input=script,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "line 0\nline 5\n15\n"
    assert "NameError: name 'undefined_name' is not defined" in r.stderr
    assert ">>>" not in r.stdout  # no prompts when not on a terminal


def test_repl_errors(probing_bin, run, tmp_path):
    r = run(probing_bin, "repl")
    assert r.returncode == 2 and "repl needs -t" in r.stderr
    r = run(probing_bin, "-t", "4194304", "repl")
    assert r.returncode == 1 and "no such process 4194304" in r.stderr
