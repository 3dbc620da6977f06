"""``depthmine build``: rebuild a dataset from a catalog (the ``build_dataset`` flow)."""

from __future__ import annotations

import argparse
import os
import sys

from flows.cli.ingest import add_ingest_options, add_runner_options, prefect_env_defaults

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="rebuild a dataset from a catalog of movies (Prefect flow)",
        description=(
            "Ingest every new or changed movie of the catalog (YAML or CSV: path, movie_id, split, "
            "layout, right, overrides), drop movies no longer listed, and publish a new dataset "
            "version atomically (readers keep the previous one until it is complete). A movie with "
            "bad input is reported and skipped; the exit status is then 1."
        ),
    )
    p.add_argument("--catalog", required=True, metavar="FILE", help="catalog file (.yaml/.yml/.csv)")
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset folder")
    p.add_argument("--keep-versions", type=int, default=2, metavar="N", help="dataset versions kept on disk (default 2)")
    add_ingest_options(p)
    add_runner_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prefect_env_defaults(args.verbose)
    from flows.build import build_dataset

    s = build_dataset(
        catalog=args.catalog, out=args.out, flow=args.flow, ckpt=args.ckpt, device=args.device,
        overrides=args.overrides, runner=args.runner, workers=args.workers, dask_address=args.dask_address,
        keep_versions=args.keep_versions, progress=sys.stderr.isatty(),
    )
    print_summary(s, args.out)
    return 1 if s["failed"] else 0


def print_summary(s: dict, out: str) -> None:
    print(f"dataset {os.path.abspath(out)} version {s['version']}: {len(s['movies'])} movies, {s['rows']} frames ({s['seconds']:.1f} s)")
    for m in s["movies"]:
        status = "unchanged" if m["skipped"] else "ingested"
        print(f"  {m['movie_id']:<24} {m['split']:<5} {status:<9} {m['kept']:>6} kept {sum(m['rejected'].values()):>5} rejected")
    for f in s["failed"]:
        print(f"  {f['movie_id']:<24} SKIPPED (catalog line {f['line']}): {f['error']}", file=sys.stderr)
    if s["removed"]:
        print(f"  removed: {', '.join(s['removed'])}")
