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
from typing import Any, Callable, Mapping

from pipeline.config import config_from_dict
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
    "backend_options",
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


def backend_options(name: str, options: Mapping[str, Any] | None, where: str = "flow options") -> dict[str, Any]:
    """``options`` checked against backend ``name``'s options dataclass, as keyword arguments.

    Only the keys given are returned (the named backend keeps its own values for the others).
    An unknown key, a wrong type or a bad value is a :class:`ConfigError` naming ``where`` and
    listing the valid keys; a backend with no options dataclass takes none.
    """
    if not options:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: expected a mapping of option: value, got {options!r}")
    cls = _backend_class(name)
    if cls is None or cls.options_type is None:
        raise ConfigError(f"{where}: flow backend {name!r} takes no options (got {sorted(options)})")
    typed = config_from_dict(cls.options_type, dict(options), f"{where} ({name})")
    return {k: getattr(typed, k) for k in options}


def _backend_class(name: str) -> type[FlowBackend] | None:
    """The class backend ``name`` builds (constructors are cheap: nothing loads until used)."""
    if BACKENDS.is_family(name):
        return PtlflowBackend if name.startswith("ptlflow:") else None
    factory = BACKENDS[name]
    if isinstance(factory, type):
        return factory
    return type(factory())


def get_backend(
    name: str,
    ckpt: str | Path | None = None,
    device: str | None = None,
    options: Mapping[str, Any] | None = None,
    **kw: Any,
) -> FlowBackend:
    """Build a backend by name. Cheap: engines and networks are built on first use.

    Args:
        name: a name from :func:`available_backends`, e.g. ``dis-medium`` or ``ptlflow:raft``.
        ckpt: local checkpoint file (ptlflow backends only).
        device: torch device for network backends (``None`` picks CUDA when present).
        options: the user's options for this backend (:func:`backend_options` checks them).
        **kw: backend arguments from code, e.g. ``working_width=940``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones), or a checkpoint given to
            a backend that takes none, or a network that needs a checkpoint and got none.
    """
    kw.update(backend_options(name, options))
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
