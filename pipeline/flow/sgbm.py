"""A stereo-matcher backend (OpenCV semi-global block matching) for well-rectified footage.

A stereo matcher only searches along the same row, so it cannot measure vertical misalignment
(its vertical flow is 0 by construction: use a flow backend on footage whose rig may be off).
In exchange it is fast and sharp at depth edges. Movies have objects in front of the screen
(positive disparity) and behind it (negative), so the search range is centred on zero through a
negative ``minDisparity``. The right view's disparity comes from the same matcher on the mirrored,
swapped pair, so the left-right check of :mod:`pipeline.disparity` applies unchanged; pixels the
matcher leaves unmatched come back as NaN flow and fail that check.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from pipeline.flow.base import FlowBackend, FlowPair, to_gray

__all__ = ["SgbmBackend"]


class SgbmBackend(FlowBackend):
    """StereoSGBM both ways with a disparity range of +-``max_disparity_fraction`` * width.

    Args:
        max_disparity_fraction: largest |disparity| searched, as a fraction of the image width
            (0.1: +-188 px at 1880, ample for theatrical 3D whose disparities stay within ~3%).
        block_size: matching block size (odd).
        uniqueness_ratio, speckle_window, speckle_range: OpenCV's filters of unreliable matches.
        working_width: see :class:`FlowBackend`.
    """

    name = "sgbm"

    def __init__(
        self,
        max_disparity_fraction: float = 0.1,
        block_size: int = 5,
        uniqueness_ratio: int = 5,
        speckle_window: int = 100,
        speckle_range: int = 2,
        working_width: int | None = None,
    ):
        super().__init__(working_width)
        if not 0 < max_disparity_fraction <= 0.5:
            raise ValueError(f"max_disparity_fraction must be in (0, 0.5], got {max_disparity_fraction}")
        self.max_disparity_fraction = max_disparity_fraction
        self.block_size = block_size
        self.uniqueness_ratio = uniqueness_ratio
        self.speckle_window = speckle_window
        self.speckle_range = speckle_range

    def search_range(self, width: int) -> tuple[int, int]:
        """(minDisparity, numDisparities) for an image of this width: symmetric around 0."""
        half = max(16, 16 * math.ceil(self.max_disparity_fraction * width / 16))
        return -half, 2 * half

    def _matcher(self, width: int) -> cv2.StereoSGBM:
        cache = getattr(self, "_impl_matchers", None)
        if cache is None:
            cache = self._impl_matchers = {}
        min_d, num_d = self.search_range(width)
        if num_d not in cache:
            bs = self.block_size
            cache[num_d] = cv2.StereoSGBM_create(
                minDisparity=min_d,
                numDisparities=num_d,
                blockSize=bs,
                P1=8 * bs * bs,
                P2=32 * bs * bs,
                disp12MaxDiff=-1,  # our own left-right check runs afterwards
                uniquenessRatio=self.uniqueness_ratio,
                speckleWindowSize=self.speckle_window,
                speckleRange=self.speckle_range,
                mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
            )
        return cache[num_d]

    def _disparity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Left disparity (NaN where unmatched); pads so the border columns are searched too."""
        w = left.shape[1]
        min_d, num_d = self.search_range(w)
        pad = num_d + min_d  # SGBM leaves this many left columns unmatched
        lp = cv2.copyMakeBorder(left, 0, 0, pad, pad, cv2.BORDER_REPLICATE)
        rp = cv2.copyMakeBorder(right, 0, 0, pad, pad, cv2.BORDER_REPLICATE)
        raw = self._matcher(w).compute(lp, rp)[:, pad : pad + w]
        disp = raw.astype(np.float32) / 16.0
        disp[raw < min_d * 16] = np.nan
        return disp

    def compute_flow(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> list[FlowPair]:
        out = []
        for left, right in zip(lefts, rights):
            gl, gr = to_gray(left), to_gray(right)
            d_left = self._disparity(gl, gr)
            # mirrored and swapped, the right view becomes a left view with the same sign of d:
            # right pixel x matches left pixel x + d_right.
            d_right = self._disparity(np.ascontiguousarray(gr[:, ::-1]), np.ascontiguousarray(gl[:, ::-1]))[:, ::-1]
            lr = np.zeros(gl.shape + (2,), np.float32)
            rl = np.zeros(gl.shape + (2,), np.float32)
            lr[..., 0] = -d_left
            rl[..., 0] = d_right
            lr[np.isnan(d_left)] = np.nan
            rl[np.isnan(d_right)] = np.nan
            out.append(FlowPair(lr, rl))
        return out
