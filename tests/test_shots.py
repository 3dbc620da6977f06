"""Shot detectors by name, fed from our pass; a clip shorter than 1 s is found and not sampled."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.sampling import SamplingConfig
from pipeline.shots import DETECTORS, Shot, ShotConfig, build_detector, shots_from_cuts
from pipeline.video import open_stereo, scan_movie


def test_registry_has_adaptive_and_content():
    assert {"adaptive", "content"} <= set(DETECTORS)
    assert ShotConfig().detector == "adaptive"


def test_unknown_detector_lists_valid_names():
    with pytest.raises(ConfigError, match="adaptive, content"):
        build_detector(ShotConfig(detector="histogramm"), 24.0)


@pytest.mark.parametrize("name", ["adaptive", "content"])
def test_detector_finds_a_hard_cut_in_frames(name):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (36, 64, 3), dtype=np.uint8)
    b = 255 - a
    det = build_detector(ShotConfig(detector=name), 24.0)
    cuts, reported_at = [], None
    for i in range(60):
        img = a if i < 30 else b
        noisy = np.clip(img.astype(int) + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
        cuts += det.push(i, noisy)
        if cuts and reported_at is None:
            reported_at = i
    cuts += det.finish()
    assert reported_at is not None and reported_at - 30 <= det.latency, "reported within the detector's latency"
    assert cuts == [30]


def test_shots_from_cuts_are_half_open():
    assert shots_from_cuts([30, 10, 30], 50) == [Shot(0, 0, 10), Shot(1, 10, 30), Shot(2, 30, 50)]
    assert shots_from_cuts([], 5) == [Shot(0, 0, 5)]


def test_short_clip_found_but_not_sampled(sample_movie):
    # shots of 40, 20 (< 1 s), 36 frames
    movie = sample_movie(layout="sbs-half", seconds=4.0, shots=[40, 20, 36], chapters=1)
    scan = scan_movie(
        open_stereo(movie.path), sampling=SamplingConfig(drop_first_chapters=0, drop_last_chapters=0), split="train"
    ).run()
    assert [(s.start_frame, s.end_frame) for s in scan.shots] == [(0, 40), (40, 60), (60, 96)]
    assert scan.samples == [0, 6, 12, 18, 60, 66, 72, 78]
