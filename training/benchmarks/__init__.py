"""Zero-shot benchmarks: the protocol of each (metric, cap, input size) and a loader per format.

``open_benchmark("kitti", "/data/kitti")`` returns a loader that yields
:class:`BenchmarkSample` objects; ``get_protocol("kitti")`` says how to score them. Both registries
are keyed by the same names (``diw``, ``eth3d``, ``sintel``, ``kitti``, ``nyu``, ``tum``,
``movies``, ``movies_temporal``); an unknown name lists the valid ones. Each format's expected folder layout is
documented in its module (``training/benchmarks/<name>.py``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.registry import Registry
from training.benchmarks.base import BenchmarkLoader, BenchmarkSample, read_png_uint16, read_rgb
from training.benchmarks.diw import DIWLoader
from training.benchmarks.eth3d import ETH3DLoader
from training.benchmarks.kitti import KITTILoader
from training.benchmarks.movies import MoviesLoader, MoviesTemporalLoader
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

#: loader class per benchmark name, case-insensitive (:class:`pipeline.registry.Registry`; same names as PROTOCOLS)
LOADERS: Registry[BenchmarkLoader] = Registry("benchmark", case_sensitive=False)
for _cls in (
    DIWLoader,
    ETH3DLoader,
    SintelLoader,
    KITTILoader,
    NYULoader,
    TUMLoader,
    MoviesLoader,
    MoviesTemporalLoader,
):
    LOADERS.register(_cls.NAME, _cls)
del _cls


def get_loader(name: str) -> type[BenchmarkLoader]:
    """The loader class registered as ``name`` (case-insensitive)."""
    key = name.strip()
    if key not in LOADERS:
        raise LOADERS.unknown(name)
    return LOADERS[key]


def open_benchmark(name: str, path: str | Path, **options) -> BenchmarkLoader:
    """Index the benchmark ``name`` at ``path`` (raises BadInputError on a wrong layout)."""
    return get_loader(name)(path, **options)
