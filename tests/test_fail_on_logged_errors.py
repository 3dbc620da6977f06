"""The suite's autouse fixture fails a test that logs an ERROR, unless the test is marked ``logs_errors``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INNER = """
import logging

import pytest

from tests.conftest import _fail_on_logged_errors  # noqa: F401  (the autouse fixture under test)


def test_quiet():
    logging.getLogger("depthmine.inner").warning("a warning is fine")


def test_logs_an_error():
    logging.getLogger("depthmine.inner").error("boom")


@pytest.mark.logs_errors
def test_expects_an_error():
    logging.getLogger("depthmine.inner").error("boom, on purpose")
"""


def test_a_logged_error_fails_the_test_unless_marked(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-o",
            "addopts=",
            "-o",
            "markers=logs_errors: expected",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_inner.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "3 passed, 1 error" in out, out  # the failing check runs at teardown
    assert "test_logs_an_error" in out and "boom" in out and "logs_errors" in out
