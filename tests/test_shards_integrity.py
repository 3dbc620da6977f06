"""Reader integrity: a damaged shard is an error naming it, never a silently changed value.

The fault-injection test damages real shards 200 times at random (single-bit flips anywhere in
the file, truncations, a shard replaced by another shard of this or another movie) and reads the
whole dataset with every column after each: either the read raises :class:`BadInputError` naming
the damaged shard (and every row yielded before it equals the clean read), or every decoded value
is identical to the clean read (the flip hit bytes that decide nothing, such as unused statistics).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import BadInputError
from pipeline.shards import iter_samples, list_shards, read_row_group, read_sample
from pipeline.shards.verify import verify
from tests.fixtures.datasets import make_single_level

TRIALS = 200


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k, va in a.items():
        vb = b[k]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if not (isinstance(va, np.ndarray) and isinstance(vb, np.ndarray)):
                return False
            if (
                va.dtype != vb.dtype
                or va.shape != vb.shape
                or not np.array_equal(va, vb, equal_nan=va.dtype.kind == "f")
            ):
                return False
        elif isinstance(va, float) and isinstance(vb, float) and np.isnan(va) and np.isnan(vb):
            continue
        elif va != vb:
            return False
    return True


def _read(ds: Path, clean: list[dict]) -> tuple[str, str]:
    """Read everything; ('ok', '') if identical, ('raised', message) if it raised after only clean rows."""
    got = 0
    try:
        for row in iter_samples(ds, prefetch=False):
            assert got < len(clean), "more rows than the clean dataset"
            assert _same(row, clean[got]), f"row {got} changed silently"
            got += 1
    except BadInputError as exc:
        return "raised", str(exc)
    assert got == len(clean), f"{got} rows instead of {len(clean)}, without an error"
    return "ok", ""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tests.fixtures.datasets import make_tiny_dataset

    # three movies, several shards each (16 KB target), two rows per row group
    return make_tiny_dataset(tmp_path_factory.mktemp("integrity") / "ds", n_movies=3, frames_per_movie=6, size=(64, 48))


def test_page_checksums_are_written(dataset):
    shard = list_shards(dataset)[0]
    pf = pq.ParquetFile(shard.path, page_checksum_verification=True)
    assert pf.metadata.num_rows == shard.rows
    raw = Path(shard.path).read_bytes()
    # flip a bit inside the first image blob: pyarrow itself refuses the page
    blob = pf.read_row_group(0, columns=["image"]).column("image")[0].as_py()
    at = raw.index(blob[100:140]) + 10
    damaged = bytearray(raw)
    damaged[at] ^= 0x10
    copy = Path(dataset).parent / "damaged.parquet"
    copy.write_bytes(bytes(damaged))
    with pytest.raises(OSError, match="(?i)crc|checksum"):
        pq.ParquetFile(copy, page_checksum_verification=True).read()


def test_random_damage_never_changes_a_value_silently(dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    clean = list(iter_samples(ds, prefetch=False))
    assert len(clean) == 18
    shards = [Path(s.path) for s in list_shards(ds)]
    originals = {p: p.read_bytes() for p in shards}
    rng = random.Random(20261201)
    outcomes = {"raised": 0, "ok": 0}
    kinds = {"flip": 0, "truncate": 0, "swap": 0}
    for trial in range(TRIALS):
        kind = "flip" if trial % 10 < 8 else ("truncate" if trial % 10 == 8 else "swap")
        kinds[kind] += 1
        victim = rng.choice(shards)
        data = bytearray(originals[victim])
        if kind == "flip":
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
            victim.write_bytes(bytes(data))
            what = f"bit {bit} of {victim.name}"
        elif kind == "truncate":
            cut = rng.randrange(len(data))
            victim.write_bytes(bytes(data[:cut]))
            what = f"{victim.name} cut at {cut}"
        else:
            other = rng.choice([s for s in shards if s != victim])
            victim.write_bytes(originals[other])
            what = f"{victim.name} replaced by {other}"
        try:
            outcome, message = _read(ds, clean)
        except AssertionError as exc:
            raise AssertionError(f"trial {trial} ({what}): {exc}") from None
        finally:
            victim.write_bytes(originals[victim])
        if outcome == "raised":
            assert str(victim) in message, f"trial {trial} ({what}): the error does not name the shard: {message}"
        else:
            assert kind == "flip", f"trial {trial} ({what}): a truncated or swapped shard was read without an error"
        outcomes[outcome] += 1
    assert outcomes["raised"] >= TRIALS // 2, outcomes  # most damage is found, the rest changed nothing
    print(
        f"\n{TRIALS} corruptions {kinds}: {outcomes['raised']} raised naming the shard, "
        f"{outcomes['ok']} decoded identically"
    )


def test_a_shard_of_another_movie_is_refused_even_without_the_footer_digest(dataset, tmp_path):
    """Datasets written before the footer digest existed still check row counts and the movie id."""
    import json

    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    manifest = make_single_level(ds)  # such datasets had the single-level manifest
    for m in manifest["movies"].values():
        for s in m["shards"]:
            s.pop("footer_sha256")
    (ds / "manifest.json").write_text(json.dumps(manifest))
    a, b = list_shards(ds, movie_ids=["movie-00"])[0], list_shards(ds, movie_ids=["movie-01"])[0]
    assert a.rows == b.rows and a.row_group_rows == b.row_group_rows  # only the movie id tells them apart
    shutil.copyfile(b.path, a.path)
    with pytest.raises(BadInputError, match=r"movie-00/.*part-00000.parquet: rows of movie\(s\) \['movie-01'\]"):
        list(iter_samples(ds))


def test_random_access_checks_the_shard_too(dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    shards = list_shards(ds)
    a, b = shards[0], shards[1]
    shutil.copyfile(b.path, a.path)
    with pytest.raises(BadInputError, match="footer differs"):
        read_row_group(a, 0)
    with pytest.raises(BadInputError, match="footer differs"):
        read_sample(a, 0)


def test_quick_verify_finds_an_image_bit_flip(dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    shard = list_shards(ds)[-1]
    pf = pq.ParquetFile(shard.path)
    blob = pf.read_row_group(pf.num_row_groups - 1, columns=["image"]).column("image")[0].as_py()
    raw = bytearray(Path(shard.path).read_bytes())
    at = bytes(raw).index(blob[200:240]) + 7
    raw[at] ^= 0x04
    Path(shard.path).write_bytes(bytes(raw))
    problems = verify(str(ds), checksum=False, sample_rows=0)
    assert [(p.kind, p.severity) for p in problems] == [("pages", "error")], problems
    assert Path(shard.path).name in problems[0].path
