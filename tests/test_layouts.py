"""Layouts: splitting packed frames, half vs full, content detection, letterbox detection (no codec)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import BadInputError
from pipeline.layouts import CropBox, Layout, detect_layout, detect_letterbox, half_or_full, split_frame
from pipeline.synthetic import letterbox_crop, pack_eyes, render_stereo_frame

PACKED = ["sbs-full", "sbs-half", "tab-full", "tab-half"]


@pytest.fixture(scope="module")
def views():
    """Rendered stereo frames from several shots and times (the generator's own eyes)."""
    return [render_stereo_frame(320, 180, t, seed=s, shot=k) for s in (0, 1) for k in range(2) for t in (0.0, 1.0)]


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-9))


@pytest.mark.parametrize("layout", PACKED)
def test_split_restores_each_eye(views, layout):
    f = views[0]
    left, right = split_frame(pack_eyes(f.left, f.right, layout), layout)
    assert left.shape == f.left.shape and right.shape == f.right.shape
    if layout.endswith("full"):
        assert np.array_equal(left, f.left) and np.array_equal(right, f.right)
    else:  # squeezed to half and restored: close to the original, and not the other eye
        assert _psnr(left, f.left) > 24 and _psnr(right, f.right) > 24
        assert _psnr(left, f.left) > _psnr(left, f.right) + 3


@pytest.mark.parametrize(
    "size,sbs,expected",
    [
        ((1920, 1080), True, Layout.SBS_HALF),
        ((3840, 1080), True, Layout.SBS_FULL),
        ((1920, 1080), False, Layout.TAB_HALF),
        ((1920, 2160), False, Layout.TAB_FULL),
        ((1920, 816), True, Layout.SBS_HALF),
    ],
    ids=["1920x1080-sbs-half", "3840x1080-sbs-full", "1920x1080-tab-half", "1920x2160-tab-full", "scope-816-sbs-half"],
)
def test_half_or_full_from_eye_aspect(size, sbs, expected):
    assert half_or_full(*size, side_by_side=sbs)[0] is expected


@pytest.mark.parametrize("layout", PACKED)
def test_detect_layout_from_content(views, layout):
    decision = detect_layout([pack_eyes(f.left, f.right, layout) for f in views])
    assert decision.layout is Layout(layout)
    assert "same scene" in decision.reason and decision.scores


@pytest.mark.parametrize("width", [640, 320], ids=["2d-wide", "2d-16x9"])
def test_2d_video_is_not_a_stereo_pair(width):
    frames = [render_stereo_frame(width, 180, t, seed=2, shot=k).left for k in range(2) for t in (0.0, 1.0)]
    with pytest.raises(BadInputError, match="not a stereo pair"):
        detect_layout(frames, path="flat.mkv")


def test_odd_width_cannot_be_split():
    frame = np.zeros((180, 321, 3), np.uint8)
    with pytest.raises(BadInputError, match="odd width"):
        split_frame(frame, "sbs-full")


def test_letterbox_found(views):
    assert detect_letterbox([f.left for f in views]) == letterbox_crop(320, 180)


def test_letterbox_robust_to_dark_scenes(views):
    dark = [render_stereo_frame(320, 180, t, seed=3, dark=True).left for t in (0.0, 0.5, 1.0, 1.5)]
    # mostly night scenes, one lit frame: the bars are still exactly the black rows
    assert detect_letterbox(dark + [views[0].left]) == letterbox_crop(320, 180)


def test_letterbox_crop_is_even_and_inward():
    img = np.full((100, 200, 3), 128, np.uint8)
    img[:11] = 0
    img[-9:] = 0
    crop = detect_letterbox([img])
    assert crop == CropBox(0, 12, 200, 78)


def test_no_bars_gives_full_frame(views):
    frames = [render_stereo_frame(160, 90, 0.0, seed=1, letterbox=False).left]
    assert detect_letterbox(frames) == CropBox(0, 0, 160, 90)
