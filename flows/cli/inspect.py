"""``depthmine inspect``: a contact sheet and the statistics of a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="contact sheet and statistics of a dataset",
        description=(
            "Print the dataset's statistics (frames per movie and split, rejections by reason) and "
            "draw a contact sheet of random frames: image, coloured disparity (near = warm, invalid "
            "= black) and mask (white valid, blue sky, black invalid), plus a disparity histogram "
            "next to it (<sheet>_hist.png)."
        ),
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset folder or manifest.json (local path or URI)")
    p.add_argument(
        "--out", default=None, metavar="PNG", help="contact sheet to write (default: <dataset name>_sheet.png here)"
    )
    p.add_argument("--n", type=int, default=16, help="frames on the sheet (default 16)")
    p.add_argument("--seed", type=int, default=0, help="chooses the frames")
    p.add_argument("--no-sheet", action="store_true", help="print the statistics only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.shards.inspect import inspect_dataset

    out = None
    if not args.no_sheet:
        out = args.out or f"{Path(str(args.dataset).rstrip('/')).name or 'dataset'}_sheet.png"
    report = inspect_dataset(args.dataset, out=out, n=args.n, seed=args.seed)
    print(report.text)
    if report.sheet:
        print(f"\ncontact sheet: {report.sheet}\ndisparity histogram: {report.histogram}")
    return 0
