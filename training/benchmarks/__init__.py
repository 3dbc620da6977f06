"""Zero-shot benchmarks: the protocol of each (metric, cap, input size) and a loader per format.

``open_benchmark("kitti", "/data/kitti")`` returns a loader that yields
:class:`BenchmarkSample` objects; ``get_protocol("kitti")`` says how to score them: each loader
class carries its protocol (``PROTOCOL``), so there is one registry, :data:`LOADERS`, keyed by the
names (``diw``, ``eth3d``, ``sintel``, ``kitti``, ``nyu``, ``tum``,
``movies``, ``movies_temporal``); an unknown name lists the valid ones. Each format's expected folder layout is
documented in its module (``training/benchmarks/<name>.py``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.registry import Registry
from training.benchmarks.base import BenchmarkLoader, BenchmarkSample, read_png_uint16, read_rgb
from training.benchmarks.diw import DIWLoader
from training.benchmarks.eth3d import ETH3DLoader
from training.benchmarks.kitti import KITTILoader
from training.benchmarks.movies import MoviesLoader, MoviesTemporalLoader
from training.benchmarks.nyu import NYULoader
from training.benchmarks.protocols import Protocol, inference_size
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

#: loader class per benchmark name, case-insensitive (:class:`pipeline.registry.Registry`), in
#: the paper's column order, then the project's own movie test split
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

#: the protocol of every registered benchmark, by name (read from the loaders; a view, not a registry)
PROTOCOLS: dict[str, Protocol] = {name: LOADERS[name].PROTOCOL for name in LOADERS}


def get_protocol(name: str, **overrides) -> Protocol:
    """The protocol of benchmark ``name`` (case-insensitive), optionally with fields replaced."""
    proto = get_loader(name).PROTOCOL
    return dataclasses.replace(proto, **overrides) if overrides else proto


def get_loader(name: str) -> type[BenchmarkLoader]:
    """The loader class registered as ``name`` (case-insensitive)."""
    key = name.strip()
    if key not in LOADERS:
        raise LOADERS.unknown(name)
    return LOADERS[key]


def open_benchmark(name: str, path: str | Path, **options) -> BenchmarkLoader:
    """Index the benchmark ``name`` at ``path`` (raises BadInputError on a wrong layout)."""
    return get_loader(name)(path, **options)
