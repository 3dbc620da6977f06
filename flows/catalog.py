"""The movie catalog that ``build_dataset`` rebuilds from: YAML or CSV, one entry per movie.

YAML::

    defaults:                      # optional; applied to every movie unless it says otherwise
      layout: sbs-half
      overrides: ["disparity.lr_threshold_px=1.5"]
    movies:
      - path: films/avatar.mkv     # relative paths are relative to the catalog file
        movie_id: avatar           # default: the file name without extension, slugified
        split: train               # train | val | test (splits are by movie)
        layout: sbs-half           # optional: sbs-full|sbs-half|tab-full|tab-half|separate; default detect
        right: films/avatar_R.mkv  # only for layout "separate"
        overrides:                 # optional dotted IngestConfig overrides (list or mapping)
          sampling.train_fps: 2

CSV: a header row with ``path`` and any of ``movie_id, split, layout, right, overrides``
(several overrides separated by ``;``); lines starting with ``#`` are comments.

Mistakes raise :class:`~pipeline.errors.ConfigError` naming the catalog file and the line.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.errors import ConfigError
from pipeline.shards.manifest import check_movie_id
from pipeline.shards.manifest import movie_id_from_name as slugify

__all__ = ["CatalogEntry", "load_catalog", "SPLITS", "LAYOUTS", "slugify"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
LAYOUTS: tuple[str, ...] = ("sbs-full", "sbs-half", "tab-full", "tab-half", "separate")
_FIELDS = ("path", "movie_id", "split", "layout", "right", "overrides")
_SPLIT_ALIASES = {"validation": "val", "valid": "val", "training": "train", "testing": "test"}


@dataclass(frozen=True)
class CatalogEntry:
    """One movie of the catalog, with paths resolved against the catalog's folder."""

    path: str
    movie_id: str
    split: str = "train"
    layout: str | None = None
    right: str | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)
    line: int = 0  # where it was declared, for messages

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "movie_id": self.movie_id,
            "split": self.split,
            "layout": self.layout,
            "right": self.right,
            "overrides": list(self.overrides),
        }


def load_catalog(path: str | Path) -> list[CatalogEntry]:
    """Read a catalog file (``.yaml``/``.yml`` or ``.csv``) into validated entries.

    Raises:
        ConfigError: missing file, bad syntax, unknown keys, bad split/layout, duplicate ids
            (the message names the file and line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such catalog file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read catalog ({exc.strerror})") from exc
    if path.suffix.lower() == ".csv":
        raw = _read_csv(path, text)
    elif path.suffix.lower() in (".yaml", ".yml"):
        raw = _read_yaml(path, text)
    else:
        raise ConfigError(f"{path}: catalog must be .yaml, .yml or .csv")
    entries: list[CatalogEntry] = []
    seen: dict[str, int] = {}
    for line, item in raw:
        entry = _entry(path, line, item)
        if entry.movie_id in seen:
            raise ConfigError(
                f"{path}:{line}: movie_id {entry.movie_id!r} already used on line {seen[entry.movie_id]}"
                " (give each movie its own movie_id)"
            )
        seen[entry.movie_id] = line
        entries.append(entry)
    return entries


def _read_yaml(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return []
    defaults: dict[str, Any] = {}
    movies_node = node
    if isinstance(data, dict):
        unknown = set(data) - {"defaults", "movies"}
        if unknown:
            raise ConfigError(
                f"{path}: unknown top-level key(s) {sorted(unknown)}; expected 'movies' and optional 'defaults'"
            )
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise ConfigError(f"{path}: 'defaults' must be a mapping")
        movies = data.get("movies") or []
        movies_node = next((v for k, v in node.value if k.value == "movies"), None)
    else:
        movies = data
    if not isinstance(movies, list):
        raise ConfigError(f"{path}: 'movies' must be a list of entries")
    out = []
    for i, item in enumerate(movies):
        line = movies_node.value[i].start_mark.line + 1 if movies_node is not None else 0
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise ConfigError(f"{path}:{line}: each movie must be a mapping with at least 'path' (got {item!r})")
        merged = dict(defaults)
        merged.update(item)
        if "overrides" in defaults and "overrides" in item:
            merged["overrides"] = _overrides(path, line, defaults["overrides"]) + _overrides(
                path, line, item["overrides"]
            )
        out.append((line, merged))
    return out


def _read_csv(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    reader = csv.reader(io.StringIO("\n".join(ln for _, ln in lines)))
    rows = list(reader)
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header:
        raise ConfigError(f"{path}:{lines[0][0]}: CSV header must name a 'path' column (columns: {', '.join(_FIELDS)})")
    unknown = [h for h in header if h not in _FIELDS]
    if unknown:
        raise ConfigError(f"{path}:{lines[0][0]}: unknown column(s) {unknown}; valid columns: {', '.join(_FIELDS)}")
    out = []
    for (line, _), row in zip(lines[1:], rows[1:]):
        if len(row) > len(header):
            raise ConfigError(f"{path}:{line}: {len(row)} values but the header has {len(header)} columns")
        item = {h: v.strip() for h, v in zip(header, row) if v.strip() != ""}
        if "overrides" in item:
            item["overrides"] = [o.strip() for o in item["overrides"].split(";") if o.strip()]
        out.append((line, item))
    return out


def _overrides(path: Path, line: int, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [f"{k}={_scalar(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{path}:{line}: overrides must be a list of KEY=VALUE strings or a mapping")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _entry(path: Path, line: int, item: Mapping[str, Any]) -> CatalogEntry:
    where = f"{path}:{line}"
    unknown = set(item) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {', '.join(_FIELDS)}")
    movie = item.get("path")
    if not movie or not isinstance(movie, str):
        raise ConfigError(f"{where}: every movie needs a 'path'")
    base = path.parent
    movie_path = (base / movie).resolve() if not Path(movie).is_absolute() else Path(movie)
    movie_id = str(item["movie_id"]) if item.get("movie_id") is not None else slugify(Path(movie).stem)
    try:
        check_movie_id(movie_id)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    split = str(item.get("split") or "train").lower()
    split = _SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ConfigError(f"{where}: split {item.get('split')!r} is not one of {', '.join(SPLITS)}")
    layout = item.get("layout")
    if layout in ("", "auto", "detect"):
        layout = None
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"{where}: layout {layout!r} is not one of {', '.join(LAYOUTS)} (or omit it to detect)")
    right = item.get("right")
    if right:
        right = str((base / right).resolve()) if not Path(right).is_absolute() else str(right)
    if layout == "separate" and not right:
        raise ConfigError(f"{where}: layout 'separate' needs 'right' (the right-eye file)")
    overrides = _overrides(path, line, item.get("overrides"))
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"{where}: override {o!r} is not KEY=VALUE (for example disparity.lr_threshold_px=1.5)")
    return CatalogEntry(
        path=str(movie_path),
        movie_id=movie_id,
        split=split,
        layout=layout,
        right=right or None,
        overrides=tuple(overrides),
        line=line,
    )
