"""One movie from file to committed shards, on whatever machine runs it: the unit of distribution.

A :class:`MovieJob` holds only paths, the :class:`~pipeline.ingest.IngestConfig` and small values,
so sending it to a Dask worker or another process costs a few kilobytes; :func:`run_movie_job`
then does everything there: probe, key, the movie's lock, one decode pass, labelling with a
thread pool (one chunk per thread; OpenCV at one thread each, so the chunks share the cores),
the reversed-eyes decision and relabelling, the commit and, if asked, the publish. Frames never
leave the machine that decodes them; the caller gets a small summary back (:class:`MovieResult`).

Resume is exactly that of :mod:`pipeline.ingest`: chunks are staged under their names with a
marker written last, the first pass's :class:`~pipeline.ingest.ChunkPlan` lets a run whose chunks
are all staged skip the decode, and the commit renames the staged files into the shard folder.
Whichever machine runs the job, the shards are the same bytes.

Plain library code: no Prefect. Callers observe it through ``on_progress`` (frames done, total)
and ``on_report`` (called with a :class:`MovieReport` while the previews are still staged).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.changes import recorded_source, settings_hash
from pipeline.errors import BadInputError, DepthmineError
from pipeline.ingest import (
    LABELS_VERSION,
    ChunkJob,
    ChunkPlan,
    ChunkSummary,
    IngestConfig,
    LabellerPool,
    WorkDir,
    check_movie_readable,
    check_replace,
    chunk_name,
    commit_movie,
    find_committed,
    ingest_key,
    iter_chunks,
    label_chunk,
    merge_relabelled,
    missing_chunks,
    project_version,
    publish_with,
    source_fingerprint,
    swap_report,
)
from pipeline.layouts import CropBox
from pipeline.shards.manifest import MovieManifest, MovieRef

__all__ = [
    "MovieJob",
    "MovieProbe",
    "MovieReport",
    "MovieResult",
    "probe_movie_file",
    "run_movie_job",
    "labelling_threads",
    "uses_gpu",
]

log = logging.getLogger(__name__)


@dataclass
class MovieProbe:
    """What the job needs to know about the input before decoding (small, picklable)."""

    path: str
    right: str | None
    layout: str
    layout_reason: str
    eye_width: int
    eye_height: int
    crop: CropBox
    fps: float
    frame_count: int
    duration_s: float
    fingerprint: str
    eyes_swapped_metadata: bool = False  # metadata says right eye first: decoding already exchanges them


def probe_movie_file(movie: str, layout: str | None = None, right: str | None = None) -> MovieProbe:
    """Open the movie, settle its layout and crop, fingerprint the file(s).

    Raises:
        BadInputError: missing, unreadable, not a video, not stereo in that layout.
    """
    from pipeline.video import open_stereo

    check_movie_readable(movie)  # missing or unreadable: said plainly, not "truncated or corrupt"
    if right:
        check_movie_readable(right, "right-eye file")
    src = open_stereo(movie, layout=layout, right_path=right)
    info = src.info
    return MovieProbe(
        path=str(movie),
        right=str(right) if right else None,
        layout=str(getattr(src.layout, "value", src.layout)),
        layout_reason=str(getattr(src, "layout_reason", "")),
        eye_width=int(src.eye_size[0]),
        eye_height=int(src.eye_size[1]),
        crop=CropBox(int(src.crop.x), int(src.crop.y), int(src.crop.w), int(src.crop.h)),
        fps=float(getattr(info, "fps", 0.0) or 0.0),
        frame_count=int(getattr(info, "frame_count", 0) or 0),
        duration_s=float(getattr(info, "duration_s", getattr(info, "duration", 0.0)) or 0.0),
        fingerprint=source_fingerprint(movie, right),
        eyes_swapped_metadata=bool(getattr(src, "eyes_swapped", False)),
    )


@dataclass(frozen=True)
class MovieJob:
    """One movie to ingest: only paths, the configuration and small values (it crosses the network).

    Attributes:
        movie, right: the movie file (the left eye's for separate eyes) and the right eye's file;
            absolute paths every worker reads alike (shared storage when workers are machines).
        out: the dataset folder (shared storage likewise; staging and shards live in it).
        movie_id, split, layout: as the ingest takes them (``layout`` None: detected).
        config: the resolved configuration (already checked by :func:`pipeline.ingest.preflight`).
        publish: publish the dataset manifest with this movie at the end (a build publishes once).
        refuse_replace: refuse, under the movie's lock, to replace a published movie of this id
            that came from another source file (:func:`pipeline.ingest.check_replace`).
        threads: labelling threads; None: this machine's cores shared by the jobs it runs at once
            (:func:`labelling_threads`). GPU backends label one chunk at a time, as a batch.
    """

    movie: str
    out: str
    movie_id: str
    config: IngestConfig
    split: str = "train"
    layout: str | None = None
    right: str | None = None
    publish: bool = False
    refuse_replace: bool = False
    threads: int | None = None


@dataclass
class MovieResult:
    """What a movie job returns (also the build summary's row for this movie)."""

    movie_id: str
    key: str
    split: str
    kept: int
    rejected: dict[str, int]
    chunks: int
    chunks_resumed: int
    shots: int
    seconds: float
    label_seconds: float = 0.0  # summed over the chunks labelled in this run
    skipped: bool = False  # already committed under this key: nothing recomputed
    swapped_eyes: dict[str, Any] = field(default_factory=dict)  # pipeline.swap.SwapReport.to_dict()
    manifest: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0  # wall-clock start and end (time.time()) on the machine that ran it
    finished: float = 0.0
    host: str = ""  # that machine's name and the process that ran the job
    pid: int = 0
    threads: int = 0  # labelling threads it used

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def committed(cls, ref: MovieRef, seconds: float = 0.0, manifest: MovieManifest | None = None) -> MovieResult:
        """The row of a movie that was not relabelled: kept unchanged by a rebuild (from its index
        entry) or found committed under its key by an ingest (``manifest``, its ``movie.json``, adds
        the shots, the full reversed-eyes report and the manifest itself).

        ``kept`` is the labelled frames (:attr:`pipeline.shards.MovieManifest.labelled_rows`), as
        the movie's own ingest reported them, not its rows (a clips-mode movie keeps some rejected
        frames as rows). An index entry written before the count was recorded says its rows.
        """
        meta = manifest.meta if manifest is not None else {}
        return cls(
            movie_id=ref.movie_id,
            key=ref.key,
            split=ref.split,
            kept=ref.rows if ref.labelled_rows is None else ref.labelled_rows,
            rejected=dict(ref.rejected_reasons),
            chunks=0,
            chunks_resumed=0,
            shots=len(meta.get("shots", [])),
            seconds=seconds,
            skipped=True,
            swapped_eyes=dict(meta.get("swapped_eyes", ref.eyes)),
            manifest=_manifest_dict(manifest),
        )


@dataclass
class MovieReport:
    """What a report needs, handed to ``on_report`` before the staging (with its previews) goes."""

    movie: str
    probe: MovieProbe
    result: MovieResult
    summaries: list[ChunkSummary]
    plan: ChunkPlan
    work: WorkDir
    swap: Any


def uses_gpu(config: IngestConfig) -> bool:
    """Whether labelling may use a GPU: a ``cuda`` device, or a network backend with no device set."""
    d = config.disparity
    return (d.device or "").startswith("cuda") or (d.device is None and d.flow.startswith("ptlflow:"))


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def labelling_threads(job: MovieJob) -> int:
    """Threads labelling this job's chunks.

    ``job.threads`` when the caller decided (it knows how many jobs share this machine); else the
    cores of this process divided by the Dask worker's task slots when it runs in one (one worker
    per machine: ``dask worker --nthreads K`` runs K movies, each on a K-th of the cores); else
    every core. GPU labelling takes one chunk at a time: the chunk is one batch on the device.
    """
    if uses_gpu(job.config):
        return 1
    if job.threads is not None:
        return max(1, int(job.threads))
    slots = 1
    try:
        from distributed import get_worker

        slots = max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        pass  # not in a Dask worker
    return max(1, _cores() // slots)


Progress = Callable[[int, int], None]


def run_movie_job(
    job: MovieJob,
    *,
    on_progress: Progress | None = None,
    on_report: Callable[[MovieReport], None] | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> dict[str, Any]:
    """Ingest one movie here: probe, decode, label, stage, commit (and publish if asked).

    Args:
        job: the movie and its settings.
        on_progress: called with (frames decoded and labelled, the movie's frames) as chunks finish.
        on_report: called once the movie is committed, while its staged previews still exist.
        logger: where to log (a Prefect run logger); default this module's.

    Returns:
        :meth:`MovieResult.to_dict`.

    Raises:
        BadInputError: the movie is unreadable or not stereo, or keeps no frame (with the reasons).
        ConfigError: ``refuse_replace`` and the id holds another source.
    """
    t0, started = time.monotonic(), time.time()
    logger = logger or log
    probe = probe_movie_file(job.movie, job.layout, job.right)
    config = job.config
    key = ingest_key(probe.fingerprint, config, {"split": job.split, "layout": probe.layout, "version": LABELS_VERSION})
    logger.info(
        "%s: %s %dx%d per eye, %d frames, key %s",
        job.movie_id,
        probe.layout,
        probe.eye_width,
        probe.eye_height,
        probe.frame_count,
        key,
    )
    from pipeline.shards.locks import movie_lock

    # One run at a time per movie: a second run waits here, then finds the movie committed.
    with movie_lock(job.out, job.movie_id, on_wait=logger.warning):
        if job.refuse_replace:
            check_replace(job.out, job.movie_id, probe.fingerprint, job.movie, False)
        result = _run_locked(job, probe, key, t0, on_progress, on_report, logger)
    result.started, result.finished, result.host, result.pid = started, time.time(), os.uname().nodename, os.getpid()
    return result.to_dict()


def _run_locked(job, probe, key, t0, on_progress, on_report, logger) -> MovieResult:
    """The job once the movie's lock is held: resume or label, commit, publish, report."""
    config, out, movie_id, split = job.config, job.out, job.movie_id, job.split
    committed = find_committed(out, movie_id, key)
    if committed is not None:
        logger.info("%s already committed under key %s: nothing to compute", movie_id, key)
        WorkDir.for_movie(out, movie_id, key).remove()  # a crash after the commit left it behind
        if job.publish:
            publish_with(out, [committed])
        return MovieResult.committed(MovieRef.from_manifest(committed), time.monotonic() - t0, committed)

    threads = labelling_threads(job)
    work = WorkDir.for_movie(out, movie_id, key)
    chunk_job = ChunkJob(
        work_dir=str(work.root),
        movie_id=movie_id,
        split=split,
        config=config,
        crop=probe.crop,
        source_width=probe.eye_width,
        source_height=probe.eye_height,
        provenance={
            "flow_backend": config.disparity.flow,
            "ingest_key": key,
            "source_fingerprint": probe.fingerprint,
            "project_version": project_version(),
        },
        # parallel chunks share the cores: one OpenCV thread each (-1: a lone chunk uses them all)
        cv_threads=1 if threads > 1 else -1,
    )
    labeller = _Labeller(job, probe, work, chunk_job, threads, on_progress, logger)
    for attempt in (1, 2):
        summaries, plan, swap = labeller.label_movie()
        lost = missing_chunks(out, movie_id, key, work, [s.name for s in summaries])
        if not lost:
            break
        if attempt == 2:
            raise DepthmineError(
                f"{work.root}: staged chunks {', '.join(lost)} keep disappearing; is another run here?"
            )
        # an unlocked, uncommitted shard folder is removed by garbage collection: those rows are gone
        logger.warning("%s: staged chunk(s) %s were lost; labelling them again", movie_id, ", ".join(lost))
        work.forget(lost)

    kept = sum(s.kept for s in summaries)
    rejected = dict(sum((Counter(s.rejected) for s in summaries), Counter()))
    if kept == 0:
        work.remove()
        reasons = ", ".join(f"{r}: {n}" for r, n in Counter(rejected).most_common()) or "no frame was sampled"
        raise BadInputError(
            job.movie,
            f"no frame kept: all {sum(rejected.values())} sampled frames were rejected ({reasons})",
            "is it a stereo movie in this layout? check --layout, or look at a frame with `depthmine disparity`",
        )
    meta = {
        "source": {
            "path": probe.path,
            "right": probe.right,
            "fingerprint": probe.fingerprint,
            **recorded_source(probe.path, probe.right, probe.fingerprint),  # stat, content: pipeline/changes.py
        },
        "settings": settings_hash(job.config, job.layout, job.split),  # what a rebuild compares
        "layout": probe.layout,
        "layout_reason": probe.layout_reason,
        "crop": probe.crop.as_dict(),
        "eye_size": [probe.eye_width, probe.eye_height],
        "fps": probe.fps,
        "frame_count": probe.frame_count,
        "shots": plan.shots,
        "split": split,
        "labelled_rows": kept,  # the kept frames: not the rows in clips mode (MovieManifest.labelled_rows)
        "config": _config_dict(config),
        "eyes_swapped_metadata": probe.eyes_swapped_metadata,
        "swapped_eyes": swap.to_dict(),
    }
    manifest = commit_movie(out, movie_id, key, work, [s.name for s in summaries], config, meta)
    if job.publish:
        publish_with(out, [manifest])
    result = MovieResult(
        movie_id=movie_id,
        key=key,
        split=split,
        kept=kept,
        rejected=rejected,
        chunks=len(summaries),
        chunks_resumed=sum(s.resumed for s in summaries),
        shots=len(plan.shots),
        seconds=time.monotonic() - t0,
        label_seconds=sum(s.seconds for s in summaries if not s.resumed),
        swapped_eyes=swap.to_dict(),
        manifest=_manifest_dict(manifest),
        threads=threads,
    )
    if on_report is not None:
        on_report(MovieReport(job.movie, probe, result, summaries, plan, work, swap))
    work.remove()
    logger.info(
        "%s: %d frames kept, %d rejected %s, %d/%d chunks resumed, %.1f s",
        movie_id,
        result.kept,
        sum(result.rejected.values()),
        result.rejected,
        result.chunks_resumed,
        result.chunks,
        result.seconds,
    )
    return result


class _Labeller:
    """The labelling passes of one movie: decode once, label chunks on a thread pool, bounded."""

    def __init__(self, job, probe, work, chunk_job, threads, on_progress, logger):
        self.job, self.probe, self.work, self.chunk_job = job, probe, work, chunk_job
        self.threads, self.on_progress, self.logger = threads, on_progress, logger
        self.frames_done = 0
        self.labellers = LabellerPool()  # one labeller per thread and configuration, for both passes

    def label_movie(self) -> tuple[list[ChunkSummary], ChunkPlan, Any]:
        """Every chunk labelled (or resumed), the reversed-eyes decision, and with
        ``swap_eyes="auto"`` the reversed shots relabelled with the eyes exchanged."""
        config = self.job.config
        summaries, plan = self.label_pass(self.chunk_job)
        swap = swap_report(summaries, config.swap_eyes)
        if swap.swapped_shots or swap.movie.swapped:
            self.logger.warning(
                "%s: eyes look reversed in shot(s) %s (%s); movie: %s (confidence %.2f)%s",
                self.job.movie_id,
                ", ".join(map(str, swap.swapped_shots)) or "none alone",
                swap.movie.reason,
                "swapped" if swap.movie.swapped else "not swapped",
                swap.movie.confidence,
                "; relabelling with the eyes exchanged where confident (swap_eyes=auto)"
                if config.swap_eyes == "auto"
                else "; set swap_eyes=auto (or always) to correct",
            )
        to_correct = swap.shots_to_correct(config.swap_min_confidence) if config.swap_eyes == "auto" else []
        if to_correct:
            fixed, _ = self.label_pass(
                dataclasses.replace(self.chunk_job, swap=True), swap_shots=set(to_correct), plan=plan
            )
            summaries = merge_relabelled(summaries, fixed)
            swap.corrected = sorted({s.shot_id for s in fixed})
        return summaries, plan, swap

    def label_pass(self, chunk_job: ChunkJob, swap_shots: set[int] | None = None, plan: ChunkPlan | None = None):
        """Decode once and label every unfinished chunk; at most two chunks per thread in memory.

        With ``swap_shots`` (``swap_eyes="auto"``): a second pass labelling only those shots' chunks
        with the eyes exchanged (``chunk_job.swap``), under their own names (``s00003-p000x``), so a
        resumed run reuses them too; ``plan`` is the first pass's plan and is not rewritten.
        """
        from pipeline.video import open_stereo, scan_movie

        work, probe, config = self.work, self.probe, self.job.config
        done = work.done_names()
        if swap_shots is None:
            plan = work.read_plan()
            wanted = plan.chunks if plan is not None else None
        else:
            wanted = plan.relabelled_chunks(swap_shots)
        if wanted is not None and set(wanted) <= done:
            # Everything was labelled before the crash: no need to decode again.
            self.logger.info(
                "%s: all %d chunks staged already; skipping the decode pass", self.job.movie_id, len(wanted)
            )
            self._progress(probe.frame_count)
            return [work.summary(n) for n in wanted], plan

        summaries: dict[str, ChunkSummary] = {}
        names: list[str] = []
        # the user's layout argument again (not the probed one): detection is deterministic and
        # keeps what metadata says beyond the layout (eyes stored right first).
        src = open_stereo(probe.path, layout=self.job.layout, right_path=probe.right)
        scan = scan_movie(src, config.shots, config.sampling, self.job.split, progress=False)
        pending: dict[Future, str] = {}

        def finish(fut: Future) -> None:
            s = fut.result()
            summaries[s.name] = s
            self._progress(s.last_frame + 1)

        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=f"label-{self.job.movie_id}")
        try:
            for chunk in iter_chunks(scan, config.chunk_frames):
                if swap_shots is not None and chunk.shot_id not in swap_shots:
                    continue
                name = chunk_name(chunk.shot_id, chunk.part, chunk_job.swap)
                names.append(name)
                if name in done:
                    summaries[name] = work.summary(name)
                    continue
                fut = pool.submit(label_chunk, chunk.frames, (chunk.shot_id, chunk.part), chunk_job, self.labellers)
                pending[fut] = name
                while len(pending) >= 2 * self.threads:
                    _finish_some(pending, finish)
            while pending:
                _finish_some(pending, finish)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        self._progress(probe.frame_count)
        if swap_shots is not None:
            return [summaries[n] for n in names], plan
        plan = ChunkPlan(
            shots=[_shot_dict(s) for s in scan.shots],
            samples=len(scan.samples) if hasattr(scan.samples, "__len__") else None,
            chunks=names,
        )
        work.write_plan(plan)
        return [summaries[n] for n in names], plan

    def _progress(self, frame: int) -> None:
        self.frames_done = max(self.frames_done, min(int(frame), self.probe.frame_count or int(frame)))
        if self.on_progress is not None:
            self.on_progress(self.frames_done, max(self.probe.frame_count, self.frames_done, 1))


def _finish_some(pending: dict[Future, str], finish: Callable[[Future], None]) -> None:
    """Wait for at least one chunk and hand the finished ones to ``finish`` (raises a chunk's error)."""
    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    for fut in sorted(done, key=lambda f: pending[f]):
        pending.pop(fut)
        finish(fut)


def _shot_dict(shot: Any) -> dict[str, int]:
    return {"shot_id": int(shot.shot_id), "start_frame": int(shot.start_frame), "end_frame": int(shot.end_frame)}


def _config_dict(config: IngestConfig) -> dict[str, Any]:
    from pipeline.config import config_to_dict

    return config_to_dict(config)


def _manifest_dict(manifest: Any) -> dict[str, Any]:
    if manifest is None:
        return {}
    if hasattr(manifest, "to_dict"):
        return manifest.to_dict()
    from pipeline.config import config_to_dict

    out = config_to_dict(manifest)
    return out if isinstance(out, dict) else {"value": out}
