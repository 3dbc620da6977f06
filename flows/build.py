"""The ``build_dataset`` flow: rebuild the whole dataset from a catalog, then publish one version.

Table of contents::

    load_catalog_task    read and validate the catalog (a bad catalog fails the run at once)
    ingest_movie         per movie, as a subflow: new or changed movies are ingested, unchanged
                         ones (same fingerprint and configuration key) are only looked up
    publish_task         one new dataset version listing exactly the catalog's good movies:
                         removed movies drop out, the previous version stays readable until then
    garbage collection   folders no longer referenced by the last ``keep_versions`` versions
    summary artifact     per movie: status, split, frames kept/rejected, time

**Bad input policy.** A movie that fails with bad input (:class:`~pipeline.errors.BadInputError`:
unreadable, not stereo, missing) is reported in the summary and left out of the new version; the
rest of the rebuild goes on and the run ends *Completed* with a warning in its log and
``failed`` in its result (the CLI then exits with status 1). Any other error (a bug, I/O still
failing after its retries) fails the run *before* publishing: the previous version stays current,
and the staged chunks make the next run resume where this one stopped.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import prefect
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import markdown_table, publish_markdown
from flows.catalog import CatalogEntry, load_catalog
from flows.ingest import IO_RETRIES, ingest_movie, publish_task, retry_unless_bad_input
from pipeline.errors import DepthmineError

__all__ = ["build_dataset"]


@task(name="load-catalog", cache_policy=NO_CACHE, retry_condition_fn=retry_unless_bad_input, **IO_RETRIES)
def load_catalog_task(catalog: str) -> list[CatalogEntry]:
    """Parse the catalog (YAML or CSV); mistakes name the file and line."""
    return load_catalog(catalog)


@task(name="collect-garbage", cache_policy=NO_CACHE)
def collect_garbage_task(out: str, keep_versions: int, movie_ids: list[str], current_keys: dict[str, str]) -> int:
    """Remove unreferenced movie folders and stale staging.

    Staging goes when its movie left the catalog, or when the movie was just committed under
    another key (an earlier file or configuration whose interrupted work can never be reused).
    """
    from pipeline.shards import garbage_collect

    removed = len(garbage_collect(out, keep=keep_versions))
    work = Path(out) / ".work"
    if work.is_dir():
        for d in work.iterdir():
            if not d.is_dir():
                continue
            if d.name not in movie_ids:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
            elif d.name in current_keys:
                for stale in (k for k in d.iterdir() if k.is_dir() and k.name != current_keys[d.name]):
                    shutil.rmtree(stale, ignore_errors=True)
                    removed += 1
                if not any(d.iterdir()):
                    d.rmdir()
    return removed


@prefect.flow(name="build-dataset", log_prints=False, persist_result=False)
def build_dataset(
    catalog: str,
    out: str,
    flow: str | None = None,
    ckpt: str | None = None,
    device: str | None = None,
    overrides: list[str] | None = None,
    runner: str = "threads",
    workers: int | None = None,
    dask_address: str | None = None,
    keep_versions: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """Rebuild the dataset at ``out`` from ``catalog`` and publish a new version atomically.

    Args:
        catalog: a YAML or CSV catalog (see :mod:`flows.catalog`).
        out: the dataset folder.
        flow, ckpt, device, overrides: ingest settings for every movie; a catalog entry's own
            ``overrides`` apply after these.
        runner, workers, dask_address: where each movie's chunk tasks run (:mod:`flows.runners`).
        keep_versions: dataset versions whose movie folders are kept on disk (>= 1).
        progress: terminal progress bars (the CLI sets it in a terminal).

    Returns:
        ``{"version", "movies": [per-movie rows], "failed": [{movie_id, path, error}], "removed"}``.
    """
    logger = get_run_logger()
    t0 = time.monotonic()
    entries = load_catalog_task(catalog)
    logger.info("catalog %s: %d movies", catalog, len(entries))
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    manifests = []
    for entry in entries:
        state = ingest_movie.with_options(flow_run_name=f"ingest-{entry.movie_id}")(
            movie=entry.path,
            out=out,
            movie_id=entry.movie_id,
            split=entry.split,
            layout=entry.layout,
            right=entry.right,
            flow=flow,
            ckpt=ckpt,
            device=device,
            overrides=list(overrides or ()) + list(entry.overrides),
            runner=runner,
            workers=workers,
            dask_address=dask_address,
            publish=False,
            progress=progress,
            return_state=True,
        )
        try:
            result = state.result()
        except DepthmineError as err:
            logger.warning("skipping %s (catalog line %d): %s", entry.movie_id, entry.line, err)
            failed.append({"movie_id": entry.movie_id, "path": entry.path, "line": entry.line, "error": str(err)})
            continue
        rows.append(result)
        if result.get("swapped_eyes", {}).get("swapped_shots") and not result["swapped_eyes"].get("corrected_shots"):
            logger.warning("%s: eyes look reversed in shot(s) %s; set swap_eyes=auto in its catalog overrides to correct",
                           entry.movie_id, ", ".join(map(str, result["swapped_eyes"]["swapped_shots"])))
        manifests.append(_load_manifest(out, entry.movie_id, result["key"]))
    previous = _current_ids(out)
    manifest = publish_task(out, manifests, drop=sorted(previous))
    removed_ids = sorted(previous - {m.movie_id for m in manifests})
    removed_paths = collect_garbage_task(out, keep_versions, [e.movie_id for e in entries],
                                         {r["movie_id"]: r["key"] for r in rows})
    summary = {
        "version": manifest.version,
        "rows": manifest.rows,
        "movies": rows,
        "failed": failed,
        "removed": removed_ids,
        "gc_removed_paths": removed_paths,
        "seconds": time.monotonic() - t0,
    }
    publish_markdown("build-summary", _summary_markdown(catalog, out, summary), "dataset rebuild summary")
    if failed:
        logger.warning("published version %d without %d bad movie(s): %s", manifest.version, len(failed),
                       ", ".join(f["movie_id"] for f in failed))
    else:
        logger.info("published version %d: %d movies, %d rows", manifest.version, len(rows), manifest.rows)
    return summary


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


def _summary_markdown(catalog: str, out: str, s: dict[str, Any]) -> str:
    lines = [
        f"# Dataset `{out}` version {s['version']}",
        "",
        f"catalog `{catalog}`: {len(s['movies'])} movies published, {s['rows']} frames, "
        f"{len(s['failed'])} skipped for bad input, {len(s['removed'])} removed; {s['seconds']:.1f} s",
        "",
        "## Movies",
        "",
        markdown_table(
            ["movie", "split", "status", "kept", "rejected", "chunks resumed", "eyes", "seconds"],
            [
                [m["movie_id"], m["split"], "unchanged" if m["skipped"] else "ingested", m["kept"],
                 sum(m["rejected"].values()), f"{m['chunks_resumed']}/{m['chunks']}", _eyes(m), m["seconds"]]
                for m in s["movies"]
            ],
        ),
    ]
    if s["failed"]:
        lines += ["", "## Skipped (bad input)", "",
                  markdown_table(["movie", "catalog line", "error"], [[f["movie_id"], f["line"], f["error"]] for f in s["failed"]])]
    if s["removed"]:
        lines += ["", "## Removed from the catalog", "", ", ".join(s["removed"])]
    return "\n".join(lines) + "\n"
