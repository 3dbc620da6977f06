"""The two-level dataset index: manifest.json lists movies by their movie.json's path and checksum.

Real Parquet written by the real writer; an older single-level dataset is the layout that version
wrote (every shard inline), made here from the same movies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import BadInputError, DepthmineError
from pipeline.shards import iter_samples, list_shards, publish_update, read_manifest
from pipeline.shards.locks import movie_lock
from pipeline.shards.manifest import LOCK_NAME, MovieManifest, migrate
from pipeline.shards.query import connect
from pipeline.shards.verify import verify
from tests.fixtures.datasets import TINY_SHARD_CONFIG, make_frame_record, make_single_level, make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its (size, mtime_ns): what a step wrote shows as a difference."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _write_movie(dataset: Path, movie_id: str, key: str, n: int = 3) -> MovieManifest:
    from pipeline.shards import MovieShardWriter

    with MovieShardWriter(dataset, movie_id, key, TINY_SHARD_CONFIG, {"source": f"{movie_id}.mkv"}) as w:
        for i in range(n):
            w.write(make_frame_record(movie_id, i))
    return w.finish()


def test_publish_writes_only_a_small_top_level_and_reads_no_unchanged_movie(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "ds", n_movies=4, frames_per_movie=6)
    top = json.loads((dataset / "manifest.json").read_text())
    assert top["format"] == 2 and "shards" not in top
    entry = {r["movie_id"]: r for r in top["movies"]}["movie-00"]
    assert entry["path"] == f"movies/movie-00/{entry['key']}/movie.json"
    assert entry["shards"] == len(json.loads((dataset / entry["path"]).read_text())["shards"])  # a count, not a list
    assert entry["sha256"] == __import__("hashlib").sha256((dataset / entry["path"]).read_bytes()).hexdigest()

    new = _write_movie(dataset, "movie-01", "k2")  # movie-01 re-ingested: its folder and movie.json
    # an unchanged movie's movie.json is not read by the publish: damage one, the publish still works
    damaged = dataset / entry["path"]
    damaged.write_bytes(damaged.read_bytes().replace(b'"rows"', b'"rows" '))
    before = _files(dataset)
    v2 = publish_update(dataset, add=[new])
    after = _files(dataset)
    written = sorted(p for p in after if before.get(p) != after[p])
    assert written == ["manifest.json", "versions/manifest-000002.json"]
    assert v2.version == 2 and v2.refs["movie-01"].key == "k2"
    assert v2.refs["movie-00"].sha256 == entry["sha256"]  # carried over, not recomputed
    size = (dataset / "manifest.json").stat().st_size
    assert size < 1000 * len(v2.refs), size  # a few hundred bytes a movie, whatever its shards
    # the damaged movie is refused by name when a reader loads it; the others read
    with pytest.raises(BadInputError, match=r"movie-00/.*movie\.json: movie manifest checksum mismatch"):
        list_shards(dataset)
    assert sum(1 for _ in iter_samples(dataset, columns=["disparity"], movie_ids=["movie-01"])) == 3


def test_totals_read_no_movie_file_and_shards_follow_the_index(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "ds", n_movies=3, frames_per_movie=4)
    m = read_manifest(dataset)
    for ref in m.refs.values():
        (dataset / ref.path).unlink()  # totals come from the index alone
    assert m.rows == 12 and sorted(m.movies) == ["movie-00", "movie-01", "movie-02"] and m.bytes > 0
    with pytest.raises(BadInputError, match="movie manifest listed in the dataset manifest is missing"):
        m.movies["movie-00"]


def test_an_old_single_level_dataset_reads_verifies_and_queries(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "ds", n_movies=2, frames_per_movie=5)
    expected = sorted(s.path for s in list_shards(dataset))
    make_single_level(dataset)
    m = read_manifest(dataset)
    assert m.format == 1 and m.rows == 10
    assert sorted(s.path for s in list_shards(dataset)) == expected
    assert sum(1 for _ in iter_samples(dataset, columns=["disparity"])) == 10
    assert [p for p in verify(dataset) if p.severity == "error"] == []
    assert connect(dataset).execute("SELECT count(*) FROM frames").fetchone()[0] == 10
    # publishing into it writes the two-level form, computing each kept movie's checksum once
    v2 = publish_update(dataset, add=[_write_movie(dataset, "movie-02", "k1")])
    assert json.loads((dataset / "manifest.json").read_text())["format"] == 2
    assert all(r.sha256 for r in v2.refs.values()) and read_manifest(dataset).rows == 13


def test_migrate_rewrites_atomically_once_and_refuses_a_locked_dataset(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "ds", n_movies=2, frames_per_movie=5)
    make_single_level(dataset)
    shards_before = {p: v for p, v in _files(dataset).items() if p.endswith(".parquet")}
    with movie_lock(dataset, "movie-01"):
        with pytest.raises(DepthmineError, match="movie-01 are locked"):
            migrate(dataset)
    import fcntl

    with open(dataset / LOCK_NAME, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DepthmineError, match="the dataset is locked"):
            migrate(dataset)
    assert read_manifest(dataset).format == 1  # refusals changed nothing
    out = subprocess.run(
        [sys.executable, "-m", "flows", "migrate", str(dataset)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "version 1 (single-level) migrated to version 2" in out.stdout
    m = read_manifest(dataset)
    assert m.format == 2 and m.version == 2 and m.meta["migrated_from"] == 1 and m.rows == 10
    assert read_manifest(dataset / "versions" / "manifest-000001.json").format == 1  # still readable
    assert {p: v for p, v in _files(dataset).items() if p.endswith(".parquet")} == shards_before
    assert [p for p in verify(dataset) if p.severity == "error"] == []
    again = subprocess.run(
        [sys.executable, "-m", "flows", "migrate", str(dataset)], cwd=REPO, capture_output=True, text=True
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout and read_manifest(dataset).version == 2


def test_migrate_refuses_a_movie_json_that_disagrees(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "ds", n_movies=2, frames_per_movie=5)
    old = make_single_level(dataset)
    own = dataset / old["movies"]["movie-00"]["folder"] / "movie.json"
    data = json.loads(own.read_text())
    data["shards"] = data["shards"][:-1]
    own.write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="movie-00/.*movie.json: lists other shards"):
        migrate(dataset)
    assert read_manifest(dataset).format == 1


def test_checksum_mismatch_is_one_line_in_verify_and_the_cli(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "ds", n_movies=2, frames_per_movie=4)
    ref = read_manifest(dataset).refs["movie-01"]
    path = dataset / ref.path
    data = json.loads(path.read_text())
    data["meta"]["note"] = "edited after publishing"
    path.write_text(json.dumps(data))
    problems = [p for p in verify(dataset) if p.severity == "error"]
    assert [(p.path, p.kind) for p in problems] == [(ref.path, "movie")]
    assert "checksum mismatch" in problems[0].message
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    out = subprocess.run(
        [sys.executable, "-m", "flows", "sql", str(dataset), "SELECT count(*) FROM frames"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and f"{ref.path}: movie manifest checksum mismatch" in out.stderr
