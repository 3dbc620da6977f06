"""The movie shard writer, staging chunks, publishing and garbage collection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.errors import BadInputError, ConfigError, DepthmineError
from pipeline.shards import (
    MovieShardWriter,
    ShardConfig,
    committed_movies,
    encode_records,
    garbage_collect,
    iter_samples,
    list_shards,
    publish,
    publish_update,
    read_chunk,
    read_manifest,
    write_chunk,
)
from pipeline.shards.verify import verify
from tests.fixtures.datasets import TINY_SHARD_CONFIG, make_frame_record

REPO = Path(__file__).resolve().parents[1]


def _records(movie_id: str, n: int, split: str = "train") -> list[dict]:
    return [make_frame_record(movie_id, i, split=split) for i in range(n)]


def _rejected(movie_id: str, frame: int, reason: str) -> dict:
    return {
        "movie_id": movie_id,
        "shot_id": 0,
        "frame_index": frame,
        "pts_seconds": frame / 24,
        "split": "train",
        "reason": reason,
        "stats": {"valid_fraction": 0.2},
    }


def _write_movie(
    dataset: Path, movie_id: str, records: list[dict], key: str = "k1", config=TINY_SHARD_CONFIG, rejected=()
):
    with MovieShardWriter(dataset, movie_id, key, config, {"source": f"{movie_id}.mkv"}) as w:
        for r in records:
            w.write(r)
        for r in rejected:
            w.reject(r)
    return w.finish()


def test_shards_are_size_bounded_with_small_row_groups(tmp_path):
    recs = _records("m", 12)
    movie = _write_movie(tmp_path, "m", recs, rejected=[_rejected("m", 99, "vertical")])
    folder = tmp_path / movie.folder
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([s.path for s in movie.shards] + ["movie.json", "rejected.parquet"])
    assert [s.path for s in movie.shards] == [f"part-{i:05d}.parquet" for i in range(len(movie.shards))]
    assert len(movie.shards) >= 3 and movie.rows == 12
    one_group = max(s.bytes / s.row_groups for s in movie.shards)
    for s in movie.shards:
        md = pq.ParquetFile(folder / s.path).metadata
        assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == s.row_group_rows
        assert all(n <= TINY_SHARD_CONFIG.row_group_rows for n in s.row_group_rows)
        assert s.bytes <= TINY_SHARD_CONFIG.target_shard_bytes + 2 * one_group
        assert b"created" not in md.metadata.get(b"depthmine.kind", b"")
    assert movie.rejected.rows == 1 and movie.rejected_reasons == {"vertical": 1}
    on_disk = json.loads((folder / "movie.json").read_text())
    assert on_disk["rows"] == 12 and on_disk["meta"]["source"] == "m.mkv"


def test_output_is_deterministic_however_rows_arrive(tmp_path):
    recs = _records("m", 9)
    a = _write_movie(tmp_path / "a", "m", recs)
    with MovieShardWriter(tmp_path / "b", "m", "k1", TINY_SHARD_CONFIG, {"source": "m.mkv"}) as w:
        w.write_table(encode_records(recs[:5], TINY_SHARD_CONFIG))  # pre-encoded, in uneven chunks
        w.write_table(encode_records(recs[5:], TINY_SHARD_CONFIG))
    b = w.finish()
    assert [(s.path, s.sha256) for s in a.shards] == [(s.path, s.sha256) for s in b.shards]
    assert a.rejected.sha256 == b.rejected.sha256


def test_staged_chunks_round_trip_without_reencoding(tmp_path):
    recs = _records("m", 5)
    frames = write_chunk(tmp_path / "work" / "c0.parquet", recs, TINY_SHARD_CONFIG)
    rejected = write_chunk(tmp_path / "work" / "c0-rej.parquet", [_rejected("m", 7, "lr_consistency")])
    table = read_chunk(frames)
    assert (
        table.num_rows == 5
        and table.column("image").to_pylist() == encode_records(recs, TINY_SHARD_CONFIG).column("image").to_pylist()
    )
    with MovieShardWriter(tmp_path / "ds", "m", "k1", TINY_SHARD_CONFIG) as w:
        w.write_table(table)
        w.write_table(read_chunk(rejected))
    movie = w.finish()
    assert movie.rows == 5 and movie.rejected_reasons == {"lr_consistency": 1}


def test_read_chunk_names_a_corrupt_file(tmp_path):
    bad = tmp_path / "c.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(BadInputError, match="c.parquet"):
        read_chunk(bad)


def test_exception_inside_writer_leaves_no_shard_and_no_commit(tmp_path):
    recs = _records("m", 10)
    with pytest.raises(RuntimeError, match="boom"):
        with MovieShardWriter(tmp_path, "m", "k1", TINY_SHARD_CONFIG) as w:
            for r in recs:
                w.write(r)
            raise RuntimeError("boom")
    folder = tmp_path / "movies" / "m" / "k1"
    assert list(folder.iterdir()) == []
    assert committed_movies(tmp_path) == {}


def test_committed_folder_is_immutable_and_leftovers_are_cleared(tmp_path):
    _write_movie(tmp_path, "m", _records("m", 2))
    with pytest.raises(DepthmineError, match="already committed"):
        MovieShardWriter(tmp_path, "m", "k1").open()
    stale = tmp_path / "movies" / "m" / "k2"
    stale.mkdir(parents=True)
    (stale / "part-00000.parquet").write_bytes(b"half a shard")
    (stale / ".part-00001.parquet.tmp").write_bytes(b"x")
    movie = _write_movie(tmp_path, "m", _records("m", 1), key="k2")
    assert sorted(p.name for p in stale.iterdir()) == ["movie.json", "part-00000.parquet", "rejected.parquet"]
    assert movie.rows == 1


def test_movie_id_and_key_must_be_folder_names(tmp_path):
    with pytest.raises(ConfigError, match="movie id"):
        MovieShardWriter(tmp_path, "../evil", "k")
    with pytest.raises(ConfigError, match="image_codec"):
        ShardConfig(image_codec="gif")


def test_publish_versions_drop_and_garbage_collect(tmp_path):
    _write_movie(tmp_path, "a", _records("a", 2))
    _write_movie(tmp_path, "b", _records("b", 2, "val"))
    v1 = publish(tmp_path)
    assert v1.version == 1 and sorted(v1.movies) == ["a", "b"] and v1.split_counts == {"train": 2, "val": 2}
    # movie a changed (new key), b removed from the catalog: publish exactly the new list
    new_a = _write_movie(tmp_path, "a", _records("a", 3), key="k2")
    v2 = publish(tmp_path, [new_a], meta={"catalog": "c.yaml"})
    assert v2.version == 2 and list(v2.movies) == ["a"] and v2.rows == 3
    assert read_manifest(tmp_path).version == 2
    # the previous version stays readable until garbage collection
    old = tmp_path / "versions" / "manifest-000001.json"
    assert sum(1 for _ in iter_samples(old, columns=["disparity"])) == 4
    garbage_collect(tmp_path, keep=2)
    assert (tmp_path / "movies" / "b" / "k1").exists()  # still referenced by version 1
    removed = garbage_collect(tmp_path, keep=1)
    assert tmp_path / "movies" / "b" / "k1" in removed and not (tmp_path / "movies" / "b").exists()
    assert not (tmp_path / "movies" / "a" / "k1").exists() and not old.exists()
    assert [p for p in verify(tmp_path)] == []


def test_publish_refuses_an_uncommitted_movie(tmp_path):
    movie = _write_movie(tmp_path, "a", _records("a", 1))
    (tmp_path / movie.folder / "movie.json").unlink()
    with pytest.raises(BadInputError, match="not committed"):
        publish(tmp_path, [movie])


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pipeline.shards import MovieShardWriter, ShardConfig, publish
    from tests.fixtures.datasets import make_frame_record
    dataset = sys.argv[1]
    cfg = ShardConfig(target_shard_bytes=10**9, row_group_rows=2)
    with MovieShardWriter(dataset, "good", "k1", cfg) as w:
        for i in range(3):
            w.write(make_frame_record("good", i))
    publish(dataset)
    w = MovieShardWriter(dataset, "victim", "k1", cfg).open()
    for i in range(5):  # two full row groups in the open shard, one row pending
        w.write(make_frame_record("victim", i))
    print("MID-SHARD", flush=True)
    sys.stdin.read()  # wait to be killed
    """
)


def test_writer_killed_mid_shard_leaves_no_visible_partial_shard(tmp_path):
    dataset = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(dataset)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "MID-SHARD", line
        victim = dataset / "movies" / "victim" / "k1"
        assert [p.name for p in victim.iterdir()] == [".part-00000.parquet.tmp"]  # really mid-shard
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert list(victim.glob("*.parquet")) == [] and not (victim / "movie.json").exists()
    assert list(committed_movies(dataset)) == ["good"]
    manifest = read_manifest(dataset)
    assert list(manifest.movies) == ["good"] and sum(1 for _ in iter_samples(dataset)) == 3
    problems = verify(dataset)
    assert problems and all(p.severity == "warning" for p in problems)  # leftovers, not errors
    garbage_collect(dataset)
    assert not (dataset / "movies" / "victim").exists() and verify(dataset) == []
    # a rerun of the killed movie writes it whole
    assert _write_movie(dataset, "victim", _records("victim", 5)).rows == 5
    assert len(list_shards(publish(dataset))) >= 2


def test_movie_with_every_frame_rejected_is_a_valid_empty_movie(tmp_path):
    movie = _write_movie(tmp_path, "dark", [], rejected=[_rejected("dark", i, "disparity_range") for i in range(3)])
    assert movie.shards == [] and movie.rows == 0 and movie.rejected_reasons == {"disparity_range": 3}
    publish(tmp_path)
    assert list(iter_samples(tmp_path)) == [] and verify(tmp_path) == []


def test_row_groups_are_also_cut_by_bytes(tmp_path):
    config = ShardConfig(row_group_rows=32, max_row_group_bytes=40_000)  # about two tiny frames
    movie = _write_movie(tmp_path, "m", _records("m", 5), config=config)
    groups = [n for s in movie.shards for n in s.row_group_rows]
    assert sum(groups) == 5 and max(groups) <= 2 and len(groups) >= 3


def test_parallel_publish_updates_lose_no_movie(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    movies = [_write_movie(tmp_path, f"m{i}", _records(f"m{i}", 1)) for i in range(6)]
    publish(tmp_path, movies[:1])
    with ThreadPoolExecutor(5) as pool:  # each flock() opens its own file: threads contend like processes
        list(pool.map(lambda m: publish_update(tmp_path, add=[m]), movies[1:]))
    final = read_manifest(tmp_path)
    assert sorted(final.movies) == [f"m{i}" for i in range(6)] and final.version == 6
    assert publish_update(tmp_path, drop=["m0"]).version == 7 and "m0" not in read_manifest(tmp_path).movies
