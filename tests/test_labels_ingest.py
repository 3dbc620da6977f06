"""Real stereo through the whole ingest: movies rendered from the shared ground-truth pairs.

Each pair becomes a short letterboxed, convergence-shifted, slowly zooming sbs-full H.264 movie
(:mod:`pipeline.pair_movie`). Ingested with the defaults, every sampled frame must be kept, and the
stored labels (cropped, resized to the stored width, through the storage codecs) must meet the
label floors when compared with the frame's ground truth at the stored size.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # eight movies through a real Prefect flow


@pytest.fixture(scope="module")
def pair_movies(stereo_gt_pairs, tmp_path_factory):
    from pipeline.pair_movie import make_pair_movie

    root = tmp_path_factory.mktemp("pair_movies")
    return {p.name: make_pair_movie(root / f"{p.name}.mkv", p.left, p.right, p.disparity) for p in stereo_gt_pairs}


@pytest.fixture(scope="module")
def ingested(prefect_harness, pair_movies, tmp_path_factory):
    from flows.ingest import ingest_movie
    from flows.runners import RunnerSpec

    out = tmp_path_factory.mktemp("pair_ingest") / "dataset"
    results = {}
    for name, movie in pair_movies.items():
        results[name] = ingest_movie(
            movie=str(movie.path),
            out=str(out),
            movie_id=name.replace("_", "-"),
            split="train",
            layout="sbs-full",
            runner=RunnerSpec(workers=2),
        )
    return out, results


def _truth_at_stored_size(movie, sample) -> np.ndarray:
    """The frame's ground truth cropped like the label and resampled to the stored size."""
    truth = movie.truth(int(sample["frame_index"]))
    x, y, w, h = (int(sample[k]) for k in ("crop_x", "crop_y", "crop_w", "crop_h"))
    truth = truth[y : y + h, x : x + w]
    sh, sw = sample["disparity"].shape
    if (sw, sh) != (w, h):
        truth = cv2.resize(truth, (sw, sh), interpolation=cv2.INTER_NEAREST) * (sw / w)
    return truth


def test_every_frame_with_depth_is_kept_and_labels_meet_the_floors(ingested, pair_movies):
    from pipeline.shards import iter_samples, verify

    out, results = ingested
    assert verify(out) == []
    known = kept = bad = 0
    per_movie = {}
    for name, movie in pair_movies.items():
        res = results[name]
        assert sum(res["rejected"].values()) == 0, (name, res["rejected"])
        samples = list(iter_samples(out, movie_ids=[name.replace("_", "-")]))
        assert len(samples) == res["kept"] >= 4, name
        k = b = n = 0
        for s in samples:
            truth = _truth_at_stored_size(movie, s)
            has = np.isfinite(truth)
            ok = s["valid"] & has & ~s["sky"]
            err = np.abs(s["disparity"] - truth)[ok]
            n += int((has & ~s["sky"]).sum())
            k += int(ok.sum())
            b += int((err > 2.0).sum())
        per_movie[name] = (k / n, b / max(k, 1))
        known, kept, bad = known + n, kept + k, bad + b
    for name, (k, b) in per_movie.items():
        print(f"{name}: kept {k:.3f} bad-2 {b:.4f}")
    print(f"pooled: kept {kept / known:.4f} bad-2 {bad / kept:.4f}")
    assert kept / known >= 0.75
    assert bad / kept <= 0.025
    assert max(b for _, b in per_movie.values()) <= 0.08
