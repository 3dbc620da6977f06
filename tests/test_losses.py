"""Losses: invariances, agreement with an independent NumPy re-computation, known defects avoided."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.losses import (
    ScaleAndShiftInvariantLoss,
    compute_scale_and_shift,
    gradient_matching_loss,
    normalize_robust,
    scale_invariant_log_loss,
    ssi_mae_loss,
    ssi_mse_loss,
    ssi_trim_loss,
)


def _random_batch(seed: int, b: int = 3, h: int = 17, w: int = 23, p_valid: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(b, h, w, generator=g, dtype=torch.float64) * 3
    target = torch.rand(b, h, w, generator=g, dtype=torch.float64) * 5 + 1
    mask = torch.rand(b, h, w, generator=g) < p_valid
    return pred, target, mask


# ---- independent re-computation (plain NumPy, one image at a time, straight from the notes) ----


def _np_lstsq(p, t):
    a = np.stack([p, np.ones_like(p)], 1)
    (s, sh), *_ = np.linalg.lstsq(a, t, rcond=None)
    return s, sh


def _np_norm(x):
    med = np.median(x)
    return (x - med) / max(np.mean(np.abs(x - med)), 1e-6)


def _np_loss(pred, target, mask, kind, trim=0.2):
    sums, counts = 0.0, 0.0
    for p, t, m in zip(pred.numpy(), target.numpy(), mask.numpy()):
        pv, tv = p[m], t[m]
        if kind == "mse":
            s, sh = _np_lstsq(pv, tv)
            sums += np.sum((s * pv + sh - tv) ** 2)
        else:
            r = np.abs(_np_norm(pv) - _np_norm(tv))
            if kind == "trim":
                r = np.sort(r)[: len(r) - int(np.floor(trim * len(r)))]
            sums += r.sum()
        counts += 2 * m.sum()
    return sums / counts


def _np_grad(residual, mask, scales):
    total = 0.0
    for k in range(scales):
        st = 2**k
        sums, count = 0.0, 0.0
        for r, m in zip(residual.numpy(), mask.numpy()):
            r, m = r[::st, ::st], m[::st, ::st]
            for y in range(r.shape[0]):
                for x in range(r.shape[1]):
                    if x + 1 < r.shape[1] and m[y, x] and m[y, x + 1]:
                        sums += abs(r[y, x + 1] - r[y, x])
                    if y + 1 < r.shape[0] and m[y, x] and m[y + 1, x]:
                        sums += abs(r[y + 1, x] - r[y, x])
            count += m.sum()
        total += sums / count
    return total


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"seed={s}")
@pytest.mark.parametrize(
    "kind,fn", [("mse", ssi_mse_loss), ("mae", ssi_mae_loss), ("trim", ssi_trim_loss)], ids=["mse", "mae", "trim"]
)
def test_matches_independent_computation(kind, fn, seed):
    pred, target, mask = _random_batch(seed)
    assert fn(pred, target, mask).item() == pytest.approx(_np_loss(pred, target, mask, kind), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1], ids=lambda s: f"seed={s}")
def test_gradient_matching_matches_independent_computation(seed):
    pred, target, mask = _random_batch(seed, h=19, w=21)
    residual = pred - target
    got = gradient_matching_loss(residual, mask, scales=4).item()
    assert got == pytest.approx(_np_grad(residual, mask, 4), rel=1e-9)


def test_scale_and_shift_least_squares():
    pred, target, mask = _random_batch(3)
    s, t = compute_scale_and_shift(pred, target, mask)
    assert s.shape == t.shape == (3,)
    for i in range(3):
        es, et = _np_lstsq(pred[i][mask[i]].numpy(), target[i][mask[i]].numpy())
        assert (s[i].item(), t[i].item()) == pytest.approx((es, et), rel=1e-9)


@pytest.mark.parametrize("kind", ["trim", "mae", "mse"])
@pytest.mark.parametrize("a,b", [(2.5, 1.0), (0.1, -3.0)], ids=["a=2.5,b=1", "a=0.1,b=-3"])
def test_invariant_to_scale_and_shift_of_prediction(kind, a, b):
    pred, target, mask = _random_batch(4)
    loss = ScaleAndShiftInvariantLoss(kind, alpha=0.5)
    assert loss(a * pred + b, target, mask).item() == pytest.approx(loss(pred, target, mask).item(), rel=1e-7)


def test_perfect_prediction_up_to_scale_shift_is_zero():
    _, target, mask = _random_batch(5)
    loss = ScaleAndShiftInvariantLoss("trim")
    assert loss(3 * target + 7, target, mask).item() == pytest.approx(0.0, abs=1e-9)


def test_median_ignores_invalid_pixels():
    """Invalid pixels hold zeros; a median over mask*target (a known defect) would see them."""
    target = torch.tensor([[[5.0, 6.0, 7.0, 0.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    mask = torch.tensor([[[True, True, True, False, False, False, False]]])
    n = normalize_robust(target, mask)
    # median 6, mean absolute deviation 2/3
    assert n[0, 0, :3].tolist() == pytest.approx([-1.5, 0.0, 1.5])


def test_trim_drops_largest_fraction_per_image():
    pred, target, mask = _random_batch(6, b=2, h=10, w=10, p_valid=1.0)
    res = (normalize_robust(pred, mask) - normalize_robust(target, mask)).abs()
    got = ssi_trim_loss(pred, target, mask, trim=0.2).item()
    kept = sum(np.sort(r.flatten().numpy())[:80].sum() for r in res)  # 100 pixels, drop 20
    assert got == pytest.approx(kept / 400.0, rel=1e-9)
    # and not the sliced-tuple defect, which trims nothing
    assert got < ssi_mae_loss(pred, target, mask).item()
    assert ssi_trim_loss(pred, target, mask, trim=0.0).item() == pytest.approx(ssi_mae_loss(pred, target, mask).item())


@pytest.mark.parametrize("kind", ["trim", "mae", "mse", "silog"])
def test_empty_masks_give_no_nan(kind):
    pred, target, mask = _random_batch(7, b=2)
    pred.requires_grad_(True)
    empty = torch.zeros_like(mask)
    loss = ScaleAndShiftInvariantLoss(kind)
    total = loss(pred, target, empty)
    total.backward()
    assert total.item() == 0.0
    assert torch.isfinite(pred.grad).all()
    # one empty image next to a normal one: adds nothing
    pred2 = pred.detach().clone().requires_grad_(True)
    partial = mask.clone()
    partial[1] = False
    both = loss(pred2, target, partial)
    alone = loss(pred2[:1], target[:1], partial[:1])
    both.backward()
    assert both.item() == pytest.approx(alone.item(), rel=1e-9)
    assert torch.isfinite(pred2.grad).all()


def test_scale_invariant_log_baseline():
    _, target, mask = _random_batch(8)
    assert scale_invariant_log_loss(4.0 * target, target, mask, lam=1.0).item() == pytest.approx(0.0, abs=1e-9)
    assert scale_invariant_log_loss(target + 2.0, target, mask, lam=1.0).item() > 1e-3


def test_unknown_loss_kind_lists_valid():
    with pytest.raises(Exception, match="trim"):
        ScaleAndShiftInvariantLoss("l7")


def test_gradients_flow_in_float32():
    pred, target, mask = (x.float() if x.dtype == torch.float64 else x for x in _random_batch(9))
    pred.requires_grad_(True)
    ScaleAndShiftInvariantLoss("trim")(pred, target, mask).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# ---- float32: the documented fallback and large offsets (centred solve) ----


def test_constant_prediction_gets_the_documented_fallback_in_float32():
    """A constant prediction makes the 2x2 system singular: s = 0, t = mean(target). The raw
    normal equations in float32 saw a non-zero determinant made of rounding and returned
    (1.333, 0.667)."""
    s, t = compute_scale_and_shift(
        torch.full((1, 6, 6), 0.3), torch.full((1, 6, 6), 0.9), torch.ones(1, 6, 6, dtype=torch.bool)
    )
    assert s.dtype == torch.float32
    assert s.item() == 0.0
    assert t.item() == pytest.approx(0.9, abs=1e-6)
    # a varying target: t is its mean over the valid pixels only
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 9, 11, generator=g)
    mask = torch.rand(2, 9, 11, generator=g) < 0.6
    s, t = compute_scale_and_shift(torch.full((2, 9, 11), 7.25), target, mask)
    assert s.tolist() == [0.0, 0.0]
    for i in range(2):
        assert t[i].item() == pytest.approx(target[i][mask[i]].double().mean().item(), rel=1e-6)


@pytest.mark.parametrize("offset", [0.0, 1000.0, -5000.0])
def test_large_offset_keeps_float32_precision(offset):
    """pred = offset + U(0, 1) in float32 against a float64 reference on the same float32 values:
    scale and the aligned prediction stay accurate (the raw normal equations lost every digit)."""
    g = torch.Generator().manual_seed(2)
    pred32 = offset + torch.rand(3, 24, 32, generator=g)
    target32 = 0.5 * (pred32.double() - offset).float() + 0.1 * torch.rand(3, 24, 32, generator=g) + 2.0
    mask = torch.rand(3, 24, 32, generator=g) < 0.8
    s32, t32 = compute_scale_and_shift(pred32, target32, mask)
    s64, t64 = compute_scale_and_shift(pred32.double(), target32.double(), mask)
    for i in range(3):
        es, et = _np_lstsq(pred32[i][mask[i]].double().numpy(), target32[i][mask[i]].double().numpy())
        assert s64[i].item() == pytest.approx(es, rel=1e-9)
        assert s32[i].item() == pytest.approx(es, rel=1e-4)
    from training.losses import align_least_squares

    a32 = align_least_squares(pred32, target32, mask)
    a64 = align_least_squares(pred32.double(), target32.double(), mask)
    assert a32.dtype == torch.float32
    assert float((a32.double() - a64)[mask].abs().max()) < 1e-4
    for kind in ("mse", "trim"):
        fn = ScaleAndShiftInvariantLoss(kind)
        l32, l64 = fn(pred32, target32, mask).item(), fn(pred32.double(), target32.double(), mask).item()
        assert l32 == pytest.approx(l64, rel=2e-3), kind


# ---- per-pixel weights (uncertainty weighting) ----


@pytest.mark.parametrize("kind", ["trim", "mae", "mse"])
def test_unit_weights_give_the_plain_loss_and_weights_change_it(kind):
    pred, target, mask = _random_batch(11)
    fn = ScaleAndShiftInvariantLoss(kind)
    plain = fn(pred, target, mask).item()
    assert fn(pred, target, mask, torch.ones_like(pred)).item() == pytest.approx(plain, rel=1e-12)
    w = torch.rand(pred.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert fn(pred, target, mask, w).item() != pytest.approx(plain, rel=1e-3)


def test_weighted_mse_data_term_is_the_documented_weighted_mean():
    """sum w r^2 / (2 sum w) over valid pixels, r the plain least-squares residual."""
    pred, target, mask = _random_batch(12)
    w = torch.rand(pred.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got = ssi_mse_loss(pred, target, mask, w).item()
    num = den = 0.0
    for p, t, m, wi in zip(pred.numpy(), target.numpy(), mask.numpy(), w.numpy()):
        s, sh = _np_lstsq(p[m], t[m])
        num += np.sum(wi[m] * (s * p[m] + sh - t[m]) ** 2)
        den += 2 * wi[m].sum()
    assert got == pytest.approx(num / den, rel=1e-9)
    # a zero weight removes a pixel's term from the sums (the alignment still uses it)
    w0 = torch.ones_like(pred)
    w0[0, 0, 0] = 0.0
    mask2 = mask.clone()
    mask2[0, 0, 0] = True
    r = ScaleAndShiftInvariantLoss("mse", alpha=0.0)
    assert r(pred, target, mask2, w0).item() != pytest.approx(r(pred, target, mask2).item(), rel=1e-9)
