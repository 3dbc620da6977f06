"""The stereo rig's vertical misalignment, estimated from flow where flow can be trusted.

Why a model and not a pixel count: the method rejects a frame when more than 10% of its pixels
have a vertical disparity above 2 px, because a misaligned rig (one camera a little higher, or
rolled, or zoomed differently) makes every label of the frame suspect. Counted per pixel over the
raw flow, that rule mostly counts the *matcher's* failures: in occluded regions, on textureless
walls and at depth edges the flow's vertical component is noise of several pixels even on a
perfectly rectified pair. Measured on eight real rectified pairs (Middlebury 2001-2006 and KITTI
2015), the per-pixel rule rejected four of them.

So the rig is judged by a model fitted to the pixels whose flow is trustworthy, and the rule is
applied to the model. A rectification error of a real rig is smooth over the frame: a constant
offset (height), a term linear in ``x`` (roll about the optical axis: the right view rotated by
``theta`` moves the pixel at ``x - cx`` by about ``theta * (x - cx)`` vertically) and a term linear in
``y`` (a different zoom or pitch). :func:`fit_rig_model` fits

    v(x, y) = offset + slope_x * (x - cx) + slope_y * (y - cy)

by least squares on pixels that pass the left-right check in both components and lie in textured
areas away from depth edges, re-weighted twice to ignore the outliers that remain (a robust fit:
points further than three robust standard deviations from the fit are dropped). The frame's
``vertical_fail_fraction`` is then the share of the frame where the model exceeds the threshold,
which is what the method's rule means: a 3 px offset fails everywhere, a 1 degree roll fails on
the outer half of a 450 px wide frame, a rectified pair fails nowhere, whatever the matcher did in
its occlusions.

The same model rectifies the right view before a stereo matcher runs (matchers search along
rows only): an accepted frame with a 1 px offset still gets sharp row-search labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["RigModel", "fit_rig_model", "rectify_right_view", "RIG_MIN_SUPPORT"]

#: The fit needs at least this share of the frame's pixels to be trusted; below it the rig is
#: not judged (the frame is left to the left-right rule, which such a frame fails anyway).
RIG_MIN_SUPPORT = 0.02

_MAX_SAMPLES = 20000


@dataclass(frozen=True)
class RigModel:
    """Vertical flow of the right view relative to the left, as a plane over the image.

    Attributes:
        offset_px: vertical flow at the image centre (the right view is lower by this much).
        slope_x: change of vertical flow per pixel of ``x`` (about the roll angle in radians).
        slope_y: change of vertical flow per pixel of ``y`` (a zoom or pitch difference).
        width, height: the image size the model is stated for.
        support: share of the frame's pixels the fit used (0 when not fitted).
        residual_px: robust spread (1.4826 x MAD) of the trusted pixels around the fit.
    """

    offset_px: float
    slope_x: float
    slope_y: float
    width: int
    height: int
    support: float
    residual_px: float

    @property
    def fitted(self) -> bool:
        return self.support > 0

    @property
    def roll_degrees(self) -> float:
        """The roll between the views implied by ``slope_x``."""
        return float(np.degrees(np.arctan(self.slope_x)))

    def vertical_at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The model's vertical flow at pixel coordinates ``xs``, ``ys``."""
        cx, cy = (self.width - 1) / 2.0, (self.height - 1) / 2.0
        return (self.offset_px + self.slope_x * (xs - cx) + self.slope_y * (ys - cy)).astype(np.float32)

    def field(self) -> np.ndarray:
        """The model over the whole image, HxW float32."""
        xs, ys = np.meshgrid(np.arange(self.width, dtype=np.float32), np.arange(self.height, dtype=np.float32))
        return self.vertical_at(xs, ys)

    def fraction_above(self, threshold_px: float) -> float:
        """Share of the image where ``|model| > threshold_px`` (a 128x128 grid is exact enough)."""
        if not self.fitted:
            return 0.0
        xs = np.linspace(0, self.width - 1, 128, dtype=np.float32)
        ys = np.linspace(0, self.height - 1, 128, dtype=np.float32)
        gx, gy = np.meshgrid(xs, ys)
        return float((np.abs(self.vertical_at(gx, gy)) > threshold_px).mean())

    def max_abs_px(self) -> float:
        """The largest ``|model|`` over the image (at a corner: the model is a plane)."""
        if not self.fitted:
            return 0.0
        corners = self.vertical_at(
            np.array([0, self.width - 1, 0, self.width - 1], np.float32),
            np.array([0, 0, self.height - 1, self.height - 1], np.float32),
        )
        return float(np.abs(corners).max())

    @classmethod
    def unfitted(cls, width: int, height: int) -> RigModel:
        return cls(0.0, 0.0, 0.0, int(width), int(height), 0.0, float("nan"))


def fit_rig_model(vertical_px: np.ndarray, trusted: np.ndarray, seed: int = 0) -> RigModel:
    """Fit :class:`RigModel` to the vertical flow at ``trusted`` pixels.

    Args:
        vertical_px: HxW vertical component of the left-to-right flow.
        trusted: HxW bool, pixels whose flow is trustworthy (see the module docstring).
        seed: the subsample of large frames is drawn with this seed (the fit is deterministic).

    Returns:
        The model; unfitted (all zero, ``support`` 0) when fewer than :data:`RIG_MIN_SUPPORT` of
        the pixels are trusted.
    """
    h, w = vertical_px.shape
    ok = trusted & np.isfinite(vertical_px)
    n = int(ok.sum())
    if n < max(12, RIG_MIN_SUPPORT * h * w):
        return RigModel.unfitted(w, h)
    ys, xs = np.nonzero(ok)
    if n > _MAX_SAMPLES:
        pick = np.random.default_rng(seed).choice(n, _MAX_SAMPLES, replace=False)
        ys, xs = ys[pick], xs[pick]
    v = vertical_px[ys, xs].astype(np.float64)
    a = np.stack([np.ones_like(v), xs - (w - 1) / 2.0, ys - (h - 1) / 2.0], axis=1)
    keep = np.ones(v.shape, bool)
    coef = np.zeros(3)
    spread = float("nan")
    for _ in range(3):
        if keep.sum() < 12:
            break
        coef, *_ = np.linalg.lstsq(a[keep], v[keep], rcond=None)
        res = v - a @ coef
        spread = float(1.4826 * np.median(np.abs(res[keep] - np.median(res[keep]))))
        keep = np.abs(res) <= max(3.0 * spread, 0.25)
    return RigModel(float(coef[0]), float(coef[1]), float(coef[2]), w, h, float(n / (h * w)), spread)


def rectify_right_view(right: np.ndarray, model: RigModel, min_shift_px: float = 0.1) -> np.ndarray:
    """The right view resampled so that rows match the left view's under ``model``.

    The left pixel ``(x, y)`` matches the right pixel ``(x + u, y + v(x, y))``; sampling the right
    view at ``y + v`` moves that match onto row ``y``, which is all a row-searching matcher needs.
    Horizontal positions are untouched, so disparities measured on the result are disparities of
    the original pair. Returns ``right`` itself when the model moves nothing by ``min_shift_px``.
    """
    if not model.fitted or model.max_abs_px() < min_shift_px:
        return right
    h, w = right.shape[:2]
    if (w, h) != (model.width, model.height):
        raise ValueError(f"rig model is for {model.width}x{model.height}, image is {w}x{h}")
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_y = ys + model.vertical_at(xs, ys)
    return cv2.remap(right, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
