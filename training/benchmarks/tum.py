"""TUM RGB-D: Kinect sequences, depth PNG in units of 1/5000 m (0 = invalid), paired by timestamp.

Expected layout (PATH is one sequence folder, or a folder of sequence folders)::

    <sequence>/rgb/<timestamp>.png
    <sequence>/depth/<timestamp>.png
    <sequence>/associations.txt   # "t_rgb rgb/<t>.png t_depth depth/<t>.png" per line, or, without it,
    <sequence>/rgb.txt, depth.txt # the dataset's own lists, associated here by nearest timestamp
                                  # (at most 0.02 s apart, as TUM's associate.py does)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.errors import BadInputError
from training.benchmarks.base import BenchmarkLoader, BenchmarkSample, read_png_uint16, read_rgb
from training.benchmarks.protocols import Protocol

__all__ = ["TUMLoader", "associate", "DEPTH_FACTOR"]

DEPTH_FACTOR = 5000.0
MAX_DIFFERENCE_S = 0.02


def _read_timestamps(path: Path) -> list[tuple[float, str]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            rows.append((float(parts[0]), parts[1]))
        except (ValueError, IndexError) as exc:
            raise BadInputError(path, f"line {n}: expected '<timestamp> <file>', got {line!r}") from exc
    return rows


def associate(rgb: list[tuple[float, str]], depth: list[tuple[float, str]], max_difference: float = MAX_DIFFERENCE_S):
    """Pairs ``(rgb_file, depth_file)`` matched greedily by closest timestamps, each used once."""
    candidates = sorted(
        (abs(tr - td), i, j)
        for i, (tr, _) in enumerate(rgb)
        for j, (td, _) in enumerate(depth)
        if abs(tr - td) < max_difference
    )
    used_r, used_d, pairs = set(), set(), []
    for _, i, j in candidates:
        if i in used_r or j in used_d:
            continue
        used_r.add(i)
        used_d.add(j)
        pairs.append((rgb[i][0], rgb[i][1], depth[j][1]))
    return [(r, d) for _, r, d in sorted(pairs)]


class TUMLoader(BenchmarkLoader):
    PROTOCOL = Protocol("tum", "TUM", "delta_1.25", depth_cap=10.0, max_gt_depth=10.0)

    def __init__(self, path: str | Path):
        super().__init__(path)
        seqs = [self.path] if _is_sequence(self.path) else sorted(p for p in self.path.iterdir() if _is_sequence(p))
        if not seqs:
            raise BadInputError(self.path, "no TUM sequence found", "expected associations.txt or rgb.txt + depth.txt")
        self.pairs: list[tuple[Path, Path]] = []
        for seq in seqs:
            self.pairs += [(seq / r, seq / d) for r, d in _sequence_pairs(seq)]
        if not self.pairs:
            raise BadInputError(self.path, "no RGB/depth pairs within 0.02 s of each other")

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[BenchmarkSample]:
        for img_path, depth_path in self.pairs:
            image = read_rgb(img_path)
            raw = read_png_uint16(depth_path)
            if raw.shape != image.shape[:2]:
                raise BadInputError(depth_path, f"depth is {raw.shape[::-1]}, image is {image.shape[1::-1]}")
            depth = raw.astype(np.float32) / DEPTH_FACTOR
            yield BenchmarkSample(f"{img_path.parents[1].name}/{img_path.name}", image, depth=depth, valid=raw > 0)


def _is_sequence(folder: Path) -> bool:
    return folder.is_dir() and (
        (folder / "associations.txt").is_file() or ((folder / "rgb.txt").is_file() and (folder / "depth.txt").is_file())
    )


def _sequence_pairs(seq: Path) -> list[tuple[str, str]]:
    assoc = seq / "associations.txt"
    if assoc.is_file():
        pairs = []
        for n, line in enumerate(assoc.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 4:
                raise BadInputError(assoc, f"line {n}: expected 't_rgb rgb_file t_depth depth_file', got {line!r}")
            # either order is common; the depth file is the one under depth/
            a, b = parts[1], parts[3]
            pairs.append((b, a) if a.startswith("depth") else (a, b))
        return pairs
    return associate(_read_timestamps(seq / "rgb.txt"), _read_timestamps(seq / "depth.txt"))
