"""Temporal losses and the temporal metric against float64 references, on hand-made clips; the
metric on a sample movie with injected flicker, and ``--temporal`` prediction lowering it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.temporal import consistency_mask, warp_to_previous
from training.losses import ScaleAndShiftInvariantLoss
from training.temporal import (
    ClipLoss,
    align_clip,
    align_to_previous,
    flow_consistency_loss,
    temporal_align_sequence,
    temporal_consistency,
    temporal_gradient_loss,
    warp_next,
)


def _clips(seed: int, n: int = 2, t: int = 4, h: int = 9, w: int = 11, p_valid: float = 0.8):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, t, h, w, generator=g, dtype=torch.float64)
    # a target that changes little between frames except at a few pixels (so the threshold matters)
    target[:, 1:] = target[:, :1] + 0.02 * torch.rand(n, t - 1, h, w, generator=g, dtype=torch.float64)
    target[:, 2, :2] += 0.5
    pred = 2.0 * target + 0.3 + 0.05 * torch.rand(n, t, h, w, generator=g, dtype=torch.float64)
    mask = torch.rand(n, t, h, w, generator=g) < p_valid
    return pred, target, mask


# ---- float64 references: one clip at a time, plain NumPy --------------------------------------


def _np_align(p, g, m):
    a = np.stack([p[m], np.ones(m.sum())], 1)
    (s, b), *_ = np.linalg.lstsq(a, g[m], rcond=None)
    return s * p + b


def _np_tgm(pred, target, mask, tau):
    sums = counts = 0.0
    for p, g, m in zip(pred.numpy(), target.numpy(), mask.numpy()):
        a = _np_align(p, g, m)
        for t in range(len(p) - 1):
            for y in range(p.shape[1]):
                for x in range(p.shape[2]):
                    dg = g[t + 1, y, x] - g[t, y, x]
                    if m[t, y, x] and m[t + 1, y, x] and abs(dg) < tau:
                        sums += abs((a[t + 1, y, x] - a[t, y, x]) - dg)
                        counts += 1
    return sums / counts


def _bilinear(img, x, y):
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    x1, y1 = min(x0 + 1, img.shape[1] - 1), min(y0 + 1, img.shape[0] - 1)
    fx, fy = x - x0, y - y0
    return (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x1] * fx * (1 - fy)
        + img[y1, x0] * (1 - fx) * fy
        + img[y1, x1] * fx * fy
    )


def _np_warp_loss(pred, target, mask, flow, flow_valid):
    sums = counts = 0.0
    for p, g, m, f, fv in zip(pred.numpy(), target.numpy(), mask.numpy(), flow.numpy(), flow_valid.numpy()):
        a = _np_align(p, g, m)
        h, w = p.shape[1:]
        for t in range(len(p) - 1):
            for y in range(h):
                for x in range(w):
                    tx, ty = x + f[t, y, x, 0], y + f[t, y, x, 1]
                    if not (m[t, y, x] and fv[t, y, x] and 0 <= tx <= w - 1 and 0 <= ty <= h - 1):
                        continue
                    if _bilinear(m[t + 1].astype(float), tx, ty) <= 0.999:
                        continue
                    da = _bilinear(a[t + 1], tx, ty) - a[t, y, x]
                    dg = _bilinear(g[t + 1], tx, ty) - g[t, y, x]
                    sums += abs(da - dg)
                    counts += 1
    return sums / counts


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"seed={s}")
def test_temporal_gradient_matching_matches_the_reference(seed):
    pred, target, mask = _clips(seed)
    got = temporal_gradient_loss(pred, target, mask, threshold=0.05)
    assert float(got) == pytest.approx(_np_tgm(pred, target, mask, 0.05), rel=1e-9)


@pytest.mark.parametrize("flow_kind", ["integer", "fractional", "leaving the frame"], ids=lambda k: k.replace(" ", "-"))
def test_flow_consistency_loss_matches_the_reference(flow_kind):
    pred, target, mask = _clips(5)
    n, t, h, w = pred.shape
    g = torch.Generator().manual_seed(9)
    if flow_kind == "integer":
        flow = torch.zeros(n, t - 1, h, w, 2, dtype=torch.float64)
        flow[..., 0] = 1.0
    elif flow_kind == "fractional":
        flow = torch.rand(n, t - 1, h, w, 2, generator=g, dtype=torch.float64) * 1.5 - 0.5
    else:
        flow = torch.rand(n, t - 1, h, w, 2, generator=g, dtype=torch.float64) * 6 - 3
    flow_valid = torch.rand(n, t - 1, h, w, generator=g) < 0.9
    got = flow_consistency_loss(pred, target, mask, flow, flow_valid)
    assert float(got) == pytest.approx(_np_warp_loss(pred, target, mask, flow, flow_valid), rel=1e-7)


def test_clip_alignment_is_one_scale_and_shift_per_clip():
    pred, target, mask = _clips(3)
    a = align_clip(pred, target, mask)
    for i in range(len(pred)):
        ref = _np_align(pred[i].numpy(), target[i].numpy(), mask[i].numpy())
        np.testing.assert_allclose(a[i].numpy(), ref, rtol=1e-9, atol=1e-12)


def test_temporal_losses_are_zero_for_a_consistent_prediction_and_punish_flicker():
    _, target, mask = _clips(4, p_valid=1.0)
    n, t, h, w = target.shape
    consistent = 3.0 * target - 1.0  # any single scale and shift per clip
    flow = torch.zeros(n, t - 1, h, w, 2, dtype=torch.float64)
    fv = torch.ones(n, t - 1, h, w, dtype=torch.bool)
    assert float(temporal_gradient_loss(consistent, target, mask)) < 1e-12
    assert float(flow_consistency_loss(consistent, target, mask, flow, fv)) < 1e-12
    flicker = consistent * (1 + 0.3 * torch.arange(t, dtype=torch.float64).view(1, t, 1, 1))
    assert float(temporal_gradient_loss(flicker, target, mask)) > 0.01
    assert float(flow_consistency_loss(flicker, target, mask, flow, fv)) > 0.01


def test_clip_loss_adds_the_weighted_temporal_term_to_the_frame_loss():
    pred, target, mask = _clips(6)
    n, t, h, w = pred.shape
    frames = (pred.reshape(n * t, h, w), target.reshape(n * t, h, w), mask.reshape(n * t, h, w))
    flow = torch.zeros(n * t, h, w, 2, dtype=torch.float64)
    fv = torch.ones(n * t, h, w, dtype=torch.bool)
    base = ScaleAndShiftInvariantLoss("mse", alpha=0.0)
    plain = float(base(*frames))
    assert float(ClipLoss(base, t, weight=0.0)(*frames, flow, fv)) == pytest.approx(plain)
    tgm = float(temporal_gradient_loss(pred, target, mask, 0.05))
    assert float(ClipLoss(base, t, weight=2.0, kind="tgm")(*frames, flow, fv)) == pytest.approx(plain + 2 * tgm)
    both = ClipLoss(base, t, weight=1.0, kind="both")(*frames, flow, fv)
    warp = float(
        flow_consistency_loss(pred, target, mask, flow.view(n, t, h, w, 2)[:, :-1], fv.view(n, t, h, w)[:, :-1])
    )
    assert float(both) == pytest.approx(plain + tgm + warp)


def test_warp_next_samples_where_the_flow_points():
    values = torch.arange(20, dtype=torch.float64).view(1, 1, 4, 5)
    flow = torch.zeros(1, 1, 4, 5, 2, dtype=torch.float64)
    flow[..., 0] = 1.0
    flow[..., 1] = 0.5
    out, inside = warp_next(values, flow)
    assert float(out[0, 0, 0, 0]) == pytest.approx(1 + 0.5 * 5)
    assert not bool(inside[0, 0, 0, 4]) and not bool(inside[0, 0, 3, 0])
    np.testing.assert_allclose(warp_to_previous(values[0, 0].numpy(), flow[0, 0].numpy())[0, 0], 3.5)


# ---- the metric ----------------------------------------------------------------------------------


def _sequence(seed=0, t=5, h=24, w=32):
    """A scene sliding 2 px per frame: gt_t(x) = base(x - 2 t); flow t -> t+1 is +2 px (integer: exact warps)."""
    rng = np.random.default_rng(seed)
    base = np.cumsum(rng.standard_normal(w + 20))
    xs = np.arange(w)
    gt = np.stack([np.tile(np.interp(xs - 2.0 * k + 10, np.arange(w + 20), base), (h, 1)) for k in range(t)])
    flow = np.zeros((t - 1, h, w, 2), np.float32)
    flow[..., 0] = 2.0
    valid = np.ones_like(gt, bool)
    return gt, valid, flow, np.ones((t - 1, h, w), bool)


def test_metric_is_zero_for_a_consistent_sequence_and_grows_with_flicker():
    gt, valid, flow, fv = _sequence()
    rng = np.random.default_rng(1)
    assert temporal_consistency(4.0 * gt + 2.0, gt, valid, flow, fv)["temporal_error"] < 1e-6
    errors = []
    for amp in (0.0, 0.05, 0.1, 0.2, 0.4):
        jitter = 1 + amp * rng.standard_normal((len(gt), 1, 1))
        errors.append(
            temporal_consistency(gt * jitter + amp * rng.standard_normal((len(gt), 1, 1)), gt, valid, flow, fv)
        )
    values = [e["temporal_error"] for e in errors]
    assert values[0] < 1e-6 and all(b > a for a, b in zip(values, values[1:])), values
    assert temporal_consistency(gt, gt, np.zeros_like(valid), flow, fv)["pixels"] == 0


def test_align_to_previous_undoes_a_scale_and_shift():
    gt, _, flow, fv = _sequence()
    out, s, b = align_to_previous(3.0 * gt[1] - 2.0, gt[0], flow[0], fv[0])
    assert s == pytest.approx(1 / 3, rel=1e-6) and b == pytest.approx(2 / 3, rel=1e-6)
    inside = np.isfinite(warp_to_previous(out, flow[0]))
    np.testing.assert_allclose(out[:, 2:-2], gt[1][:, 2:-2], atol=1e-3)
    assert inside.mean() > 0.9


def test_consistency_mask_keeps_agreeing_flow_and_drops_the_rest():
    fwd = np.zeros((10, 12, 2), np.float32)
    fwd[..., 0] = 2.0
    bwd = -fwd
    assert consistency_mask(fwd, bwd)[:, :8].all()
    assert not consistency_mask(fwd, bwd)[:, -1].any()  # points outside the frame
    assert not consistency_mask(fwd, np.zeros_like(bwd)).any()


class _Flicker(torch.nn.Module):
    """A per-frame model whose output scale and offset jump from call to call (deterministic)."""

    def __init__(self, base):
        super().__init__()
        self.base, self.calls = base, 0

    def forward(self, x):
        out = []
        for i in range(len(x)):
            k = self.calls
            self.calls += 1
            out.append(self.base(x[i : i + 1]) * (1.0 + 0.4 * np.sin(2.3 * k)) + 0.2 * np.cos(1.7 * k))
        return torch.cat(out)


class _Oracle(torch.nn.Module):
    """A 'model' predicting the true disparity of the sample movie's frames, in order."""

    def __init__(self, truth):
        super().__init__()
        self.truth, self.i = truth, 0

    def forward(self, x):
        out = torch.from_numpy(np.stack(self.truth[self.i : self.i + len(x)])).float()
        self.i += len(x)
        return torch.nn.functional.interpolate(out.unsqueeze(1), size=x.shape[-2:], mode="bilinear").squeeze(1)


@pytest.mark.slow
def test_predict_temporal_lowers_the_temporal_error_on_a_sample_movie(sample_movie, tmp_path):
    """``predict --temporal`` on a real video (the left eye of a sample movie) with a flickering
    per-frame model: the temporal error of its outputs against the true disparity and motion falls."""
    import cv2

    from pipeline.synthetic import movie_frame_motion, render_movie_frame
    from training.predict import DepthPredictor, PredictConfig, png16_to_disparity, predict_paths

    movie = sample_movie(layout="separate", seconds=1.0, shots=[24], chapters=1, letterbox=False)
    meta = json.loads(movie.gt_json.read_text())
    n = 10
    truth = [render_movie_frame(meta, i).disparity for i in range(n)]
    flows = np.stack([movie_frame_motion(meta, i) for i in range(n - 1)])
    valid = np.stack([np.isfinite(d) for d in truth])
    fv = np.isfinite(flows).all(-1)

    def run(temporal: bool) -> float:
        out = tmp_path / ("temporal" if temporal else "plain")
        predictor = DepthPredictor(_Flicker(_Oracle(truth)), "cpu", side=96)
        config = PredictConfig(batch_size=4, preview=False, max_frames=n, temporal=temporal)
        outcome = predict_paths(predictor, [movie.path], out, config, progress=False)
        preds = []
        for row in outcome.rows:
            png = cv2.imread(str(out / row["disparity_png"]), cv2.IMREAD_UNCHANGED)
            preds.append(png16_to_disparity(png, float(row["disparity_min"]), float(row["disparity_max"])))
        return temporal_consistency(np.stack(preds), np.stack(truth), valid, flows, fv)["temporal_error"]

    plain, smoothed = run(False), run(True)
    assert smoothed < 0.5 * plain, (plain, smoothed)


def test_temporal_align_sequence_keeps_the_first_frame_and_fixes_the_rest():
    gt, valid, flow, fv = _sequence(t=4, h=48, w=64)
    img = [np.dstack([np.clip(g * 20 + 128, 0, 255).astype(np.uint8)] * 3) for g in gt]
    preds = [gt[k] * (1 + 0.3 * k) + 0.1 * k for k in range(len(gt))]
    out = temporal_align_sequence(img, preds)
    np.testing.assert_array_equal(out[0], preds[0].astype(np.float32))
    before = temporal_consistency(np.stack(preds), gt, valid, flow, fv)["temporal_error"]
    after = temporal_consistency(np.stack(out), gt, valid, flow, fv)["temporal_error"]
    assert after < 0.5 * before
