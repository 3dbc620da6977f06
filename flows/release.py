"""The ``release_dataset`` flow: a labels-only release of a dataset (no picture of any film).

Table of contents (each step is a call into :mod:`pipeline.release`)::

    plan                 read the dataset manifest, pick movies and splits      (flow body: fails before any work)
    release_movie_task   labels and rejected rows of one movie, hashes         (task per movie)
    write_manifest_task  README.md, then release.json (last: the release is complete)
    report               markdown artifact: movies, frames, release vs dataset size
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import prefect
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import markdown_table, publish_markdown
from pipeline.release import (
    ReleaseConfig,
    ReleasedMovie,
    _check_out,
    plan_release,
    release_movie,
    write_release_manifest,
)
from pipeline.shards import SPLITS

__all__ = ["release_dataset"]


@task(name="release-movie", cache_policy=NO_CACHE)
def release_movie_task(root: str, movie: Any, out: str, config: ReleaseConfig) -> ReleasedMovie | None:
    """One movie's labels (no pictures) and rejected rows into the release folder."""
    return release_movie(root, movie, out, config)


@task(name="write-release-manifest", cache_policy=NO_CACHE)
def write_manifest_task(out: str, movies: list[ReleasedMovie], source: dict[str, Any]) -> str:
    return str(write_release_manifest(out, movies, source))


@prefect.flow(name="release-dataset", log_prints=False, persist_result=False)
def release_dataset(
    dataset: str,
    out: str,
    splits: list[str] | None = None,
    movies: list[str] | None = None,
    titles: dict[str, str] | None = None,
    compression: str = "zstd",
    precision: str = "valid",
) -> dict[str, Any]:
    """Write a labels-only release of ``dataset`` into ``out``.

    Args:
        dataset: the dataset folder or manifest.
        out: the release folder (new or empty, or a previous release to replace).
        splits: splits to release (default all); movies: movie ids (default all).
        titles: film titles by movie id, for the release's README.
        compression: ``zstd`` or ``brotli`` (smaller, slower) for the label files.
        precision: ``valid`` (disparity and uncertainty at valid pixels only) or ``exact`` (every byte).

    Returns:
        Totals: ``movies``, ``rows``, ``bytes`` (release), ``dataset_bytes`` and the release path.
    """
    logger = get_run_logger()
    config = ReleaseConfig(
        splits=splits, movies=movies, titles=dict(titles or {}), compression=compression, precision=precision
    )
    _check_out(Path(out))
    root, manifest, chosen = plan_release(dataset, config)
    released = [r for m in chosen if (r := release_movie_task(root, m, out, config)) is not None]
    source = {"dataset_version": manifest.version, "splits": config.splits or list(SPLITS)}
    write_manifest_task(out, released, source)
    release_bytes = sum(f["bytes"] for m in released for f in m.files.values())
    dataset_bytes = sum(m.dataset_bytes for m in released)
    rows = [
        [
            m.movie_id,
            m.title,
            m.rows,
            m.rejected_rows,
            f"{m.signature['fps']:g}",
            m.signature["frame_count"],
            len(m.signature["shots"]),
            f"{sum(f['bytes'] for f in m.files.values()) / 1e6:.2f}",
            f"{m.dataset_bytes / 1e6:.2f}",
        ]
        for m in released
    ]
    ratio = release_bytes / dataset_bytes if dataset_bytes else 0.0
    publish_markdown(
        "release-dataset",
        "\n".join(
            [
                f"# Labels-only release of `{dataset}`",
                "",
                f"- release: `{out}`: {len(released)} movies, {sum(m.rows for m in released)} frames, "
                f"{release_bytes / 1e6:.2f} MB ({ratio:.1%} of the dataset's {dataset_bytes / 1e6:.2f} MB); no pictures",
                "",
                markdown_table(
                    ["movie", "title", "frames", "rejected", "fps", "cut frames", "shots", "release MB", "dataset MB"],
                    rows,
                ),
            ]
        )
        + "\n",
        "labels-only release",
    )
    logger.info(
        "released %d movies (%d frames) into %s: %.2f MB, %.1f%% of the dataset",
        len(released),
        sum(m.rows for m in released),
        out,
        release_bytes / 1e6,
        100 * ratio,
    )
    return {
        "release": str(Path(out) / "release.json"),
        "movies": [m.movie_id for m in released],
        "rows": sum(m.rows for m in released),
        "bytes": release_bytes,
        "dataset_bytes": dataset_bytes,
    }
