"""`probing -t PID ...` against real targets: backtrace, eval, config, info, tables, list, and the
errors a user meets (no such pid, no recorder, a dead process, no target, TCP tokens)."""
import json
import os
import signal
import subprocess
import time


from conftest import TARGETS, line_of
from control_client import wait_for_server

PY = "/usr/bin/python3"


def test_backtrace_text_and_json(served, run, probing_bin):
    pid = served.proc.pid
    r = run(probing_bin, "-t", pid, "backtrace")
    assert r.returncode == 0, r.stderr
    assert "Thread %d MainThread" % pid in r.stdout
    assert "main_loop (%s:%d)" % (TARGETS / "serve.py", line_of("serve.py", "MAIN-LINE")) in r.stdout
    assert "worker-1" in r.stdout
    r = run(probing_bin, "-t", pid, "--format", "json", "backtrace", "--locals")
    rows = json.loads(r.stdout)
    worker = [x for x in rows if x["thread_name"] == "worker-0" and x["func"] == "worker"][0]
    assert worker["lineno"] == line_of("serve.py", "WORKER-LINE")
    assert json.loads(worker["locals"])["marker"] == "'worker-0'"
    tid = worker["thread_id"]
    r = run(probing_bin, "-t", pid, "--format", "jsonl", "backtrace", "--thread", tid)
    assert {json.loads(l)["thread_name"] for l in r.stdout.splitlines()} == {"worker-0"}
    r = run(probing_bin, "-t", pid, "--format", "json", "backtrace", "--native")
    rows = json.loads(r.stdout)
    assert r.returncode == 0 and {"Native", "Python"} <= {x["frame_type"] for x in rows}


def test_eval(served, run, probing_bin):
    pid = served.proc.pid
    r = run(probing_bin, "-t", pid, "eval", "x = 6 * 7\nprint('hi')\nx")
    assert r.returncode == 0 and r.stdout == "hi\n42\n"
    r = run(probing_bin, "-t", pid, "eval", "1/0")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("Traceback") and "ZeroDivisionError: division by zero" in r.stderr
    assert "_probing_eval" not in r.stderr  # the user's code only
    r = run(probing_bin, "-t", pid, "eval", "while True: pass", "--timeout", "0.5")
    assert r.returncode == 1 and "TimeoutError" in r.stderr


def test_config(served, run, probing_bin):
    pid = served.proc.pid
    r = run(probing_bin, "-t", pid, "--format", "csv", "config")
    assert r.returncode == 0 and "probing.sample_rate,1,1," in r.stdout
    r = run(probing_bin, "-t", pid, "config", "probing.sample_rate=0.5")
    assert r.returncode == 0 and "0.5" in r.stdout
    r = run(probing_bin, "-t", pid, "--format", "json", "config", "probing.sample_rate")
    assert json.loads(r.stdout)[0]["value"] == "0.5"
    r = run(probing_bin, "-t", pid, "config", "probing.sample_rate=2")
    assert r.returncode == 1
    assert r.stderr == "probing: probing.sample_rate must be a number from 0.0 to 1.0, not '2'\n"
    r = run(probing_bin, "-t", pid, "config", "no.such=1")
    assert r.returncode == 1 and "unknown key no.such" in r.stderr


def test_info_tables_and_list(served, run, probing_bin):
    pid = served.proc.pid
    r = run(probing_bin, "-t", pid, "--format", "json", "info")
    info = {row["key"]: row["value"] for row in json.loads(r.stdout)}
    assert info["pid"] == pid and info["socket"] == "@probing-%d" % pid
    r = run(probing_bin, "-t", pid, "--format", "json", "tables")
    rows = json.loads(r.stdout)
    assert {"table": "python.inventory", "column": "count", "type": "INTEGER",
            "source": "live process", "description": "registered with @probing.table"} in rows
    assert "table broken raised RuntimeError" in r.stderr and r.returncode == 0
    r = run(probing_bin, "--format", "json", "list")
    [row] = json.loads(r.stdout)
    assert row["pid"] == pid and row["state"] == "running" and row["python"].startswith("3.")
    assert "serve.py" in row["command"] and row["data_bytes"] > 0


def test_a_dead_process_is_gone_but_readable_and_gc(served, run, probing_bin, analyze_bin):
    pid = served.proc.pid
    time.sleep(1.2)  # a sealed segment
    served.proc.send_signal(signal.SIGKILL)
    served.proc.wait()
    r = run(probing_bin, "-t", pid, "backtrace")
    assert r.returncode == 1
    data = os.path.join(os.environ["PROBING_DATA_DIR"], str(pid))
    assert r.stderr == ("probing: process %d is gone; what it recorded is still readable: "
                        "probing -t %s query ..., or probing-analyze %s\n" % (pid, data, data))
    r = run(analyze_bin, data)
    assert r.returncode == 0 and "MainThread" in r.stdout
    r = run(probing_bin, "--format", "json", "list")
    assert json.loads(r.stdout)[0]["state"] == "dead (rings readable)"
    r = run(probing_bin, "list", "--gc", "--all")
    assert r.returncode == 0 and "removed the data of 1 dead process(es)" in r.stderr
    assert not os.path.exists(data)


def test_errors(run, probing_bin, tmp_path):
    r = run(probing_bin, "-t", "999999", "backtrace")
    assert (r.returncode, r.stderr) == (1, "probing: no such process 999999\n")
    plain = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    try:
        r = run(probing_bin, "-t", plain.pid, "eval", "1")
        assert r.returncode == 1
        assert r.stderr == "probing: no recorder in process %d: run `probing -t %d inject` first\n" % (plain.pid, plain.pid)
    finally:
        plain.kill()
        plain.wait()
    r = run(probing_bin, "backtrace")
    assert r.returncode == 2 and "backtrace needs -t TARGET" in r.stderr
    r = run(probing_bin, "-t", "not-a-target", "info")
    assert r.returncode == 1 and "neither a pid, host:port" in r.stderr
    r = run(probing_bin, "eval")
    assert r.returncode == 2


def test_tcp_target_with_token(served_tcp, run, probing_bin):
    t, addr = served_tcp
    r = run(probing_bin, "-t", addr, "--token", "tok", "eval", "2 + 2")
    assert r.returncode == 0 and r.stdout == "4\n"
    r = run(probing_bin, "-t", addr, "eval", "2 + 2")
    assert r.returncode == 1 and "a valid token is required" in r.stderr
    r = run(probing_bin, "-t", addr, "--token", "nope", "info")
    assert r.returncode == 1 and "a valid token is required" in r.stderr


def test_memory_now_and_trend(served, run, probing_bin):
    pid = served.proc.pid
    time.sleep(2.5)  # two memory samples sealed
    r = run(probing_bin, "-t", pid, "memory")
    assert r.returncode == 0, r.stderr
    first, trend = r.stdout.splitlines()[:2]
    assert first.startswith("RSS ") and "Python blocks" in first and "CUDA not in use" in first
    assert trend.startswith("Over the last ")
    r = run(probing_bin, "-t", pid, "--format", "json", "memory", "--last", "1")
    [row] = json.loads(r.stdout)
    assert row["rss"] > 0 and row["cuda_allocated"] is None and row["threads"] >= 4


def test_query_live_tables_and_the_seeds_examples(served, run, probing_bin):
    pid = served.proc.pid
    time.sleep(1.5)  # a sealed second of samples
    q = lambda sql: run(probing_bin, "-t", pid, "--format", "json", "query", sql)
    r = q("SELECT count(DISTINCT sample_id) AS n FROM python.stacks WHERE thread_name = 'MainThread'")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["n"] >= 50
    # The seeds' own queries, as written.
    r = q("SELECT func, file, lineno FROM python.backtrace ORDER BY depth LIMIT 3")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 3
    r = q("SELECT name, value FROM information_schema.df_settings LIMIT 5")
    assert {"name": "probing.sample_rate", "value": "1"} in json.loads(r.stdout)
    r = q("SELECT count(*) AS n FROM python.memory WHERE ts > now() - interval '5 minutes'")
    assert json.loads(r.stdout)[0]["n"] >= 1
    r = q("SELECT item, count FROM python.inventory ORDER BY item")  # @probing.table
    assert json.loads(r.stdout) == [{"item": "apple", "count": 3}, {"item": "pear", "count": 1}]
    r = q("SELECT item, count FROM inventory ORDER BY item")  # without its schema too
    assert json.loads(r.stdout) == [{"item": "apple", "count": 3}, {"item": "pear", "count": 1}]
    r = q("WITH inv AS (SELECT * FROM python.inventory) SELECT count(*) AS n FROM inv")
    assert json.loads(r.stdout) == [{"n": 2}]
    # The seeds' views.
    r = q("SELECT count(*) AS n, min(memory_mb) > 1 AS mb FROM memory_usage "
          "WHERE timestamp > now() - interval '5 min'")
    assert json.loads(r.stdout) == [{"n": json.loads(r.stdout)[0]["n"], "mb": 1}]
    r = q("SELECT hour(timestamp) AS h, avg(memory_mb) AS m FROM memory_usage "
          "GROUP BY hour(timestamp)")
    assert all(0 <= x["h"] <= 23 and x["m"] > 1 for x in json.loads(r.stdout))
    r = q("SELECT count(*) AS n FROM PYTHON.STACKS")  # names are case-insensitive in SQL
    assert json.loads(r.stdout)[0]["n"] > 0
    r = q("SELECT count(*) AS n FROM Python.Backtrace")  # live tables too
    assert json.loads(r.stdout)[0]["n"] > 0
    r = run(probing_bin, "-t", pid, "query", "SELEC 1")
    assert (r.returncode, r.stderr) == (1, 'probing: SQL: near "SELEC": syntax error\n')
    r = run(probing_bin, "-t", pid, "query", "SELECT * FROM python.nope")
    assert r.returncode == 1 and "no such table: python.nope; known tables: python.allocations, python.backtrace" in r.stderr
    assert "memory_usage" in r.stderr and "own tables (@probing.table): broken, inventory" in r.stderr


def test_query_a_killed_process_from_its_rings(served, run, probing_bin):
    pid = served.proc.pid
    time.sleep(1.5)
    served.proc.send_signal(signal.SIGKILL)
    served.proc.wait()
    r = run(probing_bin, "-t", pid, "--format", "json", "query",
            "SELECT func FROM python.stacks WHERE thread_name = 'MainThread' AND depth = 0 "
            "GROUP BY func ORDER BY count(*) DESC LIMIT 1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"func": "main_loop"}]
    # A table named twice (a self-join) is copied into SQLite; named once, it is read in place:
    # the same rows either way.
    q = lambda sql: json.loads(run(probing_bin, "-t", pid, "--format", "json", "query", sql).stdout)
    joined = q("SELECT count(*) AS n FROM python.stacks a JOIN python.stacks b "
               "ON a.sample_id = b.sample_id AND a.depth = b.depth")[0]["n"]
    assert joined == q("SELECT count(*) AS n FROM python.stacks")[0]["n"] > 0
    r = run(probing_bin, "-t", pid, "query", "SELECT * FROM python.backtrace")
    assert r.returncode == 1 and "is gone" in r.stderr  # only the live process has that one
