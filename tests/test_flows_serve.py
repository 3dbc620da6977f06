"""Schedules: `depthmine serve` on a real `prefect server start` produces a completed rebuild."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.prefect import stop_process, wait_until

pytestmark = pytest.mark.slow  # a real Prefect server and a served deployment

ROOT = Path(__file__).resolve().parents[1]


def _runs(api_url: str, deployment_name: str):
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async def read():
        async with PrefectClient(api=api_url) as client:
            deployments = await client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name]))
            )
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name]))
            )
            return deployments, runs

    return asyncio.run(read())


def test_interval_schedule_on_a_real_server_completes_a_rebuild(prefect_server, sample_movie, tmp_path):
    from pipeline.shards import read_manifest

    movie = sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=41)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"movies": [{"path": str(movie.path), "movie_id": "served", "split": "val"}]}))
    out = tmp_path / "dataset"
    env = dict(prefect_server.env, PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_LOGGING_LEVEL="INFO")
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows",
                "serve",
                "--catalog",
                str(catalog),
                "--out",
                str(out),
                "--interval",
                "5",
                "--name",
                "test-rebuild",
                "--flow",
                "dis-ultrafast",
                "--workers",
                "1",
            ],
            env=env,
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:

        def completed():
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            _, runs = _runs(prefect_server.api_url, "test-rebuild")
            return [r for r in runs if r.state_type and r.state_type.value == "COMPLETED"]

        done = wait_until(completed, timeout_s=150, interval_s=1.0, what="a completed scheduled rebuild")
    except AssertionError:
        print(log.read_text()[-4000:])
        raise
    finally:
        stop_process(proc)
    assert done[0].parameters["out"] == str(out.resolve())
    assert set(read_manifest(out).movies) == {"served"}
    deployments, runs = _runs(prefect_server.api_url, "test-rebuild")
    (dep,) = deployments
    assert dep.schedules and dep.schedules[0].schedule.interval.total_seconds() == 5
    assert dep.global_concurrency_limit.limit == 1
    assert (
        str(getattr(dep.concurrency_options.collision_strategy, "value", dep.concurrency_options.collision_strategy))
        == "CANCEL_NEW"
    )
    running = [r for r in runs if r.state_type and r.state_type.value == "RUNNING"]
    assert len(running) <= 1, "two rebuilds overlapped"
