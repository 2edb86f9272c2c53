"""The recorder's control server against real targets under every interpreter found: eval,
backtrace (with locals), config, custom tables, who may connect, and behaviour while the GIL is
held forever."""
import concurrent.futures
import os
import socket
import subprocess
import time

import pytest

from conftest import BUILD, TARGETS, line_of
from control_client import request, wait_for_server


@pytest.fixture
def served(python, target):
    t = target(python, "serve.py")
    t.wait_ready()
    wait_for_server(t.proc.pid)
    return t.proc.pid


def test_info(served, python):
    status, info = request(served, "GET", "/info")
    assert status == 200
    assert info["pid"] == served
    assert info["socket"] == "@probing-%d" % served
    assert info["enabled"]["stack_sampler"] is True and info["enabled"]["tcp"] is False
    assert "serve.py" in info["cmdline"] and info["uptime"] > 0


def test_eval_values_prints_exceptions_and_syntax_errors(served):
    s, r = request(served, "POST", "/eval", {"code": "x = 20\nprint('hello')\nx + 22"})
    assert s == 200 and r["value"] == "42" and r["stdout"] == "hello\n" and r["exception"] is None
    s, r = request(served, "POST", "/eval", {"code": "x"})  # __main__'s namespace persists
    assert r["value"] == "20"
    s, r = request(served, "POST", "/eval", {"code": "import sys; print('oops', file=sys.stderr)"})
    assert r["stderr"] == "oops\n" and r["value"] is None
    s, r = request(served, "POST", "/eval", {"code": "stop"})  # the target's own globals
    assert r["value"].startswith("<threading.Event")
    s, r = request(served, "POST", "/eval", {"code": "1/0"})
    assert s == 200 and r["exception"]["type"] == "ZeroDivisionError"
    assert "division by zero" in r["exception"]["message"]
    assert "Traceback" in r["exception"]["traceback"]
    s, r = request(served, "POST", "/eval", {"code": "def f(:"})
    assert r["exception"]["type"] == "SyntaxError"
    s, r = request(served, "POST", "/eval", {"code": "raise SystemExit(3)"})
    assert r["exception"]["type"] == "SystemExit"  # never ends the target
    assert request(served, "GET", "/info")[0] == 200
    s, r = request(served, "POST", "/eval", {"nocode": 1})
    assert s == 400 and "code" in r["error"]
    s, r = request(served, "POST", "/eval", "not json")
    assert s == 400


def test_eval_timeout_stops_a_runaway_loop(served):
    start = time.time()
    s, r = request(served, "POST", "/eval", {"code": "while True: pass", "timeout": 1})
    assert s == 200 and r["exception"]["type"] == "TimeoutError"
    assert time.time() - start < 10
    s, r = request(served, "POST", "/eval", {"code": "1 + 1"})  # and the server goes on
    assert r["value"] == "2"


def test_backtrace_names_every_thread_with_lines_and_locals(served):
    # Right after "ready" the main thread may still be on its way into main_loop (waiting for
    # the GIL the recorder's own thread took to set itself up): look until it is there.
    deadline = time.time() + 10
    while True:
        s, bt = request(served, "GET", "/backtrace?locals=1")
        assert s == 200
        threads = {t["thread_name"]: t for t in bt["threads"]}
        top = threads.get("MainThread", {}).get("frames", [{}])[0].get("func")
        if top == "main_loop" or time.time() > deadline:
            break
        time.sleep(0.05)
    assert {"MainThread", "worker-0", "worker-1", "worker-2"} <= set(threads)
    main = threads["MainThread"]["frames"]
    assert (main[0]["func"], main[0]["lineno"]) == ("main_loop", line_of("serve.py", "MAIN-LINE"))
    assert main[0]["depth"] == 0 and main[0]["frame_type"] == "Python"
    w = [f for f in threads["worker-1"]["frames"] if f["func"] == "worker"][0]
    assert w["lineno"] == line_of("serve.py", "WORKER-LINE")
    assert w["locals"]["marker"] == "'worker-1'" and w["locals"]["n"] == "1"
    assert "locals" not in request(served, "GET", "/backtrace")[1]["threads"][0]["frames"][0]
    one = threads["worker-2"]["thread_id"]
    s, only = request(served, "GET", "/backtrace?thread=%d" % one)
    assert [t["thread_name"] for t in only["threads"]] == ["worker-2"]
    assert request(served, "GET", "/backtrace?thread=1")[0] == 404


def test_config_get_set_and_bad_values(served):
    s, r = request(served, "GET", "/config")
    names = {k["name"]: k for k in r["settings"]}
    assert {"probing.sample_rate", "probing.buffer_size", "probing.server.port",
            "probing.torch.enabled", "probing.sampler.hz"} <= set(names)
    assert names["probing.sampler.hz"]["default"] == "100" and names["probing.sampler.hz"]["description"]
    s, r = request(served, "POST", "/config", {"key": "probing.sampler.hz", "value": "250"})
    assert s == 200 and r["settings"][0]["value"] == "250"
    assert request(served, "GET", "/config?key=probing.sampler.hz")[1]["settings"][0]["value"] == "250"
    s, r = request(served, "POST", "/config", {"key": "probing.sample_rate", "value": "7"})
    assert s == 400 and r["error"] == "probing.sample_rate must be a number from 0.0 to 1.0, not '7'"
    assert request(served, "GET", "/config?key=probing.sample_rate")[1]["settings"][0]["value"] == "1"
    s, r = request(served, "POST", "/config", {"key": "no.such.key", "value": "1"})
    assert s == 404 and "unknown key" in r["error"]


def test_custom_tables(served):
    s, r = request(served, "GET", "/tables")
    assert s == 200 and r["tables"] == ["broken", "inventory"]
    s, r = request(served, "GET", "/tables/inventory")
    assert s == 200
    assert r["columns"] == [{"name": "item", "type": "TEXT"}, {"name": "count", "type": "INTEGER"},
                            {"name": "price", "type": "REAL"}]
    assert r["rows"] == [["apple", 3, 0.5], ["pear", 1, 2.0]]
    s, r = request(served, "GET", "/tables/broken")
    assert s == 500 and "RuntimeError: this table is broken on purpose" in r["error"]
    s, r = request(served, "GET", "/tables/nope")
    assert s == 404 and "no table nope" in r["error"]
    assert request(served, "GET", "/tables/inventory")[0] == 200  # a broken table harms nothing


def test_another_user_is_refused_on_the_unix_socket(served):
    code = ("import sys; sys.path.insert(0, %r); from control_client import request; "
            "print(request(%d)[0])" % (str(TARGETS.parent), served))

    def as_nobody():
        os.setgid(65534)
        os.setuid(65534)

    r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                       preexec_fn=as_nobody, timeout=30)
    assert r.stdout.strip() == "403", r.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_needs_a_token(python, target):
    port = _free_port()
    t = target(python, "serve.py", extra_env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "s3cret"})
    t.wait_ready()
    wait_for_server(t.proc.pid)
    assert request(port=port, token="s3cret")[0] == 200
    s, r = request(port=port)
    assert s == 401 and "token" in r["error"]
    assert request(port=port, token="wrong")[0] == 401
    assert request(port=port, token="s3cret", method="POST", path="/eval", body={"code": "2*3"})[1]["value"] == "6"


def test_tcp_without_a_token_makes_one_for_its_owner(python, target, probing_bin, tmp_path,
                                                     monkeypatch):
    """PROBING_PORT alone (the seeds' remote setup): the server listens with a token it made,
    kept in <ring dir>/token (0600); probing and the Python API on this host find it by
    themselves, a raw client without it gets 401, and other users (another data directory, a
    file others could read) still need it."""
    import json
    import stat

    from conftest import run_probing

    port = _free_port()
    t = target(python, "serve.py", extra_env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": ""})
    t.wait_ready()
    wait_for_server(t.proc.pid)
    token_file = t.data_dir / str(t.proc.pid) / "token"
    st = token_file.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    token = token_file.read_text().strip()
    assert len(token) == 64 and int(token, 16) >= 0
    info = json.loads((t.data_dir / str(t.proc.pid) / "process.json").read_text())
    assert info["tcp_port"] == port

    s, r = request(port=port)
    assert s == 401 and "token" in r["error"]
    assert request(port=port, token="wrong")[0] == 401
    assert request(port=port, token=token)[0] == 200

    address = "127.0.0.1:%d" % port
    monkeypatch.setenv("PROBING_DATA_DIR", str(t.data_dir))
    r = run_probing(probing_bin, "-t", address, "query", "SELECT count(*) AS n FROM python.stacks")
    assert r.returncode == 0 and "n" in r.stdout, r.stderr
    r = run_probing(probing_bin, "-t", "localhost:%d" % port, "eval", "6 * 7")
    assert r.returncode == 0 and "42" in r.stdout, r.stderr
    # The Python API, through the same session code.
    r = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import probing; print(probing.connect(address=%r).eval('6 * 7').value)" % address],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONUSERBASE=str(BUILD / "pyuser"), PROBING="0"))
    assert r.returncode == 0 and r.stdout.strip() == "42", r.stderr
    # A token file others could read is not ours to trust: not used.
    token_file.chmod(0o644)
    r = run_probing(probing_bin, "-t", address, "eval", "1")
    assert r.returncode != 0 and "a valid token is required" in r.stderr, r.stderr
    token_file.chmod(0o600)
    # Another user (here: another data directory) needs the token.
    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "elsewhere"))
    r = run_probing(probing_bin, "-t", address, "eval", "1")
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    assert "a valid token is required" in r.stderr
    r = run_probing(probing_bin, "-t", address, "eval", "6 * 7", token=token)
    assert r.returncode == 0 and "42" in r.stdout, r.stderr
    r = run_probing(probing_bin, "-t", address, "eval", "1", token="wrong")
    assert r.returncode != 0 and "a valid token is required" in r.stderr
    t.kill()
    err = t.proc.stderr.read()
    assert "probing: server listening on 0.0.0.0:%d; its token, made now, is in %s" % (
        port, token_file) in err, err


def test_tcp_with_a_token_writes_no_token_file(python, target):
    port = _free_port()
    t = target(python, "serve.py", extra_env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "s3"})
    t.wait_ready()
    wait_for_server(t.proc.pid)
    assert request(port=port, token="s3")[0] == 200
    assert not (t.data_dir / str(t.proc.pid) / "token").exists()
    t.kill()
    err = t.proc.stderr.read()
    assert "probing: server listening on 0.0.0.0:%d (clients give its PROBING_AUTH_TOKEN)" % port in err


def test_tcp_line_follows_the_banner_setting(python, target):
    port = _free_port()
    t = target(python, "serve.py",
               extra_env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "", "PROBING_BANNER": "off"})
    t.wait_ready()
    wait_for_server(t.proc.pid)
    assert request(port=port)[0] == 401
    assert (t.data_dir / str(t.proc.pid) / "token").exists()
    t.kill()
    assert "listening" not in t.proc.stderr.read()


def test_gil_held_forever(python, target):
    t = target(python, "serve.py", "hog")
    t.wait_ready()
    pid = t.proc.pid
    wait_for_server(pid)
    time.sleep(0.5)  # into the C call
    start = time.time()
    s, bt = request(pid, "GET", "/backtrace")
    assert s == 200 and time.time() - start < 1.0  # answered without the GIL
    main = {x["thread_name"]: x for x in bt["threads"]}["MainThread"]
    assert main["holds_gil"] is True
    assert any(f["func"] == "main_loop" and f["lineno"] == line_of("serve.py", "HOG-LINE")
               for f in main["frames"])
    start = time.time()
    s, r = request(pid, "POST", "/eval", {"code": "1"})
    assert s == 503
    assert r["error"] == "the interpreter has not released the GIL for 5 s; ring data is still available"
    assert 4.5 < time.time() - start < 8
    s, bt = request(pid, "GET", "/backtrace?locals=1")
    assert s == 200 and "has not released the GIL" in bt["locals_error"]
    assert request(pid, "GET", "/config")[0] == 200  # nothing else needs the GIL


def test_mixed_concurrent_clients_while_training(target, analyze_bin):
    # Debian's torch is for /usr/bin/python3 only.
    t = target("/usr/bin/python3", "../../samples/train_mlp.py")
    pid = t.proc.pid
    wait_for_server(pid, timeout=60)
    calls = [("GET", "/info", None), ("POST", "/eval", {"code": "sum(range(1000))"}),
             ("GET", "/backtrace", None), ("GET", "/backtrace?locals=1", None),
             ("GET", "/config", None), ("GET", "/tables", None)]

    def one(i):
        method, path, body = calls[i % len(calls)]
        return request(pid, method, path, body, timeout=60)[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses == [200] * 200
    assert t.proc.poll() is None  # still training
