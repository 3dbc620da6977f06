"""Optical-flow backends behind one interface and a registry by name.

Usage::

    from pipeline.flow import get_backend
    backend = get_backend("dis-medium", working_width=940)
    pairs = backend.compute([left], [right])     # list[FlowPair(lr, rl)]

Names: ``dis-medium`` (the CPU default), ``dis-fine`` (denser patches, for the flow alone), ``dis-fast``, ``dis-ultrafast``, ``deepflow``, ``sgbm``
(rectified footage only: no vertical flow), ``dis-medium+sgbm`` (SGBM's horizontal disparity
inside DIS flow, see :mod:`pipeline.flow.fusion`) and ``ptlflow:<model>`` (any ptlflow network, with
``ckpt=FILE``). :func:`available_backends` lists them. They live in :data:`BACKENDS`, a
:class:`pipeline.registry.Registry` like every other plug-in point; new backends register a factory with
:func:`register_backend` (plain names) or :func:`register_prefix` (``prefix:argument`` names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pipeline.errors import ConfigError
from pipeline.flow.base import FlowBackend, FlowPair, disparity_to_flow, flow_to_disparity, resize_flow
from pipeline.flow.fusion import FusedBackend
from pipeline.flow.opencv import DeepFlowBackend, DisBackend
from pipeline.flow.ptlflow_backend import PtlflowBackend
from pipeline.flow.sgbm import SgbmBackend
from pipeline.registry import Registry

__all__ = [
    "FlowBackend",
    "FlowPair",
    "FusedBackend",
    "flow_to_disparity",
    "disparity_to_flow",
    "resize_flow",
    "get_backend",
    "BACKENDS",
    "available_backends",
    "register_backend",
    "register_prefix",
    "DEFAULT_BACKEND",
]

DEFAULT_BACKEND = "dis-medium"

#: every flow backend by name (:class:`pipeline.registry.Registry`); ``ptlflow:<model>`` is a family
BACKENDS: Registry[FlowBackend] = Registry("flow backend")


def register_backend(name: str, factory: Callable[..., FlowBackend]) -> None:
    """Register ``factory(**kw) -> FlowBackend`` under a plain name."""
    BACKENDS.register(name, factory)


def register_prefix(prefix: str, factory: Callable[..., FlowBackend]) -> None:
    """Register ``factory(argument, ckpt=..., device=..., **kw)`` for names ``prefix:argument``."""
    BACKENDS.register_prefix(prefix, factory, argument="<model>")


def available_backends() -> list[str]:
    """Registered names; prefixed families show as ``prefix:<model>``."""
    return BACKENDS.names()


def get_backend(name: str, ckpt: str | Path | None = None, device: str | None = None, **kw: Any) -> FlowBackend:
    """Build a backend by name. Cheap: engines and networks are built on first use.

    Args:
        name: a name from :func:`available_backends`, e.g. ``dis-medium`` or ``ptlflow:raft``.
        ckpt: local checkpoint file (ptlflow backends only).
        device: torch device for network backends (``None`` picks CUDA when present).
        **kw: backend options, e.g. ``working_width=940``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones), or a checkpoint given to
            a backend that takes none, or a network that needs a checkpoint and got none.
    """
    if BACKENDS.is_family(name):
        return BACKENDS.create(name, ckpt=ckpt, device=device, **kw)
    if name in BACKENDS and ckpt is not None:
        raise ConfigError(f"flow backend {name!r} takes no checkpoint (--ckpt is for ptlflow:<model>)")
    return BACKENDS.create(name, **kw)


# The CPU default: DIS medium refined down to full resolution (see pipeline.flow.opencv), patches
# every 3 px. As the flow of the consensus labeller it gives the same labels as every 2 px
# ("dis-fine") for two thirds of the time; alone, "dis-fine" is a little more accurate.
register_backend(
    "dis-medium",
    lambda **kw: DisBackend(**{"preset": "medium", "finest_scale": 0, "patch_size": 6, "patch_stride": 3, **kw}),
)
register_backend(
    "dis-fine",
    lambda **kw: DisBackend(**{"preset": "medium", "finest_scale": 0, "patch_size": 6, "patch_stride": 2, **kw}),
)
register_backend("dis-fast", lambda **kw: DisBackend(**{"preset": "fast", "finest_scale": 1, **kw}))
register_backend("dis-ultrafast", lambda **kw: DisBackend(**{"preset": "ultrafast", **kw}))
register_backend("deepflow", DeepFlowBackend)
register_backend("sgbm", SgbmBackend)
register_backend(
    "dis-medium+sgbm",
    lambda working_width=None, **kw: FusedBackend(
        BACKENDS["dis-medium"](**kw), SgbmBackend(), working_width=working_width
    ),
)
register_prefix(
    "ptlflow",
    lambda model_name, ckpt=None, device=None, **kw: PtlflowBackend(model_name, ckpt=ckpt, device=device, **kw),
)
