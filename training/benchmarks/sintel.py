"""MPI Sintel: rendered frames with ground-truth depth in ``.dpt`` files.

Expected layout (PATH is the Sintel root, its ``training/`` folder, or a folder with these)::

    final/<scene>/frame_0001.png      # ("clean/" is used when "final/" is absent)
    depth/<scene>/frame_0001.dpt

A ``.dpt`` file is: float32 tag 202021.25, int32 width, int32 height, then width*height float32
depths, row-major, little-endian (the format of Sintel's ``sdk/python/sintel_io.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.errors import BadInputError
from training.benchmarks.base import BenchmarkLoader, BenchmarkSample, read_rgb
from training.benchmarks.protocols import Protocol

__all__ = ["SintelLoader", "read_dpt", "write_dpt", "DPT_TAG"]

DPT_TAG = 202021.25


def read_dpt(path: str | Path) -> np.ndarray:
    """The HxW float32 depth of a Sintel ``.dpt`` file; a wrong tag or size raises BadInputError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInputError(path, "depth file is missing") from exc
    if len(raw) < 12:
        raise BadInputError(path, "too short for a .dpt header")
    tag = np.frombuffer(raw, "<f4", 1, 0)[0]
    width, height = (int(v) for v in np.frombuffer(raw, "<i4", 2, 4))
    if tag != np.float32(DPT_TAG):
        raise BadInputError(path, f"bad .dpt tag {tag!r}, expected {DPT_TAG} (wrong endianness or not a .dpt)")
    if width <= 0 or height <= 0 or len(raw) != 12 + 4 * width * height:
        raise BadInputError(path, f"header says {width}x{height} but the file holds {len(raw) - 12} data bytes")
    return np.frombuffer(raw, "<f4", width * height, 12).reshape(height, width).copy()


def write_dpt(path: str | Path, depth: np.ndarray) -> Path:
    """Write a ``.dpt`` file (for tests and for converting data into this format)."""
    depth = np.asarray(depth, "<f4")
    h, w = depth.shape
    with open(path, "wb") as fh:
        fh.write(np.array([DPT_TAG], "<f4").tobytes())
        fh.write(np.array([w, h], "<i4").tobytes())
        fh.write(depth.tobytes())
    return Path(path)


class SintelLoader(BenchmarkLoader):
    PROTOCOL = Protocol("sintel", "Sintel", "abs_rel", depth_cap=72.0, max_gt_depth=72.0)

    def __init__(self, path: str | Path, pass_name: str | None = None):
        super().__init__(path)
        root = self.path / "training" if (self.path / "training" / "depth").is_dir() else self.path
        depth_root = root / "depth"
        if not depth_root.is_dir():
            raise BadInputError(root, "no depth/ folder", "expected final/<scene>/*.png and depth/<scene>/*.dpt")
        if pass_name is None:
            pass_name = "final" if (root / "final").is_dir() else "clean"
        img_root = root / pass_name
        if not img_root.is_dir():
            raise BadInputError(img_root, "image folder is missing", "expected final/ or clean/ next to depth/")
        self.pairs = []
        for dpt in sorted(depth_root.glob("*/*.dpt")):
            img = img_root / dpt.parent.name / (dpt.stem + ".png")
            if not img.is_file():
                raise BadInputError(img, f"image for {dpt.parent.name}/{dpt.name} is missing")
            self.pairs.append((img, dpt))
        if not self.pairs:
            raise BadInputError(depth_root, "no .dpt files under depth/<scene>/")

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[BenchmarkSample]:
        for img_path, dpt_path in self.pairs:
            image = read_rgb(img_path)
            depth = read_dpt(dpt_path)
            if depth.shape != image.shape[:2]:
                raise BadInputError(dpt_path, f"depth is {depth.shape[::-1]}, image is {image.shape[1::-1]}")
            valid = np.isfinite(depth) & (depth > 0)
            yield BenchmarkSample(f"{img_path.parent.name}/{img_path.stem}", image, depth=depth, valid=valid)
