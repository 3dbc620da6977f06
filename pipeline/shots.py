"""Shot (scene-cut) detection with PySceneDetect's detectors, fed from our own decode pass.

PySceneDetect normally opens and decodes the video itself; here the one-pass reader
(:mod:`pipeline.video`) hands each frame's small BGR thumbnail to a detector's ``process_frame``
with a frame-number timecode, so the movie is decoded once for shots and samples alike.

Detectors are registered by name (``adaptive``, the default: robust to fast camera motion;
``content``: a fixed threshold on the HSV/edge difference). ``build_detector(config)`` builds one;
an unknown name lists the valid ones.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from pipeline.errors import ConfigError

__all__ = ["ShotConfig", "Shot", "ShotDetector", "DETECTORS", "register_detector", "build_detector", "shots_from_cuts"]


@dataclasses.dataclass
class ShotConfig:
    """Shot detection settings.

    Attributes:
        detector: registered detector name (``adaptive`` or ``content``).
        threshold: ``content``: the frame-difference score that makes a cut (PySceneDetect's 27).
            ``adaptive``: the ratio of a frame's score to its neighbours' (PySceneDetect's 3.0).
        min_content_val: ``adaptive``: the smallest frame-difference score that can be a cut.
        window_width: ``adaptive``: frames on each side averaged for the ratio.
        min_shot_frames: no two cuts closer than this (frames).
        thumb_width: width in pixels of the left-eye thumbnail the detector sees. PySceneDetect
            itself shrinks whole frames to about 256 px, i.e. ~128 px per eye of an SBS movie;
            160 px of one eye is more detail than that at half the per-frame cost of 256.
    """

    detector: str = "adaptive"
    threshold: float | None = None
    min_content_val: float = 15.0
    window_width: int = 2
    min_shot_frames: int = 15
    thumb_width: int = 160


@dataclasses.dataclass(frozen=True)
class Shot:
    """A shot: frames ``[start_frame, end_frame)`` of the movie; ``shot_id`` counts shots from 0."""

    shot_id: int
    start_frame: int
    end_frame: int

    @property
    def frame_count(self) -> int:
        return self.end_frame - self.start_frame

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class ShotDetector:
    """Wraps one PySceneDetect detector for streaming use.

    Contract: call :meth:`push` with consecutive frame indices from 0 and a ``HxWx3 uint8`` BGR
    thumbnail; it returns the cut frame indices found so far (a cut at ``c`` means a shot starts at
    ``c``). A cut at ``c`` is reported at the latest when frame ``c + latency`` is pushed.
    :meth:`finish` returns the remaining cuts.
    """

    def __init__(self, detector, fps: float, latency: int):
        self._detector = detector
        self._fps = float(fps)
        self.latency = int(latency)
        self._last = -1

    def push(self, frame_index: int, bgr: np.ndarray) -> list[int]:
        from scenedetect import FrameTimecode

        self._last = frame_index
        cuts = self._detector.process_frame(FrameTimecode(int(frame_index), self._fps), bgr)
        return [int(c.frame_num) for c in cuts if int(c.frame_num) > 0]

    def finish(self) -> list[int]:
        from scenedetect import FrameTimecode

        if self._last < 0:
            return []
        cuts = self._detector.post_process(FrameTimecode(int(self._last), self._fps))
        return [int(c.frame_num) for c in cuts or [] if int(c.frame_num) > 0]


DETECTORS: dict[str, Callable[[ShotConfig, float], ShotDetector]] = {}


def register_detector(name: str):
    """Decorator: register a factory ``(config, fps) -> ShotDetector`` under ``name``."""

    def deco(fn):
        DETECTORS[name] = fn
        return fn

    return deco


@register_detector("adaptive")
def _adaptive(config: ShotConfig, fps: float) -> ShotDetector:
    from scenedetect.detectors import AdaptiveDetector

    det = AdaptiveDetector(
        adaptive_threshold=3.0 if config.threshold is None else float(config.threshold),
        min_scene_len=int(config.min_shot_frames),
        window_width=int(config.window_width),
        min_content_val=float(config.min_content_val),
    )
    return ShotDetector(det, fps, latency=det.event_buffer_length + 1)


@register_detector("content")
def _content(config: ShotConfig, fps: float) -> ShotDetector:
    from scenedetect.detectors import ContentDetector

    det = ContentDetector(
        threshold=27.0 if config.threshold is None else float(config.threshold),
        min_scene_len=int(config.min_shot_frames),
    )
    # the merge filter may report a cut up to min_scene_len frames late
    return ShotDetector(det, fps, latency=det.event_buffer_length + 1)


def build_detector(config: ShotConfig, fps: float) -> ShotDetector:
    """The detector named by ``config.detector``."""
    try:
        factory = DETECTORS[config.detector]
    except KeyError:
        raise ConfigError(f"unknown shot detector {config.detector!r}; valid: {', '.join(sorted(DETECTORS))}") from None
    return factory(config, fps)


def shots_from_cuts(cuts: list[int], frame_count: int) -> list[Shot]:
    """Half-open shots from sorted cut frames (each the first frame of a new shot)."""
    bounds = [0] + sorted({c for c in cuts if 0 < c < frame_count}) + [frame_count]
    return [Shot(i, a, b) for i, (a, b) in enumerate(zip(bounds, bounds[1:])) if b > a]
