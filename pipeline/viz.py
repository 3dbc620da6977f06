"""Pictures people look at: coloured disparity, side-by-side previews, contact sheets.

One place for colour maps and tiling so that the disparity preview, the dataset contact sheet, the
shot contact sheet and ``predict`` previews all look alike. Images are HxWx3 uint8 RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pipeline.atomic import write_bytes_atomic

__all__ = [
    "colorize_disparity",
    "colorize_mask",
    "label_tile",
    "hstack_tiles",
    "grid",
    "save_png",
]


def colorize_disparity(
    disparity: np.ndarray,
    valid: np.ndarray | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    invalid_color: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Map disparity (near = large) to the Turbo colour map; invalid pixels get ``invalid_color``.

    The range defaults to the 2nd-98th percentile of valid pixels, so one outlier does not wash
    out the picture.
    """
    d = np.asarray(disparity, dtype=np.float32)
    ok = np.isfinite(d) if valid is None else (np.asarray(valid, bool) & np.isfinite(d))
    if ok.any():
        lo = float(np.percentile(d[ok], 2)) if vmin is None else vmin
        hi = float(np.percentile(d[ok], 98)) if vmax is None else vmax
    else:
        lo, hi = 0.0, 1.0
    scale = 255.0 / max(hi - lo, 1e-6)
    u8 = np.clip((np.nan_to_num(d) - lo) * scale, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    rgb[~ok] = invalid_color
    return rgb


def colorize_mask(mask: np.ndarray, color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A bool mask as an RGB tile: ``color`` where True, black elsewhere."""
    m = np.asarray(mask, bool)
    out = np.zeros(m.shape + (3,), np.uint8)
    out[m] = color
    return out


def label_tile(image: np.ndarray, text: str) -> np.ndarray:
    """Write a short caption in the top-left corner, legible on any background."""
    out = np.ascontiguousarray(image.copy())
    scale = max(0.35, min(out.shape[1] / 640.0, 1.0) * 0.6)
    org = (6, int(18 * scale / 0.6))
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _to_rgb(tile: np.ndarray) -> np.ndarray:
    if tile.ndim == 2:
        if tile.dtype == bool:
            return colorize_mask(tile)
        return np.repeat(tile[..., None], 3, axis=2).astype(np.uint8)
    return tile.astype(np.uint8)


def hstack_tiles(tiles: Sequence[np.ndarray], height: int | None = None, gap: int = 4) -> np.ndarray:
    """Resize tiles to a common height and place them left to right with a small gap."""
    tiles = [_to_rgb(t) for t in tiles]
    h = height or max(t.shape[0] for t in tiles)
    resized = [
        cv2.resize(t, (max(1, round(t.shape[1] * h / t.shape[0])), h), interpolation=cv2.INTER_AREA)
        if t.shape[0] != h
        else t
        for t in tiles
    ]
    pieces: list[np.ndarray] = []
    for i, t in enumerate(resized):
        if i:
            pieces.append(np.full((h, gap, 3), 32, np.uint8))
        pieces.append(t)
    return np.concatenate(pieces, axis=1)


def grid(rows: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Stack row images top to bottom, padding narrower rows on the right."""
    rows = [_to_rgb(r) for r in rows]
    w = max(r.shape[1] for r in rows)
    out: list[np.ndarray] = []
    for i, r in enumerate(rows):
        if i:
            out.append(np.full((gap, w, 3), 32, np.uint8))
        if r.shape[1] < w:
            r = np.concatenate([r, np.full((r.shape[0], w - r.shape[1], 3), 32, np.uint8)], axis=1)
        out.append(r)
    return np.concatenate(out, axis=0)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB (or gray/uint16) image as PNG atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = image
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError(f"could not encode PNG for {path}")
    return write_bytes_atomic(path, buf.tobytes())
