"""Hydration: rebuild a released dataset from the user's own copy of each film.

A release (:mod:`pipeline.release`) lists, per movie, the kept frames by index with their labels,
a 64-bit DCT hash of each stored picture and a signature of the cut (shot boundaries, frame rate,
frame count). The user's copy is another rip of the same film: maybe another codec, container,
resolution or 3D layout, a few seconds of black before the film, a trimmed start, another
timestamp origin, another letterbox crop. Hydration:

1. **Refuses what it cannot align before decoding**: a frame rate other than the release's (a PAL
   copy runs a 24 fps film at 25 fps: 4% faster, every frame index and shot length shifts, and
   the error says so).
2. **Opens the copy as ingest does** (:func:`pipeline.video.open_stereo`: layout from metadata or
   content, letterbox) and maps the release's picture area onto the copy: the copy's detected
   picture area when its aspect matches the release's crop (another resolution, another letterbox
   crop by the ripper), else the release's crop scaled by the width ratio and centred.
3. **Decodes the copy once** (:meth:`StereoSource.iter_raw`), running the release's shot
   detector on it. Each cut found votes for the offsets ``cut - boundary`` against the release's
   shot boundaries; the offset with ``lock_votes`` agreeing boundaries (and hashes that agree where
   released frames were already passed) is **locked**: released frame ``i`` is then copy frame
   ``i + offset``. Frame indices count decoded frames, so the container's timestamp origin does
   not matter.
4. **Confirms frame by frame**: the expected copy frame's hash (from the Y plane of the mapped
   picture area, or of its stored picture when it was kept before the lock) must be within
   ``max_distance`` bits of the released one; its picture is then converted, cropped and resized
   to the stored size exactly as ingest did (by the encoding threads); otherwise the other frames of a ``window`` either side are tried (a dropped or
   duplicated frame). A frame that fails is listed with the reason, never guessed. Before the lock,
   frames whose hash is close to any released one are kept as candidates (bounded by
   ``max_candidate_mb``); what could not be kept is taken in a second, partial pass.
5. **Refuses another film or another cut**: when fewer than ``min_match_fraction`` of the released
   frames are confirmed, the error says how many matched, and whether the copy looks like another
   edit (shots found at different offsets); nothing is written.

The result is a normal dataset movie (the shard schema, written with
:class:`pipeline.shards.MovieShardWriter` under the release's shard settings): the label columns
are the released bytes, the picture is the copy's. Not supported, and detected: PAL speed-up,
another edit (scenes cut, added or moved), 3D copies whose eyes are not the film's eyes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pyarrow as pa

from pipeline.errors import BadInputError, ConfigError, DepthmineError
from pipeline.layouts import CropBox, Layout
from pipeline.phash import DEFAULT_MAX_DISTANCE, THUMB_SIZE, hamming, phash, phash_gray
from pipeline.release import Release, ReleasedMovie, unpack_labels
from pipeline.shards import FRAME_SCHEMA, MovieShardWriter, ShardConfig
from pipeline.shards.codec import encode_image

__all__ = [
    "HydrateConfig",
    "CopySpec",
    "MissingFrame",
    "HydrateResult",
    "PAL_RATIOS",
    "stream_rates",
    "check_frame_rate",
    "map_region",
    "extract_stored",
    "align_and_extract",
    "hydrate_movie",
    "hydrated_key",
]

log = logging.getLogger(__name__)

#: A PAL copy plays a 24 (or 23.976) fps film at 25 fps.
PAL_RATIOS = (25.0 / 24.0, 25.0 / (24000.0 / 1001.0))
_PLANAR_420 = {"yuv420p", "yuvj420p"}


@dataclass
class HydrateConfig:
    """How hydration aligns and confirms frames.

    Attributes:
        max_distance: bits (of 64) a copy frame's hash may differ from the released one and still
            be the frame (:data:`pipeline.phash.DEFAULT_MAX_DISTANCE`).
        window: frames either side of the expected position tried when it does not confirm.
        min_match_fraction: below this fraction of confirmed frames the copy is refused.
        lock_votes: shot boundaries that must agree on an offset before it is locked.
        max_candidate_mb: memory for frames kept before the offset is locked.
        fps_tolerance: relative frame-rate difference accepted (24 vs 23.976 is 0.1%).
        max_offset_s: the largest lead-in or trimmed start looked for (seconds).
        cut_bits: after the lock, a hash jump this large between consecutive frames is a cut (frames
            of one shot differ by 0-6 bits, frames of two shots by 18 or more on the sample movies).
        right_views: also rebuild the other eye of every hydrated frame (``right_image``, cropped
            and resized as the stored view; for stereo-aware training). A release never holds one.
    """

    max_distance: int = DEFAULT_MAX_DISTANCE
    window: int = 2
    min_match_fraction: float = 0.8
    lock_votes: int = 3
    max_candidate_mb: float = 512.0
    fps_tolerance: float = 0.002
    max_offset_s: float = 600.0
    cut_bits: int = 14
    right_views: bool = False

    def __post_init__(self) -> None:
        if not 0 <= int(self.max_distance) < 32:
            raise ConfigError(f"max_distance must be in 0..31 bits, got {self.max_distance}")
        if int(self.window) < 0 or int(self.lock_votes) < 1:
            raise ConfigError("window must be >= 0 and lock_votes >= 1")
        if not 0.0 < float(self.min_match_fraction) <= 1.0:
            raise ConfigError(f"min_match_fraction must be in (0, 1], got {self.min_match_fraction}")


@dataclass(frozen=True)
class CopySpec:
    """The user's copy of one released movie: its file (and right-eye file), optionally its layout."""

    movie_id: str
    path: str
    right: str | None = None
    layout: str | None = None


@dataclass
class MissingFrame:
    """A released frame hydration could not find or confirm, and why."""

    frame_index: int
    reason: str


@dataclass
class HydrateResult:
    """What hydrating one movie found (stored in its ``movie.json`` under ``hydrated``)."""

    movie_id: str
    copy: str
    layout: str
    eye_size: list[int]
    region: dict[str, int]
    offset: int | None
    offset_from: str
    released: int
    found: int
    missing: list[MissingFrame] = field(default_factory=list)
    copy_frames: int = 0
    cuts_matched: int = 0
    copy_index: dict[int, int] = field(default_factory=dict)  # released frame -> copy frame
    distances: dict[int, int] = field(default_factory=dict)  # released frame -> hash distance
    seconds: float = 0.0
    decode_passes: float = 1.0
    eyes_swapped: bool = False  # the copy's eyes were exchanged (no tag said so): the other eye was taken
    reused: bool = False  # hydrated by an earlier run from the same copy (resume): not decoded again

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["copy_index"] = {str(k): v for k, v in self.copy_index.items()}
        d["distances"] = {str(k): v for k, v in self.distances.items()}
        return d


# --------------------------------------------------------------------------- checks and geometry


def stream_rates(path: str | os.PathLike, probed_fps: float) -> list[float]:
    """The frame rates a copy declares: the probe's and the stream's nominal ones.

    The probe's rate is an average (of the container's duration, or of the first packets' times),
    which a lead-in encoded differently or an MP4's edit list can pull off by a few tenths of a
    percent; the stream's nominal rate (``r_frame_rate``) is what the encoder was given.
    """
    from pipeline.probe import open_container

    rates = [float(probed_fps)]
    try:
        with open_container(path) as c:
            s = c.streams.video[0]
            rates += [float(r) for r in (s.base_rate, s.guessed_rate, s.average_rate) if r]
    except Exception:  # noqa: BLE001 - the probe already opened it; this is a second opinion only
        pass
    return [r for r in rates if r > 0]


def check_frame_rate(
    path: str | os.PathLike, copy_fps: float | list[float], release_fps: float, tolerance: float = 0.002
) -> None:
    """Refuse a copy whose frame rate differs from the release's (PAL speed-up named as such).

    ``copy_fps`` may list several estimates (:func:`stream_rates`); the closest one counts.

    Raises:
        BadInputError: the rates differ by more than ``tolerance`` (relative).
    """
    rates = [float(r) for r in (copy_fps if isinstance(copy_fps, (list, tuple)) else [copy_fps]) if r and r > 0]
    if release_fps <= 0 or not rates:
        return
    copy_fps = min(rates, key=lambda r: abs(r / release_fps - 1.0))
    ratio = copy_fps / release_fps
    if abs(ratio - 1.0) <= tolerance:
        return
    if any(abs(ratio - r) <= 0.004 for r in PAL_RATIOS):
        raise BadInputError(
            path,
            f"runs at {copy_fps:g} fps where the release's cut runs at {release_fps:g} fps: a PAL "
            "copy (the film sped up by 4%) is not supported",
            "use a copy at the film's own frame rate, e.g. a Blu-ray rip",
        )
    raise BadInputError(
        path,
        f"runs at {copy_fps:g} fps where the release's cut runs at {release_fps:g} fps: not the same cut of the film",
        "use a copy at the film's own frame rate",
    )


def map_region(crop: dict[str, int], copy_crop: CropBox, copy_eye: tuple[int, int]) -> CropBox:
    """The release's crop box (picture area) in the copy's eye coordinates.

    When the copy's detected picture area has the release crop's aspect (within 1.5%), it *is* the
    release's picture area at another scale or with other bars: use it. Otherwise scale the
    release's crop by the width ratio and centre it vertically in the copy's picture area (a
    ripper who cut into the picture, or a bar the detector did not see).
    """
    cw, ch = float(crop["w"]), float(crop["h"])
    if copy_crop.w <= 0 or copy_crop.h <= 0:
        raise BadInputError(None, "the copy has no picture area")
    aspect, copy_aspect = cw / ch, copy_crop.w / copy_crop.h
    if abs(copy_aspect / aspect - 1.0) <= 0.015:
        return copy_crop
    s = copy_crop.w / cw
    h = int(round(ch * s))
    y = int(round(copy_crop.y + (copy_crop.h - h) / 2.0))
    y = min(max(0, y), max(0, copy_eye[1] - h))
    h = min(h, copy_eye[1] - y)
    return CropBox(copy_crop.x, y, copy_crop.w, h)


def extract_stored(eye: np.ndarray, region: CropBox, store: tuple[int, int]) -> np.ndarray:
    """The stored picture from a full-resolution eye: the region, resized as ingest resized.

    Ingest area-averages the crop down to the stored size; a copy smaller than that is enlarged
    with bicubic interpolation instead (area averaging cannot enlarge).
    """
    pic = eye[region.y : region.y + region.h, region.x : region.x + region.w]
    w, h = store
    if (pic.shape[1], pic.shape[0]) == (w, h):
        return np.ascontiguousarray(pic)
    interp = cv2.INTER_AREA if pic.shape[1] >= w else cv2.INTER_CUBIC
    return cv2.resize(pic, (w, h), interpolation=interp)


class _LumaHasher:
    """The hash of one eye's mapped picture area straight from the decoded Y plane (no RGB)."""

    def __init__(self, source: Any, region: CropBox):
        self.source = source
        self.region = region
        self._geom: dict = {}

    def __call__(self, raw: Any, view: str) -> int:
        src = self.source
        separate = src.layout is Layout.SEPARATE
        frame = raw.right if separate and view == "right" else raw.frame
        if frame.format.name not in _PLANAR_420:
            frame = frame.reformat(format="yuv420p")
        p = frame.planes[0]
        y = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]
        key = (y.shape, view)
        geom = self._geom.get(key)
        if geom is None:
            geom = self._geom[key] = self._geometry(y.shape, view)
        y0, y1, x0, x1 = geom
        # nearest-neighbour to 128x128 reads 16k pixels of a cold frame; the 4x4 area average to
        # the 32x32 thumbnail is then OpenCV's integer fast path (~20 us for the whole hash)
        small = cv2.resize(y[y0:y1, x0:x1], (4 * THUMB_SIZE, 4 * THUMB_SIZE), interpolation=cv2.INTER_NEAREST)
        return phash_gray(cv2.resize(small, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA))

    def _geometry(self, shape: tuple[int, int], view: str):
        src = self.source
        fh, fw = shape
        first = (view == "left") != bool(src.eyes_swapped)
        if src.layout in (Layout.SBS_FULL, Layout.SBS_HALF):
            slot = (0 if first else fw // 2, 0, fw // 2, fh)
        elif src.layout in (Layout.TAB_FULL, Layout.TAB_HALF):
            slot = (0, 0 if first else fh // 2, fw, fh // 2)
        else:
            slot = (0, 0, fw, fh)
        ew, eh = src.eye_size
        sx, sy = slot[2] / ew, slot[3] / eh
        r = self.region
        x0, y0 = slot[0] + int(round(r.x * sx)), slot[1] + int(round(r.y * sy))
        x1, y1 = x0 + max(1, int(round(r.w * sx))), y0 + max(1, int(round(r.h * sy)))
        return y0, y1, x0, x1


# --------------------------------------------------------------------------- alignment


def _other(view: str) -> str:
    return "left" if view == "right" else "right"


@dataclass
class _Wanted:
    """The released frames of one movie, in frame order."""

    index: np.ndarray  # released frame indices
    hashes: np.ndarray  # uint64
    views: list[str]
    position: dict[int, int] = field(default_factory=dict)  # frame index -> row

    def __post_init__(self) -> None:
        self.position = {int(i): k for k, i in enumerate(self.index)}


class _Aligner:
    """The decode pass: cuts vote for an offset, frames are confirmed and extracted while streaming."""

    def __init__(
        self,
        source: Any,
        movie: ReleasedMovie,
        wanted: _Wanted,
        region: CropBox,
        config: HydrateConfig,
        shot_config: Any,
        encode: Callable[[Any], Any],  # a picture (or a function making it) -> bytes, or a Future of them
        progress: Callable[[int], None] | None = None,
        label_of: Callable[[int], tuple[np.ndarray, np.ndarray] | None] | None = None,
    ):
        from pipeline.shots import build_detector

        self.src = source
        self.wanted = wanted
        self.region = region
        self.cfg = config
        self.store = tuple(movie.geometry["store_size"])
        fps = float(movie.signature.get("fps") or 0.0) or source.info.fps  # the copy's was checked to match
        self.detector = build_detector(shot_config, fps)
        self.shot_config = shot_config
        self.hasher = _LumaHasher(source, region)
        self.progress = progress
        self.views = sorted(set(wanted.views))
        self.max_offset = int(round(config.max_offset_s * fps))
        self.rel_bounds = np.array(sorted({0} | {int(s) for s, _ in movie.signature.get("shots", [])}), np.int64)
        self.votes: collections.Counter = collections.Counter()
        self.fresh: collections.Counter = collections.Counter()  # offsets voted since the last lock test
        self.proposals: dict[int, set[int]] = {}  # offset -> released rows whose hash a copy frame matched there
        self.rejected: set[int] = set()  # offsets whose passed frames disagreed
        self.contenders: set[int] = set()  # offsets both a cut and the hashes support, not yet told apart
        self.view_rows = {
            v: np.array([k for k, vv in enumerate(wanted.views) if vv == v], np.int64) for v in self.views
        }
        self.cuts: list[int] = []
        self.offset: int | None = None
        self.offset_from = "none"
        self.luma: dict[str, list[int]] = {v: [] for v in self.views}
        self.candidates: dict[tuple[int, str], tuple[np.ndarray, int]] = {}
        self.candidate_bytes = 0
        self.candidates_full = False
        self.ring: collections.deque = collections.deque()
        self.images: dict[int, bytes] = {}  # released frame index -> stored picture, encoded as the release's shards
        self.others: dict[int, bytes] = {}  # released frame index -> the other eye (right_views)
        self.candidate_others: dict[tuple[int, str], np.ndarray] = {}
        self.encode = encode
        self.copy_index: dict[int, int] = {}
        self.distances: dict[int, int] = {}
        self.missing: dict[int, str] = {}
        self.frames = 0
        self.label_of = label_of  # released row -> (disparity, valid) at the stored size, for the eye check
        self.swapped: bool | None = None if label_of is not None else False  # the copy's eyes exchanged?
        self.swap_votes: list[tuple[int, float, float]] = []  # (frame, error as is, error exchanged)
        self.swap_redo: list[int] = []  # frames taken from the wrong eye before the exchange was seen
        self.convert_lock = threading.Lock()
        self.next_row = 0  # next released row (in frame order) to decide
        self.sink: Callable[..., None] | None = None  # (group, its frames, images, others) once final
        self.group_rows = 32  # released rows per row group of the label file
        self.next_group = 0  # first row group not yet handed to the sink
        self.done = False  # the pass is over: frames past the end are missing, not yet to come

    # -- per frame ---------------------------------------------------------------------------
    def run(self) -> None:
        """The decode pass. The release's shot detector runs until the offset is locked (and its
        latency after); from then on a cut is a jump of ``cut_bits`` or more between consecutive
        frames' hashes, which costs nothing more (the detector is a third of the per-frame work)."""
        thumb_w = int(getattr(self.shot_config, "thumb_width", 160) or 160)
        stop_detector_at: int | None = None
        views, hasher, src = tuple(self.views), self.hasher, self.src

        def prepare(raw: Any) -> tuple[tuple[int, ...], Any]:
            # on the decode thread, beside this one's work: the frame's hashes, and its detection
            # thumbnail while the detector still runs (read without a lock: a late one is made here)
            thumb = src.thumb(raw, thumb_w) if self.detector is not None else None
            return tuple(hasher(raw, v) for v in views), thumb

        for raw in src.iter_raw(prepare=prepare):
            j = raw.index
            self.frames = j + 1
            hashes, thumb = raw.prepared
            new_cuts: list[int] = []
            if self.detector is not None:
                new_cuts = self.detector.push(j, thumb if thumb is not None else src.thumb(raw, thumb_w))
                for c in new_cuts:
                    self._cut(c)
                if stop_detector_at is not None and j >= stop_detector_at:
                    self.detector = None
            for v, h in zip(views, hashes):
                self.luma[v].append(h)
            if self.detector is None and j > 0:
                seq = self.luma[self.views[0]]
                if hamming(seq[j - 1], seq[j]) >= self.cfg.cut_bits and (not self.cuts or self.cuts[-1] < j):
                    self.cuts.append(j)
            self.ring.append(raw)
            while len(self.ring) > 2 * self.cfg.window + 1:
                self.ring.popleft()
            if self.offset is None:
                self._prelock(raw, bool(new_cuts))
                if self.offset is not None:
                    stop_detector_at = j + self.detector.latency if self.detector is not None else j
            if self.offset is not None:
                self._decide_up_to(j - self.cfg.window)
                self._flush_groups()
            if self.progress is not None:
                self.progress(1)
        if self.detector is not None:
            for c in self.detector.finish():
                self._cut(c)

    def _cut(self, c: int) -> None:
        self.cuts.append(c)
        d = c - self.rel_bounds
        d = [int(x) for x in d[np.abs(d) <= self.max_offset]]
        self.votes.update(d)
        self.fresh.update(d)

    def _prelock(self, raw: Any, new_cuts: bool) -> None:
        """Before the offset is known: hash proposals, candidates, and the lock tests.

        The frame's luma hash is compared with every released hash (a vectorised XOR): a close
        released frame ``i`` proposes the offset ``j - i`` and makes the frame a candidate (its
        stored picture kept, up to ``max_candidate_mb``). Two ways to lock:

        (a) an offset voted by a cut (``cut - boundary``, for every release boundary within
            ``max_offset_s``) that two or more released frames propose, that the released frames
            already passed under it confirm (80%), and that is the only such offset: this locks a
            few frames after the first cut, so little is kept before the lock. A wrong cut vote
            is a whole shot away, where the pictures differ (a film that repeats a scene keeps
            two contenders until one fails).
        (b) an offset with ``lock_votes`` boundaries that leads the runner-up (outside its +-1
            neighbourhood) two to one, whose passed frames, if any, agree: the true offset gains a
            vote per matched cut, a wrong one only by coincidence.
        Both are only re-examined when their evidence changed (a new cut, a new proposal), so a
        copy that never locks (another film) costs one XOR per frame and released hash.
        """
        j = raw.index
        w = self.wanted
        proposed: set[int] = set()
        for v in self.views:
            rows = self.view_rows[v]
            dist = hamming(self.luma[v][j], w.hashes[rows])
            close = rows[dist <= self.cfg.max_distance + 2]
            if close.size:
                if not self.candidates_full:
                    img = self._stored(raw, v)
                    self.candidates[(j, v)] = (img, phash(img))
                    self.candidate_bytes += img.nbytes
                    if self.cfg.right_views:
                        self.candidate_others[(j, v)] = self._stored(raw, _other(v))
                        self.candidate_bytes += img.nbytes
                    if self.candidate_bytes > self.cfg.max_candidate_mb * (1 << 20):
                        self.candidates_full = True
                        log.warning(
                            "%s: frames kept before the offset lock exceed %g MB; the rest come from a second pass",
                            self.src.path,
                            self.cfg.max_candidate_mb,
                        )
                for k in rows[dist <= self.cfg.max_distance]:
                    d = j - int(w.index[k])
                    self.proposals.setdefault(d, set()).add(int(k))
                    proposed.add(d)
        # (a): offsets with fresh evidence on either side; locked only when exactly one agrees
        if proposed or self.fresh:
            for d in proposed | set(self.fresh):
                if self.votes.get(d, 0) >= 1 and len(self.proposals.get(d, ())) >= 2 and d not in self.rejected:
                    self.contenders.add(d)
            agreeing = []
            for d in sorted(self.contenders):
                ok, checked = self._hash_agreement(d, j + 1)
                if checked and ok >= 0.8 * checked:
                    agreeing.append((d, ok, checked))
                else:
                    self.rejected.add(d)
            self.contenders = {d for d, _, _ in agreeing}
            self.fresh.clear()
            if len(agreeing) == 1:
                d, ok, checked = agreeing[0]
                self.offset = d
                self.offset_from = f"{self.votes[d]} shot boundary(ies), confirmed by {ok}/{checked} frame hashes"
                log.info("offset %+d frames locked at copy frame %d (%s)", d, j, self.offset_from)
                return
        # (b)
        if new_cuts and self.votes:
            ranked = self.votes.most_common(8)
            best, n = ranked[0]
            need = min(self.cfg.lock_votes, len(self.rel_bounds))
            runner_up = max((v for d, v in ranked[1:] if abs(d - best) > 1), default=0)
            if n < need or n < 2 * runner_up + 1:
                return
            ok, checked = self._hash_agreement(best, j + 1)
            if checked >= 2 and ok < 0.5 * checked:
                return
            self.offset, self.offset_from = best, f"{n} shot boundaries"
            log.info("offset %+d frames locked at copy frame %d (%d boundaries, %d/%d hashes)", best, j, n, ok, checked)

    def _hash_agreement(self, d: int, j: int) -> tuple[int, int]:
        """Of the released frames already passed under offset ``d``, how many match by luma hash."""
        w = self.wanted
        c = w.index + d
        sel = np.nonzero((c >= 0) & (c < j))[0]
        if not sel.size:
            return 0, 0
        ok = 0
        for v in self.views:
            rows = sel if len(self.views) == 1 else np.array([k for k in sel if w.views[k] == v], np.int64)
            if not rows.size:
                continue
            seq = self.luma[v]
            got = np.array([seq[int(x)] for x in c[rows]], np.uint64)
            ok += int(np.count_nonzero(hamming(got, w.hashes[rows]) <= self.cfg.max_distance))
        return ok, int(sel.size)

    def _stored(self, raw: Any, view: str, swapped: bool | None = None) -> np.ndarray:
        # one conversion at a time: PyAV's converter of a frame is not safe to share between threads
        # (the encoding threads and the pass's thread convert; cropping and resizing stay parallel)
        with self.convert_lock:
            left, right = self.src.eyes(raw, crop=False)
        if self.swapped if swapped is None else swapped:
            left, right = right, left
        return extract_stored(right if view == "right" else left, self.region, self.store)

    # -- eyes exchanged without a tag ----------------------------------------------------------
    def _check_eyes(self, row: int, c: int, view: str) -> None:
        """Vote on whether the copy's eyes are exchanged, from one confirmed frame.

        The two eyes of a frame hash alike (they differ by a few per cent of parallax), so the
        hashes cannot tell them apart; the released disparity can: the stored view ``S`` and the
        other eye ``O`` satisfy ``S(x) = O(x - d)``. The copy's frame is warped both ways; the
        arrangement whose warp matches (median grey difference over valid pixels at least 25%
        lower) gets the vote. Three agreeing votes decide; frames already taken from the wrong
        eye are taken again in the partial second pass.
        """
        raw = next((r for r in self.ring if r.index == c), None)
        label = self.label_of(row) if raw is not None and self.label_of is not None else None
        if label is None:
            return
        disparity, valid = label
        other = "left" if view == "right" else "right"
        s_img = cv2.cvtColor(self._stored(raw, view, False), cv2.COLOR_RGB2GRAY).astype(np.float32)
        o_img = cv2.cvtColor(self._stored(raw, other, False), cv2.COLOR_RGB2GRAY).astype(np.float32)
        h, w = s_img.shape
        if disparity.shape != (h, w):
            return
        xs = np.arange(w, dtype=np.float32)[None, :] - np.nan_to_num(disparity)
        ys = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
        inside = valid & (xs >= 0) & (xs <= w - 1)
        if inside.sum() < 0.05 * h * w:
            return
        as_is = float(np.median(np.abs(s_img - cv2.remap(o_img, xs, ys, cv2.INTER_LINEAR))[inside]))
        exchanged = float(np.median(np.abs(o_img - cv2.remap(s_img, xs, ys, cv2.INTER_LINEAR))[inside]))
        self.swap_votes.append((int(self.wanted.index[row]), as_is, exchanged))
        votes = [
            (a < 0.75 * b) - (b < 0.75 * a) for _, a, b in self.swap_votes
        ]  # +1: as is, -1: exchanged, 0: no telling
        if votes.count(1) >= 3 or votes.count(-1) >= 3 or len(votes) >= 9:
            self.swapped = votes.count(-1) > votes.count(1)
            log.info(
                "%s: the copy's eyes are %s (%d of %d frames say so)",
                self.src.path,
                "exchanged: taking the other eye" if self.swapped else "the release's",
                max(votes.count(-1), votes.count(1)),
                len(votes),
            )
            if self.swapped:
                # taken from the wrong eye, or refused by the wrong eye's hash: all taken again
                refused = [i for i, r in self.missing.items() if r.startswith("no copy frame")]
                self.swap_redo = sorted(set(self.images) | set(refused))
                for i in self.swap_redo:
                    del self.images[i]
                    self.copy_index.pop(i, None)
                    self.distances.pop(i, None)
                    self.others.pop(i, None)
                self.candidates.clear()  # kept from the wrong eye: the second pass takes them
                self.candidate_others.clear()
                self.candidates_full = True

    def _flush_groups(self) -> None:
        """Hand the label file's row groups whose frames are all final to the sink, in order.

        Final: taken, or missing for good (not "later"), and the eye check has decided (a copy
        with exchanged eyes takes its earlier frames again). The sink writes them while the pass
        goes on, so the dataset's shards are written while the copy is still decoding."""
        if self.sink is None or self.swapped is None:
            return
        w = self.wanted
        while self.next_group * self.group_rows < len(w.index):
            lo = self.next_group * self.group_rows
            hi = min(lo + self.group_rows, len(w.index))
            if hi > self.next_row:
                return
            frames = [int(i) for i in w.index[lo:hi]]
            if any(i not in self.images and self.missing.get(i, "later") == "later" for i in frames):
                return
            self.sink(self.next_group, frames, self.images, self.others)
            self.next_group += 1

    # -- deciding released frames ---------------------------------------------------------------
    def _decide_up_to(self, last_copy: int, final: bool = False) -> None:
        """Decide released frames whose whole window lies at or before copy frame ``last_copy + window``."""
        w = self.wanted
        while self.next_row < len(w.index):
            i = int(w.index[self.next_row])
            expected = i + self.offset
            if not final and expected > last_copy:
                return
            self._decide(self.next_row, expected)
            self.next_row += 1

    def _get(self, c: int, view: str, exact: bool = False) -> tuple[Any, int] | None | str:
        """The stored picture and hash of copy frame ``c``: from the ring or the candidates.

        A frame still in the ring is confirmed by its luma hash (the same DCT hash, from the Y plane
        of the mapped picture area: what the lock already trusts) and its picture is returned as a
        function that makes it, run by the encoding threads: converting, cropping and resizing
        leave the pass's thread. None: no such frame, or it was decoded before the lock and its hash
        was not even close (so it was not kept). ``"later"``: it may match but was not kept (memory
        cap): second pass. ``exact`` (and in a copy with exchanged eyes, whose luma hashes are of the
        other eye): the stored picture is made here and hashed.
        """
        for raw in self.ring:
            if raw.index == c:
                if exact or self.swapped:
                    img = self._stored(raw, view)
                    return img, phash(img)
                return functools.partial(self._stored, raw, view, bool(self.swapped)), int(self.luma[view][c])
        if (c, view) in self.candidates:
            return self.candidates[(c, view)]
        if c < 0 or c >= self.frames:
            return None
        return "later" if self.candidates_full else None

    def _decide(self, row: int, expected: int) -> None:
        w = self.wanted
        i, view, target = int(w.index[row]), w.views[row], int(w.hashes[row])
        if expected < 0:
            self.missing[i] = f"before the copy's first frame (the copy starts {-expected} frame(s) after it: trimmed)"
            return
        if expected >= self.frames and self.frames and self.done:
            self.missing[i] = f"after the copy's last frame ({self.frames} frames): the copy ends early"
            return
        order = sorted(
            range(expected - self.cfg.window, expected + self.cfg.window + 1), key=lambda c: (abs(c - expected), c)
        )
        best: tuple[int, int, Any] | None = None
        deferred = False
        for exact in (False, True):  # luma hashes first; the stored pictures' own hashes if none passes
            for c in order:
                got = self._get(c, view, exact)
                if got == "later":
                    deferred = True
                    continue
                if got is None:
                    continue
                img, h = got
                d = hamming(h, target)
                if best is None or d < best[0] or (d == best[0] and exact):
                    best = (d, c, img)
                if c == expected and d <= self.cfg.max_distance:
                    break
            if best is not None and best[0] <= self.cfg.max_distance:
                break
        if best is not None and best[0] <= self.cfg.max_distance:
            if self.swapped is None:
                self._check_eyes(row, best[1], view)
                if self.swapped:
                    raw = next(r for r in self.ring if r.index == best[1])
                    best = (best[0], best[1], functools.partial(self._stored, raw, view, True))
            self.images[i], self.copy_index[i], self.distances[i] = self.encode(best[2]), best[1], best[0]
            if self.cfg.right_views:
                raw = next((r for r in self.ring if r.index == best[1]), None)
                other = (
                    functools.partial(self._stored, raw, _other(view), bool(self.swapped))
                    if raw is not None
                    else self.candidate_others.get((best[1], view))
                )
                if other is not None:
                    self.others[i] = self.encode(other)
        elif deferred:
            self.missing[i] = "later"
        else:
            near = f" (closest: {best[0]} bits at copy frame {best[1]})" if best is not None else ""
            self.missing[i] = (
                f"no copy frame within {self.cfg.window} of frame {expected} has the released picture's hash{near}"
            )


def _hash_offset(luma: dict[str, list[int]], wanted: _Wanted, max_distance: int) -> tuple[int | None, int]:
    """The offset most released frames agree on by hash alone (fallback when no cut locks it)."""
    votes: collections.Counter = collections.Counter()
    for v, seq in luma.items():
        arr = np.asarray(seq, np.uint64)
        if not arr.size:
            continue
        rows = [k for k, vv in enumerate(wanted.views) if vv == v]
        for k in rows:
            d = hamming(arr, int(wanted.hashes[k]))
            hits = np.nonzero(d <= max_distance)[0]
            votes.update(int(c) - int(wanted.index[k]) for c in hits)
    if not votes:
        return None, 0
    best, n = votes.most_common(1)[0]
    return best, n


def _per_shot_offsets(
    luma: dict[str, list[int]], wanted: _Wanted, shots: list[list[int]], max_distance: int
) -> dict[int, int]:
    """For each released shot, the offset its frames agree on by hash (another edit moves shots apart)."""
    out = {}
    for sid, (s0, s1) in enumerate(shots):
        sel = [k for k, i in enumerate(wanted.index) if s0 <= i < s1]
        if not sel:
            continue
        sub = _Wanted(wanted.index[sel], wanted.hashes[sel], [wanted.views[k] for k in sel])
        d, n = _hash_offset(luma, sub, max_distance)
        if d is not None and n >= max(1, len(sel) // 2):
            out[sid] = d
    return out


def align_and_extract(
    source: Any,
    movie: ReleasedMovie,
    labels: pa.Table,
    config: HydrateConfig,
    encode: Callable[[Any], Any],
    progress: Callable[[int], None] | None = None,
    label_of: Callable[[int], tuple[np.ndarray, np.ndarray] | None] | None = None,
    sink: tuple[Callable[..., None], int] | None = None,
) -> tuple[HydrateResult, dict[int, bytes], dict[int, bytes], int]:
    """Decode the copy once, align it to the release and extract every released frame it can confirm.

    ``labels`` needs only ``frame_index``, ``phash`` and ``view``; ``label_of(row)`` gives a released
    row's disparity and valid mask (rows in frame order) for the check that the copy's eyes are the
    release's (without it the copy's eyes are taken as its layout says). Returns the result, the
    stored pictures by released frame index as ``encode`` returned them (bytes, or futures of them;
    a film's thousands of pictures stay a few hundred MB), the other eye's (``config.right_views``;
    else empty), and how many row groups (of ``sink[1]`` rows) were handed to ``sink[0]`` during the
    pass: ``sink[0](group, frames, images, others)`` is called, in order, as soon as a group's frames
    are final.

    Raises:
        BadInputError: another film or another cut (fewer than ``min_match_fraction`` confirmed).
    """
    from pipeline.config import config_from_dict
    from pipeline.shots import ShotConfig

    t0 = time.perf_counter()
    geom = movie.geometry
    region = map_region(geom["crop"], source.crop, tuple(source.eye_size))
    shot_cfg = config_from_dict(ShotConfig, dict((movie.meta.get("config") or {}).get("shots") or {}), "shots")
    order = np.argsort(labels.column("frame_index").to_numpy(), kind="stable")
    wanted = _Wanted(
        labels.column("frame_index").to_numpy()[order].astype(np.int64),
        labels.column("phash").to_numpy()[order].astype(np.uint64),
        [labels.column("view")[int(k)].as_py() for k in order],
    )
    al = _Aligner(source, movie, wanted, region, config, shot_cfg, encode, progress, label_of)
    if sink is not None:
        al.sink, al.group_rows = sink
    al.run()
    al.done = True
    passes = 1.0
    if al.offset is None:
        d, n = _hash_offset(al.luma, wanted, config.max_distance)
        if d is not None and n >= 1:
            al.offset, al.offset_from = d, f"perceptual hashes ({n} frames; too few shot boundaries agreed)"
    if al.offset is not None:
        _check_same_edit(al)
        al._decide_up_to(0, final=True)
        later = sorted(i for i, r in al.missing.items() if r == "later")
        none_yet = [int(i) for i in wanted.index if int(i) not in al.images and int(i) not in al.missing]
        redo = sorted(set(later) | set(none_yet) | set(al.swap_redo))
        if redo:
            passes += _second_pass(al, redo)
    found = len(al.images)
    total = len(wanted.index)
    result = HydrateResult(
        movie_id=movie.movie_id,
        copy=str(source.path),
        layout=source.layout.value,
        eye_size=list(source.eye_size),
        region=region.as_dict(),
        offset=al.offset,
        offset_from=al.offset_from,
        released=total,
        found=found,
        missing=[MissingFrame(i, r) for i, r in sorted(al.missing.items()) if i not in al.images],
        copy_frames=al.frames,
        cuts_matched=al.votes.get(al.offset, 0) if al.offset is not None else 0,
        copy_index=dict(sorted(al.copy_index.items())),
        distances=dict(sorted(al.distances.items())),
        seconds=time.perf_counter() - t0,
        decode_passes=passes,
        eyes_swapped=bool(al.swapped),
    )
    if total and found < config.min_match_fraction * total:
        raise BadInputError(source.path, _refusal(movie, al, wanted, found, total))
    return result, al.images, al.others, al.next_group


def _check_same_edit(al: _Aligner) -> None:
    """Refuse another edit: shot boundaries that match the release only at a second offset.

    At the locked offset every release boundary inside the copy should have a cut in the copy
    (give or take a frame). A re-encoded copy may make the detector miss a cut or two, which is
    harmless; but when the boundaries that miss agree on another offset among themselves, scenes
    were cut, added or moved, and frames found at the first offset would be the wrong ones.

    Raises:
        BadInputError: another edit.
    """
    off = int(al.offset)
    copy = np.array(sorted({0, *al.cuts}), np.int64)
    inside = [int(r) for r in al.rel_bounds if r > 0 and 0 <= r + off < al.frames]
    if not inside or not copy.size:
        return
    unmatched = [r for r in inside if np.min(np.abs(copy - (r + off))) > 1]
    if len(unmatched) < 2:
        return
    votes: collections.Counter = collections.Counter()
    for r in unmatched:
        d = copy - r
        votes.update(int(x) for x in d[(np.abs(d - off) > 1) & (np.abs(d) <= al.max_offset)])
    if not votes:
        return
    d2, n2 = votes.most_common(1)[0]
    if n2 >= 2 and n2 >= 0.5 * len(unmatched):
        raise BadInputError(
            al.src.path,
            f"{len(inside) - len(unmatched)} of the release's shot boundaries are at offset "
            f"{off:+d} frames in this copy and {n2} others at {d2:+d}: another edit of the film (scenes "
            "cut, added or moved) is not supported; nothing was written",
            "use a copy of the cut the release lists (its README gives duration and frame count)",
        )


def _refusal(movie: ReleasedMovie, al: _Aligner, wanted: _Wanted, found: int, total: int) -> str:
    sig = movie.signature
    what = (
        f"matched only {found} of {total} released frames of {movie.movie_id} ({movie.title}: "
        f"{sig.get('frame_count')} frames at {sig.get('fps', 0):g} fps; the copy has {al.frames})"
    )
    offsets = _per_shot_offsets(al.luma, wanted, sig.get("shots", []), al.cfg.max_distance)
    distinct = collections.Counter(offsets.values())
    if len(distinct) >= 2 and sum(distinct.values()) >= 2:
        shifts = ", ".join(f"{d:+d} frames ({n} shot(s))" for d, n in distinct.most_common(4))
        return (
            what + f": its shots are found at different offsets ({shifts}): another edit of the film is not supported"
        )
    return what + ": not the same film or not the same cut; nothing was written"


def _second_pass(al: _Aligner, redo: list[int]) -> float:
    """Decode the copy again up to the last frame still needed and decide those frames there."""
    need: dict[int, list[int]] = {}
    rows = {int(i): k for k, i in enumerate(al.wanted.index)}
    for i in redo:
        al.missing.pop(i, None)
        e = i + al.offset
        for c in range(e - al.cfg.window, e + al.cfg.window + 1):
            need.setdefault(c, []).append(i)
    last = max(need)
    got: dict[tuple[int, str], tuple[np.ndarray, int]] = {}
    views = {i: al.wanted.views[rows[i]] for i in redo}
    for raw in al.src.iter_raw():
        if raw.index in need:
            for i in need[raw.index]:
                v = views[i]
                if (raw.index, v) not in got:
                    img = al._stored(raw, v)
                    got[(raw.index, v)] = (img, phash(img))
                    if al.cfg.right_views:
                        al.candidate_others[(raw.index, v)] = al._stored(raw, _other(v))
        if raw.index >= last:
            break
    al.candidates.update(got)
    al.candidates_full = False
    for i in redo:
        al._decide(rows[i], i + al.offset)
    return (last + 1) / max(al.frames, 1)


# --------------------------------------------------------------------------- writing


def hydrated_key(movie: ReleasedMovie, fingerprint: str, right_views: bool) -> str:
    """The hydrated movie's folder key: the released key, the released labels, the copy and the
    choice of views. A committed folder is immutable (a published version may list it), so a
    hydration from another copy or with right views goes to a folder of its own, never over it."""
    from pipeline.config import config_hash

    return config_hash(
        {
            "released": movie.key,
            "labels": movie.files["labels"]["sha256"],
            "copy": fingerprint,
            "right_views": bool(right_views),
        }
    )


def _shard_config(movie: ReleasedMovie, right_views: bool = False) -> ShardConfig:
    known = {f.name for f in dataclasses.fields(ShardConfig)}
    cfg = {k: v for k, v in movie.shard_config.items() if k in known}
    cfg["store_right"] = bool(right_views)  # the other eye, from the copy, only when asked for
    return ShardConfig(**cfg)


def hydrated_table(
    labels: pa.Table,
    images: dict[int, bytes],
    config: ShardConfig,
    packing: dict[str, Any] | None = None,
    others: dict[int, bytes] | None = None,
) -> pa.Table:
    """Frame-schema rows: the released label values (unpacked to the dataset's blobs by the movie's
    ``packing``, :func:`pipeline.release.unpack_labels`), plus the copy's encoded pictures."""
    idx = labels.column("frame_index").to_pylist()
    keep = [k for k, i in enumerate(idx) if int(i) in images]
    t = labels if len(keep) == len(idx) else labels.take(pa.array(keep, pa.int64()))
    t = unpack_labels(t, packing or {})
    blobs = [images[int(i)] for i in t.column("frame_index").to_pylist()]
    t = t.drop_columns(["phash", "view"])
    t = t.append_column("image", pa.array(blobs, pa.binary()))
    t = t.append_column("image_codec", pa.array([config.image_codec] * t.num_rows, pa.string()))
    others = others or {}
    right = [others.get(int(i)) for i in t.column("frame_index").to_pylist()]
    t = t.append_column("right_image", pa.array(right, pa.binary()))
    return t.select(FRAME_SCHEMA.names).cast(FRAME_SCHEMA)


def _label_reader(path: Path, movie: ReleasedMovie) -> Callable[[int], tuple[np.ndarray, np.ndarray] | None]:
    """``row -> (disparity px, valid)`` of a released row (rows in frame order), read one row
    group at a time (only the eye check's few frames are read)."""
    import pyarrow.parquet as pq

    from pipeline.shards import decode_disparity
    from pipeline.shards.codec import unpack_mask

    pf = pq.ParquetFile(path)
    size = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else 1

    def label_of(row: int) -> tuple[np.ndarray, np.ndarray] | None:
        g, k = divmod(int(row), size)
        if g >= pf.metadata.num_row_groups:
            return None
        t = unpack_labels(pf.read_row_group(g).slice(k, 1), movie.labels)
        r = t.to_pylist()[0]
        h, w = r["height"], r["width"]
        d = decode_disparity(r["disparity"], r["disparity_offset"], r["disparity_scale"], r["disparity_codec"], h, w)
        return d, unpack_mask(r["valid"], h, w) & np.isfinite(d)

    return label_of


class _LabelGroups:
    """The release's label row groups of one movie, read and unpacked ahead on a thread of their own.

    Unpacking (:func:`pipeline.release.unpack_labels`) is most of the writing's CPU and does not
    depend on the copy, so it starts before the copy is even opened (a core would idle while its
    layout is detected) and runs beside the writer instead of in turn. At most ``ahead`` groups
    wait unpacked (60 MB each at 940x528, 32 rows), so a film's thousands of frames never are all
    in memory.
    """

    def __init__(self, path: Path, packing: dict[str, Any], ahead: int = 3):
        import pyarrow.parquet as pq

        self.file = pq.ParquetFile(path)
        self.sizes = [self.file.metadata.row_group(g).num_rows for g in range(self.file.metadata.num_row_groups)]
        self.packing = packing
        self.ahead = ahead
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hydrate-labels")
        self._ready: dict[int, Future] = {}
        self._lock = threading.Lock()  # the pass's thread asks ahead, the writer's takes
        for g in range(ahead):
            self.want(g)

    def want(self, g: int) -> None:
        """Start unpacking group ``g`` (if it exists and is not started)."""
        with self._lock:
            if g < len(self.sizes) and g not in self._ready:
                self._ready[g] = self._pool.submit(self._unpack, g)

    def take(self, g: int) -> pa.Table:
        """Group ``g``'s rows with the dataset's label blobs (waits for its unpacking)."""
        self.want(g)
        with self._lock:
            future = self._ready.pop(g)
        return future.result()

    def _unpack(self, g: int) -> pa.Table:
        return unpack_labels(self.file.read_row_group(g), self.packing)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._ready.clear()


def hydrate_movie(
    release: Release,
    spec: CopySpec,
    out: str | os.PathLike,
    config: HydrateConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[HydrateResult, Any]:
    """Hydrate one released movie from the user's copy into the dataset folder ``out`` (not published).

    Returns ``(result, MovieManifest)``. A movie already committed under its key from the same copy
    is returned as is (resume); the caller publishes.

    Raises:
        BadInputError: the copy is missing, unreadable, at another frame rate, or another film or cut.
    """
    from pipeline.ingest import source_fingerprint
    from pipeline.shards.manifest import load_movie_manifest, movie_folder
    from pipeline.video import open_stereo

    config = config or HydrateConfig()
    if spec.movie_id not in release.movies:
        raise ConfigError(
            f"movie {spec.movie_id!r} is not in the release {release.root}; its movies: {', '.join(release.movies)}"
        )
    movie = release.movies[spec.movie_id]
    for p in (spec.path, spec.right):
        if p is not None and not Path(p).exists():
            raise BadInputError(p, "no such file", "give the path of your copy of the film")
    fingerprint = source_fingerprint(spec.path, spec.right)
    key = hydrated_key(movie, fingerprint, config.right_views)
    folder = movie_folder(out, movie.movie_id, key)
    done = load_movie_manifest(folder)
    # reused only when made from the same copy, the same released labels and the same choice of views
    same = {"fingerprint": fingerprint, "labels_sha256": movie.files["labels"]["sha256"]}
    same["right_views"] = bool(config.right_views)
    if done is not None and all((done.meta.get("hydrated") or {}).get(k) == v for k, v in same.items()):
        h = done.meta["hydrated"]
        res = HydrateResult(
            movie.movie_id,
            spec.path,
            h.get("layout", ""),
            h.get("eye_size", []),
            h.get("region", {}),
            h.get("offset"),
            h.get("offset_from", ""),
            h.get("released", 0),
            h.get("found", 0),
            [MissingFrame(**m) for m in h.get("missing", [])],
            h.get("copy_frames", 0),
            eyes_swapped=bool(h.get("eyes_swapped")),
            reused=True,
        )
        return res, done
    if done is not None:  # the key names copy, labels and views: only a tampered folder lands here
        raise DepthmineError(f"{folder}: committed, but not from this copy and release; remove it or hydrate elsewhere")
    # the labels do not depend on the copy: their unpacking starts now, beside the copy's opening
    groups = _LabelGroups(release.labels_path(movie.movie_id), movie.labels)
    try:
        source = open_stereo(spec.path, layout=spec.layout, right_path=spec.right)
        check_frame_rate(
            spec.path,
            stream_rates(spec.path, source.info.fps),
            float(movie.signature.get("fps") or 0.0),
            config.fps_tolerance,
        )
    except BaseException:
        groups.close()
        raise
    import pyarrow.parquet as pq

    shard_cfg = _shard_config(movie, config.right_views)
    # ParquetFile, not read_table: read_table imports pyarrow.dataset (and pandas), seconds cold
    ids = pq.ParquetFile(release.labels_path(movie.movie_id)).read(columns=["frame_index", "phash", "view"])

    # pictures are made (converted, cropped, resized) and encoded by two threads while the pass goes
    # on (PyAV's converter and OpenCV release the GIL): the pass's own thread hashes and decides
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hydrate-encode")

    def picture(img: Any) -> bytes:
        img = img() if callable(img) else img  # a frame still to convert, crop and resize
        return encode_image(img, shard_cfg.image_codec, shard_cfg.jpeg_quality, shard_cfg.jpeg_subsampling)

    def encode(img: Any) -> Future:
        return pool.submit(picture, img)

    sizes = groups.sizes
    # The shards are written while the copy is still decoding: a row group as soon as its frames
    # are final, by one thread, with its labels unpacked ahead by ``groups``. The meta (what was
    # found) is set before the commit.
    writer = MovieShardWriter(out, movie.movie_id, key, shard_cfg, {})
    write = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hydrate-write")
    written: list[Future] = []

    def write_group(g: int, pictures: dict[int, Any], other: dict[int, Any]) -> None:
        pics = {i: f.result() if isinstance(f, Future) else f for i, f in pictures.items()}
        oth = {i: f.result() if isinstance(f, Future) else f for i, f in other.items()}
        writer.write_table(hydrated_table(groups.take(g), pics, shard_cfg, None, oth))

    def sink(g: int, frames: list[int], images: dict[int, Any], others: dict[int, Any]) -> None:
        pictures = {i: images[i] for i in frames if i in images}
        other = {i: others[i] for i in frames if i in others}
        groups.want(g)
        groups.want(g + groups.ahead)
        written.append(write.submit(write_group, g, pictures, other))

    uniform = all(n == sizes[0] for n in sizes[:-1]) if sizes else False
    try:
        writer.open()
        result, images, others, done_groups = align_and_extract(
            source,
            movie,
            ids,
            config,
            encode,
            progress,
            _label_reader(release.labels_path(movie.movie_id), movie),
            (sink, sizes[0]) if uniform else None,
        )
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        file_frames = ids.column("frame_index").to_pylist()  # the label file's rows, in its order
        for g in range(done_groups, len(sizes)):
            sink(g, [int(i) for i in file_frames[starts[g] : starts[g + 1]]], images, others)
        for f in written:
            f.result()
    except BaseException:
        write.shutdown(cancel_futures=True)
        writer.abort()
        raise
    finally:
        pool.shutdown(cancel_futures=True)
        groups.close()
        write.shutdown()
    meta = dict(movie.meta)
    info = result.to_dict()
    meta["hydrated"] = {
        "release": str(release.root),
        "copy_file": Path(spec.path).name,
        **same,
        **{
            k: info[k]
            for k in (
                "layout",
                "eye_size",
                "region",
                "offset",
                "offset_from",
                "released",
                "found",
                "missing",
                "copy_frames",
                "cuts_matched",
                "eyes_swapped",
            )
        },
    }
    writer.movie_meta = meta
    with writer:
        rejected = release.read_rejected(movie.movie_id)
        if rejected.num_rows:
            writer.write_table(rejected)
        manifest = writer.finish()
    return result, manifest
