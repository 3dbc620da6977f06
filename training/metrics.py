"""Zero-shot depth metrics, as the method reports them (docs/METHOD.md §4).

A relative-depth model predicts disparity (inverse depth) up to an unknown scale and shift, so
every dense metric first aligns the prediction to the ground truth by per-image least squares *in
disparity space* (:func:`align_scale_shift`), then converts the aligned disparity to depth with a
cap (:func:`disparity_to_depth`: ``depth = 1 / max(disparity, 1 / cap)``), and only then compares
depths. :func:`evaluate_depth` and :func:`evaluate_disparity` chain those steps for one image.

Every function takes one image: ``(H, W)`` numpy arrays or torch tensors (converted to float64
numpy, so the least-squares sums stay exact on large images). Errors are returned as Python
floats; an empty mask gives ``nan`` rather than an exception, so one blank ground-truth frame does
not abort a benchmark (the caller counts and reports it).

Conventions:
    * ``delta_accuracy`` returns the *error rate* the paper tabulates as "δ>1.25": the percentage
      (0-100) of valid pixels with ``max(z / z*, z* / z) > threshold``. Lower is better.
    * ``whdr`` returns a percentage (0-100) of ordinal pairs the prediction gets wrong.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = [
    "fit_scale_shift",
    "align_scale_shift",
    "disparity_to_depth",
    "depth_to_disparity",
    "abs_rel",
    "delta_accuracy",
    "rmse_disparity",
    "whdr",
    "evaluate_depth",
    "evaluate_disparity",
    "METRIC_NAMES",
]

#: every metric name the evaluation may report, with a short human label
METRIC_NAMES: Mapping[str, str] = {
    "whdr": "WHDR %",
    "abs_rel": "AbsRel",
    "delta_1.25": "δ>1.25 %",
    "rmse_disparity": "disparity RMSE",
    "rmse_unit_disparity": "aligned disparity RMSE, [0, 1] scale",
    "ordinal_error": "ordinal error %",
    "temporal_error": "temporal error, [0, 1] scale",
}

# A least-squares system is treated as singular when the prediction's variance over the mask is
# below this fraction of its mean square (a constant prediction: any scale fits equally well).
_SINGULAR_RTOL = 1e-12


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """One image as a numpy array (torch tensors are detached and moved to the CPU); ``dtype=None`` keeps it."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected one (H, W) image, got shape {arr.shape}")
    return arr if dtype is None else arr.astype(dtype, copy=False)


def _mask(mask: Any, shape: tuple[int, ...], *arrays: np.ndarray) -> np.ndarray:
    """The valid mask (all True when ``mask`` is None) with non-finite pixels removed."""
    m = np.ones(shape, bool) if mask is None else _np(mask, bool)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} does not match the image shape {shape}")
    for a in arrays:
        m = m & np.isfinite(a)
    return m


def fit_scale_shift(prediction: Any, ground_truth: Any, mask: Any = None) -> tuple[float, float]:
    """Least-squares ``(s, t) = argmin sum_i (s * d_i + t - d*_i)^2`` over valid pixels.

    Solves the 2x2 normal equations in closed form. Singular cases are guarded rather than
    divided by zero: with no valid pixel the identity ``(1, 0)`` is returned; with a constant
    prediction (any scale fits equally) the best fit with ``s = 0`` is returned, i.e. ``t`` is the
    mean ground truth, so the aligned prediction is flat at the ground truth's mean.
    """
    d = _np(prediction)
    g = _np(ground_truth)
    m = _mask(mask, d.shape, d, g)
    return _fit_vectors(d[m], g[m])


def _fit_vectors(dv: np.ndarray, gv: np.ndarray) -> tuple[float, float]:
    """:func:`fit_scale_shift` on the valid pixels only (1-D float64 vectors)."""
    n = int(dv.size)
    if n == 0:
        return 1.0, 0.0
    a00 = float(np.dot(dv, dv))
    a01 = float(dv.sum())
    b0 = float(np.dot(dv, gv))
    b1 = float(gv.sum())
    det = a00 * n - a01 * a01
    if n < 2 or det <= _SINGULAR_RTOL * a00 * n:
        return 0.0, b1 / n
    s = (n * b0 - a01 * b1) / det
    t = (a00 * b1 - a01 * b0) / det
    return float(s), float(t)


def align_scale_shift(prediction: Any, ground_truth: Any, mask: Any = None) -> np.ndarray:
    """The prediction aligned to the ground truth, ``s * prediction + t`` (see :func:`fit_scale_shift`).

    Both live in disparity space. Returns a float64 numpy array of the prediction's shape (every
    pixel, not only the masked ones).
    """
    s, t = fit_scale_shift(prediction, ground_truth, mask)
    return s * _np(prediction) + t


def disparity_to_depth(disparity: Any, cap: float | None = None) -> np.ndarray:
    """``1 / disparity``, with disparity first clamped to ``>= 1 / cap`` so depth never exceeds ``cap``.

    Without a cap, non-positive disparities give ``inf`` (they are infinitely far).
    """
    d = _np(disparity)
    if cap is not None:
        d = np.maximum(d, 1.0 / cap)
    with np.errstate(divide="ignore"):
        return np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), np.inf)


def depth_to_disparity(depth: Any, mask: Any = None) -> np.ndarray:
    """``1 / depth`` on valid pixels with positive depth; 0 elsewhere."""
    z = _np(depth)
    ok = _mask(mask, z.shape, z) & (z > 0)
    out = np.zeros_like(z)
    out[ok] = 1.0 / z[ok]
    return out


def abs_rel(prediction: Any, ground_truth: Any, mask: Any = None) -> float:
    """Mean ``|z - z*| / z*`` over valid pixels with positive ground-truth depth (depths, not disparities)."""
    z = _np(prediction)
    g = _np(ground_truth)
    m = _mask(mask, z.shape, z, g) & (g > 0)
    if not m.any():
        return math.nan
    return float(np.mean(np.abs(z[m] - g[m]) / g[m]))


def delta_accuracy(prediction: Any, ground_truth: Any, mask: Any = None, threshold: float = 1.25) -> float:
    """Percentage (0-100) of valid pixels with ``max(z / z*, z* / z) > threshold`` (depths).

    This is the paper's "δ>1.25" column: an error rate, lower is better. A non-positive predicted
    depth counts as an error.
    """
    z = _np(prediction)
    g = _np(ground_truth)
    m = _mask(mask, z.shape, z, g) & (g > 0)
    if not m.any():
        return math.nan
    zv, gv = z[m], g[m]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(zv / gv, gv / zv)
    bad = ~(ratio <= threshold) | (zv <= 0)  # nan (0/0) counts as bad
    return float(100.0 * bad.mean())


def rmse_disparity(prediction: Any, ground_truth: Any, mask: Any = None) -> float:
    """Root mean squared error over valid pixels, in the ground truth's disparity units."""
    d = _np(prediction)
    g = _np(ground_truth)
    m = _mask(mask, d.shape, d, g)
    if not m.any():
        return math.nan
    return float(np.sqrt(np.mean((d[m] - g[m]) ** 2)))


def whdr(prediction: Any, point_pairs: Any, prediction_is_depth: bool = False) -> float:
    """Weighted human disagreement rate, in percent, on ordinal point pairs.

    Args:
        prediction: one (H, W) map; disparity (larger = nearer) unless ``prediction_is_depth``.
        point_pairs: rows ``(yA, xA, yB, xB, relation)`` with 0-based integer pixel coordinates and
            ``relation`` the *depth* order of A relative to B as DIW annotates it: ``'<'`` (or -1)
            means A is closer than B (depth A < depth B), ``'>'`` (or +1) means A is farther.
            Pairs marked ``'='`` (or 0) are ignored; DIW's test set has none.
        prediction_is_depth: set when ``prediction`` holds depth instead of disparity.

    A pair counts as a disagreement when the predicted order differs from the human one; a tie in
    the prediction counts as a disagreement too (the model failed to order the points). All pairs
    weigh 1, as in DIW.
    """
    p = _np(prediction)
    rows = list(point_pairs)
    wrong = 0
    counted = 0
    h, w = p.shape
    for row in rows:
        ya, xa, yb, xb, rel = row[:5]
        sign = _relation_sign(rel)
        if sign == 0:
            continue
        ya, xa, yb, xb = int(ya), int(xa), int(yb), int(xb)
        if not (0 <= ya < h and 0 <= yb < h and 0 <= xa < w and 0 <= xb < w):
            raise ValueError(f"point pair {row!r} lies outside the {w}x{h} prediction")
        va, vb = p[ya, xa], p[yb, xb]
        # depth order predicted: +1 when A is farther than B
        if prediction_is_depth:
            pred = np.sign(va - vb)
        else:
            pred = np.sign(vb - va)
        counted += 1
        wrong += int(pred != sign)
    if counted == 0:
        return math.nan
    return 100.0 * wrong / counted


def _relation_sign(rel: Any) -> int:
    if isinstance(rel, str):
        rel = rel.strip()
        if rel == ">":
            return 1
        if rel == "<":
            return -1
        if rel == "=":
            return 0
        raise ValueError(f"unknown ordinal relation {rel!r}; expected '<', '>' or '='")
    return int(np.sign(float(rel)))


def evaluate_depth(
    prediction_disparity: Any,
    ground_truth_depth: Any,
    mask: Any = None,
    depth_cap: float | None = None,
    threshold: float = 1.25,
) -> dict[str, float]:
    """All dense metrics of one image against metric (or up-to-scale) ground-truth depth.

    The ground truth is inverted to disparity on valid pixels, the prediction aligned to it by
    least squares, converted to depth and capped at ``depth_cap``; then AbsRel, δ>threshold (both
    on depths) and the aligned disparity RMSE are measured.
    """
    # Work on the valid pixels only, gathered once: an ETH3D image has 24 M pixels, and the
    # full-size intermediates of the composed public functions cost more than the arithmetic.
    d = _np(prediction_disparity, None)
    g = _np(ground_truth_depth, None)
    m = _mask(mask, g.shape, g, d) & (g > 0)
    if d.shape != g.shape:
        raise ValueError(f"prediction shape {d.shape} differs from the ground truth's {g.shape}")
    if not m.any():
        return {"abs_rel": math.nan, "delta_1.25": math.nan, "rmse_disparity": math.nan}
    gv = g[m].astype(np.float64)
    dv = d[m].astype(np.float64)
    gt_disp = 1.0 / gv
    s, t = _fit_vectors(dv, gt_disp)
    aligned = s * dv + t
    clamped = np.maximum(aligned, 1.0 / depth_cap) if depth_cap is not None else aligned
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(clamped > 0, 1.0 / np.where(clamped > 0, clamped, 1.0), np.inf)
        ratio = np.maximum(z / gv, gv / z)
    return {
        "abs_rel": float(np.mean(np.abs(z - gv) / gv)),
        "delta_1.25": float(100.0 * np.mean(~(ratio <= threshold))),
        "rmse_disparity": float(np.sqrt(np.mean((aligned - gt_disp) ** 2))),
    }


def evaluate_disparity(prediction_disparity: Any, ground_truth_disparity: Any, mask: Any = None) -> dict[str, float]:
    """Metrics against disparity known only up to scale and shift (the 3D-movie test split).

    The aligned disparity RMSE is the method's metric for relative-depth validation sets; the table
    reports it as ``rmse_unit_disparity``, on the [0, 1] scale training uses: the ground truth's
    valid range maps to [0, 1] (``rmse_disparity / (max - min)`` over valid pixels), so the number
    does not depend on the stored image width or the movie's depth budget. ``rmse_disparity`` is
    the same in the ground truth's own units (pixels of the stored image for movie shards). Depth
    metrics do not apply (movie disparity is shifted by the convergence, so ``1 / d`` is no depth),
    but ordinal agreement does: ``ordinal_error`` is the percentage of valid pixel pairs
    (a fixed pseudo-random sample) whose order the aligned prediction gets wrong, among pairs
    whose ground-truth disparities differ by more than 1% of the ground truth's range.
    """
    d = _np(prediction_disparity)
    g = _np(ground_truth_disparity)
    m = _mask(mask, g.shape, g, d)
    aligned = align_scale_shift(d, g, m)
    rmse_px = rmse_disparity(aligned, g, m)
    span = float(g[m].max() - g[m].min()) if m.any() else math.nan
    return {
        "rmse_disparity": rmse_px,
        "rmse_unit_disparity": rmse_px / span if span > 0 else math.nan,
        "ordinal_error": _ordinal_error(aligned, g, m),
    }


def _ordinal_error(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, n_pairs: int = 5000) -> float:
    idx = np.flatnonzero(mask)
    if idx.size < 2:
        return math.nan
    rng = np.random.default_rng(0)  # fixed: the same pairs for every checkpoint
    a = rng.choice(idx, n_pairs)
    b = rng.choice(idx, n_pairs)
    gf, pf = gt.ravel(), pred.ravel()
    diff = gf[a] - gf[b]
    span = float(gf[idx].max() - gf[idx].min())
    keep = np.abs(diff) > 0.01 * span
    if not keep.any():
        return math.nan
    agree = np.sign(pf[a][keep] - pf[b][keep]) == np.sign(diff[keep])
    return float(100.0 * (1.0 - agree.mean()))
