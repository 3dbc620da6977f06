"""A no-op rebuild: ``build_dataset`` over a catalog of N movies none of which changed.

The dataset is fabricated: N tiny real files stand for the movies (a rebuild of unchanged movies
reads nothing of them), each with a committed folder whose ``movie.json`` records what an ingest
records (fingerprint, stat, content fingerprint, settings hash; :mod:`pipeline.changes`), published
as one two-level version; the catalog lists the N files. Timed, in the same run:

* ``change detection``: :class:`pipeline.changes.RebuildCheck` over the N entries (the library
  function the flow calls per entry);
* ``build_dataset``: the real Prefect flow (Prefect's temporary API), which must publish nothing;
* baseline ``fingerprint every movie``: :func:`pipeline.ingest.source_fingerprint` and
  :func:`pipeline.ingest.ingest_key` per entry, the least the rebuild did per movie before (it also
  probed each file and ran an ingest subflow for it: about 1.3 s a movie, so ~22 minutes for 1,000);
* ``after touching every file``: the same check when every mtime moved (content fingerprints).

Run: ``python -m bench.bench_rebuild [--movies 1000]`` (on a busy machine give Prefect's temporary API
more time to start: ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120``)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from pipeline.changes import RebuildCheck, recorded_source, settings_hash
from pipeline.ingest import ingest_config, ingest_key, project_version, source_fingerprint
from pipeline.shards import MovieShardWriter, publish_update, read_manifest
from pipeline.shards.manifest import MovieManifest
from pipeline.shards.synthetic import make_frame_record
from pipeline.shards.writer import ShardConfig


def fabricate(base: Path, n: int, movie_bytes: int = 4096) -> tuple[Path, Path]:
    """``(dataset, catalog)`` of ``n`` unchanged movies (one tiny real shard each)."""
    films, dataset = base / "films", base / "ds"
    films.mkdir(parents=True)
    config = ingest_config([])
    settings = settings_hash(config, None, "train")
    record = make_frame_record("x", 0, size=(16, 16))
    added: list[MovieManifest] = []
    entries = []
    for i in range(n):
        movie_id = f"film-{i:05d}"
        path = films / f"{movie_id}.mkv"
        path.write_bytes(os.urandom(movie_bytes))
        fingerprint = source_fingerprint(path)
        meta = {
            "source": {"path": str(path), "fingerprint": fingerprint, **recorded_source(path, None, fingerprint)},
            "settings": settings,
            "split": "train",
        }
        key = ingest_key(fingerprint, config, {"split": "train", "layout": "sbs-half", "version": project_version()})
        with MovieShardWriter(dataset, movie_id, key, ShardConfig(), meta) as w:
            w.write({**record, "movie_id": movie_id})
        added.append(w.finish())
        entries.append({"path": str(path), "movie_id": movie_id, "split": "train"})
    publish_update(dataset, add=added)
    catalog = base / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"movies": entries}))
    return dataset, catalog


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movies", type=int, default=1000, help="catalog entries (default 1000)")
    ap.add_argument("--no-flow", action="store_true", help="time the library only (no Prefect flow run)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rebuild-"))
    try:
        t0 = time.perf_counter()
        dataset, catalog = fabricate(tmp, args.movies)
        print(f"fabricated {args.movies} movies in {time.perf_counter() - t0:.1f} s")
        version = read_manifest(dataset).version
        entries = yaml.safe_load(catalog.read_text())["movies"]

        t0 = time.perf_counter()
        check = RebuildCheck(dataset)
        kept = [check.unchanged(e["movie_id"], e["path"], e["split"]) for e in entries]
        t_check = time.perf_counter() - t0
        assert all(kept) and not check.publishes(kept, [e["movie_id"] for e in entries])

        config = ingest_config([])
        t0 = time.perf_counter()
        for e in entries:
            ingest_key(source_fingerprint(e["path"]), config, {"split": "train", "version": project_version()})
        t_base = time.perf_counter() - t0

        n = args.movies
        print(f"{n} unchanged catalog entries (dataset version {version} stays current)")
        print(f"  change detection (RebuildCheck, stat only)     {t_check:7.2f} s  ({t_check / n * 1e3:.2f} ms/movie)")
        print(f"  baseline: fingerprint + key of every movie     {t_base:7.2f} s  ({t_base / n * 1e3:.2f} ms/movie)")
        print(f"ratio baseline / change detection: {t_base / t_check:.1f}x", flush=True)
        t_flow = float("nan")
        if not args.no_flow:
            from prefect import flow as prefect_flow

            from flows.build import build_dataset

            @prefect_flow
            def warm_up() -> None:  # start Prefect's temporary API outside the timing
                return None

            warm_up()
            t0 = time.perf_counter()
            summary = build_dataset(str(catalog), str(dataset))
            t_flow = time.perf_counter() - t0
            assert summary.get("unchanged") and read_manifest(dataset).version == version, summary.get("version")

        for e in entries:  # touch every movie: same bytes, new mtime
            os.utime(e["path"])
        t0 = time.perf_counter()
        check = RebuildCheck(dataset)
        assert all(check.unchanged(e["movie_id"], e["path"], e["split"]) for e in entries)
        t_touched = time.perf_counter() - t0

        print(f"  build_dataset flow, no-op (publishes nothing)  {t_flow:7.2f} s  (target < 30 s)")
        print(f"  after touching every file (content checked)    {t_touched:7.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
