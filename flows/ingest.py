"""The ``ingest_movie`` flow: one stereo movie into the dataset, resumable and observable.

Table of contents (each step is a few lines over :mod:`pipeline`)::

    probe_movie          open the movie, layout, crop, fingerprint       (task, I/O: retried)
    decode + chunk       one decode pass: shots, sampling, per-shot chunks  (flow body, streaming)
    label_chunk_task     disparity + checks + sky, staged on disk        (tasks, in parallel)
    swapped eyes         decided per shot and movie from the chunks' evidence; a warning, and with
                         swap_eyes=auto a second pass relabelling those shots with the eyes exchanged
    commit_movie_task    the movie's immutable shard folder              (task, I/O: retried)
    publish_task         the dataset manifest with this movie            (task, I/O: retried)
    report               markdown artifact: previews, shots, kept/rejected by reason, swapped eyes

Resume: chunks already staged for the same (fingerprint, configuration) key are not submitted
again, and a movie already committed under that key is only (re)published. Bad input
(:class:`pipeline.errors.BadInputError`) fails at once, without retries.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import prefect
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import ProgressArtifact, markdown_table, png_data_uri, publish_markdown
from flows.runners import RunnerSpec, open_task_runner
from pipeline.changes import recorded_source, settings_hash
from pipeline.errors import BadInputError, DepthmineError
from pipeline.ingest import (
    ChunkJob,
    ChunkPlan,
    ChunkSummary,
    IngestConfig,
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
    preflight,
    project_version,
    publish_with,
    source_fingerprint,
    swap_report,
)
from pipeline.layouts import CropBox
from pipeline.shards.locks import movie_lock
from pipeline.shards.manifest import absolute_location

__all__ = ["ingest_movie", "IngestResult", "retry_unless_bad_input", "IO_RETRIES"]

# Transient I/O (network filesystems, object stores) gets three tries with growing waits.
IO_RETRIES = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_jitter_factor=0.2)


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: a user's bad input or configuration never gets better by retrying."""
    try:
        state.result()
    except DepthmineError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True


@dataclass
class MovieProbe:
    """What the flow needs to know about the input before decoding (small, picklable)."""

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


@dataclass
class IngestResult:
    """What ``ingest_movie`` returns (also the build summary's row for this movie)."""

    movie_id: str
    key: str
    split: str
    kept: int
    rejected: dict[str, int]
    chunks: int
    chunks_resumed: int
    shots: int
    seconds: float
    label_seconds: float = 0.0  # summed over chunk tasks computed in this run
    skipped: bool = False  # already committed under this key: nothing recomputed
    swapped_eyes: dict[str, Any] = field(default_factory=dict)  # pipeline.ingest.SwapReport.to_dict()
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _probe(movie: str, layout: str | None, right: str | None) -> MovieProbe:
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


@task(name="probe-movie", retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, **IO_RETRIES)
def probe_movie(movie: str, layout: str | None = None, right: str | None = None) -> MovieProbe:
    """Open the movie, settle its layout and crop, fingerprint the file(s)."""
    return _probe(movie, layout, right)


# No retries: labelling is computation, not I/O; a crash is handled by resuming the run.
@task(name="label-chunk", tags=["disparity"], cache_policy=NO_CACHE)
def label_chunk_task(frames: list, chunk: tuple[int, int], job: ChunkJob) -> ChunkSummary:
    """Disparity for one chunk of one shot, staged on disk (see :func:`pipeline.ingest.label_chunk`)."""
    return label_chunk(frames, chunk, job)


@task(name="commit-movie", retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, **IO_RETRIES)
def commit_movie_task(
    out: str, movie_id: str, key: str, work_root: str, chunk_names: list[str], config: IngestConfig, meta: dict
) -> Any:
    """Copy the staged chunks, in order, into the movie's immutable shard folder."""
    return commit_movie(out, movie_id, key, WorkDir(work_root), chunk_names, config, meta)


@task(name="publish-dataset", retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, **IO_RETRIES)
def publish_task(out: str, movies: Any = None, drop: Sequence[str] = (), only: Sequence[str] | None = None) -> Any:
    """Publish the dataset manifest (atomically replaced; readers see the old or the new one)."""
    return publish_with(out, add=movies or (), drop=drop, only=only)


def _device_tags(config: IngestConfig) -> list[str]:
    """``gpu`` for work that may use a GPU, so a tag concurrency limit can bound it.

    ``prefect concurrency-limit create gpu 1`` then lets one chunk at a time hold the GPU while
    decoding and the CPU checks of other chunks go on.
    """
    d = config.disparity
    gpu = (d.device or "").startswith("cuda") or (d.device is None and d.flow.startswith("ptlflow:"))
    return ["gpu"] if gpu else []


@prefect.flow(name="ingest-movie", log_prints=False, persist_result=False)
def ingest_movie(
    movie: str,
    out: str,
    movie_id: str | None = None,
    split: str = "train",
    layout: str | None = None,
    right: str | None = None,
    flow: str | None = None,
    ckpt: str | None = None,
    device: str | None = None,
    overrides: list[str] | None = None,
    runner: str = "threads",
    workers: int | None = None,
    dask_address: str | None = None,
    publish: bool = True,
    progress: bool = False,
    replace: bool = False,
) -> dict[str, Any]:
    """Ingest one stereo movie into the dataset at ``out``.

    Args:
        movie: the movie file (the left eye's file for separate eyes).
        out: the dataset folder (shared storage when the runner spans machines).
        movie_id: the dataset's name for it; default: the file name without extension.
        split: ``train``, ``val`` or ``test`` (splits are by movie).
        layout: stereo layout; None detects it from metadata and content.
        right: the right eye's file (layout ``separate``).
        flow: optical-flow backend (default ``dis-medium``); ``ckpt``: its weights file.
        device: ``cpu``/``cuda``/``cuda:1`` for torch backends; cuda tasks get the ``gpu`` tag.
        overrides: dotted configuration overrides (``disparity.lr_threshold_px=1.5``).
        runner, workers, dask_address: where the chunk tasks run (:mod:`flows.runners`).
        publish: publish the dataset manifest at the end (``build_dataset`` publishes once).
        progress: show a terminal progress bar (the CLI sets it in a terminal).
        replace: replace a published movie of this id that came from another source file
            (without it such an ingest is refused before any work; ``build`` always replaces,
            its catalog names the source).

    Returns:
        :meth:`IngestResult.to_dict`.

    Raises:
        ConfigError, BadInputError: before any work, for a bad id, override, input or dataset
            folder; after labelling, a movie that keeps no frame (with the rejection reasons).
    """
    t0 = time.monotonic()
    logger = get_run_logger()
    # paths as every worker will read them (a relative one would be each worker's own folder)
    out, movie = absolute_location(out), absolute_location(movie)
    right = absolute_location(right) if right else right
    # Everything that can be checked is checked before the dataset folder is touched.
    movie_id, config = preflight(
        movie,
        out,
        movie_id,
        right,
        overrides or (),
        flow=flow,
        ckpt=ckpt,
        device=device,
        replace=replace or not publish,
    )
    spec = RunnerSpec(runner, workers, dask_address)

    probe = probe_movie(movie, layout, right)
    key = ingest_key(probe.fingerprint, config, {"split": split, "layout": probe.layout, "version": project_version()})
    logger.info(
        "%s: %s %dx%d per eye, %d frames, key %s",
        movie_id,
        probe.layout,
        probe.eye_width,
        probe.eye_height,
        probe.frame_count,
        key,
    )
    # One run at a time per movie: a second run waits here, then finds the movie committed.
    with movie_lock(out, movie_id, on_wait=logger.warning):
        if publish and not replace:
            check_replace(out, movie_id, probe.fingerprint, movie, replace)
        return _ingest_locked(movie, out, movie_id, split, layout, config, spec, probe, key, publish, progress, t0)


def _ingest_locked(
    movie, out, movie_id, split, layout, config, spec, probe, key, publish, progress, t0
) -> dict[str, Any]:
    """The ingest once the movie's lock is held: resume or label, commit, publish, report."""
    logger = get_run_logger()
    committed = find_committed(out, movie_id, key)
    if committed is not None:
        logger.info("%s already committed under key %s: nothing to compute", movie_id, key)
        WorkDir.for_movie(out, movie_id, key).remove()  # a crash after the commit left it behind
        if publish:
            publish_task(out, [committed])
        return _result_from_manifest(movie_id, key, split, committed, time.monotonic() - t0).to_dict()

    work = WorkDir.for_movie(out, movie_id, key)
    job = ChunkJob(
        work_dir=str(work.root),
        movie_id=movie_id,
        split=split,
        config=config,
        crop=probe.crop,
        source_width=probe.eye_width,
        source_height=probe.eye_height,
        provenance={
            "flow_backend": config.disparity.flow,
            "config_hash": key,
            "source_fingerprint": probe.fingerprint,
            "project_version": project_version(),
        },
        # parallel tasks share the cores: one OpenCV thread each (-1: a single worker uses them all)
        cv_threads=1 if spec.n_workers > 1 else -1,
    )
    tags = _device_tags(config)
    summaries, plan = _label_all_chunks(movie_id, probe, layout, config, split, work, job, spec, tags, progress)
    swap = swap_report(summaries, config.swap_eyes)
    if swap.swapped_shots or swap.movie.swapped:
        logger.warning(
            "%s: eyes look reversed in shot(s) %s (%s); movie: %s (confidence %.2f)%s",
            movie_id,
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
        fixed, _ = _label_all_chunks(
            movie_id,
            probe,
            layout,
            config,
            split,
            work,
            dataclasses.replace(job, swap=True),
            spec,
            tags,
            progress,
            swap_shots=set(to_correct),
            plan=plan,
        )
        summaries = merge_relabelled(summaries, fixed)
        swap.corrected = sorted({s.shot_id for s in fixed})

    kept = sum(s.kept for s in summaries)
    if kept == 0:
        rejected = sum((Counter(s.rejected) for s in summaries), Counter())
        work.remove()
        reasons = ", ".join(f"{r}: {n}" for r, n in rejected.most_common()) or "no frame was sampled"
        raise BadInputError(
            movie,
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
        "settings": settings_hash(config, layout, split),
        "layout": probe.layout,
        "layout_reason": probe.layout_reason,
        "crop": probe.crop.as_dict(),
        "eye_size": [probe.eye_width, probe.eye_height],
        "fps": probe.fps,
        "frame_count": probe.frame_count,
        "shots": plan.shots,
        "split": split,
        "config": _config_dict(config),
        "eyes_swapped_metadata": probe.eyes_swapped_metadata,
        "swapped_eyes": swap.to_dict(),
    }
    manifest = commit_movie_task(out, movie_id, key, str(work.root), [s.name for s in summaries], config, meta)
    if publish:
        publish_task(out, [manifest])
    result = IngestResult(
        movie_id=movie_id,
        key=key,
        split=split,
        kept=sum(s.kept for s in summaries),
        rejected=dict(sum((Counter(s.rejected) for s in summaries), Counter())),
        chunks=len(summaries),
        chunks_resumed=sum(s.resumed for s in summaries),
        shots=len(plan.shots),
        seconds=time.monotonic() - t0,
        label_seconds=sum(s.seconds for s in summaries if not s.resumed),
        swapped_eyes=swap.to_dict(),
        manifest=_manifest_dict(manifest),
    )
    publish_markdown(
        f"ingest-{movie_id}", _report(movie, probe, result, summaries, plan, work, swap), f"ingest of {movie_id}"
    )
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
    return result.to_dict()


def _label_all_chunks(
    movie_id, probe, layout, config, split, work, job, spec, tags, progress, swap_shots=None, plan=None
):
    """Decode once, submit every unfinished chunk, and wait; bounded frames in flight.

    With ``swap_shots`` (``swap_eyes="auto"``): a second pass labelling only those shots' chunks
    with the eyes exchanged (``job.swap``), under their own names (``s00003-p000x``), so a resumed
    run reuses them too; ``plan`` is the first pass's plan and is not rewritten.
    """
    from pipeline.video import open_stereo, scan_movie

    logger = get_run_logger()
    done = work.done_names()
    if swap_shots is None:
        plan = work.read_plan()
        wanted = plan.chunks if plan is not None else None
    else:
        wanted = plan.relabelled_chunks(swap_shots)
    if wanted is not None and set(wanted) <= done:
        # Everything was labelled before the crash: no need to decode again.
        logger.info("%s: all %d chunks staged already; skipping the decode pass", movie_id, len(wanted))
        return [work.summary(n) for n in wanted], plan

    bar = _progress_bar(progress, probe.frame_count, movie_id)
    artifact = ProgressArtifact(f"ingest-progress-{movie_id}", f"frames of {movie_id} decoded and labelled")
    summaries: dict[str, ChunkSummary] = {}
    max_in_flight = 2 * spec.n_workers
    task = label_chunk_task.with_options(tags=tags) if tags else label_chunk_task
    # the user's layout argument again (not the probed one): detection is deterministic and
    # keeps what metadata says beyond the layout (eyes stored right first).
    src = open_stereo(probe.path, layout=layout, right_path=probe.right)
    scan = scan_movie(src, config.shots, config.sampling, split, progress=False)
    names: list[str] = []
    pending: dict[Any, str] = {}

    def finish(fut: Any) -> None:
        s = fut.result()
        summaries[s.name] = s
        frac = (s.last_frame + 1) / max(probe.frame_count, 1)
        artifact.update(frac)
        if bar is not None:
            bar.n = max(bar.n, s.last_frame + 1)
            bar.set_postfix(kept=sum(x.kept for x in summaries.values()), refresh=False)
            bar.refresh()

    with open_task_runner(spec) as runner:
        for chunk in iter_chunks(scan, config.chunk_frames):
            if swap_shots is not None and chunk.shot_id not in swap_shots:
                continue
            name = chunk_name(chunk.shot_id, chunk.part, job.swap)
            names.append(name)
            if name in done:
                summaries[name] = work.summary(name)
                continue
            fut = runner.submit(
                task, parameters={"frames": chunk.frames, "chunk": (chunk.shot_id, chunk.part), "job": job}
            )
            pending[fut] = name
            while len(pending) >= max_in_flight:
                _wait_some(pending, finish)
        while pending:
            _wait_some(pending, finish)
    if bar is not None:
        bar.n = bar.total or bar.n
        bar.close()
    artifact.update(1.0, force=True)
    if swap_shots is not None:
        return [summaries[n] for n in names], plan
    plan = ChunkPlan(
        shots=[_shot_dict(s) for s in scan.shots],
        samples=len(scan.samples) if hasattr(scan.samples, "__len__") else None,
        chunks=names,
    )
    work.write_plan(plan)
    return [summaries[n] for n in names], plan


def _wait_some(pending: dict[Any, str], finish) -> None:
    """Wait for one future to finish and hand it to ``finish`` (raises its task's error)."""
    from prefect.futures import as_completed

    fut = next(as_completed(list(pending)))
    pending.pop(fut, None)
    finish(fut)


def _progress_bar(progress: bool, total: int, movie_id: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total or None, desc=f"ingest {movie_id}", unit="frame", dynamic_ncols=True)


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


def _result_from_manifest(movie_id, key, split, manifest, seconds) -> IngestResult:
    return IngestResult(
        movie_id=movie_id,
        key=key,
        split=split,
        kept=int(manifest.rows),
        rejected=dict(manifest.rejected_reasons),
        chunks=0,
        chunks_resumed=0,
        shots=len(manifest.meta.get("shots", [])),
        seconds=seconds,
        skipped=True,
        swapped_eyes=dict(manifest.meta.get("swapped_eyes", {})),
        manifest=_manifest_dict(manifest),
    )


def _report(
    movie: str,
    probe: MovieProbe,
    result: IngestResult,
    summaries: list[ChunkSummary],
    plan: ChunkPlan,
    work: WorkDir,
    swap: Any = None,
) -> str:
    """The run's markdown report: input, previews, shots, frames kept/rejected by reason."""
    import cv2

    lines = [
        f"# Ingest of `{result.movie_id}` ({result.split})",
        "",
        f"- source: `{movie}` ({probe.layout}: {probe.layout_reason}), {probe.eye_width}x{probe.eye_height} per eye, "
        f"{probe.frame_count} frames at {probe.fps:.3g} fps",
        f"- crop: x={probe.crop.x} y={probe.crop.y} w={probe.crop.w} h={probe.crop.h}",
        f"- key: `{result.key}` (fingerprint `{probe.fingerprint}`)",
        f"- frames kept: **{result.kept}**, rejected: **{sum(result.rejected.values())}**; "
        f"chunks: {result.chunks} ({result.chunks_resumed} resumed from disk); {result.seconds:.1f} s",
        "",
        "## Previews (image | disparity)",
        "",
    ]
    for p in work.previews(6):
        img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        lines.append(f"![{p.stem}]({png_data_uri(img)})")
    lines += ["", "## Frames rejected by reason", ""]
    lines.append(markdown_table(["reason", "frames"], sorted(result.rejected.items())) if result.rejected else "none")
    per_shot: dict[int, list[ChunkSummary]] = {}
    for s in summaries:
        per_shot.setdefault(s.shot_id, []).append(s)
    rows = []
    for shot in plan.shots:
        ss = per_shot.get(shot["shot_id"], [])
        rej = Counter()
        for s in ss:
            rej.update(s.rejected)
        rows.append(
            [
                shot["shot_id"],
                shot["start_frame"],
                shot["end_frame"],
                sum(s.kept for s in ss),
                sum(rej.values()),
                ", ".join(f"{k}: {v}" for k, v in sorted(rej.items())),
            ]
        )
    lines += ["", "## Shots", "", markdown_table(["shot", "start", "end", "kept", "rejected", "reasons"], rows)]
    if swap is not None:
        lines += ["", *_swap_section(probe, swap)]
    return "\n".join(lines) + "\n"


def _swap_section(probe: MovieProbe, swap: Any) -> list[str]:
    """The report's reversed-eyes section: the movie's decision and a row per shot."""
    m = swap.movie
    verdict = "**reversed**" if m.swapped else "normal"
    lines = [
        "## Swapped eyes",
        "",
        f"- movie: {verdict} (confidence {m.confidence:.2f}): {m.reason}",
        f"- metadata: {'right eye stored first (exchanged when decoding)' if probe.eyes_swapped_metadata else 'left eye first'}; "
        f"mode `swap_eyes={swap.mode}`"
        + (
            f"; relabelled with the eyes exchanged: shots {', '.join(map(str, swap.corrected))}"
            if swap.corrected
            else ""
        ),
        "",
    ]
    rows = []
    for sid, d in sorted(swap.shots.items()):
        mean = f"{d.mean_evidence:+.2f}" if d.mean_evidence == d.mean_evidence else "n/a"
        verdict = "**reversed**" if d.swapped else ("normal" if d.swapped_frames + d.normal_frames else "no evidence")
        rows.append(
            [
                sid,
                d.frames,
                d.swapped_frames,
                d.normal_frames,
                mean,
                f"{d.confidence:.2f}",
                verdict + (" (corrected)" if sid in swap.corrected else ""),
            ]
        )
    lines.append(
        markdown_table(
            ["shot", "frames", "look reversed", "look normal", "mean evidence", "confidence", "decision"], rows
        )
    )
    return lines
