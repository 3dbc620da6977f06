"""Disparity backends on real stereo with ground truth: Middlebury's motorcycle pair (skimage).

Run: ``python bench/bench_disparity.py [--repeat 3] [--scales 1.0 0.5] [--ptlflow raft --ckpt FILE]``.

For each flow backend (and a few refinement variants) and each scale of the pair, prints:

* kept: fraction of ground-truth pixels the checks keep (``DisparityResult.valid``),
* bad2: fraction of kept pixels off by more than 2 px,
* epe_kept / epe_all: mean absolute disparity error over kept pixels / over all pixels with truth
  (the ground truth has no vertical component, so this is the horizontal end-point error),
* ms_per_mpx: flow time for both directions per megapixel (best of ``--repeat``),

and the ratios of bad2 and time against the baseline, the default backend ``dis-medium``,
measured in the same run. The issue's floor for the default: kept >= 0.80, bad2 <= 0.05.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from bench.timing import best_of
from pipeline.disparity import DisparityConfig, disparity_from_flow
from pipeline.flow import DEFAULT_BACKEND, get_backend
from pipeline.flow.opencv import DisBackend

VARIANTS = {
    # name: (backend factory, DisparityConfig overrides)
    "dis-medium": (lambda: get_backend("dis-medium"), {}),
    "dis-medium, no edge check": (lambda: get_backend("dis-medium"), {"edge_threshold_px": None}),
    "dis-medium + variational x10": (
        lambda: DisBackend("medium", finest_scale=0, patch_size=6, patch_stride=2, variational_iterations=10),
        {},
    ),
    "dis-medium (OpenCV preset)": (lambda: DisBackend("medium"), {}),
    "dis-fast": (lambda: get_backend("dis-fast"), {}),
    "dis-ultrafast": (lambda: get_backend("dis-ultrafast"), {}),
    "deepflow": (lambda: get_backend("deepflow"), {}),
    "sgbm": (lambda: get_backend("sgbm"), {}),
    "dis-medium+sgbm": (lambda: get_backend("dis-medium+sgbm"), {}),
}


def scaled_pair(scale: float):
    from skimage.data import stereo_motorcycle

    left, right, gt = stereo_motorcycle()
    gt = gt.astype(np.float32)
    if scale == 1.0:
        return left, right, gt
    h, w = gt.shape
    sw, sh = round(w * scale), round(h * scale)
    known = np.isfinite(gt)
    g = cv2.resize(np.where(known, gt, 0), (sw, sh), interpolation=cv2.INTER_NEAREST) * (sw / w)
    k = cv2.resize(known.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST).astype(bool)
    g[~k] = np.inf
    area = cv2.INTER_AREA
    return cv2.resize(left, (sw, sh), interpolation=area), cv2.resize(right, (sw, sh), interpolation=area), g


def measure(backend, overrides: dict, left, right, gt, repeat: int) -> dict:
    backend.compute([left], [right])  # warm-up: lazy engines, caches
    best = best_of(lambda: backend.compute([left], [right]), repeat)
    (pair,) = backend.compute([left], [right])
    res = disparity_from_flow(pair, DisparityConfig(sky="none", **overrides))
    has = np.isfinite(gt)
    kept = res.valid & has
    err = np.abs(res.disparity - gt)
    return {
        "kept": kept.sum() / has.sum(),
        "bad2": float((err[kept] > 2.0).mean()) if kept.any() else float("nan"),
        "epe_kept": float(err[kept].mean()) if kept.any() else float("nan"),
        "epe_all": float(err[has].mean()),
        "ms_per_mpx": 1000.0 * best / (gt.size / 1e6),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5])
    ap.add_argument(
        "--ptlflow", metavar="MODEL", help="also run ptlflow:MODEL (needs --ckpt, or --random-weights for timing)"
    )
    ap.add_argument("--ckpt", metavar="FILE")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="OpenCV threads (default 2)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)
    variants = dict(VARIANTS)
    if args.ptlflow:
        extra = {"allow_random_weights": True} if args.random_weights else {}
        variants[f"ptlflow:{args.ptlflow}"] = (
            lambda: get_backend(f"ptlflow:{args.ptlflow}", ckpt=args.ckpt, **extra),
            {},
        )

    print(f"Middlebury motorcycle, cv2 threads={args.threads}, best of {args.repeat}; baseline = {DEFAULT_BACKEND}")
    for scale in args.scales:
        left, right, gt = scaled_pair(scale)
        h, w = gt.shape
        print(f"\n{w}x{h} (scale {scale}):")
        print(
            f"  {'backend':<30} {'kept':>6} {'bad2':>6} {'epe_kept':>8} {'epe_all':>8} {'ms/Mpx':>8}  {'bad2 x':>7} {'time x':>7}"
        )
        rows = {name: measure(make(), ov, left, right, gt, args.repeat) for name, (make, ov) in variants.items()}
        base = rows["dis-medium"]
        for name, r in rows.items():
            print(
                f"  {name:<30} {r['kept']:6.3f} {r['bad2']:6.3f} {r['epe_kept']:8.2f} {r['epe_all']:8.2f} "
                f"{r['ms_per_mpx']:8.0f}  {r['bad2'] / base['bad2']:7.2f} {r['ms_per_mpx'] / base['ms_per_mpx']:7.2f}"
            )
        ok = base["kept"] >= 0.80 and base["bad2"] <= 0.05
        print(f"  floor for the default (kept >= 0.80, bad2 <= 0.05): {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
