"""KITTI depth: RGB images with projected LiDAR depth as 16-bit PNG (metres = value / 256, 0 = invalid).

Expected layout (PATH is a list file, or a folder with ``files.txt``)::

    files.txt           # one pair per line: <image path> <depth png path>, relative to this file
    ...                 # (the Eigen test split of 697 images is the usual choice)

or the depth-completion benchmark's ``val_selection_cropped`` folder (no list needed)::

    image/*.png
    groundtruth_depth/*.png   # names equal the image's with "image" -> "groundtruth_depth"

Lines starting with ``#`` and blank lines are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.errors import BadInputError
from training.benchmarks.base import BenchmarkLoader, BenchmarkSample, read_png_uint16, read_rgb
from training.benchmarks.protocols import Protocol

__all__ = ["KITTILoader", "read_kitti_depth"]


def read_kitti_depth(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(depth in metres float32, valid bool) from a KITTI depth PNG."""
    raw = read_png_uint16(path)
    return raw.astype(np.float32) / 256.0, raw > 0


class KITTILoader(BenchmarkLoader):
    PROTOCOL = Protocol("kitti", "KITTI", "delta_1.25", depth_cap=80.0, max_gt_depth=80.0, size_rule="shorter")

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.pairs = self._index()
        if not self.pairs:
            raise BadInputError(self.path, "no KITTI image/depth pairs found", "see the expected layout in --help")

    def _index(self) -> list[tuple[Path, Path]]:
        if self.path.is_file():
            return _read_list(self.path)
        if (self.path / "files.txt").is_file():
            return _read_list(self.path / "files.txt")
        gt_dir, img_dir = self.path / "groundtruth_depth", self.path / "image"
        if gt_dir.is_dir() and img_dir.is_dir():
            pairs = []
            for gt in sorted(gt_dir.glob("*.png")):
                img = img_dir / gt.name.replace("groundtruth_depth", "image")
                if not img.is_file():
                    raise BadInputError(img, f"image for {gt.name} is missing")
                pairs.append((img, gt))
            return pairs
        raise BadInputError(
            self.path, "not a KITTI list file or folder", "expected files.txt or image/ + groundtruth_depth/"
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[BenchmarkSample]:
        for img_path, depth_path in self.pairs:
            image = read_rgb(img_path)
            depth, valid = read_kitti_depth(depth_path)
            if depth.shape != image.shape[:2]:
                raise BadInputError(
                    depth_path, f"depth is {depth.shape[::-1]}, image {img_path.name} is {image.shape[1::-1]}"
                )
            yield BenchmarkSample(img_path.name, image, depth=depth, valid=valid)


def _read_list(list_file: Path) -> list[tuple[Path, Path]]:
    base = list_file.parent
    pairs = []
    for n, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise BadInputError(list_file, f"line {n}: expected '<image> <depth png>', got {line!r}")
        img, depth = base / parts[0], base / parts[1]
        for p in (img, depth):
            if not p.is_file():
                raise BadInputError(p, f"listed on line {n} of {list_file.name} but missing")
        pairs.append((img, depth))
    return pairs
