"""``depthmine release``: a labels-only release of a dataset (the ``release_dataset`` flow)."""

from __future__ import annotations

import argparse
import json
import os

__all__ = ["register"]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _pair(value: str) -> tuple[str, str]:
    key, sep, rest = value.partition("=")
    if not sep or not key or not rest:
        raise argparse.ArgumentTypeError(f"expected ID=VALUE, got {value!r}")
    return key, rest


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "release",
        help="publish a dataset's labels without any picture of the films (Prefect flow)",
        description=(
            "Write a labels-only release of DATASET: for every kept frame all shard columns except "
            "the pictures (disparity, masks, statistics, crop box, provenance), a 64-bit perceptual "
            "hash of the stored picture and, per movie, a signature of the cut (shot boundaries, "
            "duration, frame rate, frame count, hash sequence), with SHA-256 checksums and a README "
            "that lists the films. Anyone with a copy of the same films rebuilds the dataset with "
            "`depthmine hydrate`."
        ),
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset folder or manifest.json")
    p.add_argument("-o", "--out", required=True, metavar="RELEASE", help="release folder to write (new or empty)")
    p.add_argument("--split", type=_csv, default=None, metavar="SPLIT[,SPLIT]", help="splits to release (default: all)")
    p.add_argument("--movies", type=_csv, default=None, metavar="ID[,ID]", help="movies to release (default: all)")
    p.add_argument(
        "--title",
        type=_pair,
        action="append",
        default=[],
        metavar="ID=TITLE",
        help="the film's title for the release README (repeatable; default: the movie id)",
    )
    p.add_argument(
        "--smallest",
        action="store_true",
        help="brotli 11 instead of zstd 19 for the label files: about 8%% smaller, three times slower to write",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="release disparity and uncertainty at every pixel, so hydrated label columns are the dataset's "
        "bytes (a third to a half larger); default: only at valid pixels (disparity exact there, uncertainty "
        "within 1/16 px; invalid pixels carry no label and come back not finite)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.cli.ingest import prefect_env_defaults

    prefect_env_defaults(args.verbose)
    from flows.release import release_dataset

    result = release_dataset(
        dataset=args.dataset,
        out=args.out,
        splits=args.split,
        movies=args.movies,
        titles=dict(args.title),
        compression="brotli" if args.smallest else "zstd",
        precision="exact" if args.exact else "valid",
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    ratio = result["bytes"] / result["dataset_bytes"] if result["dataset_bytes"] else 0.0
    print(
        f"released {len(result['movies'])} movie(s), {result['rows']} frames, {result['bytes'] / 1e6:.2f} MB "
        f"({ratio:.0%} of the dataset), no pictures"
    )
    print(f"release: {os.path.abspath(result['release'])}")
    return 0
