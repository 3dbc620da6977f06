"""The loader interface every benchmark format implements, and small file readers they share.

A loader is built from the local path a user gives (``--dataset kitti:/data/kitti``); its
constructor only *indexes* the files (so a wrong path fails at once with a clear error), and
iterating reads one :class:`BenchmarkSample` at a time (so a 6048x4032 ETH3D set never sits in
memory at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import cv2
import numpy as np

from pipeline.errors import BadInputError
from training.benchmarks.protocols import Protocol

__all__ = ["BenchmarkSample", "BenchmarkLoader", "read_rgb", "read_png_uint16", "require_path"]


@dataclass
class BenchmarkSample:
    """One test image with its ground truth.

    Attributes:
        sample_id: a stable name for per-image reports (a relative file name, an index).
        image: HxWx3 uint8 RGB.
        depth: HxW float32 ground-truth depth (metres, or up to scale), for ``depth`` benchmarks.
        disparity: HxW float32 ground-truth disparity up to scale and shift (movies).
        valid: HxW bool, the pixels with ground truth.
        point_pairs: ordinal pairs ``(yA, xA, yB, xB, relation)``, 0-based, for DIW
            (see :func:`training.metrics.whdr`).
    """

    sample_id: str
    image: np.ndarray
    depth: np.ndarray | None = None
    disparity: np.ndarray | None = None
    valid: np.ndarray | None = None
    point_pairs: list[tuple[int, int, int, int, str]] | None = None


class BenchmarkLoader:
    """Base class: one benchmark format read from a local path.

    Subclasses set ``PROTOCOL`` (how the benchmark is scored; its name is the registry key,
    ``NAME``) and implement
    :meth:`__iter__` (and ``__len__`` when the count is known up front). The constructor must
    raise :class:`~pipeline.errors.BadInputError` naming the file when the layout is wrong.
    """

    PROTOCOL: ClassVar[Protocol]
    NAME: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "PROTOCOL" in cls.__dict__:
            cls.NAME = cls.PROTOCOL.name

    def __init__(self, path: str | Path):
        self.path = require_path(path, f"{self.NAME} benchmark")

    def __iter__(self) -> Iterator[BenchmarkSample]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - overridden where known
        raise TypeError(f"{type(self).__name__} does not know its length up front")


def require_path(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or a BadInputError when it does not exist."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInputError(p, f"no such file or folder for the {what}", "check the path after NAME:")
    return p


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB; unreadable files raise BadInputError.

    EXIF orientation is ignored: ground truth is registered to the pixels as stored.
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise BadInputError(path, "missing or not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_png_uint16(path: str | Path) -> np.ndarray:
    """A single-channel 16-bit PNG as uint16; anything else raises BadInputError."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BadInputError(path, "missing or not a readable PNG")
    if img.dtype != np.uint16 or img.ndim != 2:
        raise BadInputError(path, f"expected a single-channel 16-bit depth PNG, got {img.dtype} with shape {img.shape}")
    return img
