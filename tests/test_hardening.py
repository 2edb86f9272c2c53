"""Nobody can impersonate, lock out, hang or trick the tools (issue 18): each case reproduces
what an adversarial run found, against the real binaries and real targets. Targets write their
rings under tmp_path (never /dev/shm) and are killed on every path."""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, FIXTURES, TARGETS, run_probing

PY = "/usr/bin/python3"
NOBODY = 65534


def as_nobody():
    os.setgid(NOBODY)
    os.setuid(NOBODY)


# A process of user nobody that holds an abstract Unix socket name, answers every connection
# with a forged /info and reports on stdout how many bytes each one sent it.
SQUATTER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0" + sys.argv[1])
s.listen(16)
print("bound", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(1)
    got = b""
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            got += b
    except OSError:
        pass
    body = b'{"pid": 1, "forged": true}'
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
    except OSError:
        pass
    print("received %d" % len(got), flush=True)
    c.close()
"""


@pytest.fixture
def procs():
    """procs(Popen) keeps a process to kill at the end, whatever happens."""
    started = []
    yield started.append
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_a_squatter_is_refused_and_the_recorder_listens_elsewhere(tmp_path, probing_bin, procs):
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the squatter as nobody")
    env = dict(os.environ, PROBING_DATA_DIR=str(tmp_path / "data"), PROBING="0",
               PYTHONUNBUFFERED="1")
    helper = tmp_path / "helper"
    helper.mkdir()
    victim = subprocess.Popen([PY, str(TARGETS / "inject_target.py"), str(helper), "sleep", "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    procs(victim)
    assert victim.stdout.readline().strip() == "ready"
    pid = victim.pid
    squatter = subprocess.Popen([PY, "-c", SQUATTER, "probing-%d" % pid], stdout=subprocess.PIPE,
                                text=True, preexec_fn=as_nobody)
    procs(squatter)
    assert squatter.stdout.readline().strip() == "bound"

    # Before any recorder: the squatter is named and refused, and the forged answer never shown.
    r = subprocess.run([str(probing_bin), "-t", str(pid), "info"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode != 0
    assert "is held by process %d (user %d), not by process %d" % (squatter.pid, NOBODY, pid) \
        in r.stderr, r.stderr
    assert "impersonating" in r.stderr and "forged" not in r.stdout

    # The recorder injected now listens on a name of its own, says so, and is the one answering.
    r = subprocess.run([str(probing_bin), "-t", str(pid), "inject"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(probing_bin), "-t", str(pid), "eval", "import os; print(os.getpid())"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(pid)
    meta = json.loads((tmp_path / "data" / str(pid) / "process.json").read_text())
    assert meta["socket"].startswith("@probing-%d." % pid), meta["socket"]

    squatter.kill()
    out = squatter.stdout.read()
    counts = [int(line.split()[1]) for line in out.splitlines() if line.startswith("received")]
    assert counts and all(n == 0 for n in counts), out  # nothing was ever sent to it
    victim.kill()
    assert "is held by another process" in victim.stderr.read()


def _connect_idle(port, n):
    conns = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        conns.append(c)
    return conns


def _timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def test_idle_connections_lock_out_nobody(served_tcp, probing_bin):
    t, address = served_tcp
    pid = t.proc.pid
    port = int(address.split(":")[1])
    owner = lambda: run_probing(probing_bin, "-t", pid, "info", timeout=30)
    holder = lambda: run_probing(probing_bin, "-t", address, "info", token="tok", timeout=30)
    (r, base_owner) = _timed(owner)
    assert r.returncode == 0, r.stderr
    (r, base_holder) = _timed(holder)
    assert r.returncode == 0, r.stderr
    idle = _connect_idle(port, 40)
    try:
        (r, took) = _timed(owner)
        assert r.returncode == 0, r.stderr
        assert took < max(2 * base_owner, 1.0), (took, base_owner)
        (r, took) = _timed(holder)
        assert r.returncode == 0, r.stderr
        assert took < max(2 * base_holder, 1.0), (took, base_holder)
        # Strangers that never send a request are let go within seconds.
        idle[-1].settimeout(10)
        t0 = time.monotonic()
        assert idle[-1].recv(1) == b""
        assert time.monotonic() - t0 < 6
    finally:
        for c in idle:
            c.close()


def test_a_half_sent_request_is_dropped_and_bearer_is_case_insensitive(served_tcp):
    t, address = served_tcp
    port = int(address.split(":")[1])
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        c.settimeout(10)
        t0 = time.monotonic()
        assert c.recv(1) == b""
        assert time.monotonic() - t0 < 6
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/info", headers={"Authorization": "bearer tok"})
    assert conn.getresponse().status == 200


def test_a_stopped_target_is_named_and_does_not_hang(served, probing_bin):
    pid = served.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        for cmd in (["info"], ["backtrace"], ["eval", "1"], ["config"]):
            t0 = time.monotonic()
            r = run_probing(probing_bin, "-t", pid, *cmd, timeout=30)
            assert r.returncode != 0, cmd
            assert "process %d is stopped" % pid in r.stderr and "kill -CONT" in r.stderr, r.stderr
            assert time.monotonic() - t0 < 5, cmd
        r = run_probing(probing_bin, "-t", pid, "query", "SELECT count(*) FROM python.stacks")
        assert r.returncode == 0, r.stderr  # what it recorded still answers
    finally:
        os.kill(pid, signal.SIGCONT)


def test_run_time_settings_that_cannot_change_are_refused(served, probing_bin):
    pid = served.proc.pid
    r = run_probing(probing_bin, "-t", pid, "config", "probing.server.port=9999")
    assert r.returncode != 0
    assert "read-only at run time" in r.stderr and "PROBING_PORT" in r.stderr, r.stderr
    r = run_probing(probing_bin, "-t", pid, "config", "probing.server.port")
    assert "9999" not in r.stdout


def test_sql_is_read_only_one_statement_and_bounded(served, probing_bin, analyze_bin, tmp_path):
    pid = served.proc.pid
    evil = tmp_path / "evil.db"
    for sql in ("ATTACH DATABASE '%s' AS x" % evil, "VACUUM INTO '%s'" % evil,
                "SELECT fts3_tokenizer('simple')"):
        r = run_probing(probing_bin, "-t", pid, "query", sql)
        assert r.returncode != 0 and "allowed" in r.stderr, (sql, r.stderr)
    r = run_probing(probing_bin, "-t", pid, "query", "SELECT 1; SELECT 2")
    assert r.returncode != 0 and "one statement at a time" in r.stderr
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    t0 = time.monotonic()
    r = run_probing(probing_bin, "-t", pid, "--timeout", "1", "query", forever)
    assert r.returncode != 0 and "ran longer than 1 s and was stopped" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 10
    t0 = time.monotonic()
    r = subprocess.run([str(analyze_bin), str(FIXTURES / "format_v1.ptrace"), "--timeout", "1",
                        forever], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ran longer than 1 s" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 10
    r = subprocess.run([str(analyze_bin), str(FIXTURES / "format_v1.ptrace"),
                        "ATTACH DATABASE '%s' AS x" % evil], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert not evil.exists()


def test_an_output_never_destroys_an_input(analyze_bin, tmp_path):
    run = tmp_path / "run.ptrace"
    shutil.copy(FIXTURES / "format_v1.ptrace", run)
    before = run.read_bytes()
    os.symlink(run, tmp_path / "alias.db")
    for flag, out in (("--db", run), ("--folded", run), ("--flamegraph", run),
                      ("--db", tmp_path / "alias.db"), ("--chrome-trace", run)):
        r = subprocess.run([str(analyze_bin), str(run), flag, str(out)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0, (flag, out)
        assert "would destroy what is read" in r.stderr, r.stderr
        assert run.read_bytes() == before
    # A write that fails leaves nothing behind, and a good one leaves exactly the output.
    r = subprocess.run([str(analyze_bin), str(run), "--db", str(tmp_path / "no" / "out.db")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    r = subprocess.run([str(analyze_bin), str(run), "--flamegraph", str(tmp_path / "f.svg"),
                        "--db", str(tmp_path / "out.db")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.db", "f.svg", "out.db",
                                                          "run.ptrace"]


def test_special_files_neither_hang_nor_are_followed(analyze_bin, served, probing_bin, tmp_path):
    fifo = tmp_path / "run.ptrace"
    os.mkfifo(fifo)
    r = subprocess.run([str(analyze_bin), str(fifo)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "is a FIFO, not a regular file" in r.stderr, r.stderr
    # A ring directory with a FIFO and a symlink among its rings: both skipped and reported,
    # the other rings load.
    pid = served.proc.pid
    time.sleep(1.5)  # a sealed second of stacks
    rings = tmp_path / "data" / str(pid)
    copy = tmp_path / "copy"
    shutil.copytree(rings, copy)
    (copy / "torch.ring").unlink()
    os.mkfifo(copy / "torch.ring")
    (copy / "memory.ring").unlink()
    os.symlink(rings / "memory.ring", copy / "memory.ring")
    r = subprocess.run([str(analyze_bin), str(copy), "--stats",
                        "SELECT count(*) AS n FROM python.stacks", "--format", "json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    answer, stats = r.stdout.split("\n", 1)
    assert json.loads(answer)[0]["n"] > 0
    assert "torch.ring" in stats and "not a regular file" in stats, stats
    assert "memory.ring" in stats and "symbolic link" in stats, stats


def test_a_damaged_ring_is_skipped_and_reported(analyze_bin, served, tmp_path):
    pid = served.proc.pid
    time.sleep(1.5)  # a sealed second of stacks
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "data" / str(pid), copy)
    with open(copy / "torch.ring", "r+b") as f:
        f.write(b"NOTARING")  # a start interrupted early: a bad magic
    r = subprocess.run([str(analyze_bin), str(copy), "--stats",
                        "SELECT count(*) AS n FROM python.stacks", "--format", "json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    answer, stats = r.stdout.split("\n", 1)
    assert json.loads(answer)[0]["n"] > 0
    assert "torch.ring" in stats, stats


def test_leaked_rings_without_process_json_are_listed_and_collected(probing_bin, tmp_path,
                                                                     monkeypatch):
    # What an injection into a process exiting at that moment leaves: rings, no process.json.
    gone = subprocess.Popen([PY, "-c", "pass"])
    gone.wait()
    data = tmp_path / "data"
    leaked = data / str(gone.pid)
    leaked.mkdir(parents=True)
    (leaked / "stacks.ring").write_bytes(b"\0" * 4096)
    monkeypatch.setenv("PROBING_DATA_DIR", str(data))
    r = run_probing(probing_bin, "list", "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = [row for row in json.loads(r.stdout) if row["pid"] == gone.pid]
    assert rows and "start interrupted" in rows[0]["state"], r.stdout
    r = run_probing(probing_bin, "list", "--gc", "--all")
    assert r.returncode == 0, r.stderr
    assert not leaked.exists()


def test_requests_needing_the_gil_are_paced_to_their_share(served):
    from control_client import request

    pid = served.proc.pid
    burn = {"code": "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.3: pass"}

    def eval_after_burn():
        assert request(pid, "POST", "/eval", burn)[0] == 200
        t0 = time.monotonic()
        s, r = request(pid, "POST", "/eval", {"code": "1 + 1"})
        assert s == 200 and r["value"] == "2", r
        return time.monotonic() - t0

    # A small burst is never held back.
    for _ in range(20):
        t0 = time.monotonic()
        assert request(pid, "POST", "/eval", {"code": "1"})[0] == 200
        assert time.monotonic() - t0 < 0.5
    assert request(pid, "POST", "/config", {"key": "probing.server.gil_share",
                                            "value": "0.001"})[0] == 200
    try:
        took = eval_after_burn()  # 0.3 s of GIL at 0.1%: the next waits (at most 1 s)
        assert 0.5 < took < 3, took
    finally:
        assert request(pid, "POST", "/config", {"key": "probing.server.gil_share",
                                                "value": "1"})[0] == 200
    time.sleep(1.1)  # the debt of the last taking, at the old share, is paid
    assert eval_after_burn() < 0.5


def test_a_zombie_and_an_unreadable_directory_are_named_for_what_they_are(probing_bin,
                                                                          analyze_bin):
    zombie = subprocess.Popen([PY, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # exited, not reaped
            with open("/proc/%d/stat" % zombie.pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        r = run_probing(probing_bin, "-t", zombie.pid, "info", timeout=30)
        assert r.returncode != 0
        assert "has exited (its parent has not reaped it yet)" in r.stderr, r.stderr
        assert "inject" not in r.stderr
    finally:
        zombie.wait()
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the reader as nobody")
    private = "/tmp/probing-hardening-%d" % os.getpid()
    os.makedirs(private, mode=0o700, exist_ok=True)
    try:
        os.chmod(private, 0o700)
        r = subprocess.run([str(analyze_bin), private], capture_output=True, text=True,
                           timeout=30, preexec_fn=as_nobody)
        if "Permission denied" in r.stderr and str(analyze_bin) in r.stderr:
            pytest.skip("nobody cannot run the binaries in this checkout")
        assert r.returncode != 0
        assert "permission denied (run probing as its owner, or as root)" in r.stderr, r.stderr
        assert "no such file" not in r.stderr
    finally:
        shutil.rmtree(private)


def test_a_full_disk_fails_the_write_and_says_so(analyze_bin):
    # /dev/full: every write fails with ENOSPC, as on a full disk; a device is written in place.
    for flag in ("--folded", "--flamegraph"):
        r = subprocess.run([str(analyze_bin), str(FIXTURES / "format_v1.ptrace"), flag, "/dev/full"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0, flag
        assert "writing /dev/full failed: No space left on device" in r.stderr, r.stderr


def test_root_reads_only_rings_of_the_process_user(served, probing_bin, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the check is root's")
    pid = served.proc.pid
    rings = tmp_path / "data" / str(pid)
    os.chown(rings, NOBODY, NOBODY)  # planted: not the (root) process's user
    try:
        r = run_probing(probing_bin, "-t", pid, "query", "SELECT count(*) FROM python.stacks")
        assert r.returncode != 0
        assert "belongs to user %d, not to process %d's user 0" % (NOBODY, pid) in r.stderr, \
            r.stderr
    finally:
        os.chown(rings, 0, 0)
    r = run_probing(probing_bin, "-t", pid, "query", "SELECT count(*) FROM python.stacks")
    assert r.returncode == 0, r.stderr


def recorded_env(data_dir):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update({"PROBING": "1", "PROBING_DATA_DIR": str(data_dir),
                "PYTHONUSERBASE": str(BUILD / "pyuser"), "PYTHONUNBUFFERED": "1"})
    return env


def test_no_threads_to_be_had_turns_the_parts_off_and_the_program_runs():
    """As nobody with RLIMIT_NPROC at 1 (the kernel enforces it on users without privileges;
    the process itself uses it up) the recorder gets none of its threads: every part that
    needs one says so in a line on stderr and stays off, and the program runs to its end."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the target as nobody")
    # tmp_path's parents are root's (0700); the recorder wants a data directory of its own user.
    data = tempfile.mkdtemp(prefix="probing-nproc-")
    os.chown(data, NOBODY, NOBODY)

    def one_process_for_nobody():
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        as_nobody()

    try:
        r = subprocess.run([PY, str(TARGETS / "busy.py"), "1", "3"], env=recorded_env(data),
                           capture_output=True, text=True, timeout=60,
                           preexec_fn=one_process_for_nobody)
        if "Permission denied" in r.stderr and "probing" not in r.stderr:
            pytest.skip("nobody cannot read this checkout")
        assert r.returncode == 3, r.stderr
        assert r.stdout.startswith("ready"), (r.stdout, r.stderr)
        for off in ("no thread for the recorder's Python work",
                    "thread names, Python memory figures and PyTorch tracing are off",
                    "no thread for requests that need the GIL",
                    "eval, locals and custom tables are off",
                    "control server off: no thread for the control server",
                    "no thread for the sampler"):
            assert off in r.stderr, r.stderr
        assert "the control server still answers" not in r.stderr, r.stderr  # it is off too
        # The recorder itself started (its rings are there); only its threads are missing.
        assert os.listdir(data), r.stderr
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_rings_that_cannot_be_made_leave_the_recorder_off_and_the_program_running(tmp_path):
    # Under a regular file no directory can be made, not even by root.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = subprocess.run([PY, str(TARGETS / "busy.py"), "0.5", "3"],
                       env=recorded_env(blocker / "data"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith("ready"), (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "recorder not started" in lines[0] and str(blocker) in lines[0], \
        r.stderr
