"""pipeline.disparity and ``depthmine disparity`` on rendered frames with known disparity.

Figures asserted here (dis-medium on 480x270 frames of the sample-movie renderer): among valid
non-sky pixels the median error is under 0.3 px and fewer than 5% are off by more than 2 px; the
left-right check keeps under 25% of truly occluded pixels and over 85% of visible ones.
"""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest

from flows.cli import main
from pipeline.config import config_from_dict, config_to_dict
from pipeline.disparity import (
    REJECT_LR,
    REJECT_RANGE,
    REJECT_VERTICAL,
    REJECTION_REASONS,
    UNCERTAINTY_MAX_PX,
    DisparityConfig,
    FrameStats,
    compute_disparity,
    compute_disparity_batch,
    decide_swapped_eyes,
    detect_swapped_eyes,
    preset_config,
    resize_result,
)
from pipeline.errors import ConfigError
from pipeline.flow import get_backend
from pipeline.synthetic import render_stereo_frame

W, H = 480, 270
STATS_FIELDS = [
    "valid_fraction",
    "lr_pass_fraction",
    "vertical_fail_fraction",
    "disparity_min",
    "disparity_max",
    "disparity_p05",
    "disparity_p50",
    "disparity_p95",
    "disparity_range_px",
    "sky_fraction",
]


def frame(seed: int = 0, t: float = 1.0, **kw):
    return render_stereo_frame(W, H, t, seed, letterbox=False, **kw)


@pytest.fixture(scope="module")
def labelled():
    """Two rendered frames and their labels with the default configuration."""
    out = []
    for seed in (0, 1):
        truth = frame(seed)
        out.append((truth, compute_disparity(truth.left, truth.right, DisparityConfig())))
    return out


def true_occlusions(disparity: np.ndarray) -> np.ndarray:
    """Left pixels hidden in the right view: their match is covered by a nearer pixel."""
    h, w = disparity.shape
    occ = np.zeros((h, w), bool)
    for y in range(h):
        pos = np.round(np.arange(w) - disparity[y]).astype(int)
        inside = (pos >= 0) & (pos < w)
        zbuf = np.full(w, -np.inf)
        np.maximum.at(zbuf, pos[inside], disparity[y][inside])
        occ[y] = ~inside
        occ[y][inside] |= zbuf[pos[inside]] > disparity[y][inside] + 1.0
    return occ


def test_positive_and_negative_disparity_have_the_right_sign_and_small_error(labelled):
    for truth, res in labelled:
        gt = truth.disparity
        assert gt.min() < -5 and gt.max() > 5, "the rendered scene spans both sides of the screen"
        ok = res.valid & ~truth.sky
        err = np.abs(res.disparity - gt)[ok]
        assert np.median(err) < 0.3
        assert (err > 2.0).mean() < 0.05
        front, behind = ok & (gt > 3), ok & (gt < -3)
        assert front.sum() > 1000 and behind.sum() > 1000
        assert (res.disparity[front] > 0).mean() > 0.98
        assert (res.disparity[behind] < 0).mean() > 0.98
        assert res.rejected_reason is None


def test_left_right_check_removes_occluded_pixels(labelled):
    truth, res = labelled[0]
    occ = true_occlusions(truth.disparity) & ~truth.sky
    visible = ~true_occlusions(truth.disparity) & ~truth.sky
    assert occ.sum() > 0.02 * occ.size
    assert res.valid[occ].mean() < 0.25
    assert res.valid[visible].mean() > 0.85
    assert np.median(res.uncertainty[occ]) > 2.0 > np.median(res.uncertainty[visible])


def test_sky_is_masked_and_set_to_the_minimum(labelled):
    for truth, res in labelled:
        iou = (res.sky & truth.sky).sum() / (res.sky | truth.sky).sum()
        assert iou > 0.8
        assert res.valid[res.sky].all()
        non_sky = res.valid & ~res.sky
        floor = res.disparity[non_sky].min()
        assert np.all(res.disparity[res.sky] == floor)
        # the method labels sky with the frame's minimum disparity: the far end of the rest of
        # the scene (not the renderer's own value for the sky, which lies beyond it); the minimum
        # of the labels may sit a little beyond the true far end (label noise), never nearer
        far_end = truth.disparity[~truth.sky].min()
        assert far_end - 2.0 < floor <= far_end + 0.5
        assert np.all(res.uncertainty[res.sky] == 0)
        assert res.stats.sky_fraction == pytest.approx(res.sky.mean())


def test_vertical_misalignment_is_rejected():
    truth = frame(0, vertical_offset_px=5.0)
    res = compute_disparity(truth.left, truth.right, DisparityConfig())
    assert res.rejected_reason == REJECT_VERTICAL
    assert res.stats.vertical_fail_fraction > 0.10


def test_a_2d_pair_is_rejected_for_its_range():
    truth = frame(0)
    res = compute_disparity(truth.left, truth.left.copy(), DisparityConfig())
    assert res.rejected_reason == REJECT_RANGE
    assert res.stats.disparity_range_px < DisparityConfig().min_range_at(W)
    assert res.stats.lr_pass_fraction > 0.9


def test_unmatchable_views_fail_the_left_right_check():
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    right = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    res = compute_disparity(left, right, DisparityConfig(sky="none", flow="sgbm"))
    assert res.rejected_reason == REJECT_LR
    assert res.stats.lr_pass_fraction < 0.7


def test_range_threshold_scales_with_width():
    cfg = DisparityConfig()
    assert cfg.min_range_at(1880) == pytest.approx(10.0)
    assert cfg.min_range_at(940) == pytest.approx(5.0)


def test_result_arrays_and_stats(labelled):
    truth, res = labelled[0]
    assert res.disparity.dtype == np.float32 and res.disparity.shape == (H, W)
    assert res.valid.dtype == bool and res.sky.dtype == bool
    assert res.uncertainty.dtype == np.float32
    assert np.isfinite(res.uncertainty).all()
    assert res.uncertainty.min() >= 0 and res.uncertainty.max() <= UNCERTAINTY_MAX_PX
    assert [f.name for f in dataclasses.fields(FrameStats)] == STATS_FIELDS
    d = res.stats.to_dict()
    assert list(d) == STATS_FIELDS and all(isinstance(v, float) for v in d.values())
    assert d["valid_fraction"] == pytest.approx(res.valid.mean())
    assert d["disparity_min"] <= d["disparity_p05"] <= d["disparity_p50"] <= d["disparity_p95"] <= d["disparity_max"]
    assert d["disparity_range_px"] == pytest.approx(d["disparity_p95"] - d["disparity_p05"])
    assert set(REJECTION_REASONS) == {"vertical_disparity", "disparity_range", "left_right_consistency"}


def test_batch_matches_single_and_keeps_order():
    a, b = frame(0), frame(2, t=2.0)
    small = (a.left[::2, ::2].copy(), a.right[::2, ::2].copy())
    cfg = DisparityConfig()
    backend = get_backend("dis-medium")
    results = compute_disparity_batch([(a.left, a.right), small, (b.left, b.right)], cfg, backend)
    assert [r.disparity.shape for r in results] == [(H, W), (H // 2, W // 2), (H, W)]
    single = compute_disparity(b.left, b.right, cfg, backend=backend)
    np.testing.assert_allclose(results[2].disparity, single.disparity, atol=1e-5)
    assert results[1].stats.disparity_p95 == pytest.approx(results[0].stats.disparity_p95 / 2, abs=1.0)


def test_labeller_labels_batches_like_compute_disparity_batch():
    a, b = frame(0), frame(2, t=2.0)
    from pipeline.disparity import Labeller

    labeller = Labeller(DisparityConfig())
    first = labeller.label([a.left, b.left], [a.right, b.right])
    again = labeller.label([b.left], [b.right])  # the same engines, a second batch
    reference = compute_disparity_batch([(a.left, a.right), (b.left, b.right)], DisparityConfig())
    for got, want in zip(first, reference):
        np.testing.assert_array_equal(got.disparity, want.disparity)
        np.testing.assert_array_equal(got.sky, want.sky)
    np.testing.assert_array_equal(again[0].disparity, reference[1].disparity)
    with pytest.raises(ValueError, match="2 left views for 1 right views"):
        labeller.label([a.left, b.left], [a.right])


def test_labeller_owns_its_engines_and_the_module_caches_nothing():
    import threading

    import pipeline.disparity as disparity
    from pipeline.disparity import Labeller
    from pipeline.sky import HeuristicSkyMasker, NoSkyMasker

    assert not [name for name, value in vars(disparity).items() if isinstance(value, threading.local)]
    one, two = Labeller(DisparityConfig()), Labeller(DisparityConfig())
    assert isinstance(one.sky_masker, HeuristicSkyMasker) and one.sky_masker is not two.sky_masker
    assert one.backend is not two.backend and one.matcher is not None
    own = NoSkyMasker()
    assert Labeller(DisparityConfig(), sky_masker=own).sky_masker is own
    assert Labeller(preset_config("flow-only")).matcher is None


def test_working_width_returns_disparity_in_input_pixels(labelled):
    truth, full = labelled[0]
    half = compute_disparity(truth.left, truth.right, DisparityConfig(working_width=W // 2))
    ok = half.valid & ~truth.sky
    assert np.median(np.abs(half.disparity - truth.disparity)[ok]) < 0.6
    assert half.stats.disparity_p95 == pytest.approx(full.stats.disparity_p95, abs=1.0)


@pytest.mark.slow
def test_swapped_eyes_are_detected_and_corrected():
    normal, swapped, fixed = [], [], []
    for seed, t in [(0, 1.0), (1, 2.0), (3, 0.5)]:
        truth = frame(seed, t)
        normal.append(compute_disparity(truth.left, truth.right))
        bad = frame(seed, t, swap_eyes=True)
        swapped.append(compute_disparity(bad.left, bad.right))
        fixed.append(compute_disparity(bad.left, bad.right, DisparityConfig(swap_eyes=True)))
    ok, rev, cured = detect_swapped_eyes(normal), detect_swapped_eyes(swapped), detect_swapped_eyes(fixed)
    assert not ok.swapped and ok.confidence > 0.5 and ok.frames == 3
    assert rev.swapped and rev.confidence > 0.5 and rev.swapped_frames == 3
    assert not cured.swapped
    # corrected input gives the true (left-view) disparity again
    truth = frame(3, 0.5)
    ok_px = fixed[2].valid & ~truth.sky
    assert np.median(np.abs(fixed[2].disparity - truth.disparity)[ok_px]) < 0.3


def test_no_evidence_means_no_decision():
    decision = detect_swapped_eyes([])
    assert decision.swapped is False and decision.confidence == 0.0


def test_config_maps_from_dict_and_validates():
    cfg = config_from_dict(DisparityConfig, {"flow": "sgbm", "lr_threshold_px": "1.5", "range_percentiles": [2, 98]})
    assert cfg.lr_threshold_px == 1.5 and cfg.range_percentiles == (2.0, 98.0)
    assert config_from_dict(DisparityConfig, config_to_dict(cfg)) == cfg
    with pytest.raises(ConfigError):
        DisparityConfig(edge_window=4)
    with pytest.raises(ConfigError):
        DisparityConfig(range_percentiles=(95.0, 5.0))


def test_results_pickle(labelled):
    res = labelled[0][1]
    clone = pickle.loads(pickle.dumps(res))
    assert clone.stats == res.stats and np.array_equal(clone.valid, res.valid)


# -- the command line -------------------------------------------------------------------------
@pytest.fixture
def pair_files(tmp_path):
    import cv2

    truth = frame(0)
    lp, rp = tmp_path / "left.png", tmp_path / "right.png"
    cv2.imwrite(str(lp), truth.left[..., ::-1])
    cv2.imwrite(str(rp), truth.right[..., ::-1])
    return truth, lp, rp


def test_cli_writes_arrays_stats_and_preview(pair_files, tmp_path, capsys):
    truth, lp, rp = pair_files
    out, preview = tmp_path / "out" / "f.npz", tmp_path / "f.png"
    assert main(["disparity", str(lp), str(rp), "-o", str(out), "--preview", str(preview)]) == 0
    with np.load(out) as z:
        assert z["disparity"].dtype == np.float32 and z["disparity"].shape == (H, W)
        assert z["valid"].dtype == bool and z["sky"].any()
        assert z["uncertainty"].shape == (H, W)
        stats = json.loads(str(z["stats"]))
        assert list(stats) == STATS_FIELDS
        assert str(z["rejected_reason"]) == ""
        assert json.loads(str(z["config"]))["flow"] == "dis-medium"
        ok = z["valid"] & ~truth.sky
        assert np.median(np.abs(z["disparity"] - truth.disparity)[ok]) < 0.3
    import cv2

    img = cv2.imread(str(preview))
    assert img.shape[0] == H and img.shape[1] > 3 * W
    text = capsys.readouterr().out
    assert "disparity_range_px" in text and "kept" in text


def test_cli_prints_the_rejection_reason(pair_files, tmp_path, capsys):
    _, lp, _ = pair_files
    assert main(["disparity", str(lp), str(lp), "-o", str(tmp_path / "2d.npz"), "--sky", "none"]) == 0
    assert "REJECTED: disparity_range" in capsys.readouterr().out
    with np.load(tmp_path / "2d.npz") as z:
        assert str(z["rejected_reason"]) == REJECT_RANGE


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--flow", "nope"], "unknown flow backend"),
        (["--flow", "ptlflow:raft"], "--ckpt"),
        (["--sky", "model:/no/such/sky.onnx"], "sky model file not found"),
        (["--set", "bogus=1"], "unknown key"),
    ],
    ids=["unknown-flow", "ptlflow-without-ckpt", "missing-sky-model", "bad-override"],
)
def test_cli_user_mistakes_exit_2_with_one_line(pair_files, tmp_path, capsys, extra, message):
    _, lp, rp = pair_files
    assert main(["disparity", str(lp), str(rp), "-o", str(tmp_path / "x.npz"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()


def test_cli_missing_image(tmp_path, capsys):
    assert main(["disparity", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "x.npz")]) == 2
    assert "no such image file" in capsys.readouterr().err


def decode_frames(path, indices):
    import av

    wanted, out = set(indices), {}
    with av.open(str(path)) as container:
        for i, fr in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = fr.to_ndarray(format="rgb24")
            if len(out) == len(wanted):
                break
    return [out[i] for i in indices]


def test_frames_decoded_from_an_encoded_sample_movie(sample_movie):
    """H.264-compressed frames of a real sample movie (full-width side by side, letterboxed)."""
    from pipeline.synthetic import load_ground_truth

    movie = sample_movie(layout="sbs-full", seconds=2.0, size=(480, 270), seed=3, chapters=1, shots=1)
    truth = load_ground_truth(movie.path)
    box = truth.crop
    results = []
    for index, packed in zip((12, 36), decode_frames(movie.path, (12, 36))):
        w = packed.shape[1] // 2
        left, right = packed[:, :w], packed[:, w:]
        crop = (slice(box.y, box.y + box.h), slice(box.x, box.x + box.w))
        res = compute_disparity(np.ascontiguousarray(left[crop]), np.ascontiguousarray(right[crop]))
        gt = truth.disparity[index][crop].astype(np.float32)
        sky = truth.sky[index][crop]
        ok = res.valid & ~sky
        err = np.abs(res.disparity - gt)[ok]
        assert res.rejected_reason is None
        assert ok.mean() > 0.5
        assert np.median(err) < 0.25 and (err > 2.0).mean() < 0.03  # measured: 0.10 px, 0.24%
        assert (res.disparity[ok & (gt > 3)] > 0).mean() > 0.97
        assert (res.disparity[ok & (gt < -3)] < 0).mean() > 0.97
        # the sky is found from flow disparity too, which is unreliable on a blank sky
        assert (res.sky & sky).sum() / (res.sky | sky).sum() > 0.7
        results.append(res)
    assert not detect_swapped_eyes(results).swapped


class TopBandSky:
    """A sky masker that calls the top quarter sky (a plain object honouring the masker contract)."""

    def mask(self, image, disparity=None, valid=None):
        m = np.zeros(image.shape[:2], bool)
        m[: image.shape[0] // 4] = True
        return m


def test_noisy_flow_on_a_blank_sky_is_no_rig_failure():
    """Vertical noise where the flow is inconsistent says nothing about the rig (pipeline.rig)."""
    from pipeline.disparity import disparity_from_flow
    from pipeline.flow import FlowPair, disparity_to_flow

    h, w = 80, 120
    d = np.tile(np.linspace(-6, 6, w, dtype=np.float32), (h, 1))
    lr, rl = disparity_to_flow(d), np.zeros((h, w, 2), np.float32)
    rl[..., 0] = np.tile(np.linspace(-6, 6, w, dtype=np.float32), (h, 1))  # roughly consistent
    lr[: h // 4, :, 1] = 5.0  # noisy flow on a blank sky: vertical ...
    lr[: h // 4, :, 0] += 9.0  # ... and inconsistent
    image = np.zeros((h, w, 3), np.uint8)
    res = disparity_from_flow(
        FlowPair(lr, rl), DisparityConfig(edge_threshold_px=None), image=image, sky_masker=TopBandSky()
    )
    assert res.stats.vertical_fail_fraction == 0.0
    assert res.stats.sky_fraction == pytest.approx(0.25)
    assert res.valid[: h // 4].all()
    without_sky = disparity_from_flow(FlowPair(lr, rl), DisparityConfig(edge_threshold_px=None))
    assert without_sky.stats.vertical_fail_fraction == 0.0, "untrusted pixels do not judge the rig"
    assert not without_sky.valid[: h // 4].any(), "but they are no labels either"
    assert without_sky.stats.lr_pass_fraction < res.stats.lr_pass_fraction
    # the same vertical flow where the flow is consistent is the rig's: the frame is rejected
    lr_v, rl_v = disparity_to_flow(d), np.zeros((h, w, 2), np.float32)
    rl_v[..., 0] = d
    lr_v[..., 1], rl_v[..., 1] = 5.0, -5.0
    shifted = disparity_from_flow(FlowPair(lr_v, rl_v), DisparityConfig(edge_threshold_px=None))
    assert shifted.rig.offset_px == pytest.approx(5.0, abs=0.01)
    assert shifted.stats.vertical_fail_fraction == 1.0 and shifted.rejected_reason == "vertical_disparity"


def test_resize_result_scales_disparity_to_stored_pixels(labelled):
    import cv2

    truth, res = labelled[0]
    small = resize_result(res, W // 2, H // 2 + 1)
    assert (
        small.disparity.shape == small.valid.shape == small.sky.shape == small.uncertainty.shape == (H // 2 + 1, W // 2)
    )
    gt = cv2.resize(truth.disparity, (W // 2, H // 2 + 1), interpolation=cv2.INTER_AREA) * 0.5
    sky = cv2.resize(truth.sky.astype(np.float32), (W // 2, H // 2 + 1), interpolation=cv2.INTER_AREA) > 0
    ok = small.valid & ~sky
    assert np.median(np.abs(small.disparity - gt)[ok]) < 0.2
    assert (small.disparity[ok & (gt > 2)] > 0).mean() > 0.98 and (small.disparity[ok & (gt < -2)] < 0).mean() > 0.98
    assert small.valid[small.sky].all() and small.stats.sky_fraction == pytest.approx(small.sky.mean())
    assert small.stats.valid_fraction == pytest.approx(small.valid.mean())
    assert small.stats.disparity_range_px == pytest.approx(res.stats.disparity_range_px * 0.5, rel=0.1)
    assert small.stats.lr_pass_fraction == res.stats.lr_pass_fraction  # a labelling-resolution check
    assert small.rejected_reason == res.rejected_reason and small.swap_evidence == res.swap_evidence
    assert resize_result(res, W, H) is res
    with pytest.raises(ValueError, match="downscales"):
        resize_result(res, W * 2, H * 2)


def test_resize_result_is_a_valid_weighted_average():
    d = np.full((4, 8), 6.0, np.float32)
    valid = np.ones((4, 8), bool)
    d[:, 1::2] = 1000.0  # garbage on invalid pixels must not leak
    valid[:, 1::2] = False
    valid[:2, :2] = False  # the top-left output pixel has no valid source pixel
    stats = FrameStats(*([0.5] * len(STATS_FIELDS)))
    from pipeline.disparity import DisparityResult

    res = DisparityResult(
        d, valid, np.where(valid, 1.0, UNCERTAINTY_MAX_PX).astype(np.float32), np.zeros_like(valid), stats
    )
    small = resize_result(res, 4, 2)
    assert np.allclose(small.disparity[small.valid], 3.0)  # 6 px at half width
    assert not small.valid[0, 0] and small.valid[1, 0] and small.valid.sum() == 7
    assert np.allclose(small.uncertainty[small.valid], 0.5)
    assert small.stats.disparity_p50 == pytest.approx(3.0)


def test_decide_swapped_eyes_matches_detect_on_evidence_values():
    class R:
        def __init__(self, e):
            self.swap_evidence = e

    ev = [0.4, 0.3, float("nan"), -0.02, 0.6]
    assert decide_swapped_eyes(ev) == detect_swapped_eyes([R(e) for e in ev])
    assert decide_swapped_eyes([None, 0.5, 0.5, 0.5]).swapped and decide_swapped_eyes([None]).frames == 1


def test_floating_window_bands_are_not_labelled():
    """3D films mask the frame sides per shot (floating windows), in both eyes at different widths.

    Black-to-black columns match perfectly both ways, so the left-right check keeps them with a
    made-up disparity; the black-band check drops them.
    """
    from pipeline.layouts import frame_bars

    truth = frame(0)
    left, right = truth.left.copy(), truth.right.copy()
    left[:, :30], right[:, :25], left[:, -20:], right[:, -28:] = 0, 0, 0, 0
    assert (frame_bars(left).left, frame_bars(left).right) == (30, 20)
    assert (frame_bars(right).left, frame_bars(right).right) == (25, 28)
    band = np.zeros(left.shape[:2], bool)
    band[:, :30] = band[:, -20:] = True
    for level, expect_clean in ((None, False), (20.0, True)):
        res = compute_disparity(left, right, DisparityConfig(black_band_level=level))
        ok = res.valid & ~res.sky
        bad = (np.abs(res.disparity - truth.disparity) > 2.0)[ok].mean()
        if expect_clean:
            assert not res.valid[band].any() and bad < 0.02
        else:  # what the check is for: without it the bands are largely "valid"
            assert res.valid[band].mean() > 0.2 and bad > 0.03


def test_bars_of_a_narrower_shot_are_not_labelled():
    """A film that changes aspect ratio keeps bars in its narrower shots after the movie-wide crop."""
    from pipeline.layouts import frame_bars

    truth = frame(1)
    left, right = truth.left.copy(), truth.right.copy()
    left[:24], right[:24], left[-24:], right[-24:] = 0, 0, 0, 0
    assert frame_bars(left) == frame_bars(right) and (frame_bars(left).top, frame_bars(left).bottom) == (24, 24)
    bars = np.zeros(left.shape[:2], bool)
    bars[:24] = bars[-24:] = True
    assert compute_disparity(left, right, DisparityConfig(black_band_level=None)).valid[bars].mean() > 0.3
    assert not compute_disparity(left, right, DisparityConfig()).valid[bars].any()
