"""``depthmine hydrate``: rebuild a released dataset from your own copies (the ``hydrate_dataset`` flow)."""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["register"]


def _pair(value: str) -> tuple[str, str]:
    key, sep, rest = value.partition("=")
    if not sep or not key or not rest:
        raise argparse.ArgumentTypeError(f"expected ID=PATH (or ID=LEFT,RIGHT), got {value!r}")
    return key, rest


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "hydrate",
        help="rebuild a released dataset from your own copies of the films (Prefect flow)",
        description=(
            "Rebuild the dataset of a labels-only release from your copies of its films. Each copy "
            "is decoded once; its layout and letterbox are detected as ingest does; its timeline is "
            "aligned to the release's by shot boundaries and every frame is confirmed by its "
            "perceptual hash; the frames are cropped and resized as the release's were, and written "
            "with the released labels, unchanged, as a normal dataset (verify it, train on it). "
            "A copy may be another rip: other codec, container, resolution, 3D layout, letterbox, "
            "a black lead-in or a trimmed start. Frames that cannot be confirmed are listed with the "
            "reason; a copy of another film or cut is refused and nothing is published. Not "
            "supported (and detected): PAL 25 fps copies of 24 fps films, other edits. A copy whose eyes "
            "are exchanged without a tag saying so is detected (the released disparity matches its eyes "
            "only the other way round) and the other eye is taken. Re-running after a failure or an "
            "interruption reuses the movies already hydrated from the same copies."
        ),
    )
    p.add_argument("release", metavar="RELEASE", help="release folder (from `depthmine release`)")
    p.add_argument(
        "--movie",
        type=_pair,
        action="append",
        default=[],
        metavar="ID=PATH",
        help="your copy of a released film (repeatable); separate eye files: ID=LEFT,RIGHT",
    )
    p.add_argument(
        "--catalog",
        default=None,
        metavar="FILE",
        help="YAML/CSV catalog of copies (movie_id, path, right, layout) instead of --movie",
    )
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset folder to write")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hydration setting, repeatable: max_distance (bits, default 10), window (frames, 2), "
        "min_match_fraction (0.8), lock_votes (3), max_offset_s (600)",
    )
    p.add_argument(
        "--right-views",
        action="store_true",
        help="also rebuild the other eye of every frame from your copy (right_image; a release never holds one)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.cli.ingest import prefect_env_defaults
    from pipeline.config import apply_overrides

    prefect_env_defaults(args.verbose)
    config: dict = {}
    apply_overrides(config, list(args.overrides))
    if args.right_views:
        config["right_views"] = True
    from flows.hydrate import hydrate_dataset

    result = hydrate_dataset(
        release=args.release,
        out=args.out,
        movies=dict(args.movie),
        catalog=args.catalog,
        config=config,
        progress=sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for mid, r in result["movies"].items():
        print(
            f"{mid}: {r['found']} of {r['released']} frames from {r['copy']} ({r['layout']}, offset {r['offset']:+d} frames"
            + (", eyes exchanged: the other eye taken" if r.get("eyes_swapped") else "")
            + ")"
        )
        for m in r["missing"][:20]:
            print(f"  frame {m['frame_index']} not hydrated: {m['reason']}")
        if len(r["missing"]) > 20:
            print(f"  ... {len(r['missing']) - 20} more (see movie.json: meta.hydrated.missing)")
    if result["not_hydrated"]:
        print(f"not hydrated (no copy given): {', '.join(result['not_hydrated'])}")
    print(f"dataset: {os.path.abspath(result['dataset'])}")
    return 0
