"""SQL over exactly one published dataset version (DuckDB), for tools outside depthmine.

A glob over ``movies/*/*/part-*.parquet`` reads every committed folder: the current key of a movie,
its previous keys kept for older versions, and uncommitted leftovers, so counts come out doubled
after a re-ingest with other settings. :func:`connect` instead builds the views from the manifest's
own file list: ``frames`` (the frame shards), ``rejected`` (the rejected frames) and ``movies``
(one row per movie: id, key, split counts, rows, source). The manifest is read once, so a query sees
one version even while a new one is being published. Shards of an older schema version show their
columns under the current names (:data:`pipeline.shards.schema.RENAMED_COLUMNS`), so a dataset
holding movies of both versions has one ``ingest_key`` column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import DepthmineError
from pipeline.shards.manifest import DatasetManifest, manifest_location, read_manifest
from pipeline.shards.schema import FRAME_SCHEMA, REJECTED_SCHEMA, RENAMED_COLUMNS

__all__ = ["connect", "shard_files", "VIEWS"]

VIEWS = ("frames", "rejected", "movies")


def _join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}" if root not in ("", ".") else rel


def shard_files(dataset: str | Path | DatasetManifest) -> tuple[list[str], list[str]]:
    """``(frame shards, rejected files)`` of the published version, as paths or URIs."""
    manifest = dataset if isinstance(dataset, DatasetManifest) else read_manifest(dataset)
    root = manifest.root if isinstance(dataset, DatasetManifest) else manifest_location(str(dataset))[0]
    frames = [_join(root, s.path) for s in manifest.shards]
    rejected = [_join(root, f"{m.folder}/{m.rejected.path}") for m in manifest.movies.values() if m.rejected]
    return frames, rejected


def _literal(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _current_columns(con: Any, view: str) -> str:
    """The select list of ``view``'s columns under their current names: an old name becomes the
    current one, or is merged into it (``coalesce``) where files of both versions are read."""
    names = [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [view]
        ).fetchall()
    ]
    if not set(names) & set(RENAMED_COLUMNS):
        return "*"
    older = {new: old for old, new in RENAMED_COLUMNS.items()}
    present, done, out = set(names), set(), []
    for c in names:
        name = RENAMED_COLUMNS.get(c, c)
        if name in done:
            continue
        done.add(name)
        if name in present and older.get(name) in present:
            out.append(f"coalesce({_quote(name)}, {_quote(older[name])}) AS {_quote(name)}")
        else:
            out.append(_quote(c) if c == name else f"{_quote(c)} AS {_quote(name)}")
    return ", ".join(out)


def connect(dataset: str | Path) -> Any:
    """An in-memory DuckDB connection with the views ``frames``, ``rejected`` and ``movies``.

    Raises:
        BadInputError: no readable manifest at ``dataset``.
        DepthmineError: DuckDB is not installed.
    """
    try:
        import duckdb
    except ImportError:
        raise DepthmineError("depthmine sql needs DuckDB: pip install duckdb") from None
    manifest = read_manifest(dataset)
    frames, rejected = shard_files(manifest if manifest.root else dataset)
    con = duckdb.connect()
    for name, files, schema in (("frames", frames, FRAME_SCHEMA), ("rejected", rejected, REJECTED_SCHEMA)):
        if files:
            # by name: a dataset may hold clips-mode movies (extra clip columns, NULL for the others)
            # and shards of an older schema version (renamed columns: shown under the current names)
            con.execute(
                f"CREATE VIEW _{name}_files AS SELECT * FROM read_parquet({_literal(files)}, union_by_name = true)"
            )
            con.execute(f"CREATE VIEW {name} AS SELECT {_current_columns(con, f'_{name}_files')} FROM _{name}_files")
        else:  # an empty dataset: the same columns, no rows
            con.register(f"_{name}_empty", schema.empty_table())
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_empty")
    movies = [
        {
            "movie_id": m.movie_id,
            "key": m.key,
            "folder": m.folder,
            "rows": m.rows,
            "rejected_rows": m.rejected_rows,
            "split_counts": json.dumps(m.split_counts),
            "source": str((m.meta.get("source") or {}).get("path", ""))
            if isinstance(m.meta.get("source"), dict)
            else str(m.meta.get("source", "")),
            "version": manifest.version,
        }
        for m in manifest.movies.values()
    ]
    import pyarrow as pa

    table = pa.Table.from_pylist(
        movies,
        schema=pa.schema(
            [
                ("movie_id", pa.string()),
                ("key", pa.string()),
                ("folder", pa.string()),
                ("rows", pa.int64()),
                ("rejected_rows", pa.int64()),
                ("split_counts", pa.string()),
                ("source", pa.string()),
                ("version", pa.int64()),
            ]
        ),
    )
    con.register("_movies", table)
    con.execute("CREATE VIEW movies AS SELECT * FROM _movies")
    return con
