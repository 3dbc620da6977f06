"""Temporal consistency for clips: training losses, the evaluation metric, and prediction smoothing.

Clips (``data.clip_frames > 1``) come as ``(N, T, H, W)`` predictions ``d`` and targets ``g``
(disparity in [0, 1], normalised over the whole clip so that frame-to-frame changes of the label
survive; :mod:`training.clips`). The formulas are written in docs/METHOD.md §5:

* **Clip alignment.** One least-squares scale and shift per clip, over the valid pixels of all its
  frames: ``a = s·d + t``. (Per-frame alignment would hide exactly the flicker of scale and shift
  the temporal terms are there to punish.)
* **Temporal gradient matching** (Video Depth Anything): the change of the aligned prediction from
  frame ``t`` to ``t+1`` at a pixel matches the change of the ground truth, where the ground truth
  is stable: ``L_tgm = Σ m |(a_{t+1} − a_t) − (g_{t+1} − g_t)| / Σ m`` with
  ``m = valid_t ∧ valid_{t+1} ∧ |g_{t+1} − g_t| < τ``. No flow is needed.
* **Flow-warped consistency**: the same along the stored temporal flow ``f_t`` (frame ``t+1``'s maps
  sampled at ``p + f_t(p)``, written ``~``): ``L_warp = Σ m |(ã_{t+1} − a_t) − (g̃_{t+1} − g_t)| / Σ m``
  over ``m = valid_t ∧ ṽalid_{t+1} ∧ consistent_t ∧ inside``.
* **Temporal error** (evaluation, :func:`temporal_consistency`): ``L_warp``'s mean on one clip, with
  the prediction aligned to the clip's ground truth by one scale and shift, in float64: 0 when the
  prediction changes exactly as the ground truth does, growing with flicker.

Batch reduction as in :mod:`training.losses`: the sum over clips of their sums over the sum of
their counts; an empty clip adds nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError
from training.losses import _reduce, align_least_squares

__all__ = [
    "TEMPORAL_KINDS",
    "align_clip",
    "warp_next",
    "temporal_gradient_loss",
    "flow_consistency_loss",
    "ClipLoss",
    "temporal_consistency",
    "align_to_previous",
    "temporal_align_sequence",
    "clip_summary",
]

TEMPORAL_KINDS = ("tgm", "warp", "both")


def align_clip(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``s·pred + t`` with one least-squares ``(s, t)`` per clip over all its frames' valid pixels."""
    n, t, h, w = pred.shape
    return align_least_squares(pred.reshape(n, t * h, w), target.reshape(n, t * h, w), mask.reshape(n, t * h, w)).view(
        n, t, h, w
    )


def warp_next(values: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame ``t+1``'s maps on frame ``t``'s pixels: ``values[:, k]`` sampled at ``p + flow[:, k](p)``.

    Args:
        values: ``(N, K, H, W)`` maps of frames 1..T-1.
        flow: ``(N, K, H, W, 2)`` flow of frames 0..T-2 to their next frame (px, x then y).

    Returns:
        ``(warped, inside)``: bilinear samples and whether ``p + flow(p)`` lies in the frame.
    """
    n, k, h, w = values.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flow.dtype, device=flow.device),
        torch.arange(w, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    fx = xs + flow[..., 0]
    fy = ys + flow[..., 1]
    inside = (fx >= 0) & (fx <= w - 1) & (fy >= 0) & (fy <= h - 1) & torch.isfinite(fx) & torch.isfinite(fy)
    gx = torch.where(inside, fx, torch.zeros_like(fx)) / max(w - 1, 1) * 2 - 1
    gy = torch.where(inside, fy, torch.zeros_like(fy)) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(n * k, h, w, 2).to(values.dtype)
    out = F.grid_sample(values.reshape(n * k, 1, h, w), grid, mode="bilinear", align_corners=True)
    return out.view(n, k, h, w), inside


def temporal_gradient_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, threshold: float = 0.05
) -> torch.Tensor:
    """``L_tgm`` on ``(N, T, H, W)`` clips (see the module docstring); ``threshold`` is ``τ``."""
    a = align_clip(pred, target, mask)
    dp = a[:, 1:] - a[:, :-1]
    dg = target[:, 1:] - target[:, :-1]
    m = (mask[:, 1:] & mask[:, :-1] & (dg.abs() < threshold)).to(pred.dtype)
    return _reduce((m * (dp - dg).abs()).sum((1, 2, 3)), m.sum((1, 2, 3)), pred)


def flow_consistency_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, flow: torch.Tensor, flow_valid: torch.Tensor
) -> torch.Tensor:
    """``L_warp`` on ``(N, T, H, W)`` clips with ``flow`` ``(N, T-1, H, W, 2)`` and its mask."""
    a = align_clip(pred, target, mask)
    a_next, inside = warp_next(a[:, 1:], flow)
    g_next, _ = warp_next(target[:, 1:], flow)
    m_next, _ = warp_next(mask[:, 1:].to(pred.dtype), flow)
    m = (mask[:, :-1] & flow_valid.bool() & inside & (m_next > 0.999)).to(pred.dtype)
    res = (a_next - a[:, :-1]) - (g_next - target[:, :-1])
    res = torch.where(m > 0, res, torch.zeros_like(res))
    return _reduce((m * res.abs()).sum((1, 2, 3)), m.sum((1, 2, 3)), pred)


class ClipLoss(nn.Module):
    """The per-frame loss on every frame of a clip plus ``weight`` times a temporal term.

    Called as ``loss(pred, target, mask, flow, flow_valid[, pixel_weight])`` with clips flattened to
    ``(N*T, H, W)`` frames (``flow`` ``(N*T, H, W, 2)``: frame ``t``'s flow to ``t+1``, the last
    frame's unused), so the mixers can slice and concatenate parts like single frames.

    Args:
        frame_loss: the per-frame loss (:class:`training.losses.ScaleAndShiftInvariantLoss`).
        frames: T. weight: the temporal term's weight (0: per-frame loss only).
        kind: ``tgm`` (temporal gradient matching), ``warp`` (along the stored flow) or ``both``.
        threshold: ``τ`` of ``tgm`` (on the [0, 1] target scale).
    """

    def __init__(self, frame_loss: nn.Module, frames: int, weight: float = 1.0, kind: str = "tgm", threshold=0.05):
        super().__init__()
        if kind not in TEMPORAL_KINDS:
            raise ConfigError(f"loss.temporal {kind!r}: valid kinds: {', '.join(TEMPORAL_KINDS)}")
        self.frame_loss, self.frames, self.weight, self.kind, self.threshold = (
            frame_loss,
            int(frames),
            float(weight),
            kind,
            float(threshold),
        )

    def temporal(self, pred, target, mask, flow, flow_valid) -> torch.Tensor:
        t = self.frames
        if pred.dtype in (torch.float16, torch.bfloat16):
            pred = pred.float()
        clip = lambda x: x.reshape(-1, t, *x.shape[1:])  # noqa: E731
        p, g, m = clip(pred), clip(target.to(pred.dtype)), clip(mask.bool())
        out = pred.sum() * 0.0
        if self.kind in ("tgm", "both"):
            out = out + temporal_gradient_loss(p, g, m, self.threshold)
        if self.kind in ("warp", "both"):
            f, fv = clip(flow.to(pred.dtype))[:, :-1], clip(flow_valid.bool())[:, :-1]
            out = out + flow_consistency_loss(p, g, m, f, fv)
        return out

    def forward(self, pred, target, mask, flow, flow_valid, pixel_weight=None) -> torch.Tensor:
        total = self.frame_loss(pred, target, mask, pixel_weight)
        if self.weight > 0:
            total = total + self.weight * self.temporal(pred, target, mask, flow, flow_valid)
        return total


# ---------------------------------------------------------------------------------------------
# evaluation and prediction (numpy)


def _unit_over_clip(gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    v = gt[valid]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    return (gt - lo) / (hi - lo) if hi > lo else np.zeros_like(gt)


def temporal_consistency(
    preds: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    flows: np.ndarray | None = None,
    flow_valid: np.ndarray | None = None,
) -> dict[str, float]:
    """The temporal error of one clip's predictions (docs/METHOD.md §5), in float64.

    Args:
        preds: ``(T, H, W)`` predicted disparity (any scale and shift).
        gt: ``(T, H, W)`` ground-truth disparity; ``valid`` its mask (rejected frames: all False).
        flows: ``(T-1, H, W, 2)`` flow of frame ``t`` to ``t+1`` and ``flow_valid`` its consistent
            pixels; None compares pixels in place.

    Returns:
        ``temporal_error`` (mean ``|Δa − Δg|`` over the compared pixels, on the clip's [0, 1]
        ground-truth scale), ``flicker`` (mean ``|Δa|``), ``flicker_gt`` (mean ``|Δg|``) and
        ``pixels``; NaN errors when no pixel can be compared.
    """
    from pipeline.temporal import warp_to_previous

    preds = np.asarray(preds, np.float64)
    valid = np.asarray(valid, bool) & np.isfinite(gt) & np.isfinite(preds)
    g = _unit_over_clip(np.where(valid, gt, 0.0).astype(np.float64), valid)
    p, q = preds[valid], g[valid]
    if p.size >= 2 and p.std() > 0:
        s = float(((p - p.mean()) * (q - q.mean())).sum() / ((p - p.mean()) ** 2).sum())
    else:
        s = 0.0
    shift = float(q.mean() - s * p.mean()) if p.size else 0.0
    a = s * preds + shift
    err = fl = flg = 0.0
    n = 0
    for t in range(len(preds) - 1):
        if flows is None:
            a1, g1, v1 = a[t + 1], g[t + 1], valid[t + 1]
            m = valid[t] & v1
        else:
            f = np.asarray(flows[t], np.float32)
            a1 = warp_to_previous(a[t + 1], f).astype(np.float64)
            g1 = warp_to_previous(g[t + 1], f).astype(np.float64)
            v1 = warp_to_previous(valid[t + 1].astype(np.float32), f) > 0.999  # NaN outside: False
            m = valid[t] & v1 & np.isfinite(a1) & np.isfinite(g1)
            if flow_valid is not None:
                m &= np.asarray(flow_valid[t], bool)
        if not m.any():
            continue
        da, dg = a1[m] - a[t][m], g1[m] - g[t][m]
        err += float(np.abs(da - dg).sum())
        fl += float(np.abs(da).sum())
        flg += float(np.abs(dg).sum())
        n += int(m.sum())
    if n == 0:
        return {"temporal_error": float("nan"), "flicker": float("nan"), "flicker_gt": float("nan"), "pixels": 0.0}
    return {"temporal_error": err / n, "flicker": fl / n, "flicker_gt": flg / n, "pixels": float(n)}


def align_to_previous(
    pred: np.ndarray, previous: np.ndarray, flow: np.ndarray | None, flow_valid: np.ndarray | None
) -> tuple[np.ndarray, float, float]:
    """``s·pred + b`` with ``(s, b)`` fitted by least squares so that ``pred`` agrees with the
    already aligned ``previous`` frame along the flow ``previous -> pred`` (its consistent pixels).

    Returns ``(aligned, s, b)``; a frame with too few comparable pixels is returned unchanged.
    """
    from pipeline.temporal import warp_to_previous

    pred = np.asarray(pred, np.float64)
    if flow is None:
        warped, m = pred, np.ones(pred.shape, bool)
    else:
        warped = warp_to_previous(pred, np.asarray(flow, np.float32)).astype(np.float64)
        m = np.isfinite(warped) & (np.ones(pred.shape, bool) if flow_valid is None else np.asarray(flow_valid, bool))
    m &= np.isfinite(previous)
    x, y = warped[m], np.asarray(previous, np.float64)[m]
    if x.size < 16 or x.std() == 0:
        return pred.astype(np.float32), 1.0, 0.0
    s = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    b = float(y.mean() - s * x.mean())
    return (s * pred + b).astype(np.float32), s, b


def clip_summary(per_clip: list[dict[str, float]]) -> dict[str, Any]:
    """Pixel-weighted means of :func:`temporal_consistency` over clips."""
    n = sum(c["pixels"] for c in per_clip)
    out: dict[str, Any] = {"clips": len(per_clip), "pixels": n}
    for k in ("temporal_error", "flicker", "flicker_gt"):
        out[k] = sum(c[k] * c["pixels"] for c in per_clip if c["pixels"]) / n if n else float("nan")
    return out


def temporal_align_sequence(
    images: list[np.ndarray], preds: list[np.ndarray], flow: str = "dis-medium"
) -> list[np.ndarray]:
    """A per-frame model's predictions of consecutive frames, each aligned to its aligned predecessor
    (:func:`align_to_previous`) along the flow between the frames (the registry's backend ``flow``,
    at the prediction's size, with its forward-backward mask). The first frame is kept as it is.
    What ``depthmine predict --temporal`` does to a video.
    """
    import cv2

    from pipeline.flow import get_backend
    from pipeline.temporal import temporal_flows

    if len(preds) < 2:
        return [np.asarray(p, np.float32) for p in preds]
    h, w = np.shape(preds[0])[:2]
    frames = [im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images]
    flows = temporal_flows(frames, get_backend(flow))
    out = [np.asarray(preds[0], np.float32)]
    for k in range(1, len(preds)):
        f, fv = flows[k - 1]
        out.append(align_to_previous(preds[k], out[-1], f, fv)[0])
    return out
