"""Change detection for rebuilds (pipeline/changes.py), on real files and a real published index.

Whether a fingerprint was computed is observed through a real side effect: a FIFO in place of
the movie file has a stable stat, but reading it (as the fingerprint does) would block, so the
check must not open it; and a file whose bytes change while its size and mtime are put back
shows the check trusting the stat, as documented.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.changes import STAT_DIR, RebuildCheck, check_unchanged, recorded_source, settings_hash, source_stat
from pipeline.ingest import ingest_config, source_fingerprint
from pipeline.shards import MovieShardWriter, publish_update, read_manifest
from tests.fixtures.datasets import TINY_SHARD_CONFIG, make_frame_record

SETTINGS = settings_hash(ingest_config([]), None, "train")


def _movie_file(path: Path, fill: bytes = b"x") -> Path:
    path.write_bytes(fill * (3 << 20))  # over 2 MiB: the fingerprint reads the first and last MiB
    return path


def _publish(dataset: Path, movie: Path, key: str = "k1", settings: str = SETTINGS, stat=True):
    fingerprint = source_fingerprint(movie)
    meta = {
        "source": {
            "path": str(movie),
            "fingerprint": fingerprint,
            **(recorded_source(movie, None, fingerprint) if stat else {}),
        },
        "settings": settings,
        "split": "train",
    }
    with MovieShardWriter(dataset, "film", key, TINY_SHARD_CONFIG, meta) as w:
        w.write(make_frame_record("film", 0))
    publish_update(dataset, add=[w.finish()])
    return read_manifest(dataset).refs["film"]


def test_stat_unchanged_reads_no_byte_of_the_movie(tmp_path):
    movie = _movie_file(tmp_path / "film.mkv")
    ref = _publish(tmp_path / "ds", movie)
    assert ref.source["stat"] == source_stat(movie) and ref.source["settings"] == SETTINGS
    # same size and mtime, other bytes: the stat decides alone (the fingerprint would see the change)
    st = movie.stat()
    with open(movie, "r+b") as fh:
        fh.write(b"y" * 16)
    os.utime(movie, ns=(st.st_atime_ns, st.st_mtime_ns))
    verdict = check_unchanged(tmp_path / "ds", ref, movie, None, SETTINGS)
    assert verdict and verdict.reason == "same size and mtime" and not verdict.fingerprinted
    # a FIFO with the recorded stat: reading it would block this test forever
    fifo = tmp_path / "fifo.mkv"
    os.mkfifo(fifo)
    fake = type(ref)(**{**ref.__dict__, "source": {**ref.source, "stat": source_stat(fifo)}})
    assert check_unchanged(tmp_path / "ds", fake, fifo, None, SETTINGS)


def test_touched_identical_file_is_unchanged_and_its_new_stat_recorded(tmp_path):
    movie = _movie_file(tmp_path / "film.mkv")
    ref = _publish(tmp_path / "ds", movie)
    os.utime(movie, ns=(1_000_000_000, 2_000_000_000))  # touched: mtime moved, bytes the same
    assert source_fingerprint(movie) != ref.source["fingerprint"]  # the ingest key's fingerprint holds the mtime
    verdict = check_unchanged(tmp_path / "ds", ref, movie, None, SETTINGS)
    assert verdict and verdict.reason == "touched, same content" and verdict.fingerprinted
    cached = json.loads((tmp_path / "ds" / STAT_DIR / "film.json").read_text())
    assert cached["stat"] == source_stat(movie) and cached["key"] == ref.key
    # recorded: the next check trusts the stat again. Prove it reads nothing: other bytes, same stat
    st = movie.stat()
    with open(movie, "r+b") as fh:
        fh.write(b"y" * 16)
    os.utime(movie, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = check_unchanged(tmp_path / "ds", ref, movie, None, SETTINGS)
    assert again and not again.fingerprinted
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["version"] == 1  # nothing published


def test_changed_file_settings_or_missing_file_is_changed(tmp_path):
    movie = _movie_file(tmp_path / "film.mkv")
    ref = _publish(tmp_path / "ds", movie)
    assert check_unchanged(tmp_path / "ds", ref, movie, None, SETTINGS)
    other = settings_hash(ingest_config(["disparity.lr_threshold_px=1.5"]), None, "train")
    assert check_unchanged(tmp_path / "ds", ref, movie, None, other).reason == "settings changed"
    assert settings_hash(ingest_config([]), None, "val") != SETTINGS  # the split is a setting
    assert settings_hash(ingest_config([]), "sbs-half", "train") != SETTINGS  # so is the layout
    assert check_unchanged(tmp_path / "ds", None, movie, None, SETTINGS).reason == "new"
    _movie_file(movie, b"z")  # new content (and mtime)
    verdict = check_unchanged(tmp_path / "ds", ref, movie, None, SETTINGS)
    assert not verdict and verdict.reason == "content changed" and verdict.fingerprinted
    movie.unlink()
    assert check_unchanged(tmp_path / "ds", ref, movie, None, SETTINGS).reason == "unreachable"
    assert not (tmp_path / "ds" / STAT_DIR).exists()


def test_rebuild_check_publishes_only_when_the_catalog_or_a_key_changes(tmp_path):
    movie = _movie_file(tmp_path / "film.mkv")
    ref = _publish(tmp_path / "ds", movie)
    check = RebuildCheck(tmp_path / "ds")
    kept = check.unchanged("film", str(movie), "train")
    assert kept == ref and check.result(kept)["skipped"]
    assert not check.publishes([kept], ["film"])
    assert check.publishes([kept], ["film", "other"]) is False  # a catalog movie that failed and is new: same
    assert check.publishes([], [])  # the movie left the catalog
    moved = type(ref)(**{**ref.__dict__, "key": "k2"})
    assert check.publishes([moved], ["film"])
    assert check.unchanged("film", str(movie), "val") is None  # split changed
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["version"] == 1
