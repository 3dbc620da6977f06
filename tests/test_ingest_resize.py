"""pipeline.ingest library paths: storage resolution, swapped-eyes evidence, concurrent publishes.

Labels rendered frames with known disparity (pipeline.synthetic) through ``label_chunk`` ->
``commit_movie`` -> ``publish_with`` and reads the rows back from the real Parquet shards.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.ingest import (
    ChunkJob,
    WorkDir,
    commit_movie,
    ingest_config,
    label_chunk,
    publish_with,
    store_size,
    swap_report,
)
from pipeline.layouts import CropBox
from pipeline.synthetic import render_stereo_frame

W, H = 480, 270  # one eye, no letterbox: the crop is the whole frame


@dataclass
class Frame:
    """What label_chunk reads from a pipeline.video.SampledFrame."""

    left: np.ndarray
    right: np.ndarray
    shot_id: int
    frame_index: int
    pts_seconds: float


def _frames(shot: int = 0, n: int = 2, swap_eyes: bool = False):
    truths = [
        render_stereo_frame(W, H, 1.0 + 0.5 * i, seed=shot, shot=shot, letterbox=False, swap_eyes=swap_eyes)
        for i in range(n)
    ]
    return truths, [Frame(t.left, t.right, shot, shot * 100 + i, (shot * 100 + i) / 24) for i, t in enumerate(truths)]


def _job(work, movie_id, config, swap=False):
    return ChunkJob(
        work_dir=str(work.root),
        movie_id=movie_id,
        split="train",
        config=config,
        crop=CropBox(0, 0, W, H),
        source_width=W,
        source_height=H,
        provenance={
            "flow_backend": config.disparity.flow,
            "ingest_key": "k",
            "source_fingerprint": "f",
            "project_version": "0",
        },
        swap=swap,
    )


def _ingest(dataset, movie_id, config, frames, key="k0000000000000000"):
    work = WorkDir.for_movie(dataset, movie_id, key)
    summary = label_chunk(frames, (frames[0].shot_id, 0), _job(work, movie_id, config))
    manifest = commit_movie(dataset, movie_id, key, work, [summary.name], config, {"split": "train"})
    work.remove()  # as the flow does after its commit (verify warns about staging left behind)
    return summary, manifest


def test_store_size_halves_the_paper_crop_and_never_upscales():
    assert store_size(1880, 800, 940) == (940, 400)
    assert store_size(1880, 800, None) == (1880, 800)
    assert store_size(320, 136, 940) == (320, 136)  # sample movies keep their size
    w, h = store_size(1001, 427, 501)
    assert (w, h) == (500, 214) and w % 2 == 0 == h % 2
    with pytest.raises(ConfigError, match="store_width"):
        ingest_config(["store_width=1"])
    with pytest.raises(ConfigError, match="swap_eyes"):
        ingest_config(["swap_eyes=sometimes"])


def test_stored_rows_are_downscaled_with_disparity_in_stored_pixels(tmp_path):
    from pipeline.shards import iter_samples, verify

    config = ingest_config(["store_width=240"], flow="dis-ultrafast")
    truths, frames = _frames()
    summary, manifest = _ingest(tmp_path, "half", config, frames)
    publish_with(tmp_path, add=[manifest])
    assert verify(str(tmp_path)) == []
    rows = list(iter_samples(tmp_path))
    assert len(rows) == summary.kept == 2
    factor = 240 / W
    for row, truth in zip(rows, truths):
        assert row["image"].shape == (136, 240, 3) and row["width"] == 240 and row["height"] == 136
        assert (row["crop_w"], row["crop_h"], row["source_width"]) == (W, H, W)  # width / crop_w is the scale
        import cv2

        gt = cv2.resize(truth.disparity, (240, 136), interpolation=cv2.INTER_AREA) * factor
        sky = cv2.resize(truth.sky.astype(np.float32), (240, 136), interpolation=cv2.INTER_AREA) > 0
        ok = row["valid"] & ~sky & ~row["sky"]
        assert ok.mean() > 0.5
        err = np.abs(row["disparity"] - gt)[ok]
        assert np.median(err) < 0.25, "stored disparity is the truth times the width factor"
        front, behind = ok & (gt > 2), ok & (gt < -2)
        assert (row["disparity"][front] > 0).mean() > 0.97 and (row["disparity"][behind] < 0).mean() > 0.97
        # statistics describe the stored arrays
        assert row["valid_fraction"] == pytest.approx(row["valid"].mean(), abs=1e-6)
        assert row["sky_fraction"] == pytest.approx(row["sky"].mean(), abs=1e-6)
        assert row["disparity_p50"] == pytest.approx(np.median(row["disparity"][row["valid"]]), abs=0.05)


def test_swap_evidence_is_kept_per_frame_and_decided_per_shot(tmp_path):
    config = ingest_config(flow="dis-ultrafast")
    _, normal = _frames(shot=0, n=3)
    _, reversed_ = _frames(shot=1, n=3, swap_eyes=True)
    work = WorkDir(tmp_path / "w")
    a = label_chunk(normal, (0, 0), _job(work, "m", config))
    b = label_chunk(reversed_, (1, 0), _job(work, "m", config))
    assert len(a.swap_evidence) == 3 and work.summary(a.name).swap_evidence == a.swap_evidence  # in the marker
    report = swap_report([a, b])
    assert report.swapped_shots == [1] and not report.shots[0].swapped
    assert report.shots[1].swapped_frames == 3
    # relabelled with the eyes exchanged: its own chunk name, normal-looking evidence, true left image
    fixed = label_chunk(reversed_, (1, 0), _job(work, "m", config, swap=True))
    assert fixed.name == "s00001-p000x" and fixed.swapped
    assert swap_report([a, fixed]).swapped_shots == []
    # a shot without evidence: no decision, and strict JSON (manifests and --json output)
    import dataclasses
    import json

    blind = dataclasses.replace(a, shot_id=7, swap_evidence=[None, None])
    report = swap_report([a, blind])
    assert report.shots[7].frames == 2 and not report.shots[7].swapped and report.shots[7].confidence == 0
    json.dumps(report.to_dict(), allow_nan=False)


def _publish_after(barrier, dataset, manifest):
    barrier.wait()
    publish_with(dataset, add=[manifest])


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_concurrent_publishes_keep_every_movie(tmp_path, how):
    """Ingests publishing into one dataset at once: each read-modify-write holds the lock."""
    import multiprocessing as mp

    from pipeline.shards import read_manifest

    config = ingest_config(flow="dis-ultrafast")
    _, frames = _frames(n=1)
    n = 6 if how == "threads" else 3
    manifests = [_ingest(tmp_path, f"m{i}", config, frames, key=f"{i:016x}")[1] for i in range(n)]
    if how == "threads":
        barrier = threading.Barrier(n)
        workers = [threading.Thread(target=_publish_after, args=(barrier, tmp_path, m)) for m in manifests]
    else:
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(n)
        workers = [ctx.Process(target=_publish_after, args=(barrier, tmp_path, m)) for m in manifests]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    if how == "processes":
        assert [w.exitcode for w in workers] == [0] * n
    current = read_manifest(tmp_path)
    assert set(current.movies) == {f"m{i}" for i in range(n)}
    assert current.version == n


def test_always_labels_the_true_left_view_of_reversed_frames(tmp_path):
    truths, reversed_ = _frames(shot=2, n=2, swap_eyes=True)
    config = ingest_config(["swap_eyes=always"], flow="dis-ultrafast")
    assert config.disparity_for().swap_eyes and not config.disparity_for(swap=True).swap_eyes
    summary, manifest = _ingest(tmp_path, "always", config, reversed_)
    assert summary.swapped and swap_report([summary]).swapped_shots == []
    from pipeline.shards import iter_samples, publish

    publish(tmp_path, [manifest])
    for row, truth in zip(iter_samples(tmp_path), truths):
        # the stored image is the true left view (the file's right slot), matching its label
        img = row["image"].astype(int)  # lossy-coded in the shard: compare distances
        assert np.abs(img - truth.right).mean() < 0.5 * np.abs(img - truth.left).mean()
        ok = row["valid"] & ~row["sky"]
        assert (row["disparity"][ok & (truth.disparity > 3)] > 0).mean() > 0.97


def test_auto_corrects_a_reversed_movie_but_not_a_stray_shot():
    from pipeline.disparity import SwapDecision
    from pipeline.ingest import SwapReport

    def d(swapped, conf):
        return SwapDecision(swapped, conf, 0 if swapped else 3, 3 if swapped else 0, 3, 0.3 if swapped else -0.3)

    stray = SwapReport(movie=d(False, 0.6), shots={0: d(False, 1.0), 1: d(True, 0.33), 2: d(True, 1.0)})
    assert stray.swapped_shots == [1, 2] and stray.shots_to_correct(0.5) == [2]
    whole = SwapReport(movie=d(True, 0.9), shots={0: d(False, 0.2), 1: d(True, 0.33), 2: d(False, 1.0)})
    assert whole.shots_to_correct(0.5) == [0, 1]  # all but the confidently normal shot
