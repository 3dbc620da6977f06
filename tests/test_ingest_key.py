"""The ingest key (``pipeline.ingest.ingest_key``): pinned values, so a key that moves fails here.

A published movie whose key changes is relabelled at the next rebuild. The values below are what
the code computed when each field was added (``f819129093e76e25``: the default configuration as
the code before clips and backend options computed it, commit 7b008ec); change one only on purpose.
"""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.ingest import UNHASHED_FIELDS, IngestConfig, ingest_config, ingest_key

DEFAULT_KEY = "f819129093e76e25"

KEYS = [
    pytest.param([], DEFAULT_KEY, id="default"),
    pytest.param(["sampling.eval_fps=4", "disparity.flow=dis-fast"], "cb2c17edf742912f", id="eval_fps=4,dis-fast"),
    # left out: never hashed, or not while at their default / irrelevant
    pytest.param(["disparity.device=cpu"], DEFAULT_KEY, id="device"),
    pytest.param(["sampling.mode=frames"], DEFAULT_KEY, id="mode=frames"),
    pytest.param(["sampling.clip_frames=4", "sampling.clip_stride=3"], DEFAULT_KEY, id="clip-settings-in-frames-mode"),
    pytest.param(["store_temporal_flow=false"], DEFAULT_KEY, id="store_temporal_flow=false"),
    # hashed once set
    pytest.param(["sampling.mode=clips"], "cf11d0be6d8cedbc", id="mode=clips"),
    pytest.param(
        ["sampling.mode=clips", "sampling.clip_frames=4", "sampling.clip_stride=2"], "4d0872f1bc38db5e", id="clips-4x2"
    ),
    pytest.param(["sampling.mode=clips", "store_temporal_flow=true"], "b81d1c7eec4115ec", id="store_temporal_flow"),
    pytest.param(["disparity.flow_options.patch_stride=2"], "c95f91668be0f5a6", id="flow_options"),
    pytest.param(["disparity.matcher_options.block_size=7"], "1410b7f77281df31", id="matcher_options"),
]


@pytest.mark.parametrize("overrides,key", KEYS)
def test_the_ingest_key_is_pinned(overrides, key):
    assert ingest_key("f", ingest_config(overrides)) == key


def test_the_extra_values_are_hashed():
    extra = {"split": "train", "layout": "sbs-half", "version": "0.1.0"}
    assert ingest_key("f", IngestConfig(), extra) == "b4b2f4d1e50459a0"


def test_every_unhashed_field_is_a_field_of_the_configuration():
    """A path in the table that names no field would leave nothing out, silently."""

    def has(cls, path):
        name, _, rest = path.partition(".")
        field = {f.name: f for f in dataclasses.fields(cls)}.get(name)
        if field is None:
            return False
        return not rest or has(type(getattr(cls(), name)), rest)

    missing = [f.path for f in UNHASHED_FIELDS if not has(IngestConfig, f.path)]
    assert not missing, f"UNHASHED_FIELDS names fields IngestConfig lacks: {missing}"
