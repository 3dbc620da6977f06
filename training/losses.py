"""Scale-and-shift-invariant losses of MiDaS (prediction and target in disparity space).

All functions take ``(B, H, W)`` tensors and a ``(B, H, W)`` bool ``mask`` of valid pixels.
Definitions follow the paper (see ``MIDAS_NOTES.md`` section 2); the batch reduction is the public
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


def compute_scale_and_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image least-squares ``(s, t) = argmin sum_valid (s * pred + t - target)^2``.

    Closed form of the 2x2 normal equations, differentiable. Singular cases (fewer than two valid
    pixels, constant prediction) give ``s = 0`` and ``t = mean(target)`` over valid pixels (0 if none).

    Returns:
        ``(scale, shift)``, each of shape ``(B,)``.
    """
    m = mask.to(pred.dtype)
    a00 = (m * pred * pred).sum((1, 2))
    a01 = (m * pred).sum((1, 2))
    a11 = m.sum((1, 2))
    b0 = (m * pred * target).sum((1, 2))
    b1 = (m * target).sum((1, 2))
    det = a00 * a11 - a01 * a01
    # relative threshold: det is a variance times M^2, scale-dependent
    ok = det > 1e-10 * (a00 * a11).clamp_min(_EPS)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    scale = torch.where(ok, (a11 * b0 - a01 * b1) / safe_det, torch.zeros_like(det))
    mean_t = b1 / a11.clamp_min(1.0)
    shift = torch.where(ok, (-a01 * b0 + a00 * b1) / safe_det, mean_t)
    return scale, shift


def align_least_squares(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``s * pred + t`` with the per-image least-squares scale and shift."""
    s, t = compute_scale_and_shift(pred, target, mask)
    return s.view(-1, 1, 1) * pred + t.view(-1, 1, 1)


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


def ssi_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_ssimse: ``1/(2M) sum (s*pred + t - target)^2`` with least-squares ``(s, t)``."""
    res = align_least_squares(pred, target, mask) - target
    m = mask.to(pred.dtype)
    return _reduce((m * res * res).sum((1, 2)), 2 * m.sum((1, 2)), pred)


def ssi_mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_ssimae: ``1/(2M) sum |n(pred) - n(target)|`` with the robust normalisation ``n``."""
    res = normalize_robust(pred, mask) - normalize_robust(target, mask)
    m = mask.to(pred.dtype)
    return _reduce((m * res.abs()).sum((1, 2)), 2 * m.sum((1, 2)), pred)


def ssi_trim_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, trim: float = 0.2) -> torch.Tensor:
    """L_ssitrim: like L_ssimae but the largest ``trim`` fraction of each image's ``|residual|`` is
    dropped (``floor(trim * M)`` pixels); still divided by ``2M``, as in the paper."""
    if not 0.0 <= trim < 1.0:
        raise ConfigError(f"trim={trim}: must be in [0, 1)")
    res = (normalize_robust(pred, mask) - normalize_robust(target, mask)).abs()
    b = res.shape[0]
    flat = res.reshape(b, -1)
    fmask = mask.reshape(b, -1)
    # invalid pixels get -1 so they sort last in descending order, behind every valid residual
    ranked = torch.sort(torch.where(fmask, flat, torch.full_like(flat, -1.0)), dim=1, descending=True).values
    count = fmask.sum(1)
    n_drop = torch.floor(count.to(torch.float64) * trim).to(count.dtype)
    pos = torch.arange(flat.shape[1], device=flat.device).view(1, -1)
    keep = (pos >= n_drop.view(-1, 1)) & (pos < count.view(-1, 1))
    image_sums = (ranked * keep.to(ranked.dtype)).sum(1)
    return _reduce(image_sums, 2 * count.to(pred.dtype), pred)


def gradient_matching_loss(residual: torch.Tensor, mask: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """L_reg: ``sum_k sum(|dR/dx| + |dR/dy|) / M_k`` over ``scales`` levels.

    Level ``k`` takes every ``2**k``-th pixel (strided subsampling, as the reference); a difference
    counts only where both of its pixels are valid; each level is normalised by its own valid count
    ``M_k`` with the batch reduction above.
    """
    total = residual.sum() * 0.0
    for k in range(scales):
        step = 2**k
        r = residual[:, ::step, ::step]
        m = mask[:, ::step, ::step]
        mx = (m[:, :, 1:] & m[:, :, :-1]).to(r.dtype)
        my = (m[:, 1:, :] & m[:, :-1, :]).to(r.dtype)
        gx = (mx * (r[:, :, 1:] - r[:, :, :-1]).abs()).sum((1, 2))
        gy = (my * (r[:, 1:, :] - r[:, :-1, :]).abs()).sum((1, 2))
        total = total + _reduce(gx + gy, m.to(r.dtype).sum((1, 2)), residual)
    return total


def scale_invariant_log_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
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

    def terms(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"data": ..., "reg": ..., "total": ...}`` (reg is 0 when alpha is 0 or for silog)."""
        # losses in at least float32: sorting and least squares are unreliable in bf16
        if pred.dtype in (torch.float16, torch.bfloat16):
            pred = pred.float()
        target = target.to(pred.dtype)
        mask = mask.bool()
        if self.kind == "silog":
            data = scale_invariant_log_loss(pred, target, mask)
            reg = pred.sum() * 0.0
        else:
            if self.kind == "mse":
                data = ssi_mse_loss(pred, target, mask)
                residual = align_least_squares(pred, target, mask) - target
            else:
                if self.kind == "trim":
                    data = ssi_trim_loss(pred, target, mask, self.trim)
                else:
                    data = ssi_mae_loss(pred, target, mask)
                residual = normalize_robust(pred, mask) - normalize_robust(target, mask)
            reg = gradient_matching_loss(residual, mask, self.scales) if self.alpha > 0 else pred.sum() * 0.0
        return {"data": data, "reg": reg, "total": data + self.alpha * reg}

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.terms(pred, target, mask)["total"]
