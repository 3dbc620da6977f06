"""The README's work-pool path, for real: `prefect deploy --all` from a copy of the checkout, then a worker.

A real `prefect server start` (the session's ``prefect_server``), a real process work pool, the real
`prefect deploy`, `prefect deployment run` and `prefect worker start --run-once` commands, each in a
subprocess run from a copy of the checkout (so nothing depends on where the test runs from, and
``DEPTHMINE_HOME`` is not set, as on a user's machine).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # a real Prefect server, deploy and a worker running a rebuild

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = "build-dataset/nightly-rebuild-pool"


def _copy_checkout(dest: Path) -> Path:
    """The checkout's files (tracked and new, not ignored: no .venv, no outputs) copied to ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _prefect(args: list[str], env: dict, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"prefect {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _read(api_url: str, name: str):
    from prefect.client.orchestration import PrefectClient

    async def read():
        async with PrefectClient(api=api_url) as client:
            deployment = await client.read_deployment_by_name(name)
            runs = await client.read_flow_runs()
            return deployment, [r for r in runs if r.deployment_id == deployment.id]

    return asyncio.run(read())


@pytest.fixture()
def deploy_env(prefect_server, tmp_path) -> dict:
    env = dict(prefect_server.env, PREFECT_LOGGING_LEVEL="INFO", PREFECT_CLI_PROMPT="false")
    env.pop("DEPTHMINE_HOME", None)  # as on a user's machine: only the Docker image sets it
    env["PREFECT_HOME"] = str(tmp_path / "client-home")  # the client's own profile, not the server's
    return env


def test_prefect_deploy_all_from_a_checkout_then_a_worker_runs_it(prefect_server, deploy_env, sample_movie, tmp_path):
    from flows.serve import DEFAULT_DEPLOYMENT
    from pipeline.shards import read_manifest

    checkout = _copy_checkout(tmp_path / "checkout")
    env = deploy_env
    _prefect(["work-pool", "create", "depthmine", "--type", "process"], env, checkout)
    out = _prefect(["deploy", "--all"], env, checkout)
    assert DEPLOYMENT in out.stdout, out.stdout

    deployment, runs = _read(prefect_server.api_url, DEPLOYMENT)
    assert deployment.name != DEFAULT_DEPLOYMENT, "prefect deploy would replace `depthmine serve`'s deployment"
    assert deployment.work_pool_name == "depthmine"
    assert deployment.entrypoint == "flows/build.py:build_dataset"
    # paths relative to the checkout, which the pull step makes the working directory of every run
    assert deployment.parameters == {"catalog": "catalog.yaml", "out": "dataset"}
    (step,) = deployment.pull_steps
    assert step == {"prefect.deployments.steps.set_working_directory": {"directory": str(checkout.resolve())}}
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 3 * * *" and schedule.schedule.timezone == "UTC"
    assert schedule.active is False, "the nightly schedule must wait until the user activates it"
    assert deployment.global_concurrency_limit.limit == 1
    assert not runs, "an inactive schedule created runs"

    # DEPTHMINE_HOME at deploy time names where the checkout lives on the workers.
    elsewhere = tmp_path / "on-the-workers"
    _prefect(["deploy", "--all"], dict(env, DEPTHMINE_HOME=str(elsewhere)), checkout)
    deployment, _ = _read(prefect_server.api_url, DEPLOYMENT)
    assert deployment.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(elsewhere)
    _prefect(["deploy", "--all"], env, checkout)  # back to this checkout

    # A rebuild on a worker of the pool, with the deployment's own (relative) catalog and dataset.
    movie = sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=43)
    (checkout / "films").mkdir()
    shutil.copy2(movie.path, checkout / "films" / "pooled.mkv")
    (checkout / "catalog.yaml").write_text(
        yaml.safe_dump({"movies": [{"path": "films/pooled.mkv", "movie_id": "pooled", "split": "train"}]})
    )
    labelling, runner = 'labelling={"flow": "dis-ultrafast"}', 'runner={"workers": 1}'  # README: flow parameters
    _prefect(["deployment", "run", DEPLOYMENT, "--param", labelling, "--param", runner], env, checkout)
    worker_dir = tmp_path / "worker-cwd"  # the worker starts elsewhere: only the pull step finds the checkout
    worker_dir.mkdir()
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "depthmine", "--run-once"],
        cwd=worker_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = worker.stdout + worker.stderr
    assert worker.returncode == 0, log[-4000:]
    _, runs = _read(prefect_server.api_url, DEPLOYMENT)
    (run,) = runs
    assert run.state_type is not None and run.state_type.value == "COMPLETED", f"{run.state_name}\n{log[-4000:]}"
    assert set(read_manifest(checkout / "dataset").movies) == {"pooled"}
    assert not (worker_dir / "dataset").exists()
    assert os.listdir(worker_dir) == []

    # The README's activation commands: the schedule's ID from `schedule ls`, then `schedule resume`.
    deployment, _ = _read(prefect_server.api_url, DEPLOYMENT)  # each deploy registers the schedule anew
    (schedule,) = deployment.schedules
    assert schedule.active is False
    listed = _prefect(["deployment", "schedule", "ls", DEPLOYMENT], env, checkout).stdout
    assert str(schedule.id) in listed, listed
    _prefect(["deployment", "schedule", "resume", DEPLOYMENT, str(schedule.id)], env, checkout)
    deployment, _ = _read(prefect_server.api_url, DEPLOYMENT)
    assert deployment.schedules[0].active is True
    _prefect(["deployment", "schedule", "pause", DEPLOYMENT, str(schedule.id)], env, checkout)
