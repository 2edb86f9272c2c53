"""Golden tests for probing-analyze: tests/golden/NAME.cmd holds the arguments, one per line
({fixtures} is tests/fixtures, given relative to tests/, where the command runs, so output that
names a path is the same in every checkout); NAME.out what the run must print: standard output, then standard
error and the exit code when there are any. After a deliberate change of output, rewrite them
with PROBING_UPDATE_GOLDEN=1 and review the diff."""
import os
import subprocess

import pytest

from conftest import FIXTURES, ROOT

GOLDEN = ROOT / "tests" / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.cmd"))


def observed(analyze_bin, name):
    args = [a.replace("{fixtures}", FIXTURES.name)
            for a in (GOLDEN / (name + ".cmd")).read_text().splitlines()]
    env = dict(os.environ, TZ="UTC")
    r = subprocess.run([str(analyze_bin), *args], capture_output=True, text=True, timeout=60,
                       env=env, cwd=FIXTURES.parent)
    text = r.stdout
    if r.stderr:
        text += "--- standard error ---\n" + r.stderr
    if r.returncode != 0:
        text += "--- exit code %d ---\n" % r.returncode
    return text


@pytest.mark.parametrize("name", CASES)
def test_golden(name, analyze_bin):
    got = observed(analyze_bin, name)
    expected = GOLDEN / (name + ".out")
    if os.environ.get("PROBING_UPDATE_GOLDEN") == "1":
        expected.write_text(got)
    assert expected.exists(), "no %s: run with PROBING_UPDATE_GOLDEN=1 and review it" % expected
    assert got == expected.read_text()


def test_every_case_has_its_output():
    outs = sorted(p.stem for p in GOLDEN.glob("*.out"))
    assert outs == CASES
