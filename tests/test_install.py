"""`probing install --python PYTHON`: the PROBING=1 start-up hook for one interpreter or venv
(live/install.h), and what `probing -t PID` says of a process whose environment asked for a
recorder it does not have. Real venvs of the system interpreter and of every pyenv one found;
each test removes what it made."""
import os
import subprocess
import time

import pytest

from conftest import BUILD

PY = "/usr/bin/python3"


def make_venv(python, where):
    r = subprocess.run([python, "-m", "venv", "--without-pip", str(where)], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip("%s cannot make a venv here: %s" % (python, r.stderr.strip()[-200:]))
    return where / "bin" / "python"


def site_of(venv_python):
    return subprocess.run([str(venv_python), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def recorded(venv_python, data, code="print('ran')"):
    """Runs the venv's interpreter with PROBING=1 and no help from PYTHONUSERBASE: only an
    installed hook can start the recorder."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONUSERBASE")}
    env.update(PROBING="1", PROBING_DATA_DIR=str(data))
    return subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)


def test_install_into_a_venv_starts_the_recorder_and_remove_takes_it_out(python, run,
                                                                        probing_bin, tmp_path):
    venv = make_venv(python, tmp_path / "venv")
    data = tmp_path / "data"
    before = recorded(venv, data)
    assert before.returncode == 0 and "probing: enabled" not in before.stderr
    r = run(probing_bin, "install", "--python", venv)
    assert r.returncode == 0, r.stderr
    pth = os.path.join(site_of(venv), "probing.pth")
    assert "Installed the start-up hook for %s" % venv in r.stdout and pth in r.stdout, r.stdout
    assert "recorder: %s/lib/probing_recorder_cp" % BUILD in r.stdout, r.stdout
    after = recorded(venv, data)
    assert after.returncode == 0 and after.stdout == "ran\n"
    assert "probing: enabled for process" in after.stderr, after.stderr
    assert any(d.name.isdigit() for d in data.iterdir())
    # Installing again replaces its own file.
    assert run(probing_bin, "install", "--python", venv).returncode == 0
    r = run(probing_bin, "install", "--python", venv, "--remove")
    assert r.returncode == 0 and "Removed the start-up hook" in r.stdout, r.stdout + r.stderr
    assert not os.path.exists(pth)
    assert "probing: enabled" not in recorded(venv, data).stderr
    r = run(probing_bin, "install", "--python", venv, "--remove")
    assert r.returncode == 0 and "No start-up hook of probing" in r.stdout


def test_install_refuses_what_it_cannot_serve(run, probing_bin, tmp_path):
    r = run(probing_bin, "install", "--python", "/bin/true")
    assert (r.returncode, r.stderr) == (1, "probing: /bin/true is not a Python interpreter we "
                                           "can use\n")
    r = run(probing_bin, "install", "--python", tmp_path / "no-such-python")
    assert r.returncode == 1 and "cannot run" in r.stderr and r.stderr.count("\n") == 1
    venv = make_venv(PY, tmp_path / "venv")
    r = run(probing_bin, "install", "--python", venv, "--user")
    assert r.returncode == 1 and "virtual environment" in r.stderr
    # A probing.pth of someone else's is left alone.
    pth = os.path.join(site_of(venv), "probing.pth")
    with open(pth, "w") as f:
        f.write("/somewhere/else\n")
    for extra in ([], ["--remove"]):
        r = run(probing_bin, "install", "--python", venv, *extra)
        assert r.returncode == 1 and "was not written by probing" in r.stderr, r.stderr
    assert open(pth).read() == "/somewhere/else\n"
    r = run(probing_bin, "-t", "1", "install")
    assert r.returncode == 2 and "install takes no target" in r.stderr


def test_a_process_that_asked_for_a_recorder_is_told_why_it_has_none(run, probing_bin, tmp_path):
    venv = make_venv(PY, tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONUSERBASE")}
    env.update(PROBING="1", PROBING_DATA_DIR=str(tmp_path / "data"))
    p = subprocess.Popen([str(venv), "-c", "import time; time.sleep(60)"], env=env,
                         stderr=subprocess.DEVNULL)
    q = subprocess.Popen(["sleep", "60"], env=env)
    try:
        r = run(probing_bin, "-t", p.pid, "backtrace")
        assert r.returncode == 1 and "the recorder may not be up yet" in r.stderr, r.stderr
        time.sleep(3.3)  # older than 3 s: no longer "starting"
        r = run(probing_bin, "-t", p.pid, "backtrace")
        assert r.returncode == 1, r.stderr
        assert ("no recorder in process %d, though its environment has PROBING=1: its "
                "interpreter did not load the start-up hook" % p.pid) in r.stderr, r.stderr
        assert "probing install --python %s" % venv in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1
        r = run(probing_bin, "-t", q.pid, "backtrace")
        assert r.returncode == 1 and "it is not a Python interpreter" in r.stderr, r.stderr
    finally:
        for proc in (p, q):
            proc.kill()
            proc.wait()


def test_record_of_a_command_says_soon_why_no_recorder_starts(probing_bin, tmp_path):
    """`probing record -- CMD`: a command that is not Python is said within a second; a Python
    without the hook gets "waiting" within 2 s, then why and what to run."""
    venv = make_venv(PY, tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONUSERBASE")}
    env.update(PROBING_DATA_DIR=str(tmp_path / "data"))
    procs = {}
    try:
        for name, cmd in (("sleep", ["sleep", "30"]),
                          ("venv", [str(venv), "-c", "import time; time.sleep(30)"])):
            err = open(tmp_path / (name + ".err"), "w")
            procs[name] = subprocess.Popen(
                [str(probing_bin), "record", "-o", str(tmp_path / (name + ".ptrace")), "--", *cmd],
                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
        time.sleep(1.5)
        said = (tmp_path / "sleep.err").read_text()
        assert "sleep (process" in said and "does not run Python" in said, said
        time.sleep(4.5)
        said = (tmp_path / "venv.err").read_text()
        assert "waiting for the recorder in %s (process" % venv in said, said
        assert "still no recorder in %s (process" % venv in said, said
        assert "its interpreter did not load the start-up hook" in said, said
        assert "probing install --python %s" % venv in said, said
    finally:
        for p in procs.values():
            os.killpg(p.pid, 9)
            p.wait()
