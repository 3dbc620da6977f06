"""A synthetic 3D movie with known disparity: the test and demo input of the whole pipeline.

Real 3D films cannot ship with a test suite, and their disparity is unknown. This module renders
shots of textured layers at several depths that move with a panning camera (parallax: near layers
move faster), with a smooth sky band at the top (the farthest disparity), a slanted ground plane,
objects in front of and behind the screen (positive and negative disparity) that occlude each
other, hard cuts between shots, letterbox bars, and optionally a vertical misalignment of the right
eye and swapped eyes. It packs the eyes in any :class:`pipeline.layouts.Layout`, encodes with the
ffmpeg binary of ``imageio-ffmpeg`` (H.264, yuv420p, MKV with chapters and the MKV ``StereoMode``
tag) and writes the ground truth next to the movie.

Disparity follows the project convention (Middlebury): the left pixel at ``x`` matches the right
pixel at ``x - d``; larger is nearer; negative is behind the screen. Magnitudes are about
-3%..+3% of the eye width, as in real 3D films.

Ground-truth sidecar (``MOVIE.gt.json`` + ``MOVIE.gt.npz``, next to the movie, ``MOVIE`` being the
path without its suffix):

``MOVIE.gt.json``
    ``version`` (1), ``layout``, ``eye_width``/``eye_height`` (full per-eye resolution, the one
    the disparity is given in), ``fps``, ``frame_count``, ``seed``, ``shots`` (list of
    ``[start_frame, end_frame)``), ``chapters`` (list of ``{start_s, end_s, title}``), ``crop``
    (``{x, y, w, h}``: the letterbox picture area per eye), ``vertical_offset_px`` (the right eye
    is shifted down by this many pixels), ``swap_eyes`` (the file's left slot holds the right
    view; the ground truth stays the *true* left view's), ``stereo_mode`` (the MKV tag written,
    or null), ``files`` (``video``, ``right`` for the separate layout), ``disparity_range_px``.
``MOVIE.gt.npz``
    ``disparity``: ``float16 [frames, eye_height, eye_width]``, the true left view's disparity in
    full-eye pixels, NaN in the letterbox bars; ``sky``: ``bool [frames, eye_height, eye_width]``.

Typical use::

    movie = make_sample_movie("movie.mkv", layout="sbs-half", seconds=10)
    truth = load_ground_truth(movie.path)
    truth.disparity[0]  # left view's disparity of frame 0
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import subprocess
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.errors import BadInputError, ConfigError
from pipeline.layouts import CropBox, Layout

__all__ = [
    "StereoFrameTruth",
    "SampleMovie",
    "SampleMovieSpec",
    "GroundTruth",
    "render_stereo_frame",
    "letterbox_crop",
    "pack_eyes",
    "make_sample_movie",
    "load_ground_truth",
    "render_movie_frame",
    "movie_frame_motion",
    "ground_truth_paths",
    "ffmpeg_exe",
    "STEREO_MODE_TAGS",
]

log = logging.getLogger(__name__)

GT_VERSION = 1
# Film aspect of the picture area inside the 16:9 eye (CinemaScope): gives top/bottom bars.
LETTERBOX_ASPECT = 2.35
# The MKV StereoMode tag written for each layout (ffmpeg's matroska muxer names).
STEREO_MODE_TAGS: dict[str, str | None] = {
    "sbs-full": "left_right",
    "sbs-half": "left_right",
    "tab-full": "top_bottom",
    "tab-half": "top_bottom",
    "separate": None,
}


def ffmpeg_exe() -> str:
    """The ffmpeg binary: imageio-ffmpeg's, since none is on PATH on our machines."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class StereoFrameTruth:
    """One rendered stereo frame and its truth, at the full per-eye resolution.

    Attributes:
        left: ``HxWx3 uint8`` image of the file's left slot (the true right view if eyes are swapped).
        right: ``HxWx3 uint8`` image of the file's right slot.
        disparity: ``HxW float32`` disparity of the *true* left view in pixels, NaN in the bars.
        sky: ``HxW bool`` sky pixels of the true left view.
    """

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    sky: np.ndarray


@dataclasses.dataclass
class _Layer:
    texture: np.ndarray  # Hc x Wc x 3 uint8 canvas
    mask: np.ndarray  # Hc x Wc uint8 (255 = opaque); None-like full mask for the sky
    disp_top: float  # disparity at the top row of the picture area (px)
    disp_bottom: float  # ... at the bottom row: a slanted plane when they differ
    speed: float  # horizontal texture speed (px per second) from the camera pan and own motion
    is_sky: bool = False


@dataclasses.dataclass
class _Scene:
    layers: list[_Layer]  # back to front
    margin: int  # canvas x of picture column 0 at t = 0
    brightness: float


def letterbox_crop(width: int, height: int, letterbox: bool = True) -> CropBox:
    """The picture area of a ``width x height`` eye: a 2.35:1 band with even-sized black bars."""
    if not letterbox:
        return CropBox.full(width, height)
    content = min(height, int(round(width / LETTERBOX_ASPECT)))
    bar = max(0, (height - content) // 2)
    bar -= bar % 2  # even bars keep chroma rows aligned in yuv420p
    return CropBox(0, bar, width, height - 2 * bar)


def _noise(rng: np.random.Generator, h: int, w: int, channels: int, octaves: Sequence[int]) -> np.ndarray:
    """Multi-octave value noise in about [-1, 1]: rich, non-repeating texture like real surfaces."""
    out = np.zeros((h, w, channels), np.float32)
    total = 0.0
    for cell in octaves:
        gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
        grid = rng.standard_normal((gh, gw, channels)).astype(np.float32)
        up = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)[:h, :w]
        if up.ndim == 2:
            up = up[..., None]
        amp = (cell / octaves[0]) ** 0.6
        out += amp * up
        total += amp
    return out / total


def _textured(rng: np.random.Generator, h: int, w: int, base: np.ndarray, contrast: float) -> np.ndarray:
    """A colourful, detailed texture canvas around a base colour (uint8)."""
    tex = _noise(rng, h, w, 3, (64, 32, 16, 8, 4))
    lum = _noise(rng, h, w, 1, (24, 6, 2))
    img = base[None, None, :] + contrast * (0.55 * tex + 0.45 * lum)
    # A few sharp strokes and blocks: edges and corners like man-made objects.
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(max(4, (h * w) // 6000)):
        color = tuple(int(c) for c in np.clip(base + rng.normal(0, 70, 3), 0, 255))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            x1, y1 = x0 + int(rng.integers(-40, 40)), y0 + int(rng.integers(-40, 40))
            cv2.line(img, (x0, y0), (x1, y1), color, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            s = int(rng.integers(2, 9))
            cv2.rectangle(img, (x0, y0), (x0 + s, y0 + s), color, -1)
    return img


def _blob_mask(rng: np.random.Generator, h: int, w: int, cx: int, cy: int, rx: int, ry: int) -> np.ndarray:
    """An irregular object silhouette: a polygon on a noisy ellipse, or a box (uint8 0/255)."""
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.35:
        cv2.rectangle(mask, (cx - rx, cy - ry), (cx + rx, cy + ry), 255, -1)
    else:
        n = 24
        ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
        rad = 1.0 + 0.25 * rng.standard_normal(n)
        pts = np.stack([cx + rx * rad * np.cos(ang), cy + ry * rad * np.sin(ang)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255, cv2.LINE_AA)
    return mask


@functools.lru_cache(maxsize=8)
def _scene(width: int, content_h: int, seed: int, shot: int, duration_s: float, dark: bool) -> _Scene:
    """Build the layers of one shot; cached, since every frame of a shot reuses them."""
    rng = np.random.default_rng([seed, shot, width, content_h])
    W, H = width, content_h
    dmax = 0.03 * W  # the nearest object; -dmax is the sky
    pan = float(rng.uniform(0.15, 0.6) * W / 10.0) * (1 if rng.random() < 0.5 else -1)  # px/s
    speeds = []

    def speed(disp_mid: float, own: float = 0.0) -> float:
        # parallax: the screen plane (d = 0) moves at `pan`, farther layers slower, nearer faster
        s = pan * (1.0 + disp_mid / (2.2 * dmax)) + own
        speeds.append(abs(s))
        return s

    layers_spec = []
    # sky: smooth vertical gradient, almost no texture, the farthest disparity
    sky_top = rng.uniform([40, 80, 150], [120, 150, 235]).astype(np.float32)
    sky_bottom = np.clip(sky_top + rng.uniform([60, 50, 10], [120, 90, 30]), 0, 255).astype(np.float32)
    layers_spec.append(("sky", -dmax, -dmax, speed(-dmax)))
    # far terrain with a ragged skyline
    far = float(rng.uniform(-0.8, -0.55) * dmax)
    layers_spec.append(("far", far, far, speed(far)))
    # ground plane: slanted, from behind the screen at the horizon to in front at the bottom
    g_top, g_bottom = float(rng.uniform(-0.45, -0.2) * dmax), float(rng.uniform(0.45, 0.7) * dmax)
    layers_spec.append(("ground", g_top, g_bottom, speed(0.5 * (g_top + g_bottom))))
    # objects, back to front, some behind and some in front of the screen
    n_obj = int(rng.integers(2, 5))
    obj_disp = np.sort(rng.uniform(-0.5 * dmax, dmax, n_obj))
    obj_disp[-1] = dmax * rng.uniform(0.85, 1.0)
    for d in obj_disp:
        layers_spec.append(("object", float(d), float(d), speed(float(d), own=float(rng.normal(0, W / 40)))))

    travel = max(speeds) * duration_s
    margin = int(min(travel + 2 * dmax + 8, 3 * W)) + 8
    Wc = W + 2 * margin
    layers: list[_Layer] = []
    yy = np.arange(H, dtype=np.float32)[:, None]
    for kind, d0, d1, s in layers_spec:
        if kind == "sky":
            t = (yy / max(H - 1, 1))[..., None]
            grad = sky_top[None, None, :] * (1 - t) + sky_bottom[None, None, :] * t
            faint = 3.0 * _noise(rng, H, Wc, 3, (64, 32))
            tex = np.clip(np.broadcast_to(grad, (H, Wc, 3)) + faint, 0, 255).astype(np.uint8)
            mask = np.full((H, Wc), 255, np.uint8)
        else:
            base = rng.uniform(40, 215, 3).astype(np.float32)
            tex = _textured(rng, H, Wc, base, contrast=float(rng.uniform(45, 80)))
            mask = np.zeros((H, Wc), np.uint8)
            if kind == "far":
                horizon = rng.uniform(0.25, 0.4) * H
                ridge = horizon + 0.12 * H * _noise(rng, 1, Wc, 1, (max(8, W // 6), max(4, W // 24)))[0, :, 0]
                mask[yy[:, 0][:, None] >= ridge[None, :]] = 255
            elif kind == "ground":
                mask[int(rng.uniform(0.55, 0.7) * H) :, :] = 255
            else:
                for _ in range(int(rng.integers(2, 5))):  # a few copies of the object along the pan
                    rx, ry = int(rng.uniform(0.05, 0.14) * W), int(rng.uniform(0.12, 0.3) * H)
                    cx = int(rng.uniform(0, Wc))
                    cy = int(rng.uniform(0.35, 0.85) * H)
                    mask = np.maximum(mask, _blob_mask(rng, H, Wc, cx, cy, rx, ry))
        layers.append(_Layer(tex, mask, d0, d1, s, is_sky=(kind == "sky")))
    return _Scene(layers, margin, 0.18 if dark else 1.0)


def render_stereo_frame(
    width: int,
    height: int,
    t: float,
    seed: int = 0,
    *,
    shot: int = 0,
    shot_duration_s: float = 10.0,
    letterbox: bool = True,
    vertical_offset_px: float = 0.0,
    swap_eyes: bool = False,
    dark: bool = False,
) -> StereoFrameTruth:
    """Render one stereo frame of shot ``shot`` at time ``t`` seconds into the shot.

    Args:
        width, height: full per-eye resolution.
        t: seconds since the start of the shot (the camera pans with time).
        seed: selects the movie; with ``shot`` it fixes every layer (deterministic).
        shot: index of the shot; each shot is a new scene (a hard cut between shots).
        shot_duration_s: the longest ``t`` used, so the texture canvases are wide enough.
        letterbox: draw black 2.35:1 letterbox bars (see :func:`letterbox_crop`).
        vertical_offset_px: shift the right view down by this many pixels (a misaligned rig).
        swap_eyes: put the right view in the left slot and vice versa (a common authoring error).
        dark: a night scene (about 18% brightness), to test letterbox detection on dark shots.

    Returns:
        :class:`StereoFrameTruth`; ``disparity``/``sky`` describe the true left view.
    """
    crop = letterbox_crop(width, height, letterbox)
    W, H = crop.w, crop.h
    scene = _scene(width, H, int(seed), int(shot), float(max(shot_duration_s, t)), bool(dark))
    xs = np.arange(W, dtype=np.float32)[None, :]
    ys = np.arange(H, dtype=np.float32)[:, None]
    rows = np.broadcast_to(ys, (H, W))
    views = []
    disparity = None
    sky = None
    for eye in ("left", "right"):
        acc = np.zeros((H, W, 3), np.float32)
        disp = np.zeros((H, W), np.float32)
        skym = np.zeros((H, W), bool)
        dy = float(vertical_offset_px) if eye == "right" else 0.0
        for layer in scene.layers:
            d_row = layer.disp_top + (layer.disp_bottom - layer.disp_top) * (ys / max(H - 1, 1))
            shift = scene.margin + layer.speed * t + (d_row if eye == "right" else 0.0)
            map_x = np.broadcast_to(xs + shift, (H, W)).astype(np.float32)
            map_y = (rows - dy).astype(np.float32)
            tex = cv2.remap(layer.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            if layer.is_sky:
                acc[:] = tex
                alpha = None
            else:
                a8 = cv2.remap(layer.mask, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
                alpha = a8.astype(np.float32)[..., None] / 255.0
                acc = acc * (1.0 - alpha) + tex.astype(np.float32) * alpha
            if eye == "left":
                cover = np.ones((H, W), bool) if alpha is None else alpha[..., 0] > 0.5
                disp[cover] = np.broadcast_to(d_row, (H, W))[cover]
                skym = cover if layer.is_sky else (skym & ~cover)
        img = np.clip(acc * scene.brightness + 0.5, 0, 255).astype(np.uint8)
        views.append(img)
        if eye == "left":
            disparity, sky = disp, skym
    full = []
    for img in views:
        canvas = np.zeros((height, width, 3), np.uint8)
        canvas[crop.y : crop.y + H, crop.x : crop.x + W] = img
        full.append(canvas)
    disp_full = np.full((height, width), np.nan, np.float32)
    disp_full[crop.y : crop.y + H, crop.x : crop.x + W] = disparity
    sky_full = np.zeros((height, width), bool)
    sky_full[crop.y : crop.y + H, crop.x : crop.x + W] = sky
    left, right = full
    if swap_eyes:
        left, right = right, left
    return StereoFrameTruth(left, right, disp_full, sky_full)


def pack_eyes(left: np.ndarray, right: np.ndarray, layout: str | Layout) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Pack two full-resolution eyes into one frame of ``layout`` (inverse of ``split_frame``).

    Half layouts squeeze each eye with area averaging (as authoring tools do); ``separate`` returns
    the two eyes unchanged.
    """
    layout = Layout(layout)
    h, w = left.shape[:2]
    if layout is Layout.SBS_FULL:
        return np.concatenate([left, right], axis=1)
    if layout is Layout.TAB_FULL:
        return np.concatenate([left, right], axis=0)
    if layout is Layout.SBS_HALF:
        sq = [cv2.resize(e, (w // 2, h), interpolation=cv2.INTER_AREA) for e in (left, right)]
        return np.concatenate(sq, axis=1)
    if layout is Layout.TAB_HALF:
        sq = [cv2.resize(e, (w, h // 2), interpolation=cv2.INTER_AREA) for e in (left, right)]
        return np.concatenate(sq, axis=0)
    return left, right


# ----------------------------------------------------------------------------------------------
# Movie
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SampleMovie:
    """A generated movie and where its truth is.

    Attributes:
        path: the movie (the left eye's file for the ``separate`` layout).
        right_path: the right eye's file (``separate`` only), else None.
        gt_json, gt_npz: the ground-truth sidecar (see the module docstring).
        layout: how the eyes are packed.
        eye_size: ``(width, height)`` of one full-resolution eye.
        fps: frames per second.
        frame_count: number of frames.
        shots: ``[start_frame, end_frame)`` of each shot.
        chapters: ``(start_s, end_s, title)`` of each chapter.
        crop: the letterbox picture area per eye.
    """

    path: Path
    right_path: Path | None
    gt_json: Path
    gt_npz: Path
    layout: str
    eye_size: tuple[int, int]
    fps: float
    frame_count: int
    shots: list[tuple[int, int]]
    chapters: list[tuple[float, float, str]]
    crop: CropBox
    swap_eyes: bool = False
    vertical_offset_px: float = 0.0

    def load_truth(self) -> GroundTruth:
        return load_ground_truth(self.gt_json)


@dataclasses.dataclass
class GroundTruth:
    """The sidecar read back: the JSON fields plus the per-frame arrays."""

    meta: dict
    disparity: np.ndarray  # float16 [frames, H, W], NaN in the bars
    sky: np.ndarray  # bool [frames, H, W]

    @property
    def shots(self) -> list[tuple[int, int]]:
        return [tuple(s) for s in self.meta["shots"]]

    @property
    def crop(self) -> CropBox:
        return CropBox(**self.meta["crop"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def chapters(self) -> list[tuple[float, float, str]]:
        return [(c["start_s"], c["end_s"], c["title"]) for c in self.meta["chapters"]]


def ground_truth_paths(movie_path: str | Path) -> tuple[Path, Path]:
    """``(MOVIE.gt.json, MOVIE.gt.npz)`` for a movie path (its suffix replaced)."""
    p = Path(movie_path)
    if p.name.endswith(".gt.json") or p.name.endswith(".gt.npz"):
        stem = p.name.rsplit(".gt.", 1)[0]
        p = p.with_name(stem)
        return p.with_name(stem + ".gt.json"), p.with_name(stem + ".gt.npz")
    return p.with_suffix(".gt.json"), p.with_suffix(".gt.npz")


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read the sidecar of a sample movie; ``path`` is the movie or its ``.gt.json``."""
    gt_json, gt_npz = ground_truth_paths(path)
    if not gt_json.exists() or not gt_npz.exists():
        raise BadInputError(path, "no ground-truth sidecar next to it", f"expected {gt_json.name} and {gt_npz.name}")
    meta = json.loads(gt_json.read_text())
    with np.load(gt_npz) as data:
        return GroundTruth(meta=meta, disparity=data["disparity"], sky=data["sky"])


def _movie_meta(movie: SampleMovie | GroundTruth | dict | str | Path) -> dict:
    """The ground-truth metadata of a sample movie given in any of the forms the callers take."""
    if isinstance(movie, SampleMovie):
        return json.loads(movie.gt_json.read_text())
    if isinstance(movie, GroundTruth):
        return movie.meta
    if isinstance(movie, dict):
        return movie
    return json.loads(ground_truth_paths(movie)[0].read_text())


def render_movie_frame(movie: SampleMovie | GroundTruth | dict | str | Path, frame_index: int) -> StereoFrameTruth:
    """Re-render frame ``frame_index`` of a sample movie exactly as it was encoded (before the codec).

    ``movie`` is a :class:`SampleMovie`, a :class:`GroundTruth`, its JSON dict, or the movie's path.
    Tests compare decoded eyes with this: the generator's view, at full per-eye resolution.
    """
    meta = _movie_meta(movie)
    fps = float(meta["fps"])
    for shot_i, (s0, s1) in enumerate(meta["shots"]):  # noqa: B007  (the shot found is used after the loop)
        if s0 <= frame_index < s1:
            break
    else:
        raise IndexError(f"frame {frame_index} is outside the movie ({meta['frame_count']} frames)")
    return render_stereo_frame(
        int(meta["eye_width"]),
        int(meta["eye_height"]),
        (frame_index - s0) / fps,
        int(meta["seed"]),
        shot=shot_i,
        shot_duration_s=(s1 - s0) / fps,
        letterbox=bool(meta.get("letterbox", True)),
        vertical_offset_px=float(meta["vertical_offset_px"]),
        swap_eyes=bool(meta["swap_eyes"]),
        dark=shot_i in set(meta.get("dark_shots", [])),
    )


def movie_frame_motion(movie: SampleMovie | GroundTruth | dict | str | Path, frame_index: int) -> np.ndarray:
    """The true motion of the *true* left view from frame ``frame_index`` to the next one.

    Every layer slides horizontally at its own speed (the camera pan with parallax, plus objects'
    own motion), so a pixel the layer covers moves by ``-speed / fps`` px in x and 0 in y. Returns
    HxWx2 float32 in full per-eye pixels, NaN in the bars; the frame and the next must share a shot
    (a cut has no motion). Tests compare the stored temporal flow with it.
    """
    meta = _movie_meta(movie)
    fps = float(meta["fps"])
    for shot_i, (s0, s1) in enumerate(meta["shots"]):  # noqa: B007
        if s0 <= frame_index < s1:
            break
    else:
        raise IndexError(f"frame {frame_index} is outside the movie ({meta['frame_count']} frames)")
    if frame_index + 1 >= s1:
        raise ValueError(f"frame {frame_index} is the last of its shot: no motion to the next frame")
    width, height = int(meta["eye_width"]), int(meta["eye_height"])
    crop = letterbox_crop(width, height, bool(meta.get("letterbox", True)))
    W, H = crop.w, crop.h
    t = (frame_index - s0) / fps
    scene = _scene(
        width, H, int(meta["seed"]), shot_i, float(max((s1 - s0) / fps, t)), shot_i in set(meta.get("dark_shots", []))
    )
    xs = np.arange(W, dtype=np.float32)[None, :]
    rows = np.broadcast_to(np.arange(H, dtype=np.float32)[:, None], (H, W)).astype(np.float32)
    flow = np.zeros((H, W, 2), np.float32)
    for layer in scene.layers:
        map_x = np.broadcast_to(xs + scene.margin + layer.speed * t, (H, W)).astype(np.float32)
        if layer.is_sky:
            cover = np.ones((H, W), bool)
        else:
            a8 = cv2.remap(layer.mask, map_x, rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            cover = a8 > 127
        flow[cover, 0] = -layer.speed / fps
    out = np.full((height, width, 2), np.nan, np.float32)
    out[crop.y : crop.y + H, crop.x : crop.x + W] = flow
    if bool(meta["swap_eyes"]):
        raise ValueError("motion of a movie with swapped eyes: the left slot holds the right view")
    return out


def _shot_lengths(total: int, n: int, fps: float, rng: np.random.Generator) -> list[int]:
    """Split ``total`` frames into ``n`` uneven shots, none shorter than about 1.2 s."""
    n = max(1, min(n, total // max(1, int(fps))))
    min_len = min(int(round(1.2 * fps)), total // n)
    spare = total - n * min_len
    weights = rng.dirichlet(np.full(n, 2.0))
    extra = np.floor(weights * spare).astype(int)
    extra[: spare - int(extra.sum())] += 1
    return [int(min_len + e) for e in extra]


def _chapters_for(shots: list[tuple[int, int]], n_chapters: int, fps: float) -> list[tuple[float, float, str]]:
    """Group shots into ``n_chapters`` consecutive chapters; chapter starts fall on cuts."""
    n_chapters = max(1, min(n_chapters, len(shots)))
    groups = np.array_split(np.arange(len(shots)), n_chapters)
    out = []
    for i, g in enumerate(groups):
        start, end = shots[int(g[0])][0], shots[int(g[-1])][1]
        out.append((start / fps, end / fps, f"Chapter {i + 1}"))
    return out


def _ffmetadata(chapters: list[tuple[float, float, str]], title: str) -> str:
    lines = [";FFMETADATA1", f"title={title}"]
    for start, end, name in chapters:
        lines += [
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={int(round(start * 1000))}",
            f"END={int(round(end * 1000))}",
            f"title={name}",
        ]
    return "\n".join(lines) + "\n"


class _Encoder:
    """An ffmpeg process fed raw RGB frames on stdin, writing an H.264/yuv420p MKV atomically."""

    def __init__(
        self,
        out: Path,
        size: tuple[int, int],
        fps: float,
        meta_file: Path | None,
        stereo_mode: str | None,
        crf: int,
        preset: str,
    ):
        self.out = out
        self._atomic = atomic_path(out)
        self.tmp = self._atomic.__enter__()
        w, h = size
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{w}x{h}",
            "-framerate",
            f"{fps}",
            "-i",
            "pipe:0",
        ]
        if meta_file is not None:
            cmd += ["-f", "ffmetadata", "-i", str(meta_file), "-map_metadata", "1", "-map_chapters", "1"]
        # BT.709 matrix, limited range, tagged: what a Blu-ray carries
        cmd += [
            "-map",
            "0:v",
            "-vf",
            "scale=out_color_matrix=bt709:out_range=tv",
            "-colorspace",
            "bt709",
            "-color_primaries",
            "bt709",
            "-color_trc",
            "bt709",
            "-c:v",
            "libx264",
            "-preset",
            preset,
            "-crf",
            str(crf),
            "-pix_fmt",
            "yuv420p",
            "-g",
            str(int(round(2 * fps))),
            "-threads",
            "2",
        ]
        if stereo_mode:
            cmd += ["-metadata:s:v:0", f"stereo_mode={stereo_mode}"]
        cmd += ["-f", "matroska", str(self.tmp)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())

    def close(self, ok: bool = True) -> None:
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode(errors="replace")
        rc = self.proc.wait()
        if ok and rc != 0:
            self._atomic.__exit__(RuntimeError, RuntimeError(err), None)
            raise RuntimeError(f"ffmpeg failed encoding {self.out}: {err.strip()}")
        if ok:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)


@dataclasses.dataclass(frozen=True)
class SampleMovieSpec:
    """What a sample movie looks like: everything :func:`make_sample_movie` renders from.

    Attributes:
        layout: one of :class:`pipeline.layouts.Layout`'s values.
        seconds: duration.
        size: ``(width, height)`` of one full-resolution eye; both even (even halves for half layouts).
        fps: frame rate.
        seed: makes the movie; the same spec gives the same frames and truth.
        chapters: number of chapters (each starts on a cut).
        shots: number of shots, or the frame count of each shot; default ``max(chapters + 2, seconds / 2)``.
        vertical_offset_px: shift of the right eye (down, in pixels).
        swap_eyes: store the right view in the left slot.
        letterbox: black bars at the top and bottom of each eye.
        stereo_metadata: write the MKV StereoMode tag (off: layout must be detected from content).
        dark_shots: indices of shots rendered as night scenes.
        crf, preset: x264 quality and speed.
    """

    layout: str | Layout = "sbs-half"
    seconds: float = 10.0
    size: tuple[int, int] = (320, 180)
    fps: float = 24.0
    seed: int = 0
    chapters: int = 3
    shots: int | Sequence[int] | None = None
    vertical_offset_px: float = 0.0
    swap_eyes: bool = False
    letterbox: bool = True
    stereo_metadata: bool = True
    dark_shots: Sequence[int] = ()
    crf: int = 18
    preset: str = "veryfast"

    def checked_layout(self) -> Layout:
        """The layout, with the eye size it needs checked.

        Raises:
            ConfigError: an unknown layout, or an eye size the layout cannot pack.
        """
        try:
            layout = Layout(self.layout)
        except ValueError:
            raise ConfigError(f"unknown layout {self.layout!r}; valid: {', '.join(l.value for l in Layout)}") from None
        w, h = int(self.size[0]), int(self.size[1])
        need_w = 4 if layout is Layout.SBS_HALF else 2
        need_h = 4 if layout is Layout.TAB_HALF else 2
        if w % need_w or h % need_h or w < 32 or h < 32:
            raise ConfigError(
                f"eye size {w}x{h} must be at least 32x32 with width a multiple of {need_w} and height of {need_h}"
            )
        return layout

    def shot_bounds(self) -> list[tuple[int, int]]:
        """``[start_frame, end_frame)`` of every shot (drawn from ``seed`` unless ``shots`` lists lengths).

        Raises:
            ConfigError: no frames, or shot lengths that do not cover the movie.
        """
        total = int(round(self.seconds * self.fps))
        if total < 1:
            raise ConfigError(f"seconds={self.seconds} gives no frames at {self.fps} fps")
        rng = np.random.default_rng([int(self.seed), 7])
        shots = self.shots
        if shots is None or isinstance(shots, int):
            n = shots if isinstance(shots, int) else max(self.chapters + 2, int(round(self.seconds / 2.0)))
            lengths = _shot_lengths(total, n, self.fps, rng)
        else:
            lengths = [int(s) for s in shots]
            if sum(lengths) != total or min(lengths) < 1:
                raise ConfigError(f"shot lengths {lengths} must be positive and sum to {total} frames")
        bounds, start = [], 0
        for n_frames in lengths:
            bounds.append((start, start + n_frames))
            start += n_frames
        return bounds


def make_sample_movie(
    out_path: str | Path,
    spec: SampleMovieSpec | None = None,
    *,
    right_path: str | Path | None = None,
    progress: bool = False,
    **options: object,
) -> SampleMovie:
    """Render, encode and document a synthetic 3D movie.

    Args:
        out_path: the ``.mkv`` to write (the left eye's file for ``separate``).
        spec: what the movie looks like (default :class:`SampleMovieSpec`).
        right_path: the right eye's file for ``separate`` (default ``<stem>-right.mkv``).
        progress: show a progress bar.
        options: :class:`SampleMovieSpec` fields set on ``spec`` (``make_sample_movie(path,
            layout="tab-half", seconds=2)``).

    Returns:
        :class:`SampleMovie`, with the sidecar written next to the movie.
    """
    spec = dataclasses.replace(spec or SampleMovieSpec(), **options)
    layout = spec.checked_layout()
    w, h = int(spec.size[0]), int(spec.size[1])
    out_path = Path(out_path)
    bounds = spec.shot_bounds()
    chapter_list = _chapters_for(bounds, spec.chapters, spec.fps)
    stereo_mode = STEREO_MODE_TAGS[layout.value] if spec.stereo_metadata else None
    if layout is Layout.SEPARATE:
        right_path = Path(right_path) if right_path else out_path.with_name(out_path.stem + "-right.mkv")
    else:
        right_path = None

    meta_file = out_path.with_name(f".{out_path.name}.ffmetadata")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta_file.write_text(_ffmetadata(chapter_list, f"depthmine sample movie (seed {spec.seed})"))
    try:
        disparity, sky = _encode_movie(spec, layout, bounds, out_path, right_path, meta_file, stereo_mode, progress)
    finally:
        meta_file.unlink(missing_ok=True)

    crop = letterbox_crop(w, h, spec.letterbox)
    gt_json, gt_npz = ground_truth_paths(out_path)
    with atomic_path(gt_npz) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, disparity=disparity, sky=sky)
    finite = disparity[np.isfinite(disparity)]
    meta = {
        "version": GT_VERSION,
        "layout": layout.value,
        "eye_width": w,
        "eye_height": h,
        "fps": spec.fps,
        "frame_count": len(disparity),
        "seed": int(spec.seed),
        "shots": [list(b) for b in bounds],
        "chapters": [{"start_s": a, "end_s": b, "title": t} for a, b, t in chapter_list],
        "crop": crop.as_dict(),
        "vertical_offset_px": float(spec.vertical_offset_px),
        "swap_eyes": bool(spec.swap_eyes),
        "stereo_mode": stereo_mode,
        "files": {"video": out_path.name, "right": right_path.name if right_path else None},
        "disparity_range_px": [float(finite.min()), float(finite.max())] if finite.size else None,
        "letterbox": bool(spec.letterbox),
        "dark_shots": sorted(int(d) for d in spec.dark_shots),
        "disparity_convention": "left view; left x matches right x - d; larger is nearer; NaN in letterbox bars",
    }
    write_json_atomic(gt_json, meta)
    log.info("wrote %s (%s, %d frames, %d shots)", out_path, layout.value, len(disparity), len(bounds))
    return SampleMovie(
        path=out_path,
        right_path=right_path,
        gt_json=gt_json,
        gt_npz=gt_npz,
        layout=layout.value,
        eye_size=(w, h),
        fps=spec.fps,
        frame_count=len(disparity),
        shots=bounds,
        chapters=chapter_list,
        crop=crop,
        swap_eyes=bool(spec.swap_eyes),
        vertical_offset_px=float(spec.vertical_offset_px),
    )


def _encode_movie(
    spec: SampleMovieSpec,
    layout: Layout,
    bounds: list[tuple[int, int]],
    out_path: Path,
    right_path: Path | None,
    meta_file: Path,
    stereo_mode: str | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Render every frame, pack and encode it; returns the truth (disparity, sky) of every frame.

    The encoders finish their files only when every frame was written (a failure leaves no movie).
    """
    w, h = int(spec.size[0]), int(spec.size[1])
    fps = spec.fps
    total = bounds[-1][1]
    if right_path is not None:
        frame_size = (w, h)
    else:
        probe = pack_eyes(np.zeros((h, w, 3), np.uint8), np.zeros((h, w, 3), np.uint8), layout)
        frame_size = (probe.shape[1], probe.shape[0])
    encoders = [_Encoder(out_path, frame_size, fps, meta_file, stereo_mode, spec.crf, spec.preset)]
    if right_path is not None:
        encoders.append(_Encoder(right_path, frame_size, fps, meta_file, None, spec.crf, spec.preset))
    disparity = np.empty((total, h, w), np.float16)
    sky = np.empty((total, h, w), bool)
    ok = False
    try:
        frames = range(total)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, desc=f"rendering {out_path.name}", unit="frame")
        shot_i = 0
        for i in frames:
            while i >= bounds[shot_i][1]:
                shot_i += 1
            s0, s1 = bounds[shot_i]
            truth = render_stereo_frame(
                w,
                h,
                (i - s0) / fps,
                spec.seed,
                shot=shot_i,
                shot_duration_s=(s1 - s0) / fps,
                letterbox=spec.letterbox,
                vertical_offset_px=spec.vertical_offset_px,
                swap_eyes=spec.swap_eyes,
                dark=shot_i in spec.dark_shots,
            )
            disparity[i] = truth.disparity
            sky[i] = truth.sky
            packed = pack_eyes(truth.left, truth.right, layout)
            if isinstance(packed, tuple):
                encoders[0].write(packed[0])
                encoders[1].write(packed[1])
            else:
                encoders[0].write(packed)
        ok = True
    finally:
        for enc in encoders:
            enc.close(ok)
    return disparity, sky
