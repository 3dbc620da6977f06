"""NYU Depth v2, the labelled set, official 654-image test split.

Expected layout (PATH is the ``.mat`` file, or a folder holding it)::

    nyu_depth_v2_labeled.mat   # MATLAB v7.3 (HDF5): images N x 3 x W x H uint8, depths N x W x H metres
    splits.mat                 # the official split: testNdxs, 1-based indices (654 of them)

MATLAB stores arrays column-major, so HDF5 sees them transposed; they are transposed back here to
HxWx3 / HxW. The split is *not* bundled: download ``splits.mat`` from the NYU Depth v2 page and put
it next to the ``.mat``. Instead of ``splits.mat`` a text file ``nyu_test_indices.txt`` (or
``.csv``) with the 1-based indices, separated by commas or whitespace, is accepted.
An older MATLAB v5 file (``scipy.io``-readable, arrays H x W x 3 x N) also works.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.errors import BadInputError
from training.benchmarks.base import BenchmarkLoader, BenchmarkSample
from training.benchmarks.protocols import Protocol

__all__ = ["NYULoader", "read_split_indices"]

MAT_NAME = "nyu_depth_v2_labeled.mat"
SPLIT_NAMES = ("splits.mat", "nyu_test_indices.txt", "nyu_test_indices.csv")


def read_split_indices(path: str | Path) -> list[int]:
    """The 1-based test indices from ``splits.mat`` (``testNdxs``) or a text/CSV list."""
    path = Path(path)
    if path.suffix == ".mat":
        import scipy.io

        try:
            data = scipy.io.loadmat(str(path))
        except Exception as exc:  # scipy raises several types for a bad file
            raise BadInputError(path, f"not a readable MATLAB file ({exc})") from exc
        if "testNdxs" not in data:
            raise BadInputError(path, "has no 'testNdxs' array", "use the official NYU Depth v2 splits.mat")
        return [int(i) for i in np.asarray(data["testNdxs"]).ravel()]
    text = path.read_text(encoding="utf-8")
    tokens = [t for t in re.split(r"[\s,;]+", text) if t]
    try:
        return [int(t) for t in tokens]
    except ValueError as exc:
        raise BadInputError(path, f"expected 1-based integer indices ({exc})") from exc


class NYULoader(BenchmarkLoader):
    """NYUv2 labelled test images with their (filled-in) depth in metres."""

    PROTOCOL = Protocol("nyu", "NYU", "delta_1.25", depth_cap=10.0, max_gt_depth=10.0)

    def __init__(self, path: str | Path, split_file: str | Path | None = None):
        super().__init__(path)
        folder = self.path if self.path.is_dir() else self.path.parent
        self.mat_path = self.path / MAT_NAME if self.path.is_dir() else self.path
        if not self.mat_path.is_file():
            raise BadInputError(self.mat_path, "NYU labelled .mat not found", f"expected {MAT_NAME} in the folder")
        if split_file is None:
            found = [folder / n for n in SPLIT_NAMES if (folder / n).is_file()]
            if not found:
                raise BadInputError(
                    folder,
                    "no NYU test split found",
                    f"put the official splits.mat (testNdxs) next to {self.mat_path.name}, "
                    "or a nyu_test_indices.txt of 1-based indices",
                )
            split_file = found[0]
        self.split_file = Path(split_file)
        indices = read_split_indices(self.split_file)
        self._images, self._depths, self._close = _open_arrays(self.mat_path)
        n = self._images.shape[0]
        bad = [i for i in indices if not 1 <= i <= n]
        if bad:
            raise BadInputError(self.split_file, f"indices {bad[:5]} outside 1..{n}")
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[BenchmarkSample]:
        for i in self.indices:
            image = np.ascontiguousarray(np.asarray(self._images[i - 1]).transpose(2, 1, 0)).astype(np.uint8)
            depth = np.ascontiguousarray(np.asarray(self._depths[i - 1]).T).astype(np.float32)
            valid = np.isfinite(depth) & (depth > 0)
            yield BenchmarkSample(f"{i:04d}", image, depth=depth, valid=valid)


def _open_arrays(path: Path):
    """(images N x 3 x W x H, depths N x W x H, closer) from a v7.3 or v5 .mat file."""
    import h5py

    if h5py.is_hdf5(str(path)):
        fh = h5py.File(str(path), "r")
        if "images" not in fh or "depths" not in fh:
            fh.close()
            raise BadInputError(path, "has no 'images'/'depths' datasets", "is this nyu_depth_v2_labeled.mat?")
        return fh["images"], fh["depths"], fh.close
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path), variable_names=["images", "depths"])
    except Exception as exc:
        raise BadInputError(path, f"neither HDF5 (MATLAB v7.3) nor a readable MATLAB file ({exc})") from exc
    if "images" not in data or "depths" not in data:
        raise BadInputError(path, "has no 'images'/'depths' arrays", "is this nyu_depth_v2_labeled.mat?")
    # v5 keeps MATLAB's H x W x 3 x N; bring it to the HDF5 view N x 3 x W x H
    images = np.asarray(data["images"]).transpose(3, 2, 1, 0)
    depths = np.asarray(data["depths"]).transpose(2, 1, 0)
    return images, depths, lambda: None
