"""The flow-backend contract and the disparity sign convention, written once.

A backend turns a batch of (left, right) images into optical flow both ways. Everything that
depends on the method (OpenCV DIS, DeepFlow, a stereo matcher, a ptlflow network) lives in the
subclasses; this module holds what all of them share:

* :class:`FlowPair`: the two flows of one stereo pair, at the input resolution.
* :class:`FlowBackend`: one required method, :meth:`FlowBackend.compute_flow`, plus the optional
  working-resolution wrapper :meth:`FlowBackend.compute` (downscale, compute, upscale the field and
  rescale its values) that callers use.
* :func:`flow_to_disparity`: the project's disparity convention.

Disparity convention (Middlebury): the left pixel at ``x`` matches the right pixel at ``x - d``.
Flow from left to right moves the left pixel at ``x`` to ``x + u``, so ``x + u = x - d`` and
``d = -u``. Larger disparity is nearer; objects behind the screen have negative disparity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from pipeline.errors import ConfigError

__all__ = [
    "FlowPair",
    "FlowBackend",
    "flow_to_disparity",
    "disparity_to_flow",
    "resize_flow",
    "to_gray",
]

log = logging.getLogger(__name__)


@dataclass
class FlowPair:
    """Optical flow of one stereo pair, both ways, HxWx2 float32 (x then y component, pixels).

    ``lr`` maps each left pixel to its match in the right image (``right[y + v, x + u]``);
    ``rl`` maps each right pixel to the left image. Non-finite values mark pixels the backend
    could not match (a stereo matcher's holes); the checks treat them as failing.
    """

    lr: np.ndarray
    rl: np.ndarray


def flow_to_disparity(flow_lr: np.ndarray) -> np.ndarray:
    """Left-view disparity from left-to-right flow: ``d = -u`` (see the module docstring)."""
    return np.negative(np.asarray(flow_lr)[..., 0], dtype=np.float32) + np.float32(0.0)  # no -0.0


def disparity_to_flow(disparity: np.ndarray) -> np.ndarray:
    """The inverse of :func:`flow_to_disparity` for a purely horizontal field (HxWx2 float32)."""
    d = np.asarray(disparity, np.float32)
    flow = np.zeros(d.shape + (2,), np.float32)
    flow[..., 0] = -d
    return flow


def resize_flow(flow: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resample a flow field to ``width`` x ``height`` and scale its vectors to the new pixels.

    Flow values are displacements in pixels, so a field computed at half width holds half the
    displacement: the x component scales with the width ratio and y with the height ratio.
    """
    h, w = flow.shape[:2]
    if (w, h) == (width, height):
        return flow.astype(np.float32, copy=False)
    interp = cv2.INTER_LINEAR if width > w else cv2.INTER_AREA
    out = cv2.resize(flow.astype(np.float32), (width, height), interpolation=interp)
    out[..., 0] *= width / w
    out[..., 1] *= height / h
    return out


def to_gray(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 image (or an already gray one) as a contiguous gray uint8 image."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(img)


class FlowBackend:
    """Base class of flow backends: batches of (left, right) images in, :class:`FlowPair` out.

    Subclasses set ``name`` and implement :meth:`compute_flow`. They must stay cheap to
    construct and picklable (Dask/Prefect workers receive them): heavy state (OpenCV objects,
    networks) is built lazily on first use and dropped when pickled.

    Args:
        working_width: compute at this width (keeping the aspect ratio) and resample the flow
            back to the input size; ``None`` or a width >= the input's works at full size.
    """

    name: str = "base"
    #: the dataclass of the options a user may set (``disparity.flow_options`` /
    #: ``matcher_options``); ``None``: the backend takes none beyond ``working_width``.
    options_type: type | None = None

    def __init__(self, working_width: int | None = None):
        if working_width is not None and working_width < 16:
            raise ConfigError(f"working_width must be >= 16 pixels, got {working_width}")
        self.working_width = working_width

    # -- the one required method ------------------------------------------------------------
    def compute_flow(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> list[FlowPair]:
        """Flow both ways for each pair, at the resolution of the given images.

        Args:
            lefts: left images, HxWx3 uint8 RGB, all pairs of one call may differ in size.
            rights: right images, same sizes as ``lefts``.

        Returns:
            One :class:`FlowPair` per pair, each HxWx2 float32 at that pair's size.
        """
        raise NotImplementedError

    # -- shared machinery -------------------------------------------------------------------
    def compute(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> list[FlowPair]:
        """:meth:`compute_flow` at the working width, returned at the input resolution."""
        if len(lefts) != len(rights):
            raise ValueError(f"{len(lefts)} left images but {len(rights)} right images")
        for i, (l, r) in enumerate(zip(lefts, rights)):
            if l.shape[:2] != r.shape[:2]:
                raise ValueError(f"pair {i}: left {l.shape[:2]} and right {r.shape[:2]} differ in size")
        if not lefts:
            return []
        small_l, small_r, sizes = [], [], []
        for l, r in zip(lefts, rights):
            h, w = l.shape[:2]
            sizes.append((w, h))
            ww, wh = self.working_size(w, h)
            if (ww, wh) != (w, h):
                l = cv2.resize(l, (ww, wh), interpolation=cv2.INTER_AREA)
                r = cv2.resize(r, (ww, wh), interpolation=cv2.INTER_AREA)
            small_l.append(l)
            small_r.append(r)
        pairs = self.compute_flow(small_l, small_r)
        return [FlowPair(resize_flow(p.lr, w, h), resize_flow(p.rl, w, h)) for p, (w, h) in zip(pairs, sizes)]

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) flow is computed at for an input of this size."""
        if not self.working_width or self.working_width >= width:
            return width, height
        return self.working_width, max(8, round(height * self.working_width / width))

    def __getstate__(self) -> dict:
        # lazily built engines (names starting with "_impl") are not picklable; rebuild them.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_impl")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, working_width={self.working_width})"
