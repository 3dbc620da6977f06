"""OpenCV optical-flow backends: DIS (three presets) and DeepFlow.

DIS (Kroeger et al., "Fast Optical Flow using Dense Inverse Search", ECCV 2016) is the CPU
default: on the Middlebury motorcycle pair the ``dis-medium`` settings below (medium preset run
down to the finest pyramid level, 6 px patches every 2 px) keep ~88% of the pixels with ground
truth after the left-right check, and the checks of :mod:`pipeline.disparity` leave under 5% of
the kept pixels off by more than 2 px (see ``bench/bench_disparity.py``). OpenCV's own presets stop
one or two pyramid levels early, which smears depth edges: on the same pair the plain medium
preset leaves 9% bad pixels, the plain fast preset 17%. ``dis-fast`` therefore refines one level
further than OpenCV's fast preset (9% bad, ~3x faster than ``dis-medium``); ``dis-ultrafast`` is
OpenCV's preset unchanged, for previews.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from pipeline.errors import ConfigError
from pipeline.flow.base import FlowBackend, FlowPair, to_gray

__all__ = ["DisBackend", "DisOptions", "DeepFlowBackend"]

_MIN_SIDE = 32  # smaller images are padded for DIS

_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass
class DisOptions:
    """What a user may tune of a ``dis-*`` backend (``--set disparity.flow_options.patch_stride=2``).

    ``None`` keeps the named backend's value (``dis-medium``: finest scale 0, 6 px patches every
    3 px), else the OpenCV preset's.

    Attributes:
        finest_scale: finest pyramid level DIS refines to (0 = full resolution; ``None`` keeps the
            preset's, which is 1 or 2 levels coarser and smears depth edges).
        patch_size, patch_stride: patch geometry.
        variational_iterations: variational refinement iterations after each level. Measured on
            Middlebury: more iterations smooth the field and neither raise the kept fraction nor
            lower the bad pixels; kept configurable.
    """

    finest_scale: int | None = None
    patch_size: int | None = None
    patch_stride: int | None = None
    variational_iterations: int | None = None

    def __post_init__(self) -> None:
        for name in ("finest_scale", "variational_iterations"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"DIS option {name} must be >= 0, got {value}")
        if self.patch_size is not None and self.patch_size < 2:
            raise ConfigError(f"DIS option patch_size must be >= 2, got {self.patch_size}")
        if self.patch_stride is not None and not 1 <= self.patch_stride <= (self.patch_size or self.patch_stride):
            raise ConfigError(f"DIS option patch_stride must be between 1 and the patch size, got {self.patch_stride}")


class DisBackend(FlowBackend):
    """OpenCV DIS optical flow on gray images, both directions.

    Args:
        preset: ``ultrafast``, ``fast`` or ``medium`` (OpenCV's presets, then overridden by the options).
        working_width: see :class:`FlowBackend`.
        **options: the fields of :class:`DisOptions` (checked there), held as :attr:`options`.
    """

    name = "dis"
    options_type = DisOptions

    def __init__(self, preset: str = "medium", working_width: int | None = None, **options: Any):
        super().__init__(working_width)
        if preset not in _PRESETS:
            raise ConfigError(f"unknown DIS preset {preset!r}; valid: {sorted(_PRESETS)}")
        self.preset = preset
        self.options = DisOptions(**options)
        self.name = f"dis-{preset}"

    def _engine(self, width: int, height: int) -> cv2.DISOpticalFlow:
        # One engine per image size: OpenCV's DIS clamps its finest scale to the pyramid depth of
        # the first small image it sees and keeps the clamped value, which silently changes the
        # results of every later, larger image. A fresh engine per size keeps results reproducible.
        cache = getattr(self, "_impl_dis", None)
        if cache is None:
            cache = self._impl_dis = {}
        engine = cache.get((width, height))
        if engine is None:
            engine = cv2.DISOpticalFlow_create(_PRESETS[self.preset])
            o = self.options
            if o.finest_scale is not None:
                engine.setFinestScale(o.finest_scale)
            if o.patch_size is not None:
                engine.setPatchSize(o.patch_size)
            if o.patch_stride is not None:
                engine.setPatchStride(o.patch_stride)
            if o.variational_iterations is not None:
                engine.setVariationalRefinementIterations(o.variational_iterations)
            if len(cache) >= 8:
                cache.clear()
            cache[(width, height)] = engine
        return engine

    def compute_flow(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> list[FlowPair]:
        out = []
        for left, right in zip(lefts, rights):
            gl, gr = to_gray(left), to_gray(right)
            h, w = gl.shape
            # DIS refuses images smaller than a few patches: pad (edge replication), then crop
            ph, pw = max(0, _MIN_SIDE - h), max(0, _MIN_SIDE - w)
            if ph or pw:
                gl = cv2.copyMakeBorder(gl, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
                gr = cv2.copyMakeBorder(gr, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
            engine = self._engine(gl.shape[1], gl.shape[0])
            lr, rl = engine.calc(gl, gr, None), engine.calc(gr, gl, None)
            out.append(FlowPair(np.ascontiguousarray(lr[:h, :w]), np.ascontiguousarray(rl[:h, :w])))
        return out


class DeepFlowBackend(FlowBackend):
    """DeepFlow (Weinzaepfel et al., ICCV 2013) from ``cv2.optflow``: slower than DIS, denser.

    On Middlebury it keeps more pixels than DIS but more of the kept ones are off by > 2 px.
    """

    name = "deepflow"

    def compute_flow(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> list[FlowPair]:
        engine = getattr(self, "_impl_deepflow", None)
        if engine is None:
            engine = self._impl_deepflow = cv2.optflow.createOptFlow_DeepFlow()
        out = []
        for left, right in zip(lefts, rights):
            gl, gr = to_gray(left), to_gray(right)
            out.append(FlowPair(engine.calc(gl, gr, None), engine.calc(gr, gl, None)))
        return out
