"""Issue 10, defect 6: outside tools read exactly the published version (depthmine sql, DuckDB recipe)."""

from __future__ import annotations

import shutil

import pytest

from flows.cli import main
from pipeline.shards import MovieShardWriter, publish, read_manifest
from pipeline.shards.verify import verify

duckdb = pytest.importorskip("duckdb")


@pytest.fixture
def reingested(tiny_dataset, copy_dataset):
    """movie-00 ingested again under another key: both key folders are on disk (keep_versions)."""
    from tests.fixtures.datasets import TINY_SHARD_CONFIG, make_frame_record

    ds = copy_dataset(tiny_dataset())
    v1 = read_manifest(ds)
    with MovieShardWriter(ds, "movie-00", "0000000000000002", TINY_SHARD_CONFIG, {"source": "movie-00.mkv"}) as w:
        for f in range(5):
            w.write(make_frame_record("movie-00", f, (96, 64), 3, "train"))
    new = w.finish()
    publish(ds, [new, v1.movies["movie-01"]])
    return ds


def test_a_glob_double_counts_but_depthmine_sql_does_not(reingested, capsys):
    ds = reingested
    manifest = read_manifest(ds)
    assert manifest.rows == 5 + 8
    glob = (
        duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{ds}/movies/*/*/part-*.parquet')").fetchone()[0]
    )
    assert glob == 8 + 5 + 8  # the old key folder of movie-00 is still on disk for the previous version
    assert main(["sql", str(ds), "SELECT movie_id, count(*) AS n FROM frames GROUP BY ALL ORDER BY 1", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["movie_id,n", "movie-00,5", "movie-01,8"]
    assert main(["sql", str(ds), "SELECT movie_id, rows FROM movies ORDER BY 1", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["movie-00,5", "movie-01,8"]
    assert main(["sql", str(ds), "SELECT count(*) FROM rejected", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["1"]  # the new movie-00 rejected none


def test_the_readme_recipe_reads_the_manifest_file_list(reingested, monkeypatch):
    monkeypatch.chdir(reingested.parent)
    name = reingested.name
    con = duckdb.connect()
    # the README's recipe, with its folder name
    con.execute(
        f"SET VARIABLE movies = (SELECT list('{name}/' || m.path) FROM "
        f"(SELECT unnest(movies) AS m FROM read_json('{name}/manifest.json')))"
    )
    con.execute(
        "SET VARIABLE shards = (SELECT list(parse_dirpath(filename) || '/' || s.path) FROM "
        "(SELECT filename, unnest(shards) AS s FROM read_json(getvariable('movies'), filename = true, "
        "union_by_name = true)))"
    )
    assert con.execute("SELECT count(*) FROM read_parquet(getvariable('shards'))").fetchone()[0] == 13


def test_sql_mistakes_are_one_line(reingested, capsys, tmp_path):
    assert main(["sql", str(reingested), "SELEC nothing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("depthmine: error: SQL: Parser Error") and err.count("\n") == 1
    assert main(["sql", str(tmp_path / "nope"), "SELECT 1"]) == 2
    assert "no dataset manifest" in capsys.readouterr().err


def test_verify_warns_about_staging_and_stray_parquet(tiny_dataset, copy_dataset, capsys):
    ds = copy_dataset(tiny_dataset())
    shard = next((ds / "movies" / "movie-00").rglob("part-00000.parquet"))
    shutil.copyfile(shard, ds / "movies" / "loose.parquet")
    shutil.copyfile(shard, ds / "movies" / "movie-00" / "loose.parquet")
    (ds / ".work" / "movie-07" / "0123456789abcdef").mkdir(parents=True)
    problems = verify(str(ds))
    assert sorted((p.kind, p.path, p.severity) for p in problems) == [
        ("staging", ".work/movie-07/0123456789abcdef", "warning"),
        ("stray", "movies/loose.parquet", "warning"),
        ("stray", "movies/movie-00/loose.parquet", "warning"),
    ]
    assert main(["verify", str(ds)]) == 0
    out = capsys.readouterr().out
    assert "3 warning(s)" in out and "interrupted ingest" in out
