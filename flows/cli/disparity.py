"""``depthmine disparity``: the disparity label of one stereo pair, with its checks and a preview."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline.errors import BadInputError

__all__ = ["register", "run", "read_image"]

EPILOG = """\
disparity convention: the left pixel at x matches the right pixel at x - d (Middlebury);
larger is nearer, negative values are behind the screen. OUT.npz holds disparity (float32),
valid (bool), uncertainty (float32, an error scale in px: left-right discrepancy, flow-matcher
disagreement, nearness to depth edges and occlusions), sky (bool), stats (JSON of the frame
statistics), rejected_reason (empty string if kept), rig (JSON: the fitted vertical misalignment)
and config (JSON).

presets (--preset), measured on real pairs with ground truth (bench/RESULTS.md):
  balanced   flow + semi-global matcher, the flow vetoes where it is sure and disagrees (default)
  precise    only pixels where flow and matcher agree within 1 px: fewer labels, fewer errors
  flow-only  the flow alone with a 2 px left-right check (faster, more errors)
For ingest and build, the same settings are --set disparity.KEY=VALUE overrides, e.g.
  --set disparity.consensus=agree --set disparity.consensus_threshold_px=1   (= precise)

examples:
  depthmine disparity left.png right.png -o frame.npz --preview frame.png
  depthmine disparity l.png r.png -o f.npz --preset precise
  depthmine disparity l.png r.png -o f.npz --flow dis-fast --working-width 940
  depthmine disparity l.png r.png -o f.npz --flow ptlflow:raft --ckpt raft-things.ckpt
"""


def register(subparsers) -> None:
    from pipeline.disparity import LABEL_PRESETS
    from pipeline.flow import DEFAULT_BACKEND, available_backends
    from pipeline.sky import available_sky_maskers

    p = subparsers.add_parser(
        "disparity",
        help="disparity, validity, uncertainty and sky of one stereo pair",
        description=(
            "Compute optical flow both ways between LEFT and RIGHT, fit the rig's vertical "
            "misalignment to it, run a stereo matcher on the rectified pair, keep the disparities "
            "that pass the left-right, consensus, depth-edge and occlusion checks, mask the sky (set "
            "to the frame's minimum disparity) and decide whether the frame would be kept. Prints "
            "the frame statistics, the rig and the rejection reason."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("left", help="left-eye image (PNG/JPEG/...)")
    p.add_argument("right", help="right-eye image, same size")
    p.add_argument("-o", "--out", required=True, metavar="OUT.npz", help="where to write the arrays and statistics")
    p.add_argument(
        "--flow",
        default=DEFAULT_BACKEND,
        metavar="NAME",
        help=f"flow backend (default {DEFAULT_BACKEND}); one of: {', '.join(available_backends())}",
    )
    p.add_argument(
        "--preset",
        default="balanced",
        choices=list(LABEL_PRESETS),
        help="labeller operating point (default balanced; see below)",
    )
    p.add_argument("--ckpt", metavar="FILE", help="local checkpoint for ptlflow:<model> backends")
    p.add_argument("--device", metavar="DEV", help="torch device for network backends (default: CUDA if present)")
    p.add_argument("--random-weights", action="store_true", help="allow a ptlflow model without weights (testing only)")
    p.add_argument("--working-width", type=int, metavar="W", help="compute flow at this width, then rescale")
    p.add_argument(
        "--sky",
        default="heuristic",
        metavar="MASKER",
        help=f"sky masker (default heuristic); one of: {', '.join(available_sky_maskers())}",
    )
    p.add_argument("--swap-eyes", action="store_true", help="the inputs' eyes are reversed: swap them first")
    p.add_argument("--preview", metavar="OUT.png", help="write image | coloured disparity | valid mask side by side")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a DisparityConfig field, e.g. --set lr_threshold_px=1.5 (repeatable)",
    )
    p.set_defaults(func=run)


def read_image(path: str) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, with a clear error for missing/unreadable files."""
    import cv2

    if not Path(path).is_file():
        raise BadInputError(path, "no such image file")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise BadInputError(path, "not a readable image", "use PNG, JPEG, TIFF, BMP or WebP")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _mask_tile(valid: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """Valid pixels white, sky blue, invalid black."""
    tile = np.zeros(valid.shape + (3,), np.uint8)
    tile[valid] = (255, 255, 255)
    tile[sky] = (80, 140, 255)
    return tile


def run(args: argparse.Namespace) -> int:
    from pipeline.atomic import atomic_path
    from pipeline.config import apply_overrides, config_from_dict, config_to_dict
    from pipeline.disparity import LABEL_PRESETS, DisparityConfig, compute_disparity, matcher_from_config
    from pipeline.flow import get_backend
    from pipeline.viz import colorize_disparity, hstack_tiles, label_tile, save_png

    left, right = read_image(args.left), read_image(args.right)
    if left.shape != right.shape:
        raise BadInputError(
            args.right,
            f"size {right.shape[1]}x{right.shape[0]} differs from the left image's {left.shape[1]}x{left.shape[0]}",
        )
    data = {
        **LABEL_PRESETS[args.preset],
        "flow": args.flow,
        "ckpt": args.ckpt,
        "device": args.device,
        "working_width": args.working_width,
        "sky": args.sky,
        "swap_eyes": args.swap_eyes,
    }
    data = apply_overrides(data, args.overrides)
    config = config_from_dict(DisparityConfig, data, where="disparity")
    extra = {"allow_random_weights": True} if args.random_weights and config.flow.startswith("ptlflow:") else {}
    backend = get_backend(
        config.flow, ckpt=config.ckpt, device=config.device, working_width=config.working_width, **extra
    )
    result = compute_disparity(left, right, config, backend=backend)
    rig = result.rig
    rig_json = (
        {}
        if rig is None
        else {
            "offset_px": rig.offset_px,
            "roll_degrees": rig.roll_degrees,
            "slope_y": rig.slope_y,
            "support": rig.support,
        }
    )

    stats = result.stats.to_dict()
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                disparity=result.disparity,
                valid=result.valid,
                uncertainty=result.uncertainty,
                sky=result.sky,
                stats=np.array(json.dumps(stats)),
                rejected_reason=np.array(result.rejected_reason or ""),
                rig=np.array(json.dumps(rig_json)),
                config=np.array(json.dumps(config_to_dict(config))),
                **{f"stat_{k}": np.float32(v) for k, v in stats.items()},
            )
    if args.preview:
        image = left if not config.swap_eyes else right
        tiles = [
            label_tile(image, "left"),
            label_tile(colorize_disparity(result.disparity, result.valid), f"disparity {config.flow}"),
            label_tile(_mask_tile(result.valid, result.sky), "valid (sky blue)"),
        ]
        save_png(args.preview, hstack_tiles(tiles))

    h, w = result.disparity.shape
    matcher = matcher_from_config(config)
    print(
        f"{args.left}: {w}x{h}, preset {args.preset}, flow {config.flow}"
        + (f" + {matcher.name}" if matcher else "")
        + (f" at width {config.working_width}" if config.working_width else "")
    )
    for k, v in stats.items():
        print(f"  {k:<24} {v:10.3f}")
    if rig is not None and rig.fitted:
        print(
            f"  {'rig (vertical)':<24} offset {rig.offset_px:+.2f} px, roll {rig.roll_degrees:+.3f} deg, "
            f"{rig.fraction_above(config.vertical_threshold_px):.0%} of the frame beyond {config.vertical_threshold_px:g} px"
        )
    ev = result.swap_evidence
    if np.isfinite(ev):
        from pipeline.swap import frame_verdict

        verdict = {"reversed": "looks reversed: try --swap-eyes", "normal": "looks normal"}.get(
            frame_verdict(ev), "undecided"
        )
        print(f"  {'swapped-eye evidence':<24} {ev:10.3f}  ({verdict}; judge a whole shot with detect_swapped_eyes)")
    if result.rejected_reason:
        print(f"REJECTED: {result.rejected_reason}")
    else:
        print("kept")
    print(f"wrote {args.out}" + (f" and {args.preview}" if args.preview else ""))
    return 0
