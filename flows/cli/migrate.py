"""``depthmine migrate``: rewrite a single-level dataset manifest as the two-level index."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "migrate",
        help="rewrite an older dataset's manifest.json as the two-level index",
        description=(
            "Datasets published before the two-level index list every shard of every movie in "
            "manifest.json (rewritten whole at every publish: about 0.5 MB a film). migrate publishes "
            "the same movies as a new version whose manifest.json lists each movie by the path and "
            "SHA-256 of its own movie.json, plus small totals. No shard is touched, the old version "
            "stays readable in versions/, and the rename is atomic. Running it again does nothing. "
            "It refuses (exit 2) while a build or ingest holds the dataset's locks, and when a movie's "
            "movie.json disagrees with manifest.json (run depthmine verify)."
        ),
    )
    p.add_argument("dataset", metavar="DATASET", help="a local dataset folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.shards.manifest import migrate

    done = migrate(args.dataset)
    if done is None:
        print(f"{args.dataset}: already two-level; nothing to do")
    else:
        print(f"{args.dataset}: version {done[0]} (single-level) migrated to version {done[1]} (two-level)")
    return 0
