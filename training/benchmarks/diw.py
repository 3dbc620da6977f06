"""Depth in the Wild (DIW): one ordinal point pair per image, scored by WHDR.

Expected layout (PATH is the annotation CSV, or a folder with ``DIW_Annotations/DIW_test.csv``
or ``DIW_test.csv``). The CSV alternates two lines per image::

    ./DIW_test/0a1b2c.thumb            # image path, relative to the CSV's folder or its parent
    157,134,223,184,>,500,375          # yA, xA, yB, xB, relation[, width, height]

Coordinates are 1-based (the release was made with Lua/Torch) and converted to 0-based here. The
relation is the depth order of A with respect to B: ``<`` means A is closer (smaller depth), ``>``
means A is farther. When the trailing width and height are present they must match the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pipeline.errors import BadInputError
from training.benchmarks.base import BenchmarkLoader, BenchmarkSample, read_rgb
from training.benchmarks.protocols import Protocol

__all__ = ["DIWLoader", "parse_diw_csv"]

CSV_CANDIDATES = ("DIW_Annotations/DIW_test.csv", "DIW_test.csv")


def parse_diw_csv(path: str | Path) -> list[tuple[Path, tuple[int, int, int, int, str], tuple[int, int] | None]]:
    """``(image path, (yA, xA, yB, xB, relation) 0-based, (width, height) or None)`` per image."""
    path = Path(path)
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) % 2:
        raise BadInputError(path, f"{len(lines)} non-blank lines; expected pairs of (image path, annotation)")
    out = []
    for k in range(0, len(lines), 2):
        n = k + 2
        fields = [f.strip() for f in lines[k + 1].split(",")]
        if len(fields) not in (5, 7) or fields[4] not in ("<", ">", "="):
            raise BadInputError(path, f"line {n}: expected 'yA,xA,yB,xB,<|>[,width,height]', got {lines[k + 1]!r}")
        try:
            ya, xa, yb, xb = (int(float(v)) - 1 for v in fields[:4])
            size = (int(fields[5]), int(fields[6])) if len(fields) == 7 else None
        except ValueError as exc:
            raise BadInputError(path, f"line {n}: non-numeric coordinate in {lines[k + 1]!r}") from exc
        out.append((_resolve(path, lines[k]), (ya, xa, yb, xb, fields[4]), size))
    return out


def _resolve(csv_path: Path, name: str) -> Path:
    for base in (csv_path.parent, csv_path.parent.parent):
        p = (base / name).resolve()
        if p.is_file():
            return p
    return csv_path.parent / name  # reported as missing when read


class DIWLoader(BenchmarkLoader):
    PROTOCOL = Protocol("diw", "DIW", "whdr", ground_truth="ordinal")

    def __init__(self, path: str | Path):
        super().__init__(path)
        csv = self.path
        if self.path.is_dir():
            found = [self.path / c for c in CSV_CANDIDATES if (self.path / c).is_file()]
            if not found:
                raise BadInputError(self.path, "no DIW_test.csv found", "pass the CSV itself or its dataset folder")
            csv = found[0]
        self.csv_path = csv
        self.entries = parse_diw_csv(csv)
        if not self.entries:
            raise BadInputError(csv, "no annotations")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[BenchmarkSample]:
        for img_path, pair, size in self.entries:
            image = read_rgb(img_path)
            h, w = image.shape[:2]
            if size is not None and size != (w, h):
                raise BadInputError(
                    self.csv_path, f"{img_path.name} is {w}x{h}, the annotation says {size[0]}x{size[1]}"
                )
            ya, xa, yb, xb, _ = pair
            if not (0 <= ya < h and 0 <= yb < h and 0 <= xa < w and 0 <= xb < w):
                raise BadInputError(self.csv_path, f"{img_path.name}: point pair {pair} outside the {w}x{h} image")
            yield BenchmarkSample(img_path.name, image, point_pairs=[pair])
