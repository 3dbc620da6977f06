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
