"""Retention of dead processes' data (live/recorders.h, docs/configuration.md): every recorder
applies probing.retention.days and probing.retention.max_mb to the data directory as it starts,
and `probing list --gc` does too; `--gc --all` removes every dead process's data. Real recorders
in real processes; the ages are set with os.utime on their directories."""
import json
import os
import subprocess
import time

from conftest import BUILD

PY = "/usr/bin/python3"


def env_for(data, **extra):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update({"PROBING": "1", "PROBING_DATA_DIR": str(data), "PROBING_BANNER": "off",
                "PROBING_BUFFER_SIZE": "1024", "PYTHONUSERBASE": str(BUILD / "pyuser")})
    env.update(extra)
    return env


def recorded_and_gone(data, seconds=0.0, **extra):
    """A process that records for a moment and exits: its data directory stays behind."""
    p = subprocess.Popen([PY, "-c", "import time; time.sleep(%r)" % seconds],
                         env=env_for(data, **extra), stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    p.stderr = err
    return p, data / str(p.pid)


def age(path, days):
    """Makes a process's data look last written `days` ago."""
    t = time.time() - days * 86400
    for root, _, files in os.walk(path):
        for f in files:
            os.utime(os.path.join(root, f), (t, t))
        os.utime(root, (t, t))


def size(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def test_a_starting_recorder_removes_data_older_than_the_age_bound(tmp_path):
    data = tmp_path / "data"
    _, old = recorded_and_gone(data)
    _, recent = recorded_and_gone(data)
    age(old, 3)
    age(recent, 0.5)
    # Retention runs on the recorder's sampler thread as it starts: give it a moment.
    p, new = recorded_and_gone(data, 1.0, PROBING_RETENTION_DAYS="1")
    assert not old.exists(), p.stderr
    assert recent.exists() and new.exists()


def test_the_size_bound_keeps_the_newest_and_list_gc_applies_it(run, probing_bin, tmp_path,
                                                              monkeypatch):
    data = tmp_path / "data"
    dirs = [recorded_and_gone(data, PROBING_BUFFER_SIZE="1536")[1] for _ in range(4)]
    for i, d in enumerate(dirs):
        age(d, 0.1 * (4 - i))  # dirs[0] the oldest
    each = max(size(d) for d in dirs)
    bound_mb = -(-2 * each // (1 << 20))  # room for two, not three
    assert 2 * each <= bound_mb << 20 < 3 * each
    monkeypatch.setenv("PROBING_DATA_DIR", str(data))
    monkeypatch.setenv("PROBING_RETENTION_MAX_MB", str(bound_mb))
    r = run(probing_bin, "list", "--gc")
    assert r.returncode == 0, r.stderr
    assert "removed the data of 2 dead process(es)" in r.stderr, r.stderr
    assert [d.exists() for d in dirs] == [False, False, True, True]
    # Within the bounds now: a second pass removes nothing.
    r = run(probing_bin, "list", "--gc")
    assert "removed the data of 0 dead process(es)" in r.stderr, r.stderr
    r = run(probing_bin, "list", "--gc", "--all")
    assert r.returncode == 0 and "removed the data of 2 dead process(es)" in r.stderr, r.stderr
    assert not any(d.exists() for d in dirs)


def test_a_running_process_is_never_removed(served, run, probing_bin, monkeypatch):
    mine = served.data_dir / str(served.proc.pid)
    age(mine, 30)
    monkeypatch.setenv("PROBING_RETENTION_DAYS", "1")
    monkeypatch.setenv("PROBING_RETENTION_MAX_MB", "1")
    r = run(probing_bin, "list", "--gc", "--all")
    assert r.returncode == 0 and "removed the data of 0 dead process(es)" in r.stderr, r.stderr
    r = run(probing_bin, "list", "--gc")
    assert r.returncode == 0 and "removed the data of 0 dead process(es)" in r.stderr, r.stderr
    assert (mine / "process.json").exists()
    r = run(probing_bin, "-t", served.proc.pid, "--format", "json", "config",
            "probing.retention.days")
    assert r.returncode == 0, r.stderr
    assert [(x["name"], x["value"]) for x in json.loads(r.stdout)] == [("probing.retention.days",
                                                                        "7")]


def test_bad_bounds_are_said_and_the_defaults_kept(run, probing_bin, tmp_path, monkeypatch):
    data = tmp_path / "data"
    p, kept = recorded_and_gone(data, PROBING_RETENTION_DAYS="soon")
    assert "PROBING_RETENTION_DAYS=soon ignored: " in p.stderr, p.stderr
    age(kept, 3)
    monkeypatch.setenv("PROBING_DATA_DIR", str(data))
    monkeypatch.setenv("PROBING_RETENTION_MAX_MB", "-5")
    r = run(probing_bin, "list", "--gc")
    assert r.returncode == 0, r.stderr
    assert "PROBING_RETENTION_MAX_MB=-5 ignored: must be a whole number of MB" in r.stderr
    assert kept.exists()  # 3 days is within the default 7
    r = run(probing_bin, "list", "--all")
    assert r.returncode != 0 and "--all goes with --gc" in r.stderr
