"""Clips mode: the sampling rule, the one-pass scan on real movies with known cuts, clip rows in
shards, ``iter_clips``, the clip dataset's split/shuffle/resume guarantees, stored temporal flow."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.config import config_hash, config_to_dict
from pipeline.errors import BadInputError, ConfigError
from pipeline.ingest import IngestConfig, ingest_key, iter_chunks
from pipeline.sampling import SamplingConfig, sample_clips, sample_frames
from pipeline.shards import FrameRecord, MovieShardWriter, ShardConfig, count_clips, iter_clips, list_shards, publish
from pipeline.shards.synthetic import make_frame_record
from pipeline.video import SampledFrame, open_stereo, scan_movie
from training.clips import ClipDataset
from training.datasets import _collate
from training.transforms import AugmentConfig

NO_CHAPTERS = dict(drop_first_chapters=0, drop_last_chapters=0)
CLIPS = SamplingConfig(mode="clips", **NO_CHAPTERS)


@dataclass
class Case:
    shots: list
    split: str
    config: SamplingConfig
    expected: list
    chapters: tuple = ()


def _run(a, n, stride=1):
    return list(range(a, a + (n - 1) * stride + 1, stride))


CASES = [
    # train at 24 fps: clips of 8 start at offsets 0, 8, 16 of each window (max(step 6, span 8) apart);
    # the 10-frame shot is shorter than 1 s and dropped; the next window starts 4 s (96 frames) later
    pytest.param(
        Case(
            [(0, 50), (50, 60), (60, 200)],
            "train",
            CLIPS,
            [_run(0, 8), _run(8, 8), _run(16, 8)]
            + [_run(60, 8), _run(68, 8), _run(76, 8), _run(156, 8), _run(164, 8), _run(172, 8)],
        ),
        id="train/8x1",
    ),
    # val/test: one clip per window (step 24)
    pytest.param(Case([(0, 50)], "val", CLIPS, [_run(0, 8)]), id="val/8x1"),
    # a clip that would cross the cut at 28 is dropped, never cut short
    pytest.param(
        Case(
            [(0, 28), (28, 60)],
            "train",
            dataclasses.replace(CLIPS, clip_frames=10),
            [_run(0, 10), _run(10, 10), _run(28, 10), _run(38, 10), _run(48, 10)],
        ),
        id="train/10x1-cut",
    ),
    # stride 2: a clip of 4 spans 7 frames; starts max(6, 7) = 7 apart
    pytest.param(
        Case(
            [(0, 30)],
            "train",
            dataclasses.replace(CLIPS, clip_frames=4, clip_stride=2),
            [_run(0, 4, 2), _run(7, 4, 2), _run(14, 4, 2), _run(21, 4, 2)],
        ),
        id="train/4x2",
    ),
    # the chapter rule drops a clip that is not wholly inside the kept range [0, 30)
    pytest.param(
        Case(
            [(0, 60)],
            "val",
            SamplingConfig(mode="clips", drop_first_chapters=0, drop_last_chapters=1),
            [_run(0, 8)],
            chapters=((0.0, 1.25, "a"), (1.25, 2.5, "b")),
        ),
        id="val/chapters",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_sample_clips(case: Case):
    clips = sample_clips(case.shots, 24.0, case.split, case.chapters, case.config)
    assert clips == case.expected
    assert sample_frames(case.shots, 24.0, case.split, case.chapters, case.config) == [i for c in clips for i in c]


def test_frames_mode_is_unchanged_by_the_clip_settings():
    shots = [(0, 50), (50, 60), (60, 300)]
    plain = sample_frames(shots, 24.0, "train", (), SamplingConfig(**NO_CHAPTERS))
    other = sample_frames(shots, 24.0, "train", (), SamplingConfig(clip_frames=3, clip_stride=5, **NO_CHAPTERS))
    assert plain == other == [0, 6, 12, 18, 60, 66, 72, 78, 156, 162, 168, 174, 252, 258, 264, 270]


@pytest.mark.parametrize("bad", [{"mode": "video"}, {"clip_frames": 1}, {"clip_stride": 0}])
def test_bad_clip_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        SamplingConfig(**bad)
    with pytest.raises(ConfigError, match="sampling.mode=clips"):
        IngestConfig(store_temporal_flow=True)


def test_frames_mode_keeps_its_ingest_key():
    """Datasets built before clips existed stay current: the key hashes what it hashed then."""
    cfg = IngestConfig()
    old = config_to_dict(cfg)
    old["disparity"].pop("device", None)
    for name in ("mode", "clip_frames", "clip_stride"):
        old["sampling"].pop(name)
    old.pop("store_temporal_flow")
    for name in ("flow_options", "matcher_options"):  # none given: not hashed either
        old["disparity"].pop(name)
    assert ingest_key("f", cfg) == config_hash({"source": "f", "config": old, "extra": {}})
    assert ingest_key("f", IngestConfig(sampling=SamplingConfig(mode="clips"))) != ingest_key("f", cfg)


def test_clips_never_cross_cuts_on_a_movie(sample_movie):
    """A real encoded movie with known cuts: every clip lies in one true shot, frames consecutive,
    and the one-pass scan yields exactly the pure rule's clips."""
    movie = sample_movie(layout="sbs-half", seconds=4.0, shots=[28, 34, 34], chapters=1)
    config = dataclasses.replace(CLIPS, clip_frames=10)
    scan = scan_movie(open_stereo(movie.path), sampling=config, split="train")
    frames = list(scan)
    truth = [tuple(s) for s in json.loads(movie.gt_json.read_text())["shots"]]
    assert [(s.start_frame, s.end_frame) for s in scan.shots] == truth
    assert scan.clips == sample_clips(truth, 24.0, "train", (), config, frame_count=96)
    assert len(scan.clips) >= 5
    for clip in scan.clips:
        assert clip == list(range(clip[0], clip[0] + 10))
        assert sum(1 for a, b in truth if a <= clip[0] and clip[-1] < b) == 1, f"clip {clip} crosses a cut"
    # the frames carry their clip and position, in order
    assert [(f.clip_id, f.clip_pos) for f in frames] == [(c, p) for c, clip in enumerate(scan.clips) for p in range(10)]
    assert [f.frame_index for f in frames] == [i for c in scan.clips for i in c]


def test_chunks_hold_whole_clips():
    frames = [SampledFrame(i, i / 24, 0, None, None, i // 5, i % 5) for i in range(15)]
    chunks = list(iter_chunks(frames, chunk_frames=8))
    assert [[f.clip_id for f in c.frames] for c in chunks] == [[0] * 5 + [1] * 5, [2] * 5]
    plain = [SampledFrame(i, i / 24, 0, None, None) for i in range(15)]
    assert [len(c.frames) for c in iter_chunks(plain, chunk_frames=8)] == [8, 7]


# ---- clip rows in shards ----------------------------------------------------------------------


def _clip_records(movie_id: str, n_clips: int, frames: int, split: str = "train", rejected=(), flow=True):
    """Synthetic clip rows: frame records with clip columns and a known flow (+1 px in x)."""
    out = []
    for c in range(n_clips):
        for p in range(frames):
            i = c * frames + p
            rec = make_frame_record(movie_id, i, (48, 32), seed=c + 1000 * int(movie_id.split("-")[-1]), split=split)
            reason = "disparity_range" if (c, p) in rejected else ""
            extra = {}
            if reason:
                extra = dict(disparity=np.full((32, 48), np.nan, np.float32), valid=np.zeros((32, 48), bool))
            f = None
            if flow and p < frames - 1:
                f = np.zeros((32, 48, 2), np.float32)
                f[..., 0] = 1.0 + 0.25 * p
            out.append(
                FrameRecord.from_dict(
                    {
                        **rec,
                        "clip_id": c,
                        "clip_pos": p,
                        "clip_reason": reason,
                        "temporal_flow": f,
                        "temporal_flow_valid": None if f is None else np.ones((32, 48), bool),
                        **extra,
                    }
                )
            )
    return out


def _clip_dataset(path, movies=2, clips=5, frames=4, config=None, rejected=()):
    config = config or ShardConfig(target_shard_bytes=8 * 1024, row_group_rows=3)
    for m in range(movies):
        with MovieShardWriter(path, f"movie-{m}", f"k{m}", config, {}) as w:
            for rec in _clip_records(f"movie-{m}", clips, frames, rejected=rejected):
                w.write(rec)
    publish(path)
    return path


def test_writer_keeps_clips_whole_in_row_groups_and_shards(tmp_path):
    ds = _clip_dataset(tmp_path / "ds")
    shards = list_shards(ds)
    assert len(shards) > 2  # small shards: the boundary rule is exercised
    for s in shards:
        pf = pq.ParquetFile(s.path)
        for g in range(pf.num_row_groups):
            pos = pf.read_row_group(g, columns=["clip_pos"]).column("clip_pos").to_pylist()
            assert pos[0] == 0 and len(pos) % 4 == 0, f"{s.path} row group {g}: {pos}"


def test_iter_clips_stacks_frames_flow_and_marks_rejected(tmp_path):
    ds = _clip_dataset(tmp_path / "ds", movies=1, clips=3, rejected={(1, 2)})
    clips = list(iter_clips(ds))
    assert [c["clip_id"] for c in clips] == [0, 1, 2]
    c = clips[1]
    assert c["image"].shape == (4, 32, 48, 3) and c["disparity"].shape == (4, 32, 48)
    assert c["labelled"].tolist() == [True, True, False, True]
    assert c["clip_reason"][2] == "disparity_range" and not c["valid"][2].any()
    assert c["temporal_flow"].shape == (3, 32, 48, 2)
    np.testing.assert_allclose(c["temporal_flow"][:, 0, 0, 0], [1.0, 1.25, 1.5])
    assert c["temporal_flow_valid"].all()
    # windows of 2 frames, and the rejected-frame filter
    assert (
        len(list(iter_clips(ds, clip_frames=2)))
        == 6
        == count_clips(list_shards(ds)[0], 2) + sum(count_clips(s, 2) for s in list_shards(ds)[1:])
    )
    assert [c["clip_id"] for c in iter_clips(ds, max_rejected=0)] == [0, 2]


def test_iter_clips_refuses_a_frames_mode_dataset(tiny_dataset):
    with pytest.raises(BadInputError, match="frames mode"):
        next(iter_clips(tiny_dataset()))


# ---- the clip dataset -------------------------------------------------------------------------


def _key(sample):
    return float(sample["image"].double().sum())


def test_clip_dataset_covers_each_clip_once_over_ranks_and_workers(tmp_path):
    ds = _clip_dataset(tmp_path / "ds", movies=2, clips=6)
    centre = AugmentConfig(size=16, enabled=False)

    def keys(rank, world, workers):
        d = ClipDataset(ds, "train", clip_frames=4, augment=centre, infinite=False, rank=rank, world_size=world)
        if workers == 0:
            return [_key(s) for s in d]
        return [_key(s) for s in DataLoader(d, batch_size=None, num_workers=workers)]

    single = keys(0, 1, 0)
    assert len(single) == 12 and len(set(single)) == 12
    parts = [keys(r, 2, 1) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(single)


def test_clip_samples_crop_every_frame_alike_and_scale_targets_per_clip(tmp_path):
    ds = _clip_dataset(tmp_path / "ds", movies=1, clips=1)
    d = ClipDataset(ds, "train", clip_frames=4, augment=AugmentConfig(size=16, flip_prob=1.0), infinite=False)
    (sample,) = list(d)
    assert sample["image"].shape == (4, 3, 16, 16) and sample["target"].shape == (4, 16, 16)
    m = sample["mask"]
    assert float(sample["target"][m].min()) == 0.0 and float(sample["target"][m].max()) == 1.0  # over the clip
    # flipped: the flow's x component changes sign; scaled by the resize (crop side -> 16)
    fx = sample["flow"][:3, ..., 0][sample["flow_valid"][:3]]
    assert float(fx.max()) < 0
    assert not sample["flow_valid"][3].any()  # the last frame has no next


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-workers"])
def test_clip_dataset_mid_epoch_resume_continues_exactly(tmp_path, workers):
    ds = _clip_dataset(tmp_path / "ds", movies=2, clips=6)
    aug = AugmentConfig(size=16)

    def loader(d):
        return DataLoader(d, batch_size=2, num_workers=workers, collate_fn=_collate)

    d = ClipDataset(ds, "train", clip_frames=2, augment=aug, seed=3, rank=0, world_size=1)
    it = iter(loader(d))
    reference = [next(it) for _ in range(16)]
    resumed = ClipDataset(ds, "train", clip_frames=2, augment=aug, seed=3, rank=0, world_size=1)
    resumed.load_state_dict(d.state_dict(batches_consumed=9, batch_size=2))
    it2 = iter(loader(resumed))
    for ref in reference[9:]:
        got = next(it2)
        for k in ("image", "target", "mask", "flow", "flow_valid"):
            assert torch.equal(got[k], ref[k]), k


# ---- temporal flow from a real ingest ---------------------------------------------------------


@pytest.mark.slow
def test_stored_temporal_flow_matches_the_true_motion(sample_movie, tmp_path):
    """The synthetic camera pans with parallax: every layer moves by a known amount per frame.
    The stored flow (label_chunk through the shards) is within 1 px of it where it is consistent."""
    import json

    from pipeline.ingest import ChunkJob, WorkDir, commit_movie, ingest_config, label_chunk
    from pipeline.synthetic import movie_frame_motion

    movie = sample_movie(layout="sbs-full", seconds=3.0, shots=[40, 32], chapters=1)
    cfg = ingest_config(
        [
            "sampling.mode=clips",
            "sampling.clip_frames=4",
            "store_temporal_flow=true",
            "sampling.drop_first_chapters=0",
            "sampling.drop_last_chapters=0",
            "sampling.eval_fps=1",
        ]
    )
    src = open_stereo(movie.path)
    scan = scan_movie(src, cfg.shots, cfg.sampling, "val")
    work = WorkDir(tmp_path / "work")
    job = ChunkJob(str(work.root), "m", "val", cfg, src.crop, *src.eye_size, {})
    names = [label_chunk(c.frames, (c.shot_id, c.part), job).name for c in iter_chunks(scan, cfg.chunk_frames)]
    commit_movie(tmp_path / "ds", "m", "k", work, names, cfg, {})
    meta = json.loads(movie.gt_json.read_text())
    crop = src.crop
    pairs = 0
    for shard in sorted((tmp_path / "ds").rglob("part-*.parquet")):
        for clip in iter_clips(str(shard)):
            for t in range(len(clip["frame_index"]) - 1):
                true = crop.apply(movie_frame_motion(meta, int(clip["frame_index"][t])))
                ok = clip["temporal_flow_valid"][t] & np.isfinite(true[..., 0])
                assert ok.mean() > 0.8, "most of the frame is consistent"
                err = np.linalg.norm(clip["temporal_flow"][t] - true, axis=-1)[ok]
                assert np.median(err) < 0.5 and (err < 1.0).mean() > 0.9, f"frame {clip['frame_index'][t]}"
                pairs += 1
    assert pairs >= 6


# ---- trainer and evaluation on clips ------------------------------------------------------------


def _split_dataset(path, split):
    config = ShardConfig(target_shard_bytes=8 * 1024, row_group_rows=4)
    for m in range(2):
        with MovieShardWriter(path, f"movie-{m}", f"k{m}", config, {}) as w:
            for rec in _clip_records(f"movie-{m}", 3, 4, split=split, rejected={(0, 1)}):
                w.write(rec)
    publish(path)
    return path


def test_trainer_runs_on_clips_with_the_temporal_loss(tmp_path):
    from training.config import demo_train_config
    from training.train import run_training

    ds = _split_dataset(tmp_path / "ds", "train")
    cfg = demo_train_config(str(ds), str(tmp_path / "run"), max_steps=2, val_split=None)
    cfg.data.clip_frames, cfg.data.batch_size, cfg.data.augment.size = 4, 2, 32
    cfg.loss.temporal, cfg.tensorboard, cfg.progress, cfg.log_every = "both", False, False, 1
    result = run_training(cfg.validate())
    assert result.steps == 2 and all(np.isfinite(result.losses))


def test_clips_training_config_errors_before_any_work():
    from training.config import DatasetSpec, TrainConfig

    cfg = TrainConfig()
    cfg.data.clip_frames = 4
    cfg.data.datasets = [DatasetSpec(name="s", kind="synthetic")]
    with pytest.raises(ConfigError, match="not clips: s"):
        cfg.validate()
    cfg.data.datasets = [DatasetSpec(name="m", kind="shards", path="x")]
    cfg.loss.temporal = "optical"
    with pytest.raises(ConfigError, match="loss.temporal"):
        cfg.validate()


def test_eval_reports_the_temporal_error_beside_the_movies_metric(tmp_path):
    from training.evaluation import evaluate
    from training.model import ModelConfig, build_model

    ds = _split_dataset(tmp_path / "ds", "test")
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="tiny", features=16))
    report = evaluate(model, {"movies": str(ds)}, device="cpu", progress=False)
    assert set(report.results) == {"movies", "movies_temporal"}
    temporal = report.results["movies_temporal"]
    assert temporal.n_images == 6 and np.isfinite(temporal.value) and temporal.value > 0
    # the rejected clip frames (one per clip 0) are no test images of the per-frame metric
    assert report.results["movies"].n_images + report.results["movies"].n_skipped == 22


def test_rejected_clip_frames_stay_in_their_clip_without_a_label(sample_movie, tmp_path):
    """Through label_chunk: a rig 3 px out of vertical alignment fails every frame's check; in clips
    mode each frame is still a row of its clip, with its picture, its reason and an empty label."""
    from pipeline.ingest import ChunkJob, WorkDir, ingest_config, label_chunk
    from pipeline.shards import read_chunk
    from pipeline.shards.reader import decode_rows

    movie = sample_movie(layout="sbs-full", seconds=2.0, shots=[48], chapters=1, vertical_offset_px=3.0)
    cfg = ingest_config(
        ["sampling.mode=clips", "sampling.clip_frames=4", "sampling.drop_first_chapters=0"]
        + ["sampling.drop_last_chapters=0"]
    )
    src = open_stereo(movie.path)
    chunk = next(iter_chunks(scan_movie(src, cfg.shots, cfg.sampling, "val"), 4))
    work = WorkDir(tmp_path / "work")
    job = ChunkJob(str(work.root), "m", "val", cfg, src.crop, *src.eye_size, {})
    summary = label_chunk(chunk.frames, (chunk.shot_id, chunk.part), job)
    assert summary.kept == 0 and summary.rejected == {"vertical_disparity": 4}
    rows = decode_rows(read_chunk(work.chunk_path(summary.name)))
    assert [(r["clip_id"], r["clip_pos"], r["clip_reason"]) for r in rows] == [
        (0, p, "vertical_disparity") for p in range(4)
    ]
    assert all(r["image"].shape == (136, 320, 3) and not r["valid"].any() for r in rows)
    assert all(np.isnan(r["disparity"]).all() and r["uncertainty"] is None for r in rows)
    assert len(work.rejected(summary.name)) == 4  # and listed as rejected, as in frames mode
