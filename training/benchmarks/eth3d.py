"""ETH3D high-resolution multi-view (DSLR) images with ground-truth depth.

Expected layout (PATH is the folder that holds the scenes, or one scene)::

    <scene>/images/dslr_images/DSC_0001.JPG
    <scene>/ground_truth_depth/dslr_images/DSC_0001.JPG   # raw float32, no header, H*W values

The depth file has the image's name (ETH3D keeps the ``.JPG`` suffix) and holds row-major
little-endian float32 depth in metres for every image pixel; ``inf`` (or <= 0) marks pixels without
ground truth. A depth file whose size is not ``4 * H * W`` bytes is rejected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.errors import BadInputError
from training.benchmarks.base import BenchmarkLoader, BenchmarkSample, read_rgb
from training.benchmarks.protocols import Protocol

__all__ = ["ETH3DLoader", "read_eth3d_depth"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def read_eth3d_depth(path: str | Path, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth float32 metres, valid bool) from an ETH3D raw float32 depth file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "ground-truth depth file is missing")
    size = path.stat().st_size
    if size != 4 * height * width:
        raise BadInputError(path, f"{size} bytes, expected {4 * height * width} (float32 x {width} x {height})")
    depth = np.fromfile(path, dtype="<f4").reshape(height, width)
    valid = np.isfinite(depth) & (depth > 0)
    return depth, valid


class ETH3DLoader(BenchmarkLoader):
    PROTOCOL = Protocol("eth3d", "ETH3D", "abs_rel", depth_cap=72.0, max_gt_depth=72.0)

    def __init__(self, path: str | Path):
        super().__init__(path)
        scenes = (
            [self.path] if (self.path / "images").is_dir() else sorted(p for p in self.path.iterdir() if p.is_dir())
        )
        self.pairs: list[tuple[Path, Path]] = []
        for scene in scenes:
            img_dir = scene / "images" / "dslr_images"
            if not img_dir.is_dir():
                continue
            for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                self.pairs.append((img, scene / "ground_truth_depth" / "dslr_images" / img.name))
        if not self.pairs:
            raise BadInputError(
                self.path,
                "no ETH3D images found",
                "expected <scene>/images/dslr_images/* and <scene>/ground_truth_depth/dslr_images/*",
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[BenchmarkSample]:
        for img_path, depth_path in self.pairs:
            image = read_rgb(img_path)
            depth, valid = read_eth3d_depth(depth_path, *image.shape[:2])
            sid = f"{img_path.parents[2].name}/{img_path.name}"
            yield BenchmarkSample(sid, image, depth=depth, valid=valid)
