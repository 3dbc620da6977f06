"""From a stereo pair to a disparity label: flow both ways, checks, frame rejection, sky, eyes.

The label of one frame is a :class:`DisparityResult`: the left view's disparity (the project's
convention, :func:`pipeline.flow.flow_to_disparity`: the left pixel at ``x`` matches the right
pixel at ``x - d``), a valid mask, a per-pixel uncertainty, the sky mask, the frame statistics
(:class:`FrameStats`, one Parquet column each) and, when the frame is rejected, the reason.

Checks (MIDAS_NOTES.md section 1), all in pixels of the image passed in:

* **Left-right consistency**: follow the left-to-right flow to the match, sample the
  right-to-left flow there bilinearly, and require ``|u_lr + u_rl(match)| <= lr_threshold_px``.
  Matches outside the right image fail. The discrepancy is the pixel's ``uncertainty``.
* **Vertical disparity**: ``|v| > vertical_threshold_px`` (up or down) in the forward flow or in
  the backward flow at the match marks a vertical failure: real rigs are misaligned.
* **Depth edges** (ours, on by default): flow smears disparity across occlusion boundaries, and the
  left-right check misses the smeared pixels that happen to agree both ways. Pixels whose
  disparity spans more than ``edge_threshold_px`` within a small window are marked invalid.
  On the Middlebury motorcycle pair this takes the bad-2px rate among kept pixels from 5.7% to
  4.3% for 4 points of kept pixels (see ``bench/bench_disparity.py``).
* **Frame rejection**, in this order: more than ``max_vertical_fail_fraction`` vertical failures
  -> ``"vertical_disparity"``; fewer than ``min_lr_pass_fraction`` pixels passing the left-right
  check -> ``"left_right_consistency"``; a robust horizontal range (the 95th minus the 5th
  percentile of the valid disparities, so a few outliers cannot rescue a 2D frame) below
  ``min_range_px`` at ``range_reference_width`` scaled to the image width -> ``"disparity_range"``.

Sky pixels (see :mod:`pipeline.sky`) get the frame's minimum disparity over the valid non-sky
pixels (the farthest value) and count as valid: flow is meaningless on a blank sky, but "farthest"
is the right label for it. For the same reason sky pixels count as passing the left-right check
and never as vertical failures in the frame statistics: a frame with a large clear sky is not a
bad frame.

Swapped eyes: with the eyes reversed every disparity flips sign, so what is far measures near.
Each frame records ``swap_evidence`` from two priors of filmed scenes: the sky (found by colour,
smoothness and position alone, without disparity) is the farthest thing in view, and the top of
the frame is farther than the bottom (ground planes recede upwards). :func:`detect_swapped_eyes`
pools the frames of a shot or a movie into a decision with a confidence; :func:`swap_pairs` (or
``DisparityConfig.swap_eyes``) corrects the input. (An occlusion-side cue was tried and dropped:
flow backends fill occluded pixels with either neighbour's disparity, which flips its sign.)
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from pipeline.errors import ConfigError
from pipeline.layouts import frame_bars
from pipeline.flow import DEFAULT_BACKEND, FlowBackend, FlowPair, flow_to_disparity, get_backend

__all__ = [
    "DisparityConfig",
    "DisparityResult",
    "FrameStats",
    "SwapDecision",
    "REJECT_VERTICAL",
    "REJECT_RANGE",
    "REJECT_LR",
    "REJECTION_REASONS",
    "UNCERTAINTY_MAX_PX",
    "compute_disparity",
    "compute_disparity_batch",
    "disparity_from_flow",
    "left_right_check",
    "detect_swapped_eyes",
    "decide_swapped_eyes",
    "swap_pairs",
    "resize_result",
    "RESIZE_MIN_VALID_FRACTION",
    "backend_from_config",
]

log = logging.getLogger(__name__)

REJECT_VERTICAL = "vertical_disparity"
REJECT_RANGE = "disparity_range"
REJECT_LR = "left_right_consistency"
REJECTION_REASONS = (REJECT_VERTICAL, REJECT_LR, REJECT_RANGE)

#: Uncertainty is the left-right discrepancy in pixels, capped here; pixels without a match in
#: the other view (outside it, or a matcher's hole) get the cap. Finite, so it quantizes cleanly.
UNCERTAINTY_MAX_PX = 255.0


@dataclass
class DisparityConfig:
    """Settings of the disparity stage; thresholds are in pixels of the image passed in.

    Attributes:
        flow: flow backend name (:func:`pipeline.flow.available_backends`).
        ckpt: local checkpoint file for network backends (``ptlflow:<model>``).
        device: torch device for network backends (``None``: CUDA when present).
        working_width: compute flow at this width and rescale (``None``: the input width).
        lr_threshold_px: left-right consistency threshold.
        vertical_threshold_px: |vertical flow| above this is a vertical failure.
        max_vertical_fail_fraction: reject a frame with more vertical failures than this.
        min_range_px: reject a frame whose robust disparity range is below this many pixels at
            ``range_reference_width`` (scaled linearly to the image width).
        range_reference_width: the width ``min_range_px`` is stated at (the paper's 1880 crop).
        range_percentiles: the low/high percentiles of the valid disparities defining the range.
        min_lr_pass_fraction: reject a frame where fewer pixels pass the left-right check.
        edge_threshold_px: invalidate pixels whose disparity spans more than this within
            ``edge_window`` x ``edge_window`` (``None`` turns the depth-edge check off).
        edge_window: window size of the depth-edge check (odd).
        black_band_level: columns at the left or right edge (or rows at the top or bottom) of
            either view whose pixels are all darker than this (0-255 luma) form a black band: a 3D
            film's floating window, a pillarbox, or the bars of a narrower shot in a film that
            changes aspect ratio. Left pixels inside a band, or whose match falls inside the right
            view's side band, are invalid: black matches black perfectly both ways, so the flow
            there passes the left-right check with a made-up disparity. ``None`` turns this off.
        black_band_max_fraction: the widest band looked for, as a fraction of the width.
        sky: sky masker name (:func:`pipeline.sky.available_sky_maskers`): ``heuristic``,
            ``none`` or ``model:PATH``.
        swap_eyes: the input's eyes are known to be reversed: swap them before anything else.
    """

    flow: str = DEFAULT_BACKEND
    ckpt: str | None = None
    device: str | None = None
    working_width: int | None = None
    lr_threshold_px: float = 2.0
    vertical_threshold_px: float = 2.0
    max_vertical_fail_fraction: float = 0.10
    min_range_px: float = 10.0
    range_reference_width: int = 1880
    range_percentiles: tuple[float, float] = (5.0, 95.0)
    min_lr_pass_fraction: float = 0.70
    edge_threshold_px: float | None = 3.0
    edge_window: int = 5
    black_band_level: float | None = 20.0
    black_band_max_fraction: float = 0.15
    sky: str = "heuristic"
    swap_eyes: bool = False

    def __post_init__(self) -> None:
        if self.lr_threshold_px <= 0 or self.vertical_threshold_px <= 0:
            raise ConfigError("disparity: lr_threshold_px and vertical_threshold_px must be > 0")
        lo, hi = self.range_percentiles
        if not 0 <= lo < hi <= 100:
            raise ConfigError(f"disparity.range_percentiles: need 0 <= low < high <= 100, got {self.range_percentiles}")
        if self.edge_window < 3 or self.edge_window % 2 == 0:
            raise ConfigError(f"disparity.edge_window must be an odd number >= 3, got {self.edge_window}")

    def min_range_at(self, width: int) -> float:
        """``min_range_px`` scaled to an image ``width`` pixels wide."""
        return self.min_range_px * width / self.range_reference_width


@dataclass
class FrameStats:
    """Per-frame statistics; every field is a float column of the shard schema.

    Fractions are of all pixels of the frame; sky pixels count as passing the left-right check and
    not as vertical failures. Disparity figures are over the final valid pixels (sky included, at
    its assigned value) and NaN when none is valid.
    """

    valid_fraction: float
    lr_pass_fraction: float
    vertical_fail_fraction: float
    disparity_min: float
    disparity_max: float
    disparity_p05: float
    disparity_p50: float
    disparity_p95: float
    disparity_range_px: float
    sky_fraction: float

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass
class DisparityResult:
    """The label of one stereo frame (all arrays HxW at the input resolution).

    Attributes:
        disparity: float32, the left view's disparity in pixels (convention above).
        valid: bool, passed the left-right, vertical and depth-edge checks, or is sky.
        uncertainty: float32, left-right discrepancy in pixels (0 on sky), capped at
            :data:`UNCERTAINTY_MAX_PX`.
        sky: bool sky mask.
        stats: :class:`FrameStats`.
        rejected_reason: ``None`` for a kept frame, else one of :data:`REJECTION_REASONS`.
        swap_evidence: -1 (looks normal) .. +1 (looks like reversed eyes), NaN without evidence;
            pooled over a shot by :func:`detect_swapped_eyes`.
    """

    disparity: np.ndarray
    valid: np.ndarray
    uncertainty: np.ndarray
    sky: np.ndarray
    stats: FrameStats
    rejected_reason: str | None = None
    swap_evidence: float = float("nan")

    @property
    def rejected(self) -> bool:
        return self.rejected_reason is not None


@dataclass
class SwapDecision:
    """Whether a shot's (or movie's) eyes are reversed, with the evidence.

    Attributes:
        swapped: the eyes look reversed.
        confidence: 0 (a coin toss or no evidence) to 1 (unanimous frames, enough of them).
        normal_frames, swapped_frames: frames whose evidence points each way.
        frames: frames pooled (including those without evidence).
        mean_evidence: the mean per-frame ``swap_evidence`` (-1 normal .. +1 swapped).
        reason: one line for logs and reports.
    """

    swapped: bool
    confidence: float
    normal_frames: int
    swapped_frames: int
    frames: int
    mean_evidence: float
    reason: str = field(default="")


def backend_from_config(config: DisparityConfig) -> FlowBackend:
    """The flow backend ``config`` names, at its working width."""
    return get_backend(config.flow, ckpt=config.ckpt, device=config.device, working_width=config.working_width)


def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs, ys


def left_right_check(pair: FlowPair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the backward flow at each left pixel's match.

    Returns:
        ``(back, inside, discrepancy)``: the right-to-left flow at the match (HxWx2, bilinear),
        whether the match lies inside the right image with finite flow both ways, and the
        horizontal discrepancy ``|u_lr + u_rl(match)|`` (inf where not ``inside``).
    """
    lr = pair.lr.astype(np.float32, copy=False)
    rl = pair.rl.astype(np.float32, copy=False)
    h, w = lr.shape[:2]
    xs, ys = _pixel_grid(h, w)
    finite_lr = np.isfinite(lr).all(axis=2)
    map_x = np.where(finite_lr, xs + lr[..., 0], -1e6).astype(np.float32)
    map_y = np.where(finite_lr, ys + lr[..., 1], -1e6).astype(np.float32)
    inside = finite_lr & (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    # NaN holes in rl would spread through the bilinear kernel: sample a hole mask too.
    rl_holes = ~np.isfinite(rl).all(axis=2)
    rl_filled = np.where(rl_holes[..., None], 0.0, rl).astype(np.float32)
    back = cv2.remap(rl_filled, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rl_holes.any():
        hole_at = cv2.remap(rl_holes.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside &= hole_at < 1e-3
    disc = np.full((h, w), np.inf, np.float32)
    disc[inside] = np.abs(lr[..., 0] + back[..., 0])[inside]
    return back, inside, disc


def _robust_range(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float, float]:
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, mid, hi = np.percentile(values, [percentiles[0], 50.0, percentiles[1]])
    return float(lo), float(mid), float(hi)


def _black_band_mask(left: np.ndarray, right: np.ndarray | None, disparity: np.ndarray, config: DisparityConfig) -> np.ndarray:
    """Left pixels in a black bar of the left view, or matching into one of the right view."""
    h, w = disparity.shape
    bad = np.zeros((h, w), bool)
    lb = frame_bars(left, config.black_band_level, config.black_band_max_fraction)
    bad[: lb.top] = True
    bad[h - lb.bottom :] = True  # empty slices where a bar width is 0
    bad[:, : lb.left] = True
    bad[:, w - lb.right :] = True
    if right is not None:
        rb = frame_bars(right, config.black_band_level, config.black_band_max_fraction)
        bad[: rb.top] = True  # rows: disparity is horizontal
        bad[h - rb.bottom :] = True
        if rb.left or rb.right:
            match_x = np.arange(w, dtype=np.float32)[None, :] - disparity
            bad |= (match_x < rb.left) | (match_x >= w - rb.right)
    return bad


def disparity_from_flow(
    pair: FlowPair,
    config: DisparityConfig,
    image: np.ndarray | None = None,
    sky_masker: "object | None" = None,
    right_image: np.ndarray | None = None,
) -> DisparityResult:
    """Turn one :class:`FlowPair` into a :class:`DisparityResult` (checks, sky, statistics).

    Args:
        pair: flow both ways at the image's resolution.
        config: thresholds.
        image: the left image (for the sky masker and the black-band check); ``None`` skips both.
        sky_masker: a :class:`pipeline.sky.SkyMasker` or ``None`` for no sky.
        right_image: the right image, for black bands that only the right view has.
    """
    lr = pair.lr
    h, w = lr.shape[:2]
    n = float(h * w)
    disparity = np.nan_to_num(flow_to_disparity(lr), nan=0.0, posinf=0.0, neginf=0.0)
    back, inside, disc = left_right_check(pair)
    lr_ok = disc <= config.lr_threshold_px

    v_fwd = np.abs(np.nan_to_num(lr[..., 1], nan=0.0))
    v_bwd = np.where(inside, np.abs(back[..., 1]), 0.0)
    vertical_fail = (v_fwd > config.vertical_threshold_px) | (v_bwd > config.vertical_threshold_px)

    valid = lr_ok & ~vertical_fail
    if config.edge_threshold_px is not None:
        k = np.ones((config.edge_window, config.edge_window), np.uint8)
        span = cv2.morphologyEx(disparity, cv2.MORPH_GRADIENT, k)
        valid &= span <= config.edge_threshold_px
    if config.black_band_level is not None and image is not None:
        valid &= ~_black_band_mask(image, right_image, disparity, config)

    uncertainty = np.minimum(disc, UNCERTAINTY_MAX_PX).astype(np.float32)

    sky = np.zeros((h, w), bool)
    if sky_masker is not None and image is not None:
        sky = np.asarray(sky_masker.mask(image, disparity=disparity, valid=valid), bool)
    non_sky_valid = valid & ~sky
    disparity_raw = disparity
    if sky.any():
        floor = float(disparity[non_sky_valid].min()) if non_sky_valid.any() else float(np.median(disparity[sky]))
        disparity = disparity.copy()
        disparity[sky] = floor
        valid = valid | sky
        uncertainty[sky] = 0.0

    stats = _frame_stats(
        disparity, valid, sky, config.range_percentiles,
        lr_pass_fraction=float((lr_ok | sky).sum() / n),
        vertical_fail_fraction=float((vertical_fail & ~sky).sum() / n),
    )
    kept_range = stats.disparity_range_px
    reason = None
    if stats.vertical_fail_fraction > config.max_vertical_fail_fraction:
        reason = REJECT_VERTICAL
    elif stats.lr_pass_fraction < config.min_lr_pass_fraction:
        reason = REJECT_LR
    elif not stats.disparity_range_px >= config.min_range_at(w):
        reason = REJECT_RANGE
    return DisparityResult(
        disparity=disparity.astype(np.float32, copy=False),
        valid=valid,
        uncertainty=uncertainty,
        sky=sky,
        stats=stats,
        rejected_reason=reason,
        swap_evidence=_swap_evidence(image, disparity_raw, valid & ~sky, kept_range=kept_range),
    )


def _frame_stats(
    disparity: np.ndarray,
    valid: np.ndarray,
    sky: np.ndarray,
    percentiles: tuple[float, float],
    lr_pass_fraction: float,
    vertical_fail_fraction: float,
) -> FrameStats:
    """:class:`FrameStats` of a label's arrays (the check fractions come from the caller)."""
    n = float(valid.size)
    kept = disparity[valid]
    p_lo, p50, p_hi = _robust_range(kept, percentiles)
    return FrameStats(
        valid_fraction=float(valid.sum() / n),
        lr_pass_fraction=float(lr_pass_fraction),
        vertical_fail_fraction=float(vertical_fail_fraction),
        disparity_min=float(kept.min()) if kept.size else float("nan"),
        disparity_max=float(kept.max()) if kept.size else float("nan"),
        disparity_p05=p_lo,
        disparity_p50=p50,
        disparity_p95=p_hi,
        disparity_range_px=(p_hi - p_lo) if kept.size else 0.0,
        sky_fraction=float(sky.sum() / n),
    )


#: A stored pixel is valid when at least this fraction of its source footprint was valid.
RESIZE_MIN_VALID_FRACTION = 0.5


def resize_result(
    result: DisparityResult,
    width: int,
    height: int,
    percentiles: tuple[float, float] = (5.0, 95.0),
) -> DisparityResult:
    """Downscale a label to the stored size, with disparity in pixels of the stored image.

    Labels are computed at full crop resolution (where flow is most accurate) and stored smaller
    (the paper stores 940x400 of the 1880x800 crop). Each output pixel covers a footprint of
    source pixels (``cv2.INTER_AREA`` weights, fractional at the edges):

    * ``disparity``: the valid-weighted average over the footprint (normalised convolution,
      ``sum(d * valid) / sum(valid)``), so invalid pixels (occlusions, holes) never leak into a
      stored value, times ``width / source width``: disparity is in pixels of the stored image.
    * ``valid``: at least :data:`RESIZE_MIN_VALID_FRACTION` (half) of the footprint was valid.
    * ``uncertainty``: the valid-weighted average where the output is valid, the plain area
      average elsewhere, times the same factor, capped at :data:`UNCERTAINTY_MAX_PX`.
    * ``sky``: the majority of the footprint (sky pixels are valid, so sky stays valid).
    * ``stats``: recomputed from the resized arrays (they describe what is stored), except the
      left-right and vertical check fractions, which are fractions of the labelling-resolution
      pixels and carried over; ``rejected_reason`` and ``swap_evidence`` are kept as decided at
      labelling resolution.

    Args:
        result: a label at its source resolution.
        width, height: the stored size; not larger than the source (no upscaling).
        percentiles: the robust-range percentiles (``DisparityConfig.range_percentiles``).

    Returns:
        ``result`` itself when the size is unchanged, else a new :class:`DisparityResult`.
    """
    h0, w0 = result.disparity.shape
    width, height = int(width), int(height)
    if (width, height) == (w0, h0):
        return result
    if width > w0 or height > h0 or width < 1 or height < 1:
        raise ValueError(f"resize_result downscales only: {w0}x{h0} -> {width}x{height}")
    size = (width, height)
    factor = width / float(w0)
    valid0 = result.valid.astype(np.float32)
    den = cv2.resize(valid0, size, interpolation=cv2.INTER_AREA)
    num = cv2.resize(np.where(result.valid, result.disparity, 0.0).astype(np.float32), size, interpolation=cv2.INTER_AREA)
    has = den > 1e-6
    disparity = np.where(has, num / np.maximum(den, 1e-6), 0.0) * factor
    valid = den >= RESIZE_MIN_VALID_FRACTION
    unc0 = result.uncertainty.astype(np.float32)
    unc_valid = cv2.resize(np.where(result.valid, unc0, 0.0).astype(np.float32), size, interpolation=cv2.INTER_AREA)
    unc_all = cv2.resize(unc0, size, interpolation=cv2.INTER_AREA)
    uncertainty = np.where(valid, unc_valid / np.maximum(den, 1e-6), unc_all) * factor
    uncertainty = np.minimum(uncertainty, UNCERTAINTY_MAX_PX)
    sky = cv2.resize(result.sky.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
    valid |= sky
    disparity = disparity.astype(np.float32)
    stats = _frame_stats(
        disparity, valid, sky, percentiles,
        lr_pass_fraction=result.stats.lr_pass_fraction,
        vertical_fail_fraction=result.stats.vertical_fail_fraction,
    )
    return DisparityResult(
        disparity=disparity,
        valid=valid,
        uncertainty=uncertainty.astype(np.float32),
        sky=sky,
        stats=stats,
        rejected_reason=result.rejected_reason,
        swap_evidence=result.swap_evidence,
    )


_SKY_CACHE = threading.local()


def _resolve_sky(config: DisparityConfig, sky_masker: object | None) -> object | None:
    """The given masker, or the one ``config.sky`` names (one per thread: networks are not
    thread-safe, and a model file should be read once, not per batch)."""
    if sky_masker is not None:
        return sky_masker
    from pipeline.sky import get_sky_masker

    cache = getattr(_SKY_CACHE, "maskers", None)
    if cache is None:
        cache = _SKY_CACHE.maskers = {}
    if config.sky not in cache:
        cache[config.sky] = get_sky_masker(config.sky)
    return cache[config.sky]


def swap_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exchange left and right in every pair (for footage whose eyes are reversed)."""
    return [(r, l) for l, r in pairs]


def compute_disparity_batch(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    config: DisparityConfig,
    backend: FlowBackend | None = None,
    sky_masker: object | None = None,
) -> list[DisparityResult]:
    """Labels for a batch of (left, right) RGB uint8 pairs; one flow call for the whole batch.

    Args:
        pairs: (left, right) images; sizes may differ between pairs.
        config: the disparity settings.
        backend: a flow backend; ``None`` builds the one ``config.flow`` names (a passed backend
            keeps its own working width).
        sky_masker: a sky masker; ``None`` builds the one ``config.sky`` names.
    """
    if not pairs:
        return []
    if config.swap_eyes:
        pairs = swap_pairs(pairs)
    backend = backend or backend_from_config(config)
    masker = _resolve_sky(config, sky_masker)
    flows = backend.compute([p[0] for p in pairs], [p[1] for p in pairs])
    return [disparity_from_flow(f, config, image=p[0], sky_masker=masker, right_image=p[1]) for f, p in zip(flows, pairs)]


def compute_disparity(
    left: np.ndarray,
    right: np.ndarray,
    config: DisparityConfig | None = None,
    backend: FlowBackend | None = None,
    sky_masker: object | None = None,
) -> DisparityResult:
    """The label of one stereo pair; see :func:`compute_disparity_batch`."""
    return compute_disparity_batch([(left, right)], config or DisparityConfig(), backend, sky_masker)[0]


def _swap_evidence(
    image: np.ndarray | None, disparity: np.ndarray, reference: np.ndarray, kept_range: float
) -> float:
    """Per-frame evidence of reversed eyes in [-1, 1] (see the module docstring); NaN if none.

    Args:
        image: the left view (for the colour-only sky mask), or ``None``.
        disparity: the measured disparity before the sky fill.
        reference: pixels whose disparity is trusted (valid, not sky).
        kept_range: the frame's robust disparity range, the unit of the differences.
    """
    h = disparity.shape[0]
    if reference.sum() < 0.05 * reference.size:
        return float("nan")
    scale = max(float(kept_range) if np.isfinite(kept_range) else 0.0, 1.0)
    cues: list[float] = []
    top, bottom = reference[: h // 3], reference[h - h // 3 :]
    if top.sum() > 0.01 * top.size and bottom.sum() > 0.01 * bottom.size:
        d_top = float(np.median(disparity[: h // 3][top]))
        d_bottom = float(np.median(disparity[h - h // 3 :][bottom]))
        cues.append(float(np.clip((d_top - d_bottom) / scale, -1.0, 1.0)))
    if image is not None:
        from pipeline.sky import HeuristicSkyMasker

        sky = HeuristicSkyMasker(use_disparity=False).mask(image)
        if sky.sum() > 0.02 * sky.size:
            d_sky = float(np.median(disparity[sky]))
            d_rest = float(np.median(disparity[reference & ~sky])) if (reference & ~sky).any() else d_sky
            cues.append(float(np.clip((d_sky - d_rest) / scale, -1.0, 1.0)))
    return float(np.mean(cues)) if cues else float("nan")


def detect_swapped_eyes(
    results: Sequence[DisparityResult], min_frames: int = 3, decisive_fraction: float = 0.7, dead_zone: float = 0.05
) -> SwapDecision:
    """Decide whether a shot's or movie's eyes are reversed from its frames' ``swap_evidence``.

    Rejected frames count too: reversed eyes do not stop the sky being far.

    Args:
        results: frames of one shot or movie.
        min_frames: frames with evidence needed for full confidence (confidence scales up to it).
        decisive_fraction: the share of voting frames that must point to reversed eyes.
        dead_zone: frames with ``|evidence|`` below this do not vote.

    Returns:
        :class:`SwapDecision`; without evidence, ``swapped=False`` at confidence 0.
    """
    return decide_swapped_eyes([r.swap_evidence for r in results], min_frames, decisive_fraction, dead_zone)


def decide_swapped_eyes(
    evidence: Sequence[float | None], min_frames: int = 3, decisive_fraction: float = 0.7, dead_zone: float = 0.05
) -> SwapDecision:
    """:func:`detect_swapped_eyes` over per-frame ``swap_evidence`` values (None/NaN: no evidence).

    For callers that kept only the evidence (the ingest's chunk summaries), not the results.
    """
    n_frames = len(evidence)
    ev = np.array([np.nan if e is None else e for e in evidence], np.float64)
    ev = ev[np.isfinite(ev)]
    voting = ev[np.abs(ev) >= dead_zone]
    n_swapped = int((voting > 0).sum())
    n_normal = int((voting < 0).sum())
    mean = float(ev.mean()) if ev.size else float("nan")
    if voting.size == 0:
        return SwapDecision(False, 0.0, 0, 0, n_frames, mean, "no frame with sky or depth layout to judge by")
    share = n_swapped / voting.size
    swapped = share >= decisive_fraction
    confidence = float(abs(2.0 * share - 1.0) * min(1.0, voting.size / float(min_frames)))
    reason = (
        f"{n_swapped} of {voting.size} frames look reversed (sky or top of frame nearer than the rest); "
        f"mean evidence {mean:+.2f}"
    )
    return SwapDecision(bool(swapped), confidence, n_normal, n_swapped, n_frames, mean, reason)
