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
@pytest.mark.parametrize("kind,fn", [("mse", ssi_mse_loss), ("mae", ssi_mae_loss), ("trim", ssi_trim_loss)],
                         ids=["mse", "mae", "trim"])
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
