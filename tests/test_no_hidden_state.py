"""No state hidden in module imports: importing any project module leaves the environment as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter, so modules the test session already imported cannot hide a change.
SCRIPT = r"""
import importlib, json, os, pkgutil
import cv2  # noqa: F401  OpenCV's own loader adds to LD_LIBRARY_PATH when imported: the library's, not ours
before = dict(os.environ)
names = []
for package in ("pipeline", "training", "flows", "bench"):
    module = importlib.import_module(package)
    names.append(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if info.name.endswith("__main__"):
            continue  # runs the command line
        importlib.import_module(info.name)
        names.append(info.name)
after = dict(os.environ)
changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
print(json.dumps({"modules": names, "changed": changed}))
"""


def test_importing_every_module_leaves_os_environ_unchanged():
    # without the defaults the CLI sets, so a module that sets one at import shows up as a change
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_SERVER_ANALYTICS", "PREFECT_UI"))}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"flows.ingest", "flows.build", "flows.serve", "flows.train", "flows.runners"} <= set(report["modules"])
    assert report["changed"] == [], f"importing changed os.environ: {report['changed']}"


def test_the_cli_sets_its_defaults_when_it_runs():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_SERVER_ANALYTICS", "PREFECT_UI"))}
    probe = (
        "import os, flows.cli; print(os.environ.get('PREFECT_SERVER_ANALYTICS_ENABLED')); "
        "flows.cli.environment_defaults(); print(os.environ.get('PREFECT_SERVER_ANALYTICS_ENABLED'))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["None", "false"], proc.stderr[-2000:]
