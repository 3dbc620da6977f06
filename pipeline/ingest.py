"""Ingest one movie into the dataset, resumably: plain library code the Prefect flows call.

The work is cut into **chunks**: up to ``chunk_frames`` consecutive sampled frames of one shot.
Each chunk is labelled (disparity, checks, sky) independently and staged on disk in the movie's
work folder, ``DATASET/.work/<movie_id>/<key>/``::

    plan.json                   shots, sampled frames and chunk names (written after the decode pass)
    s00003-p000.parquet         the chunk's kept frames (pipeline.shards.write_chunk), atomic
    s00003-p000.json            the chunk's rejected frames and counts: written LAST, it marks the chunk done
    s00003-p000.png             a small preview (image | disparity) for reports
    s00003-p000x.*              the same chunk relabelled with the eyes exchanged (swap_eyes="auto")

``key`` is :func:`ingest_key` of the movie's :func:`source_fingerprint` and the resolved
:class:`IngestConfig`, so a changed movie or configuration never reuses stale chunks, and a
re-run after a crash skips every chunk whose ``.json`` exists. Once all chunks are done,
:func:`commit_movie` renames the staged chunk files, in chunk order (shot, part: deterministic
whatever the order they finished in), into the immutable per-movie shard folder as its shards
(``part-00000.parquet``, ...; staging and shards share the dataset's filesystem, so each is a
rename, never a copy), writes ``rejected.parquet`` and then ``movie.json``, the commit marker; the
work folder is then removed. Each staged chunk is already a finished shard: its row groups are cut
by :class:`~pipeline.shards.ShardConfig` and its marker records the shard's manifest entry (size,
SHA-256, footer digest), so a shard holds at most ``chunk_frames`` rows.

Rows are stored at :attr:`IngestConfig.store_width` (940 by default, the paper's half of the
1880x800 crop): labels are computed at the disparity configuration's resolution and downscaled
with :func:`pipeline.disparity.resize_result`, so stored disparity is in pixels of the stored
image and ``width / crop_w`` is the scale. Each chunk's marker keeps its frames'
``swap_evidence``; :func:`swap_report` decides reversed eyes per shot and per movie from them.

The source fingerprint is ``sha256(size, mtime_ns, first MiB, last MiB)`` of the movie (and of
the right-eye file for separate eyes): fast on 50 GB files, and it changes when a file is
replaced or re-encoded. A file edited in its middle while keeping size and mtime would be missed;
``touch`` the file to force a re-ingest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

import pipeline
from pipeline.atomic import fsync_dir, write_json_atomic
from pipeline.config import apply_overrides, config_from_dict, config_hash, config_to_dict, merge_dicts
from pipeline.disparity import DisparityConfig, Labeller, resize_result
from pipeline.errors import BadInputError, ConfigError
from pipeline.layouts import CropBox
from pipeline.sampling import SamplingConfig
from pipeline.shards import ShardConfig, write_chunk
from pipeline.shards.writer import describe_shard
from pipeline.shots import ShotConfig
from pipeline.swap import SWAP_MODES, SwapReport, merge_relabelled, swap_report  # noqa: F401  (public here too)

log = logging.getLogger(__name__)

__all__ = [
    "IngestConfig",
    "SWAP_MODES",
    "ingest_config",
    "LabelSettings",
    "store_size",
    "chunk_name",
    "parse_chunk_name",
    "ChunkPlan",
    "merge_relabelled",
    "SwapReport",
    "swap_report",
    "source_fingerprint",
    "ingest_key",
    "UnhashedField",
    "UNHASHED_FIELDS",
    "ChunkJob",
    "ChunkSummary",
    "Chunk",
    "WorkDir",
    "iter_chunks",
    "label_chunk",
    "commit_movie",
    "missing_chunks",
    "shard_placement",
    "LabellerPool",
    "find_committed",
    "publish_with",
    "project_version",
    "LABELS_VERSION",
    "resolve_movie_id",
    "check_movie_readable",
    "check_replace",
    "preflight",
]

_MIB = 1 << 20


@dataclass
class IngestConfig:
    """Everything that decides an ingested movie's rows (and so its key).

    The flow backend, its weights and device are ``disparity.flow`` / ``.ckpt`` / ``.device``
    (the device does not enter the key: CPU and GPU runs of one backend make the same rows, up
    to float rounding).

    Attributes:
        chunk_frames: frames per staged chunk: the unit of resume and of parallel labelling
            (one chunk per thread); bounds memory (a 1880x800 frame pair is ~9 MB, two chunks per
            thread are in flight); and the rows of one shard, since the commit renames each
            staged chunk into the movie's folder as a shard.
        store_width: the stored image width (the paper stores 940x400 of the 1880x800 crop).
            Disparity is computed at the disparity configuration's resolution (the full crop by
            default, or ``disparity.working_width``) and the label is then downscaled with
            :func:`pipeline.disparity.resize_result`, so stored disparity is in pixels of the
            stored image. ``None`` keeps the crop's full resolution; never upscales
            (``min(store_width, crop width)``); sizes are even and keep the crop's aspect
            (:func:`store_size`).
        swap_eyes: what to do about reversed eyes (left and right views exchanged). Every ingest
            detects them per shot and per movie and reports them; ``"never"`` (default) only
            reports, ``"always"`` labels every frame with the eyes exchanged (the same as
            ``disparity.swap_eyes=true``), ``"auto"`` relabels the chunks of the shots
            :meth:`SwapReport.shots_to_correct` names with the eyes exchanged before the commit.
        swap_min_confidence: the confidence a reversed-eyes decision needs for ``"auto"`` to act
            on it (:class:`pipeline.disparity.SwapDecision`; a shot of one frame reaches 1/3).
        store_temporal_flow: clips mode only (``sampling.mode=clips``): also store the optical
            flow from each clip frame's left view to the next one's, with its forward-backward
            consistency mask (:mod:`pipeline.temporal`), at the stored size. Off by default.
        shots, sampling, disparity, shards: the components' own configurations.
    """

    chunk_frames: int = 8
    store_width: int | None = 940
    swap_eyes: str = "never"
    swap_min_confidence: float = 0.5
    store_temporal_flow: bool = False
    shots: ShotConfig = field(default_factory=ShotConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    disparity: DisparityConfig = field(default_factory=DisparityConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)

    def __post_init__(self) -> None:
        if int(self.chunk_frames) < 1:
            raise ConfigError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.store_width is not None and int(self.store_width) < 2:
            raise ConfigError(f"store_width must be >= 2 or null (full resolution), got {self.store_width}")
        if self.swap_eyes not in SWAP_MODES:
            raise ConfigError(f"swap_eyes must be one of {', '.join(SWAP_MODES)}, got {self.swap_eyes!r}")
        if self.store_temporal_flow and self.sampling.mode != "clips":
            raise ConfigError("store_temporal_flow needs clips: set sampling.mode=clips as well")

    def disparity_for(self, swap: bool = False) -> DisparityConfig:
        """The disparity configuration for labelling.

        The eyes are exchanged when ``disparity.swap_eyes`` or ``swap_eyes="always"`` says so;
        ``swap`` (an ``"auto"`` relabel) exchanges them once more relative to that.
        """
        base = bool(self.disparity.swap_eyes) or self.swap_eyes == "always"
        if base != bool(self.disparity.swap_eyes) or swap:
            return dataclasses.replace(self.disparity, swap_eyes=base != bool(swap))
        return self.disparity


#: Values of :attr:`IngestConfig.swap_eyes`.


def store_size(crop_w: int, crop_h: int, store_width: int | None) -> tuple[int, int]:
    """The stored ``(width, height)`` of a ``crop_w`` x ``crop_h`` crop.

    ``min(store_width, crop_w)`` rounded down to even, the height from the crop's aspect rounded to
    even; the crop's own size when ``store_width`` is None or not smaller (never upscales).
    """
    crop_w, crop_h = int(crop_w), int(crop_h)
    if store_width is None or int(store_width) >= crop_w:
        return crop_w, crop_h
    w = max(2, int(store_width) // 2 * 2)
    h = max(2, int(round(crop_h * w / crop_w / 2.0)) * 2)
    return w, h


def ingest_config(overrides: Sequence[str] = (), base: dict[str, Any] | None = None, **fields: Any) -> IngestConfig:
    """Build an :class:`IngestConfig` from dotted overrides (``disparity.lr_threshold_px=1.5``).

    ``flow``, ``ckpt`` and ``device`` keywords set ``disparity.flow/ckpt/device``; they are applied
    before the overrides, and None values are ignored so CLI defaults do not clobber a catalog's
    overrides.
    """
    # Overrides apply to the full default configuration, so every value is reachable, list
    # entries included (``disparity.range_percentiles.1=97``).
    data: dict[str, Any] = merge_dicts(config_to_dict(IngestConfig()), json.loads(json.dumps(base or {})))
    for name in ("flow", "ckpt", "device"):
        value = fields.pop(name, None)
        if value is not None:
            data.setdefault("disparity", {})[name] = value
    data.update({k: v for k, v in fields.items() if v is not None})
    apply_overrides(data, list(overrides))
    return config_from_dict(IngestConfig, data, "ingest")


@dataclass(frozen=True)
class LabelSettings:
    """How a run labels its movies: the flow backend, its weights and device, and the overrides.

    One typed value in place of four loose ones, passed from the CLI through the flows
    (``ingest_movie``, ``build_dataset``: one flow parameter, which a deployment stores as
    ``{"flow": ..., "ckpt": ..., "device": ..., "overrides": [...]}``) to the preflight and the
    rebuild's change detection. :meth:`config` resolves it to the :class:`IngestConfig` a movie is
    labelled with; a catalog entry's own overrides apply after these (:meth:`with_overrides`).

    Attributes:
        flow: optical-flow backend (None: ``dis-medium``); ``ckpt``: its local weights file.
        device: ``cpu``, ``cuda`` or ``cuda:N`` for torch backends (None: CUDA when present).
        overrides: dotted ``KEY=VALUE`` configuration overrides, applied in order after the above
            (``disparity.lr_threshold_px=1.5``); checked by :meth:`config`.
    """

    flow: str | None = None
    ckpt: str | None = None
    device: str | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("flow", "ckpt", "device"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {value!r}")
        if isinstance(self.overrides, str) or not all(isinstance(o, str) for o in self.overrides):
            raise ConfigError(f"overrides must be a list of KEY=VALUE strings, got {self.overrides!r}")
        object.__setattr__(self, "overrides", tuple(self.overrides))  # a list from JSON or a caller

    def config(self) -> IngestConfig:
        """The resolved configuration (:func:`ingest_config`).

        Raises:
            ConfigError: an unknown key or a bad value, named.
        """
        return ingest_config(list(self.overrides), flow=self.flow, ckpt=self.ckpt, device=self.device)

    def with_overrides(self, overrides: Sequence[str]) -> LabelSettings:
        """These settings with ``overrides`` (a catalog entry's own) applied after their own."""
        return dataclasses.replace(self, overrides=(*self.overrides, *overrides)) if overrides else self


def source_fingerprint(path: str | os.PathLike, right: str | os.PathLike | None = None) -> str:
    """A fast identity of the input file(s): size, mtime and the first and last MiB.

    Raises:
        FileNotFoundError: the file does not exist (callers turn it into ``BadInputError``).
    """
    h = hashlib.sha256()
    for p in (path, right):
        if p is None:
            continue
        st = os.stat(p)
        h.update(f"{st.st_size}:{st.st_mtime_ns}:".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(_MIB))
            if st.st_size > 2 * _MIB:
                fh.seek(-_MIB, os.SEEK_END)
                h.update(fh.read(_MIB))
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class UnhashedField:
    """A field of the resolved :class:`IngestConfig` that :func:`ingest_key` leaves out, and when.

    Attributes:
        path: the field's dotted path in :func:`pipeline.config.config_to_dict` of the configuration.
        left_out: ``left_out(config_dict)`` says whether the key leaves it out of this configuration.
        why: the reason, in words.
    """

    path: str
    left_out: Callable[[dict[str, Any]], bool]
    why: str


def _value(config: dict[str, Any], path: str) -> Any:
    *parents, name = path.split(".")
    for p in parents:
        config = config.get(p) or {}
    return config.get(name)


def _unset(path: str) -> Callable[[dict[str, Any]], bool]:
    """Left out while empty or off (the default of an option, a flag or a mapping of options)."""
    return lambda config: not _value(config, path)


def _frames_mode(config: dict[str, Any]) -> bool:
    return _value(config, "sampling.mode") == "frames"


#: The one rule that keeps older datasets' keys: a field added to :class:`IngestConfig` after
#: datasets were built is not hashed while at its default (or while it cannot matter), so those
#: datasets' keys stay what they were and a rebuild finds them current instead of relabelling
#: every movie. A new field that changes no existing dataset's rows is one more line here;
#: ``tests/test_ingest_key.py`` pins the keys, so a key that moves fails a test.
UNHASHED_FIELDS: tuple[UnhashedField, ...] = (
    UnhashedField("disparity.device", lambda config: True, "where labelling runs, not what it computes"),
    UnhashedField("sampling.mode", _frames_mode, "added with clips; frames is the default"),
    UnhashedField("sampling.clip_frames", _frames_mode, "added with clips; unused in frames mode"),
    UnhashedField("sampling.clip_stride", _frames_mode, "added with clips; unused in frames mode"),
    UnhashedField("store_temporal_flow", _unset("store_temporal_flow"), "added with clips; off by default"),
    UnhashedField("disparity.flow_options", _unset("disparity.flow_options"), "added with backend options"),
    UnhashedField("disparity.matcher_options", _unset("disparity.matcher_options"), "added with backend options"),
)


#: The version of what ingest writes for a given input and configuration, in the ingest key and the
#: rebuild check instead of the package version: a release that changes no row (a trainer fix, a
#: new CLI option) must not relabel a library of films at the next rebuild, which costs days of
#: GPU time. Bump it in the change that alters the rows of an unchanged configuration (labels,
#: sampling, stored pictures, the shard format); every movie is then relabelled once. Its value is
#: the package version of the last such change (0.1.0: the keys datasets were built with).
LABELS_VERSION = "0.1.0"


def ingest_key(fingerprint: str, config: IngestConfig, extra: dict[str, Any] | None = None) -> str:
    """The work/shard folder name for one (input, configuration): 16 hex digits.

    The resolved configuration is hashed without the :data:`UNHASHED_FIELDS` that leave
    themselves out of it. ``extra`` holds what else decides the rows (split, layout choice,
    :data:`LABELS_VERSION`).
    """
    cfg = config_to_dict(config)
    left_out = [f.path for f in UNHASHED_FIELDS if f.left_out(cfg)]  # all decided on the whole configuration
    for path in left_out:
        *parents, name = path.split(".")
        parent = cfg
        for p in parents:
            parent = parent[p]
        parent.pop(name, None)
    return config_hash({"source": fingerprint, "config": cfg, "extra": extra or {}})


# --------------------------------------------------------------------------- before any work


def resolve_movie_id(movie: str | os.PathLike, movie_id: str | None) -> str:
    """The movie's id: ``movie_id`` checked by the catalog's rule, or one derived from the file name.

    ``None`` means "derive it"; an empty string is a mistake, not a request for the default.
    """
    from pipeline.shards.manifest import check_movie_id, movie_id_from_name

    if movie_id is None:
        return movie_id_from_name(Path(movie).stem)
    return check_movie_id(movie_id)


def check_movie_readable(path: str | os.PathLike, what: str = "movie file") -> None:
    """A clear one-line error for a missing, unreadable or non-file input, before any work."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(p, f"no such {what}", "check the path")
    if p.is_dir():
        raise BadInputError(p, f"is a folder, not a {what}")
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise BadInputError(p, "permission denied", "make the file readable for this user") from None
    except OSError as exc:
        raise BadInputError(p, f"cannot be read ({exc.strerror})") from None


def check_replace(dataset: str | os.PathLike, movie_id: str, fingerprint: str, movie: str, replace: bool) -> None:
    """Refuse to replace a published movie that came from another source file, unless ``replace``.

    Two files with one name (``a/movie.mkv``, ``b/movie.mkv``), or an id typed twice by mistake,
    would otherwise silently replace a movie already in the dataset. A source whose fingerprint
    is unchanged (a re-ingest with other settings) is not a replacement.
    """
    from pipeline.shards.manifest import MANIFEST_NAME, read_manifest

    if replace or not (Path(dataset) / MANIFEST_NAME).exists():
        return
    current = read_manifest(dataset).movies.get(movie_id)
    if current is None:
        return
    source = current.meta.get("source") or {}
    if source.get("fingerprint") and source["fingerprint"] != fingerprint:
        raise ConfigError(
            f"movie id {movie_id!r} in {dataset} already holds another source ({source.get('path')}); "
            f"pass --replace to replace it with {movie}, or --movie-id to add this file under another id"
        )


def preflight(
    movie: str,
    out: str,
    movie_id: str | None = None,
    right: str | None = None,
    labelling: LabelSettings = LabelSettings(),
    replace: bool = True,
) -> tuple[str, IngestConfig]:
    """Every check an ingest can make before it touches the dataset or decodes a frame.

    The movie id, the configuration (``labelling`` resolved), the input files, the dataset folder
    (writable, not a file, free space) and, unless ``replace``, that the id does not hold another
    source. The CLI calls it before Prefect starts; the flow calls it again first thing.

    Returns:
        ``(movie_id, config)``.
    """
    from pipeline.shards.manifest import check_dataset_writable

    movie_id = resolve_movie_id(movie, movie_id)
    config = labelling.config()
    check_movie_readable(movie)
    if right:
        check_movie_readable(right, "right-eye file")
    check_dataset_writable(out)
    if not replace:
        check_replace(out, movie_id, source_fingerprint(movie, right), movie, replace)
    return movie_id, config


# --------------------------------------------------------------------------- chunks


@dataclass
class Chunk:
    """Up to ``chunk_frames`` consecutive sampled frames of one shot."""

    shot_id: int
    part: int
    frames: list  # list[pipeline.video.SampledFrame]

    @property
    def name(self) -> str:
        return chunk_name(self.shot_id, self.part)


def chunk_name(shot_id: int, part: int, swap: bool = False) -> str:
    """``s00003-p000``; relabelled with the eyes exchanged: ``s00003-p000x``."""
    return f"s{int(shot_id):05d}-p{int(part):03d}" + ("x" if swap else "")


def parse_chunk_name(name: str) -> tuple[int, int, bool]:
    """``(shot_id, part, swapped)`` of a :func:`chunk_name`.

    Raises:
        ValueError: not a chunk name (a stray file in the staging folder).
    """
    match = re.fullmatch(r"s(\d{5})-p(\d{3})(x?)", name)
    if match is None:
        raise ValueError(f"{name!r} is not a chunk name (sNNNNN-pNNN[x])")
    return int(match.group(1)), int(match.group(2)), bool(match.group(3))


@dataclass
class ChunkPlan:
    """What the first labelling pass of a movie found, staged as ``plan.json`` so a resumed run can
    skip the decode when every chunk is done.

    Attributes:
        shots: the detected shots as ``{"shot_id", "start_frame", "end_frame"}``.
        samples: sampled frames (None when the scan could not count them).
        chunks: chunk names in decode order (:func:`chunk_name`).
    """

    shots: list[dict[str, int]]
    samples: int | None
    chunks: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"shots": self.shots, "samples": self.samples, "chunks": self.chunks}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkPlan:
        return cls(shots=list(data["shots"]), samples=data.get("samples"), chunks=list(data["chunks"]))

    def relabelled_chunks(self, shot_ids: set[int]) -> list[str]:
        """Names of the eyes-exchanged chunks of ``shot_ids`` (``s00003-p000x``), in plan order."""
        return [
            chunk_name(shot, part, swap=True)
            for shot, part, _ in map(parse_chunk_name, self.chunks)
            if shot in shot_ids
        ]


def iter_chunks(frames: Iterable[Any], chunk_frames: int) -> Iterator[Chunk]:
    """Group sampled frames (in decode order) into per-shot chunks of at most ``chunk_frames``.

    Deterministic: the same frames give the same chunks, which is what makes resume exact. In clips
    mode a chunk holds whole clips (it is cut only where a clip starts), so the temporal flow
    between a clip's frames is computed in one task.
    """
    current: Chunk | None = None
    for fr in frames:
        sid = int(fr.shot_id)
        clip_start = getattr(fr, "clip_pos", None) in (None, 0)
        if current is not None and (current.shot_id != sid or (len(current.frames) >= chunk_frames and clip_start)):
            yield current
            part = current.part + 1 if current.shot_id == sid else 0
            current = Chunk(sid, part, [])
        if current is None:
            current = Chunk(sid, 0, [])
        current.frames.append(fr)
    if current is not None and current.frames:
        yield current


@dataclass(frozen=True)
class ChunkJob:
    """What labelling a chunk needs besides its frames; small and picklable (Dask, processes)."""

    work_dir: str
    movie_id: str
    split: str
    config: IngestConfig
    crop: CropBox  # the letterbox crop in source pixels of one eye
    source_width: int
    source_height: int
    provenance: dict[str, str]
    cv_threads: int | None = None  # OpenCV threads per worker: 1 when tasks already use every core
    swap: bool = False  # relabel with the eyes exchanged (swap_eyes="auto"): chunk names get "x"


@dataclass
class ChunkSummary:
    """The outcome of one chunk: counts only (the data is on disk)."""

    name: str
    shot_id: int
    part: int
    kept: int
    rejected: dict[str, int]
    first_frame: int
    last_frame: int
    seconds: float = 0.0  # labelling time of this chunk (disparity and staging)
    resumed: bool = False
    swap_evidence: list = field(default_factory=list)  # per frame, None without evidence
    swapped: bool = False  # labelled with the eyes exchanged

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LabellerPool:
    """The labellers of one movie job's threads, owned by the job (no module cache).

    A chunk borrows a :class:`pipeline.disparity.Labeller` for its disparity configuration and
    gives it back, so a pool of N threads builds at most N per configuration (networks load once
    per thread, OpenCV engines are never shared between threads) and they go when the job ends.
    """

    def __init__(self) -> None:
        self._free: dict[str, list[Labeller]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self, config: DisparityConfig) -> Iterator[Labeller]:
        key = config_hash(config)
        with self._lock:
            free = self._free.setdefault(key, [])
            labeller = free.pop() if free else None
        if labeller is None:
            labeller = Labeller(config)
        try:
            yield labeller
        finally:
            with self._lock:
                self._free[key].append(labeller)


def label_chunk(
    frames: Sequence[Any], chunk: tuple[int, int], job: ChunkJob, labellers: LabellerPool | None = None
) -> ChunkSummary:
    """Compute disparity for one chunk's frames and stage the result in the work folder.

    Idempotent: if the chunk is already done its summary is read back and nothing is computed.
    ``labellers``: the movie job's pool (one labeller per thread, engines built once); without it
    the chunk builds its own.
    """
    t0 = time.perf_counter()
    shot_id, part = chunk
    work = WorkDir(job.work_dir)
    name = chunk_name(shot_id, part, job.swap)
    if work.is_done(name):
        return work.summary(name)
    cfg = job.config
    import cv2

    if job.cv_threads is not None:
        cv2.setNumThreads(job.cv_threads)
    dcfg = cfg.disparity_for(job.swap)
    clips = cfg.sampling.mode == "clips"
    with (labellers or LabellerPool()).borrow(dcfg) as labeller:
        results = labeller.label_pairs([(f.left, f.right) for f in frames])
        flows = _clip_flows(frames, dcfg, cfg, labeller.backend) if clips and cfg.store_temporal_flow else {}
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    n_kept = 0
    for fr, res in zip(frames, results):
        stats = res.stats.to_dict() if hasattr(res.stats, "to_dict") else dict(res.stats)
        base = {
            "movie_id": job.movie_id,
            "shot_id": int(fr.shot_id),
            "frame_index": int(fr.frame_index),
            "pts_seconds": float(fr.pts_seconds),
            "split": job.split,
        }
        if res.rejected_reason:
            rejected.append({**base, "reason": str(res.rejected_reason), "stats": _jsonable(stats)})
            if not clips:
                continue
        image = fr.right if dcfg.swap_eyes else fr.left  # the view the label belongs to
        h0, w0 = res.disparity.shape
        sw, sh = store_size(w0, h0, cfg.store_width)
        if (sw, sh) != (w0, h0):
            image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
            res = resize_result(res, sw, sh, dcfg.range_percentiles)
            stats = res.stats.to_dict()
        extra: dict[str, Any] = {}
        if clips:
            flow, flow_valid = flows.get(int(fr.frame_index), (None, None))
            extra = {
                "clip_id": int(fr.clip_id),
                "clip_pos": int(fr.clip_pos),
                "clip_reason": str(res.rejected_reason or ""),
                "temporal_flow": flow,
                "temporal_flow_valid": flow_valid,
            }
            if res.rejected_reason:  # the frame stays in its clip, without a label
                empty = np.zeros((sh, sw), bool)
                res = dataclasses.replace(
                    res, disparity=np.full((sh, sw), np.nan, np.float32), valid=empty, sky=empty, uncertainty=None
                )
            else:
                n_kept += 1
        else:
            n_kept += 1
        kept.append(
            {
                **base,
                "image": image,
                "disparity": res.disparity,
                "valid": res.valid,
                "uncertainty": res.uncertainty,
                "sky": res.sky,
                "crop_x": job.crop.x,
                "crop_y": job.crop.y,
                "crop_w": job.crop.w,
                "crop_h": job.crop.h,
                "source_width": job.source_width,
                "source_height": job.source_height,
                "stats": stats,
                "provenance": job.provenance,
                **extra,
            }
        )
    shard = None
    if kept:
        write_chunk(work.chunk_path(name), kept, cfg.shards)
        shard = describe_shard(work.chunk_path(name), work.chunk_path(name).name, job.movie_id).to_dict()
        preview = next((k for k in kept if not k.get("clip_reason")), kept[0])  # clips: a labelled frame
        _save_preview(work.preview_path(name), preview)
    summary = ChunkSummary(
        name=name,
        shot_id=shot_id,
        part=part,
        kept=n_kept,
        rejected=dict(Counter(r["reason"] for r in rejected)),
        first_frame=int(frames[0].frame_index),
        last_frame=int(frames[-1].frame_index),
        seconds=time.perf_counter() - t0,
        swap_evidence=[float(r.swap_evidence) if np.isfinite(r.swap_evidence) else None for r in results],
        swapped=bool(dcfg.swap_eyes),
    )
    # The marker goes last: a chunk is done only once its rows are safely on disk.
    write_json_atomic(work.marker_path(name), {"summary": summary.to_dict(), "rejected": rejected, "shard": shard})
    return summary


def _clip_flows(frames: Sequence[Any], dcfg: DisparityConfig, cfg: IngestConfig, backend: Any) -> dict[int, tuple]:
    """``frame_index -> (flow to the clip's next frame, consistent mask)`` at the stored size, for
    every clip frame of the chunk but each clip's last (a chunk holds whole clips)."""
    import cv2

    from pipeline.temporal import temporal_flows

    by_clip: dict[int, list[Any]] = {}
    for fr in frames:
        by_clip.setdefault(int(fr.clip_id), []).append(fr)
    out: dict[int, tuple] = {}
    for members in by_clip.values():
        members.sort(key=lambda f: int(f.clip_pos))
        lefts = []
        for fr in members:
            image = fr.right if dcfg.swap_eyes else fr.left
            h0, w0 = image.shape[:2]
            sw, sh = store_size(w0, h0, cfg.store_width)
            lefts.append(cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA) if (sw, sh) != (w0, h0) else image)
        for fr, (flow, valid) in zip(members, temporal_flows(lefts, backend)):
            out[int(fr.frame_index)] = (flow, valid)
    return out


def _jsonable(stats: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in stats.items():
        try:
            f = float(v)
            out[k] = f if np.isfinite(f) else None
        except (TypeError, ValueError):
            out[k] = str(v)
    return out


def _save_preview(path: Path, record: dict[str, Any]) -> None:
    from pipeline.viz import colorize_disparity, hstack_tiles, save_png

    tile = hstack_tiles([record["image"], colorize_disparity(record["disparity"], record["valid"])], height=96)
    save_png(path, tile)


# --------------------------------------------------------------------------- the work folder


class WorkDir:
    """The staging folder of one (movie, key): chunk files, done markers, the plan."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def for_movie(cls, dataset: str | os.PathLike, movie_id: str, key: str) -> WorkDir:
        from pipeline.shards.manifest import check_movie_id, check_name

        return cls(Path(dataset) / ".work" / check_movie_id(movie_id) / check_name(key, "key"))

    def chunk_path(self, name: str) -> Path:
        return self.root / f"{name}.parquet"

    def marker_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def preview_path(self, name: str) -> Path:
        return self.root / f"{name}.png"

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    def is_done(self, name: str) -> bool:
        return self.marker_path(name).exists()

    def done_names(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.stem for p in self.root.glob("s*-p*.json")}

    def summary(self, name: str) -> ChunkSummary:
        data = json.loads(self.marker_path(name).read_text())
        return ChunkSummary(**{**data["summary"], "resumed": True})

    def rejected(self, name: str) -> list[dict[str, Any]]:
        return json.loads(self.marker_path(name).read_text())["rejected"]

    def shard_entry(self, name: str) -> dict[str, Any] | None:
        """The staged chunk's shard entry as its marker recorded it (None: no kept frame, or a
        marker written before markers recorded it)."""
        return json.loads(self.marker_path(name).read_text()).get("shard")

    def forget(self, names: Iterable[str]) -> None:
        """Drop chunks' markers (and files) so they are labelled again: their rows were lost."""
        for name in names:
            for path in (self.marker_path(name), self.chunk_path(name), self.preview_path(name)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def write_plan(self, plan: ChunkPlan) -> None:
        write_json_atomic(self.plan_path, plan.to_dict())

    def read_plan(self) -> ChunkPlan | None:
        try:
            return ChunkPlan.from_dict(json.loads(self.plan_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return None  # no plan, or one half written: the run decodes again

    def previews(self, limit: int = 6) -> list[Path]:
        return sorted(self.root.glob("s*-p*.png"))[:limit]

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        # drop the movie's folder too once no other key is staged there
        for folder in (self.root.parent, self.root.parent.parent):  # .work/<movie_id>, then .work
            with contextlib.suppress(OSError):  # not empty (another key or movie staged): kept
                folder.rmdir()


def commit_movie(
    dataset: str | os.PathLike,
    movie_id: str,
    key: str,
    work: WorkDir,
    chunk_names: Sequence[str],
    config: IngestConfig,
    movie_meta: dict[str, Any],
) -> Any:
    """Commit the movie's immutable shard folder: its staged chunks renamed in, in chunk order.

    Each chunk with kept frames becomes one shard (``part-00000.parquet`` in chunk order), moved
    by a rename: the staging folder and the shard folder are on the dataset's filesystem, so no
    byte is written twice. Then ``rejected.parquet`` (every chunk's rejected frames, in chunk
    order) and ``movie.json`` last, the commit marker. A crash between the renames is resumed by
    the next run: a chunk no longer staged is found at its shard name (checked against the entry
    its marker recorded), and strays of earlier writes are removed before the marker.

    Returns:
        The :class:`pipeline.shards.MovieManifest` of the committed movie.

    Raises:
        DepthmineError: the folder is already committed, or a kept chunk is neither staged nor in
            place (:func:`missing_chunks` finds those first, so the ingest relabels them).
    """
    from pipeline.errors import DepthmineError
    from pipeline.shards import REJECTED_SCHEMA
    from pipeline.shards.manifest import MOVIE_MANIFEST_NAME, ShardEntry, movie_folder
    from pipeline.shards.writer import encode_rejected, write_movie_commit

    folder = movie_folder(dataset, movie_id, key)
    if (folder / MOVIE_MANIFEST_NAME).exists():
        raise DepthmineError(f"{folder}: already committed (movie.json exists); reuse it or remove the folder")
    placement = shard_placement(dataset, movie_id, key, work, chunk_names)
    missing = [name for name, (_, _, state) in placement.items() if state == "missing"]
    if missing:
        raise DepthmineError(
            f"{work.root}: staged chunk(s) {', '.join(missing)} are missing; run the ingest again to relabel them"
        )
    folder.mkdir(parents=True, exist_ok=True)
    targets = {target.name for target, _, _ in placement.values()}
    for leftover in list(folder.glob("*.parquet")) + list(folder.glob(".*.tmp")):
        if leftover.name not in targets:  # an interrupted write of another kind: never listed
            log.info("removing %s left by an interrupted write", leftover)
            leftover.unlink()
    shards = []
    for name, (target, entry, state) in placement.items():
        if state == "staged":
            _place(work.chunk_path(name), target)
        shards.append(entry)
    fsync_dir(folder)  # the renames are durable before the commit marker is written
    rejected = [rec for name in sorted(chunk_names) for rec in work.rejected(name)]
    table = encode_rejected(rejected) if rejected else REJECTED_SCHEMA.empty_table()
    shards = [ShardEntry.from_dict({**e.to_dict(), "movie_id": movie_id}) for e in shards]
    return write_movie_commit(folder, movie_id, key, shards, table, config.shards, movie_meta)


def shard_placement(
    dataset: str | os.PathLike, movie_id: str, key: str, work: WorkDir, chunk_names: Sequence[str]
) -> dict[str, tuple[Path, Any, str]]:
    """Where each kept chunk of the commit is: ``{name: (shard path, ShardEntry, state)}``.

    ``state`` is ``staged`` (still in the work folder), ``placed`` (renamed by an interrupted
    commit: the file at its shard name matches the marker's entry) or ``missing`` (lost, e.g. an
    unlocked uncommitted folder removed by garbage collection). Chunks without kept frames have no
    shard and are not listed. The shard names follow chunk order, so every run maps alike.
    """
    from pipeline.shards.manifest import ShardEntry, footer_sha256, movie_folder
    from pipeline.shards.writer import describe_shard

    folder = movie_folder(dataset, movie_id, key)
    out: dict[str, tuple[Path, Any, str]] = {}
    for name in sorted(chunk_names):
        if not work.summary(name).kept:
            continue
        target = folder / f"part-{len(out):05d}.parquet"
        recorded = work.shard_entry(name)
        staged = work.chunk_path(name)
        if staged.exists():
            entry = ShardEntry.from_dict(recorded) if recorded else describe_shard(staged, target.name, movie_id)
            out[name] = (target, dataclasses.replace(entry, path=target.name), "staged")
        elif (
            recorded
            and target.exists()
            and target.stat().st_size == recorded["bytes"]
            and footer_sha256(target) == recorded["footer_sha256"]
        ):
            out[name] = (target, dataclasses.replace(ShardEntry.from_dict(recorded), path=target.name), "placed")
        else:
            out[name] = (target, None, "missing")
    return out


def missing_chunks(
    dataset: str | os.PathLike, movie_id: str, key: str, work: WorkDir, chunk_names: Sequence[str]
) -> list[str]:
    """Kept chunks whose rows are neither staged nor already renamed into the shard folder."""
    placement = shard_placement(dataset, movie_id, key, work, chunk_names)
    return [name for name, (_, _, state) in placement.items() if state == "missing"]


def _place(staged: Path, shard: Path) -> None:
    """Move a staged chunk to its shard name: a rename (one filesystem), atomic, never a copy."""
    os.replace(staged, shard)


def project_version() -> str:
    return getattr(pipeline, "__version__", "0")


def find_committed(dataset: str | os.PathLike, movie_id: str, key: str) -> Any:
    """The committed :class:`~pipeline.shards.MovieManifest` of ``movie_id`` under ``key``, or None."""
    from pipeline.shards.manifest import load_movie_manifest, movie_folder

    # only this folder's movie.json: listing every committed movie would read the whole dataset
    m = load_movie_manifest(movie_folder(dataset, movie_id, key))
    return m if m is not None and m.movie_id == movie_id and m.key == key else None


def publish_with(
    dataset: str | os.PathLike,
    add: Sequence[Any] = (),
    drop: Sequence[str] = (),
    keep: int | None = None,
    only: Sequence[str] | None = None,
) -> Any:
    """Publish a new dataset version: the current one with ``add`` added/replaced and ``drop`` removed.

    The read of the current manifest and the write of the next happen under the dataset's
    publish lock (:func:`pipeline.shards.publish_update`), so ingests running in parallel into
    one dataset (threads, processes, or machines sharing a filesystem with working ``flock``)
    each publish their movie without dropping the others'.
    """
    from pipeline.shards import publish_update

    return publish_update(dataset, add=list(add), drop=list(drop), keep=keep, only=only)
