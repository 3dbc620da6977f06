"""Fusing two backends: a stereo matcher's horizontal disparity inside a flow field.

A stereo matcher (``sgbm``) is sharper at depth edges than dense flow but blind to vertical
misalignment and full of holes; flow (``dis-medium``) is dense and measures the vertical component
the frame checks need. :class:`FusedBackend` takes the horizontal component from the ``detail``
backend wherever it matched and from the ``base`` backend elsewhere, and the vertical component
always from ``base``. On the Middlebury motorcycle pair ``dis-medium+sgbm`` keeps 84.0% of the
pixels with 3.5% bad (``dis-medium`` alone: 83.6%, 4.1%) for ~1.3x the time.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.flow.base import FlowBackend, FlowPair

__all__ = ["FusedBackend"]


def _fuse(base: np.ndarray, detail: np.ndarray) -> np.ndarray:
    out = base.astype(np.float32, copy=True)
    matched = np.isfinite(detail[..., 0])
    out[..., 0] = np.where(matched, detail[..., 0], base[..., 0])
    return out


class FusedBackend(FlowBackend):
    """Horizontal flow from ``detail`` where it is finite, else from ``base``; vertical from ``base``.

    Args:
        base: a dense flow backend (measures vertical flow).
        detail: a sharper, possibly sparse backend (NaN where unmatched).
        working_width: see :class:`FlowBackend`; the parts run at the size they are given.
    """

    def __init__(self, base: FlowBackend, detail: FlowBackend, working_width: int | None = None):
        super().__init__(working_width)
        self.base = base
        self.detail = detail
        self.name = f"{base.name}+{detail.name}"

    def compute_flow(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> list[FlowPair]:
        dense = self.base.compute_flow(lefts, rights)
        sharp = self.detail.compute_flow(lefts, rights)
        return [FlowPair(_fuse(d.lr, s.lr), _fuse(d.rl, s.rl)) for d, s in zip(dense, sharp)]
