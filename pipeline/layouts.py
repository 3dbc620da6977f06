"""Stereo frame layouts: how the two eyes are packed in a decoded frame, and the letterbox crop.

3D Blu-ray rips reach us converted from MVC to side-by-side (SBS) or top-and-bottom (TAB), at full
or half resolution per eye, or as two separate files. This module splits a decoded frame into
``(left, right)`` eyes at the full per-eye aspect, guesses the layout from the content when the
container says nothing, and finds the letterbox bars once per movie.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Sequence

import cv2
import numpy as np

from pipeline.errors import BadInputError, ConfigError

__all__ = [
    "Layout",
    "CropBox",
    "LayoutDecision",
    "split_frame",
    "eye_size",
    "packed_eye_size",
    "check_splittable",
    "half_or_full",
    "layout_from_metadata",
    "detect_layout",
    "detect_letterbox",
    "FrameBars",
    "frame_bars",
]


class Layout(str, enum.Enum):
    """How the two eyes are stored. Half layouts squeeze each eye to half width (SBS) or height (TAB)."""

    SBS_FULL = "sbs-full"
    SBS_HALF = "sbs-half"
    TAB_FULL = "tab-full"
    TAB_HALF = "tab-half"
    SEPARATE = "separate"

    def __str__(self) -> str:  # "sbs-half", not "Layout.SBS_HALF"
        return self.value


@dataclasses.dataclass(frozen=True)
class CropBox:
    """The letterbox crop of one eye, in source pixels of the full per-eye resolution.

    Attributes:
        x: left column of the picture area.
        y: top row of the picture area.
        w: width of the picture area.
        h: height of the picture area.
    """

    x: int
    y: int
    w: int
    h: int

    def apply(self, image):
        """Crop an ``HxW[xC]`` array (numpy view, no copy)."""
        return image[self.y : self.y + self.h, self.x : self.x + self.w]

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def full(cls, width: int, height: int) -> CropBox:
        """The crop box that keeps the whole eye (no letterbox)."""
        return cls(0, 0, int(width), int(height))


# ----------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------

# An eye narrower than this (width / height) in a side-by-side frame is squeezed: half-SBS.
SBS_HALF_MAX_EYE_ASPECT = 1.2
# An eye wider than this in a top-and-bottom frame is squeezed: half-TAB.
TAB_HALF_MIN_EYE_ASPECT = 2.6


def _layout(value: str | Layout) -> Layout:
    try:
        return Layout(value)
    except ValueError:
        raise ConfigError(f"unknown layout {value!r}; valid: {', '.join(l.value for l in Layout)}") from None


def packed_eye_size(frame_width: int, frame_height: int, layout: str | Layout) -> tuple[int, int]:
    """``(w, h)`` of one eye as stored in a packed frame (squeezed for half layouts)."""
    layout = _layout(layout)
    if layout in (Layout.SBS_FULL, Layout.SBS_HALF):
        return frame_width // 2, frame_height
    if layout in (Layout.TAB_FULL, Layout.TAB_HALF):
        return frame_width, frame_height // 2
    return frame_width, frame_height


def eye_size(frame_width: int, frame_height: int, layout: str | Layout) -> tuple[int, int]:
    """``(w, h)`` of one eye at full resolution: half layouts are restored to the frame's aspect."""
    layout = _layout(layout)
    if layout is Layout.SBS_HALF or layout is Layout.TAB_HALF:
        return frame_width, frame_height
    return packed_eye_size(frame_width, frame_height, layout)


def check_splittable(frame_width: int, frame_height: int, layout: str | Layout, path=None) -> None:
    """Raise :class:`BadInputError` when the frame cannot be cut into two equal eyes."""
    layout = _layout(layout)
    if layout in (Layout.SBS_FULL, Layout.SBS_HALF) and frame_width % 2:
        raise BadInputError(
            path,
            f"odd width {frame_width}x{frame_height} cannot be split into two side-by-side eyes",
            "crop or scale the movie to an even width (e.g. ffmpeg -vf crop=iw-1:ih)",
        )
    if layout in (Layout.TAB_FULL, Layout.TAB_HALF) and frame_height % 2:
        raise BadInputError(
            path,
            f"odd height {frame_width}x{frame_height} cannot be split into top and bottom eyes",
            "crop or scale the movie to an even height (e.g. ffmpeg -vf crop=iw:ih-1)",
        )


def split_frame(frame: np.ndarray, layout: str | Layout, restore: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Cut a packed frame into ``(left, right)`` eyes.

    Args:
        frame: ``HxW[xC]`` decoded frame.
        layout: the packing; ``separate`` is not a packing (each file is one eye).
        restore: resize half-resolution eyes back to the full aspect (bicubic): a half-SBS
            1920x1080 frame gives two 1920x1080 eyes.

    Returns:
        Views (no copy) for full layouts, new arrays for restored half layouts.
    """
    layout = _layout(layout)
    h, w = frame.shape[:2]
    check_splittable(w, h, layout)
    if layout in (Layout.SBS_FULL, Layout.SBS_HALF):
        left, right = frame[:, : w // 2], frame[:, w // 2 :]
    elif layout in (Layout.TAB_FULL, Layout.TAB_HALF):
        left, right = frame[: h // 2], frame[h // 2 :]
    else:
        raise ConfigError("split_frame: the 'separate' layout has one eye per file; nothing to split")
    if restore and layout in (Layout.SBS_HALF, Layout.TAB_HALF):
        left = cv2.resize(left, (w, h), interpolation=cv2.INTER_CUBIC)
        right = cv2.resize(right, (w, h), interpolation=cv2.INTER_CUBIC)
    return left, right


def half_or_full(
    frame_width: int, frame_height: int, side_by_side: bool, sample_aspect_ratio: float = 1.0
) -> tuple[Layout, str]:
    """Tell half from full packing by the aspect of one stored eye (pixel aspect included).

    A 1920x1080 SBS frame holds two 960x1080 eyes (aspect 0.89): nobody shoots that, so they are
    squeezed 16:9 eyes (half). A 3840x1080 one holds two 1920x1080 eyes (full).
    """
    sar = sample_aspect_ratio or 1.0
    if side_by_side:
        aspect = (frame_width / 2) * sar / frame_height
        half = aspect < SBS_HALF_MAX_EYE_ASPECT
        return (
            (Layout.SBS_HALF if half else Layout.SBS_FULL),
            f"each eye would be {frame_width // 2}x{frame_height} (aspect {aspect:.2f}: {'squeezed' if half else 'natural'})",
        )
    aspect = frame_width * sar / (frame_height / 2)
    half = aspect > TAB_HALF_MIN_EYE_ASPECT
    return (
        Layout.TAB_HALF if half else Layout.TAB_FULL
    ), f"each eye would be {frame_width}x{frame_height // 2} (aspect {aspect:.2f}: {'squeezed' if half else 'natural'})"


# ----------------------------------------------------------------------------------------------
# Detection from metadata or content
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LayoutDecision:
    """The layout chosen for a movie and why.

    Attributes:
        layout: the packing.
        reason: one sentence for logs and reports ("MKV StereoMode left_right; each eye ...").
        scores: the similarity of the two halves per candidate packing (content detection only).
        eyes_swapped: the metadata says the right eye is stored first (StereoMode right_left).
    """

    layout: Layout
    reason: str
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    eyes_swapped: bool = False


_SBS_TAGS = {"left_right": False, "right_left": True}
_TAB_TAGS = {"top_bottom": False, "bottom_top": True}


def layout_from_metadata(info) -> LayoutDecision | None:
    """The layout a :class:`pipeline.probe.MovieInfo` declares (MKV StereoMode, stereo3d side data), or None."""
    tag = (info.stereo_mode or "").lower()
    sar = getattr(info, "sample_aspect_ratio", 1.0)
    if tag in _SBS_TAGS or tag in _TAB_TAGS:
        sbs = tag in _SBS_TAGS
        swapped = _SBS_TAGS.get(tag, _TAB_TAGS.get(tag, False))
        layout, why = half_or_full(info.width, info.height, sbs, sar)
        return LayoutDecision(layout, f"MKV StereoMode {tag}; {why}", eyes_swapped=swapped)
    kind = (info.stereo3d or "").lower()
    if kind in ("side_by_side", "top_bottom"):
        sbs = kind == "side_by_side"
        layout, why = half_or_full(info.width, info.height, sbs, sar)
        return LayoutDecision(layout, f"stereo3d side data {kind}; {why}", eyes_swapped=bool(info.stereo3d_inverted))
    return None


def _halves_similarity(gray: np.ndarray, side_by_side: bool) -> float | None:
    """How alike the two halves are, allowing the local shifts of a stereo pair.

    Each half is differentiated across the split (texture, not the layout every frame shares), cut
    into tiles, and each tile of the first half is searched in the second half within +-5% of the
    width horizontally and +-2% vertically (disparity and rig misalignment). The score is the
    median of the tiles' best normalised correlation: about 0.9 for a stereo pair, about 0.2
    (the best of many random shifts) for unrelated halves. None when the frame is flat.
    """
    h, w = gray.shape
    if side_by_side:
        a, b = gray[:, : w // 2], gray[:, w // 2 : 2 * (w // 2)]
    else:
        a, b = gray[: h // 2], gray[h // 2 : 2 * (h // 2)]
    scale = min(1.0, 320.0 / a.shape[1], 240.0 / a.shape[0])
    if scale < 1.0:
        size = (max(16, int(a.shape[1] * scale)), max(16, int(a.shape[0] * scale)))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    # Derivative across the split direction only: structure that is constant along it (letterbox
    # edges and horizons for SBS, pillarbox edges for TAB) matches in any frame and proves nothing.
    dx, dy = (1, 0) if side_by_side else (0, 1)
    a = cv2.Sobel(cv2.GaussianBlur(a.astype(np.float32), (0, 0), 1.0), cv2.CV_32F, dx, dy, ksize=3)
    b = cv2.Sobel(cv2.GaussianBlur(b.astype(np.float32), (0, 0), 1.0), cv2.CV_32F, dx, dy, ksize=3)
    hh, ww = a.shape
    sx, sy = max(2, int(0.05 * ww)), max(1, int(0.02 * hh))
    th, tw = max(8, hh // 4), max(8, ww // 5)
    scores = []
    for y0 in range(sy, hh - th - sy + 1, th):
        for x0 in range(sx, ww - tw - sx + 1, tw):
            tile = a[y0 : y0 + th, x0 : x0 + tw]
            if tile.std() < 1.0:
                continue  # flat (letterbox bar, sky): says nothing
            region = b[y0 - sy : y0 + th + sy, x0 - sx : x0 + tw + sx]
            res = cv2.matchTemplate(region, tile, cv2.TM_CCOEFF_NORMED)
            scores.append(float(np.nanmax(res)))
    if len(scores) < 3:
        return None
    return float(np.median(scores))


def _to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def detect_layout(
    frames: Sequence[np.ndarray],
    path=None,
    sample_aspect_ratio: float = 1.0,
    min_score: float = 0.6,
    margin: float = 0.2,
) -> LayoutDecision:
    """Guess the packing from the pictures when the container does not say.

    Compares the two halves of each frame for side-by-side and top-and-bottom packings (see
    :func:`_halves_similarity`); the packing whose halves match (median over frames at least
    ``min_score`` and ``margin`` above the other) wins; half vs full comes from the eye aspect.

    Args:
        frames: a few decoded frames spread over the movie (RGB or gray).
        path: the movie, for error messages.

    Raises:
        BadInputError: neither packing's halves match: a 2D movie, not a stereo pair.
    """
    if not frames:
        raise BadInputError(path, "no frames to detect the stereo layout from", "the file may be empty or corrupt")
    h, w = frames[0].shape[:2]
    per: dict[str, list[float]] = {"sbs": [], "tab": []}
    # The frames are scored on two threads (OpenCV's template matching releases the GIL): opening
    # an untagged copy waits for this, with the other core idle otherwise. The scores are the same.
    from concurrent.futures import ThreadPoolExecutor

    def score(f: np.ndarray) -> tuple[float | None, float | None]:
        g = _to_gray(f)
        return _halves_similarity(g, True), _halves_similarity(g, False)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="layout") as pool:
        scored = list(pool.map(score, frames))
    for pair in scored:
        for key, s in zip(("sbs", "tab"), pair):
            if s is not None:
                per[key].append(s)
    scores = {k: (float(np.median(v)) if v else 0.0) for k, v in per.items()}
    best = max(scores, key=scores.get)
    other = "tab" if best == "sbs" else "sbs"
    if scores[best] < min_score or scores[best] - scores[other] < margin:
        raise BadInputError(
            path,
            f"not a stereo pair: neither the left/right halves (similarity {scores['sbs']:.2f}) nor the "
            f"top/bottom halves ({scores['tab']:.2f}) of its frames show the same scene",
            "give a side-by-side or top-and-bottom 3D movie, or --layout / --right for separate eye files",
        )
    layout, why = half_or_full(w, h, best == "sbs", sample_aspect_ratio)
    check_splittable(w, h, layout, path)
    what = "left/right" if best == "sbs" else "top/bottom"
    reason = (
        f"no stereo metadata; the {what} halves show the same scene (similarity {scores[best]:.2f} "
        f"vs {scores[other]:.2f}); {why}"
    )
    return LayoutDecision(layout, reason, scores)


# ----------------------------------------------------------------------------------------------
# Letterbox
# ----------------------------------------------------------------------------------------------


def detect_letterbox(
    frames: Sequence[np.ndarray], black_level: float = 16.0, max_std: float = 5.0, min_picture_fraction: float = 0.3
) -> CropBox:
    """Find the black bars of full-resolution eye images; the crop keeps the picture area.

    A row (column) is a bar when, in *every* frame, its mean is below ``black_level`` and its
    standard deviation below ``max_std`` (rows next to a bar only need the dark mean: scaling blurs
    a bar's edge): the maximum over frames spread over the movie, so a
    dark scene (dim but textured rows) does not look like a bar as long as any frame is lit, and a
    picture that happens to be black in a few frames does not either. The crop is rounded inwards to
    even coordinates and sizes (yuv420p chroma rows). If the bars would leave less than
    ``min_picture_fraction`` of the frame (all frames black), the full frame is returned.

    Args:
        frames: eye images (``HxW`` gray or ``HxWx3`` RGB), all the same size.
    """
    if not frames:
        raise ValueError("detect_letterbox needs at least one frame")
    h, w = frames[0].shape[:2]
    row_mean = np.zeros(h, np.float32)
    row_std = np.zeros(h, np.float32)
    col_mean = np.zeros(w, np.float32)
    col_std = np.zeros(w, np.float32)
    for f in frames:
        g = _to_gray(f).astype(np.float32)
        row_mean = np.maximum(row_mean, g.mean(axis=1))
        row_std = np.maximum(row_std, g.std(axis=1))
        col_mean = np.maximum(col_mean, g.mean(axis=0))
        col_std = np.maximum(col_std, g.std(axis=0))
    row_bar = (row_mean < black_level) & (row_std < max_std)
    col_bar = (col_mean < black_level) & (col_std < max_std)

    def extent(bar: np.ndarray, mean: np.ndarray) -> tuple[int, int]:
        n = bar.size
        lo = int(np.argmin(bar)) if not bar.all() else n
        hi = n - int(np.argmin(bar[::-1])) if not bar.all() else 0
        # A bar's edge blurred by scaling (half layouts restored to full size, a resized master)
        # is dark but not flat: rows next to a bar that stay below the black level join it.
        if 0 < lo < hi:
            while lo < hi and mean[lo] < black_level:
                lo += 1
        if lo < hi < n:
            while hi > lo and mean[hi - 1] < black_level:
                hi -= 1
        return lo, hi

    y0, y1 = extent(row_bar, row_mean)
    x0, x1 = extent(col_bar, col_mean)
    if (y1 - y0) < min_picture_fraction * h or (x1 - x0) < min_picture_fraction * w:
        return CropBox.full(w, h)
    # inwards to even numbers
    y0 += y0 % 2
    x0 += x0 % 2
    hh = (y1 - y0) - (y1 - y0) % 2
    ww = (x1 - x0) - (x1 - x0) % 2
    return CropBox(x0, y0, ww, hh)


@dataclasses.dataclass(frozen=True)
class FrameBars:
    """Black bars of one frame, in pixels from each edge (0 where there is none)."""

    top: int
    bottom: int
    left: int
    right: int


def frame_bars(image: np.ndarray, level: float = 20.0, max_fraction: float = 0.15) -> FrameBars:
    """The black bars of *one* frame, which the movie-wide letterbox crop does not remove.

    3D films move a "floating window" per shot (black bars at the sides of one eye, other widths
    in the other), and films that change aspect ratio keep bars in their narrower shots. A row
    (column) belongs to a bar when 99% of its pixels are darker than ``level`` (0-255 luma),
    counting inwards from the edge; at most ``max_fraction`` of the height (width) is looked at.
    """
    gray = _to_gray(np.asarray(image))

    def run(a: np.ndarray) -> int:  # leading dark columns of ``a``
        limit = int(a.shape[1] * max_fraction)
        if limit < 1:
            return 0
        stop = np.flatnonzero((a[:, :limit] < level).mean(axis=0) < 0.99)
        return int(stop[0]) if stop.size else limit

    return FrameBars(top=run(gray.T), bottom=run(gray[::-1].T), left=run(gray), right=run(gray[:, ::-1]))
