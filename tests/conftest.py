"""Test-suite wiring: isolated Prefect/temp folders, fixture plugins, fail on logged errors."""

from __future__ import annotations

import os
import tempfile

# Isolate Prefect before anything imports it: its own home, no telemetry, quiet logs.
_scratch = tempfile.mkdtemp(prefix="depthmine-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_scratch, "prefect"))
os.environ.setdefault("DASK_TEMPORARY_DIRECTORY", os.path.join(_scratch, "dask"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_UI_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests decide threads explicitly; keep BLAS/OpenCV from oversubscribing the 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = [
    "tests.fixtures.movies",
    "tests.fixtures.datasets",
    "tests.fixtures.prefect",
    "tests.fixtures.stereo_gt",
]


# --------------------------------------------------------------------------- fail on logged errors

import logging  # noqa: E402

import pytest  # noqa: E402


class _ErrorRecords(logging.Handler):
    """Keeps the ERROR (and worse) records that reach the root logger during one test."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _fail_on_logged_errors(request):
    """A test that logs an ERROR fails, even when its assertions pass: an error nobody expected is a bug
    the assertions missed. Tests that provoke errors on purpose say so with
    ``@pytest.mark.logs_errors``."""
    handler = _ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("logs_errors") is None:
        lines = [f"{r.levelname} {r.name}: {r.getMessage()}"[:300] for r in handler.records[:5]]
        pytest.fail(
            "logged errors (mark the test @pytest.mark.logs_errors if they are expected):\n  " + "\n  ".join(lines),
            pytrace=False,
        )


# --------------------------------------------------------------------------- console handlers on live streams

import sys  # noqa: E402


@pytest.fixture(autouse=True)
def _console_handlers_on_live_streams():
    """Point logging handlers whose stream was closed back at the real stderr, before each test.

    Prefect binds its console handler to ``sys.stderr`` when it first configures logging; if that
    happens inside a test that captures output (an in-process CLI test with ``capsys``), the handler
    keeps the capture's stream, which pytest closes afterwards. Every later log line through it then
    prints "--- Logging error ---" with a traceback into the next test's stderr, and a CLI test that
    asserts "no traceback" fails depending on the order tests ran in."""
    loggers = [logging.getLogger()] + [
        lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for handler in lg.handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False) and isinstance(handler, logging.StreamHandler):
                handler.stream = sys.__stderr__  # not setStream: it flushes the closed stream first
                console = getattr(handler, "console", None)  # Prefect's rich console keeps its own file
                if console is not None:
                    console.file = sys.__stderr__
    yield
