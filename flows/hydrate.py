"""The ``hydrate_dataset`` flow: rebuild a released dataset from the user's own copies of the films.

Table of contents (each step is a call into :mod:`pipeline.hydrate`)::

    check                read the release (checksums), match copies to movies, files exist (flow body:
                         a mistake fails before any decoding)
    hydrate_movie_task   one decode pass of a copy: align, confirm, extract; the movie's shard folder
                         (task per movie, committed when done; a re-run after a failure reuses every
                         movie hydrated from the same copy, released labels and right-views choice)
    publish_task         the dataset manifest, once, only when every movie was hydrated
    report               markdown artifact: offsets, frames found, frames missing with the reason

A copy that is another film or another cut fails its task with a one-line error that says how many
frames matched; nothing is published then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import prefect
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import markdown_table, publish_markdown
from flows.ingest import IO_RETRIES, retry_unless_bad_input
from pipeline.config import config_from_dict
from pipeline.errors import BadInputError, ConfigError
from pipeline.hydrate import CopySpec, HydrateConfig, HydrateResult, hydrate_movie
from pipeline.ingest import publish_with
from pipeline.release import Release, read_release

__all__ = ["hydrate_dataset", "copy_specs"]


def copy_specs(release: Release, movies: dict[str, str] | None, catalog: str | None) -> list[CopySpec]:
    """The copies to hydrate from: ``{id: PATH or "LEFT,RIGHT"}`` and/or a catalog (ids must be released).

    Raises:
        ConfigError: no copy given, or a movie id the release does not hold.
        BadInputError: a copy's file does not exist.
    """
    specs: dict[str, CopySpec] = {}
    if catalog:
        from flows.catalog import load_catalog

        for e in load_catalog(catalog):
            specs[e.movie_id] = CopySpec(e.movie_id, e.path, e.right, e.layout)
    for mid, value in (movies or {}).items():
        left, _, right = str(value).partition(",")
        specs[mid] = CopySpec(mid, left, right or None)
    if not specs:
        raise ConfigError("no copy given: name each film's file with --movie ID=PATH (or --catalog FILE)")
    unknown = sorted(set(specs) - set(release.movies))
    if unknown:
        raise ConfigError(
            f"movie(s) {unknown} are not in the release {release.root}; its movies: {', '.join(release.movies)}"
        )
    for s in specs.values():
        for p in (s.path, s.right):
            if p is not None and not Path(p).is_file():
                raise BadInputError(p, f"no such file (the copy of {s.movie_id})", "check the path given for it")
    return [specs[m] for m in release.movies if m in specs]


@task(name="hydrate-movie", cache_policy=NO_CACHE)
def hydrate_movie_task(
    release: Release, spec: CopySpec, out: str, config: HydrateConfig, progress: bool
) -> tuple[HydrateResult, Any]:
    """Decode one copy, align it to the release, extract the confirmed frames, commit the movie folder."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc=f"hydrate {spec.movie_id}", unit="frame", dynamic_ncols=True)
    try:
        return hydrate_movie(release, spec, out, config, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


@task(name="publish-dataset", retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, **IO_RETRIES)
def publish_task(out: str, movies: list[Any]) -> Any:
    return publish_with(out, add=movies)


@prefect.flow(name="hydrate-dataset", log_prints=False, persist_result=False)
def hydrate_dataset(
    release: str,
    out: str,
    movies: dict[str, str] | None = None,
    catalog: str | None = None,
    config: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Rebuild the released dataset at ``out`` from the user's copies.

    Args:
        release: the release folder (or its release.json).
        out: the dataset folder to write (a normal dataset: verify it, train on it).
        movies: ``{movie_id: path}`` (``"left,right"`` for separate eye files).
        catalog: a YAML/CSV catalog (``movie_id``, ``path``, ``right``, ``layout``) instead or as well.
        config: :class:`pipeline.hydrate.HydrateConfig` fields.
        progress: terminal progress bars.

    Returns:
        ``{"dataset", "movies": {id: HydrateResult dict without the per-frame maps}, "found", "released"}``.
    """
    logger = get_run_logger()
    cfg = config_from_dict(HydrateConfig, dict(config or {}), "hydrate")
    rel = read_release(release)
    specs = copy_specs(rel, movies, catalog)
    results: list[HydrateResult] = []
    manifests = []
    for spec in specs:
        res, manifest = hydrate_movie_task(rel, spec, out, cfg, progress)
        logger.info(
            "%s: %d of %d frames from %s (offset %s frames, from %s)%s%s",
            spec.movie_id,
            res.found,
            res.released,
            spec.path,
            res.offset,
            res.offset_from,
            "; eyes exchanged in the copy: the other eye taken" if res.eyes_swapped else "",
            "; reused (hydrated by an earlier run)" if res.reused else "",
        )
        results.append(res)
        manifests.append(manifest)
    publish_task(out, manifests)
    publish_markdown("hydrate-dataset", _report(release, out, results), "hydration from the user's copies")
    summary = {}
    for r in results:
        d = r.to_dict()
        d.pop("copy_index")
        d.pop("distances")
        summary[r.movie_id] = d
    return {
        "dataset": str(Path(out) / "manifest.json"),
        "movies": summary,
        "found": sum(r.found for r in results),
        "released": sum(r.released for r in results),
        "not_hydrated": [m for m in rel.movies if m not in {s.movie_id for s in specs}],
    }


def _report(release: str, out: str, results: list[HydrateResult]) -> str:
    rows = [
        [
            r.movie_id,
            Path(r.copy).name,
            r.layout,
            f"{r.eye_size[0]}x{r.eye_size[1]}" if r.eye_size else "",
            r.offset,
            r.offset_from,
            f"{r.found}/{r.released}",
            len(r.missing),
        ]
        for r in results
    ]
    missing = [[r.movie_id, m.frame_index, m.reason] for r in results for m in r.missing]
    return (
        "\n".join(
            [
                f"# Hydration of `{release}` into `{out}`",
                "",
                markdown_table(
                    ["movie", "copy", "layout", "eye", "offset (frames)", "aligned by", "frames found", "missing"], rows
                ),
                "",
                "## Frames not found",
                "",
                markdown_table(["movie", "frame", "reason"], missing) if missing else "none",
            ]
        )
        + "\n"
    )
