"""``depthmine shots``: one pass over a movie: its shots and the frames the sampling rules keep."""

from __future__ import annotations

import argparse
import json

from pipeline.sampling import SPLITS

__all__ = ["register"]


def register(subparsers) -> None:
    from pipeline.shots import DETECTORS

    p = subparsers.add_parser(
        "shots",
        help="detect shots and list the sampled frames of a movie",
        description=(
            "Decode the movie once: detect shots with PySceneDetect and apply the sampling rules "
            "(first and last chapters dropped, clips of at least 1 s, the first 24 frames plus 24 "
            "every 4 s, then 4 fps for train and 1 fps for val/test). --json prints "
            '{"shots": [{"start_frame", "end_frame" (exclusive), ...}], "samples": [frame indices], ...}.'
        ),
    )
    p.add_argument("movie", metavar="MOVIE", help="movie file (the left eye's with --right)")
    p.add_argument("--right", default=None, metavar="FILE", help="the right eye's file (two separate eye files)")
    p.add_argument("--layout", default=None, help="force a layout: sbs-full, sbs-half, tab-full, tab-half")
    p.add_argument(
        "--detector", default="adaptive", help=f"shot detector: {', '.join(sorted(DETECTORS))} (default adaptive)"
    )
    p.add_argument("--threshold", type=float, default=None, help="detector threshold (default: the detector's own)")
    p.add_argument("--split", default="train", choices=SPLITS, help="sampling rate: train 4 fps, val/test 1 fps")
    p.add_argument(
        "--clips",
        type=int,
        default=None,
        metavar="T",
        help="sequence mode: sample clips of T consecutive frames (sampling.mode=clips); the JSON lists them as clips",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--contact-sheet", default=None, metavar="OUT.png", help="write the first and middle frame of each shot"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.sampling import SamplingConfig
    from pipeline.shots import ShotConfig
    from pipeline.video import open_stereo, scan_movie

    src = open_stereo(args.movie, layout=args.layout, right_path=args.right)
    shot_cfg = ShotConfig(detector=args.detector, threshold=args.threshold)
    from pipeline.shots import build_detector

    build_detector(shot_cfg, src.info.fps)  # an unknown name fails before decoding
    scan = scan_movie(
        src,
        shot_cfg,
        SamplingConfig(mode="clips", clip_frames=args.clips) if args.clips else SamplingConfig(),
        args.split,
        progress=not (args.no_progress or args.json),
        keep_thumbnails=bool(args.contact_sheet),
    ).run()
    if args.contact_sheet:
        write_contact_sheet(scan, args.contact_sheet)
    if args.json:
        print(json.dumps(scan.as_dict(), indent=2))
        return 0
    print(f"{src.path}: {src.layout.value} ({src.layout_reason})")
    print(f"  {scan.frame_count} frames at {src.info.fps:g} fps, crop {src.crop}")
    sampled_per_shot: dict[int, int] = {}
    samples = set(scan.samples)
    for shot in scan.shots:
        n = sum(1 for i in range(shot.start_frame, shot.end_frame) if i in samples)
        sampled_per_shot[shot.shot_id] = n
        print(
            f"  shot {shot.shot_id:4d}: frames {shot.start_frame:7d} - {shot.end_frame:7d} "
            f"({shot.frame_count / src.info.fps:6.2f} s), {n} sampled"
        )
    clips = f" in {len(scan.clips)} clips of {args.clips}" if args.clips else ""
    print(f"  {len(scan.shots)} shots, {len(scan.samples)} sampled frames{clips} ({args.split})")
    if args.contact_sheet:
        print(f"  contact sheet: {args.contact_sheet}")
    return 0


def write_contact_sheet(scan, out) -> None:
    """First and middle frame of every shot, four shots per row, labelled."""
    from pipeline.viz import grid, hstack_tiles, label_tile, save_png

    tiles = []
    for shot in scan.shots:
        first, middle = scan.thumbnails.get(shot.shot_id, (None, None))
        if first is None:
            continue
        caption = f"#{shot.shot_id} {shot.start_frame}-{shot.end_frame}"
        tiles.append(hstack_tiles([label_tile(first, caption), middle], height=first.shape[0], gap=2))
    if not tiles:
        return
    rows = [hstack_tiles(tiles[i : i + 4], height=tiles[0].shape[0], gap=6) for i in range(0, len(tiles), 4)]
    save_png(out, grid(rows, gap=6))
