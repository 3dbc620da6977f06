"""From a stereo pair to a disparity label: flow both ways, checks, frame rejection, sky, eyes.

The label of one frame is a :class:`DisparityResult`: the left view's disparity (the project's
convention, :func:`pipeline.flow.flow_to_disparity`: the left pixel at ``x`` matches the right
pixel at ``x - d``), a valid mask, a per-pixel uncertainty, the sky mask, the frame statistics
(:class:`FrameStats`, one Parquet column each) and, when the frame is rejected, the reason.

Two independent opinions (the default, ``DisparityConfig.matcher="sgbm"``). Optical flow
(``dis-medium`` on the CPU, a ptlflow network on a GPU) measures both components of the motion; a
semi-global stereo matcher searches along rows over a per-frame range that covers the scene,
negatives included (:mod:`pipeline.flow.sgbm`). Flow smears depth edges and drifts on repetitive
texture; the matcher is sharp at edges but blind to vertical misalignment and has holes. Their
errors are largely independent, so the label is the matcher's disparity where it passes its own
checks and the flow, when it is sure, does not contradict it. Measured over eight real rectified
pairs with ground truth (``bench/bench_labels.py``; numbers in ``bench/RESULTS.md``), this keeps
more pixels with fewer errors than either alone.

Checks, all in pixels of the image passed in:

* **Left-right consistency**: follow the left-to-right match, sample the right-to-left one there
  bilinearly, and require ``|u_lr + u_rl(match)| <= lr_threshold_px`` (1 px: at 2 px a good share
  of the surviving errors on real pairs passed). Matches outside the right image fail.
* **The rig** (:mod:`pipeline.rig`): a plane fitted to the flow's vertical component where the flow
  is trustworthy, so the matcher's noise in occlusions cannot reject a rectified frame. The frame's
  ``vertical_fail_fraction`` is the share of the frame where that model exceeds
  ``vertical_threshold_px``; the model also rectifies the right view before the matcher runs.
  A pixel whose own vertical flow departs from the model by more than the threshold is no flow
  opinion (with the flow alone: no label).
* **Consensus**: ``"veto"`` (default) drops a matched pixel where the flow passes its left-right
  check and disagrees by more than ``consensus_threshold_px``; ``"agree"`` (the ``precise`` preset of
  :data:`LABEL_PRESETS`) keeps only pixels where both agree. Where both agree within 1 px the label
  is their mean (the flow's continuous estimate corrects the matcher's pull towards whole pixels).
* **Depth edges**: pixels whose disparity spans more than ``edge_threshold_px`` within a small
  window are invalid: matchers fatten the foreground across occlusion boundaries.
* **Occlusion margin**: pixels within ``occlusion_margin_px`` of a pixel that failed the left-right
  check are invalid, for the same reason (on the real pairs this is where most passing errors sit).
* **Black bands** of either view (floating windows, bars of narrower shots) are invalid.
* **Frame rejection**, in this order: the rig model beyond the threshold over more than
  ``max_vertical_fail_fraction`` of the frame -> ``"vertical_disparity"``; fewer than
  ``min_lr_pass_fraction`` pixels passing a left-right check (matcher's or flow's) ->
  ``"left_right_consistency"``; a robust horizontal range (95th minus 5th percentile of the valid
  disparities) below ``min_range_px`` at ``range_reference_width`` scaled to the image width ->
  ``"disparity_range"``.

**Uncertainty** is an error scale in pixels that ranks labels by how likely they are wrong: the
left-right discrepancy and the flow-matcher disagreement, plus terms that grow near depth edges and
occlusions (:func:`_uncertainty`). On the real pairs the more certain half of the kept labels has a
small fraction of the errors of all kept labels; trainers can drop or down-weight labels by it.

Sky pixels (see :mod:`pipeline.sky`) get the frame's minimum disparity over the valid non-sky
pixels (the farthest value) and count as valid: flow is meaningless on a blank sky, but "farthest"
is the right label for it. Sky is at infinity, so a "sky" pixel the matcher measured clearly nearer
than the far end of the frame is not sky (a painted sky on a slanted canvas in a room, a branch the
masker took in). Sky pixels count as passing the left-right check.

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
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from pipeline.errors import ConfigError
from pipeline.flow import DEFAULT_BACKEND, FlowBackend, FlowPair, backend_options, flow_to_disparity, get_backend
from pipeline.flow.base import to_gray
from pipeline.layouts import frame_bars
from pipeline.rig import RigModel, fit_rig_model, rectify_right_view
from pipeline.swap import SwapDecision, decide_swapped_eyes, detect_swapped_eyes  # noqa: F401  (public here too)

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
    "Labeller",
    "disparity_from_flow",
    "left_right_check",
    "detect_swapped_eyes",
    "decide_swapped_eyes",
    "swap_pairs",
    "resize_result",
    "RESIZE_MIN_VALID_FRACTION",
    "backend_from_config",
    "matcher_from_config",
    "LABEL_PRESETS",
    "CONSENSUS_MODES",
    "preset_config",
]

log = logging.getLogger(__name__)

REJECT_VERTICAL = "vertical_disparity"
REJECT_RANGE = "disparity_range"
REJECT_LR = "left_right_consistency"
REJECTION_REASONS = (REJECT_VERTICAL, REJECT_LR, REJECT_RANGE)

#: Uncertainty is the left-right discrepancy in pixels, capped here; pixels without a match in
#: the other view (outside it, or a matcher's hole) get the cap. Finite, so it quantizes cleanly.
UNCERTAINTY_MAX_PX = 255.0

#: Flow and matcher within this distance: the label takes the blend below (sub-pixel accuracy).
_SUBPIXEL_AGREEMENT_PX = 1.0
_SUBPIXEL_FLOW_WEIGHT = 0.5

#: Values of :attr:`DisparityConfig.consensus`.
CONSENSUS_MODES = ("veto", "agree")

#: Mean absolute gray gradient (0-255 levels, 5x5) below which flow is interpolated, not measured.
_MIN_TEXTURE = 6.0


@dataclass
class DisparityConfig:
    """Settings of the disparity stage; thresholds are in pixels of the image passed in.

    Attributes:
        flow: flow backend name (:func:`pipeline.flow.available_backends`): measures both
            components of the motion, so it judges the rig and gives a second opinion.
        matcher: a stereo matcher from the same registry run beside the flow on the rectified
            pair (``sgbm``), whose horizontal disparity becomes the label where the checks pass;
            ``None`` labels with the flow alone. Ignored when ``flow`` names the same backend.
        consensus: how the flow's opinion filters the matcher's: ``"veto"`` drops a matched
            pixel where the flow is confident (passes its own left-right and vertical checks)
            and disagrees by more than ``consensus_threshold_px``; ``"agree"`` (the high-precision
            preset) keeps only pixels where the flow is confident and agrees within it.
        consensus_threshold_px: the largest disagreement between flow and matcher (see above).
        rectify: resample the right view by the fitted rig model (:mod:`pipeline.rig`) before the
            matcher runs, so a small vertical misalignment does not break its row search.
        flow_options, matcher_options: the user's options of the flow backend and of the
            matcher, checked against the backend's options dataclass
            (:class:`pipeline.flow.opencv.DisOptions`, :class:`pipeline.flow.sgbm.SgbmOptions`,
            :class:`pipeline.flow.ptlflow_backend.PtlflowOptions`); keys left out keep the named
            backend's values. ``--set disparity.matcher_options.block_size=7``.
        ckpt: local checkpoint file for network backends (``ptlflow:<model>``).
        device: torch device for network backends (``None``: CUDA when present).
        working_width: compute flow at this width and rescale (``None``: the input width).
        lr_threshold_px: left-right consistency threshold.
        vertical_threshold_px: a pixel whose vertical flow departs from the rig model by more
            than this is a vertical failure (invalid); the rig itself fails where its model
            exceeds this (see :mod:`pipeline.rig`).
        max_vertical_fail_fraction: reject a frame when the rig model exceeds
            ``vertical_threshold_px`` over more than this share of the frame.
        min_range_px: reject a frame whose robust disparity range is below this many pixels at
            ``range_reference_width`` (scaled linearly to the image width).
        range_reference_width: the width ``min_range_px`` is stated at (the paper's 1880 crop).
        range_percentiles: the low/high percentiles of the valid disparities defining the range.
        min_lr_pass_fraction: reject a frame where fewer pixels pass the left-right check.
        edge_threshold_px: invalidate pixels whose disparity spans more than this within
            ``edge_window`` x ``edge_window`` (``None`` turns the depth-edge check off).
        edge_window: window size of the depth-edge check (odd).
        occlusion_margin_px: invalidate pixels within this distance of a pixel that failed the
            left-right check (occlusions and holes: matchers fatten the foreground into them, so
            the labels beside them are the least reliable of those that pass); 0 turns it off.
        black_band_level: columns at the left or right edge (or rows at the top or bottom) of
            either view whose pixels are all darker than this (0-255 luma) form a black band: a 3D
            film's floating window, a pillarbox, or the bars of a narrower shot in a film that
            changes aspect ratio. Left pixels inside a band, or whose match falls inside the right
            view's side band, are invalid: black matches black perfectly both ways, so the flow
            there passes the left-right check with a made-up disparity. ``None`` turns this off.
        black_band_max_fraction: the widest band looked for, as a fraction of the width.
        photometric_tolerance: when the right view's tones depart from the left's by more than
            this many grey levels (mean shift of the histogram-matching curve, worst channel), the
            right view is mapped to the left's mean and contrast per channel before flow and
            matcher run (a gain, gamma or offset between the eyes, as beam-splitter rigs and
            grading leave). Two real views of one scene differ by up to about 6 levels (the shared
            pairs: 0.7-5.6), so they are left alone. ``None`` turns it off.
        sky: sky masker name (:func:`pipeline.sky.available_sky_maskers`): ``heuristic``,
            ``none`` or ``model:PATH``.
        swap_eyes: the input's eyes are known to be reversed: swap them before anything else.
    """

    flow: str = DEFAULT_BACKEND
    matcher: str | None = "sgbm"
    consensus: str = "veto"
    consensus_threshold_px: float = 2.0
    rectify: bool = True
    flow_options: dict[str, Any] = field(default_factory=dict)
    matcher_options: dict[str, Any] = field(default_factory=dict)
    ckpt: str | None = None
    device: str | None = None
    working_width: int | None = None
    lr_threshold_px: float = 1.0
    vertical_threshold_px: float = 2.0
    max_vertical_fail_fraction: float = 0.10
    min_range_px: float = 10.0
    range_reference_width: int = 1880
    range_percentiles: tuple[float, float] = (5.0, 95.0)
    min_lr_pass_fraction: float = 0.70
    edge_threshold_px: float | None = 3.0
    edge_window: int = 5
    occlusion_margin_px: float = 1.5
    black_band_level: float | None = 20.0
    black_band_max_fraction: float = 0.15
    photometric_tolerance: float | None = 8.0
    sky: str = "heuristic"
    swap_eyes: bool = False

    def __post_init__(self) -> None:
        if self.lr_threshold_px <= 0 or self.vertical_threshold_px <= 0:
            raise ConfigError("disparity: lr_threshold_px and vertical_threshold_px must be > 0")
        lo, hi = self.range_percentiles
        if not 0 <= lo < hi <= 100:
            raise ConfigError(f"disparity.range_percentiles: need 0 <= low < high <= 100, got {self.range_percentiles}")
        if self.consensus not in CONSENSUS_MODES:
            raise ConfigError(
                f"disparity.consensus must be one of {', '.join(CONSENSUS_MODES)}, got {self.consensus!r}"
            )
        if self.consensus_threshold_px <= 0:
            raise ConfigError(f"disparity.consensus_threshold_px must be > 0, got {self.consensus_threshold_px}")
        if self.working_width is not None and self.working_width < 16:
            raise ConfigError(f"disparity.working_width must be at least 16 pixels, got {self.working_width}")
        if self.edge_window < 3 or self.edge_window % 2 == 0:
            raise ConfigError(f"disparity.edge_window must be an odd number >= 3, got {self.edge_window}")
        backend_options(self.flow, self.flow_options, "disparity.flow_options")
        if self.matcher and self.matcher != self.flow:
            backend_options(self.matcher, self.matcher_options, "disparity.matcher_options")

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
        rig: the vertical misalignment fitted to this frame (:mod:`pipeline.rig`); not stored.
    """

    disparity: np.ndarray
    valid: np.ndarray
    uncertainty: np.ndarray
    sky: np.ndarray
    stats: FrameStats
    rejected_reason: str | None = None
    swap_evidence: float = float("nan")
    rig: RigModel | None = None

    @property
    def rejected(self) -> bool:
        return self.rejected_reason is not None


def backend_from_config(config: DisparityConfig) -> FlowBackend:
    """The flow backend ``config`` names, at its working width."""
    return get_backend(
        config.flow,
        ckpt=config.ckpt,
        device=config.device,
        options=config.flow_options,
        working_width=config.working_width,
    )


def matcher_from_config(config: DisparityConfig) -> FlowBackend | None:
    """The stereo matcher ``config`` names at its working width, or ``None`` (flow alone)."""
    if not config.matcher or config.matcher == config.flow:
        return None
    return get_backend(config.matcher, options=config.matcher_options, working_width=config.working_width)


#: Named operating points of the labeller (``depthmine disparity --preset``; for ingest the same
#: values as ``--set disparity.KEY=VALUE``). Measured on the label benchmark (bench/RESULTS.md).
LABEL_PRESETS: dict[str, dict[str, object]] = {
    # flow (dis-medium) + semi-global matcher, the flow vetoes where it is sure and disagrees
    "balanced": {},
    # keep only pixels where flow and matcher agree within 1 px: fewer labels, about half the errors
    "precise": {"consensus": "agree", "consensus_threshold_px": 1.0},
    # the flow alone, as before the consensus (2 px left-right check, no occlusion margin): faster,
    # about 2.5x the errors; for footage a row search cannot handle, or a GPU network on its own
    "flow-only": {"flow": "dis-fine", "matcher": None, "lr_threshold_px": 2.0, "occlusion_margin_px": 0.0},
}


def preset_config(name: str, **overrides: object) -> DisparityConfig:
    """A :class:`DisparityConfig` of the named :data:`LABEL_PRESETS` entry, then ``overrides``."""
    if name not in LABEL_PRESETS:
        raise ConfigError(f"unknown label preset {name!r}; valid: {', '.join(LABEL_PRESETS)}")
    return DisparityConfig(**{**LABEL_PRESETS[name], **overrides})


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
        hole_at = cv2.remap(
            rl_holes.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        inside &= hole_at < 1e-3
    disc = np.full((h, w), np.inf, np.float32)
    disc[inside] = np.abs(lr[..., 0] + back[..., 0])[inside]
    return back, inside, disc


def _robust_range(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float, float]:
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, mid, hi = np.percentile(values, [percentiles[0], 50.0, percentiles[1]])
    return float(lo), float(mid), float(hi)


def _black_band_mask(
    left: np.ndarray, right: np.ndarray | None, disparity: np.ndarray, config: DisparityConfig
) -> np.ndarray:
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


def _span(disparity: np.ndarray, window: int) -> np.ndarray:
    """Max minus min of ``disparity`` over a ``window`` x ``window`` neighbourhood."""
    return cv2.morphologyEx(
        disparity.astype(np.float32, copy=False), cv2.MORPH_GRADIENT, np.ones((window, window), np.uint8)
    )


def _textured(image: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Pixels with enough image texture for flow to be measured rather than interpolated."""
    if image is None:
        return np.ones(shape, bool)
    gray = to_gray(image).astype(np.float32)
    grad = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    return cv2.blur(grad, (5, 5)) >= _MIN_TEXTURE


#: Sky is the farthest thing in view: a "sky" pixel that the matcher measured nearer than the far
#: end of the rest of the frame (its 1st percentile) by more than this is not sky (a branch, a
#: ridge the masker's region took in, a painted sky on a canvas in a room).
_SKY_NEAR_TOLERANCE_PX = 1.0
#: What is left of a sky region after that must still cover this share of the frame.
_SKY_MIN_REGION_FRACTION = 0.005


def _refine_sky(sky: np.ndarray, matched: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """``sky`` less the pixels measured clearly nearer than the far end, and less the crumbs."""
    reference = matched & ~sky
    if reference.sum() < 16:
        return sky
    far_end = float(np.percentile(disparity[reference], 1.0))
    near = matched & sky & (disparity > far_end + _SKY_NEAR_TOLERANCE_PX)
    if not near.any():
        return sky
    refined = sky & ~near
    count, labels, stats, _ = cv2.connectedComponentsWithStats(refined.astype(np.uint8), connectivity=8)
    big = stats[:, cv2.CC_STAT_AREA] >= _SKY_MIN_REGION_FRACTION * sky.size
    big[0] = False
    return big[labels]


#: The uncertainty is rounded to 1/4 px: ranking is unchanged (bench_labels' sparsification table),
#: and stored labels and labels-only releases shrink (the finer fractions are noise to a codec).
_UNCERTAINTY_STEPS = 4.0


def _uncertainty(
    discrepancy: np.ndarray, disagreement: np.ndarray, disparity: np.ndarray, unmatched_dist: np.ndarray
) -> np.ndarray:
    """Per-pixel error scale in pixels (see :data:`UNCERTAINTY_MAX_PX` and the module docstring).

    The left-right discrepancy and the disagreement between flow and matcher measure an error
    directly; but most wrong labels that pass both sit next to depth edges and occlusions, where
    the matchers fatten the foreground. So the scale also grows with the disparity span around
    the pixel (9x9) and near pixels that found no consistent match (occlusions), whose distance
    ``r`` in pixels adds ``2 / (1 + r)``. On the eight real pairs of the label benchmark, the half
    of the kept pixels with the lowest values holds a small fraction of the bad ones (see
    ``bench/RESULTS.md``).
    """
    unc = np.maximum(np.minimum(discrepancy, UNCERTAINTY_MAX_PX), disagreement)
    unc = unc + 0.25 * _span(disparity, 9) + 2.0 / (1.0 + unmatched_dist)
    # a scale, not a measurement: quarter pixels rank as well and compress to a fraction
    return (np.round(np.minimum(unc, UNCERTAINTY_MAX_PX) * _UNCERTAINTY_STEPS) / _UNCERTAINTY_STEPS).astype(np.float32)


def disparity_from_flow(
    pair: FlowPair,
    config: DisparityConfig,
    image: np.ndarray | None = None,
    sky_masker: object | None = None,
    right_image: np.ndarray | None = None,
    matcher: FlowBackend | None = None,
) -> DisparityResult:
    """Turn one :class:`FlowPair` into a :class:`DisparityResult` (checks, rig, consensus, sky).

    Args:
        pair: flow both ways at the image's resolution.
        config: thresholds.
        image: the left image (for the sky masker, the texture test and the black-band check);
            ``None`` skips those.
        sky_masker: a :class:`pipeline.sky.SkyMasker` or ``None`` for no sky.
        right_image: the right image, for the matcher and for black bands only it has.
        matcher: a stereo matcher (:func:`matcher_from_config`) to run on the rectified pair;
            ``None`` (or no ``right_image``) labels with the flow alone.
    """
    lr = pair.lr
    h, w = lr.shape[:2]
    n = float(h * w)
    flow_disparity = np.nan_to_num(flow_to_disparity(lr), nan=0.0, posinf=0.0, neginf=0.0)
    back, inside, disc = left_right_check(pair)
    flow_lr_ok = disc <= config.lr_threshold_px

    # The rig: a plane fitted to the vertical flow where the flow is trustworthy (pipeline.rig).
    v_fwd = np.nan_to_num(lr[..., 1], nan=0.0).astype(np.float32)
    v_bwd = np.where(inside, -back[..., 1], v_fwd).astype(np.float32)  # the same motion, seen from the right
    flow_span = _span(flow_disparity, config.edge_window)
    edge_ok = flow_span <= (config.edge_threshold_px or np.inf)
    trusted = flow_lr_ok & (np.abs(v_fwd - v_bwd) <= config.lr_threshold_px) & edge_ok & _textured(image, (h, w))
    rig = fit_rig_model(v_fwd, trusted)
    rig_v = rig.field() if rig.fitted else np.zeros((h, w), np.float32)
    vertical_fail = (np.abs(v_fwd - rig_v) > config.vertical_threshold_px) | (
        np.abs(v_bwd - rig_v) > config.vertical_threshold_px
    )
    flow_ok = flow_lr_ok & ~vertical_fail

    if matcher is not None and right_image is not None and image is not None:
        right_for_matcher = rectify_right_view(right_image, rig) if config.rectify else right_image
        matched_pair = matcher.compute([image], [right_for_matcher])[0]
        _, _, label_disc = left_right_check(matched_pair)
        matched_d = flow_to_disparity(matched_pair.lr)
        label_lr_ok = label_disc <= config.lr_threshold_px
        has_match = np.isfinite(matched_d)
        disagreement = np.where(has_match, np.abs(np.where(has_match, matched_d, 0.0) - flow_disparity), np.inf)
        # a vertical failure of the flow at a pixel does not make the row search wrong there,
        # but a flow that is consistent both ways and disagrees is a real second opinion
        if config.consensus == "agree":
            valid = label_lr_ok & flow_ok & (disagreement <= config.consensus_threshold_px)
        else:
            valid = label_lr_ok & ~(flow_lr_ok & (disagreement > config.consensus_threshold_px))
        disparity = np.where(has_match, matched_d, flow_disparity).astype(np.float32)
        # Where the flow is sure and agrees within a pixel, its continuous estimate is the better
        # sub-pixel value (the matcher's parabola fit locks towards whole pixels); elsewhere the
        # matcher's sharper edges win.
        close = flow_lr_ok & has_match & (np.abs(disparity - flow_disparity) <= _SUBPIXEL_AGREEMENT_PX)
        disparity = np.where(
            close, _SUBPIXEL_FLOW_WEIGHT * flow_disparity + (1 - _SUBPIXEL_FLOW_WEIGHT) * disparity, disparity
        ).astype(np.float32)
        # where the flow is not confident its disagreement says little: count the threshold
        disagreement = np.where(flow_ok, np.minimum(disagreement, UNCERTAINTY_MAX_PX), config.consensus_threshold_px)
        measured = valid.copy()  # row-search matches that passed: they show a region's depth
    else:
        label_disc, label_lr_ok = disc, flow_lr_ok
        valid = flow_ok
        disparity = flow_disparity
        disagreement = np.zeros((h, w), np.float32)
        measured = np.zeros((h, w), bool)  # flow alone invents smooth matches on a blank sky
    if config.edge_threshold_px is not None:
        # with the flow alone the label is the flow's disparity: its span is already known
        span = flow_span if disparity is flow_disparity else _span(disparity, config.edge_window)
        valid &= span <= config.edge_threshold_px
    unmatched_dist = cv2.distanceTransform(label_lr_ok.astype(np.uint8), cv2.DIST_L2, 3)
    if config.occlusion_margin_px:
        valid &= unmatched_dist > config.occlusion_margin_px
    if config.black_band_level is not None and image is not None:
        valid &= ~_black_band_mask(image, right_image, disparity, config)

    uncertainty = _uncertainty(label_disc, disagreement, disparity, unmatched_dist)

    sky = np.zeros((h, w), bool)
    if sky_masker is not None and image is not None:
        sky = np.asarray(sky_masker.mask(image, disparity=disparity, valid=valid), bool)
        if measured.any() and sky.any():
            sky = _refine_sky(sky, measured & valid, disparity)
    disparity_raw = disparity
    if sky.any():
        reference = valid & ~sky
        floor = float(disparity[reference].min()) if reference.any() else float(np.median(disparity[sky]))
        disparity = disparity.copy()
        disparity[sky] = floor
        valid = valid | sky
        uncertainty[sky] = 0.0

    stats = _frame_stats(
        disparity,
        valid,
        sky,
        config.range_percentiles,
        lr_pass_fraction=float((label_lr_ok | flow_lr_ok | sky).sum() / n),
        vertical_fail_fraction=rig.fraction_above(config.vertical_threshold_px),
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
        rig=rig,
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
    num = cv2.resize(
        np.where(result.valid, result.disparity, 0.0).astype(np.float32), size, interpolation=cv2.INTER_AREA
    )
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
        disparity,
        valid,
        sky,
        percentiles,
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


def tone_difference(left: np.ndarray, right: np.ndarray) -> float:
    """How far ``right``'s tones are from ``left``'s, in grey levels (worst channel).

    The mean distance of the histogram-matching curve from the identity, weighted by how often
    each level occurs in ``right``: 0 for identical histograms, ~15 for a 15% gain.
    """
    worst = 0.0
    levels = np.arange(256, dtype=np.float64)
    for c in range(right.shape[2] if right.ndim == 3 else 1):
        r = (right[..., c] if right.ndim == 3 else right).ravel()
        l = (left[..., c] if left.ndim == 3 else left).ravel()
        r_hist = np.bincount(r, minlength=256).astype(np.float64)
        r_cdf = np.cumsum(r_hist) / r.size
        l_cdf = np.cumsum(np.bincount(l, minlength=256)) / l.size
        curve = np.interp(r_cdf, l_cdf, levels)
        worst = max(worst, float((np.abs(curve - levels) * r_hist).sum() / r.size))
    return worst


def match_tones(right: np.ndarray, left: np.ndarray) -> np.ndarray:
    """``right`` mapped to ``left``'s mean and standard deviation per channel (an affine map)."""
    r = right.astype(np.float32)
    l = left.astype(np.float32)
    axes = (0, 1) if r.ndim == 3 else None
    out = (r - r.mean(axis=axes)) / (r.std(axis=axes) + 1e-6) * l.std(axis=axes) + l.mean(axis=axes)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _balanced_tones(pairs, tolerance: float | None):
    """The pairs with each right view tone-matched to its left where they differ (see config)."""
    if tolerance is None:
        return list(pairs)
    return [(l, match_tones(r, l)) if tone_difference(l, r) > tolerance else (l, r) for l, r in pairs]


def swap_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exchange left and right in every pair (for footage whose eyes are reversed)."""
    return [(r, l) for l, r in pairs]


class Labeller:
    """Labels stereo pairs with one :class:`DisparityConfig`; owns the engines that takes.

    It holds the flow backend, the stereo matcher and the sky masker the configuration names, built
    once, so a caller that labels many batches (an ingest worker, the label benchmark) loads a network
    or a sky model once instead of per batch. The engines are not thread-safe (OpenCV engines, torch
    modules): hold one labeller per thread; there is no cache behind it.

    Args:
        config: the disparity settings (default: :class:`DisparityConfig`).
        backend: a flow backend to use instead of the one ``config.flow`` names (it keeps its own
            working width).
        matcher: a stereo matcher instead of the one ``config.matcher`` names (if any).
        sky_masker: a sky masker instead of the one ``config.sky`` names.
    """

    def __init__(
        self,
        config: DisparityConfig | None = None,
        *,
        backend: FlowBackend | None = None,
        matcher: FlowBackend | None = None,
        sky_masker: object | None = None,
    ):
        from pipeline.sky import get_sky_masker

        self.config = config or DisparityConfig()
        self.backend = backend or backend_from_config(self.config)
        self.matcher = matcher or matcher_from_config(self.config)
        self.sky_masker = sky_masker if sky_masker is not None else get_sky_masker(self.config.sky)

    def label(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> list[DisparityResult]:
        """Labels for the pairs ``(lefts[i], rights[i])`` (RGB uint8; sizes may differ between
        pairs); one flow call for the whole batch."""
        if len(lefts) != len(rights):
            raise ValueError(f"{len(lefts)} left views for {len(rights)} right views")
        return self.label_pairs(list(zip(lefts, rights)))

    def label_pairs(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[DisparityResult]:
        """Labels for a batch of ``(left, right)`` pairs; see :meth:`label`."""
        if not pairs:
            return []
        config = self.config
        if config.swap_eyes:
            pairs = swap_pairs(pairs)
        matched = _balanced_tones(pairs, config.photometric_tolerance)
        flows = self.backend.compute([p[0] for p in matched], [p[1] for p in matched])
        return [
            disparity_from_flow(
                f, config, image=p[0], sky_masker=self.sky_masker, right_image=m[1], matcher=self.matcher
            )
            for f, p, m in zip(flows, pairs, matched)
        ]


def compute_disparity_batch(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    config: DisparityConfig,
    backend: FlowBackend | None = None,
    sky_masker: object | None = None,
    matcher: FlowBackend | None = None,
) -> list[DisparityResult]:
    """Labels for a batch of (left, right) RGB uint8 pairs; one flow call for the whole batch.

    A one-off :class:`Labeller`: callers that label many batches should hold one (per thread) instead,
    so the engines they do not pass are built once.

    Args:
        pairs: (left, right) images; sizes may differ between pairs.
        config: the disparity settings.
        backend: a flow backend; ``None`` builds the one ``config.flow`` names (a passed backend
            keeps its own working width).
        sky_masker: a sky masker; ``None`` builds the one ``config.sky`` names.
        matcher: a stereo matcher; ``None`` builds the one ``config.matcher`` names (if any).
    """
    if not pairs:
        return []
    return Labeller(config, backend=backend, matcher=matcher, sky_masker=sky_masker).label_pairs(pairs)


def compute_disparity(
    left: np.ndarray,
    right: np.ndarray,
    config: DisparityConfig | None = None,
    backend: FlowBackend | None = None,
    sky_masker: object | None = None,
) -> DisparityResult:
    """The label of one stereo pair; see :func:`compute_disparity_batch`."""
    return compute_disparity_batch([(left, right)], config or DisparityConfig(), backend, sky_masker)[0]


def _swap_evidence(image: np.ndarray | None, disparity: np.ndarray, reference: np.ndarray, kept_range: float) -> float:
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
