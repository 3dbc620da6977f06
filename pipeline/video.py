"""The one-pass stereo reader: decode a 3D movie once, detect shots and yield the sampled eyes.

Design (why it is fast): a film has ~170,000 frames and we keep a few thousand. PyAV decodes
every frame in-process with FFmpeg's frame threads; for each frame we read only the luma and
chroma planes of the left eye, shrink them to a thumbnail of ``ShotConfig.thumb_width`` pixels and
hand it to the PySceneDetect detector. The expensive work (YUV to RGB at full resolution, splitting
the eyes, restoring half-resolution eyes, cropping the letterbox) happens only for the frames the
sampling rules keep. Nothing is decoded twice and nothing is written to disk.

Streaming and memory: whether a frame is sampled depends on where its shot starts (known once the
detector has seen ``latency`` more frames) and on whether its shot lasts at least
``min_clip_seconds`` (known once it has). The reader keeps the last ``latency + 1`` decoded frames
and the candidate frames of the current shot until its length is confirmed: a bounded buffer of
about a second of video, whatever the movie's length. After the iteration, ``scan.shots`` and
``scan.samples`` are final, equal to what was yielded and to
:func:`pipeline.sampling.sample_frames` of the detected shots (checked). The scan is
deterministic, so a crashed ingest can re-run it and skip the shots it already stored.

Frame indices count decoded frames in presentation order from 0; ``pts_seconds`` is the frame's
presentation time. Two separate eye files are decoded in lock step and paired by timestamp.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from pipeline.errors import BadInputError, ConfigError
from pipeline.layouts import (
    CropBox,
    Layout,
    LayoutDecision,
    check_splittable,
    detect_layout,
    detect_letterbox,
    eye_size,
    layout_from_metadata,
    split_frame,
)
from pipeline.probe import MovieInfo, open_container, probe
from pipeline.sampling import (
    SamplingConfig,
    clip_offsets,
    clip_span,
    frame_step,
    in_window,
    kept_frame_range,
    min_clip_frames,
    sample_clips,
    sample_frames,
)
from pipeline.shots import Shot, ShotConfig, build_detector

__all__ = ["frame_to_rgb", "SampledFrame", "StereoSource", "MovieScan", "open_stereo", "scan_movie"]

log = logging.getLogger(__name__)

_PLANAR_420 = {"yuv420p", "yuvj420p"}


@dataclasses.dataclass
class SampledFrame:
    """One sampled stereo frame.

    Attributes:
        frame_index: index of the frame in the movie (decode order = presentation order, from 0).
        pts_seconds: presentation time in seconds.
        shot_id: index of its shot in ``scan.shots``.
        left, right: ``HxWx3 uint8`` RGB eyes at full per-eye resolution, letterbox cropped.
        clip_id, clip_pos: in clips mode (``SamplingConfig.mode``), the frame's clip (0-based in
            the movie, the order of :func:`pipeline.sampling.sample_clips`) and its position in
            it; None in frames mode.
    """

    frame_index: int
    pts_seconds: float
    shot_id: int
    left: np.ndarray
    right: np.ndarray
    clip_id: int | None = None
    clip_pos: int | None = None


@dataclasses.dataclass
class _Raw:
    index: int
    pts: float
    frame: object  # av.VideoFrame (left file's, or the packed frame)
    right: object | None  # av.VideoFrame of the right file (separate layout)
    thumb: np.ndarray | None = None
    prepared: Any = None  # what ``iter_raw(prepare=...)`` computed for this frame on the decode thread


class StereoSource:
    """An opened 3D movie: its metadata, layout (with the reason), eye size and letterbox crop.

    Build with :func:`open_stereo`. Attributes: ``path``, ``right_path``, ``info`` (and
    ``right_info``), ``layout``, ``layout_reason``, ``eyes_swapped`` (metadata says right eye
    first), ``eye_size`` (full per-eye ``(w, h)``), ``crop`` (:class:`CropBox` in eye coordinates).
    """

    def __init__(
        self,
        path: Path,
        info: MovieInfo,
        decision: LayoutDecision,
        right_path: Path | None = None,
        right_info: MovieInfo | None = None,
    ):
        self.path = path
        self.right_path = right_path
        self.info = info
        self.right_info = right_info
        self.layout: Layout = decision.layout
        self.layout_reason: str = decision.reason
        self.layout_scores: dict[str, float] = decision.scores
        self.eyes_swapped: bool = decision.eyes_swapped
        self.eye_size: tuple[int, int] = eye_size(info.width, info.height, self.layout)
        self._crop: CropBox = CropBox.full(*self.eye_size)
        self._thumb_geometry: dict = {}

    @property
    def crop(self) -> CropBox:
        """The letterbox crop of each eye (full per-eye coordinates)."""
        return self._crop

    @crop.setter
    def crop(self, value: CropBox) -> None:
        self._crop = value
        self._thumb_geometry = {}

    def __repr__(self) -> str:
        return (
            f"StereoSource({str(self.path)!r}, layout={self.layout.value}, eye={self.eye_size[0]}x{self.eye_size[1]}, "
            f"crop={self.crop}, fps={self.info.fps:g})"
        )

    # -- decoding ---------------------------------------------------------------------------

    def _open_video(self, path: Path, frame_threads: bool = True):
        container = open_container(path)
        stream = container.streams.video[0]
        # Frame threads decode at FFmpeg's speed for a long run of frames; a seek that wants one
        # frame is faster without them (no pipeline of frames to fill before the first comes out).
        stream.thread_type = "AUTO" if frame_threads else "SLICE"
        return container, stream

    def iter_raw(
        self,
        prefetch: int = 8,
        thumb_width: int | None = None,
        prepare: Callable[[_Raw], Any] | None = None,
    ) -> Iterator[_Raw]:
        """Decoded frames (not converted) with index and time; pairs the two files of ``separate``.

        With ``prefetch > 0`` demuxing and decoding run in a background thread that stays up to
        ``prefetch`` frames ahead (FFmpeg and OpenCV release the GIL while they work), so the
        per-frame Python work of the caller overlaps the decoder instead of stalling its frame
        threads. With ``thumb_width`` that thread also makes each frame's detection thumbnail, and
        ``prepare(raw)`` (stored as ``raw.prepared``) runs there too: per-frame work that needs no
        state of the caller's (a hash of every frame) then runs beside the caller's, not in turn.
        """
        if prefetch <= 0:
            return self._decode_raw(thumb_width, prepare)
        return _prefetched(lambda: self._decode_raw(thumb_width, prepare), prefetch)

    def _decode_raw(
        self, thumb_width: int | None = None, prepare: Callable[[_Raw], Any] | None = None
    ) -> Iterator[_Raw]:
        import av

        fps = self.info.fps
        containers = []
        index = -1
        try:
            c, s = self._open_video(self.path)
            containers.append(c)
            left_iter = c.decode(s)
            pairer = None
            if self.right_path is not None:
                c2, s2 = self._open_video(self.right_path)
                containers.append(c2)
                pairer = _Pairer(iter(c2.decode(s2)))
            unpaired = 0
            t0 = None
            for frame in left_iter:
                index += 1
                pts = frame.time if frame.time is not None else index / fps
                right = None
                if pairer is not None:
                    if t0 is None:
                        t0 = float(pts)
                    right, missed = pairer.match(pts - t0, 0.5 / fps)
                    if right is None:
                        raise BadInputError(
                            self.right_path, "the right eye file has no frames", "give the right eye's video"
                        )
                    unpaired += missed
                raw = _Raw(index, float(pts), frame, right)
                if thumb_width:
                    raw.thumb = self.thumb(raw, thumb_width)
                if prepare is not None:
                    raw.prepared = prepare(raw)
                yield raw
            if unpaired:
                log.warning(
                    "%s: %d frame(s) of the right eye file had no partner within half a frame",
                    self.right_path,
                    unpaired,
                )
        except av.error.FFmpegError as exc:
            raise BadInputError(
                self.path,
                f"decoding failed after frame {index} ({exc.strerror or exc}): the file is truncated or corrupt",
                "copy the file again, or remux it with ffmpeg -c copy",
            ) from None
        finally:
            for c in containers:
                c.close()

    def seek_frames(self, count: int = 12) -> list[_Raw]:
        """A few frames spread over the movie (one keyframe seek each): for layout and letterbox."""
        import av

        duration = max(self.info.duration_s, 1.0 / self.info.fps)
        out: list[_Raw] = []
        containers = []
        try:
            c, s = self._open_video(self.path, frame_threads=False)
            containers.append(c)
            c2 = s2 = None
            if self.right_path is not None:
                c2, s2 = self._open_video(self.right_path, frame_threads=False)
                containers.append(c2)
            seen = set()
            for k in range(count):
                t = duration * (k + 0.5) / count
                f = _frame_near(c, s, t)
                if f is None or f.pts in seen:
                    continue
                seen.add(f.pts)
                r = _frame_near(c2, s2, f.time or t) if c2 is not None else None
                if c2 is not None and r is None:
                    continue
                out.append(_Raw(-1, float(f.time or t), f, r))
        except av.error.FFmpegError as exc:
            raise BadInputError(
                self.path, f"cannot seek in the file ({exc.strerror or exc})", "remux it with ffmpeg -c copy"
            ) from None
        finally:
            for c in containers:
                c.close()
        return out

    # -- conversion -------------------------------------------------------------------------

    def eyes(self, raw: _Raw, crop: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution RGB ``(left, right)`` of a decoded frame, letterbox-cropped."""
        if self.layout is Layout.SEPARATE:
            left = frame_to_rgb(raw.frame)
            right = frame_to_rgb(raw.right)
        else:
            left, right = split_frame(frame_to_rgb(raw.frame), self.layout)
        if self.eyes_swapped:
            left, right = right, left
        if crop:
            left, right = self.crop.apply(left), self.crop.apply(right)
        return np.ascontiguousarray(left), np.ascontiguousarray(right)

    def thumb(self, raw: _Raw, width: int) -> np.ndarray:
        """A small BGR picture of the left eye's picture area from the YUV planes (no full RGB).

        Runs on every frame of the movie, so its geometry is computed once per frame size and the
        work is three small resizes and one colour conversion of the thumbnail (~0.1 ms).
        """
        frame = raw.frame
        if frame.format.name not in _PLANAR_420:
            frame = frame.reformat(format="yuv420p")
        planes = frame.planes
        y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in planes[:3])
        key = (y.shape, width)
        geom = self._thumb_geometry.get(key)
        if geom is None:
            geom = self._thumb_geometry[key] = self._thumb_geom(y.shape, width)
        (y0, y1, x0, x1), size = geom
        ys = cv2.resize(y[y0:y1, x0:x1], size, interpolation=cv2.INTER_NEAREST)
        us = cv2.resize(u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2], size, interpolation=cv2.INTER_NEAREST)
        vs = cv2.resize(v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2], size, interpolation=cv2.INTER_NEAREST)
        return cv2.cvtColor(cv2.merge([ys, us, vs]), cv2.COLOR_YUV2BGR)

    def _thumb_geom(self, shape: tuple[int, int], width: int):
        """Where the left eye's picture area lies in the stored frame, and the thumbnail size."""
        fh, fw = shape
        sbs = self.layout in (Layout.SBS_FULL, Layout.SBS_HALF)
        tab = self.layout in (Layout.TAB_FULL, Layout.TAB_HALF)
        if sbs:
            region = (fw // 2 if self.eyes_swapped else 0, 0, fw // 2, fh)
        elif tab:
            region = (0, fh // 2 if self.eyes_swapped else 0, fw, fh // 2)
        else:
            region = (0, 0, fw, fh)
        ew, eh = self.eye_size
        sx, sy = region[2] / ew, region[3] / eh
        x0 = region[0] + int(self.crop.x * sx)
        y0 = region[1] + int(self.crop.y * sy)
        x0 -= x0 % 2
        y0 -= y0 % 2
        cw, ch = max(2, int(self.crop.w * sx)), max(2, int(self.crop.h * sy))
        # Nearest-neighbour straight to the thumbnail size: it reads only the thumbnail's pixels of
        # a frame that is cold in cache (~0.03 ms for a 960x540 eye, where area averaging takes
        # 0.5-1.2 ms and the whole per-frame budget is ~0.3 ms). This is the strided subsampling
        # PySceneDetect itself has long used; hard cuts do not depend on fine detail. The
        # thumbnail takes the eye's true aspect (half layouts are unsqueezed here for free).
        tw = min(width, self.crop.w)
        th = max(2, int(round(self.crop.h * tw / self.crop.w)))
        return (y0, y0 + ch, x0, x0 + cw), (tw, th)


_UNSPECIFIED_COLORSPACES = (0, 2)  # AVCOL_SPC_RGB (mis-set by some muxers) and AVCOL_SPC_UNSPECIFIED


def frame_to_rgb(frame) -> np.ndarray:
    """A decoded PyAV video frame as HxWx3 uint8 RGB with the right YUV matrix.

    The frame's own colour-space tag wins. Untagged frames follow the broadcast convention that
    FFmpeg's converter ignores: HD pictures (720 lines or more, every Blu-ray) are BT.709, smaller
    ones BT.601; converting a BT.709 picture with BT.601 shifts its colours (greens and reds).
    """
    if frame.format.name in ("rgb24", "rgba", "bgr24", "gbrp"):
        return frame.to_ndarray(format="rgb24")
    src = None
    if int(frame.colorspace) in _UNSPECIFIED_COLORSPACES:
        src = "ITU709" if frame.height >= 720 else "ITU601"
    return frame.reformat(format="rgb24", src_colorspace=src).to_ndarray()


def _prefetched(make_iter, depth: int) -> Iterator:
    """Run ``make_iter()`` in a daemon thread, ``depth`` items ahead; errors re-raise here.

    Closing the returned generator early (a consumer that stops) stops the thread and lets it close
    its containers; memory stays bounded by ``depth`` items.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            it = make_iter()
            try:
                for item in it:
                    if not put((None, item)):
                        return
            finally:
                it.close()
            put((done, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((exc, None))

    thread = threading.Thread(target=work, name="depthmine-decode", daemon=True)
    thread.start()
    try:
        while True:
            status, item = q.get()
            if status is done:
                return
            if status is not None:
                raise status
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _frame_near(container, stream, t: float):
    """The first frame decoded after a backward keyframe seek to ``t`` seconds (or None)."""
    container.seek(int(max(0.0, t) / stream.time_base), stream=stream, backward=True)
    for frame in container.decode(stream):
        return frame
    return None


class _Pairer:
    """Pairs right-eye frames with left-eye times: the right frame within ``tol`` of ``t``.

    Extra right frames are skipped; a left frame without a partner reuses the last matched right
    frame (counted and reported), so frame indices stay those of the left file.
    """

    def __init__(self, frames: Iterator):
        self._frames = frames
        self._next = None
        self._last = None
        self._t0: float | None = None  # first right time: files may start at different timestamps

    def match(self, t: float, tol: float):
        """``t`` is the left frame's time since the left file's first frame."""
        while True:
            if self._next is None:
                self._next = next(self._frames, None)
                if self._next is None:
                    break
                if self._t0 is None:
                    self._t0 = float(self._next.time or 0.0)
            ct = (self._next.time - self._t0) if self._next.time is not None else t
            if ct < t - tol:
                self._next = None  # a right frame with no left partner
                continue
            if ct > t + tol:
                break  # belongs to a later left frame
            self._last, self._next = self._next, None
            return self._last, 0
        partner = self._last if self._last is not None else self._next
        return partner, 1


def open_stereo(
    path: str | Path, layout: str | Layout | None = None, right_path: str | Path | None = None, probe_frames: int = 12
) -> StereoSource:
    """Open a 3D movie: probe it, decide its layout (logged with the reason), find the letterbox.

    Args:
        path: the movie (the left eye's file when ``right_path`` is given).
        layout: force a layout (``sbs-half``...); None reads the metadata, else looks at the content.
        right_path: the right eye's file: the ``separate`` layout.
        probe_frames: frames seeked over the movie for content layout detection and the letterbox.

    Raises:
        BadInputError: unreadable input, a 2D movie, an MVC stream, an odd frame size for the layout.
    """
    path = Path(path)
    info = probe(path)
    right_info = None
    if right_path is not None:
        if layout is not None and Layout(str(layout)) is not Layout.SEPARATE:
            raise ConfigError(f"a right eye file was given, so the layout is 'separate', not {layout!r}")
        right_path = Path(right_path)
        right_info = probe(right_path)
        if (right_info.width, right_info.height) != (info.width, info.height):
            raise BadInputError(
                right_path,
                f"right eye is {right_info.width}x{right_info.height} but the left eye "
                f"({path.name}) is {info.width}x{info.height}",
                "give the two eyes of the same movie",
            )
        if abs(right_info.fps - info.fps) > 0.01 * info.fps:
            raise BadInputError(
                right_path,
                f"right eye runs at {right_info.fps:g} fps but the left at {info.fps:g} fps",
                "give the two eyes of the same movie",
            )
        decision = LayoutDecision(Layout.SEPARATE, f"two eye files given ({path.name} left, {right_path.name} right)")
    elif layout is not None:
        try:
            chosen = Layout(str(layout))
        except ValueError:
            raise ConfigError(f"unknown layout {layout!r}; valid: {', '.join(l.value for l in Layout)}") from None
        if chosen is Layout.SEPARATE:
            raise ConfigError("layout 'separate' needs the right eye's file (right_path / --right)")
        decision = LayoutDecision(chosen, f"layout {chosen.value} given by the user")
    else:
        decision = layout_from_metadata(info)
    source = StereoSource(path, info, decision or LayoutDecision(Layout.SBS_FULL, "undecided"), right_path, right_info)
    samples = source.seek_frames(probe_frames)
    if not samples:
        raise BadInputError(path, "no frame could be decoded", "the file may be truncated or corrupt")
    if decision is None:
        gray = [s.frame.to_ndarray(format="gray") for s in samples]
        decision = detect_layout(gray, path=path, sample_aspect_ratio=info.sample_aspect_ratio)
        source = StereoSource(path, info, decision, right_path, right_info)
    if source.layout is not Layout.SEPARATE:
        check_splittable(info.width, info.height, source.layout, path)
    eyes = []
    for s in samples:
        left, right = source.eyes(s, crop=False)
        eyes += [left, right]
    source.crop = detect_letterbox(eyes)
    log.info(
        "%s: layout %s (%s); eye %dx%d; letterbox crop %s",
        path,
        source.layout.value,
        source.layout_reason,
        *source.eye_size,
        source.crop,
    )
    return source


class MovieScan:
    """One pass over a movie: iterate to get the :class:`SampledFrame` s; then read ``shots``/``samples``.

    Iterating decodes the movie exactly once (a second iteration raises). ``run()`` iterates and
    discards the frames (for ``depthmine shots``). With ``keep_thumbnails``, ``thumbnails[shot_id]``
    holds the first and middle frame of each shot as small RGB pictures (contact sheets).
    """

    def __init__(
        self,
        source: StereoSource,
        shots: ShotConfig,
        sampling: SamplingConfig,
        split: str,
        progress: bool = False,
        keep_thumbnails: bool = False,
    ):
        self.source = source
        self.shot_config = shots
        self.sampling = sampling
        self.split = split
        frame_step(source.info.fps, split, sampling)  # validates the split now, not mid-scan
        self.progress = progress
        self.keep_thumbnails = keep_thumbnails
        self.shots: list[Shot] = []
        self.samples: list[int] = []
        self.clips: list[list[int]] = []  # clips mode: each clip's frame indices, in order
        self.frame_count: int | None = None
        self.thumbnails: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.done = False
        self._started = False

    def run(self) -> MovieScan:
        for _ in self:
            pass
        return self

    def as_dict(self) -> dict:
        """The JSON of ``depthmine shots``: shots (half-open), samples, layout and movie facts."""
        src = self.source
        return {
            "movie": str(src.path),
            "right": str(src.right_path) if src.right_path else None,
            "layout": src.layout.value,
            "layout_reason": src.layout_reason,
            "eye_size": list(src.eye_size),
            "crop": src.crop.as_dict(),
            "fps": src.info.fps,
            "frame_count": self.frame_count,
            "split": self.split,
            "shots": [s.as_dict() for s in self.shots],
            "samples": list(self.samples),
            **({"clips": [list(c) for c in self.clips]} if self.sampling.mode == "clips" else {}),
        }

    def __iter__(self) -> Iterator[SampledFrame]:
        if self._started:
            raise RuntimeError("a MovieScan decodes the movie once; call scan_movie() again to rescan")
        self._started = True
        return self._scan()

    def _scan(self) -> Iterator[SampledFrame]:
        src = self.source
        one_pass = _ScanPass(self)
        latency = one_pass.detector.latency
        ring: collections.deque[_Raw] = collections.deque()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=src.info.frame_count or None, desc=f"scanning {src.path.name}", unit="frame")
        last_index = -1
        try:
            for raw in src.iter_raw(thumb_width=int(self.shot_config.thumb_width)):
                last_index = raw.index
                one_pass.add_cuts(one_pass.detector.push(raw.index, raw.thumb))
                ring.append(raw)
                while ring and ring[0].index <= raw.index - latency:
                    yield from one_pass.finalize(ring.popleft())
                if bar is not None:
                    bar.update(1)
            one_pass.add_cuts(one_pass.detector.finish())
            while ring:
                yield from one_pass.finalize(ring.popleft())
        finally:
            if bar is not None:
                bar.close()
        frame_count = last_index + 1
        if frame_count == 0:
            raise BadInputError(src.path, "no video frame could be decoded", "the file may be truncated or corrupt")
        one_pass.close_shot(frame_count)
        self._finish(frame_count)

    def _finish(self, frame_count: int) -> None:
        """Record the decoded frame count and check what was yielded against the pure sampling rules."""
        src = self.source
        fps = src.info.fps
        self.frame_count = frame_count
        expected = src.info.frame_count
        if expected and abs(expected - frame_count) > max(2, 0.02 * expected):
            log.warning("%s: decoded %d frames, the container suggested %d", src.path, frame_count, expected)
        # the decode pass counted them: later stages see the count on a new MovieInfo (the probe's own
        # object, which a caller may hold, keeps what the container said)
        src.info = dataclasses.replace(src.info, frame_count=frame_count, frame_count_exact=True)
        rule = sample_frames(self.shots, fps, self.split, src.info.chapters, self.sampling, frame_count=frame_count)
        if rule != self.samples:  # an invariant of this module, not a user error
            raise RuntimeError(
                f"one-pass sampling diverged from sample_frames ({len(self.samples)} vs {len(rule)} frames)"
            )
        if self.sampling.mode == "clips":
            rule_clips = sample_clips(
                self.shots, fps, self.split, src.info.chapters, self.sampling, frame_count=frame_count
            )
            if rule_clips != self.clips:
                raise RuntimeError(
                    f"one-pass clips diverged from sample_clips ({len(self.clips)} vs {len(rule_clips)})"
                )
        self.done = True
        log.info(
            "%s: %d frames, %d shots, %d samples (%s)",
            src.path,
            frame_count,
            len(self.shots),
            len(self.samples),
            self.split,
        )


@dataclasses.dataclass
class _ShotState:
    """Where one decode pass stands in the current shot."""

    shot_id: int = 0
    start: int = 0
    #: the shot is known to be at least the shortest kept clip: its samples go out as they become final
    confirmed: bool = False
    #: candidate frames (frames mode) or whole clips (clips mode) waiting for the shot to be confirmed;
    #: a shot that ends shorter drops them
    pending: list[_Raw] = dataclasses.field(default_factory=list)
    pending_clips: list[list[_Raw]] = dataclasses.field(default_factory=list)
    #: thumbnails for the contact sheet, thinned by doubling ``mid_stride`` to stay at most 32
    mids: list[tuple[int, np.ndarray]] = dataclasses.field(default_factory=list)
    mid_stride: int = 1


@dataclasses.dataclass
class _ClipState:
    """The clip being collected (clips mode): its frames wait until its last frame is final without a cut."""

    offsets: Iterator[int] | None = None  # the shot's remaining clip start offsets (rule 4c)
    next: int | None = None  # the current clip's start offset in the shot, None: no more clips
    frames: list[_Raw] = dataclasses.field(default_factory=list)
    broken: bool = False  # a frame outside the kept range (chapters dropped): the clip is dropped


class _ScanPass:
    """The state of one :class:`MovieScan` decode pass and the sampling rules it applies frame by frame.

    Frames reach :meth:`finalize` in order once the shot detector can no longer report a cut at or
    before them (its latency); a cut closes the shot (:meth:`close_shot`). Results go to the scan's
    ``shots``, ``samples``, ``clips`` and ``thumbnails``.
    """

    def __init__(self, scan: MovieScan):
        src = scan.source
        fps = src.info.fps
        self.scan = scan
        self.src = src
        self.fps = fps
        self.detector = build_detector(scan.shot_config, fps)
        self.first_kept, self.last_kept = kept_frame_range(None, fps, src.info.chapters, scan.sampling)
        self.step = frame_step(fps, scan.split, scan.sampling)
        self.shortest = min_clip_frames(fps, scan.sampling)
        self.clips_mode = scan.sampling.mode == "clips"
        self.span, self.stride = clip_span(scan.sampling), int(scan.sampling.clip_stride)
        self.cuts: set[int] = set()
        self.finalized = -1  # the last final frame: a cut reported at or before it comes too late
        self.shot = _ShotState()
        self.clip = _ClipState()
        if self.clips_mode:
            self.start_clips()

    # -- shots -----------------------------------------------------------------------------
    def add_cuts(self, found: list[int]) -> None:
        for c in found:
            if c <= self.finalized:
                log.warning(
                    "%s: detector reported cut %d after frame %d was final; ignored", self.src.path, c, self.finalized
                )
            else:
                self.cuts.add(c)

    def close_shot(self, end: int) -> None:
        """The current shot ends before frame ``end``; the next one starts there."""
        st, scan = self.shot, self.scan
        shot = Shot(st.shot_id, st.start, end)
        scan.shots.append(shot)
        if scan.keep_thumbnails and st.mids:
            middle = shot.start_frame + shot.frame_count // 2
            best = min(st.mids, key=lambda m: abs(m[0] - middle))[1]
            scan.thumbnails[shot.shot_id] = (st.mids[0][1][..., ::-1].copy(), best[..., ::-1].copy())
        # a shot shorter than min_clip drops its pending candidates with its state
        self.shot = _ShotState(shot_id=st.shot_id + 1, start=end)
        if self.clips_mode:
            self.start_clips()  # an unfinished clip of the closed shot is dropped: clips never cross cuts

    def finalize(self, raw: _Raw) -> Iterator[SampledFrame]:
        """One final frame: cut, thumbnail, then the sampling rule of the mode."""
        i = raw.index
        if i in self.cuts:
            self.close_shot(i)
        self.finalized = i
        st = self.shot
        offset = i - st.start
        if self.scan.keep_thumbnails and raw.thumb is not None and offset % st.mid_stride == 0:
            st.mids.append((i, raw.thumb))
            if len(st.mids) > 32:
                del st.mids[1::2]
                st.mid_stride *= 2
        confirms = not st.confirmed and offset + 1 >= self.shortest
        if confirms:
            st.confirmed = True
        if self.clips_mode:
            if confirms:
                for frames in st.pending_clips:
                    yield from self.emit_clip(frames)
                st.pending_clips.clear()
            yield from self.clip_step(raw, offset)
            return
        if confirms:
            for p in st.pending:
                yield self.emit(p)
            st.pending.clear()
        if self.first_kept <= i < self.last_kept and in_window(offset, self.fps, self.step, self.scan.sampling):
            if st.confirmed:
                yield self.emit(raw)
            else:
                st.pending.append(raw)

    # -- samples -----------------------------------------------------------------------------
    def emit(self, raw: _Raw, clip_id: int | None = None, clip_pos: int | None = None) -> SampledFrame:
        left, right = self.src.eyes(raw)
        self.scan.samples.append(raw.index)
        return SampledFrame(raw.index, raw.pts, self.shot.shot_id, left, right, clip_id, clip_pos)

    def emit_clip(self, frames: list[_Raw]) -> Iterator[SampledFrame]:
        clip_id = len(self.scan.clips)
        self.scan.clips.append([r.index for r in frames])
        for pos, r in enumerate(frames):
            yield self.emit(r, clip_id, pos)

    def start_clips(self) -> None:
        offsets = clip_offsets(self.fps, self.scan.split, self.scan.sampling)
        self.clip = _ClipState(offsets=offsets, next=next(offsets, None))

    def clip_step(self, raw: _Raw, offset: int) -> Iterator[SampledFrame]:
        """Rule 4c for one final frame of the current shot."""
        clip = self.clip
        a = clip.next
        if a is None or offset < a:
            return
        if (offset - a) % self.stride == 0:
            clip.frames.append(raw)
            clip.broken |= not (self.first_kept <= raw.index < self.last_kept)
        if offset == a + self.span - 1:
            frames, broken = clip.frames, clip.broken
            self.clip = _ClipState(offsets=clip.offsets, next=next(clip.offsets, None))
            if broken:
                return
            if self.shot.confirmed:
                yield from self.emit_clip(frames)
            else:
                self.shot.pending_clips.append(frames)


def scan_movie(
    source: StereoSource,
    shots: ShotConfig | None = None,
    sampling: SamplingConfig | None = None,
    split: str = "train",
    progress: bool = False,
    keep_thumbnails: bool = False,
) -> MovieScan:
    """Prepare the one pass over ``source``; iterate the result to decode (see :class:`MovieScan`)."""
    return MovieScan(source, shots or ShotConfig(), sampling or SamplingConfig(), split, progress, keep_thumbnails)
