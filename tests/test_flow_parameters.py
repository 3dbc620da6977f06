"""The flows' typed parameters: LabelSettings and RunnerSpec, as Python values and as a deployment's JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

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
