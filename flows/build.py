"""The ``build_dataset`` flow: rebuild the whole dataset from a catalog, then publish one version.

Table of contents::

    load_catalog_task    read and validate the catalog and every setting, including each entry's
                         overrides: a mistake fails the whole run at once, before any work
    RebuildCheck         per movie (pipeline/changes.py): same settings and file stat as published
                         (or, after a touch, the same content) -> kept as published, nothing opened
    movie tasks          one task per other movie (pipeline.movie_job.run_movie_job) on the task
                         runner, as many at once as it has slots (a Dask cluster's threads): new
                         or changed movies are ingested on the worker, those committed under the
                         same key already are only looked up
    publish_task         one new dataset version listing exactly the catalog's movies: removed
                         movies drop out, the previous version stays readable until then; when
                         it would list the same movies under the same keys, nothing is published
                         (the summary says "unchanged")
    garbage collection   folders no longer referenced by the last ``keep_versions`` versions
    summary artifact     per movie: status, split, frames kept/rejected, time

**Bad input policy.** A movie that fails with bad input (:class:`~pipeline.errors.BadInputError`:
unreadable, not stereo, missing, no frame kept) is reported in the summary; a new movie is left
out of the new version, a published one keeps its published version (a failure is never a
removal: only leaving the catalog removes a movie). The rest of the rebuild goes on and the run
ends *Completed* with a warning in its log and ``failed`` in its result (the CLI then exits with
status 1). When every movie fails, or more than ``max_failed_share`` of the published ones do,
nothing is published (:class:`NothingPublished`, exit 1): that points at the run, not the movies.
A configuration mistake (an unknown ``--set`` key, a bad value in a catalog entry's overrides)
fails the run before any work. Any other error (a bug, I/O still failing after its retries)
fails the run *before* publishing: the previous version stays current, and the staged chunks make
the next run resume where this one stopped. Shards leave the disk only through garbage
collection of versions older than ``keep_versions``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import artifact_key, markdown_table, publish_markdown
from flows.catalog import CatalogEntry, load_catalog
from flows.ingest import IO_RETRIES, publish_task, retry_unless_bad_input
from flows.parameters import movie_flow
from flows.runners import RunnerSpec, default_workers, open_task_runner
from pipeline.changes import RebuildCheck
from pipeline.errors import ConfigError, DepthmineError
from pipeline.ingest import LabelSettings
from pipeline.shards.manifest import absolute_location

__all__ = ["build_dataset", "validate_build", "summary_artifact_key", "NothingPublished", "MAX_FAILED_SHARE"]


class NothingPublished(DepthmineError):
    """A rebuild whose failures are too many to publish: the current version stays (exit 1)."""

    exit_code = 1


#: Default for ``max_failed_share``: the share of the current movies allowed to fail in one rebuild.
MAX_FAILED_SHARE = 0.25


def validate_build(
    catalog: str,
    out: str,
    labelling: LabelSettings = LabelSettings(),
    runner: RunnerSpec = RunnerSpec(),
    keep_versions: int = 2,
    max_failed_share: float = MAX_FAILED_SHARE,
) -> list[CatalogEntry]:
    """Every check of a rebuild that needs no decoding: a mistake here fails the whole run at once.

    The catalog, each entry's configuration (``labelling``, then the entry's own overrides: an
    unknown key or a bad value is a configuration error of the run, named with its catalog line,
    never a "bad movie"), ``keep_versions``, ``max_failed_share`` and the dataset folder (``runner``
    checked itself when it was built). Nothing is written but the dataset folder itself (created if
    missing). The CLI calls it before Prefect starts; the flow calls it again first thing.

    Raises:
        ConfigError, BadInputError: one line naming the problem.
    """
    from pipeline.shards.manifest import check_dataset_writable

    entries = load_catalog(catalog)
    if not entries:
        raise ConfigError(f"{catalog}: the catalog lists no movies (to empty a dataset, delete it)")
    try:
        labelling.config()
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from None
    for entry in (e for e in entries if e.overrides):
        try:
            labelling.with_overrides(entry.overrides).config()
        except ConfigError as exc:
            raise ConfigError(f"{catalog}:{entry.line} ({entry.movie_id}): {exc}") from None
    if not isinstance(runner, RunnerSpec):
        raise ConfigError(f"runner must be a RunnerSpec, got {runner!r}")
    if int(keep_versions) < 1:
        raise ConfigError(f"--keep-versions must be >= 1, got {keep_versions}")
    if not 0.0 <= float(max_failed_share) <= 1.0:
        raise ConfigError(f"--max-failed-share must be between 0 and 1, got {max_failed_share}")
    check_dataset_writable(out)
    return entries


@task(name="load-catalog", cache_policy=NO_CACHE, retry_condition_fn=retry_unless_bad_input, **IO_RETRIES)
def load_catalog_task(
    catalog: str,
    out: str,
    labelling: LabelSettings,
    runner: RunnerSpec,
    keep_versions: int,
    max_failed_share: float,
) -> list[CatalogEntry]:
    """Parse and validate the catalog and every setting (:func:`validate_build`)."""
    return validate_build(catalog, out, labelling, runner, keep_versions, max_failed_share)


@task(name="collect-garbage", cache_policy=NO_CACHE)
def collect_garbage_task(out: str, keep_versions: int, movie_ids: list[str], current_keys: dict[str, str]) -> int:
    """Remove unreferenced movie folders and stale staging.

    Staging goes when its movie left the catalog, or when the movie was just committed under
    another key (an earlier file or configuration whose interrupted work can never be reused).
    Staging of a movie whose lock another run holds (an ``ingest`` running beside this build) is
    never touched, nor is a catalog-less movie's staging modified in the last hour (the guard
    where ``flock`` does not work across machines).
    """
    from pipeline.shards import garbage_collect
    from pipeline.shards.locks import movie_locked, recently_touched

    removed = len(garbage_collect(out, keep=keep_versions))
    work = Path(out) / ".work"
    if work.is_dir():
        for d in work.iterdir():
            if not d.is_dir() or movie_locked(out, d.name):
                continue
            if d.name not in movie_ids:
                if not recently_touched(d):
                    shutil.rmtree(d, ignore_errors=True)
                    removed += 1
            elif d.name in current_keys:
                for stale in (k for k in d.iterdir() if k.is_dir() and k.name != current_keys[d.name]):
                    shutil.rmtree(stale, ignore_errors=True)
                    removed += 1
            with contextlib.suppress(OSError):
                d.rmdir()  # only if now empty
        with contextlib.suppress(OSError):
            work.rmdir()
    return removed


@movie_flow(name="build-dataset", log_prints=False, persist_result=False)
def build_dataset(
    catalog: str,
    out: str,
    labelling: LabelSettings = LabelSettings(),
    runner: RunnerSpec = RunnerSpec(),
    keep_versions: int = 2,
    progress: bool = False,
    max_failed_share: float = MAX_FAILED_SHARE,
) -> dict[str, Any]:
    """Rebuild the dataset at ``out`` from ``catalog`` and publish a new version atomically.

    Args:
        catalog: a YAML or CSV catalog (see :mod:`flows.catalog`).
        out: the dataset folder.
        labelling: flow backend, checkpoint, device and overrides for every movie
            (:class:`~pipeline.ingest.LabelSettings`); a catalog entry's own ``overrides`` apply
            after these. Checked for every entry before any work.
        runner: where the movies' tasks run (:class:`~flows.runners.RunnerSpec`): one task per
            movie, as many at once as the runner has slots (``workers``, or a Dask scheduler's
            threads over all its workers); each labels its chunks on its machine's cores.
        keep_versions: dataset versions whose movie folders are kept on disk (>= 1).
        progress: terminal progress bars (the CLI sets it in a terminal).
        max_failed_share: publish nothing when more than this share of the currently published
            movies (still in the catalog) fail in this run, or when every movie fails.

    Returns:
        ``{"version", "movies": [per-movie rows], "failed": [{movie_id, path, error, kept_previous}],
        "removed"}``.

    Raises:
        ConfigError, BadInputError: a mistake found before any work (nothing written).
        NothingPublished: too many movies failed; the current version stays as it was.
    """
    t0 = time.monotonic()
    out = absolute_location(out)  # as every worker will read it (#13: relative --out with Dask)
    entries = load_catalog_task(catalog, out, labelling, runner, keep_versions, max_failed_share)
    get_run_logger().info("catalog %s: %d movies", catalog, len(entries))
    previous = _current_ids(out)
    changes = RebuildCheck(out, labelling)  # pipeline/changes.py: unchanged movies stay as published
    outcomes = _kept_unchanged(entries, changes)
    todo = [i for i in range(len(entries)) if i not in outcomes]
    outcomes.update(zip(todo, _ingest_movies([entries[i] for i in todo], out, labelling, runner, progress)))
    done = _Movies.collect(entries, outcomes, previous, out)
    refusal = _refusal(entries, done.failed, previous, max_failed_share)
    if refusal:
        _publish_summary(catalog, out, done.summary(None, 0, t0, refused=refusal))
        raise NothingPublished(f"{out}: nothing published: {refusal}")
    catalog_ids = [e.movie_id for e in entries]
    if not changes.publishes(done.manifests, catalog_ids):  # nothing changed: no new version
        gc = collect_garbage_task(out, keep_versions, catalog_ids, done.keys)
        return _unchanged_summary(catalog, out, changes, done, gc, t0)
    # Exactly the catalog: its good movies, plus the published version of those that failed now.
    manifest = publish_task(out, done.manifests, only=catalog_ids)
    gc = collect_garbage_task(out, keep_versions, catalog_ids, done.keys)
    return _published_summary(catalog, out, manifest, done, sorted(previous - set(catalog_ids)), gc, t0)


def _kept_unchanged(entries: list[CatalogEntry], changes: RebuildCheck) -> dict[int, Any]:
    """``{catalog index: (summary row, published entry)}`` of the movies the rebuild keeps as
    published (:meth:`pipeline.changes.RebuildCheck.unchanged`: no probe, no task)."""
    kept: dict[int, Any] = {}
    for i, entry in enumerate(entries):
        t_entry = time.monotonic()
        ref = changes.unchanged(entry.movie_id, entry.path, entry.split, entry.layout, entry.right, entry.overrides)
        if ref is not None:
            kept[i] = (changes.result(ref, time.monotonic() - t_entry), ref)
    return kept


@dataclasses.dataclass
class _Movies:
    """A rebuild's movies once ingested or kept: the summary's rows, the failures, what to publish."""

    rows: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    manifests: list[Any]

    @classmethod
    def collect(cls, entries: list[CatalogEntry], outcomes: dict[int, Any], previous: set[str], out: str) -> _Movies:
        """Each entry's outcome, in catalog order: a kept ``(row, ref)``, an ingest's row, or its error."""
        logger = get_run_logger()
        done = cls([], [], [])
        for i, entry in enumerate(entries):
            outcome = outcomes[i]
            if isinstance(outcome, tuple):  # unchanged: its published entry as it is
                done.rows.append(outcome[0])
                done.manifests.append(outcome[1])
            elif isinstance(outcome, DepthmineError):
                kept = entry.movie_id in previous
                logger.warning(
                    "%s (catalog line %d) failed%s: %s",
                    entry.movie_id,
                    entry.line,
                    "; its published version is kept" if kept else "",
                    outcome,
                )
                done.failed.append(
                    {
                        "movie_id": entry.movie_id,
                        "path": entry.path,
                        "line": entry.line,
                        "error": str(outcome),
                        "kept_previous": kept,
                    }
                )
            else:
                swap = outcome.get("swapped_eyes", {})
                if swap.get("swapped_shots") and not swap.get("corrected_shots"):
                    logger.warning(
                        "%s: eyes look reversed in shot(s) %s; set swap_eyes=auto in its catalog overrides to correct",
                        entry.movie_id,
                        ", ".join(map(str, swap["swapped_shots"])),
                    )
                done.rows.append(outcome)
                done.manifests.append(_load_manifest(out, entry.movie_id, outcome["key"]))
        return done

    @property
    def keys(self) -> dict[str, str]:
        """The key of every movie now current (what garbage collection keeps the staging of)."""
        return {r["movie_id"]: r["key"] for r in self.rows}

    def summary(self, version: int | None, rows: int, t0: float, removed=(), gc: int = 0, **extra: Any) -> dict:
        """The flow's result (and the summary artifact's content)."""
        return {
            "version": version,
            "rows": rows,
            "movies": self.rows,
            "failed": self.failed,
            "removed": list(removed),
            "gc_removed_paths": gc,
            "seconds": time.monotonic() - t0,
            **extra,
        }


def _ingest_movies(
    entries: list[CatalogEntry],
    out: str,
    labelling: LabelSettings,
    spec: RunnerSpec,
    progress: bool,
) -> list[dict[str, Any] | DepthmineError]:
    """Every catalog movie as one task on the task runner, as many at once as it has slots.

    The task's parameters are a :class:`~pipeline.movie_job.MovieJob` (paths, configuration, a few
    kB); each worker decodes, labels and commits its movie itself. A movie's bad input (its
    preflight here, or its task) is its outcome, a :class:`DepthmineError`; any other error fails
    the run once the movies in flight are done.

    Returns:
        Per entry, in catalog order: the movie's result row or its error.
    """
    from prefect.futures import as_completed

    from flows.ingest import movie_task_for
    from pipeline.ingest import preflight
    from pipeline.movie_job import MovieJob

    logger = get_run_logger()
    outcomes: list[dict[str, Any] | DepthmineError | None] = [None] * len(entries)
    jobs: list[tuple[int, MovieJob]] = []
    for i, entry in enumerate(entries):
        movie, right = absolute_location(entry.path), absolute_location(entry.right) if entry.right else None
        try:
            movie_id, config = preflight(movie, out, entry.movie_id, right, labelling.with_overrides(entry.overrides))
        except DepthmineError as err:
            outcomes[i] = err
            continue
        jobs.append(
            (
                i,
                MovieJob(
                    movie=movie,
                    out=out,
                    movie_id=movie_id,
                    config=config,
                    split=entry.split,
                    layout=entry.layout,
                    right=right,
                ),
            )
        )
    with open_task_runner(spec) as runner:
        slots = runner_slots(runner, spec)
        # on this machine (threads, processes, a LocalCluster) the cores are shared by the movies
        # in flight; a remote worker shares its own cores among its task slots
        threads = None if spec.dask_address else max(1, default_workers() // min(slots, max(1, len(jobs))))
        logger.info("%d movie(s), up to %d at once on the %s runner", len(jobs), slots, spec.kind)
        pending: dict[Any, int] = {}

        def collect(fut: Any) -> None:
            i = pending.pop(fut)
            try:
                outcomes[i] = fut.result()
            except DepthmineError as err:
                outcomes[i] = err

        for n, (i, job) in enumerate(jobs):
            job = dataclasses.replace(job, threads=threads)
            fut = runner.submit(
                movie_task_for(job), parameters={"job": job, "progress": progress, "bar_position": n % slots}
            )
            pending[fut] = i
            while len(pending) >= slots:
                collect(next(as_completed(list(pending))))
        while pending:
            collect(next(as_completed(list(pending))))
    return outcomes  # type: ignore[return-value]


def runner_slots(runner: Any, spec: RunnerSpec) -> int:
    """Tasks the runner runs at once: a Dask cluster's threads over all its workers (asked of
    its scheduler, so a cluster elsewhere counts its own workers), else ``workers``."""
    if spec.kind == "dask":
        nthreads = runner.client.nthreads()
        return max(1, sum(int(n) for n in nthreads.values()))
    return spec.n_workers


def _unchanged_summary(catalog: str, out: str, changes: RebuildCheck, done: _Movies, gc: int, t0: float) -> dict:
    """A rebuild that would publish the current version again publishes nothing (no new version);
    garbage collection still runs (staging a failed run left behind)."""
    current = changes.current
    summary = done.summary(current.version, current.rows, t0, gc=gc, unchanged=True)
    _publish_summary(catalog, out, summary)
    get_run_logger().info("unchanged: version %d stays current; nothing published", current.version)
    return summary


def _published_summary(
    catalog: str, out: str, manifest: Any, done: _Movies, removed: list[str], gc: int, t0: float
) -> dict[str, Any]:
    """The summary of a rebuild that published ``manifest``; says which failed movies kept no new labels."""
    summary = done.summary(manifest.version, manifest.rows, t0, removed=removed, gc=gc)
    _publish_summary(catalog, out, summary)
    logger = get_run_logger()
    if done.failed:
        logger.warning(
            "published version %d without new labels for %d failed movie(s): %s",
            manifest.version,
            len(done.failed),
            ", ".join(f["movie_id"] for f in done.failed),
        )
    else:
        logger.info("published version %d: %d movies, %d rows", manifest.version, len(done.rows), manifest.rows)
    return summary


def _publish_summary(catalog: str, out: str, summary: dict[str, Any]) -> None:
    publish_markdown(summary_artifact_key(out), _summary_markdown(catalog, out, summary), "dataset rebuild summary")


def _refusal(entries: list[CatalogEntry], failed: list[dict[str, Any]], previous: set[str], max_share: float) -> str:
    """Why this rebuild must not publish ("" when it may).

    Every movie failing, or many of the published ones, points at the run (a missing mount, a
    wrong setting) rather than at the movies; publishing would churn versions and, with garbage
    collection, start deleting good shards.
    """
    if not failed:
        return ""
    first = f"{failed[0]['movie_id']}: {failed[0]['error']}"
    if len(failed) == len(entries):
        return f"all {len(entries)} movie(s) failed (first: {first}); the current version stays"
    current = [e.movie_id for e in entries if e.movie_id in previous]
    hit = [f["movie_id"] for f in failed if f["movie_id"] in previous]
    if current and len(hit) / len(current) > max_share:
        return (
            f"{len(hit)} of the {len(current)} published movies failed ({', '.join(hit)}; first: {first}), "
            f"more than --max-failed-share {max_share:g}; the current version stays"
        )
    return ""


def _load_manifest(out: str, movie_id: str, key: str) -> Any:
    from pipeline.ingest import find_committed

    m = find_committed(out, movie_id, key)
    if m is None:  # pragma: no cover - ingest_movie commits before returning
        raise RuntimeError(f"{movie_id}: ingest returned key {key} but no committed folder exists")
    return m


def _current_ids(out: str) -> set[str]:
    from pipeline.shards import read_manifest

    if not (Path(out) / "manifest.json").exists():
        return set()
    return set(read_manifest(out).movies)


def _eyes(movie: dict[str, Any]) -> str:
    """The build summary's reversed-eyes cell for one movie's ingest result."""
    swap = movie.get("swapped_eyes") or {}
    shots = swap.get("swapped_shots") or []
    if not shots:
        return "normal"
    fixed = swap.get("corrected_shots") or []
    what = "movie reversed" if swap.get("movie", {}).get("swapped") else "reversed"
    return f"**{what}**: shots {', '.join(map(str, shots))}" + (" (corrected)" if fixed else "")


def summary_artifact_key(out: str) -> str:
    """The build summary's Prefect artifact key: one per dataset (its folder name and a short hash
    of its absolute location), so two datasets' rebuilds never overwrite each other's summary."""
    import hashlib

    location = absolute_location(out)
    digest = hashlib.sha1(location.encode()).hexdigest()[:8]
    return artifact_key("build-summary", Path(location.rstrip("/")).name, digest)


def _rejected_by_reason(rejected: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(rejected.items()) if n) or "-"


def _summary_markdown(catalog: str, out: str, s: dict[str, Any]) -> str:
    head = f"# Dataset `{out}`: nothing published" if s.get("refused") else f"# Dataset `{out}` version {s['version']}"
    if s.get("unchanged"):
        head += " (unchanged: nothing published)"
    lines = [
        head,
        "",
        *([f"**Nothing published**: {s['refused']}.", ""] if s.get("refused") else []),
        f"catalog `{catalog}`: {len(s['movies'])} movies ingested or unchanged, {s['rows']} frames, "
        f"{len(s['failed'])} failed, {len(s['removed'])} removed; {s['seconds']:.1f} s",
        "",
        "## Movies",
        "",
        markdown_table(
            ["movie", "split", "status", "kept", "rejected", "rejected by reason", "chunks resumed", "eyes", "seconds"],
            [
                [
                    m["movie_id"],
                    m["split"],
                    "unchanged" if m["skipped"] else "ingested",
                    m["kept"],
                    sum(m["rejected"].values()),
                    _rejected_by_reason(m["rejected"]),
                    f"{m['chunks_resumed']}/{m['chunks']}",
                    _eyes(m),
                    m["seconds"],
                ]
                for m in s["movies"]
            ],
        ),
    ]
    if s["failed"]:
        lines += [
            "",
            "## Skipped (bad input)",
            "",
            markdown_table(
                ["movie", "catalog line", "published version", "error"],
                [
                    [f["movie_id"], f["line"], "kept" if f.get("kept_previous") else "none", f["error"]]
                    for f in s["failed"]
                ],
            ),
        ]
    if s["removed"]:
        lines += ["", "## Removed from the catalog", "", ", ".join(s["removed"])]
    return "\n".join(lines) + "\n"
