"""``depthmine sql``: query exactly the published version of a dataset with DuckDB."""

from __future__ import annotations

import argparse
import csv
import sys

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sql",
        help="query the published version of a dataset with SQL (DuckDB)",
        description=(
            "Run SQL over exactly the files the dataset's manifest lists, as three views: frames "
            "(one row per kept frame, every shard column), rejected (dropped frames with their "
            "reason) and movies (id, key, rows, split counts, source). Unlike a glob over "
            "movies/*/*/*.parquet it never counts an older key of a re-ingested movie or an "
            'interrupted write. Example: depthmine sql dataset/ "SELECT split, count(*) FROM frames '
            'GROUP BY ALL". Needs the duckdb package.'
        ),
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset folder or manifest.json (local path or URI)")
    p.add_argument("query", metavar="SQL", help="the query; views: frames, rejected, movies")
    p.add_argument("--csv", action="store_true", help="print CSV instead of an aligned table")
    p.add_argument(
        "--max-rows", type=int, default=1000, metavar="N", help="rows printed at most (default 1000; 0 = all)"
    )
    p.set_defaults(func=run)


def _cell(v) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return f"<{len(v)} bytes>"
    return "NULL" if v is None else str(v)


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import ConfigError
    from pipeline.shards.query import connect

    con = connect(args.dataset)
    import duckdb

    try:
        cur = con.execute(args.query)
    except duckdb.Error as exc:
        raise ConfigError(f"SQL: {str(exc).splitlines()[0]}") from None
    if cur.description is None:  # a statement without a result
        return 0
    names = [d[0] for d in cur.description]
    rows = cur.fetchall() if args.max_rows <= 0 else cur.fetchmany(args.max_rows + 1)
    more = args.max_rows > 0 and len(rows) > args.max_rows
    rows = [[_cell(v) for v in r] for r in rows[: args.max_rows or None]]
    if args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(names)
        w.writerows(rows)
    else:
        widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
        print("  ".join(n.ljust(w) for n, w in zip(names, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if more:
        print(f"(more than {args.max_rows} rows; --max-rows 0 prints all)", file=sys.stderr)
    return 0
