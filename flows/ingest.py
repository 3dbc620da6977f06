"""The ``ingest_movie`` flow: one stereo movie into the dataset, resumable and observable.

Table of contents (each step is a few lines over :mod:`pipeline`)::

    preflight            id, configuration, inputs, dataset folder: before any work (flow body)
    movie_task           one task per movie: pipeline.movie_job.run_movie_job on whatever worker
                         the task runner picks: probe, one decode pass, chunks labelled on the
                         worker's threads and staged, swapped eyes decided (and with
                         swap_eyes=auto relabelled), commit (renames), publish
    artifacts            from the worker: the progress artifact ``ingest-progress-<id>`` as chunks
                         finish, then the markdown report ``ingest-<id>`` (previews, shots,
                         kept/rejected by reason, swapped eyes)

Movies are the unit of distribution: the task's parameters are paths, the configuration and small
values (a few kB), never frames; the worker decodes the movie itself. Tasks are tagged ``decode``
(and ``gpu`` when labelling may use a GPU), so Prefect tag concurrency limits bound them
(``prefect concurrency-limit create decode 4``). Resume: chunks already staged for the same
(fingerprint, configuration) key are not labelled again, and a movie already committed under that
key is only (re)published. Bad input (:class:`pipeline.errors.BadInputError`) fails at once,
without retries.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import ProgressArtifact, markdown_table, png_data_uri, publish_markdown
from flows.parameters import movie_flow
from flows.runners import RunnerSpec, open_task_runner
from pipeline.errors import DepthmineError
from pipeline.ingest import ChunkPlan, ChunkSummary, IngestConfig, LabelSettings, WorkDir, preflight, publish_with
from pipeline.movie_job import MovieJob, MovieProbe, MovieReport, MovieResult, run_movie_job, uses_gpu
from pipeline.shards.manifest import absolute_location

__all__ = [
    "ingest_movie",
    "movie_task",
    "movie_task_for",
    "IngestResult",
    "MovieProbe",
    "retry_unless_bad_input",
    "IO_RETRIES",
]

# Transient I/O (network filesystems, object stores) gets three tries with growing waits.
IO_RETRIES = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_jitter_factor=0.2)
# A movie's task retries less often: a retry resumes from the staged chunks, but a real bug
# would otherwise decode the movie four times before the run fails.
MOVIE_RETRIES = dict(retries=1, retry_delay_seconds=10, retry_jitter_factor=0.2)

#: ``ingest_movie``'s result rows (the build summary's rows too).
IngestResult = MovieResult


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: a user's bad input or configuration never gets better by retrying."""
    try:
        state.result()
    except DepthmineError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True


@task(name="publish-dataset", retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, **IO_RETRIES)
def publish_task(out: str, movies: Any = None, drop: Sequence[str] = (), only: Sequence[str] | None = None) -> Any:
    """Publish the dataset manifest (atomically replaced; readers see the old or the new one)."""
    return publish_with(out, add=movies or (), drop=drop, only=only)


def _device_tags(config: IngestConfig) -> list[str]:
    """``gpu`` for work that may use a GPU, so a tag concurrency limit can bound it.

    ``prefect concurrency-limit create gpu 1`` then lets one movie at a time hold the GPU.
    """
    return ["gpu"] if uses_gpu(config) else []


def movie_tags(config: IngestConfig) -> list[str]:
    """A movie task's tags: ``decode`` always (a movie decoded on a worker), ``gpu`` when it may use one."""
    return ["decode", *_device_tags(config)]


@task(name="ingest-movie-job", retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, **MOVIE_RETRIES)
def movie_task(job: MovieJob, progress: bool = False, bar_position: int = 0) -> dict[str, Any]:
    """One movie on this worker (:func:`pipeline.movie_job.run_movie_job`), reported from here.

    The progress artifact ``ingest-progress-<movie_id>`` follows the chunks as they finish; the
    markdown report ``ingest-<movie_id>`` is published once the movie is committed. With
    ``progress`` a terminal bar is drawn where the task runs (the CLI's terminal for threads).
    """
    logger = get_run_logger()
    artifact = ProgressArtifact(f"ingest-progress-{job.movie_id}", f"frames of {job.movie_id} decoded and labelled")
    bar = _progress_bar(progress, job.movie_id, bar_position)

    def on_progress(done: int, total: int) -> None:
        artifact.update(done / max(total, 1))
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    def on_report(r: MovieReport) -> None:
        publish_markdown(
            f"ingest-{job.movie_id}",
            _report(r.movie, r.probe, r.result, r.summaries, r.plan, r.work, r.swap),
            f"ingest of {job.movie_id}",
        )

    try:
        result = run_movie_job(job, on_progress=on_progress, on_report=on_report, logger=logger)
    finally:
        if bar is not None:
            bar.close()
    artifact.update(1.0, force=True)
    return result


def movie_task_for(job: MovieJob) -> Any:
    """``movie_task`` named after the movie and tagged for its resources (``decode``, ``gpu``)."""
    return movie_task.with_options(task_run_name=f"movie-{job.movie_id}", tags=movie_tags(job.config))


@movie_flow(name="ingest-movie", log_prints=False, persist_result=False)
def ingest_movie(
    movie: str,
    out: str,
    movie_id: str | None = None,
    split: str = "train",
    layout: str | None = None,
    right: str | None = None,
    labelling: LabelSettings = LabelSettings(),
    runner: RunnerSpec = RunnerSpec(),
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
        labelling: flow backend, checkpoint, device and overrides
            (:class:`~pipeline.ingest.LabelSettings`); a ``cuda`` device tags the task ``gpu``.
        runner: where the movie's task runs (:class:`~flows.runners.RunnerSpec`); its chunks are
            labelled there on ``workers`` threads (a remote Dask worker uses its own cores).
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
    # paths as every worker will read them (a relative one would be each worker's own folder)
    out, movie = absolute_location(out), absolute_location(movie)
    right = absolute_location(right) if right else right
    # Everything that can be checked is checked before the dataset folder is touched.
    movie_id, config = preflight(movie, out, movie_id, right, labelling, replace=replace or not publish)
    job = MovieJob(
        movie=movie,
        out=out,
        movie_id=movie_id,
        config=config,
        split=split,
        layout=layout,
        right=right,
        publish=publish,
        refuse_replace=publish and not replace,
        # one movie: its chunks use the workers' cores (a remote worker decides for itself)
        threads=None if runner.dask_address else runner.n_workers,
    )
    task = movie_task_for(job)
    if runner.kind == "threads":
        return task(job=job, progress=progress)  # in this process: nothing to send anywhere
    with open_task_runner(runner) as task_runner:
        return task_runner.submit(task, parameters={"job": job, "progress": progress}).result()


def _progress_bar(progress: bool, movie_id: str, position: int = 0):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=None, desc=f"ingest {movie_id}", unit="frame", dynamic_ncols=True, position=position)


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
