"""Shared fixtures for the end-to-end tests: where the built binaries are, and helpers to run
them. Tests drive the real binaries (built by `make build`) as a user would."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("PROBING_BUILD_DIR", ROOT / "build"))
FIXTURES = ROOT / "tests" / "fixtures"


def _binary(name):
    path = BUILD / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make build` first")
    return path


@pytest.fixture(scope="session")
def probing_bin():
    return _binary("probing")


@pytest.fixture(scope="session")
def analyze_bin():
    return _binary("probing-analyze")


@pytest.fixture
def run():
    """run(binary, *args) -> CompletedProcess with text stdout/stderr; never hangs."""

    def _run(binary, *args, timeout=60):
        return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)

    return _run
