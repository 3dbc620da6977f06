"""The held-out 3D-movie test split, read straight from the project's Parquet shards.

PATH is anything :func:`pipeline.shards.iter_samples` accepts (a dataset folder, its
``manifest.json``, one shard, an fsspec URI). Only the ``test`` split is read; its ground truth is
the mined disparity, known up to scale and shift, with the valid mask of the left-right check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from training.benchmarks.base import BenchmarkLoader, BenchmarkSample
from training.benchmarks.protocols import Protocol

__all__ = ["MoviesLoader", "MoviesTemporalLoader"]

COLUMNS = ["image", "disparity", "valid", "movie_id", "frame_index"]


def _get(sample: Any, key: str, default: Any = None) -> Any:
    if isinstance(sample, Mapping):
        return sample.get(key, default)
    return getattr(sample, key, default)


class MoviesLoader(BenchmarkLoader):
    PROTOCOL = Protocol("movies", "Movies", "rmse_unit_disparity", ground_truth="disparity")

    def __init__(self, path: str | Path, split: str = "test"):
        # fsspec URIs (s3://...) do not exist locally: only check plain paths
        if "://" in str(path):
            self.path = path  # type: ignore[assignment]
        else:
            super().__init__(path)
        self.split = split

    def __iter__(self) -> Iterator[BenchmarkSample]:
        from pipeline.shards import iter_samples

        for n, s in enumerate(iter_samples(self.path, split=self.split, columns=[*COLUMNS, "clip_reason"])):
            if _get(s, "clip_reason"):
                continue  # a clips-mode frame stored without a label
            movie = _get(s, "movie_id", "movie")
            frame = _get(s, "frame_index", n)
            valid = _get(s, "valid")
            yield BenchmarkSample(
                f"{movie}/{int(frame):06d}",
                np.asarray(_get(s, "image")),
                disparity=np.asarray(_get(s, "disparity"), np.float32),
                valid=None if valid is None else np.asarray(valid, bool),
            )


class MoviesTemporalLoader(MoviesLoader):
    """The test split of a clips-mode dataset, clip by clip (:func:`pipeline.shards.iter_clips`):
    yields the stacked clip dicts (images, disparity, valid, temporal flow and its mask), which
    :func:`training.evaluation.evaluate` scores with the temporal error."""

    PROTOCOL = Protocol("movies_temporal", "Movies (temporal)", "temporal_error", ground_truth="disparity", clips=True)

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        from pipeline.shards import iter_clips

        yield from iter_clips(self.path, None, split=self.split, columns=("image", "disparity", "valid"))

    def has_clips(self) -> bool:
        """Whether the dataset's test split was ingested in clips mode."""
        from pipeline.shards import list_shards
        from pipeline.shards.clips import is_clip_dataset

        shards = list_shards(self.path, split=self.split)
        return bool(shards) and is_clip_dataset(shards[0])
