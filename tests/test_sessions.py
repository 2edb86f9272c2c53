"""One target, every kind of session: by pid, over TCP with its token, the ring directory it left
after SIGKILL, and a recording of it. The same query suite gives the same rows (within a time
window fixed before the comparison), the same columns and the same errors through each; a
remote target answers ring tables (never an empty table), refuses a wrong token, serves while it
holds the GIL, and a remote recording of a target that dies mid-way keeps what was sent."""
import json
import os
import signal
import subprocess
import time

from conftest import free_port, run_probing as probing
from control_client import wait_for_server

PY = "/usr/bin/python3"


def rows(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


SUITE = [
    "SELECT count(*) AS n, count(DISTINCT sample_id) AS samples FROM python.stacks WHERE ts <= {t}",
    "SELECT thread_name, func, lineno, count(*) AS n FROM python.stacks WHERE ts <= {t} "
    "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    "SELECT count(*) AS n, min(rss) > 0 AS rss FROM python.memory WHERE ts <= {t}",
    "SELECT * FROM system.process",
]
ERRORS = [
    "SELECT * FROM python.no_such_table",
    "SELEC 1",
    "SELECT no_such_column FROM python.stacks",
]


def suite(probing_bin, target, t0, token=None):
    out = []
    for q in SUITE:
        r = probing(probing_bin, "-t", target, "--format", "json", "query", q.format(t=t0),
                    token=token)
        out.append(rows(r))
    for q in ERRORS:
        r = probing(probing_bin, "-t", target, "query", q, token=token)
        assert r.returncode == 1, (target, q, r.stdout)
        out.append(r.stderr.strip())
    return out


def test_the_same_answers_through_every_kind_of_session(target, tmp_path, monkeypatch, probing_bin):
    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "data"))
    port = free_port()
    t = target(PY, "serve.py", extra_env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "tok"})
    t.wait_ready()
    wait_for_server(t.proc.pid)
    pid, addr = t.proc.pid, "127.0.0.1:%d" % port
    time.sleep(2)  # some seconds of samples
    r = probing(probing_bin, "-t", pid, "config", "probing.sampler.enabled=false")
    assert r.returncode == 0, r.stderr
    time.sleep(0.3)  # a sampler pass under way finishes
    t0 = time.time()
    time.sleep(1.5)  # memory samples after t0 exist, and stay out of the window

    by_pid = suite(probing_bin, pid, t0)
    assert by_pid[0][0]["n"] > 100
    assert by_pid[2][0]["n"] >= 2 and by_pid[2][0]["rss"] == 1
    assert by_pid[4].startswith("probing: SQL: no such table: python.no_such_table"), by_pid[4]
    by_tcp = suite(probing_bin, addr, t0, token="tok")
    assert by_tcp == by_pid

    rec = tmp_path / "rec.ptrace"  # recorded over TCP: the remote record path
    r = probing(probing_bin, "-t", addr, "record", "-o", rec, "--duration", "1", token="tok")
    assert r.returncode == 0, r.stderr
    assert "from %s" % addr in r.stderr

    os.kill(pid, signal.SIGKILL)
    t.proc.wait()
    ring_dir = tmp_path / "data" / str(pid)
    by_dir = suite(probing_bin, ring_dir, t0)
    by_rec = suite(probing_bin, rec, t0)
    # A live process also names its own tables (@probing.table) in an unknown table's error;
    # nothing else may differ.
    own = "; the process's own tables (@probing.table): "
    live = [a.split(own)[0] if isinstance(a, str) else a for a in by_pid]
    for name, got in (("ring directory", by_dir), ("recording", by_rec)):
        for i, q in enumerate(SUITE + ERRORS):
            assert got[i] == live[i], "%s differs on %s" % (name, q)
    # By pid, the dead process's rings answer as its directory does.
    assert suite(probing_bin, pid, t0) == live


def test_errors_name_what_a_target_cannot_do(served_tcp, tmp_path, probing_bin):
    t, addr = served_tcp
    r = probing(probing_bin, "-t", addr, "query", "SELECT count(*) FROM python.stacks",
                token="wrong")
    assert r.returncode == 1
    assert r.stderr == ("probing: a valid token is required: send Authorization: Bearer <token> "
                        "(probing --token or PROBING_AUTH_TOKEN); a recorder started without "
                        "PROBING_AUTH_TOKEN made one, in the file token of its ring directory, "
                        "readable by its user only\n")
    r = probing(probing_bin, "-t", addr, "query", "SELECT count(*) FROM python.stacks")
    assert r.returncode == 1 and "a valid token is required" in r.stderr
    rec = tmp_path / "r.ptrace"
    r = probing(probing_bin, "-t", t.proc.pid, "record", "-o", rec, "--duration", "0.5")
    assert r.returncode == 0, r.stderr
    for command in (["backtrace"], ["eval", "1"], ["config"], ["info"], ["repl"]):
        r = probing(probing_bin, "-t", rec, *command)
        assert r.returncode == 1, command
        assert "needs a live process, and %s is a recording" % rec in r.stderr, r.stderr
    r = probing(probing_bin, "-t", rec, "record", "-o", tmp_path / "again.ptrace")
    assert r.returncode == 1 and "already a recording" in r.stderr
    # python.backtrace from a recording is an error, never an empty table.
    r = probing(probing_bin, "-t", rec, "query", "SELECT count(*) FROM python.backtrace")
    assert r.returncode == 1 and "needs a live process" in r.stderr
    r = probing(probing_bin, "-t", tmp_path / "nothing.ptrace", "query", "SELECT 1")
    assert r.returncode == 1 and "no such file or directory" in r.stderr
    r = probing(probing_bin, "-t", "not-a-target", "info")
    assert r.returncode == 1 and "neither a pid, host:port" in r.stderr
    # The target may come first, as the seeds write it.
    r = probing(probing_bin, t.proc.pid, "info")
    assert r.returncode == 0 and str(t.proc.pid) in r.stdout
    r = probing(probing_bin, addr, "query", "SELECT count(*) AS n FROM python.memory",
                "--format", "json", token="tok")
    assert rows(r)[0]["n"] >= 1


def test_remote_targets_serve_segments_while_holding_the_gil(target, tmp_path, monkeypatch,
                                                            probing_bin):
    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "data"))
    port = free_port()
    t = target(PY, "serve.py", "hog",
               extra_env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "tok"})
    t.wait_ready()
    wait_for_server(t.proc.pid)
    time.sleep(1.5)
    addr = "127.0.0.1:%d" % port
    began = time.time()
    r = probing(probing_bin, "-t", addr, "--format", "json", "query",
                "SELECT count(*) AS n FROM python.stacks WHERE holds_gil = 1 "
                "AND func = 'main_loop'", token="tok")
    assert time.time() - began < 5  # no GIL was waited for
    assert rows(r)[0]["n"] > 0
    for command in (["memory"], ["flamegraph", "--folded"]):
        r = probing(probing_bin, "-t", addr, *command, token="tok")
        assert r.returncode == 0, r.stderr
    r = probing(probing_bin, "-t", addr, "flamegraph", "--folded", token="tok")
    assert "main_loop" in r.stdout


def test_a_remote_recording_keeps_what_was_sent_when_the_target_dies(target, tmp_path,
                                                                     monkeypatch, probing_bin,
                                                                     analyze_bin):
    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "data"))
    port = free_port()
    t = target(PY, "serve.py",
               extra_env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "tok"})
    t.wait_ready()
    wait_for_server(t.proc.pid)
    out = tmp_path / "remote.ptrace"
    env = dict(os.environ, PROBING_AUTH_TOKEN="tok")
    rec = subprocess.Popen([str(probing_bin), "-t", "127.0.0.1:%d" % port, "record", "-o",
                            str(out), "--interval", "0.2"], stderr=subprocess.PIPE, text=True,
                           env=env)
    try:
        time.sleep(3)
        t.proc.kill()
        t.proc.wait()
        _, err = rec.communicate(timeout=60)
    finally:
        if rec.poll() is None:
            rec.kill()
    assert rec.returncode == 0, err
    assert "stopped answering" in err
    r = subprocess.run([str(analyze_bin), out, "SELECT count(*) AS n FROM python.stacks",
                        "--format", "json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["n"] > 100  # about 2 s of 4 threads at 100 Hz
    r = subprocess.run([str(analyze_bin), out, "--stats"], capture_output=True, text=True,
                       timeout=60)
    assert "yes" in r.stdout and "no (scanned)" not in r.stdout  # closed with its index


def test_a_query_right_after_inject_is_not_empty(tmp_path, monkeypatch, probing_bin):
    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "data"))
    p = subprocess.Popen([PY, "-c", "import time\nwhile True: time.sleep(0.01)"])
    try:
        time.sleep(0.5)
        r = probing(probing_bin, "-t", p.pid, "inject")
        assert r.returncode == 0, r.stderr
        time.sleep(0.2)  # well under the recorder's 1 s sealing interval
        r = probing(probing_bin, "-t", p.pid, "--format", "json", "query",
                    "SELECT count(*) AS n FROM python.stacks")
        assert rows(r)[0]["n"] > 0
    finally:
        p.kill()
        p.wait()
