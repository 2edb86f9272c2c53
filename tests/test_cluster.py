"""The cluster view on a real job: 4 gloo ranks of samples/train_ddp.py on this machine, started
with torchrun's environment and PROBING=1, reached once through this host's ring directories
and once only through TCP (each rank's PROBING_PORT + local rank, found in the job's store), as
if every rank were on another host. A rank killed mid-way, a rank stopped with SIGSTOP and a rank
holding the GIL are reported as such, never left out. Every process started here is killed at
the end, also on failure."""
import json
import re
import os
import signal
import socket
import subprocess
import textwrap
import time
import uuid

import pytest

from conftest import BUILD, ROOT, free_port, run_probing as probing

PY = "/usr/bin/python3"
DDP = ROOT / "samples" / "train_ddp.py"


def free_ports(n):
    """A base port with n free ports after it (each rank listens on base + local rank)."""
    for _ in range(50):
        base = free_port()
        try:
            socks = []
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


class Job:
    """`world` ranks of train_ddp.py with torchrun's environment; killed on every path."""

    def __init__(self, tmp_path, world=4, tcp=False, probing="1", args=(), env=None):
        self.world = world
        self.run_id = "job-" + uuid.uuid4().hex[:8]
        self.data = tmp_path / "data"
        self.store_port = free_port()
        self.probing_port = free_ports(world) if tcp else None
        self.procs = []
        extra_env = env or {}
        for rank in range(world):
            env = dict(os.environ)
            env.pop("PYTHONPATH", None)
            env.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(self.store_port),
                        "TORCHELASTIC_RUN_ID": self.run_id, "PROBING": probing,
                        "PROBING_DATA_DIR": str(self.data), "PYTHONUNBUFFERED": "1",
                        "PYTHONUSERBASE": str(BUILD / "pyuser"), "OMP_NUM_THREADS": "1",
                        # Per-step views across ranks compare the steps every rank traced; the
                        # overhead budget decides on each rank alone (docs/torch.md), so these
                        # tests, which count steps, trace them all.
                        "PROBING_TORCH_BUDGET": "off"})
            env.update(extra_env)
            if tcp:
                env.update({"PROBING_PORT": str(self.probing_port), "PROBING_AUTH_TOKEN": "jobtok"})
            self.procs.append(subprocess.Popen([PY, str(DDP), "--pace-ms", "20", *map(str, args)],
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True, env=env))

    def wait_ready(self, timeout=90):
        deadline = time.time() + timeout
        for p in self.procs:
            while True:
                assert time.time() < deadline, "the job did not start"
                line = p.stdout.readline()
                assert line, "a rank exited: %s" % p.stderr.read()
                if "ready" in line:
                    break

    def pid(self, rank):
        return self.procs[rank].pid

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
            p.wait()


@pytest.fixture
def job(tmp_path, monkeypatch):
    started = []

    def _start(**kw):
        j = Job(tmp_path, **kw)
        started.append(j)
        monkeypatch.setenv("PROBING_DATA_DIR", str(j.data))
        j.wait_ready()
        return j

    yield _start
    for j in started:
        j.kill()


def rows(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_registered(probing_bin, target, world, token=None, timeout=60):
    """Until every rank answers cluster list (their stores registrations take a second or two)."""
    deadline = time.time() + timeout
    while True:
        r = probing(probing_bin, "-t", target, "--format", "json", "--timeout", "10", "cluster",
                    "list", token=token)
        if r.returncode == 0:
            got = json.loads(r.stdout)
            if len(got) == world and all(x["state"] == "running" for x in got):
                return got
        assert time.time() < deadline, "not every rank answered: %s %s" % (r.stdout, r.stderr)
        time.sleep(1)


def check_the_job(probing_bin, target, job, token=None):
    listed = wait_registered(probing_bin, target, job.world, token)
    assert [x["rank"] for x in listed] == list(range(job.world))
    assert sorted(x["pid"] for x in listed) == sorted(job.pid(r) for r in range(job.world))
    if token:
        assert all(x["address"] for x in listed)
    # SQL over every rank: the rank, host and pid of each row added; joins across ranks.
    got = rows(probing(probing_bin, "-t", target, "--format", "json", "query",
                       "SELECT rank, count(DISTINCT pid) AS pids, count(*) AS n FROM "
                       "cluster.stacks GROUP BY rank ORDER BY rank", token=token))
    assert [x["rank"] for x in got] == list(range(job.world))
    assert all(x["pids"] == 1 and x["n"] > 0 for x in got)
    # Every rank's steps, traced or not, with their times.
    got = rows(probing(probing_bin, "-t", target, "--format", "json", "query",
                       "SELECT rank, count(*) AS n, count(DISTINCT step) AS steps, "
                       "min(duration) AS shortest FROM cluster.torch_steps GROUP BY rank "
                       "ORDER BY rank", token=token))
    assert [x["rank"] for x in got] == list(range(job.world)), got
    assert all(x["n"] == x["steps"] > 0 and x["shortest"] > 0 for x in got), got
    got = rows(probing(probing_bin, "-t", target, "--format", "json", "query",
                       "SELECT a.rank AS a, b.rank AS b FROM cluster.process a JOIN "
                       "cluster.process b ON a.run_id = b.run_id AND a.rank < b.rank "
                       "ORDER BY 1, 2", token=token))
    assert len(got) == job.world * (job.world - 1) // 2
    got = rows(probing(probing_bin, "-t", target, "--format", "json", "query",
                       "SELECT run_id, world_size, count(*) AS ranks FROM cluster.process "
                       "GROUP BY 1, 2", token=token))
    assert got == [{"run_id": job.run_id, "world_size": job.world, "ranks": job.world}]
    # Merged stacks: every rank's main thread in the training loop.
    r = probing(probing_bin, "-t", target, "cluster", "backtrace", token=token)
    assert r.returncode == 0, r.stderr
    assert "%d of %d ranks answered" % (job.world, job.world) in r.stderr
    assert "MainThread" in r.stdout and "main (%s" % DDP in r.stdout


def test_a_job_through_this_hosts_ring_directories(job, probing_bin, analyze_bin, tmp_path):
    j = job()
    check_the_job(probing_bin, j.pid(2), j)
    # Identity in info and system.process, by any rank.
    info = {x["key"]: x["value"] for x in rows(probing(probing_bin, "-t", j.pid(1), "--format",
                                                        "json", "info"))}
    assert (info["rank"], info["world_size"], info["run_id"]) == (1, 4, j.run_id)
    # A bundle: one recording per rank and a manifest; probing-analyze reports per rank.
    out = tmp_path / "bundle"
    r = probing(probing_bin, "-t", j.pid(0), "cluster", "record", "-o", out, "--duration", "2")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] == j.run_id and len(manifest["ranks"]) == 4
    assert all(x["file"] == "rank%d.ptrace" % x["rank"] for x in manifest["ranks"])
    r = subprocess.run([str(analyze_bin), str(out), "--format", "json",
                        "SELECT rank, count(DISTINCT step) AS steps FROM python.torch_trace "
                        "GROUP BY rank ORDER BY rank"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [x["rank"] for x in json.loads(r.stdout)] == [0, 1, 2, 3]
    r = subprocess.run([str(analyze_bin), str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Ranks:" in r.stdout and "slowest" in r.stdout
    # A flame graph of every rank, each its own root.
    r = probing(probing_bin, "-t", j.pid(0), "cluster", "flamegraph", "--folded")
    assert r.returncode == 0, r.stderr
    roots = {line.split(";")[0] for line in r.stdout.splitlines()}
    assert roots == {"rank %d (pid %d)" % (k, j.pid(k)) for k in range(4)}
    r = probing(probing_bin, "-t", j.pid(0), "cluster", "flamegraph", "--folded", "--lines",
                "--idle", "--duration", "0")
    assert r.returncode == 0 and "left out" not in r.stderr, r.stderr
    assert re.search(r";main \(\S*train_ddp\.py:\d+\)", r.stdout), r.stdout[:2000]


def test_a_job_only_through_tcp_as_if_on_four_hosts(job, probing_bin):
    j = job(tcp=True)
    target = "127.0.0.1:%d" % (j.probing_port + 2)  # rank 2's address, nothing local
    check_the_job(probing_bin, target, j, token="jobtok")
    r = probing(probing_bin, "-t", target, "cluster", "list", token="wrong")
    assert r.returncode == 1 and "a valid token is required" in r.stderr


def test_dead_stopped_and_gil_holding_ranks_are_named(job, probing_bin):
    # The rank takes the GIL at step 250 (about 5 s in): after it registered in the store.
    j = job(tcp=True, args=("--gil-rank", "3", "--gil-step", "250"))
    target = "127.0.0.1:%d" % j.probing_port
    wait_registered(probing_bin, target, j.world, token="jobtok")
    for line in j.procs[3].stdout:  # the GIL is held from now on
        if "holds the GIL" in line:
            break
    os.kill(j.pid(1), signal.SIGSTOP)
    j.procs[2].kill()
    j.procs[2].wait()
    time.sleep(1)
    r = probing(probing_bin, "-t", target, "--format", "json", "--timeout", "5", "cluster",
                "list", token="jobtok")
    assert r.returncode == 1  # not every rank is running
    states = {x["rank"]: x["state"] for x in json.loads(r.stdout)}
    assert states[0] == "running" and states[3] == "running"  # holding the GIL: still answers
    assert states[1] in ("timeout", "stopped") and states[2] in ("unreachable", "dead")
    r = probing(probing_bin, "-t", target, "cluster", "backtrace", "--timeout", "5",
                token="jobtok")
    assert "rank 1:" in r.stderr and "rank 2:" in r.stderr and "2 of 4 ranks answered" in r.stderr
    assert "hold_the_gil" in r.stdout and "(holds the GIL)" in r.stdout
    r = probing(probing_bin, "-t", target, "--timeout", "5", "--format", "json", "query",
                "SELECT rank, count(*) AS n FROM cluster.memory GROUP BY rank ORDER BY rank",
                token="jobtok")
    assert r.returncode == 0, r.stderr
    assert [x["rank"] for x in json.loads(r.stdout)] == [0, 3]
    assert "2 of 4 ranks answered" in r.stderr and "rank 2:" in r.stderr


def test_cluster_attach_injects_every_rank_of_a_job_started_without_probing(job, probing_bin):
    j = job(probing="0")
    r = probing(probing_bin, "-t", j.pid(0), "--format", "json", "cluster", "attach",
                timeout=300)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert [x["rank"] for x in listed] == [0, 1, 2, 3]
    assert all(x["state"] == "running" for x in listed)
    assert r.stderr.count("recorder injected") == 4
    r = probing(probing_bin, "-t", j.pid(3), "cluster", "attach", timeout=120)
    assert r.returncode == 0 and r.stderr.count("already records") == 4


def test_the_python_api_sees_the_job(job, tmp_path):
    j = job()
    code = textwrap.dedent("""
        import json, time, probing
        c = probing.connect(pid=%d).cluster()
        for _ in range(60):
            ranks = c.list()
            if (ranks["state"] == "running").all() and len(ranks) == 4:
                break
            time.sleep(1)
        per_rank = c.query("SELECT rank, count(*) AS n FROM cluster.memory GROUP BY rank ORDER BY rank")
        bt = c.backtrace()
        manifest = c.record(%r, 1)
        back = probing.open(%r).query("SELECT DISTINCT rank FROM python.torch_trace ORDER BY rank")
        print(json.dumps({"ranks": ranks["rank"].tolist(), "per_rank": per_rank["rank"].tolist(),
                          "main": bool((bt["func"] == "main").any()),
                          "recorded": back["rank"].tolist(), "manifest": manifest}))
    """ % (j.pid(0), str(tmp_path / "b"), str(tmp_path / "b")))
    env = dict(os.environ, PYTHONUSERBASE=str(BUILD / "pyuser"), PROBING="0")
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ranks"] == out["per_rank"] == out["recorded"] == [0, 1, 2, 3]
    assert out["main"] and out["manifest"].endswith("manifest.json")
