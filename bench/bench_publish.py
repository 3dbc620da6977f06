"""What one publish costs as a dataset grows: the two-level index against the single-level manifest.

A dataset of N fabricated movies (a ``movie.json`` each, listing ``--shards`` shards and a meta of
``--shots`` shots, as real films have; no Parquet is needed to publish) is published once, then one
movie is re-committed and the dataset re-published, which is what every ingest and rebuild does.
Timed per N, best of ``--repeat``:

* ``two-level``: :func:`pipeline.shards.publish_update` (``manifest.json`` lists each movie by its
  ``movie.json``'s path and checksum; only the changed movie's file is read).
* ``single-level`` (baseline, the code before the index, reproduced here): read the whole previous
  manifest, list every shard of every movie inline, write it to ``versions/`` and ``manifest.json``.

The ratio is baseline / two-level. The two-level time should stay flat from 100 to 1,000 movies.

Run: ``python -m bench.bench_publish [--movies 100 1000] [--shards 40] [--shots 1500]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from pipeline.atomic import write_json_atomic
from pipeline.shards import publish_update, read_manifest
from pipeline.shards.manifest import (
    MANIFEST_NAME,
    MOVIE_MANIFEST_NAME,
    VERSIONS_DIR,
    MovieManifest,
    ShardEntry,
    movie_folder,
    publish_lock,
    utc_now,
)


def _movie(dataset: Path, movie_id: str, key: str, shards: int, shots: int) -> MovieManifest:
    """A committed movie folder holding only its movie.json (sizes like a 2-hour film's)."""
    entries = [
        ShardEntry(
            path=f"part-{i:05d}.parquet",
            rows=256,
            bytes=256 << 20,
            sha256=f"{i:064x}",
            split_counts={"train": 256},
            row_group_rows=[16] * 16,
            movie_id=movie_id,
            footer_sha256=f"{i + 1:064x}",
        )
        for i in range(shards)
    ]
    shot_list = [{"shot_id": s, "start_frame": 100 * s, "end_frame": 100 * s + 100} for s in range(shots)]
    m = MovieManifest(
        movie_id=movie_id,
        key=key,
        shards=entries,
        rejected=None,
        rejected_reasons={"left_right_consistency": 12},
        meta={
            "split": "train",
            "source": {"path": f"/films/{movie_id}.mkv", "fingerprint": "0" * 24},
            "shots": shot_list,
            "swapped_eyes": {"shots": {str(s): {"swapped": False, "confidence": 0.9} for s in range(shots)}},
        },
        created=utc_now(),
    )
    folder = movie_folder(dataset, movie_id, key)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / MOVIE_MANIFEST_NAME, m.to_dict())
    return m


def _single_level_publish(dataset: Path, add: MovieManifest) -> int:
    """The publish before the two-level index: every shard of every movie, inline, rewritten whole."""
    with publish_lock(dataset):
        data = json.loads((dataset / MANIFEST_NAME).read_text())
        movies = {mid: MovieManifest.from_dict(m) for mid, m in data["movies"].items()}
        movies[add.movie_id] = add
        for m in movies.values():
            if not (dataset / m.folder / MOVIE_MANIFEST_NAME).exists():
                raise RuntimeError(m.folder)
        version = int(data["version"]) + 1
        out = {
            "schema_version": data.get("schema_version", 1),
            "version": version,
            "created": utc_now(),
            "meta": {},
            "movies": {mid: {**m.to_dict(), "folder": m.folder} for mid, m in sorted(movies.items())},
            "shards": [
                {**s.to_dict(), "path": f"{m.folder}/{s.path}", "movie_id": mid}
                for mid, m in sorted(movies.items())
                for s in m.shards
            ],
        }
        write_json_atomic(dataset / VERSIONS_DIR / f"manifest-{version:06d}.json", out)
        write_json_atomic(dataset / MANIFEST_NAME, out)
    return version


def _fabricate(base: Path, n: int, shards: int, shots: int) -> list[MovieManifest]:
    return [_movie(base, f"film-{i:05d}", "k0", shards, shots) for i in range(n)]


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for r in range(repeat):
        t0 = time.perf_counter()
        fn(r)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movies", type=int, nargs="+", default=[100, 1000], help="dataset sizes (default 100 1000)")
    ap.add_argument("--shards", type=int, default=40, help="shards listed per movie (default 40)")
    ap.add_argument("--shots", type=int, default=1500, help="shots in each movie's meta (default 1500)")
    ap.add_argument("--repeat", type=int, default=3, help="publishes timed per measurement, best kept (default 3)")
    ap.add_argument("--skip-baseline-above", type=int, default=10**9, help="no single-level run above N movies")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    try:
        print(
            f"{'movies':>7} {'movie.json':>11} {'single-level':>13} {'manifest':>10} {'two-level':>10} {'manifest':>9} {'ratio':>7}"
        )
        for n in args.movies:
            two, one = tmp / f"two-{n}", tmp / f"one-{n}"
            movies = _fabricate(two, n, args.shards, args.shots)
            per_movie = (two / movies[0].folder / MOVIE_MANIFEST_NAME).stat().st_size
            publish_update(two, add=movies)  # version 1 (reads every movie.json once, for its checksum)
            t_two = _best(
                lambda r, two=two: publish_update(
                    two, add=[_movie(two, "film-00000", f"k{r + 1}", args.shards, args.shots)]
                ),
                args.repeat,
            )
            size_two = (two / MANIFEST_NAME).stat().st_size
            assert read_manifest(two).format == 2
            shutil.rmtree(two)
            if n <= args.skip_baseline_above:
                movies = _fabricate(one, n, args.shards, args.shots)
                _single_level_publish_all(one, movies)
                t_one = _best(
                    lambda r, one=one: _single_level_publish(
                        one, _movie(one, "film-00000", f"k{r + 1}", args.shards, args.shots)
                    ),
                    args.repeat,
                )
                size_one = (one / MANIFEST_NAME).stat().st_size
                shutil.rmtree(one)
                ratio = f"{t_one / t_two:6.0f}x"
                one_cols = f"{t_one:11.3f} s {size_one / 1e6:7.1f} MB"
            else:
                ratio, one_cols = "", f"{'-':>13} {'-':>10}"
            print(
                f"{n:>7} {per_movie / 1e3:8.0f} kB {one_cols} {t_two:8.3f} s {size_two / 1e6:6.2f} MB {ratio:>7}",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _single_level_publish_all(dataset: Path, movies: list[MovieManifest]) -> None:
    """Version 1 of the baseline dataset: every movie inline (written once, not timed)."""
    out = {
        "schema_version": 1,
        "version": 1,
        "created": utc_now(),
        "meta": {},
        "movies": {m.movie_id: {**m.to_dict(), "folder": m.folder} for m in movies},
        "shards": [{**s.to_dict(), "path": f"{m.folder}/{s.path}"} for m in movies for s in m.shards],
    }
    write_json_atomic(dataset / MANIFEST_NAME, out)


if __name__ == "__main__":
    raise SystemExit(main())
