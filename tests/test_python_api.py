"""The Python API (probing.connect, Probe.query/eval/backtrace/config/tables, probing.query in
the target itself), used the way a user's script uses it: a separate Python process importing
`probing`, against real targets; by pid and over TCP with a token; and its errors."""
import json
import os
import subprocess
import textwrap


from conftest import BUILD, ROOT
from control_client import wait_for_server

PY = "/usr/bin/python3"


def script(code, tmp_path, extra_env=None, probing="0"):
    """Runs `code` as a user's script (the probing package from this build); returns its
    stdout parsed as JSON (the script prints one JSON document)."""
    env = dict(os.environ, PYTHONUSERBASE=str(BUILD / "pyuser"), PROBING=probing,
               PROBING_DATA_DIR=str(tmp_path / "data"))
    env.pop("PYTHONPATH", None)
    env.update(extra_env or {})
    r = subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_connect_by_pid(served, tmp_path):
    out = script("""
        import json, time, probing
        time.sleep(1.2)  # a sealed second of stack samples
        p = probing.connect(pid=%d)
        df = p.query("SELECT thread_name, count(*) AS frames, max(ts) AS last "
                     "FROM python.stacks GROUP BY thread_name ORDER BY thread_name")
        r = p.eval("print('hi'); 6 * 7")
        try:
            p.eval("1 / 0")
            raised = None
        except probing.RemoteError as e:
            raised = [e.type, str(e), "ZeroDivisionError" in e.traceback]
        frames = p.backtrace()
        before = p.config("probing.sample_rate")
        after = p.config("probing.sample_rate", 0.5)
        try:
            p.config("probing.sample_rate", "lots")
            bad = None
        except probing.ProbingError as e:
            bad = str(e)
        try:
            p.query("SELECT * FROM python.broken")
            broken = None
        except probing.ProbingError as e:
            broken = str(e)
        print(json.dumps({
            "broken": broken,
            "type": type(df).__name__, "columns": list(df.columns),
            "dtypes": [str(df[c].dtype) for c in df.columns],
            "threads": df["thread_name"].tolist(),
            "eval": [r.value, r.stdout], "raised": raised,
            "funcs": sorted({f["func"] for f in frames if f["thread_name"] == "MainThread"}),
            "config": [before, after, len(p.config())], "bad": bad,
            "tables": p.tables(),
            "custom": p.query("SELECT item, count FROM python.inventory ORDER BY item").to_dict("records"),
        }))
    """ % served.proc.pid, tmp_path)
    assert out["type"] == "DataFrame"  # pandas is importable under /usr/bin/python3
    assert "this table is broken on purpose" in out["broken"]
    assert out["columns"] == ["thread_name", "frames", "last"]
    assert out["dtypes"] == ["object", "int64", "float64"]  # column types kept
    assert "MainThread" in out["threads"]
    assert out["eval"] == ["42", "hi\n"]
    assert out["raised"] == ["ZeroDivisionError", "ZeroDivisionError: division by zero", True]
    assert "main_loop" in out["funcs"]
    assert out["config"][:2] == ["1", "0.5"] and out["config"][2] > 5
    assert out["bad"] and "probing.sample_rate" in out["bad"]
    assert {"python.stacks", "python.torch_trace", "python.inventory"} <= set(out["tables"])
    assert out["custom"] == [{"item": "apple", "count": 3}, {"item": "pear", "count": 1}]


def test_connect_over_tcp_with_a_token(served_tcp, tmp_path):
    t, addr = served_tcp
    out = script("""
        import json, probing
        p = probing.connect(address="%s", token="tok")
        got = [p.eval("2 + 2").value, p.info()["pid"]]
        errors = []
        for token in ("nope", None):
            try:
                probing.connect(address="%s", token=token)
            except probing.ProbingError as e:
                errors.append(str(e))
        print(json.dumps({"got": got, "errors": errors}))
    """ % (addr, addr), tmp_path)
    assert out["got"] == ["4", t.proc.pid]
    assert len(out["errors"]) == 2 and all("a valid token is required" in e for e in out["errors"])


def test_errors_say_what_the_command_line_says(tmp_path, probing_bin):
    plain = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        out = script("""
            import json, probing
            msgs = []
            for pid in (%d, 4194304):
                try:
                    probing.connect(pid=pid)
                except probing.ProbingError as e:
                    msgs.append(str(e))
            try:
                probing.connect(pid=1, address="h:1")
            except ValueError as e:
                msgs.append(str(e))
            print(json.dumps(msgs))
        """ % plain.pid, tmp_path)
    finally:
        plain.kill()
        plain.wait()
    assert out[0] == "no recorder in process %d: run `probing -t %d inject` first" % (plain.pid,
                                                                                       plain.pid)
    r = subprocess.run([str(probing_bin), "-t", "4194304", "info"], capture_output=True, text=True)
    assert out[1] == r.stderr.strip()[len("probing: "):] == "no such process 4194304"
    assert "not both" in out[2]


def test_notebook_style_torch_trace_into_a_dataframe(tmp_path):
    train = subprocess.Popen(
        [PY, str(ROOT / "samples" / "train_mlp.py")], stdout=subprocess.DEVNULL,
        env=dict(os.environ, PROBING="1", PYTHONUSERBASE=str(BUILD / "pyuser"),
                 PROBING_DATA_DIR=str(tmp_path / "data")))
    try:
        wait_for_server(train.pid)
        out = script("""
            import json, time, probing
            p = probing.connect(pid=%d)
            for _ in range(100):  # until some steps are in the ring
                df = p.query("SELECT step, module, stage, duration FROM python.torch_trace")
                if len(df) and df["step"].nunique() > 20:
                    break
                time.sleep(0.2)
            per_module = (df[df.stage == "forward"].groupby("module")["duration"].mean() * 1e3)
            steps = df.groupby("step")["duration"].count()
            print(json.dumps({"modules": sorted(per_module.index.tolist()),
                              "all_positive": bool((per_module > 0).all()),
                              "calls_per_step": int(steps.median())}))
        """ % train.pid, tmp_path)
    finally:
        train.kill()
        train.wait()
    # The 8-layer MLP: Sequential and its 15 children, forward; backward and the optimizer step.
    assert "0" in out["modules"] and "14" in out["modules"] and out["all_positive"]
    assert out["calls_per_step"] >= 16


def test_query_inside_the_target_itself(tmp_path):
    out = script("""
        import json, time, probing
        time.sleep(1.5)
        rows = probing.query("SELECT count(DISTINCT sample_id) AS n FROM python.stacks "
                             "WHERE thread_name = 'MainThread'")
        bt = probing.query("SELECT func FROM python.backtrace WHERE thread_name = 'MainThread' "
                           "ORDER BY depth")
        print(json.dumps({"n": int(rows["n"][0]), "top": bt["func"].tolist()}))
    """, tmp_path, probing="1")
    assert out["n"] >= 50
    # The main thread is seen waiting in the very call that asked.
    assert out["top"][-2:] == ["query", "<module>"]


def test_a_table_and_metrics_live_and_in_a_recording(target, tmp_path, monkeypatch, probing_bin,
                                                      analyze_bin):
    monkeypatch.setenv("PROBING_DATA_DIR", str(tmp_path / "data"))
    t = target(PY, "metrics.py", "60")
    t.wait_ready()
    wait_for_server(t.proc.pid)
    out = script("""
        import json, time, probing
        p = probing.connect(pid=%d)
        for _ in range(100):  # readings come once a second, sealed once a second
            m = p.query("SELECT name, value, time FROM python.metrics ORDER BY time")
            if len(m) >= 3:
                break
            time.sleep(0.2)
        print(json.dumps({"names": sorted(set(m["name"])), "values": m["value"].tolist(),
                          "progress": p.query("SELECT what, value FROM python.progress")
                                       .to_dict("records")}))
    """ % t.proc.pid, tmp_path)
    assert out["names"] == ["ticks"]  # the raising and the NaN metric are skipped
    assert out["values"] == sorted(out["values"]) and out["values"][-1] > out["values"][0] > 0
    assert out["progress"][0]["what"] == "ticks" and out["progress"][0]["value"] > 0
    t.kill()
    err = t.proc.stderr.read()
    assert err.count("metric broken skipped: RuntimeError: this metric is broken on purpose") == 1
    assert err.count("metric nan skipped: not a finite number") == 1
    # In a recording too.
    rec = tmp_path / "metrics.ptrace"
    r = subprocess.run([str(probing_bin), "record", "-o", str(rec), "--", PY,
                        str(ROOT / "tests" / "targets" / "metrics.py"), "5"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PROBING_DATA_DIR=str(tmp_path / "data2")))
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(analyze_bin), str(rec), "SELECT name, count(*) AS n FROM "
                        "python.metrics GROUP BY name", "--format", "json"],
                       capture_output=True, text=True, timeout=60)
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows] == ["ticks"] and rows[0]["n"] >= 2


def test_open_a_recording_or_a_ring_directory_in_a_notebook(served, tmp_path, probing_bin):
    pid = served.proc.pid
    rec = tmp_path / "nb.ptrace"
    r = subprocess.run([str(probing_bin), "-t", str(pid), "record", "-o", str(rec), "--duration",
                        "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    served.kill()  # what it left: its ring directory answers SQL, nothing live
    out = script("""
        import json, probing
        got = {}
        for name, where in (("recording", %r), ("ring directory", %r)):
            p = probing.open(where)
            df = p.query("SELECT thread_name, count(*) AS n FROM python.stacks GROUP BY 1")
            try:
                p.backtrace()
                refused = None
            except probing.ProbingError as e:
                refused = str(e)
            got[name] = {"type": type(df).__name__, "threads": sorted(df["thread_name"]),
                         "tables": "python.stacks" in p.tables(), "refused": refused}
        try:
            probing.open("/nonexistent/run.ptrace")
            missing = None
        except probing.ProbingError as e:
            missing = str(e)
        print(json.dumps({"got": got, "missing": missing}))
    """ % (str(rec), os.path.join(os.environ["PROBING_DATA_DIR"], str(pid))), tmp_path)
    for name, g in out["got"].items():
        assert g["type"] == "DataFrame" and "MainThread" in g["threads"] and g["tables"], name
        assert "needs a live process" in g["refused"], name
    assert out["missing"] == "/nonexistent/run.ptrace: no such file or directory"
