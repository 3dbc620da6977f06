"""``depthmine predict``: run a trained model on images and videos."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="inverse depth for images and videos (16-bit PNG, preview, optional PLY)",
        description=(
            "Predict relative inverse depth (disparity, larger = nearer) for images, folders of images "
            "and videos (every frame, or every --every-th). Per image or frame, writes "
            "NAME.disparity.png (16-bit, each image scaled to the full 0..65535 range; the min/max to "
            "undo it are in DIR/predictions.csv), NAME.preview.png (input next to the coloured "
            "disparity) and, with --ply, NAME.ply (a coloured point cloud with relative depth for the "
            "given intrinsics). NAME is the input's path relative to the folder holding all inputs, "
            "without suffix (a/x.jpg and b/x.jpg give a/x and b/x; x.jpg and x.png keep their suffix), "
            "so no output overwrites another. Video frames go to DIR/NAME/<frame index>.*. "
            "DIR/predictions.csv gains a row as each prediction is written. An unreadable input is "
            "reported and skipped; the rest are predicted, and the command then exits 1 listing the "
            "failures. Uses the GPU when present."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image, folder of images, or video")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="depthmine (or MiDaS v2.1) checkpoint")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--side", type=int, default=384, help="network input: longer side in pixels (default 384)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: predict every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="videos: stop after N predicted frames")
    p.add_argument("--no-preview", action="store_true", help="skip the coloured previews")
    p.add_argument(
        "--temporal",
        action="store_true",
        help=(
            "videos: align each frame's prediction (scale and shift) to the previous frame's along the optical "
            "flow between them, so a per-frame model's output stops flickering"
        ),
    )
    p.add_argument(
        "--temporal-flow", default="dis-medium", metavar="NAME", help="flow backend for --temporal (default dis-medium)"
    )
    g = p.add_argument_group("point cloud")
    g.add_argument("--ply", action="store_true", help="also write a PLY point cloud per image/frame")
    g.add_argument("--fx", type=float, default=None, help="focal length in pixels (default: image width)")
    g.add_argument("--fy", type=float, default=None, help="vertical focal length (default: fx)")
    g.add_argument("--cx", type=float, default=None, help="principal point x (default: centre)")
    g.add_argument("--cy", type=float, default=None, help="principal point y (default: centre)")
    g.add_argument("--ply-stride", type=int, default=1, metavar="N", help="keep every N-th pixel (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import ConfigError
    from training.predict import DepthPredictor, PointCloudIntrinsics, PredictConfig, predict_paths

    if args.batch_size < 1 or args.every < 1 or args.ply_stride < 1 or args.side < 32:
        raise ConfigError("--batch-size, --every and --ply-stride must be at least 1, --side at least 32")
    if args.temporal:
        from pipeline.flow import get_backend

        get_backend(args.temporal_flow)  # an unknown backend is a one-line error before any work
    predictor = DepthPredictor.from_checkpoint(args.checkpoint, args.device, side=args.side)
    config = PredictConfig(
        batch_size=args.batch_size,
        ply=args.ply,
        intrinsics=PointCloudIntrinsics(args.fx, args.fy, args.cx, args.cy),
        ply_stride=args.ply_stride,
        preview=not args.no_preview,
        every=args.every,
        max_frames=args.max_frames,
        temporal=args.temporal,
        temporal_flow=args.temporal_flow,
    )
    outcome = predict_paths(predictor, args.inputs, args.out, config)
    print(
        f"wrote {len(outcome.rows)} predictions to {args.out} (index: {args.out}/predictions.csv) on {predictor.device}"
    )
    if outcome.failures:
        print(
            f"depthmine: error: {len(outcome.failures)} input(s) could not be read and were skipped:", file=sys.stderr
        )
        for f in outcome.failures:
            print(f"  {f.input}: {f.problem}", file=sys.stderr)
        return 1
    return 0
