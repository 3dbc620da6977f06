"""Stereo movies rendered from a real rectified pair with ground truth: real pictures, known labels.

The synthetic sample movie (:mod:`pipeline.synthetic`) proves the plumbing; it cannot prove that
labels hold on real footage. This module turns a real pair (:class:`pipeline.labelbench.GroundTruthPair`)
into a short full-width side-by-side H.264 movie that goes through the whole ingest, the way a film
would: black letterbox bars, a convergence shift (the right view moved sideways, so part of the
scene lies behind the screen, with negative disparity, as in 3D films), a slow zoom (every frame
differs, as under a moving camera), encoded at Blu-ray-like quality. :meth:`PairMovie.truth` gives
the exact ground truth of any frame in the eye's pixels, so stored labels can be scored after the
crop, the resize to the stored width and the storage codecs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["PairMovie", "make_pair_movie"]


@dataclass(frozen=True)
class PairMovie:
    """A movie made by :func:`make_pair_movie` and what is needed to reproduce its truth.

    Attributes:
        path: the MKV (sbs-full: left eye on the left half).
        frames, fps: length and rate.
        eye_width, eye_height: one eye's size, letterbox bars included.
        bar_px: height of the black bar above and below the picture.
        convergence_px: the right view is shifted right by this much before the zoom (disparity
            decreases by it, times the zoom).
        zoom_end: the zoom factor of the last frame (the first is 1).
    """

    path: Path
    frames: int
    fps: float
    eye_width: int
    eye_height: int
    bar_px: int
    convergence_px: float
    zoom_end: float
    _disparity: np.ndarray

    def zoom_at(self, frame_index: int) -> float:
        return 1.0 + (self.zoom_end - 1.0) * frame_index / max(1, self.frames - 1)

    def truth(self, frame_index: int) -> np.ndarray:
        """The left eye's disparity (NaN unknown) of a frame, in eye pixels, bars included (NaN)."""
        s = self.zoom_at(frame_index)  # both views zoom about one centre: disparities scale by s
        d = (_zoom(self._disparity, s, cv2.INTER_NEAREST, fill=np.nan) - self.convergence_px) * s
        return _letterbox(d.astype(np.float32), self.bar_px, fill=np.nan)


def _zoom(image: np.ndarray, scale: float, interpolation: int, fill: float = 0.0) -> np.ndarray:
    """``image`` magnified by ``scale`` about its centre, same size."""
    h, w = image.shape[:2]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    m = np.float32([[scale, 0, cx * (1 - scale)], [0, scale, cy * (1 - scale)]])
    return cv2.warpAffine(image, m, (w, h), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def _shift_right(image: np.ndarray, dx: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def _letterbox(image: np.ndarray, bar: int, fill: float = 0.0) -> np.ndarray:
    pad = ((bar, bar), (0, 0)) + (((0, 0),) if image.ndim == 3 else ())
    return np.pad(image, pad, constant_values=fill)


def make_pair_movie(
    out_path: str | Path,
    left: np.ndarray,
    right: np.ndarray,
    disparity: np.ndarray,
    frames: int = 30,
    fps: float = 24.0,
    convergence_fraction: float = 0.4,
    zoom_end: float = 1.06,
    bar_fraction: float = 0.12,
    crf: int = 16,
) -> PairMovie:
    """Render and encode a movie of ``frames`` frames from one rectified pair.

    Args:
        out_path: the MKV to write (atomically).
        left, right: the pair (RGB uint8, same size; cropped to even sizes for yuv420p).
        disparity: the left view's ground truth (NaN unknown).
        frames, fps: the movie's length and rate (one shot: no cut).
        convergence_fraction: the right view moves right by this fraction of the median disparity,
            putting the far part of the scene behind the screen.
        zoom_end: the last frame's zoom about the centre (a slow push-in; 1 = static).
        bar_fraction: letterbox bar height above and below, as a fraction of the picture height.
        crf: x264 quality (16: about a Blu-ray's bits per pixel at this size).
    """
    from pipeline.synthetic import _Encoder  # the one H.264/MKV writer of the project

    h, w = left.shape[:2]
    h2, w2 = h // 2 * 2, w // 2 * 2
    left, right, disparity = left[:h2, :w2], right[:h2, :w2], np.asarray(disparity, np.float32)[:h2, :w2]
    convergence = float(convergence_fraction * np.nanmedian(disparity))
    bar = int(round(bar_fraction * h2))
    movie = PairMovie(
        Path(out_path), int(frames), float(fps), w2, h2 + 2 * bar, bar, convergence, float(zoom_end), disparity
    )
    shifted_right = _shift_right(right, convergence)
    encoder = _Encoder(Path(out_path), (2 * w2, h2 + 2 * bar), fps, None, "left_right", crf, "medium")
    try:
        for t in range(frames):
            s = movie.zoom_at(t)
            eye_l = _letterbox(_zoom(left, s, cv2.INTER_CUBIC), bar)
            eye_r = _letterbox(_zoom(shifted_right, s, cv2.INTER_CUBIC), bar)
            encoder.write(np.concatenate([eye_l, eye_r], axis=1))
    except BaseException:
        encoder.close(ok=False)
        raise
    encoder.close()
    return movie
