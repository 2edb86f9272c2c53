"""`probing web` against real targets: its JSON API read with urllib (a live training process,
a recording, a process that dies, a token, refusals, SQL that writes or runs away, a 2-rank
gloo job), its command line errors, and the dashboard driven in Debian's Chromium by
playwright-core (tests/web/dashboard.mjs) with every request outside the dashboard refused."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import BUILD, ROOT, TARGETS
from test_cluster import Job

PY = "/usr/bin/python3"
HOT = "prepare_batch"
NODE_MODULES = BUILD / "test-assets" / "node_modules"
CHROMIUM = "/usr/bin/chromium"


def env_for(data):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update({"PROBING_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1",
                "PYTHONUSERBASE": str(BUILD / "pyuser")})
    return env


class Procs:
    """Processes a test starts, killed (with their process groups) on every path."""

    def __init__(self):
        self.started = []

    def start(self, argv, env, **kw):
        p = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True, **kw)
        self.started.append(p)
        return p

    def kill_all(self):
        for p in self.started:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


def start_training(procs, data, seconds=120):
    env = env_for(data)
    env.update({"PROBING": "1", "PROBE_TORCH_EXPRS": "loss@train_step"})
    p = procs.start([PY, TARGETS / "web_train.py", seconds], env)
    line = p.stdout.readline()
    assert line.strip() == "ready", "target said %r; stderr: %s" % (line, p.stderr.read())
    return p


def start_web(procs, probing_bin, data, *args):
    """`probing web --port 0 ARGS`: (process, base URL without the token)."""
    p = procs.start([probing_bin, "web", "--port", "0", *args], env_for(data))
    line = p.stdout.readline()
    assert line.startswith("probing web: serving http://"), (line, p.stderr.read())
    url = line.split()[3]
    return p, url.split("?")[0]


def call(url, body=None, headers=None, method=None):
    """(status, JSON) of one request; errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_until(what, fn, timeout=20):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def walk(names, node, path=()):
    """Every (path of names, value) of a flame tree."""
    name, value, children = node
    here = path + (names[name],)
    yield here, value
    for c in children:
        yield from walk(names, c, here)


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.kill_all()


@pytest.fixture(scope="module")
def live(probing_bin, tmp_path_factory):
    """A training process with the recorder and a dashboard for it: (pid, base URL, data)."""
    data = tmp_path_factory.mktemp("web-live") / "data"
    p = Procs()
    try:
        train = start_training(p, data)
        _, url = start_web(p, probing_bin, data, "--query-timeout", "1")
        # Some steps, samples and memory before the tests look.
        wait_until("steps", lambda: call(url + "api/p/%d/steps" % train.pid)[1]["steps"])
        yield train.pid, url, data
    finally:
        p.kill_all()


@pytest.fixture(scope="module")
def recording(probing_bin, tmp_path_factory):
    """A .ptrace of web_train.py from its first step (probing record -- ...)."""
    tmp = tmp_path_factory.mktemp("web-rec")
    out = tmp / "train.ptrace"
    env = env_for(tmp / "data")
    env["PROBE_TORCH_EXPRS"] = "loss@train_step"
    r = subprocess.run([str(probing_bin), "record", "-o", out, "--", PY, TARGETS / "web_train.py",
                        "3"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


# ------------------------------------------------------------------------------------------
# The JSON API


def test_api_targets_live_and_dead(live, probing_bin, tmp_path, procs):
    pid, url, data = live
    status, t = call(url + "api/targets")
    assert status == 200
    assert t["data_dir"] == str(data)
    mine = [p for p in t["processes"] if p["pid"] == pid]
    assert mine and mine[0]["state"] == "running" and mine[0]["alive"]
    assert mine[0]["url"] == "/p/%d" % pid and "web_train.py" in mine[0]["command"]
    assert t["named"] == [] and t["open"] is None
    # A process that has ended is listed as dead, with its rings readable.
    env = env_for(data)
    env["PROBING"] = "1"
    done = subprocess.run([PY, TARGETS / "busy.py", "0.5"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0
    gone = [p for p in call(url + "api/targets")[1]["processes"] if p["state"] == "dead"]
    assert gone and gone[0]["data_bytes"] > 0


def test_api_views_of_a_live_process(live):
    pid, url, _ = live
    api = url + "api/p/%d/" % pid
    status, o = call(api + "overview")
    assert status == 200, o
    assert o["state"] == "running" and o["live"] and o["control"]
    assert o["info"]["pid"] == pid and o["pid"] == pid
    assert o["samples"] > 0 and o["steps"] > 0 and o["last_ts"] >= o["first_ts"] > 0
    assert any(t["name"] == "MainThread" for t in o["threads"])

    def hot_in_backtrace():
        _, st = call(api + "stacks")
        assert st["source"] == "backtrace", st
        main = [t for t in st["threads"] if t["thread_id"] == pid]
        return main and any(f["func"] == HOT for f in main[0]["frames"])
    wait_until("%s in the main thread's backtrace" % HOT, hot_in_backtrace)

    _, f = call(api + "flame?seconds=5")
    assert f["samples"] > 0 and f["to_ts"] - f["from_ts"] <= 5.01
    paths = dict(walk(f["names"], f["root"]))
    hot = [v for p, v in paths.items() if p[-1].startswith(HOT + " (")]
    assert hot and sum(hot) > 0.1 * f["samples"]  # the hot function is hot
    assert f["root"][1] == f["samples"]
    _, one = call(api + "flame?seconds=5&thread=%d" % pid)
    assert [f["names"][c[0]] for c in one["root"][2]] == ["MainThread (%d)" % pid]
    assert call(api + "flame?seconds=abc")[0] == 400

    _, s = call(api + "steps?last=20")
    assert 0 < len(s["steps"]) <= 20 and s["steps_recorded"] >= len(s["steps"])
    last = s["steps"][-1]
    assert last["forward"] > 0 and last["backward"] > 0 and last["optimizer"] > 0
    # Building the batch in Python is outside every module: "the rest".
    assert last["rest"] > last["forward"]
    assert abs(last["forward"] + last["backward"] + last["optimizer"] + last["rest"] - last["wall"]) < 1e-6
    modules = {(m["module"], m["stage"]) for m in s["modules"]}
    assert ("Sequential", "forward") in modules and ("SGD", "step") in modules

    _, m = call(api + "memory?seconds=60")
    assert m["ts"] and m["rss"][-1] > 10 << 20 and m["cuda_allocated"][-1] is None

    _, v = call(api + "variables")
    wait_until("the variable loss", lambda: any(
        x["name"] == "loss" and x["func"] == "train_step" for x in call(api + "variables")[1]["variables"]))

    status, c = call(api + "config")
    assert status == 200 and any(x["name"] == "probing.sample_rate" for x in c["settings"])
    status, e = call(api + "config", {"key": "probing.sample_rate", "value": "7"})
    assert status == 400 and "probing.sample_rate must be" in e["error"]


def test_api_sql_is_read_only_and_bounded(live):
    pid, url, data = live
    api = url + "api/p/%d/query" % pid
    status, r = call(api, {"sql": "SELECT count(*) AS n FROM python.stacks WHERE func = '%s'" % HOT})
    assert status == 200 and r["columns"] == ["n"] and r["rows"][0][0] > 0
    assert r["elapsed_ms"] > 0 and r["truncated"] is False
    status, r = call(api, {"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                                  "WHERE x < 6000) SELECT x FROM c"})
    assert status == 200 and r["truncated"] and len(r["rows"]) == 5000
    for sql in ["CREATE TABLE t(x)", "ATTACH DATABASE '%s/x.db' AS x" % data,
                "VACUUM INTO '%s/y.db'" % data, "PRAGMA writable_schema=1",
                "DROP TABLE python.stacks"]:
        status, r = call(api, {"sql": sql})
        assert status == 403, (sql, r)
    # The ring tables are read where they lie: SQLite itself refuses to write them.
    status, r = call(api, {"sql": "DELETE FROM python.stacks"})
    assert status == 400 and "may not be modified" in r["error"]
    assert not (data / "x.db").exists() and not (data / "y.db").exists()
    t0 = time.time()
    status, r = call(api, {"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                                  "SELECT count(*) FROM c"})
    assert status == 504 and "longer than 1 s" in r["error"], r
    assert time.time() - t0 < 10
    status, r = call(api, {"sql": "SELEC 1"})
    assert status == 400 and "syntax error" in r["error"]
    status, r = call(api, {"nope": 1})
    assert status == 400


def test_api_refuses_what_a_browser_elsewhere_could_send(live):
    pid, url, _ = live
    api = url + "api/p/%d/query" % pid
    body = {"sql": "SELECT 1"}
    # A form post (no JSON content type), a script of another origin, a rebound host name.
    status, r = call(api, body, {"Content-Type": "text/plain"})
    assert status == 415
    status, r = call(api, body, {"Origin": "http://evil.example"})
    assert status == 403 and "another origin" in r["error"]
    status, r = call(url + "api/targets", headers={"Host": "evil.example:%s" % url.split(":")[2].strip("/")})
    assert status == 403 and "Host header" in r["error"]
    # No eval, anywhere.
    assert call(url + "api/p/%d/eval" % pid, {"code": "1"})[0] == 404
    assert call(url + "api/p/1/overview")[0] in (403, 404)  # pid 1 has no recorder of ours
    assert call(url + "api/p/0x1/overview")[0] == 400
    assert call(url + "api/r/0/overview")[0] == 404  # no recording was named


def test_api_recording(recording, probing_bin, tmp_path, procs):
    _, url = start_web(procs, probing_bin, tmp_path / "data", recording)
    _, t = call(url + "api/targets")
    assert t["open"] == "/r/0"
    assert t["named"][0]["kind"] == "recording" and t["named"][0]["target"] == str(recording)
    api = url + "api/r/0/"
    status, o = call(api + "overview")
    assert status == 200, o
    assert o["state"] == "recorded" and not o["live"] and not o["control"]
    assert o["steps"] > 10 and o["samples"] > 50 and "web_train.py" in o["command"]
    _, st = call(api + "stacks")
    assert st["source"] == "samples" and st["note"] is None
    main = [x for x in st["threads"] if x["thread_name"] == "MainThread"]
    assert main and main[0]["frames"]
    _, f = call(api + "flame")
    assert any(p[-1].startswith(HOT + " (") for p, _ in walk(f["names"], f["root"]))
    _, s = call(api + "steps")
    assert len(s["steps"]) > 10
    _, v = call(api + "variables")
    assert any(x["name"] == "loss" for x in v["variables"])
    status, r = call(api + "query", {"sql": "SELECT count(DISTINCT step) FROM python.torch_trace"})
    assert status == 200 and r["rows"][0][0] == o["steps"]
    status, r = call(api + "config")
    assert status == 400 and "needs a live process" in r["error"]


def test_api_a_target_that_dies(probing_bin, tmp_path, procs):
    data = tmp_path / "data"
    train = start_training(procs, data)
    _, url = start_web(procs, probing_bin, data)
    api = url + "api/p/%d/" % train.pid
    wait_until("samples", lambda: call(api + "overview")[1].get("samples"))
    train.kill()
    train.wait()
    status, o = call(api + "overview")
    assert status == 200 and o["state"] == "gone" and "is gone" in o["info_error"]
    status, st = call(api + "stacks")
    assert status == 200 and st["source"] == "samples" and "is gone" in st["note"]
    assert call(api + "flame")[1]["samples"] > 0
    assert call(url + "api/targets")[0] == 200  # the server is still up
    status, r = call(url + "api/p/999999/overview")
    assert status == 404 and r["error"] == "no such process 999999"


def test_api_token(probing_bin, tmp_path, procs):
    _, url = start_web(procs, probing_bin, tmp_path / "data", "--token", "s3cret")
    status, r = call(url + "api/targets")
    assert status == 401 and "needs its token" in r["error"]
    status, r = call(url + "api/targets", headers={"Authorization": "Bearer nope"})
    assert status == 401 and "wrong token" in r["error"]
    assert call(url + "api/targets", headers={"Authorization": "bearer s3cret"})[0] == 200
    # The address with the token sets a cookie and shows the page without it.
    req = urllib.request.Request(url + "p/1?token=s3cret")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(req, timeout=10)
        raise AssertionError("no redirect")
    except urllib.error.HTTPError as e:
        assert e.code == 303 and e.headers["Location"] == "/p/1"
        cookie = e.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert call(url + "api/targets", headers={"Cookie": cookie.split(";")[0]})[0] == 200


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_pages_and_files_are_served_from_the_binary(live):
    _, url, _ = live
    with urllib.request.urlopen(url, timeout=10) as r:
        html = r.read().decode()
        csp = r.headers["Content-Security-Policy"]
    assert "/static/js/app.js" in html and "http" not in html.replace("http-equiv", "")
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    req = urllib.request.Request(url + "static/js/app.js", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Content-Type"].startswith("text/javascript")
    for route in ["p/1", "r/0"]:
        with urllib.request.urlopen(url + route, timeout=10) as r:
            assert r.read().decode() == html  # one app for every page
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "nope", timeout=10)
    assert e.value.code == 404 and b"no page /nope" in e.value.read()
    # Nothing the app loads is from elsewhere, and nothing it runs is eval'd.
    app = ROOT / "web" / "app"
    for f in app.rglob("*.js"):
        text = f.read_text()
        assert "eval(" not in text and "new Function" not in text, f
        assert "https://" not in text, f
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', ""), f


# ------------------------------------------------------------------------------------------
# The command line


def test_cli_help_and_errors(probing_bin, tmp_path):
    r = subprocess.run([str(probing_bin), "web", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--port" in r.stdout and "--token" in r.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([str(probing_bin), "web", "--port", str(port)], capture_output=True,
                           text=True, timeout=30, env=env_for(tmp_path / "data"))
    assert r.returncode == 1 and r.stderr.strip() == (
        "probing: port %d on 127.0.0.1 is in use: pick another with --port (0 takes any free one)" % port)
    r = subprocess.run([str(probing_bin), "web", "--port", "0", tmp_path / "missing.ptrace"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "missing.ptrace: no such file or directory" in r.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("not a trace\n")
    r = subprocess.run([str(probing_bin), "web", "--port", "0", notes], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.startswith("probing: target %s: " % notes)
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([str(probing_bin), "web", "--host", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "give --token" in r.stderr
    r = subprocess.run([str(probing_bin), "web", "--port", "70000"], capture_output=True, text=True)
    assert r.returncode == 2


def test_cli_stops_on_sigint(probing_bin, tmp_path, procs):
    p, url = start_web(procs, probing_bin, tmp_path / "data")
    # An idle keep-alive connection does not hold the stop up.
    conn = socket.create_connection(("127.0.0.1", int(url.split(":")[2].strip("/"))))
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=10) == 0
    conn.close()


@pytest.fixture
def ddp(tmp_path, probing_bin, procs):
    """2 gloo ranks of samples/train_ddp.py with torchrun's environment and a dashboard:
    (job, base URL)."""
    job = Job(tmp_path, world=2)
    try:
        job.wait_ready()
        _, url = start_web(procs, probing_bin, job.data)
        yield job, url
    finally:
        job.kill()


def test_api_cluster(ddp):
    job, url = ddp
    _, t = call(url + "api/targets")
    mine = [j for j in t["jobs"] if j["job"] == job.run_id]
    assert mine and sorted(mine[0]["pids"]) == sorted([job.pid(0), job.pid(1)])
    assert mine[0]["url"] == "/cluster/" + job.run_id
    api = url + "api/cluster/%s/" % job.run_id
    status, c = call(api + "overview")
    assert status == 200, c
    assert c["job"] == job.run_id and c["world_size"] == 2
    assert [m["rank"] for m in c["members"]] == [0, 1]
    assert all(m["state"] == "running" for m in c["members"]), c
    assert c["members"][1]["url"] == "/p/%d" % job.pid(1)
    steps = wait_until("steps on both ranks", lambda: (lambda r: r if r["steps"] and all(
        any(v is not None for v in row) for row in r["wall"]) else None)(call(api + "steps?last=10")[1]))
    assert steps["ranks"] == [0, 1] and len(steps["steps"]) <= 10
    assert steps["coverage"] == "2 of 2 ranks answered"
    assert all(v is None or 0 < v < 10 for row in steps["wall"] for v in row)
    _, st = call(api + "stacks")
    assert st["coverage"] == "2 of 2 ranks answered"
    main = [g for g in st["groups"] if g["thread_name"] == "MainThread"]
    assert sorted(r for g in main for r in g["ranks"]) == [0, 1]
    status, r = call(api + "query", {"sql": "SELECT rank, count(*) FROM cluster.stacks GROUP BY rank ORDER BY rank"})
    assert status == 200 and [row[0] for row in r["rows"]] == [0, 1] and r["coverage"] == "2 of 2 ranks answered"
    assert call(api + "query", {"sql": "CREATE TABLE t(x)"})[0] == 403
    # A rank's own page answers cluster.<table> too.
    status, r = call(url + "api/p/%d/query" % job.pid(0), {"sql": "SELECT count(DISTINCT rank) FROM cluster.torch_trace"})
    assert status == 200 and r["rows"] == [[2]] and r["coverage"] == "2 of 2 ranks answered"
    status, r = call(url + "api/cluster/no-such-job/overview")
    assert status == 404 and "no rank of job no-such-job" in r["error"]
    # The straggler table and the hang report, as probing cluster stragglers|hang.
    sg = wait_until("5 steps to compare", lambda: (lambda r: r if r["last_step"] - r["first_step"]
                                                   == 4 else None)(call(api + "stragglers?steps=5")[1]))
    assert sg["coverage"] == "2 of 2 ranks answered", sg
    assert sg["problem"] == "" and sorted(x["rank"] for x in sg["ranks"]) == [0, 1], sg
    assert sg["arrival"] == "backward start" and all(x["steps"] == 5 for x in sg["ranks"]), sg
    # Each rank's arrival per step: the steps compared, in order, and one rank first in each.
    for x in sg["ranks"]:
        assert [s for s, _ in x["arrivals"]] == list(range(sg["first_step"], sg["last_step"] + 1))
    assert all(min(dict(x["arrivals"])[s] for x in sg["ranks"]) == 0
               for s in range(sg["first_step"], sg["last_step"] + 1)), sg
    assert call(api + "stragglers?steps=0")[0] == 400
    status, hg = call(api + "hang")
    assert status == 200 and [x["state"] for x in hg["ranks"]] == ["ok", "ok"], hg
    assert hg["verdict"] == "no hang: every rank made progress in the last seconds", hg
    assert all(x["collective"] is not None and x["frames"] for x in hg["ranks"]), hg
    # A rank that dies is reported as dead, never left out.
    job.procs[1].kill()
    job.procs[1].wait()

    def dead():
        _, c = call(api + "overview")
        return [m["state"] for m in c["members"]] == ["running", "dead"] or None
    wait_until("rank 1 reported dead", dead, timeout=30)
    _, hg = call(api + "hang")
    assert hg["verdict"].startswith("rank 1 is dead") and hg["culprits"] == [1], hg


# ------------------------------------------------------------------------------------------
# In Chromium


def run_browser(scenario, url, out, **kw):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: run scripts/install-deps")
    if not (NODE_MODULES / "playwright-core").exists():
        pytest.fail("playwright-core is missing: run `make test-assets`")
    argv = ["node", ROOT / "tests" / "web" / "dashboard.mjs", "--scenario", scenario, "--url", url,
            "--out", out, "--hot", HOT]
    for k, v in kw.items():
        argv += ["--" + k, str(v)]
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
    p = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, start_new_session=True)
    try:
        output, _ = p.communicate(timeout=150)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # node and the Chromium it started
            p.wait()
    assert p.returncode == 0, output
    line = [l for l in output.splitlines() if l.startswith("RESULT ")]
    return json.loads(line[-1][7:])


def test_dashboard_live_in_chromium(live, tmp_path):
    pid, url, _ = live
    r = run_browser("live", url, tmp_path, pid=pid)
    assert r["steps"]["now"] > r["steps"]["first"]
    assert "probing.sample_rate must be" in r["setting_error"]
    assert "samples (" in r["search"]


def test_dashboard_recording_in_chromium(recording, probing_bin, tmp_path, procs):
    _, url = start_web(procs, probing_bin, tmp_path / "data", recording)
    r = run_browser("recording", url, tmp_path)
    assert r["steps"]["bars"] > 10


def test_dashboard_target_gone_in_chromium(probing_bin, tmp_path, procs):
    data = tmp_path / "data"
    train = start_training(procs, data)
    _, url = start_web(procs, probing_bin, data)
    r = run_browser("gone", url, tmp_path, pid=train.pid)
    # Killed by the browser's script: a zombie until this test reaps it, which says so too.
    assert "is gone" in r["note"] or "has exited" in r["note"], r["note"]
    assert "is gone" in r["banner"]


def test_dashboard_cluster_in_chromium(ddp, tmp_path):
    job, url = ddp
    r = run_browser("cluster", url, tmp_path, job=job.run_id)
    assert r["ranks"] == 2 and r["cells"] > 0
    assert r["hang"] == "no hang: every rank made progress in the last seconds", r


def test_dashboard_token_in_chromium(probing_bin, tmp_path, procs):
    _, url = start_web(procs, probing_bin, tmp_path / "data", "--token", "tok en/+")
    r = run_browser("token", url, tmp_path, token="tok en/+")
    assert "needs its token" in r["without"]
