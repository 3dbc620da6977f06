"""A stereo-matcher backend (OpenCV semi-global block matching) for well-rectified footage.

A stereo matcher only searches along the same row, so it cannot measure vertical misalignment
(its vertical flow is 0 by construction): on its own it suits rectified footage; beside a flow
backend (``DisparityConfig.matcher``) it is the second, independent opinion of the consensus
labeller, run on the right view rectified by the rig model of :mod:`pipeline.rig`.

Search range. Movies have objects in front of the screen (positive disparity) and behind it
(negative); close-ups and real rigs reach 15-20% of the width. A fixed symmetric range is either
too narrow for those (near objects fall outside it and are matched to something else) or slow for
every frame. The range is therefore found per frame by a coarse pass at a quarter of the width
over +-``max_disparity_fraction`` of the width (1/64 of the work of a full-resolution pass), and
the full-resolution pass searches the coarse pass's 1st to 99th percentile plus a margin.

The right view's disparity comes from the same matcher on the mirrored, swapped pair, so the
left-right check of :mod:`pipeline.disparity` applies unchanged; pixels the matcher leaves
unmatched come back as NaN flow and fail that check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from pipeline.errors import ConfigError
from pipeline.flow.base import FlowBackend, FlowPair, to_gray

__all__ = ["SgbmBackend", "SgbmOptions"]

_COARSE_MIN_WIDTH = 96  # the coarse pass is skipped for images narrower than 4x this


@dataclass
class SgbmOptions:
    """What a user may tune of the ``sgbm`` matcher (``--set disparity.matcher_options.block_size=7``).

    The defaults are the measured ones of the consensus labeller.

    Attributes:
        max_disparity_fraction: largest |disparity| the range search considers, as a fraction of
            the image width (0.25: +-470 px at 1880).
        auto_range: find the range per frame with a coarse pass (else search the whole
            +-``max_disparity_fraction``, slow at full HD).
        range_margin_fraction: margin added on both sides of the coarse range, as a fraction of
            its span (at least 16 px).
        block_size: matching block size (odd).
        uniqueness_ratio, speckle_window, speckle_range: OpenCV's filters of unreliable matches.
    """

    max_disparity_fraction: float = 0.25
    auto_range: bool = True
    range_margin_fraction: float = 0.15
    block_size: int = 5
    uniqueness_ratio: int = 5
    speckle_window: int = 100
    speckle_range: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.max_disparity_fraction <= 0.5:
            raise ConfigError(f"max_disparity_fraction must be in (0, 0.5], got {self.max_disparity_fraction}")
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ConfigError(f"block_size must be odd and positive, got {self.block_size}")
        if self.range_margin_fraction < 0:
            raise ConfigError(f"range_margin_fraction must be >= 0, got {self.range_margin_fraction}")
        if not 0 <= self.uniqueness_ratio <= 100:
            raise ConfigError(f"uniqueness_ratio must be in [0, 100], got {self.uniqueness_ratio}")
        if self.speckle_window < 0 or self.speckle_range < 0:
            raise ConfigError("speckle_window and speckle_range must be >= 0")


class SgbmBackend(FlowBackend):
    """StereoSGBM both ways over a per-frame search range.

    Args:
        working_width: see :class:`FlowBackend`.
        **options: the fields of :class:`SgbmOptions` (checked there), held as :attr:`options`.
    """

    name = "sgbm"
    options_type = SgbmOptions

    def __init__(self, working_width: int | None = None, **options: Any):
        super().__init__(working_width)
        self.options = SgbmOptions(**options)

    def search_range(self, width: int) -> tuple[int, int]:
        """(minDisparity, numDisparities) of the full symmetric range for this width."""
        half = max(16, 16 * math.ceil(self.options.max_disparity_fraction * width / 16))
        return -half, 2 * half

    def _matcher(self, min_d: int, num_d: int) -> cv2.StereoSGBM:
        cache = getattr(self, "_impl_matchers", None)
        if cache is None:
            cache = self._impl_matchers = {}
        key = (min_d, num_d)
        if key not in cache:
            o = self.options
            bs = o.block_size
            if len(cache) >= 16:
                cache.clear()
            cache[key] = cv2.StereoSGBM_create(
                minDisparity=min_d,
                numDisparities=num_d,
                blockSize=bs,
                P1=8 * bs * bs,
                P2=32 * bs * bs,
                disp12MaxDiff=-1,  # our own left-right check runs afterwards
                uniquenessRatio=o.uniqueness_ratio,
                speckleWindowSize=o.speckle_window,
                speckleRange=o.speckle_range,
                mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
            )
        return cache[key]

    def _disparity(self, left: np.ndarray, right: np.ndarray, min_d: int, num_d: int) -> np.ndarray:
        """Left disparity over [min_d, min_d + num_d) (NaN where unmatched), borders searched too."""
        w = left.shape[1]
        pad = max(0, num_d + min_d)  # SGBM leaves this many left columns unmatched
        lp = cv2.copyMakeBorder(left, 0, 0, pad, pad, cv2.BORDER_REPLICATE)
        rp = cv2.copyMakeBorder(right, 0, 0, pad, pad, cv2.BORDER_REPLICATE)
        raw = self._matcher(min_d, num_d).compute(lp, rp)[:, pad : pad + w]
        disp = raw.astype(np.float32) / 16.0
        disp[raw < min_d * 16] = np.nan
        return disp

    def frame_range(self, left: np.ndarray, right: np.ndarray) -> tuple[int, int]:
        """(minDisparity, numDisparities) for this gray pair: the coarse pass's range plus margin."""
        h, w = left.shape
        full = self.search_range(w)
        if not self.options.auto_range or w < 4 * _COARSE_MIN_WIDTH:
            return full
        scale = 4
        size = (w // scale, max(8, h // scale))
        sl = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
        sr = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
        cmin, cnum = self.search_range(size[0])
        d = self._disparity(sl, sr, cmin, cnum)
        d = d[np.isfinite(d)]
        if d.size < 0.05 * size[0] * size[1]:
            return full
        lo, hi = np.percentile(d, [1.0, 99.0]) * (w / size[0])
        margin = max(16.0, self.options.range_margin_fraction * (hi - lo), 2.0 * scale)
        lo, hi = max(lo - margin, full[0]), min(hi + margin, full[0] + full[1])
        min_d = int(math.floor(lo / 16.0) * 16)
        num_d = max(16, int(math.ceil((hi - min_d) / 16.0) * 16))
        return min_d, num_d

    def compute_flow(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> list[FlowPair]:
        out = []
        for left, right in zip(lefts, rights):
            gl, gr = to_gray(left), to_gray(right)
            min_d, num_d = self.frame_range(gl, gr)
            d_left = self._disparity(gl, gr, min_d, num_d)
            # mirrored and swapped, the right view becomes a left view with the same sign of d:
            # right pixel x matches left pixel x + d_right.
            mirrored = self._disparity(
                np.ascontiguousarray(gr[:, ::-1]), np.ascontiguousarray(gl[:, ::-1]), min_d, num_d
            )
            d_right = mirrored[:, ::-1]
            lr = np.zeros(gl.shape + (2,), np.float32)
            rl = np.zeros(gl.shape + (2,), np.float32)
            lr[..., 0] = -d_left
            rl[..., 0] = d_right
            lr[np.isnan(d_left)] = np.nan
            rl[np.isnan(d_right)] = np.nan
            out.append(FlowPair(lr, rl))
        return out
