"""The synthetic 3D movie: its frames agree with its ground truth, and the sidecar is complete."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.synthetic import letterbox_crop, load_ground_truth, make_sample_movie, render_stereo_frame


def _warp_right_to_left(right: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """Sample the right view at x - d: where the truth is right, this reproduces the left view."""
    import cv2

    h, w = disparity.shape
    xs = np.arange(w, dtype=np.float32)[None, :] - np.nan_to_num(disparity)
    ys = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w))
    return cv2.remap(right, xs.astype(np.float32), ys.astype(np.float32), cv2.INTER_LINEAR)


def test_render_is_deterministic_for_a_seed():
    a = render_stereo_frame(160, 90, 0.5, seed=3)
    b = render_stereo_frame(160, 90, 0.5, seed=3)
    c = render_stereo_frame(160, 90, 0.5, seed=4)
    assert np.array_equal(a.left, b.left) and np.array_equal(a.right, b.right)
    assert not np.array_equal(a.left, c.left)


def test_disparity_has_both_signs_within_three_percent_of_width():
    f = render_stereo_frame(320, 180, 1.0, seed=0)
    d = f.disparity[np.isfinite(f.disparity)]
    assert d.min() < -0.02 * 320 and d.max() > 0.02 * 320
    assert d.min() >= -0.03 * 320 - 1e-3 and d.max() <= 0.03 * 320 + 1e-3


def test_right_view_warped_by_truth_reproduces_left_view():
    f = render_stereo_frame(320, 180, 0.7, seed=1)
    warped = _warp_right_to_left(f.right, f.disparity).astype(np.float32)
    err = np.abs(warped - f.left.astype(np.float32)).mean(axis=2)
    inside = np.isfinite(f.disparity)
    # occlusion borders differ; the bulk must match to interpolation error
    assert np.median(err[inside]) < 2.0
    assert (err[inside] < 8).mean() > 0.9


def test_sky_is_the_farthest_and_at_the_top():
    f = render_stereo_frame(320, 180, 0.0, seed=2)
    crop = letterbox_crop(320, 180)
    assert f.sky[crop.y].any() and not f.sky[crop.y + crop.h - 1].any()
    d = f.disparity
    assert np.allclose(d[f.sky], np.nanmin(d))


def test_letterbox_bars_are_black_and_even():
    crop = letterbox_crop(320, 180)
    assert crop.y % 2 == 0 and crop.h % 2 == 0 and crop.y > 0
    f = render_stereo_frame(320, 180, 0.0, seed=0)
    assert f.left[: crop.y].max() == 0 and f.left[crop.y + crop.h :].max() == 0
    assert np.isnan(f.disparity[: crop.y]).all()


def test_vertical_offset_and_swap_eyes():
    base = render_stereo_frame(160, 90, 0.0, seed=5)
    shifted = render_stereo_frame(160, 90, 0.0, seed=5, vertical_offset_px=3)
    swapped = render_stereo_frame(160, 90, 0.0, seed=5, swap_eyes=True)
    crop = letterbox_crop(160, 90)
    rows = slice(crop.y + 6, crop.y + crop.h - 6)
    assert np.array_equal(shifted.left, base.left)
    assert np.abs(shifted.right[rows][3:].astype(int) - base.right[rows][:-3].astype(int)).mean() < 1.0
    assert np.array_equal(swapped.left, base.right) and np.array_equal(
        swapped.disparity, base.disparity, equal_nan=True
    )


def test_sample_movie_sidecar(sample_movie):
    movie = sample_movie(layout="sbs-half", seconds=6.0)
    truth = load_ground_truth(movie.path)
    meta = json.loads(movie.gt_json.read_text())
    assert meta["frame_count"] == 144 and truth.disparity.shape == (144, 180, 320)
    assert truth.disparity.dtype == np.float16 and truth.sky.dtype == bool
    assert truth.shots[0][0] == 0 and truth.shots[-1][1] == 144
    assert all(a[1] == b[0] for a, b in zip(truth.shots, truth.shots[1:]))
    assert len(truth.chapters) == 3 and truth.crop == movie.crop
    assert meta["stereo_mode"] == "left_right"


def test_sample_movie_is_deterministic(tmp_path):
    a = make_sample_movie(tmp_path / "a.mkv", seconds=1.0, size=(64, 36), chapters=1)
    b = make_sample_movie(tmp_path / "b.mkv", seconds=1.0, size=(64, 36), chapters=1)
    ta, tb = load_ground_truth(a.path), load_ground_truth(b.path)
    assert np.array_equal(ta.disparity, tb.disparity, equal_nan=True) and ta.shots == tb.shots


def test_sample_movie_spec_and_keywords_make_the_same_movie(tmp_path):
    from pipeline.synthetic import SampleMovieSpec

    spec = SampleMovieSpec(seconds=1.0, size=(64, 36), chapters=1, seed=3, dark_shots=(1,))
    a = make_sample_movie(tmp_path / "a.mkv", spec)
    b = make_sample_movie(tmp_path / "b.mkv", seconds=1.0, size=(64, 36), chapters=1, seed=3, dark_shots=(1,))
    c = make_sample_movie(tmp_path / "c.mkv", spec, seed=4)  # keywords override the spec's fields
    ta, tb, tc = (load_ground_truth(m.path) for m in (a, b, c))
    assert np.array_equal(ta.disparity, tb.disparity, equal_nan=True) and ta.shots == tb.shots == spec.shot_bounds()
    meta_a, meta_b = (json.loads(m.gt_json.read_text()) for m in (a, b))
    assert {**meta_a, "files": None} == {**meta_b, "files": None} and meta_a["dark_shots"] == [1]
    assert not np.array_equal(ta.disparity, tc.disparity, equal_nan=True)
    with pytest.raises(TypeError, match="frames_per_second"):
        make_sample_movie(tmp_path / "d.mkv", frames_per_second=24)


@pytest.mark.parametrize("size", [(33, 36), (64, 35), (16, 16)], ids=["odd-width", "odd-height", "too-small"])
def test_bad_sizes_are_config_errors(tmp_path, size):
    with pytest.raises(ConfigError, match="eye size"):
        make_sample_movie(tmp_path / "x.mkv", seconds=1.0, size=size)


def test_sample_movie_command(tmp_path, capsys):
    from flows.cli import main

    out = tmp_path / "cli.mkv"
    rc = main(
        [
            "sample-movie",
            str(out),
            "--layout",
            "tab-half",
            "--seconds",
            "1",
            "--size",
            "64x36",
            "--chapters",
            "1",
            "--vertical-offset",
            "1",
            "--swap-eyes",
        ]
    )
    assert rc == 0 and out.exists()
    truth = load_ground_truth(out)
    assert truth.meta["layout"] == "tab-half" and truth.meta["swap_eyes"] and truth.meta["vertical_offset_px"] == 1.0
    assert "wrote" in capsys.readouterr().out


def test_probe_and_shots_commands_json(sample_movie, capsys):
    from flows.cli import main

    movie = sample_movie(layout="sbs-half", seconds=4.0)
    assert main(["probe", str(movie.path), "--json"]) == 0
    probed = json.loads(capsys.readouterr().out)
    assert probed["layout"] == "sbs-half" and len(probed["chapters"]) == 3
    assert main(["shots", str(movie.path), "--json", "--split", "val"]) == 0
    shots = json.loads(capsys.readouterr().out)
    assert [[s["start_frame"], s["end_frame"]] for s in shots["shots"]] == [list(s) for s in movie.shots]
    assert shots["samples"] == sorted(shots["samples"])


def test_contact_sheet(sample_movie, tmp_path):
    import cv2

    from flows.cli import main

    movie = sample_movie(layout="sbs-half", seconds=4.0)
    sheet = tmp_path / "sheet.png"
    assert main(["shots", str(movie.path), "--contact-sheet", str(sheet), "--no-progress"]) == 0
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[1] > 4 * 256  # four shots per row, two tiles each
