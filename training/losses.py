"""Scale-and-shift-invariant losses of MiDaS (prediction and target in disparity space).

All functions take ``(B, H, W)`` tensors and a ``(B, H, W)`` bool ``mask`` of valid pixels.
Definitions follow the paper (see ``docs/METHOD.md`` §2); the batch reduction is the public
reference code's: the sum of the per-image sums divided by the sum of the valid counts, so images
with more valid pixels weigh more and an image with no valid pixel adds nothing (and never a NaN).

Two defects of circulating re-implementations are avoided on purpose, and tested:
the robust median is taken over the *valid* pixels only (not over ``mask * target``, which counts
invalid pixels as zeros), and the trimmed loss really drops the largest ``trim`` fraction of the
residuals of each image (not a slice of the ``(values, indices)`` tuple ``torch.sort`` returns).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import ConfigError

__all__ = [
    "compute_scale_and_shift",
    "align_least_squares",
    "normalize_robust",
    "ssi_mse_loss",
    "ssi_mae_loss",
    "ssi_trim_loss",
    "gradient_matching_loss",
    "scale_invariant_log_loss",
    "ScaleAndShiftInvariantLoss",
    "LOSS_KINDS",
]

_EPS = 1e-6


def _reduce(image_sums: torch.Tensor, counts: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """sum(image_sums) / sum(counts); 0 (still attached to the graph) when nothing is valid.

    Counts are pixel counts (or twice them): integers, so clamping the divisor at 1 only acts on
    an empty batch, whose per-image sums are all zero.
    """
    # no data-dependent branch (no host sync, compile-friendly): an empty batch has zero sums
    return image_sums.sum() / counts.sum().clamp_min(1.0) + anchor.sum() * 0.0


def _centred_solve(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
    """``(s, mean_pred, mean_target)`` per image, solved on data centred per image.

    The normal equations in their raw form (sums of ``pred**2``, ``pred`` and ``pred * target``)
    lose every digit of a prediction with a large offset in float32: ``sum(p**2) * M - sum(p)**2``
    is a difference of two nearly equal numbers. Centring first (``p - mean(p)``,
    ``t - mean(t)``, each mean corrected by a second pass over the deviations) leaves a well-conditioned 1x1 problem for
    the scale; the shift follows from the means.

    A prediction is treated as constant (singular system: any scale fits) when its variance over
    the mask is within what rounding the mean could leave behind: ``sum(pc**2) <= M * (8 eps
    |mean(p)|)**2`` plus a tiny absolute floor, with ``eps`` the dtype's machine epsilon.
    """
    m = mask.to(pred.dtype)
    count = m.sum((1, 2))
    denom = count.clamp_min(1.0)
    mean_p = (m * pred).sum((1, 2)) / denom
    mean_t = (m * target).sum((1, 2)) / denom
    # second pass: the rounding of a float32 sum of large values leaves the mean off by up to a
    # few ulps of the sum; the mean of the (small) deviations corrects it
    mean_p = mean_p + (m * (pred - mean_p.view(-1, 1, 1))).sum((1, 2)) / denom
    mean_t = mean_t + (m * (target - mean_t.view(-1, 1, 1))).sum((1, 2)) / denom
    pc = (pred - mean_p.view(-1, 1, 1)) * m
    tc = (target - mean_t.view(-1, 1, 1)) * m
    var_p = (pc * pc).sum((1, 2))
    cov = (pc * tc).sum((1, 2))
    eps = torch.finfo(pred.dtype).eps
    floor = count * (8.0 * eps * mean_p.abs()) ** 2 + torch.finfo(pred.dtype).tiny
    ok = (var_p > floor) & (count >= 2)
    scale = torch.where(ok, cov / torch.where(ok, var_p, torch.ones_like(var_p)), torch.zeros_like(var_p))
    return scale, mean_p, mean_t


def compute_scale_and_shift(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image least-squares ``(s, t) = argmin sum_valid (s * pred + t - target)^2``.

    Solved on per-image centred data (see :func:`_centred_solve`), so float32 keeps its precision
    for predictions far from zero; differentiable. Singular cases (fewer than two valid pixels, a
    constant prediction) give ``s = 0`` and ``t = mean(target)`` over valid pixels (0 if none).

    Returns:
        ``(scale, shift)``, each of shape ``(B,)``.
    """
    scale, mean_p, mean_t = _centred_solve(pred, target, mask)
    return scale, mean_t - scale * mean_p


def align_least_squares(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``s * pred + t`` with the per-image least-squares scale and shift.

    Evaluated as ``s * (pred - mean(pred)) + mean(target)``, the same function without the
    cancellation of ``s * pred + t`` when ``pred`` has a large offset.
    """
    scale, mean_p, mean_t = _centred_solve(pred, target, mask)
    return scale.view(-1, 1, 1) * (pred - mean_p.view(-1, 1, 1)) + mean_t.view(-1, 1, 1)


def _masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Median over valid pixels of each image (mean of the two middle values for an even count;
    0 for an empty mask)."""
    b = x.shape[0]
    flat = x.reshape(b, -1)
    fmask = mask.reshape(b, -1)
    big = torch.finfo(x.dtype).max
    values = torch.where(fmask, flat, torch.full_like(flat, big))
    sorted_vals = torch.sort(values, dim=1).values  # invalid pixels sort last
    count = fmask.sum(1)
    lo = ((count - 1).clamp_min(0) // 2).view(b, 1)
    hi = (count // 2).clamp_max(flat.shape[1] - 1).view(b, 1)
    med = (0.5 * sorted_vals.gather(1, lo) + 0.5 * sorted_vals.gather(1, hi)).squeeze(1)
    return torch.where(count > 0, med, torch.zeros_like(med))


def normalize_robust(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(x - t(x)) / s(x)`` per image: ``t`` the median, ``s`` the mean absolute deviation from it,
    both over valid pixels only; ``s`` is clamped away from zero. Invalid pixels come out finite
    (0 when the image has no valid pixel) and are meant to be masked by the caller."""
    t = _masked_median(x, mask).view(-1, 1, 1)
    m = mask.to(x.dtype)
    count = m.sum((1, 2)).clamp_min(1.0)
    s = ((m * (x - t).abs()).sum((1, 2)) / count).clamp_min(_EPS).view(-1, 1, 1)
    return (x - t) / s


def _weights(mask: torch.Tensor, weight: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Per-pixel weights times the mask (the mask itself when no weights are given)."""
    m = mask.to(dtype)
    return m if weight is None else m * weight.to(dtype)


def ssi_mse_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """L_ssimse: ``1/(2M) sum (s*pred + t - target)^2`` with least-squares ``(s, t)``.

    With per-pixel ``weight`` (w >= 0): ``sum w (s*pred + t - target)^2 / (2 sum w)`` over valid
    pixels; the alignment stays the plain least-squares one. All-ones weights give the plain loss.
    """
    res = align_least_squares(pred, target, mask) - target
    w = _weights(mask, weight, pred.dtype)
    return _reduce((w * res * res).sum((1, 2)), 2 * w.sum((1, 2)), pred)


def ssi_mae_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """L_ssimae: ``1/(2M) sum |n(pred) - n(target)|`` with the robust normalisation ``n``
    (weighted: ``sum w |...| / (2 sum w)``, the normalisation unweighted)."""
    res = normalize_robust(pred, mask) - normalize_robust(target, mask)
    w = _weights(mask, weight, pred.dtype)
    return _reduce((w * res.abs()).sum((1, 2)), 2 * w.sum((1, 2)), pred)


def ssi_trim_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, trim: float = 0.2, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """L_ssitrim: like L_ssimae but the largest ``trim`` fraction of each image's ``|residual|`` is
    dropped (``floor(trim * M)`` pixels); still divided by ``2M``, as in the paper.

    Weighted: the same pixels are dropped (by residual, not by weighted residual); the kept
    pixels' ``w |residual|`` are summed and divided by ``2 sum w`` over all valid pixels.
    """
    if not 0.0 <= trim < 1.0:
        raise ConfigError(f"trim={trim}: must be in [0, 1)")
    res = (normalize_robust(pred, mask) - normalize_robust(target, mask)).abs()
    b = res.shape[0]
    flat = res.reshape(b, -1)
    fmask = mask.reshape(b, -1)
    # invalid pixels get -1 so they sort last in descending order, behind every valid residual
    ranked, order = torch.sort(torch.where(fmask, flat, torch.full_like(flat, -1.0)), dim=1, descending=True)
    count = fmask.sum(1)
    n_drop = torch.floor(count.to(torch.float64) * trim).to(count.dtype)
    pos = torch.arange(flat.shape[1], device=flat.device).view(1, -1)
    keep = (pos >= n_drop.view(-1, 1)) & (pos < count.view(-1, 1))
    if weight is None:
        image_sums = (ranked * keep.to(ranked.dtype)).sum(1)
        return _reduce(image_sums, 2 * count.to(pred.dtype), pred)
    w = _weights(mask, weight, pred.dtype).reshape(b, -1)
    image_sums = (ranked * w.gather(1, order) * keep.to(ranked.dtype)).sum(1)
    return _reduce(image_sums, 2 * w.sum(1), pred)


def gradient_matching_loss(
    residual: torch.Tensor, mask: torch.Tensor, scales: int = 4, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """L_reg: ``sum_k sum(|dR/dx| + |dR/dy|) / M_k`` over ``scales`` levels.

    Level ``k`` takes every ``2**k``-th pixel (strided subsampling, as the reference); a difference
    counts only where both of its pixels are valid; each level is normalised by its own valid count
    ``M_k`` with the batch reduction above. With per-pixel ``weight`` a difference weighs the
    smaller weight of its two pixels and ``M_k`` becomes the sum of the level's weights.
    """
    total = residual.sum() * 0.0
    w_full = _weights(mask, weight, residual.dtype)
    for k in range(scales):
        step = 2**k
        r = residual[:, ::step, ::step]
        w = w_full[:, ::step, ::step]
        mx = torch.minimum(w[:, :, 1:], w[:, :, :-1])
        my = torch.minimum(w[:, 1:, :], w[:, :-1, :])
        gx = (mx * (r[:, :, 1:] - r[:, :, :-1]).abs()).sum((1, 2))
        gy = (my * (r[:, 1:, :] - r[:, :-1, :]).abs()).sum((1, 2))
        total = total + _reduce(gx + gy, w.sum((1, 2)), residual)
    return total


def scale_invariant_log_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, lam: float = 0.5
) -> torch.Tensor:
    """Baseline for ablations (Eigen et al.): ``mean(d^2) - lam * mean(d)^2``, ``d = log pred - log target``.

    Only pixels with a positive target count; scale invariant but not shift invariant.
    """
    valid = mask & (target > 0)
    d = torch.log(pred.clamp_min(_EPS)) - torch.log(target.clamp_min(_EPS))
    m = valid.to(pred.dtype)
    count = m.sum((1, 2))
    d = d * m
    per_image = (d * d).sum((1, 2)) - lam * d.sum((1, 2)) ** 2 / count.clamp_min(1.0)
    return _reduce(per_image, count, pred)


LOSS_KINDS = ("trim", "mae", "mse", "silog")


class ScaleAndShiftInvariantLoss(nn.Module):
    """The paper's training loss: data term ``kind`` plus ``alpha`` times gradient matching.

    ``kind``: ``trim`` (L_ssitrim, the paper's best), ``mae``, ``mse`` (least-squares aligned) or
    ``silog`` (the scale-invariant log baseline; no gradient term). The gradient term uses the
    residual of the same alignment as the data term.
    """

    def __init__(self, kind: str = "trim", alpha: float = 0.5, scales: int = 4, trim: float = 0.2):
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ConfigError(f"unknown loss kind {kind!r}; valid kinds: {', '.join(LOSS_KINDS)}")
        self.kind, self.alpha, self.scales, self.trim = kind, alpha, scales, trim

    def terms(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"data": ..., "reg": ..., "total": ...}`` (reg is 0 when alpha is 0 or for silog).

        ``weight``: optional per-pixel weights (``B x H x W``, >= 0) for both terms (see the loss
        functions); not supported by ``silog``.
        """
        # losses in at least float32: sorting and least squares are unreliable in bf16
        if pred.dtype in (torch.float16, torch.bfloat16):
            pred = pred.float()
        target = target.to(pred.dtype)
        mask = mask.bool()
        if weight is not None:
            weight = weight.to(pred.dtype)
        if self.kind == "silog":
            if weight is not None:
                raise ConfigError("loss.kind=silog does not take per-pixel weights (data.uncertainty_weighting)")
            data = scale_invariant_log_loss(pred, target, mask)
            reg = pred.sum() * 0.0
        else:
            if self.kind == "mse":
                data = ssi_mse_loss(pred, target, mask, weight)
                residual = align_least_squares(pred, target, mask) - target
            else:
                if self.kind == "trim":
                    data = ssi_trim_loss(pred, target, mask, self.trim, weight)
                else:
                    data = ssi_mae_loss(pred, target, mask, weight)
                residual = normalize_robust(pred, mask) - normalize_robust(target, mask)
            reg = gradient_matching_loss(residual, mask, self.scales, weight) if self.alpha > 0 else pred.sum() * 0.0
        return {"data": data, "reg": reg, "total": data + self.alpha * reg}

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.terms(pred, target, mask, weight)["total"]
