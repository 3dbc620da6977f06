"""One registry for every plug-in point: same registration, same lookup, same error on a miss."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.registry import Registry


def test_decorator_prefix_create_names_and_the_miss():
    things: Registry[tuple] = Registry("thing")

    @things.register("plain")
    def plain(**options):
        return ("plain", options)

    things.register("other", lambda: ("other", {}))
    things.register_prefix("net", lambda arg, **options: ("net", arg, options), argument="<model>")

    assert things.names() == ["other", "plain", "net:<model>"]
    assert things.create("plain", size=3) == ("plain", {"size": 3})
    assert things.create("net:raft", ckpt="x") == ("net", "raft", {"ckpt": "x"})
    assert "plain" in things and "net:raft" not in things and things.is_family("net:raft")
    assert dict(things)["plain"] is plain and len(things) == 2
    for bad in ("plian", "net:", "web:raft"):
        with pytest.raises(ConfigError, match=r"unknown thing .*valid: other, plain, net:<model>"):
            things.create(bad)
    with pytest.raises(ValueError, match="registered twice"):
        things.register("plain", plain)


def test_case_insensitive_registry():
    bench: Registry[str] = Registry("benchmark", case_sensitive=False)
    bench.register("kitti", lambda: "k")
    assert "KITTI" in bench and bench.create("Kitti") == "k"


def test_every_plug_in_point_is_a_registry_and_keeps_its_public_names():
    from pipeline.flow import BACKENDS, available_backends, get_backend
    from pipeline.sky import MASKERS, available_sky_maskers, get_sky_masker
    from training.benchmarks import LOADERS, PROTOCOLS, get_loader
    from training.datasets import DATASET_KINDS, DatasetKind
    from training.encoders import ENCODERS, available_encoders, create_encoder

    for registry in (BACKENDS, MASKERS, LOADERS, DATASET_KINDS, ENCODERS):
        assert isinstance(registry, Registry)
    assert available_backends() == BACKENDS.names() and "ptlflow:<model>" in available_backends()
    assert type(get_backend("sgbm")).__name__ == "SgbmBackend"
    assert available_sky_maskers() == MASKERS.names() and "model:<file.onnx|file.pt2|file.pt>" in MASKERS.names()
    assert type(get_sky_masker("none")).__name__ == "NoSkyMasker"
    assert available_encoders() == ENCODERS.names() and "timm:<model name>" in ENCODERS.names()
    assert create_encoder("tiny").channels
    assert set(LOADERS) == set(PROTOCOLS) and get_loader(" KITTI ").NAME == "kitti"
    assert set(DATASET_KINDS) == {"shards", "folder", "csv", "synthetic"}
    assert all(isinstance(DATASET_KINDS.create(kind), DatasetKind) for kind in DATASET_KINDS)
    assert [kind for kind in DATASET_KINDS if DATASET_KINDS.create(kind).clips] == ["shards"]
    with pytest.raises(ConfigError, match="valid: .*dis-medium"):
        get_backend("dis-mediun")


def test_cli_choices_come_from_the_enums():
    from flows.cli import build_parser
    from flows.runners import RUNNERS
    from pipeline.layouts import Layout
    from pipeline.sampling import SPLITS

    ingest = build_parser()._subparsers._group_actions[0].choices["ingest"]
    choices = {a.dest: tuple(a.choices) for a in ingest._actions if a.choices}
    assert choices["layout"] == tuple(layout.value for layout in Layout)
    assert choices["split"] == SPLITS and choices["runner"] == RUNNERS
