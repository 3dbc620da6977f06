"""Training data: shard streaming (split, shuffle, resume), adapters, target conversion, mixing loader."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.errors import BadInputError, ConfigError
from training.config import DatasetSpec
from training.datasets import (
    CsvDataset,
    DatasetKind,
    FolderDataset,
    GlobalBatchSampler,
    MixedLoader,
    PositionDataset,
    ShardDataset,
    SyntheticDataset,
    TrainingDataset,
    _collate,
    target_to_disparity,
    validation_samples,
)
from training.transforms import AugmentConfig

CENTRE = AugmentConfig(size=32, enabled=False)


def _key(sample) -> str:
    return hashlib.sha1(sample["image"].numpy().tobytes()).hexdigest()[:12]


@pytest.fixture(scope="module")
def shards_ds(tiny_dataset):
    # 2 train movies x 12 frames, 4 rows per shard -> 6 train shards (+3 val)
    return tiny_dataset(n_movies=3, frames_per_movie=12, size=(64, 48), splits=("train", "train", "val"))


# ---- targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,raw,expected",
    [
        ("depth", [1.0, 2.0, 4.0, 0.0], [1.0, 1 / 3, 0.0, None]),
        ("depth_up_to_scale", [10.0, 20.0, 40.0, -1.0], [1.0, 1 / 3, 0.0, None]),
        ("inverse_depth", [0.25, 0.5, 1.0, np.nan], [0.0, 1 / 3, 1.0, None]),
        ("disparity", [2.0, 4.0, 10.0, 0.0], [0.0, 0.25, 1.0, None]),
    ],
    ids=["depth", "depth_up_to_scale", "inverse_depth", "disparity"],
)
def test_targets_become_unit_disparity(kind, raw, expected):
    disp, valid = target_to_disparity(np.array([raw], np.float32), kind, validity="positive")
    assert valid[0].tolist() == [e is not None for e in expected]
    got = disp[0][valid[0]]
    assert got.tolist() == pytest.approx([e for e in expected if e is not None], abs=1e-6)
    assert disp[0][~valid[0]].tolist() == [0.0] * int((~valid[0]).sum())


def test_scale_shift_disparity_keeps_negative_values_with_finite_rule():
    disp, valid = target_to_disparity(np.array([[-4.0, 0.0, 4.0, np.inf]]), "disparity_up_to_scale_shift", "finite")
    assert valid[0].tolist() == [True, True, True, False]
    assert disp[0, :3].tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_validity_bounds():
    _, valid = target_to_disparity(np.array([[0.5, 5.0, 50.0]]), "depth", "positive", min_value=1.0, max_value=10.0)
    assert valid[0].tolist() == [False, True, False]


# ---- shards -----------------------------------------------------------------------------


def _epoch_keys(path, rank, world, workers, epoch=0, seed=0):
    ds = ShardDataset(path, "train", augment=CENTRE, seed=seed, infinite=False, rank=rank, world_size=world)
    ds.set_epoch(epoch)
    if workers == 0:
        return [_key(s) for s in ds]
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    return [_key(s) for s in loader]


def test_shards_split_over_ranks_and_workers_cover_each_row_once(shards_ds):
    single = _epoch_keys(shards_ds, 0, 1, 0)
    assert len(single) == 24 and len(set(single)) == 24
    parts = [_epoch_keys(shards_ds, r, 2, 2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(single)
    assert not set(parts[0]) & set(parts[1])


def test_shuffle_is_deterministic_per_seed_and_epoch(shards_ds):
    a = _epoch_keys(shards_ds, 0, 1, 0, epoch=0)
    assert a == _epoch_keys(shards_ds, 0, 1, 0, epoch=0)
    b = _epoch_keys(shards_ds, 0, 1, 0, epoch=1)
    assert sorted(a) == sorted(b) and a != b
    assert a != _epoch_keys(shards_ds, 0, 1, 0, epoch=0, seed=5)


def test_too_few_shards_is_a_clear_error(shards_ds):
    # in-process (no workers): a worker's error would be the same message, re-raised by the loader
    ds = ShardDataset(shards_ds, "train", augment=CENTRE, rank=0, world_size=8)
    with pytest.raises(ConfigError, match=r"6 shard\(s\) for 8 process\(es\) x 1 loader"):
        next(iter(ds))


def test_unknown_split_is_a_user_error(shards_ds):
    with pytest.raises(BadInputError, match="no shards"):
        ShardDataset(shards_ds, "nonexistent")


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-workers"])
def test_mid_epoch_resume_continues_exactly(shards_ds, workers):
    """Consume 7 batches (crossing into the next epoch with 2 workers), save, resume in a new loader."""
    aug = AugmentConfig(size=32)  # random crops and flips: must resume identically too

    def loader(ds):
        return DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=_collate)

    ds = ShardDataset(shards_ds, "train", augment=aug, seed=3, rank=0, world_size=1)
    it = iter(loader(ds))
    reference = [next(it) for _ in range(14)]
    state = ds.state_dict(batches_consumed=7, batch_size=2)
    resumed = ShardDataset(shards_ds, "train", augment=aug, seed=3, rank=0, world_size=1)
    resumed.load_state_dict(state)
    it2 = iter(loader(resumed))
    for ref in reference[7:]:
        got = next(it2)
        assert torch.equal(got["image"], ref["image"]) and torch.equal(got["target"], ref["target"])
        assert torch.equal(got["mask"], ref["mask"])


# ---- map-style adapters -----------------------------------------------------------------


def _write_pairs(root, n=3, ext=".npy"):
    (root / "images").mkdir(parents=True)
    (root / "targets").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (20, 30, 3), np.uint8)
        cv2.imwrite(str(root / "images" / f"f{i}.png"), img)
        depth = np.linspace(1, 10, 600, dtype=np.float32).reshape(20, 30)
        depth[0, :5] = 0  # invalid
        if ext == ".npy":
            np.save(root / "targets" / f"f{i}.npy", depth)
        else:
            cv2.imwrite(str(root / "targets" / f"f{i}.png"), (depth * 256).astype(np.uint16))


@pytest.mark.parametrize("ext", [".npy", ".png"], ids=["npy", "png16"])
def test_folder_adapter_reads_depth_as_unit_disparity(tmp_path, ext):
    _write_pairs(tmp_path / "ds", ext=ext)
    spec = DatasetSpec(
        name="ext",
        kind="folder",
        path=str(tmp_path / "ds"),
        target="depth",
        target_scale=1.0 if ext == ".npy" else 1 / 256,
    )
    ds = FolderDataset(spec)
    image, disp, valid = ds.load(0)
    assert image.shape == (20, 30, 3) and disp.shape == valid.shape == (20, 30)
    assert not valid[0, :5].any() and valid[1:].all()
    assert disp[valid].min() == pytest.approx(0.0) and disp[valid].max() == pytest.approx(1.0)
    assert disp[1, 0] > disp[-1, -1]  # near (depth 1) is high disparity


def test_folder_adapter_reads_exr_targets_without_the_opencv_switch(tmp_path):
    """.exr is an accepted target suffix; OpenCV refuses EXR unless OPENCV_IO_ENABLE_OPENEXR is
    set. A fresh process without the variable (as a user's shell has it) must read the file."""
    import os
    import subprocess
    import sys

    _write_pairs(tmp_path / "ds")
    for i in range(3):
        (tmp_path / "ds" / "targets" / f"f{i}.npy").rename(tmp_path / "ds" / "targets" / f"f{i}.keep")
    writer = (
        "import os, sys, numpy as np; os.environ['OPENCV_IO_ENABLE_OPENEXR'] = '1'; import cv2; "
        "d = np.linspace(1, 10, 600, dtype=np.float32).reshape(20, 30); d[0, :5] = 0; "
        "[cv2.imwrite(f'{sys.argv[1]}/f{i}.exr', d) for i in range(3)]"
    )
    subprocess.run([sys.executable, "-c", writer, str(tmp_path / "ds" / "targets")], check=True)
    reader = (
        "from training.config import DatasetSpec; from training.datasets import FolderDataset; import sys; "
        "ds = FolderDataset(DatasetSpec(name='x', kind='folder', path=sys.argv[1], target='depth')); "
        "img, disp, valid = ds.load(0); print(int(valid.sum()), float(disp[valid].max()), ds.pairs[0][1].suffix)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_ENABLE_OPENEXR"}
    proc = subprocess.run(
        [sys.executable, "-c", reader, str(tmp_path / "ds")], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["595", "1.0", ".exr"]


def test_csv_adapter_and_missing_file_error(tmp_path):
    _write_pairs(tmp_path / "ds")
    (tmp_path / "list.csv").write_text(
        "image,target\nds/images/f0.png,ds/targets/f0.npy\nds/images/f1.png,ds/targets/f1.npy\n"
    )
    ds = CsvDataset(DatasetSpec(kind="csv", path=str(tmp_path / "list.csv"), target="depth"))
    assert len(ds) == 2
    (tmp_path / "bad.csv").write_text("ds/images/f0.png,ds/targets/nope.npy\n")
    with pytest.raises(BadInputError, match="line 1"):
        CsvDataset(DatasetSpec(kind="csv", path=str(tmp_path / "bad.csv"), target="depth"))


def test_global_batches_do_not_depend_on_world_size():
    one = next(iter(GlobalBatchSampler(8, 0, 1, start_batch=3)))
    two = [next(iter(GlobalBatchSampler(8, r, 2, start_batch=3))) for r in range(2)]
    assert one == two[0] + two[1] == list(range(24, 32))
    with pytest.raises(ConfigError, match="divisible"):
        GlobalBatchSampler(7, 0, 2)


def test_position_dataset_is_a_pure_function_of_position():
    base = SyntheticDataset(DatasetSpec(kind="synthetic", size=5, image_size=(48, 32)))
    ds = PositionDataset(base, AugmentConfig(size=16), seed=1)
    a, b = ds[7], ds[7]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    # positions 0..4 are one epoch: a permutation of the 5 frames
    keys = {_key(PositionDataset(base, AugmentConfig(size=16, enabled=False), seed=1)[p]) for p in range(5)}
    assert len(keys) == 5


def test_mixed_loader_has_equal_samples_per_dataset_and_resumes():
    specs = [
        DatasetSpec(name=n, kind="synthetic", size=6, seed=s, image_size=(48, 32)) for n, s in (("a", 0), ("b", 50))
    ]
    aug = AugmentConfig(size=16)
    dsets = [PositionDataset(SyntheticDataset(s), aug, seed=i) for i, s in enumerate(specs)]
    loader = MixedLoader(dsets, global_batch=3, num_workers=0)
    batches = [next(loader) for _ in range(4)]
    assert batches[0]["dataset"].tolist() == [0, 0, 0, 1, 1, 1]
    assert loader.state_dict()["batches"] == 4
    resumed = MixedLoader(dsets, global_batch=3, num_workers=0, start_batch=2)
    assert torch.equal(next(resumed)["image"], batches[2]["image"])


def test_validation_samples_are_centre_crops(shards_ds):
    spec = DatasetSpec(kind="shards", path=str(shards_ds), split="val")
    a = validation_samples(spec, 5, 32)
    assert len(a) == 5 and a[0]["image"].shape == (3, 32, 32)
    assert [_key(s) for s in a] == [_key(s) for s in validation_samples(spec, 5, 32)]


# ---- the one registry of dataset kinds -----------------------------------------------------


def test_every_kind_opens_through_the_registry(shards_ds):
    from training.clips import ClipDataset
    from training.datasets import DATASET_KINDS, build_dataset

    shards = build_dataset(DatasetSpec(kind="shards", path=str(shards_ds)), CENTRE, 0)
    synthetic = build_dataset(DatasetSpec(kind="synthetic", size=3, image_size=(48, 32)), CENTRE, 0)
    assert type(shards) is ShardDataset and not isinstance(shards, ClipDataset)
    assert isinstance(synthetic, PositionDataset) and isinstance(synthetic.base, SyntheticDataset)
    assert {k: DATASET_KINDS[k].adapter for k in ("folder", "csv")} == {"folder": FolderDataset, "csv": CsvDataset}
    with pytest.raises(ConfigError, match="unknown dataset kind 'shard'; valid: csv, folder, shards, synthetic"):
        build_dataset(DatasetSpec(kind="shard", path=str(shards_ds)), CENTRE, 0)


def test_configuration_asks_the_registry_for_kinds_and_their_checks():
    import training.config as config
    from training.config import DataConfig, TrainConfig

    assert not hasattr(config, "DATASET_KINDS")  # one list of kinds: the registry's
    with pytest.raises(ConfigError, match=r"kind 'hdf5' is not one of csv, folder, shards, synthetic"):
        TrainConfig(data=DataConfig(datasets=[DatasetSpec(kind="hdf5", path="x")])).validate()
    with pytest.raises(ConfigError, match="target 'depht'"):
        TrainConfig(data=DataConfig(datasets=[DatasetSpec(kind="csv", path="x", target="depht")])).validate()
    with pytest.raises(ConfigError, match="synthetic size"):
        TrainConfig(data=DataConfig(datasets=[DatasetSpec(kind="synthetic", size=0)])).validate()
    with pytest.raises(ConfigError, match="not clips: s"):
        TrainConfig(data=DataConfig(datasets=[DatasetSpec(name="s", kind="synthetic")], clip_frames=2)).validate()


# ---- the shards' per-pixel uncertainty ----------------------------------------------------


def test_max_uncertainty_drops_labels_and_weighting_follows_the_formula(shards_ds):
    """data.max_uncertainty_px: a valid label whose stored uncertainty is above the threshold is
    masked; data.uncertainty_weighting (sigma): weight = sigma^2 / (sigma^2 + u^2) on valid pixels.
    Stored frames are 64x48: a centre crop of side 48 at x0 = 8, no resize."""
    from pipeline.shards import iter_samples
    from training.datasets import UncertaintyUse

    aug = AugmentConfig(size=48, enabled=False)
    raw = next(iter_samples(shards_ds, columns=["valid", "uncertainty"], split="train"))
    u = raw["uncertainty"][:, 8:56]

    def first(use):
        ds = ShardDataset(
            shards_ds, "train", augment=aug, shuffle=False, infinite=False, rank=0, world_size=1, uncertainty=use
        )
        return next(iter(ds))

    plain = first(None)
    threshold = 0.3
    masked = first(UncertaintyUse(max_px=threshold))
    above = plain["mask"].numpy() & (u > threshold)
    assert above.sum() > 20  # the label has pixels above the threshold: they are dropped
    assert not masked["mask"].numpy()[above].any()
    np.testing.assert_array_equal(masked["mask"].numpy(), plain["mask"].numpy() & (u <= threshold))
    assert "weight" not in plain and "weight" not in masked

    sigma = 0.5
    weighted = first(UncertaintyUse(sigma_px=sigma))
    np.testing.assert_array_equal(weighted["mask"].numpy(), plain["mask"].numpy())
    m = plain["mask"].numpy()
    np.testing.assert_allclose(weighted["weight"].numpy()[m], (sigma**2 / (sigma**2 + u**2))[m], rtol=1e-6)
    assert (weighted["weight"].numpy()[~m] == 0).all()


def test_uncertainty_weighting_reaches_the_loss(shards_ds, tmp_path):
    """Two one-step runs from the same seed: with uncertainty weighting the first loss differs;
    the default leaves the loss as it was (off by default)."""
    from training.config import train_config_from_dict
    from training.train import run_training

    def cfg(out, **data):
        return train_config_from_dict(
            {
                "model": {"encoder": "tiny", "features": 16},
                "data": {
                    "datasets": [{"name": "m", "kind": "shards", "path": str(shards_ds), "split": "train"}],
                    "batch_size": 2,
                    "num_workers": 0,
                    "augment": {"size": 32},
                    **data,
                },
                "max_steps": 1,
                "log_every": 1,
                "checkpoint_every": 0,
                "progress": False,
                "tensorboard": False,
                "out_dir": str(tmp_path / out),
            }
        )

    plain = run_training(cfg("plain")).losses[0]
    assert run_training(cfg("default", max_uncertainty_px=None, uncertainty_weighting=0.0)).losses[0] == plain
    weighted = run_training(cfg("weighted", uncertainty_weighting=0.25)).losses[0]
    masked = run_training(cfg("masked", max_uncertainty_px=0.2)).losses[0]
    assert weighted != pytest.approx(plain, rel=1e-4) and masked != pytest.approx(plain, rel=1e-4)


# ---- a kind of its own plugs in without MixedLoader or the pre-flight knowing it --------------


class _Stream(torch.utils.data.IterableDataset, TrainingDataset):
    """A streaming dataset that is none of the trainer's classes: ``shards`` parts, sample ``i``'s
    pixels all equal ``i`` (so a batch shows which samples it holds)."""

    def __init__(self, shards: int):
        self.shards, self.start = shards, 0

    @property
    def shard_count(self) -> int:
        return self.shards

    def __iter__(self):
        for i in range(self.start, self.start + 1000):
            yield {
                "image": torch.full((3, 8, 8), i % 256, dtype=torch.uint8),
                "target": torch.full((8, 8), float(i)),
                "mask": torch.ones((8, 8), dtype=torch.bool),
            }

    def data_loader(self, global_batch, rank, world_size, start_batch, **options):
        per_rank = global_batch // world_size
        self.start = start_batch * per_rank
        return DataLoader(self, batch_size=per_rank, **options)

    def first_samples(self, n):
        return [s for _, s in zip(range(n), self)]


class _StreamKind(DatasetKind):
    needs_path = False

    def open(self, spec, options):
        return _Stream(shards=spec.size)


@pytest.fixture
def stream_kind(monkeypatch):
    """``kind: stream`` registered for this test only."""
    from training.datasets import DATASET_KINDS

    monkeypatch.setattr(DATASET_KINDS, "_plain", dict(DATASET_KINDS._plain))
    DATASET_KINDS.register("stream", _StreamKind)
    return DatasetSpec(name="stream", kind="stream", size=3)


def test_a_new_kind_mixes_with_the_others_and_resumes(stream_kind):
    from training.datasets import build_dataset

    small = AugmentConfig(size=8, enabled=False)
    synthetic = DatasetSpec(kind="synthetic", size=6, image_size=(48, 32))
    loader = MixedLoader([build_dataset(synthetic, small, 0), build_dataset(stream_kind, small, 0)], 2, num_workers=0)
    batches = [next(loader) for _ in range(3)]
    assert batches[0]["dataset"].tolist() == [0, 0, 1, 1]
    assert [b["target"][2:, 0, 0].tolist() for b in batches] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    again = [build_dataset(synthetic, small, 0), build_dataset(stream_kind, small, 0)]
    resumed = next(MixedLoader(again, 2, num_workers=0, start_batch=2))
    assert torch.equal(resumed["target"], batches[2]["target"]) and torch.equal(resumed["image"], batches[2]["image"])


def test_the_preflight_asks_a_new_kind_for_its_shards_and_first_sample(stream_kind, tmp_path):
    from training.config import DataConfig, TrainConfig
    from training.preflight import preflight

    config = TrainConfig(
        out_dir=str(tmp_path / "run"), data=DataConfig(datasets=[stream_kind], batch_size=2, num_workers=4)
    )
    checked = preflight(config, world_size=1)
    assert checked.shard_counts == {"stream": 3}
    assert checked.config.data.num_workers == 3 and "lowered to 3" in checked.notices[0]
