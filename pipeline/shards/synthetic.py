"""Synthetic frame records with exact labels, for tests and benchmarks of the shard store.

:func:`make_frame_record` renders one frame with :mod:`pipeline.synthetic` (truth disparity, sky and
an edge-based validity) and returns it as the writer's input dict, so shard writers, readers,
loaders and their benchmarks can run on realistic images without decoding or labelling a movie.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.synthetic import render_stereo_frame

__all__ = ["make_frame_record", "frame_stats"]


def frame_stats(disparity: np.ndarray, valid: np.ndarray, sky: np.ndarray) -> dict[str, float]:
    """The ten per-frame statistics of the schema, computed from the arrays (a stand-in for the labeller's)."""
    d = disparity[valid & np.isfinite(disparity)]
    if d.size == 0:
        d = np.zeros(1, np.float32)
    p05, p50, p95 = np.percentile(d, [5, 50, 95])
    stats = {
        "valid_fraction": float(valid.mean()),
        "lr_pass_fraction": float(valid.mean()),
        "vertical_fail_fraction": 0.0,
        "disparity_min": float(d.min()),
        "disparity_max": float(d.max()),
        "disparity_p05": float(p05),
        "disparity_p50": float(p50),
        "disparity_p95": float(p95),
        "disparity_range_px": float(p95 - p05),
        "sky_fraction": float(sky.mean()),
    }
    return stats


def _render(width: int, height: int, t: float, seed: int, shot: int):
    f = render_stereo_frame(width, height, t, seed, shot=shot, letterbox=False, shot_duration_s=4.0)
    return f.left, f.right, f.disparity, f.sky


def make_frame_record(
    movie_id: str,
    frame: int,
    size: tuple[int, int] = (96, 64),
    seed: int = 0,
    split: str = "train",
    with_right: bool = False,
) -> dict:
    """One realistic frame record: rendered at twice ``size`` plus a border, cropped, downsized.

    Frames 0-3 are shot 0, 4-7 shot 1, ...; the disparity label is the renderer's truth in pixels
    of the stored image (halved with the image).
    """
    width, height = size
    pad = 4
    src_w, src_h = 2 * width + 2 * pad, 2 * height + 2 * pad
    shot, k = divmod(frame, 4)
    t = 0.25 * k
    left, right, disp, sky = _render(src_w, src_h, t, seed, shot)
    crop = (slice(pad, pad + 2 * height), slice(pad, pad + 2 * width))
    image = cv2.resize(left[crop], (width, height), interpolation=cv2.INTER_AREA)
    right_image = cv2.resize(right[crop], (width, height), interpolation=cv2.INTER_AREA)
    disparity = cv2.resize(disp[crop], (width, height), interpolation=cv2.INTER_NEAREST) * 0.5
    sky_s = cv2.resize(sky[crop].astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    gy, gx = np.gradient(np.nan_to_num(disparity))
    edge = np.hypot(gx, gy)
    valid = np.isfinite(disparity) & (edge < 0.75)  # occlusion boundaries fail the LR check
    return {
        "movie_id": movie_id,
        "shot_id": shot,
        "frame_index": shot * 96 + 6 * k,
        "pts_seconds": (shot * 96 + 6 * k) / 24.0,
        "split": split,
        "image": image,
        "disparity": disparity.astype(np.float32),
        "valid": valid,
        "sky": sky_s,
        "uncertainty": edge.astype(np.float32),
        "right_image": right_image if with_right else None,
        "crop_x": pad,
        "crop_y": pad,
        "crop_w": 2 * width,
        "crop_h": 2 * height,
        "source_width": src_w,
        "source_height": src_h,
        "stats": frame_stats(disparity, valid, sky_s),
        "provenance": {
            "flow_backend": "synthetic-truth",
            "ingest_key": "0" * 16,
            "source_fingerprint": f"synthetic:{movie_id}:{seed}",
            "project_version": "test",
        },
    }
