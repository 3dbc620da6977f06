"""One registry for every plug-in point: flow backends, sky maskers, encoders, dataset kinds, benchmarks.

Each plug-in point used to keep its own dict with its own special cases; they now share this class, so
they all work the same way::

    BACKENDS = Registry("flow backend")

    @BACKENDS.register("sgbm")                 # a plain name
    class SgbmBackend(FlowBackend): ...

    BACKENDS.register_prefix("ptlflow", PtlflowBackend, argument="<model>")   # a family: ptlflow:raft

    BACKENDS.create("ptlflow:raft", ckpt="raft.ckpt")   # PtlflowBackend("raft", ckpt="raft.ckpt")
    BACKENDS.names()                                     # [..., "sgbm", "ptlflow:<model>"]

A name that is not registered is a :class:`~pipeline.errors.ConfigError` that lists the valid names, so a
typo in a YAML file or on the command line is one line that says what would have worked. The registry is a
read-only mapping of its plain names to their factories (``"sgbm" in BACKENDS``, ``BACKENDS["sgbm"]``).
Registration happens where the plug-ins are defined, at import, and changes nothing outside the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from pipeline.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Mapping[str, Callable[..., T]], Generic[T]):
    """Named factories of one kind of plug-in, plus ``prefix:argument`` families.

    Args:
        kind: what the names name, for messages ("flow backend", "sky masker", "encoder").
        case_sensitive: ``False`` folds names to lower case on registration and lookup (benchmarks).
    """

    def __init__(self, kind: str, *, case_sensitive: bool = True):
        self.kind = kind
        self._case_sensitive = case_sensitive
        self._plain: dict[str, Callable[..., T]] = {}
        self._prefixes: dict[str, tuple[Callable[..., T], str]] = {}

    def _key(self, name: str) -> str:
        return name if self._case_sensitive else name.lower()

    # -- registration --------------------------------------------------------------------
    def register(self, name: str, factory: F | None = None) -> Any:
        """Register ``factory(**options)`` under ``name``; without ``factory``, a decorator.

        Raises:
            ValueError: the name is taken (two plug-ins would silently shadow each other).
        """

        def add(fn: F) -> F:
            key = self._key(name)
            if key in self._plain:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._plain[key] = fn
            return fn

        return add(factory) if factory is not None else add

    def register_prefix(self, prefix: str, factory: F | None = None, *, argument: str = "<name>") -> Any:
        """Register ``factory(argument, **options)`` for the names ``prefix:argument``; without
        ``factory``, a decorator. ``argument`` is how :meth:`names` shows the family."""

        def add(fn: F) -> F:
            key = self._key(prefix)
            if key in self._prefixes:
                raise ValueError(f"{self.kind} family {prefix!r}: registered twice")
            self._prefixes[key] = (fn, argument)
            return fn

        return add(factory) if factory is not None else add

    # -- lookup --------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Plain names (sorted, in their registered spelling) then the families as ``prefix:<argument>``."""
        return sorted(self._plain) + [f"{p}:{arg}" for p, (_, arg) in sorted(self._prefixes.items())]

    def is_family(self, name: str) -> bool:
        """Whether ``name`` is ``prefix:argument`` of a registered family (argument non-empty)."""
        prefix, sep, arg = name.partition(":")
        return bool(sep and arg) and self._key(prefix) in self._prefixes

    def create(self, name: str, **options: Any) -> T:
        """Build the plug-in called ``name`` with ``options``.

        Raises:
            ConfigError: an unknown name; the message lists :meth:`names`.
        """
        if self.is_family(name):
            prefix, _, arg = name.partition(":")
            factory, _ = self._prefixes[self._key(prefix)]
            return factory(arg, **options)
        if name not in self:
            raise self.unknown(name)
        return self[name](**options)

    def unknown(self, name: str) -> ConfigError:
        """The error for a name that is not registered (lists the valid names)."""
        return ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")

    # -- Mapping over the plain names ----------------------------------------------------
    def __getitem__(self, name: str) -> Callable[..., T]:
        return self._plain[self._key(name)]  # KeyError, as a Mapping must (``create`` says ConfigError)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._plain

    def __iter__(self) -> Iterator[str]:
        return iter(self._plain)

    def __len__(self) -> int:
        return len(self._plain)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
