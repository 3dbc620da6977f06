"""Cheap change detection for rebuilds: is a catalog movie's published version still current?

A rebuild of 1,000 unchanged movies must not probe and fingerprint 1,000 files (about a second
each on network storage) only to find every one committed already. At commit, the ingest records
in the movie's ``movie.json`` (:func:`recorded_source`) the ``stat`` of its files (size and
``mtime_ns`` of the movie and the right-eye file) and their ``content`` fingerprint (size and the
first and last MiB: :func:`pipeline.ingest.source_fingerprint` without the mtime), both taken only
when the files still have the fingerprint the labels were made from, and a hash of the requested
settings (:func:`settings_hash`: the resolved ingest configuration from flow, checkpoint, device and
overrides, the requested layout, the split and the project version). The dataset index
(:class:`pipeline.shards.MovieRef`) carries them, so :func:`check_unchanged` decides from
``manifest.json`` alone:

1. settings hash differs (or none was recorded) -> changed;
2. the files' stat equals the recorded one -> unchanged (no byte of the movie is read);
3. otherwise the content fingerprint; the same (a ``touch``, a copy that kept the bytes) ->
   unchanged, and the new stat is recorded in ``DATASET/.stat/<movie_id>.json`` (a published
   ``movie.json`` is immutable) so the next rebuild is cheap again; another -> changed.

``source_fingerprint`` itself holds the mtime (so ``depthmine ingest`` of a touched file still
labels it again under a new key); a rebuild does not relabel a touched file whose bytes are the
same. A file that cannot be stat'ed is "changed": the ingest then reports it as the run's error for
that movie (an unreachable movie is never a removal). :class:`RebuildCheck` is what
``flows.build.build_dataset`` calls: one per run, it reads the published index once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from pipeline.atomic import write_json_atomic
from pipeline.config import config_hash, config_to_dict
from pipeline.errors import DepthmineError
from pipeline.shards.manifest import MANIFEST_NAME, DatasetManifest, MovieManifest, MovieRef, absolute_location

if TYPE_CHECKING:
    from pipeline.ingest import LabelSettings

__all__ = [
    "STAT_DIR",
    "source_stat",
    "content_fingerprint",
    "recorded_source",
    "settings_hash",
    "Verdict",
    "check_unchanged",
    "RebuildCheck",
]

#: Hidden folder of stats re-recorded after a touch (``<movie_id>.json``); never part of a version.
STAT_DIR = ".stat"
_MIB = 1 << 20


def source_stat(movie: str | os.PathLike, right: str | os.PathLike | None = None) -> dict[str, list[int]]:
    """``{"movie": [size, mtime_ns], "right": [...]}`` (``right`` only for separate eyes).

    Raises:
        OSError: a file cannot be stat'ed (missing, unreachable mount).
    """
    out = {"movie": _stat(movie)}
    if right:
        out["right"] = _stat(right)
    return out


def _stat(path: str | os.PathLike) -> list[int]:
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def content_fingerprint(movie: str | os.PathLike, right: str | os.PathLike | None = None) -> str:
    """The files' identity without their mtime: size and the first and last MiB (as in
    :func:`pipeline.ingest.source_fingerprint`), so a ``touch`` does not change it.

    Raises:
        OSError: a file cannot be read.
    """
    h = hashlib.sha256()
    for p in (movie, right):
        if not p:
            continue
        size = os.stat(p).st_size
        h.update(f"{size}:".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(_MIB))
            if size > 2 * _MIB:
                fh.seek(-_MIB, os.SEEK_END)
                h.update(fh.read(_MIB))
    return h.hexdigest()[:24]


def recorded_source(movie: str | os.PathLike, right: str | os.PathLike | None, fingerprint: str) -> dict[str, Any]:
    """``{"stat": ..., "content": ...}`` to record at commit, or ``{}`` when the files no longer have
    ``fingerprint``.

    The labels were made from the files as fingerprinted at the probe; a file replaced during a
    long ingest must not have its new stat recorded next to the old labels (the next rebuild
    would then call it unchanged). So the stat is taken, the fingerprints computed again, and the
    record kept only if the fingerprint is the same and the stat did not move meanwhile.
    """
    from pipeline.ingest import source_fingerprint

    try:
        before = source_stat(movie, right)
        content = content_fingerprint(movie, right)
        same = source_fingerprint(movie, right) == fingerprint
        if same and source_stat(movie, right) == before:
            return {"stat": before, "content": content}
    except OSError:
        pass
    return {}


def settings_hash(config: Any, layout: str | None, split: str) -> str:
    """A hash of the requested ingest settings of a movie.

    ``config`` is the resolved :class:`pipeline.ingest.IngestConfig` (flow, checkpoint and device are
    its ``disparity`` fields; overrides are applied), so two spellings of one configuration agree;
    ``layout`` is the requested layout (None: detected), ``split`` the catalog's split;
    :data:`pipeline.ingest.LABELS_VERSION` is included, so an upgrade that changes rows relabels
    (and one that does not, does not).
    """
    from pipeline.ingest import LABELS_VERSION

    value = {
        "config": config_to_dict(config),
        "layout": str(layout) if layout else None,
        "split": str(split),
        "version": LABELS_VERSION,
    }
    return config_hash(value, length=32)


@dataclass(frozen=True)
class Verdict:
    """What :func:`check_unchanged` found: ``unchanged`` and why, and whether a fingerprint was computed."""

    unchanged: bool
    reason: str
    fingerprinted: bool = False

    def __bool__(self) -> bool:
        return self.unchanged


def _cache_path(dataset: str | os.PathLike, movie_id: str) -> Path:
    return Path(dataset) / STAT_DIR / f"{movie_id}.json"


def _cached_stat(dataset: str | os.PathLike, ref: MovieRef) -> Any:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(_cache_path(dataset, ref.movie_id).read_text(encoding="utf-8"))
        if data.get("key") == ref.key and data.get("content") == ref.source.get("content"):
            return data.get("stat")
    return None


def check_unchanged(
    dataset: str | os.PathLike,
    ref: MovieRef | None,
    movie: str | os.PathLike,
    right: str | os.PathLike | None,
    settings: str,
) -> Verdict:
    """Is the published movie ``ref`` still what an ingest of ``movie`` (``right``) with ``settings`` makes?

    See the module's docstring for the order of the checks. Reads no movie byte when the stat
    matches; when only the stat moved and the fingerprint did not, records the new stat in
    ``DATASET/.stat/<movie_id>.json``.
    """
    if ref is None:
        return Verdict(False, "new")
    recorded = ref.source.get("settings")
    if not recorded:
        return Verdict(False, "no settings recorded")
    if recorded != settings:
        return Verdict(False, "settings changed")
    movie = absolute_location(movie)
    right = absolute_location(right) if right else None
    try:
        now = source_stat(movie, right)
    except OSError:
        return Verdict(False, "unreachable")
    if now == ref.source.get("stat") or now == _cached_stat(dataset, ref):
        return Verdict(True, "same size and mtime")
    if not ref.source.get("content"):
        return Verdict(False, "no content fingerprint recorded")
    try:
        content = content_fingerprint(movie, right)
    except OSError:
        return Verdict(False, "unreadable", fingerprinted=True)
    if content != ref.source["content"]:
        return Verdict(False, "content changed", fingerprinted=True)
    with contextlib.suppress(OSError):  # only a cache: without it the next rebuild fingerprints again
        write_json_atomic(_cache_path(dataset, ref.movie_id), {"key": ref.key, "content": content, "stat": now})
    return Verdict(True, "touched, same content", fingerprinted=True)


class RebuildCheck:
    """A rebuild's change detection: the published index read once, settings hashed once per
    distinct set of overrides; ``labelling`` is the run's (:class:`pipeline.ingest.LabelSettings`).

    ``build_dataset`` asks :meth:`unchanged` for each catalog entry before ingesting it (an
    unchanged movie keeps its published entry and is not ingested), then :meth:`publishes` whether
    the version it would publish differs from the current one.
    """

    def __init__(self, dataset: str | os.PathLike, labelling: LabelSettings | None = None):
        from pipeline.ingest import LabelSettings
        from pipeline.shards.manifest import read_manifest

        self.dataset = absolute_location(dataset)
        self.labelling = labelling or LabelSettings()
        self.current: DatasetManifest | None = (
            read_manifest(self.dataset) if (Path(self.dataset) / MANIFEST_NAME).exists() else None
        )
        self._configs: dict[LabelSettings, Any] = {}
        self._settings: dict[tuple[Any, ...], str] = {}
        self.verdicts: dict[str, Verdict] = {}

    def settings(self, split: str, layout: str | None, overrides: Sequence[str] = ()) -> str:
        """The settings hash of a catalog entry: the run's labelling with the entry's own ``overrides``."""
        labelling = self.labelling.with_overrides(overrides)
        if labelling not in self._configs:
            self._configs[labelling] = labelling.config()
        cached = (labelling, split, layout)
        if cached not in self._settings:
            self._settings[cached] = settings_hash(self._configs[labelling], layout, split)
        return self._settings[cached]

    def unchanged(
        self,
        movie_id: str,
        path: str,
        split: str,
        layout: str | None = None,
        right: str | None = None,
        overrides: Sequence[str] = (),
    ) -> MovieRef | None:
        """The published entry to keep for this catalog entry, or ``None`` when it must be ingested."""
        ref = self.current.refs.get(movie_id) if self.current is not None else None
        verdict = check_unchanged(self.dataset, ref, path, right, self.settings(split, layout, overrides))
        self.verdicts[movie_id] = verdict
        return ref if verdict else None

    def result(self, ref: MovieRef, seconds: float = 0.0) -> dict[str, Any]:
        """The build summary's row for a movie kept unchanged (:meth:`pipeline.movie_job.MovieResult.committed`).

        An index entry written before the labelled-row count was recorded has its ``movie.json``
        read for it, and only when it lists rejected frames (without any, the rows are the kept
        frames in either sampling mode).
        """
        from pipeline.movie_job import MovieResult

        if ref.labelled_rows is None and ref.rejected_reasons and self.current is not None:
            with contextlib.suppress(DepthmineError, OSError):  # unreadable: the row says its rows
                ref = dataclasses.replace(ref, labelled_rows=self.current.movies[ref.movie_id].labelled_rows)
        return MovieResult.committed(ref, seconds).to_dict()

    def publishes(self, movies: Iterable[MovieManifest | MovieRef], catalog_ids: Iterable[str]) -> bool:
        """Would publishing ``movies`` for this catalog (``publish_update(add=movies, only=catalog_ids)``)
        change the current version? A movie added, removed or under another key does; the same
        movies under the same keys do not."""
        if self.current is None:
            return True
        now = {mid: r.key for mid, r in self.current.refs.items()}
        wanted = set(catalog_ids)
        after = {mid: key for mid, key in now.items() if mid in wanted}
        after.update({m.movie_id: m.key for m in movies})
        return after != now
