"""Datasets and releases of an older shard schema version read as they are, never rewritten.

Schema version 1 named the ``ingest_key`` column ``config_hash``. A dataset as that version wrote it
(``tests.fixtures.datasets.make_schema_v1``: the same rows rewritten with the old column name,
version and docs, checksums refreshed) must read, verify, query, train and release exactly as the
same dataset written now; so must a dataset holding movies of both versions. (With a real ingest,
a rebuild and hydration from a real copy: tests/test_hydrate.py.)
"""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.shards import SCHEMA_VERSION, iter_samples, list_shards, read_row_group, read_sample, verify
from tests.fixtures.datasets import make_release_v1, make_schema_v1

SPEC = dict(n_movies=2, frames_per_movie=6, size=(64, 48), splits=("train", "train"), with_right=True)


@pytest.fixture(scope="module")
def datasets(tiny_dataset, tmp_path_factory):
    """``(new, old, mixed)``: the same dataset as written now, as version 1 wrote it, and with only
    ``movie-00`` as version 1 wrote it (read-only)."""
    new = tiny_dataset(**SPEC)
    base = tmp_path_factory.mktemp("versions")
    old, mixed = base / "old", base / "mixed"
    shutil.copytree(new, old)
    shutil.copytree(new, mixed)
    make_schema_v1(old)
    make_schema_v1(mixed, movie_ids=["movie-00"])
    return new, old, mixed


def _file_columns(dataset) -> set[str]:
    return {n for s in list_shards(dataset) for n in pq.ParquetFile(s.path).schema_arrow.names}


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") if isinstance(a[k], np.ndarray) else a[k] == b[k]
        for k in a
    )


def test_the_fixture_is_what_version_1_wrote(datasets):
    new, old, mixed = datasets
    assert "config_hash" in _file_columns(old) and "ingest_key" not in _file_columns(old)
    assert {"config_hash", "ingest_key"} <= _file_columns(mixed)
    meta = pq.ParquetFile(list_shards(old)[0].path).schema_arrow.metadata
    assert meta[b"depthmine.schema_version"] == b"1" and SCHEMA_VERSION == 2


@pytest.mark.parametrize("which", ["old", "mixed"])
def test_old_shards_read_under_the_current_names(datasets, which):
    new, old, mixed = datasets
    dataset = old if which == "old" else mixed
    got, want = list(iter_samples(dataset)), list(iter_samples(new))
    assert len(got) == len(want) == 12
    assert all("ingest_key" in r and "config_hash" not in r for r in got)
    assert all(_same(a, b) for a, b in zip(got, want))
    # asked for by name, alone or with arrays; one row group; one row
    keys = [r["ingest_key"] for r in iter_samples(dataset, columns=["ingest_key", "valid"])]
    assert keys == [r["ingest_key"] for r in want] and all(keys)
    shard, shard_new = list_shards(dataset)[0], list_shards(new)[0]
    assert read_row_group(shard, 0, ["ingest_key"]) == read_row_group(shard_new, 0, ["ingest_key"])
    assert _same(read_sample(shard, 1), read_sample(shard_new, 1))


def test_an_old_column_name_asked_for_says_its_new_name(datasets):
    from pipeline.errors import BadInputError

    with pytest.raises(BadInputError, match=r"renamed shard column\(s\): config_hash \(now ingest_key\)"):
        next(iter_samples(datasets[1], columns=["config_hash"]))


def test_old_and_mixed_datasets_verify_clean(datasets):
    new, old, mixed = datasets
    assert verify(str(old)) == [] and verify(str(mixed)) == [] and verify(str(old), checksum=False) == []


def test_sql_shows_one_ingest_key_column_whichever_version_wrote_the_files(datasets):
    from pipeline.shards.query import connect

    def frames(dataset):
        con = connect(dataset)
        columns = [d[0] for d in con.execute("SELECT * FROM frames LIMIT 0").description]
        rows = con.execute("SELECT movie_id, frame_index, ingest_key FROM frames ORDER BY 1, 2").fetchall()
        return columns, rows

    new_columns, new_rows = frames(datasets[0])
    for dataset in datasets[1:]:
        columns, rows = frames(dataset)
        assert columns == new_columns and "config_hash" not in columns  # same names, same order
        assert rows == new_rows and all(key for _, _, key in rows)  # no NULL where the other version's files are


def test_training_reads_old_shards_the_same(datasets):
    from training.datasets import ShardDataset

    def samples(dataset):
        return list(ShardDataset(dataset, "train", seed=3, infinite=False))

    want = samples(datasets[0])
    for dataset in datasets[1:]:
        got = samples(dataset)
        assert len(got) == len(want) == 12
        assert all(torch.equal(a[k], b[k]) for a, b in zip(got, want) for k in ("image", "target", "mask"))


def test_an_old_dataset_releases_as_a_new_one(datasets, tmp_path):
    """The release carries the column under its current name whichever version wrote the shards."""
    from pipeline.release import LABEL_SCHEMA, ReleaseConfig, make_release, read_release

    new, old, _ = datasets
    data = {w: make_release(d, tmp_path / w, ReleaseConfig(precision="exact")) for w, d in (("new", new), ("old", old))}
    assert data["old"]["schema_version"] == data["new"]["schema_version"] == SCHEMA_VERSION
    assert data["old"]["columns"] == data["new"]["columns"] and "ingest_key" in data["old"]["columns"]
    for mid in ("movie-00", "movie-01"):
        files = {w: pq.read_table(tmp_path / w / f"movies/{mid}/labels.parquet") for w in data}
        assert files["old"].column_names == files["new"].column_names == LABEL_SCHEMA.names
        assert files["old"].equals(files["new"])
        assert read_release(tmp_path / "old").read_labels(mid).equals(read_release(tmp_path / "new").read_labels(mid))


def test_an_old_release_unpacks_to_the_current_frame_schema(datasets, tmp_path):
    """A release made by version 1 (``config_hash`` in its label files) reads, unpacks and becomes
    frame-schema rows for the hydrated shards as a release made now does."""
    from pipeline.hydrate import hydrated_table
    from pipeline.release import ReleaseConfig, make_release, read_release
    from pipeline.shards import FRAME_SCHEMA, ShardConfig

    make_release(datasets[0], tmp_path / "new", ReleaseConfig())
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    make_release_v1(tmp_path / "old")
    assert "config_hash" in pq.read_schema(tmp_path / "old/movies/movie-00/labels.parquet").names
    new, old = read_release(tmp_path / "new"), read_release(tmp_path / "old")
    assert old.meta["schema_version"] == 1
    for unpack in (False, True):
        assert old.read_labels("movie-00", unpack).equals(new.read_labels("movie-00", unpack))
    raw = pq.ParquetFile(old.labels_path("movie-00")).read_row_group(0)
    pictures = {int(i): b"jpeg" for i in raw.column("frame_index").to_pylist()}
    rows = hydrated_table(raw, pictures, ShardConfig(), old.movies["movie-00"].labels)
    assert rows.schema.equals(FRAME_SCHEMA) and len(set(rows.column("ingest_key").to_pylist())) == 1


def test_a_staged_chunk_of_version_1_is_taken_back_under_the_current_names(datasets, tmp_path):
    """A chunk staged by the previous version before an upgrade (same key: the resumed ingest finds
    it) is read back, and written again, with the current names."""
    from pipeline.shards import read_chunk, write_chunk

    shard = list_shards(datasets[1])[0].path
    table = read_chunk(shard)
    assert "ingest_key" in table.column_names and "config_hash" not in table.column_names
    again = write_chunk(tmp_path / "chunk.parquet", pq.read_table(shard))
    schema = pq.read_schema(again)
    assert "ingest_key" in schema.names and schema.metadata[b"depthmine.schema_version"] == b"2"
