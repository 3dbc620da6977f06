"""``depthmine sample-movie``: write a synthetic 3D movie with known disparity and its sidecar."""

from __future__ import annotations

import argparse

from pipeline.errors import ConfigError
from pipeline.layouts import Layout

__all__ = ["register"]


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 320x180, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample-movie",
        help="write a synthetic 3D movie with known disparity",
        description=(
            "Render a synthetic 3D movie (textured layers at several depths, a sky band, letterbox "
            "bars, hard cuts between shots), encode it as H.264 MKV with chapters in the chosen "
            "layout, and write the ground truth next to it: OUT.gt.json (shots, chapters, crop box, "
            "layout) and OUT.gt.npz (per-frame left-view disparity and sky mask)."
        ),
    )
    p.add_argument("out", metavar="OUT", help="movie to write (.mkv); the left eye's file for --layout separate")
    p.add_argument(
        "--layout", default="sbs-half", choices=[l.value for l in Layout], help="eye packing (default sbs-half)"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="duration (default 10)")
    p.add_argument("--size", type=_size, default=(320, 180), metavar="WxH", help="per-eye size (default 320x180)")
    p.add_argument("--fps", type=float, default=24.0, help="frame rate (default 24)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same movie)")
    p.add_argument("--chapters", type=int, default=3, help="number of chapters (default 3)")
    p.add_argument("--shots", type=int, default=None, help="number of shots (default: about one per 2 s)")
    p.add_argument(
        "--vertical-offset", type=float, default=0.0, metavar="PX", help="shift the right eye down by PX pixels"
    )
    p.add_argument("--swap-eyes", action="store_true", help="store the right view in the left slot")
    p.add_argument("--no-letterbox", action="store_true", help="no black bars")
    p.add_argument("--no-stereo-metadata", action="store_true", help="omit the MKV StereoMode tag")
    p.add_argument("--right", default=None, metavar="FILE", help="right eye's file for --layout separate")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.synthetic import make_sample_movie

    if args.seconds <= 0 or args.chapters < 1:
        raise ConfigError("--seconds must be positive and --chapters at least 1")
    movie = make_sample_movie(
        args.out,
        layout=args.layout,
        seconds=args.seconds,
        size=args.size,
        fps=args.fps,
        seed=args.seed,
        chapters=args.chapters,
        shots=args.shots,
        vertical_offset_px=args.vertical_offset,
        swap_eyes=args.swap_eyes,
        letterbox=not args.no_letterbox,
        right_path=args.right,
        stereo_metadata=not args.no_stereo_metadata,
        progress=True,
    )
    print(f"wrote {movie.path}" + (f" and {movie.right_path}" if movie.right_path else ""))
    print(
        f"  layout {movie.layout}, eye {movie.eye_size[0]}x{movie.eye_size[1]}, {movie.frame_count} frames at {movie.fps:g} fps"
    )
    print(f"  {len(movie.shots)} shots, {len(movie.chapters)} chapters, crop {movie.crop}")
    print(f"  ground truth: {movie.gt_json} + {movie.gt_npz}")
    return 0
