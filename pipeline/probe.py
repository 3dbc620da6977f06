"""Probe a movie file: resolution, frame rate, duration, frame count, chapters, stereo metadata.

Why PyAV and not ``ffprobe``: the machines this runs on have no ffprobe binary (``imageio-ffmpeg``
ships only ``ffmpeg``, and ``ffmpeg-python``'s ``probe`` shells out to ``ffprobe``). PyAV links the
same FFmpeg libraries in-process, so it reads the same container/stream metadata, the chapters
(``container.chapters()``), the MKV ``StereoMode`` tag (``stream.metadata["stereo_mode"]``) and the
``stereo3d`` side data that FFmpeg attaches to decoded frames (from MKV StereoMode or an H.264
frame-packing SEI), and the one-pass reader then decodes with the very same library.

Frame count: ``stream.frames`` when the container stores it (MP4), else ``duration * fps``
(MKV stores no count); ``frame_count_exact`` says which. The decode pass (:mod:`pipeline.video`)
counts the real frames. Variable frame rate is detected from the presentation timestamps of the
first packets (demuxed only, not decoded), and ``fps`` is then their average rate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np

from pipeline.errors import BadInputError

__all__ = ["Chapter", "MovieInfo", "probe", "open_container", "MVC_STEREO_MODES"]

log = logging.getLogger(__name__)

# MKV StereoMode values that mean "both eyes in separate blocks" (MVC): FFmpeg decodes only the
# base view of an MVC stream, so such files must be converted to SBS/TAB first.
MVC_STEREO_MODES = {"block_lr", "block_rl", "both_eyes_block_lr", "both_eyes_block_rl"}
# H.264 profiles that carry a second view FFmpeg cannot decode.
MVC_PROFILES = {"multiview high", "stereo high"}
# AVStereo3DType values (libavutil/stereo3d.h) to our names.
_STEREO3D_TYPES = {
    0: "2d",
    1: "side_by_side",
    2: "top_bottom",
    3: "frame_sequence",
    4: "checkerboard",
    5: "side_by_side_quincunx",
    6: "lines",
    7: "columns",
    8: "unspecified",
}
_VFR_PACKETS = 240  # timestamps of this many packets decide constant vs variable frame rate

CONVERT_HINT = (
    "convert the 3D disc's MVC stream to side-by-side or top-and-bottom first "
    "(e.g. with MakeMKV + FRIM/BD3D2MK3D), or give the two eyes as separate files"
)


@dataclasses.dataclass(frozen=True)
class Chapter:
    """A chapter mark: ``[start_s, end_s)`` in seconds and its title."""

    start_s: float
    end_s: float
    title: str = ""


@dataclasses.dataclass
class MovieInfo:
    """What the container says about a movie (one video stream).

    Attributes:
        path: the file.
        container: FFmpeg's format name (``matroska,webm``, ``mov,mp4,...``).
        width, height: decoded frame size in pixels (both eyes when packed).
        fps: frames per second (the average rate for variable frame rate).
        frame_count: number of frames (exact when ``frame_count_exact``, else ``duration * fps``).
        frame_count_exact: whether the container stored the frame count.
        duration_s: duration in seconds.
        chapters: chapter marks, in order.
        stereo_mode: the MKV ``StereoMode`` tag (``left_right``, ``top_bottom``, ``block_lr``...) or None.
        stereo3d: FFmpeg's stereo3d side data type (``side_by_side``, ``top_bottom``...) or None.
        stereo3d_inverted: the side data says the right view comes first.
        codec: codec name (``h264``, ``hevc``...).
        profile: codec profile (``High``, ``Stereo High``...) or None.
        pix_fmt: pixel format (``yuv420p``...).
        variable_frame_rate: packet timestamps are not evenly spaced.
        sample_aspect_ratio: pixel aspect ratio (1.0 for square pixels).
        start_time_s: timestamp of the first frame.
        has_audio: the file has at least one audio stream.
    """

    path: Path
    container: str
    width: int
    height: int
    fps: float
    frame_count: int
    frame_count_exact: bool
    duration_s: float
    chapters: list[Chapter]
    stereo_mode: str | None
    stereo3d: str | None
    stereo3d_inverted: bool
    codec: str
    profile: str | None
    pix_fmt: str | None
    variable_frame_rate: bool
    sample_aspect_ratio: float = 1.0
    start_time_s: float = 0.0
    has_audio: bool = False

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


def open_container(path: str | Path):
    """``av.open`` with our errors: a missing file or one FFmpeg cannot read is a BadInputError."""
    import av

    p = Path(path)
    if not p.exists():
        raise BadInputError(p, "no such file", "check the path")
    if p.is_dir():
        raise BadInputError(p, "is a folder, not a movie file")
    if p.stat().st_size == 0:
        raise BadInputError(p, "the file is empty", "copy or download it again")
    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        raise BadInputError(
            p,
            f"not a video file FFmpeg can read ({exc.strerror or type(exc).__name__})",
            "give an MKV/MP4/TS movie; if it is one, the file may be truncated or corrupt",
        ) from None


def _first_stereo3d(container, stream) -> tuple[str | None, bool, bool]:
    """Decode the first frame: its stereo3d side data, and whether decoding works at all."""
    import av

    try:
        for frame in container.decode(stream):
            for sd in frame.side_data:
                if "STEREO3D" in str(sd.type):
                    raw = np.frombuffer(bytes(sd), dtype=np.int32)
                    kind = _STEREO3D_TYPES.get(int(raw[0]), "unspecified") if raw.size else None
                    inverted = bool(raw[1] & 1) if raw.size > 1 else False
                    return kind, inverted, True
            return None, False, True
    except av.error.FFmpegError:
        return None, False, False
    return None, False, False


def _packet_timestamps(container, stream, limit: int) -> list[float]:
    out: list[float] = []
    for packet in container.demux(stream):
        if packet.pts is not None:
            out.append(float(packet.pts * stream.time_base))
        if len(out) >= limit:
            break
    return out


def _check_not_truncated(path: Path, container, stream, duration: float, max_frames: int = 600) -> None:
    """Seek near the end the container announces and decode forward: a cut-off file ends early.

    A keyframe seek may land a whole GOP early (one GOP for a short clip), so frames are decoded
    forward until one reaches the target (fine), the stream ends first (truncated), or
    ``max_frames`` pass (a very long GOP: give the benefit of the doubt; the scan counts frames).
    """
    import av

    if duration < 1.0 or stream.time_base is None:
        return
    target = duration - 1.0
    tolerance = min(10.0, 0.25 * duration)
    last = None
    try:
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
        for n, frame in enumerate(container.decode(stream)):
            if frame.time is not None:
                last = frame.time
            if (last is not None and last >= target - tolerance) or n >= max_frames:
                return
    except av.error.FFmpegError:
        pass
    where = f"after {last:.1f} s" if last is not None else "near its end"
    raise BadInputError(
        path,
        f"truncated: the container announces {duration:.1f} s but no frames could be read {where}",
        "the copy or download was cut off; copy it again (or remux what is left with ffmpeg -c copy)",
    )


def probe(path: str | Path) -> MovieInfo:
    """Read a movie's metadata (and decode one frame to prove it decodes).

    Raises:
        BadInputError: missing/empty/unreadable file, no video stream (audio-only), a stream that
            does not decode, or an MVC (multiview) stream FFmpeg cannot split into two eyes.
    """
    import av

    path = Path(path)
    container = open_container(path)
    try:
        videos = list(container.streams.video)
        if not videos:
            kinds = sorted({s.type for s in container.streams})
            what = "audio-only file" if "audio" in kinds else f"no video stream (streams: {', '.join(kinds) or 'none'})"
            raise BadInputError(path, f"{what}: there is no picture to read", "give the movie's video file")
        stream = videos[0]
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise BadInputError(
                path, "the video stream has no frame size (corrupt header?)", "remux or re-encode the file"
            )
        tags = {k.lower(): v for k, v in (stream.metadata or {}).items()}
        stereo_mode = tags.get("stereo_mode")
        profile = getattr(cc, "profile", None) or getattr(stream, "profile", None)
        if (stereo_mode and stereo_mode.lower() in MVC_STEREO_MODES) or (
            profile and str(profile).lower() in MVC_PROFILES
        ):
            why = (
                f"StereoMode {stereo_mode}"
                if stereo_mode and stereo_mode.lower() in MVC_STEREO_MODES
                else f"profile {profile}"
            )
            raise BadInputError(
                path, f"an MVC (multiview) 3D stream ({why}) that FFmpeg decodes as one eye only", CONVERT_HINT
            )

        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000.0
        else:
            duration = 0.0
        start_time = (
            float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        )

        chapters = []
        for ch in container.chapters():
            tb = ch["time_base"]
            chapters.append(
                Chapter(float(ch["start"] * tb), float(ch["end"] * tb), str(ch.get("metadata", {}).get("title", "")))
            )
        chapters.sort(key=lambda c: c.start_s)

        stamps = sorted(_packet_timestamps(container, stream, _VFR_PACKETS))
        # packets come in decode order: with B-frames the last few presentation times of this
        # window are still missing, so only the first 90% form a gap-free run
        stamps = stamps[: max(3, int(0.9 * len(stamps)))]
        vfr = False
        if len(stamps) > 2:
            deltas = np.diff(stamps)
            deltas = deltas[deltas > 0]
            if deltas.size:
                tick = float(stream.time_base) if stream.time_base else 1e-3
                vfr = bool(deltas.max() - deltas.min() > 2.5 * tick + 1e-6)
                if vfr or fps <= 0:
                    fps = float(1.0 / np.mean(deltas))
        if fps <= 0:
            raise BadInputError(path, "the video stream has no frame rate", "remux the file with a frame rate")

        container.seek(0)
        stereo3d, inverted, decodes = _first_stereo3d(container, stream)
        if not decodes:
            raise BadInputError(
                path, "the video stream does not decode (truncated or corrupt file)", "copy or remux the file again"
            )

        _check_not_truncated(path, container, stream, duration)

        exact = bool(stream.frames)
        frame_count = int(stream.frames) if exact else int(math.floor(duration * fps + 0.5))
        sar = float(stream.sample_aspect_ratio) if stream.sample_aspect_ratio else 1.0
        info = MovieInfo(
            path=path,
            container=container.format.name,
            width=width,
            height=height,
            fps=fps,
            frame_count=frame_count,
            frame_count_exact=exact,
            duration_s=duration,
            chapters=chapters,
            stereo_mode=stereo_mode,
            stereo3d=stereo3d,
            stereo3d_inverted=inverted,
            codec=cc.name,
            profile=str(profile) if profile else None,
            pix_fmt=cc.pix_fmt,
            variable_frame_rate=vfr,
            sample_aspect_ratio=sar,
            start_time_s=start_time,
            has_audio=bool(container.streams.audio),
        )
    except av.error.FFmpegError as exc:
        raise BadInputError(
            path,
            f"FFmpeg cannot read the video stream: the file is truncated or corrupt ({exc.strerror or exc})",
            "copy the file again, or remux it with ffmpeg -c copy",
        ) from None
    finally:
        container.close()
    log.debug("probed %s: %s", path, info)
    return info
