"""Zero-shot benchmarks: the protocol of each (metric, cap, input size) and a loader per format.

``open_benchmark("kitti", "/data/kitti")`` returns a loader that yields
:class:`BenchmarkSample` objects; ``get_protocol("kitti")`` says how to score them. Both registries
are keyed by the same names (``diw``, ``eth3d``, ``sintel``, ``kitti``, ``nyu``, ``tum``,
``movies``); an unknown name lists the valid ones. Each format's expected folder layout is
documented in its module (``training/benchmarks/<name>.py``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError
from training.benchmarks.base import BenchmarkLoader, BenchmarkSample, read_png_uint16, read_rgb
from training.benchmarks.diw import DIWLoader
from training.benchmarks.eth3d import ETH3DLoader
from training.benchmarks.kitti import KITTILoader
from training.benchmarks.movies import MoviesLoader
from training.benchmarks.nyu import NYULoader
from training.benchmarks.protocols import PROTOCOLS, Protocol, get_protocol, inference_size
from training.benchmarks.sintel import SintelLoader
from training.benchmarks.tum import TUMLoader

__all__ = [
    "BenchmarkLoader",
    "BenchmarkSample",
    "Protocol",
    "PROTOCOLS",
    "LOADERS",
    "get_protocol",
    "get_loader",
    "open_benchmark",
    "inference_size",
    "read_rgb",
    "read_png_uint16",
]

#: loader class per benchmark name (same keys as PROTOCOLS)
LOADERS: dict[str, type[BenchmarkLoader]] = {
    cls.NAME: cls for cls in (DIWLoader, ETH3DLoader, SintelLoader, KITTILoader, NYULoader, TUMLoader, MoviesLoader)
}


def get_loader(name: str) -> type[BenchmarkLoader]:
    """The loader class registered as ``name`` (case-insensitive)."""
    key = name.strip().lower()
    if key not in LOADERS:
        raise ConfigError(f"unknown benchmark {name!r}; valid names: {', '.join(LOADERS)}")
    return LOADERS[key]


def open_benchmark(name: str, path: str | Path, **options) -> BenchmarkLoader:
    """Index the benchmark ``name`` at ``path`` (raises BadInputError on a wrong layout)."""
    return get_loader(name)(path, **options)
