"""Typed configuration: small dataclasses per component, mapped from dicts/YAML/CLI in one place.

Every component keeps its own ``@dataclass`` config next to its code (``DisparityConfig`` in
:mod:`pipeline.disparity`, ``SamplingConfig`` in :mod:`pipeline.sampling`, ...). This module holds
the generic machinery: dataclass <-> dict, dotted overrides (``disparity.flow=dis-fast``), and a
stable hash of the resolved configuration that is stored with every shard and checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, Mapping, TypeVar

import yaml

from pipeline.errors import ConfigError

__all__ = [
    "config_to_dict",
    "merge_dicts",
    "config_from_dict",
    "config_hash",
    "apply_overrides",
    "parse_override_value",
    "load_yaml",
]

T = TypeVar("T")


def config_to_dict(cfg: Any) -> Any:
    """Recursively turn dataclasses (and tuples/Paths) into JSON-able plain values."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, (str, int, float, bool)) or cfg is None:
        return cfg
    return str(cfg)


def config_hash(cfg: Any, length: int = 16) -> str:
    """A stable hex digest of a configuration (dataclass or dict), independent of key order."""
    blob = json.dumps(config_to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return config_from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for a in args:
            try:
                return _coerce(a, value, where)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        seq = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if tp is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: {value!r} is not a boolean")
    if tp in (int, float, str) and not isinstance(value, tp):
        try:
            return tp(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {value!r} is not a valid {tp.__name__}") from exc
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a (possibly nested) mapping; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def parse_override_value(raw: str, where: str = "override") -> Any:
    """Parse the value of a ``KEY=VALUE`` override as a plain YAML value (scalar, list or mapping).

    Tags (``!!python/object``, ``!!binary``, ``!custom``, even ``!!str``) are refused: a command-line
    value is data, and a tag is either a mistake or an attempt to build objects. Malformed YAML
    (``[1,``) is a :class:`ConfigError` in one line, not a parser traceback.
    """
    try:
        for token in yaml.scan(raw, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.TagToken):
                raise ConfigError(f"{where}: YAML tags are not allowed in a value ({raw!r}); write the plain value")
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: value {raw!r} is not valid YAML ({problem})") from None


def _index(node: list, part: str, item: str) -> int:
    """A list position from an override path element (``datasets.0.path``)."""
    try:
        i = int(part)
    except ValueError:
        raise ConfigError(f"override {item!r}: {part!r} is not a list index (the value there is a list)") from None
    if not -len(node) <= i < len(node):
        raise ConfigError(f"override {item!r}: index {i} is out of range (the list has {len(node)} entries)")
    return i


def merge_dicts(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` laid over ``defaults``, section by section (lists and values replace).

    Overrides then apply to the full configuration, so ``--set`` reaches every value, list
    entries of the defaults included, whether or not a file mentions it.
    """
    out = dict(defaults)
    for k, v in given.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings to a nested dict, in place; values are parsed as YAML.

    A path element that meets a list is an index into it (``data.datasets.0.path=x``, ``-1`` for
    the last entry), so every value of a configuration is reachable. Missing sections are created
    (``config_from_dict`` then refuses keys the dataclasses do not have); malformed values and YAML
    tags are a :class:`ConfigError` naming the override.
    """
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, for example optim.lr=1e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not key.strip() or any(p.strip() == "" for p in parts):
            raise ConfigError(f"override {item!r}: the key is empty or has an empty part")
        value = parse_override_value(raw, f"override {key.strip()!r}")
        node: Any = data
        for p in parts[:-1]:
            if isinstance(node, list):
                node = node[_index(node, p, item)]
            elif isinstance(node, dict):
                if node.get(p) is None:
                    node[p] = {}
                node = node[p]
            else:
                raise ConfigError(f"override {item!r}: {p!r} is inside a value, not a section")
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {item!r}: {p!r} is not a section (it holds {node!r})")
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, item)] = value
        else:
            node[last] = value
    return data


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping with a clear error for missing or malformed files."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data
