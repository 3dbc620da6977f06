"""Reading shards: streaming, projection, random access, URIs, and other tools reading them directly."""

from __future__ import annotations

import fsspec
import numpy as np
import pyarrow.dataset as pads
import pytest

from pipeline.errors import BadInputError
from pipeline.shards import iter_samples, list_shards, read_manifest, read_row_group, read_sample
from pipeline.shards.verify import verify
from tests.fixtures.datasets import make_frame_record

BOUND = 1 / 64 + 1e-4


def test_round_trip_matches_the_records(tiny_dataset):
    ds = tiny_dataset()
    samples = list(iter_samples(ds))
    assert len(samples) == 16
    for s in samples[:6]:
        k = (s["frame_index"] // 96) * 4 + (s["frame_index"] % 96) // 6
        seed = 7 * int(s["movie_id"].split("-")[1])
        rec = make_frame_record(s["movie_id"], k, seed=seed, split=s["split"])
        assert s["image"].shape == (64, 96, 3) and s["image"].dtype == np.uint8
        assert s["disparity"].dtype == np.float32
        assert np.abs(s["disparity"] - rec["disparity"]).max() <= BOUND
        assert np.array_equal(s["valid"], rec["valid"]) and np.array_equal(s["sky"], rec["sky"])
        assert np.abs(s["uncertainty"] - rec["uncertainty"]).max() <= BOUND
        assert np.abs(s["image"].astype(int) - rec["image"]).mean() < 6  # JPEG q95
        assert s["right_image"] is None
        assert (s["width"] / s["crop_w"], s["crop_x"], s["source_width"]) == (0.5, 4, 200)
        assert s["disparity_p50"] == pytest.approx(rec["stats"]["disparity_p50"])
        assert s["flow_backend"] == "synthetic-truth"


def test_right_view_is_stored_when_asked(tiny_dataset):
    ds = tiny_dataset(n_movies=1, frames_per_movie=2, with_right=True)
    s = next(iter_samples(ds, columns=["right_image"]))
    assert s["right_image"].shape == (64, 96, 3)


def test_column_projection_decodes_only_what_is_asked(tiny_dataset):
    s = next(iter_samples(tiny_dataset(), columns=["disparity", "valid"]))
    assert set(s) == {"movie_id", "shot_id", "frame_index", "pts_seconds", "split", "disparity", "valid"}
    with pytest.raises(BadInputError, match="valid columns"):
        next(iter_samples(tiny_dataset(), columns=["depth"]))


def test_every_way_of_naming_a_dataset_reads_the_same_rows(tiny_dataset):
    ds = tiny_dataset()
    ids = lambda src: [(s["movie_id"], s["frame_index"]) for s in iter_samples(src, columns=["split"])]  # noqa: E731
    expected = ids(ds)
    assert ids(str(ds / "manifest.json")) == expected
    assert ids(read_manifest(ds)) == expected
    assert ids(f"file://{ds}") == expected
    shards = list_shards(ds)
    assert sum((ids(s.path) for s in shards), []) == expected
    assert sum((ids(s) for s in shards), []) == expected


def test_split_and_movie_filters(tiny_dataset):
    ds = tiny_dataset()
    val = list_shards(ds, split="val")
    assert val and all(s.split_counts == {"val": s.rows} for s in val)
    assert {s["split"] for s in iter_samples(ds, columns=[], split="val")} == {"val"}
    assert {s["movie_id"] for s in iter_samples(ds, columns=[], movie_ids=["movie-01"])} == {"movie-01"}
    assert sum(s.rows for s in list_shards(ds, movie_ids=["movie-00"])) == 8


def test_random_access_by_row_group_and_row(tiny_dataset):
    shard = list_shards(tiny_dataset())[1]
    assert shard.row_groups == len(shard.row_group_rows) >= 2
    all_rows = list(iter_samples(shard, columns=["disparity"]))
    group1 = read_row_group(shard, 1, columns=["disparity"])
    assert [r["frame_index"] for r in group1] == [
        r["frame_index"] for r in all_rows[shard.row_group_rows[0] :][: len(group1)]
    ]
    last = read_sample(shard.path, shard.rows - 1)
    assert last["frame_index"] == all_rows[-1]["frame_index"]
    assert np.array_equal(last["disparity"], all_rows[-1]["disparity"], equal_nan=True)
    assert [r["frame_index"] for r in iter_samples(shard.path, columns=[], row_groups=[1])] == [
        r["frame_index"] for r in group1
    ]
    with pytest.raises(IndexError):
        read_sample(shard, shard.rows)


def test_fsspec_memory_filesystem(tiny_dataset):
    ds = tiny_dataset()
    fs = fsspec.filesystem("memory")
    fs.put(str(ds), "/tinyds", recursive=True)
    try:
        shards = list_shards("memory://tinyds")
        assert shards[0].path.startswith("memory://") and len(shards) == len(list_shards(ds))
        s = next(iter_samples(shards[0], columns=["image", "disparity"]))
        assert s["image"].shape == (64, 96, 3)
        assert sum(1 for _ in iter_samples("memory://tinyds", columns=[])) == 16
        assert verify("memory://tinyds") == []
    finally:
        fs.rm("/tinyds", recursive=True)


def test_missing_shard_is_named(copy_dataset, tiny_dataset):
    ds = copy_dataset(tiny_dataset())
    victim = list_shards(ds)[0]
    import os

    os.remove(victim.path)
    with pytest.raises(BadInputError, match="part-00000.parquet: shard file is missing"):
        list(iter_samples(ds))


def test_pyarrow_dataset_reads_shards_directly(tiny_dataset):
    paths = [s.path for s in list_shards(tiny_dataset())]
    table = pads.dataset(paths, format="parquet").to_table(columns=["movie_id", "split", "disparity_p50", "image"])
    assert table.num_rows == 16
    assert table.column("image")[0].as_py()[:2] == b"\xff\xd8"  # a JPEG, readable by any image library


def test_duckdb_reads_shards_directly(tiny_dataset):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is a test dependency (pyproject [test])")
    ds = tiny_dataset()
    rows = duckdb.sql(
        f"SELECT movie_id, split, count(*) AS n, avg(valid_fraction) AS v "
        f"FROM read_parquet('{ds}/movies/*/*/part-*.parquet') GROUP BY ALL ORDER BY movie_id"
    ).fetchall()
    assert [(m, s, n) for m, s, n, _ in rows] == [("movie-00", "train", 8), ("movie-01", "val", 8)]
    assert all(0.5 < v <= 1.0 for *_, v in rows)
    reasons = duckdb.sql(
        f"SELECT reason, count(*) FROM read_parquet('{ds}/movies/*/*/rejected.parquet') GROUP BY ALL"
    ).fetchall()
    assert sum(n for _, n in reasons) == 2


def test_lossless_options_png_images_and_png16_disparity(tiny_dataset):
    from pipeline.shards import ShardConfig

    config = ShardConfig(target_shard_bytes=1 << 20, row_group_rows=4, image_codec="png", disparity_codec="png16")
    s = next(iter_samples(tiny_dataset(n_movies=1, frames_per_movie=2, config=config)))
    rec = make_frame_record(s["movie_id"], 0)
    assert np.array_equal(s["image"], rec["image"])
    assert np.abs(s["disparity"] - rec["disparity"]).max() <= BOUND


def test_prefetch_gives_the_same_rows_and_stops_cleanly(tiny_dataset):
    ds = tiny_dataset()
    with_prefetch = [(s["movie_id"], s["frame_index"]) for s in iter_samples(ds, columns=["valid"])]
    without = [(s["movie_id"], s["frame_index"]) for s in iter_samples(ds, columns=["valid"], prefetch=False)]
    assert with_prefetch == without and len(without) == 16
    it = iter_samples(ds, columns=["image"])
    first = next(it)
    it.close()  # a consumer that stops early: the pending read is awaited, the file closed
    assert first["image"].shape == (64, 96, 3)


def test_the_readme_recipe_decodes_a_row_without_depthmine(tiny_dataset):
    """The format is documented well enough to read with pyarrow, numpy and cv2 alone."""
    import cv2
    import pyarrow.parquet as pq

    shard = list_shards(tiny_dataset())[0]
    ours = next(iter_samples(shard))
    # -- the README's recipe, verbatim --
    row = pq.read_table(shard.path).slice(0, 1).to_pylist()[0]
    h, w = row["height"], row["width"]
    image = cv2.imdecode(np.frombuffer(row["image"], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]  # RGB
    planes = np.frombuffer(row["disparity"], np.uint8).reshape(2, h * w)  # codec u16d
    delta = (planes[0].astype(np.uint16) | planes[1].astype(np.uint16) << 8).reshape(h, w)
    codes = np.cumsum(delta, axis=1, dtype=np.uint16)
    disparity = np.where(codes == 65535, np.nan, row["disparity_offset"] + row["disparity_scale"] * codes)
    valid = np.unpackbits(np.frombuffer(row["valid"], np.uint8), count=h * w).reshape(h, w).astype(bool)
    # --
    assert row["disparity_codec"] == "u16d"
    assert np.array_equal(image, ours["image"]) and np.array_equal(valid, ours["valid"])
    assert np.allclose(disparity, ours["disparity"], atol=1e-4, equal_nan=True)
