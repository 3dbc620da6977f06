"""Which frames of a movie become training samples: the sampling rules of the method, as pure code.

The rules (MiDaS, section 1; every number is a :class:`SamplingConfig` field):

1. **Chapters.** With ``n`` chapters, frames before the start of chapter ``drop_first_chapters``
   (0-based) or from the end of chapter ``n - 1 - drop_last_chapters`` on are dropped (studio
   logos, credits); with 0 chapters to drop on a side, nothing is dropped on that side (not even
   frames outside every chapter mark). A frame's time is ``frame_index / fps``. When the movie has no more chapters
   than are to be dropped (including none at all), no frame is dropped for chapters: dropping the
   whole movie is never what was meant (a warning is logged).
2. **Clips.** A shot ``[start, end)`` shorter than ``ceil(min_clip_seconds * fps)`` frames is
   discarded whole.
3. **Windows.** From each kept shot, window ``k = 0, 1, 2, ...`` starts at
   ``start + round(k * window_every_seconds * fps)`` and holds ``window_frames`` consecutive
   frames, cut at the shot's end. Window 0 is "the first 24 frames"; the others are "24
   consecutive frames every 4 s".
4. **Rate.** Inside each window, the frame at offset ``j`` is kept when ``j % step == 0`` with
   ``step = max(1, round(fps / rate))``, ``rate = train_fps`` for the ``train`` split and
   ``eval_fps`` for ``val``/``test``. At 24 fps: train keeps offsets 0, 6, 12, 18 (4 per window,
   4 fps), val/test keeps offset 0 (1 per window, 1 fps).

**Clips mode** (``mode: clips``, for video depth models that train on consecutive frames): rule 4
changes; rules 1-3 stay.

4c. **Clips.** A clip is ``clip_frames`` frames ``clip_stride`` apart, spanning
   ``span = (clip_frames - 1) * clip_stride + 1`` frames. Inside each window, clips may start at
   the offsets ``j`` with ``j % max(step, span) == 0`` (``step`` of rule 4: the split's rate still
   decides how often a clip starts; a clip never starts inside the previous one), taken in order,
   a start being skipped while it lies inside the previous accepted clip (so no frame is in two
   clips). A clip is kept only when all its frames lie in its shot (a clip never crosses a cut)
   and in the range rule 1 keeps; a clip may run past its window's end. At 24 fps with the
   defaults (8 frames, stride 1): train clips start at offsets 0, 8, 16 of each window (24
   frames per window), val/test at offset 0 (8 frames per window).

:func:`sample_clips` gives the clips (lists of frame indices) in order; in clips mode
:func:`sample_frames` is their concatenation. Clip ids are positions in that list.

:func:`sample_frames` applies them to a list of shots; the one-pass reader
(:mod:`pipeline.video`) uses the same per-frame helpers while streaming, and checks that the frames
it yielded equal :func:`sample_frames` of the shots it found.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Iterable, Iterator, Sequence

from pipeline.errors import ConfigError

__all__ = [
    "SamplingConfig",
    "SPLITS",
    "sample_frames",
    "kept_frame_range",
    "in_window",
    "min_clip_frames",
    "frame_step",
    "SAMPLING_MODES",
    "clip_span",
    "clip_offsets",
    "sample_clips",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

#: values of :attr:`SamplingConfig.mode`
SAMPLING_MODES = ("frames", "clips")


@dataclasses.dataclass
class SamplingConfig:
    """The sampling rules' numbers (defaults: the paper's).

    Attributes:
        drop_first_chapters: chapters dropped at the start (studio logos).
        drop_last_chapters: chapters dropped at the end (credits).
        min_clip_seconds: shots shorter than this are discarded.
        head_frames: frames taken at the start of each shot (window 0).
        window_frames: frames in each later window.
        window_every_seconds: distance between window starts.
        train_fps: rate inside the windows for training movies.
        eval_fps: rate inside the windows for validation and test movies.
        mode: ``frames`` (default: single frames at the rates above, the paper's set) or ``clips``
            (runs of consecutive frames for temporally consistent video depth: rule 4c in this
            module's docstring). In clips mode every frame of a clip is labelled; a frame the
            per-frame checks reject stays in its clip as a row without a label (its reason in
            ``clip_reason``), so a trainer gets whole clips and chooses what to do with such frames.
        clip_frames: frames per clip (clips mode; >= 2).
        clip_stride: distance in frames between consecutive frames of a clip (1: truly consecutive).
    """

    drop_first_chapters: int = 1
    drop_last_chapters: int = 1
    min_clip_seconds: float = 1.0
    head_frames: int = 24
    window_frames: int = 24
    window_every_seconds: float = 4.0
    train_fps: float = 4.0
    eval_fps: float = 1.0
    mode: str = "frames"
    clip_frames: int = 8
    clip_stride: int = 1

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ConfigError(f"sampling.mode {self.mode!r}: valid modes are {', '.join(SAMPLING_MODES)}")
        if int(self.clip_frames) < 2 or int(self.clip_stride) < 1:
            raise ConfigError(
                f"sampling: clip_frames must be >= 2 and clip_stride >= 1 (got {self.clip_frames}, {self.clip_stride})"
            )
        if self.drop_first_chapters < 0 or self.drop_last_chapters < 0:
            raise ConfigError("sampling: drop_first_chapters and drop_last_chapters must be >= 0")
        if self.head_frames < 0 or self.window_frames < 0:
            raise ConfigError("sampling: head_frames and window_frames must be >= 0")
        if self.window_every_seconds <= 0 or self.train_fps <= 0 or self.eval_fps <= 0:
            raise ConfigError("sampling: window_every_seconds, train_fps and eval_fps must be > 0")
        if self.min_clip_seconds < 0:
            raise ConfigError("sampling: min_clip_seconds must be >= 0")


def _chapter_bounds(ch) -> tuple[float, float]:
    if hasattr(ch, "start_s"):
        return float(ch.start_s), float(ch.end_s)
    if isinstance(ch, dict):
        return float(ch["start_s"]), float(ch["end_s"])
    return float(ch[0]), float(ch[1])


def kept_frame_range(
    frame_count: int | None, fps: float, chapters: Sequence, config: SamplingConfig
) -> tuple[int, int]:
    """``[first, last)`` frame indices left after dropping chapters (rule 1).

    ``chapters`` holds :class:`pipeline.probe.Chapter`, ``(start_s, end_s[, title])`` tuples or
    ``{start_s, end_s}`` dicts. ``frame_count=None`` leaves the end open (``sys.maxsize``).
    """
    end_all = frame_count if frame_count is not None else 2**62
    bounds = sorted(_chapter_bounds(c) for c in chapters)
    n = len(bounds)
    if n <= config.drop_first_chapters + config.drop_last_chapters:
        if n and (config.drop_first_chapters or config.drop_last_chapters):
            log.warning(
                "only %d chapter(s): not dropping any (drop_first=%d, drop_last=%d)",
                n,
                config.drop_first_chapters,
                config.drop_last_chapters,
            )
        return 0, end_all
    # frame i is kept when start_s <= i / fps < end_s; nothing dropped on a side with 0 chapters
    first, last = 0, end_all
    if config.drop_first_chapters:
        first = max(0, math.ceil(bounds[config.drop_first_chapters][0] * fps - 1e-6))
    if config.drop_last_chapters:
        last = min(end_all, math.ceil(bounds[n - 1 - config.drop_last_chapters][1] * fps - 1e-6))
    return first, max(first, last)


def min_clip_frames(fps: float, config: SamplingConfig) -> int:
    """Rule 2: the shortest shot kept, in frames."""
    return max(1, math.ceil(config.min_clip_seconds * fps - 1e-6))


def frame_step(fps: float, split: str, config: SamplingConfig) -> int:
    """Rule 4: keep every ``step``-th frame inside a window."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    rate = config.train_fps if split == "train" else config.eval_fps
    return max(1, round(fps / rate))


def in_window(offset: int, fps: float, step: int, config: SamplingConfig) -> bool:
    """Rules 3 and 4 for a frame ``offset`` frames after its shot's start."""
    if offset < config.head_frames:
        return offset % step == 0
    every = config.window_every_seconds * fps
    # the latest window start at or before `offset` (window k starts at round(k * every))
    k = int(offset // every) + 1
    while k > 0 and round(k * every) > offset:
        k -= 1
    if k == 0:
        return False
    j = offset - round(k * every)
    return j < config.window_frames and j % step == 0


def clip_span(config: SamplingConfig) -> int:
    """Frames a clip spans, first to last inclusive: ``(clip_frames - 1) * clip_stride + 1``."""
    return (int(config.clip_frames) - 1) * int(config.clip_stride) + 1


def clip_offsets(fps: float, split: str, config: SamplingConfig, limit: int | None = None) -> Iterator[int]:
    """Rule 4c: the start offsets (from a shot's first frame) of its clips, increasing.

    The same for every shot (it depends on the frame rate, split and numbers only), so a streaming
    reader can follow it without knowing where the shot ends. ``limit``: stop before offsets at or
    beyond it (None: as long as windows keep coming; ends when later windows are empty).
    """
    step = frame_step(fps, split, config)
    span = clip_span(config)
    gap = max(step, span)
    every = config.window_every_seconds * fps
    next_free = 0
    k = 0
    while True:
        start, length = (0, config.head_frames) if k == 0 else (round(k * every), config.window_frames)
        if k > 0 and length <= 0:
            return
        if limit is not None and start >= limit:
            return
        for j in range(0, length, gap):
            offset = start + j
            if limit is not None and offset >= limit:
                return
            if offset >= next_free:
                yield offset
                next_free = offset + span
        k += 1


def sample_clips(
    shots: Iterable,
    fps: float,
    split: str,
    chapters: Sequence = (),
    config: SamplingConfig | None = None,
    frame_count: int | None = None,
) -> list[list[int]]:
    """Clips mode: the clips of a movie's shots, in order, each a list of frame indices.

    Arguments as :func:`sample_frames`. A clip lies inside one shot (never across a cut) and
    inside the range rule 1 keeps; its frames are ``clip_stride`` apart.
    """
    config = config or SamplingConfig()
    spans, first, last, _, shortest = _movie_rules(shots, fps, split, chapters, config, frame_count)
    span = clip_span(config)
    out: list[list[int]] = []
    for start, end in spans:
        if end - start < shortest:
            continue
        for offset in clip_offsets(fps, split, config, limit=end - start):
            a = start + offset
            if a + span > end:
                break
            if a >= first and a + span <= last:
                out.append(list(range(a, a + span, int(config.clip_stride))))
    return out


def _spans(shots: Iterable) -> list[tuple[int, int]]:
    return [(s.start_frame, s.end_frame) if hasattr(s, "start_frame") else (int(s[0]), int(s[1])) for s in shots]


def _movie_rules(
    shots: Iterable, fps: float, split: str, chapters: Sequence, config: SamplingConfig, frame_count: int | None
) -> tuple[list[tuple[int, int]], int, int, int, int]:
    """What both sampling modes start from: the shots' spans, rule 1's kept range ``[first, last)``,
    the split's frame step (which also checks the split) and the shortest shot kept."""
    spans = _spans(shots)
    if frame_count is None:
        frame_count = spans[-1][1] if spans else 0
    first, last = kept_frame_range(frame_count, fps, chapters, config)
    return spans, first, last, frame_step(fps, split, config), min_clip_frames(fps, config)


def sample_frames(
    shots: Iterable,
    fps: float,
    split: str,
    chapters: Sequence = (),
    config: SamplingConfig | None = None,
    frame_count: int | None = None,
) -> list[int]:
    """The sorted frame indices to sample from a movie's shots.

    Args:
        shots: ``[start, end)`` pairs (or objects with ``start_frame``/``end_frame``), in order.
        fps: the movie's frame rate.
        split: ``train``, ``val`` or ``test`` (the rate of rule 4).
        chapters: the movie's chapters (rule 1).
        config: the rules' numbers.
        frame_count: frames in the movie (defaults to the end of the last shot).

    Returns:
        Sorted frame indices (in clips mode, the frames of :func:`sample_clips`).
    """
    config = config or SamplingConfig()
    if config.mode == "clips":
        return [i for clip in sample_clips(shots, fps, split, chapters, config, frame_count) for i in clip]
    spans, first, last, step, shortest = _movie_rules(shots, fps, split, chapters, config, frame_count)
    out: list[int] = []
    for start, end in spans:
        if end - start < shortest:
            continue
        for i in range(max(start, first), min(end, last)):
            if in_window(i - start, fps, step, config):
                out.append(i)
    return out
