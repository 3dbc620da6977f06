"""``depthmine probe``: what a movie file holds (size, rate, frames, chapters, stereo metadata, layout)."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe",
        help="show a movie's resolution, frame rate, chapters, stereo layout and letterbox",
        description=(
            "Read a movie's metadata (resolution, frame rate, duration, frame count, chapters, MKV "
            "StereoMode / stereo3d side data), decide its stereo layout (from the metadata, or from "
            "the picture when there is none) and find its letterbox bars. Decodes only a dozen frames."
        ),
    )
    p.add_argument("movie", metavar="MOVIE", help="movie file (the left eye's with --right)")
    p.add_argument("--right", default=None, metavar="FILE", help="the right eye's file (two separate eye files)")
    p.add_argument("--layout", default=None, help="force a layout: sbs-full, sbs-half, tab-full, tab-half")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.video import open_stereo

    src = open_stereo(args.movie, layout=args.layout, right_path=args.right)
    info = src.info
    data = info.as_dict()
    data.update(
        layout=src.layout.value,
        layout_reason=src.layout_reason,
        eye_size=list(src.eye_size),
        crop=src.crop.as_dict(),
        right=str(src.right_path) if src.right_path else None,
    )
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(f"{info.path}")
    print(f"  {info.container}, {info.codec} ({info.profile}), {info.pix_fmt}, {info.width}x{info.height}")
    vfr = " (variable)" if info.variable_frame_rate else ""
    exact = "" if info.frame_count_exact else " (estimated)"
    print(f"  {info.fps:g} fps{vfr}, {info.duration_s:.2f} s, {info.frame_count} frames{exact}")
    print(f"  stereo metadata: StereoMode={info.stereo_mode}, stereo3d={info.stereo3d}")
    print(f"  layout: {src.layout.value} ({src.layout_reason})")
    print(
        f"  eye: {src.eye_size[0]}x{src.eye_size[1]}, letterbox crop: x={src.crop.x} y={src.crop.y} w={src.crop.w} h={src.crop.h}"
    )
    print(f"  chapters: {len(info.chapters)}")
    for ch in info.chapters:
        print(f"    {ch.start_s:9.3f} - {ch.end_s:9.3f}  {ch.title}")
    return 0
