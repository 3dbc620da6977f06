"""``--set KEY=VALUE`` overrides: list indices, and every mistake a one-line ConfigError."""

from __future__ import annotations

import pytest

from pipeline.config import apply_overrides
from pipeline.errors import ConfigError
from pipeline.ingest import ingest_config


def test_list_entries_are_reachable_by_index():
    data = {"data": {"datasets": [{"name": "a", "path": "x"}, {"name": "b", "path": "y"}]}}
    apply_overrides(data, ["data.datasets.0.path=/new/a", "data.datasets.-1.weight=2", "data.datasets.1.name=c"])
    assert data["data"]["datasets"] == [{"name": "a", "path": "/new/a"}, {"name": "c", "path": "y", "weight": 2}]
    apply_overrides(data, ["data.datasets=[]"])
    assert data["data"]["datasets"] == []


def test_ingest_overrides_reach_list_entries_of_the_defaults():
    assert ingest_config(["disparity.range_percentiles.1=97"]).disparity.range_percentiles == (5.0, 97.0)


def test_a_list_index_reaches_a_dataclass_list_field():
    """Generic: the training config's datasets list takes indices the same way (TrainConfig)."""
    from pipeline.config import config_to_dict
    from training.config import TrainConfig, train_config_from_dict

    data = config_to_dict(TrainConfig())
    assert data["data"]["datasets"], "the default recipe lists its datasets"
    apply_overrides(data, ["data.datasets.0.path=/somewhere/else"])
    assert train_config_from_dict(data).data.datasets[0].path == "/somewhere/else"


@pytest.mark.parametrize(
    "override, message",
    [
        ("chunk_frames=[1,", r"override 'chunk_frames': value '\[1,' is not valid YAML"),
        ("chunk_frames=!!python/object/apply:os.system [echo hi]", "YAML tags are not allowed"),
        ("chunk_frames=!!str 3", "YAML tags are not allowed"),
        ("store_width=!custom 3", "YAML tags are not allowed"),
        ("nonexistent=1", r"unknown key\(s\) \['nonexistent'\]"),
        ("sampling.nope=1", r"unknown key\(s\) \['nope'\]"),
        ("chunk_frames", "expected KEY=VALUE"),
        ("shots..x=1", "empty part"),
        ("chunk_frames.x=1", "'chunk_frames' is not a section"),
        ("disparity.range_percentiles.x=5", "'x' is not a list index"),
        ("disparity.range_percentiles=5", "expected a list"),
        ("disparity.range_percentiles.7=5", "index 7 is out of range"),
    ],
)
def test_override_mistakes_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        ingest_config([override])
    assert "\n" not in str(info.value)


def test_cli_prints_a_yaml_mistake_in_one_line(tmp_path, capsys):
    from flows.cli import main

    movie = tmp_path / "m.mkv"
    movie.write_bytes(b"x" * 100)
    for value in ("chunk_frames=[1,", "chunk_frames=!!python/object/apply:os.system [true]"):
        assert main(["ingest", str(movie), "--out", str(tmp_path / "ds"), "--set", value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("depthmine: error: override 'chunk_frames'"), err
    assert not (tmp_path / "ds").exists()
