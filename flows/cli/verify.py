"""``depthmine verify``: check every shard of a dataset against its manifest."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check every shard of a dataset against its manifest",
        description=(
            "Check a published dataset: every shard listed in manifest.json exists, has the listed "
            "size and SHA-256, opens as Parquet with the expected schema and row count, and its "
            "sampled rows decode; Parquet files in movie folders that the manifest does not list "
            "are reported too. Prints every problem (naming the shard) and exits 1 if there is any "
            "error; exits 0 with a one-line summary when the dataset is clean. Leftovers of "
            "interrupted writes, staging in .work/ and stray Parquet files under movies/ are warnings."
        ),
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset folder or manifest.json (local path or URI)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="no SHA-256 of whole files: check each footer's digest and every page against its CRC-32 "
        "instead (a flipped bit in any page is still found)",
    )
    p.add_argument(
        "--sample-rows", type=int, default=2, metavar="N", help="rows decoded per shard (default 2: first and last)"
    )
    p.add_argument("--seed", type=int, default=0, help="chooses the randomly sampled rows")
    p.add_argument("--workers", type=int, default=4, help="files checked in parallel (default 4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.shards import read_manifest
    from pipeline.shards.verify import verify

    t0 = time.monotonic()
    manifest = read_manifest(args.dataset)
    problems = verify(
        args.dataset,
        checksum=not args.quick,
        sample_rows=args.sample_rows,
        seed=args.seed,
        workers=args.workers,
        progress=sys.stderr.isatty(),
    )
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(p, file=sys.stderr if p.severity == "error" else sys.stdout)
    shards = sum(r.shards for r in manifest.refs.values())  # the index's totals: no movie.json read again
    nbytes = manifest.bytes
    splits = ", ".join(f"{k} {v}" for k, v in manifest.split_counts.items())
    what = f"dataset version {manifest.version}: {len(manifest.movies)} movies, {shards} shards, {manifest.rows} frames ({splits}), {nbytes / 1e6:.1f} MB"
    if errors:
        bad = sorted({p.path for p in errors})
        print(f"FAILED {what}: {len(errors)} error(s) in {len(bad)} file(s): {', '.join(bad)}", file=sys.stderr)
        return 1
    warn = f", {len(problems)} warning(s)" if problems else ""
    print(f"OK {what}, verified in {time.monotonic() - t0:.1f} s{warn}")
    return 0
