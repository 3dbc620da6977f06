"""The flows' typed parameters: LabelSettings and RunnerSpec, as Python values, as a deployment's JSON,
and the old flat parameters that deployments registered by earlier versions still send."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.runners import RunnerSpec
from pipeline.errors import ConfigError
from pipeline.ingest import LabelSettings, ingest_config

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["chunk_frames=4", "sampling.eval_fps=4"]


# ---------------------------------------------------------------------------- the typed values


def test_label_settings_resolve_and_take_a_catalog_entrys_overrides_after_their_own():
    labelling = LabelSettings("dis-fast", device="cpu", overrides=["disparity.lr_threshold_px=1.5"])
    assert labelling.overrides == ("disparity.lr_threshold_px=1.5",)  # a list becomes a tuple: hashable
    assert labelling.config() == ingest_config(["disparity.lr_threshold_px=1.5"], flow="dis-fast", device="cpu")
    entry = labelling.with_overrides(["disparity.lr_threshold_px=2"])
    assert entry.overrides == ("disparity.lr_threshold_px=1.5", "disparity.lr_threshold_px=2")
    assert entry.config().disparity.lr_threshold_px == 2.0 and labelling.with_overrides(()) is labelling
    assert len({labelling, LabelSettings("dis-fast", None, "cpu", ("disparity.lr_threshold_px=1.5",))}) == 1


@pytest.mark.parametrize(
    "fields, message",
    [
        pytest.param({"overrides": "chunk_frames=4"}, "overrides must be a list", id="overrides/one-string"),
        pytest.param({"overrides": [4]}, "overrides must be a list", id="overrides/not-strings"),
        pytest.param({"flow": 3}, "flow must be a string", id="flow/not-a-string"),
    ],
)
def test_label_settings_refuse_values_of_the_wrong_type(fields, message):
    with pytest.raises(ConfigError, match=message):
        LabelSettings(**fields)


@pytest.mark.parametrize(
    "fields, message",
    [
        pytest.param({"kind": "ray"}, "valid runners: threads, processes, dask", id="kind"),
        pytest.param({"workers": 0}, "workers must be >= 1, got 0", id="workers/zero"),
        pytest.param({"workers": 2.5}, "workers must be a whole number", id="workers/fraction"),
        pytest.param({"workers": True}, "workers must be a whole number", id="workers/bool"),
        pytest.param({"dask_address": "tcp://x:1"}, "needs --runner dask", id="dask-address/without-dask"),
    ],
)
def test_runner_spec_checks_itself_when_built(fields, message):
    with pytest.raises(ConfigError, match=message):
        RunnerSpec(**fields)


def test_a_flow_builds_its_typed_parameters_from_json_and_checks_them():
    """What a deployment run hands the flow: JSON objects, validated by pydantic into the dataclasses."""
    from flows.build import build_dataset
    from flows.ingest import ingest_movie

    params = {
        "catalog": "c.yaml",
        "out": "ds",
        "labelling": {"flow": "dis-fast", "overrides": ["chunk_frames=4"]},
        "runner": {"kind": "dask", "workers": "3"},
    }
    typed = build_dataset.validate_parameters(params)
    assert typed["labelling"] == LabelSettings("dis-fast", overrides=("chunk_frames=4",))
    assert typed["runner"] == RunnerSpec("dask", 3)
    assert ingest_movie.validate_parameters({"movie": "m.mkv", "out": "ds"})["movie"] == "m.mkv"
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        build_dataset.validate_parameters({**params, "runner": {"kind": "threads", "workers": 0}})


def test_deployment_parameters_store_what_is_set_as_json_objects():
    from flows.serve import deployment_parameters

    params = {
        "catalog": "/c.yaml",
        "labelling": LabelSettings("ptlflow:raft", device="cuda", overrides=["chunk_frames=4"]),
        "runner": RunnerSpec(),
        "keep_versions": 2,
    }
    assert deployment_parameters(params) == {
        "catalog": "/c.yaml",
        "labelling": {"flow": "ptlflow:raft", "device": "cuda", "overrides": ["chunk_frames=4"]},
        "runner": {"kind": "threads"},
        "keep_versions": 2,
    }
    assert "labelling" not in deployment_parameters({"labelling": LabelSettings()})  # the flow's default


# ---------------------------------------------------------------------------- the old flat parameters


def test_old_flat_parameters_are_read_into_the_new_shape_with_a_warning(caplog):
    from flows.build import build_dataset
    from flows.parameters import upgrade_flat_parameters

    old = {
        "catalog": "c.yaml",
        "out": "ds",
        "flow": "dis-fast",
        "ckpt": None,
        "overrides": ["chunk_frames=4"],
        "runner": "dask",
        "workers": 2,
        "keep_versions": 3,
    }
    params, moved = upgrade_flat_parameters("build-dataset", old)
    assert moved == ["flow", "overrides", "runner", "workers"]  # None was the old default: nothing to move
    assert params == {
        "catalog": "c.yaml",
        "out": "ds",
        "labelling": {"flow": "dis-fast", "overrides": ["chunk_frames=4"]},
        "runner": {"kind": "dask", "workers": 2},
        "keep_versions": 3,
    }
    new = {k: v for k, v in params.items()}
    assert upgrade_flat_parameters("build-dataset", new) == (new, [])  # the new shape: untouched
    with caplog.at_level(logging.WARNING):
        typed = build_dataset.validate_parameters(old)
    assert typed["labelling"] == LabelSettings("dis-fast", overrides=["chunk_frames=4"])
    assert typed["runner"] == RunnerSpec("dask", 2) and typed["keep_versions"] == 3
    (warning,) = [r.getMessage() for r in caplog.records if "old flat shape" in r.getMessage()]
    assert "flow, overrides, runner, workers" in warning and '"labelling": {"flow": "dis-fast"' in warning


@pytest.mark.parametrize(
    "mixed, names",
    [
        pytest.param({"flow": "dis-fast", "labelling": {"device": "cpu"}}, "flow", id="flow+labelling"),
        pytest.param({"workers": 2, "runner": {"kind": "dask"}}, "workers", id="workers+runner"),
    ],
)
def test_one_value_in_both_shapes_is_one_line_naming_the_new_shape(mixed, names):
    from flows.build import build_dataset

    with pytest.raises(ConfigError) as err:
        build_dataset.validate_parameters({"catalog": "c.yaml", "out": "ds", **mixed})
    message = str(err.value)
    assert "\n" not in message and f"parameter(s) {names} are the old flat shape" in message
    assert "README: flow parameters" in message


@pytest.mark.logs_errors  # the flow fails on purpose (no catalog); Prefect logs the failure
def test_a_python_call_with_an_old_keyword_runs_and_records_only_the_new_shape(prefect_harness, tmp_path, caplog):
    from flows.build import build_dataset

    state = build_dataset(
        catalog=str(tmp_path / "absent.yaml"), out=str(tmp_path / "ds"), flow="dis-fast", return_state=True
    )
    assert state.is_failed()
    with pytest.raises(ConfigError, match="absent.yaml"):  # past the parameters: the catalog is checked
        state.result()
    run, _ = _run_and_logs(state.state_details.flow_run_id)
    assert "flow" not in run.parameters and "workers" not in run.parameters  # no flat name bound to None
    assert run.parameters["labelling"] == {"flow": "dis-fast"}  # the run records the new shape
    assert any("old flat shape" in r.getMessage() for r in caplog.records)  # the caller's log (no run id yet)


# ---------------------------------------------------------------------------- deployment runs


def _execute(flow_run_id, api_url: str) -> subprocess.CompletedProcess:
    """Run a deployment's flow run in a new process, as a worker does (``python -m prefect.flow_engine``)."""
    env = dict(os.environ, PREFECT_API_URL=api_url, PREFECT__FLOW_RUN_ID=str(flow_run_id))
    return subprocess.run(
        [sys.executable, "-m", "prefect.flow_engine", "flows.build.build_dataset"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run_and_logs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read():
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            return run, [log.message for log in logs]

    return asyncio.run(read())


def _schema_properties(deployment_name: str) -> set[str]:
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return (await client.read_deployment_by_name(deployment_name)).parameter_openapi_schema

    return set(asyncio.run(read())["properties"])


def _old_deployment(name: str, parameters: dict):
    """``build_dataset`` as an earlier version registered it: its flat parameters and their schema."""
    import prefect

    @prefect.flow(name="build-dataset")
    def build_dataset(  # the earlier signature, for the schema only: runs load flows.build.build_dataset
        catalog: str,
        out: str,
        flow: str | None = None,
        ckpt: str | None = None,
        device: str | None = None,
        overrides: list[str] | None = None,
        runner: str = "threads",
        workers: int | None = None,
        dask_address: str | None = None,
        keep_versions: int = 2,
        progress: bool = False,
        max_failed_share: float = 0.25,
    ) -> None: ...

    deployment = build_dataset.to_deployment(name=name, parameters=parameters)
    deployment.entrypoint = "flows.build.build_dataset"
    return deployment


@pytest.mark.slow
def test_deployment_runs_round_trip_the_typed_parameters_and_read_an_older_deployments_flat_ones(
    prefect_harness, sample_movie, tmp_path
):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from flows.build import build_dataset
    from flows.serve import rebuild_deployment
    from pipeline.shards import read_manifest

    api_url = PREFECT_API_URL.value()
    movie = sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=21)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"movies": [{"path": str(movie.path), "movie_id": "alpha"}]}))
    out = tmp_path / "dataset"
    labelling = LabelSettings("dis-ultrafast", overrides=OVERRIDES)

    # registered as `serve` does: the typed values stored as JSON objects of what they set
    rebuild_deployment(
        str(catalog), str(out), interval_s=3600, name="typed", parameters={"labelling": labelling}
    ).apply()
    assert _schema_properties("build-dataset/typed") == {
        "catalog",
        "out",
        "labelling",
        "runner",
        "keep_versions",
        "progress",
        "max_failed_share",
    }  # the flat names a run may still send are no parameters a user is offered
    run = run_deployment("build-dataset/typed", parameters={"runner": RunnerSpec(workers=1)}, timeout=0)
    assert run.parameters["labelling"] == {"flow": "dis-ultrafast", "overrides": OVERRIDES}
    assert run.parameters["runner"] == {"kind": "threads", "workers": 1, "dask_address": None}
    typed = build_dataset.validate_parameters(run.parameters)
    assert (typed["labelling"], typed["runner"]) == (labelling, RunnerSpec(workers=1))
    proc = _execute(run.id, api_url)
    run, _ = _run_and_logs(run.id)
    assert run.state_type.value == "COMPLETED", proc.stdout[-3000:] + proc.stderr[-3000:]
    first = read_manifest(out)
    assert first.version == 1 and set(first.refs) == {"alpha"}

    # a deployment an earlier version registered, with the same settings as flat parameters: its run
    # works after the upgrade, finds nothing changed (same settings hash), and says what to update
    flat = {"catalog": str(catalog), "out": str(out), "flow": "dis-ultrafast", "overrides": OVERRIDES, "workers": 1}
    _old_deployment("flat", flat).apply()
    old = run_deployment("build-dataset/flat", timeout=0)
    assert old.parameters == flat
    proc = _execute(old.id, api_url)
    old, logs = _run_and_logs(old.id)
    assert old.state_type.value == "COMPLETED", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert read_manifest(out).version == 1 and read_manifest(out).refs == first.refs  # unchanged: nothing relabelled
    (warning,) = [m for m in logs if "old flat shape" in m]
    assert "flow, overrides, workers" in warning and "update the deployment" in warning
