"""Motion between consecutive clip frames: temporal flow, its consistency mask, and warping.

Clips mode (``sampling.mode=clips``) can store, for each clip frame but the last, the optical flow
from its left view to the next frame's left view (``IngestConfig.store_temporal_flow``). The flow
comes from the same backend registry as the stereo labels (:mod:`pipeline.flow`): a backend's
``compute(lefts, rights)`` gives flow both ways, so ``(left_t, left_t+1)`` in place of a stereo pair
gives the forward flow ``t -> t+1`` and the backward flow ``t+1 -> t``. A pixel's flow is
trusted when the two agree (forward-backward check, docs/METHOD.md §5):

    |f(p) + b(p + f(p))| <= FB_ABS_PX + FB_REL * (|f(p)| + |b(p + f(p))|)

Training (a flow-warped temporal loss), evaluation (the temporal consistency metric) and
``depthmine predict --temporal`` use :func:`warp_to_previous` to bring frame ``t+1``'s maps onto
frame ``t``'s pixels along that flow.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

__all__ = ["FB_ABS_PX", "FB_REL", "consistency_mask", "temporal_flows", "warp_to_previous"]

#: forward-backward tolerance: an absolute part (px) and a part relative to the motion
FB_ABS_PX = 1.0
FB_REL = 0.05


def warp_to_previous(values: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``values`` of frame ``t+1`` sampled at ``p + flow(p)`` for every pixel ``p`` of frame ``t``.

    ``values``: HxW or HxWxC float; ``flow``: HxWx2 (px, x then y). Pixels whose target lies outside
    the frame (or whose flow is not finite) come out NaN.
    """
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = (gx + flow[..., 0]).astype(np.float32)
    my = (gy + flow[..., 1]).astype(np.float32)
    inside = np.isfinite(mx) & np.isfinite(my) & (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    mx = np.where(inside, mx, 0).astype(np.float32)
    my = np.where(inside, my, 0).astype(np.float32)
    out = cv2.remap(np.asarray(values, np.float32), mx, my, interpolation, borderMode=cv2.BORDER_REPLICATE)
    if out.ndim == 3:
        out[~inside] = np.nan
    else:
        out = np.where(inside, out, np.nan).astype(np.float32)
    return out


def consistency_mask(
    forward: np.ndarray, backward: np.ndarray, abs_px: float = FB_ABS_PX, rel: float = FB_REL
) -> np.ndarray:
    """Pixels of frame ``t`` whose forward flow the backward flow undoes (HxW bool)."""
    back = warp_to_previous(backward, forward)
    err = np.linalg.norm(forward + back, axis=-1)
    scale = np.linalg.norm(forward, axis=-1) + np.linalg.norm(back, axis=-1)
    ok = np.isfinite(err) & (err <= abs_px + rel * scale)
    return ok


def temporal_flows(lefts: Sequence[np.ndarray], backend: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(flow t -> t+1, consistent mask)`` for each consecutive pair of ``lefts`` (len - 1 items).

    ``backend``: a :class:`pipeline.flow.FlowBackend`; its working width applies as for stereo.
    """
    if len(lefts) < 2:
        return []
    pairs = backend.compute(list(lefts[:-1]), list(lefts[1:]))
    return [(p.lr.astype(np.float32), consistency_mask(p.lr, p.rl)) for p in pairs]
