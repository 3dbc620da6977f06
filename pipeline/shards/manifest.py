"""Dataset layout, per-movie manifests, the dataset manifest, publishing and garbage collection.

Layout (a two-level index, ``format`` 2)::

    DATASET/
      manifest.json                     current version: one small entry per movie; replaced atomically and last
      versions/manifest-000003.json     every published version (the last few are kept)
      movies/<movie_id>/<key>/          immutable once movie.json exists
        part-00000.parquet ...          frame rows, size-bounded shards
        rejected.parquet                rejected frames with their reason
        movie.json                      the movie's manifest (its shards), written last = its commit marker

``manifest.json`` lists each movie by the path and SHA-256 of its ``movie.json`` plus small totals
(:class:`MovieRef`: rows, bytes, split, key, source fingerprint and file stat); the shard lists live in
the movies' own ``movie.json``, read (and checked against the checksum) only when a reader asks for a
movie (:class:`MovieIndex`). A publish therefore writes one small file (and its copy in
``versions/``) whatever the dataset's size: a movie's ``movie.json`` was written by its commit.
Datasets written before (``format`` 1: every shard of every movie inline in ``manifest.json``) are
read as they are; :func:`migrate` rewrites one as two-level.

``key`` is :func:`pipeline.ingest.ingest_key` of the source fingerprint and the ingest configuration, so a changed
movie or configuration writes a new folder while the previous dataset version stays readable. A
folder without ``movie.json`` is an interrupted write: invisible to readers, removed by
:func:`garbage_collect`. Building a dataset is therefore: for each catalog movie, reuse the
committed folder with the expected key (:func:`committed_movies`) or ingest it with
:class:`~pipeline.shards.writer.MovieShardWriter`; then :func:`publish` exactly those movies
(removed movies are simply not listed); then optionally :func:`garbage_collect`.

Paths in ``movie.json`` are relative to the movie folder; paths in ``manifest.json`` are relative
to the dataset folder, so a dataset can be copied or served from object storage as is.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import fsspec

from pipeline.atomic import write_json_atomic
from pipeline.errors import BadInputError, ConfigError
from pipeline.shards.schema import SCHEMA_VERSION

__all__ = [
    "absolute_location",
    "MANIFEST_NAME",
    "MOVIE_MANIFEST_NAME",
    "MOVIES_DIR",
    "VERSIONS_DIR",
    "ShardEntry",
    "MovieManifest",
    "DatasetManifest",
    "MovieRef",
    "MovieIndex",
    "FORMAT",
    "migrate",
    "movie_folder",
    "check_movie_id",
    "movie_id_from_name",
    "load_movie_manifest",
    "committed_movies",
    "read_manifest",
    "publish",
    "publish_update",
    "publish_lock",
    "check_dataset_writable",
    "MIN_FREE_BYTES",
    "garbage_collect",
    "sha256_file",
    "footer_digest",
    "footer_sha256",
    "manifest_location",
    "utc_now",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MOVIE_MANIFEST_NAME = "movie.json"
MOVIES_DIR = "movies"
VERSIONS_DIR = "versions"
LOCK_NAME = ".publish.lock"
#: The dataset manifest's layout: 1 = every shard inline (before the two-level index), 2 = a movie index.
FORMAT = 2
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def utc_now() -> str:
    """ISO-8601 UTC time; only ever written to JSON, never into Parquet (shards stay deterministic)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def footer_digest(fh: Any) -> str:
    """SHA-256 of a Parquet file's footer (its metadata, length and magic), from a binary file object.

    Page checksums cover the data; the footer (schema, row counts, where each page is) has none
    in Parquet. Its digest in the manifest makes a changed footer, a truncated file or another
    shard under this shard's name an error when the shard is opened, for the price of reading a
    few kilobytes.

    Raises:
        ValueError: not a Parquet file (too short, no ``PAR1`` magic, impossible footer length).
    """
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size < 12:
        raise ValueError(f"{size} bytes is too short for Parquet")
    fh.seek(size - 8)
    tail = fh.read(8)
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or length + 12 > size:
        raise ValueError("no Parquet footer at the end of the file")
    fh.seek(size - 8 - length)
    return hashlib.sha256(fh.read(length) + tail).hexdigest()


def footer_sha256(path: str | Path) -> str:
    """:func:`footer_digest` of a local file."""
    with open(path, "rb") as fh:
        return footer_digest(fh)


def sha256_file(path: str | Path, chunk: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_name(value: str, what: str) -> str:
    """A key must be a plain ASCII folder name (no separators, no leading dot)."""
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise ConfigError(
            f"{what} {value!r} must be a plain folder name: letters, digits and . _ + - (not starting with . _ + -)"
        )
    return value


#: The longest movie id, in characters and in UTF-8 bytes (file systems allow 255 bytes a name).
MOVIE_ID_MAX_CHARS = 100
MOVIE_ID_MAX_BYTES = 200


def check_movie_id(value: Any) -> str:
    """The one rule for movie ids (catalog, ``ingest --movie-id``, folders): returns the id or raises.

    An id is a single folder name: letters and digits of any script (``日本``, ``Amélie``), then
    also ``.``, ``_``, ``+``, ``-``; it starts with a letter or digit (so never ``.``, ``..`` or a
    hidden name), holds no separator, is NFC-normalised (one spelling per name: macOS and Linux
    write accents differently) and is at most 100 characters / 200 UTF-8 bytes. Checked before
    anything touches the disk.

    Raises:
        ConfigError: one line saying what is wrong.
    """
    if not isinstance(value, str) or value == "":
        raise ConfigError("movie id is empty: give a name (letters, digits, . _ + -) or leave the option out")
    shown = value if len(value) <= 40 else value[:37] + "..."
    if len(value) > MOVIE_ID_MAX_CHARS or len(value.encode("utf-8")) > MOVIE_ID_MAX_BYTES:
        raise ConfigError(
            f"movie id {shown!r} is {len(value)} characters long; the limit is {MOVIE_ID_MAX_CHARS} "
            f"characters ({MOVIE_ID_MAX_BYTES} UTF-8 bytes)"
        )
    if unicodedata.normalize("NFC", value) != value:
        raise ConfigError(f"movie id {shown!r} is not NFC-normalised; use {unicodedata.normalize('NFC', value)!r}")
    bad = sorted({c for c in value if not (c.isalnum() or c in "._+-")})
    if bad or not value[0].isalnum():
        what = f"holds {''.join(bad)!r}" if bad else "does not start with a letter or digit"
        raise ConfigError(
            f"movie id {shown!r} {what}: an id is one folder name of letters, digits and . _ + - "
            "starting with a letter or digit"
        )
    return value


def movie_id_from_name(name: str) -> str:
    """A movie id from a file name, stable and distinct for distinct names.

    Letters and digits of every script are kept (``日本.mkv`` -> ``日本``, ``中国.mkv`` -> ``中国``);
    runs of anything else become ``-``. A name with no letter or digit gets ``movie-`` and a short
    hash of the name, and a name over the length limit is cut and given the hash too, so two
    different names never meet in one id by accident (``ingest`` still refuses to replace a movie
    from another file without ``--replace``).
    """
    name = unicodedata.normalize("NFC", str(name))
    slug = re.sub(r"[^\w.+-]+", "-", name)
    slug = slug.lstrip("-._+").rstrip("-.")
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    if not slug:
        return f"movie-{digest}"
    if len(slug) > MOVIE_ID_MAX_CHARS or len(slug.encode("utf-8")) > MOVIE_ID_MAX_BYTES:
        cut = slug[: MOVIE_ID_MAX_CHARS - 9]
        while len(cut.encode("utf-8")) > MOVIE_ID_MAX_BYTES - 9:
            cut = cut[:-1]
        slug = f"{cut.rstrip('-.')}-{digest}"
    return slug


def movie_folder(dataset_dir: str | Path, movie_id: str, key: str) -> Path:
    return Path(dataset_dir) / MOVIES_DIR / check_movie_id(movie_id) / check_name(key, "key")


@dataclass
class ShardEntry:
    """One Parquet file as listed in a manifest.

    ``path`` is relative to the movie folder in ``movie.json`` and to the dataset folder in
    ``manifest.json``.
    """

    path: str
    rows: int
    bytes: int
    sha256: str
    split_counts: dict[str, int] = field(default_factory=dict)
    row_group_rows: list[int] = field(default_factory=list)
    movie_id: str = ""
    footer_sha256: str = ""  # :func:`footer_digest`; "" in datasets written before it existed

    @property
    def row_groups(self) -> int:
        return len(self.row_group_rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "split_counts": dict(self.split_counts),
            "row_groups": self.row_groups,
            "row_group_rows": list(self.row_group_rows),
            "movie_id": self.movie_id,
            "footer_sha256": self.footer_sha256,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardEntry:
        return cls(
            path=str(d["path"]),
            rows=int(d["rows"]),
            bytes=int(d["bytes"]),
            sha256=str(d["sha256"]),
            split_counts={str(k): int(v) for k, v in d.get("split_counts", {}).items()},
            row_group_rows=[int(x) for x in d.get("row_group_rows", [])],
            movie_id=str(d.get("movie_id", "")),
            footer_sha256=str(d.get("footer_sha256", "")),
        )


@dataclass
class MovieManifest:
    """A committed movie folder: its shards, rejected table and the metadata the ingest gave.

    ``meta`` holds what the ingest flow passes as ``movie_meta`` (source path and fingerprint,
    resolved configuration and its hash, split, ...); ``shard_config`` the writer's settings.
    """

    movie_id: str
    key: str
    shards: list[ShardEntry]
    rejected: ShardEntry | None
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    shard_config: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def folder(self) -> str:
        """Folder relative to the dataset: ``movies/<movie_id>/<key>``."""
        return f"{MOVIES_DIR}/{self.movie_id}/{self.key}"

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards) + (self.rejected.bytes if self.rejected else 0)

    @property
    def split_counts(self) -> dict[str, int]:
        return _sum_counts(s.split_counts for s in self.shards)

    @property
    def rejected_rows(self) -> int:
        return self.rejected.rows if self.rejected else 0

    @property
    def labelled_rows(self) -> int:
        """Rows that carry a label: the frames the ingest kept.

        Not ``rows`` in clips mode, where a rejected frame stays in its clip as a row without a label
        (unless no frame of its chunk was kept: such a chunk has no shard), so the ingest records the
        count at its commit (``meta["labelled_rows"]``). A movie committed before that was recorded
        gets its rows less its rejected frames in clips mode: exact unless a chunk was rejected whole.
        """
        recorded = self.meta.get("labelled_rows")
        if recorded is not None:
            return int(recorded)
        if (self.meta.get("config") or {}).get("sampling", {}).get("mode") == "clips":
            return max(0, self.rows - sum(int(n) for n in self.rejected_reasons.values()))
        return self.rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "movie_id": self.movie_id,
            "key": self.key,
            "created": self.created,
            "rows": self.rows,
            "bytes": self.bytes,
            "split_counts": self.split_counts,
            "shards": [s.to_dict() for s in self.shards],
            "rejected": self.rejected.to_dict() if self.rejected else None,
            "rejected_reasons": dict(self.rejected_reasons),
            "meta": self.meta,
            "shard_config": self.shard_config,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MovieManifest:
        return cls(
            movie_id=str(d["movie_id"]),
            key=str(d["key"]),
            shards=[ShardEntry.from_dict(s) for s in d.get("shards", [])],
            rejected=ShardEntry.from_dict(d["rejected"]) if d.get("rejected") else None,
            rejected_reasons={str(k): int(v) for k, v in d.get("rejected_reasons", {}).items()},
            meta=dict(d.get("meta", {})),
            shard_config=dict(d.get("shard_config", {})),
            created=str(d.get("created", "")),
            schema_version=int(d.get("schema_version", SCHEMA_VERSION)),
        )


def _sum_counts(counts) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


@dataclass
class MovieRef:
    """One movie as the dataset manifest lists it: where its ``movie.json`` is, its checksum, totals.

    Small on purpose (a few hundred bytes whatever the movie's length): ``manifest.json`` holds one
    per movie and is rewritten at every publish, while the shard lists stay in the movies' own
    ``movie.json``. ``path`` is relative to the dataset; ``sha256`` is of the ``movie.json`` bytes
    ("" when unknown: a single-level dataset's movie, whose shards are inline). ``source`` keeps the
    source file's fingerprint and, when the ingest recorded them, its ``stat`` (size and mtime_ns of
    the movie and right-eye files), ``content`` fingerprint and the ``settings`` hash, so a rebuild
    can tell an unchanged movie from this entry alone (:mod:`pipeline.changes`), and
    ``labelled_rows`` its kept frames (:attr:`MovieManifest.labelled_rows`; None in an index written
    before it was recorded).
    """

    movie_id: str
    key: str
    path: str
    sha256: str
    rows: int = 0
    bytes: int = 0
    shards: int = 0
    split: str = ""
    split_counts: dict[str, int] = field(default_factory=dict)
    rejected_rows: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    eyes: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    labelled_rows: int | None = None

    @property
    def folder(self) -> str:
        """Folder relative to the dataset: ``movies/<movie_id>/<key>``."""
        return f"{MOVIES_DIR}/{self.movie_id}/{self.key}"

    @classmethod
    def from_manifest(cls, m: MovieManifest, sha256: str = "") -> MovieRef:
        meta = m.meta or {}
        src = meta.get("source")
        source: dict[str, Any] = {}
        if isinstance(src, dict):
            source = {k: src[k] for k in ("fingerprint", "stat", "content") if src.get(k)}
        elif meta.get("source_fingerprint"):
            source = {"fingerprint": str(meta["source_fingerprint"])}
        if meta.get("settings"):
            source["settings"] = str(meta["settings"])
        swap = meta.get("swapped_eyes") or {}
        eyes = {}
        if isinstance(swap, dict) and (swap.get("swapped_shots") or (swap.get("movie") or {}).get("swapped")):
            eyes = {
                "swapped_shots": list(swap.get("swapped_shots") or []),
                "corrected_shots": list(swap.get("corrected_shots") or []),
                "movie": {"swapped": bool((swap.get("movie") or {}).get("swapped"))},
            }
        counts = m.split_counts
        split = str(meta.get("split") or (next(iter(counts)) if len(counts) == 1 else ""))
        return cls(
            movie_id=m.movie_id,
            key=m.key,
            path=f"{m.folder}/{MOVIE_MANIFEST_NAME}",
            sha256=sha256,
            rows=m.rows,
            bytes=m.bytes,
            shards=len(m.shards),
            split=split,
            split_counts=counts,
            rejected_rows=m.rejected_rows,
            rejected_reasons=dict(m.rejected_reasons),
            source=source,
            eyes=eyes,
            created=m.created,
            labelled_rows=m.labelled_rows,
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "movie_id": self.movie_id,
            "key": self.key,
            "path": self.path,
            "sha256": self.sha256,
            "rows": self.rows,
            "bytes": self.bytes,
            "shards": self.shards,
            "split": self.split,
            "split_counts": dict(self.split_counts),
            "rejected_rows": self.rejected_rows,
            "rejected_reasons": dict(self.rejected_reasons),
            "source": self.source,
            "created": self.created,
        }
        if self.eyes:
            out["eyes"] = self.eyes
        if self.labelled_rows is not None:
            out["labelled_rows"] = self.labelled_rows
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MovieRef:
        return cls(
            movie_id=str(d["movie_id"]),
            key=str(d["key"]),
            path=str(d["path"]),
            sha256=str(d.get("sha256", "")),
            rows=int(d.get("rows", 0)),
            bytes=int(d.get("bytes", 0)),
            shards=int(d.get("shards", 0)),
            split=str(d.get("split", "")),
            split_counts={str(k): int(v) for k, v in d.get("split_counts", {}).items()},
            rejected_rows=int(d.get("rejected_rows", 0)),
            rejected_reasons={str(k): int(v) for k, v in d.get("rejected_reasons", {}).items()},
            source=dict(d.get("source") or {}),
            eyes=dict(d.get("eyes") or {}),
            created=str(d.get("created", "")),
            labelled_rows=None if d.get("labelled_rows") is None else int(d["labelled_rows"]),
        )


def _join_root(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}" if root not in ("", ".") else rel


def read_movie_manifest(root: str, ref: MovieRef) -> MovieManifest:
    """A listed movie's ``movie.json`` (local path or URI), checked against the index's checksum.

    Raises:
        BadInputError: the file is missing, unreadable, or its SHA-256 is not the one the dataset
            manifest lists (it was changed or replaced after publishing), naming the file.
    """
    path = _join_root(root, ref.path)
    try:
        with fsspec.open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise BadInputError(
            path, "movie manifest listed in the dataset manifest is missing", "run depthmine verify"
        ) from None
    if ref.sha256:
        got = hashlib.sha256(data).hexdigest()
        if got != ref.sha256:
            raise BadInputError(
                path,
                f"movie manifest checksum mismatch (sha256 {got[:16]}..., the dataset manifest lists {ref.sha256[:16]}...)",
                "the movie folder changed after publishing; run depthmine verify, then rebuild or re-ingest the movie",
            )
    try:
        m = MovieManifest.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(path, f"movie manifest is unreadable ({exc})") from None
    if (m.movie_id, m.key) != (ref.movie_id, ref.key):
        raise BadInputError(path, f"movie manifest is of {m.movie_id}/{m.key}, listed as {ref.movie_id}/{ref.key}")
    return m


class MovieIndex(Mapping[str, MovieManifest]):
    """The dataset's movies by id: :class:`MovieRef` entries, each loaded into a full
    :class:`MovieManifest` (its ``movie.json``, checksum checked) the first time it is asked for.

    Iterating, ``len`` and ``in`` never read a movie file; ``refs`` gives the small entries. Loaded
    movies are kept, so a reader pays for each ``movie.json`` once.
    """

    def __init__(self, root: str, refs: Mapping[str, MovieRef], loaded: Mapping[str, MovieManifest] | None = None):
        self.root = root
        self.refs: dict[str, MovieRef] = dict(refs)
        self._loaded: dict[str, MovieManifest] = dict(loaded or {})

    @classmethod
    def of(cls, root: str, movies: Mapping[str, MovieManifest]) -> MovieIndex:
        """An index over movies already in memory (a single-level manifest, or one built by hand)."""
        refs = {mid: MovieRef.from_manifest(m) for mid, m in movies.items()}
        return cls(root, refs, movies)

    def __getitem__(self, movie_id: str) -> MovieManifest:
        m = self._loaded.get(movie_id)
        if m is None:
            m = read_movie_manifest(self.root, self.refs[movie_id])
            self._loaded[movie_id] = m
        return m

    def __iter__(self) -> Iterator[str]:
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)

    def __contains__(self, movie_id: object) -> bool:
        return movie_id in self.refs

    def __repr__(self) -> str:
        return f"MovieIndex({len(self.refs)} movies, {len(self._loaded)} loaded)"


@dataclass
class DatasetManifest:
    """One published dataset version: the movies it lists and, flattened, their shards.

    ``root`` is where it was read from (a local folder or a URI); shard paths are relative to it.
    ``movies`` is a :class:`MovieIndex` (a plain dict given to the constructor is wrapped): a
    movie's shards are read from its ``movie.json`` when first asked for, so totals
    (``rows``, ``split_counts``, ``refs``) never read a movie file. ``format`` is the layout it
    was read from (1: single-level, every shard inline; 2: two-level).
    """

    version: int
    movies: Mapping[str, MovieManifest]
    created: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    root: str = ""
    format: int = FORMAT

    def __post_init__(self) -> None:
        if not isinstance(self.movies, MovieIndex):
            self.movies = MovieIndex.of(self.root, dict(self.movies))
        elif self.root and not self.movies.root:
            self.movies.root = self.root

    @property
    def refs(self) -> dict[str, MovieRef]:
        """The small per-movie entries (no movie file is read)."""
        assert isinstance(self.movies, MovieIndex)
        return self.movies.refs

    @property
    def shards(self) -> list[ShardEntry]:
        """Every frame shard, with ``path`` relative to the dataset folder, in movie order."""
        out = []
        for m in self.movies.values():
            for s in m.shards:
                out.append(
                    ShardEntry(
                        path=f"{m.folder}/{s.path}",
                        rows=s.rows,
                        bytes=s.bytes,
                        sha256=s.sha256,
                        split_counts=dict(s.split_counts),
                        row_group_rows=list(s.row_group_rows),
                        movie_id=m.movie_id,
                        footer_sha256=s.footer_sha256,
                    )
                )
        return out

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.refs.values())

    @property
    def split_counts(self) -> dict[str, int]:
        return _sum_counts(r.split_counts for r in self.refs.values())

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.refs.values())

    def to_dict(self) -> dict[str, Any]:
        """The two-level form: one :class:`MovieRef` per movie (their checksums must be known)."""
        refs = self.refs
        return {
            "format": FORMAT,
            "schema_version": self.schema_version,
            "version": self.version,
            "created": self.created,
            "meta": self.meta,
            "movies": [r.to_dict() for r in refs.values()],  # a list: jq and DuckDB unnest it as is
            "totals": {
                "movies": len(refs),
                "shards": sum(r.shards for r in refs.values()),
                "rows": self.rows,
                "bytes": self.bytes,
                "split_counts": self.split_counts,
                "rejected_rows": sum(r.rejected_rows for r in refs.values()),
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: str = "") -> DatasetManifest:
        fmt = int(d.get("format", 1))
        movies: Mapping[str, MovieManifest]
        if fmt >= 2:
            movies = MovieIndex(root, {str(r["movie_id"]): MovieRef.from_dict(r) for r in d.get("movies", [])})
        else:
            movies = {mid: MovieManifest.from_dict(m) for mid, m in d.get("movies", {}).items()}
        return cls(
            version=int(d["version"]),
            movies=movies,
            created=str(d.get("created", "")),
            meta=dict(d.get("meta", {})),
            schema_version=int(d.get("schema_version", SCHEMA_VERSION)),
            root=root,
            format=fmt,
        )


def _strip(path: str | Path) -> str:
    return str(path).rstrip("/")


def manifest_location(path: str | Path) -> tuple[str, str]:
    """``(dataset_root, manifest_path)`` for a dataset folder or a manifest file (local or URI)."""
    p = _strip(path)
    if p.endswith(".json"):
        root = p.rsplit("/", 1)[0] if "/" in p else "."
        if root == VERSIONS_DIR or root.endswith(f"/{VERSIONS_DIR}"):  # an older version's manifest
            root = root[: -len(VERSIONS_DIR)].rstrip("/") or "."
        return root, p
    return p, f"{p}/{MANIFEST_NAME}"


def read_manifest(path: str | Path) -> DatasetManifest:
    """Read a dataset manifest from a dataset folder or a ``manifest.json`` (local path or URI).

    Raises:
        BadInputError: no manifest there, or it is not a depthmine manifest.
    """
    root, mpath = manifest_location(path)
    try:
        with fsspec.open(mpath, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as exc:
        raise BadInputError(
            mpath, "no dataset manifest", "build or publish the dataset first (depthmine build / ingest)"
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(mpath, f"manifest is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "version" not in data or "movies" not in data:
        raise BadInputError(mpath, "not a depthmine dataset manifest (no version/movies)")
    if int(data.get("format", 1)) > FORMAT:
        raise BadInputError(
            mpath, f"manifest format {data['format']} is newer than this reader ({FORMAT})", "upgrade depthmine"
        )
    if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
        raise BadInputError(
            mpath,
            f"schema version {data['schema_version']} is newer than this reader ({SCHEMA_VERSION})",
            "upgrade depthmine",
        )
    return DatasetManifest.from_dict(data, root=root)


def load_movie_manifest(folder: str | Path) -> MovieManifest | None:
    """The committed movie in ``folder`` (``None`` when it has no ``movie.json``: not committed)."""
    path = Path(folder) / MOVIE_MANIFEST_NAME
    try:
        with open(path, encoding="utf-8") as fh:
            return MovieManifest.from_dict(json.load(fh))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, KeyError) as exc:
        raise BadInputError(path, f"movie manifest is unreadable ({exc})") from exc


def committed_movies(dataset_dir: str | Path) -> dict[str, list[MovieManifest]]:
    """Every committed movie folder, by movie id, oldest first (``[-1]`` is the newest)."""
    out: dict[str, list[MovieManifest]] = {}
    base = Path(dataset_dir) / MOVIES_DIR
    if not base.is_dir():
        return out
    for movie_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        found = []
        for key_dir in sorted(p for p in movie_dir.iterdir() if p.is_dir()):
            m = load_movie_manifest(key_dir)
            if m is not None:
                found.append(m)
        if found:
            out[movie_dir.name] = sorted(found, key=lambda m: (m.created, m.key))
    return out


def _read_local_manifest(dataset_dir: Path) -> DatasetManifest | None:
    if not (dataset_dir / MANIFEST_NAME).exists():
        return None
    return read_manifest(dataset_dir)


#: Free space a run needs on the dataset's disk before it starts (a frame pair is ~1 MB stored).
MIN_FREE_BYTES = 64 << 20


def absolute_location(location: str | Path) -> str:
    """A path every worker reads the same way: URLs unchanged, local paths made absolute.

    A relative dataset or movie path means each worker's own working folder: Dask workers on other
    machines (or started from another folder) would stage chunks where the commit never looks.
    """
    text = str(location)
    if "://" in text:
        return text
    return os.path.abspath(os.path.expanduser(text))


def check_dataset_writable(dataset_dir: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Fail in the first second, in one line, when the dataset folder cannot take a run's output.

    Creates the folder (and parents) if needed, writes and removes a small probe file in it, and
    checks the free space on its disk, so a read-only folder, ``--out`` pointing at a file or a
    full disk is found before any decoding or labelling (not after an hour of work, as a
    traceback from the commit).

    Raises:
        BadInputError: naming the folder and the problem.
    """
    path = Path(dataset_dir)
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == path else f"lies under {parent}, which is a file"
                raise BadInputError(path, f"{what}, not a dataset folder", "give --out a folder")
            break
    hint = "choose another --out or fix the folder's permissions"
    missing = [d for d in [path, *path.parents] if not d.exists()]
    try:
        _check_writable(path, min_free_bytes, hint)
    except BadInputError:
        for d in missing:  # leave nothing behind: the folders this check created
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return path


def _check_writable(path: Path, min_free_bytes: int, hint: str) -> None:
    import errno
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", suffix=".tmp", dir=path)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BadInputError(path, "no space left on the disk", "free space or choose another --out") from None
        if exc.errno == errno.EROFS:
            raise BadInputError(path, "the dataset folder is on a read-only file system", hint) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise BadInputError(path, "permission denied: the dataset folder is not writable", hint) from None
        raise BadInputError(path, f"cannot write in the dataset folder ({exc.strerror})", hint) from None
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free < min_free_bytes:
        raise BadInputError(
            path,
            f"only {free / 2**20:.1f} MiB free on its disk (a run needs at least {min_free_bytes / 2**20:.0f} MiB)",
            "free space or choose another --out",
        )


@contextlib.contextmanager
def publish_lock(dataset_dir: str | Path) -> Iterator[None]:
    """Serialise publishers of one dataset across processes (an advisory ``flock``).

    Readers never need it: they read ``manifest.json``, which is replaced atomically.
    """
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with open(dataset_dir / LOCK_NAME, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def publish(
    dataset_dir: str | Path,
    movies: list[MovieManifest] | None = None,
    keep: int | None = None,
    meta: dict[str, Any] | None = None,
) -> DatasetManifest:
    """Publish a new dataset version listing exactly ``movies`` (default: newest committed per movie).

    Writes ``versions/manifest-<version>.json`` and then replaces ``manifest.json`` atomically, so
    readers see the previous version until the new one is complete. Movies must be committed
    (their ``movie.json`` exists). With ``keep=N``, :func:`garbage_collect` then removes folders not
    referenced by the last ``N`` versions. Concurrent publishers are serialised by
    :func:`publish_lock`; use :func:`publish_update` to add or drop movies relative to the current
    version without losing another publisher's change.

    Raises:
        BadInputError: a listed movie folder is not committed, or a movie id is listed twice.
    """
    with publish_lock(dataset_dir):
        return _publish_locked(Path(dataset_dir), movies, keep, meta)


def publish_update(
    dataset_dir: str | Path,
    add: Iterable[MovieManifest | MovieRef] = (),
    drop: Iterable[str] = (),
    keep: int | None = None,
    meta: dict[str, Any] | None = None,
    only: Iterable[str] | None = None,
) -> DatasetManifest:
    """Publish the current version with movies ``add``-ed (or replaced) and ``drop``-ped, atomically.

    The read of the current manifest and the write of the next one happen under one
    :func:`publish_lock`, so movies ingested in parallel can each publish themselves safely.
    ``only`` (a catalog's movie ids) drops every current movie not in it, decided under the lock.
    Movies kept from the current version keep their index entries as they are (their
    ``movie.json`` is not read again); an added movie's ``movie.json`` is read once for its checksum.
    """
    dataset_dir = Path(dataset_dir)
    with publish_lock(dataset_dir):
        current = _read_local_manifest(dataset_dir)
        movies: dict[str, MovieManifest | MovieRef] = dict(_entries(current)) if current else {}
        for mid in drop:
            movies.pop(mid, None)
        if only is not None:
            wanted = set(only)
            movies = {mid: m for mid, m in movies.items() if mid in wanted}
        for m in add:
            movies[m.movie_id] = m
        merged_meta = {**(current.meta if current else {}), **(meta or {})}
        return _publish_locked(dataset_dir, list(movies.values()), keep, merged_meta, current)


def _entries(manifest: DatasetManifest) -> dict[str, MovieManifest | MovieRef]:
    """A manifest's movies as publish inputs: index entries with a checksum as they are, the
    movies of a single-level manifest (no checksum yet) as their loaded manifests."""
    out: dict[str, MovieManifest | MovieRef] = {}
    for mid, ref in manifest.refs.items():
        out[mid] = ref if ref.sha256 else manifest.movies[mid]
    return out


def _ref_for(dataset_dir: Path, m: MovieManifest | MovieRef, previous: DatasetManifest | None) -> MovieRef:
    """The index entry of a movie to publish: reused from the previous version when it lists the
    same folder with a checksum (folders are immutable once committed), else from its ``movie.json``."""
    folder = dataset_dir / m.folder
    if isinstance(m, MovieRef) and m.sha256:
        if not (dataset_dir / m.path).exists():
            raise BadInputError(folder, "movie folder is not committed (no movie.json)", "finish() its writer first")
        return m
    if previous is not None:
        old = previous.refs.get(m.movie_id)
        if old is not None and old.sha256 and old.key == m.key:
            return old
    path = folder / MOVIE_MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(
            folder, "movie folder is not committed (no movie.json)", "finish() its writer first"
        ) from None
    try:
        own = MovieManifest.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(path, f"movie manifest is unreadable ({exc})") from None
    return MovieRef.from_manifest(own, hashlib.sha256(data).hexdigest())


def _publish_locked(
    dataset_dir: Path,
    movies: list[MovieManifest | MovieRef] | None,
    keep: int | None,
    meta: dict[str, Any] | None,
    previous: DatasetManifest | None = None,
) -> DatasetManifest:
    if movies is None:
        movies = [versions[-1] for versions in committed_movies(dataset_dir).values()]
    if previous is None:
        previous = _read_local_manifest(dataset_dir)
    refs: dict[str, MovieRef] = {}
    loaded: dict[str, MovieManifest] = {}
    for m in movies:
        if m.movie_id in refs:
            raise BadInputError(
                dataset_dir, f"movie {m.movie_id!r} listed twice (keys {refs[m.movie_id].key}, {m.key})"
            )
        refs[m.movie_id] = _ref_for(dataset_dir, m, previous)
        if isinstance(m, MovieManifest):
            loaded[m.movie_id] = m
    refs = dict(sorted(refs.items()))
    manifest = DatasetManifest(
        version=(previous.version + 1) if previous else 1,
        movies=MovieIndex(str(dataset_dir), refs, loaded),
        created=utc_now(),
        meta=dict(meta or {}),
        root=str(dataset_dir),
    )
    _write_version(dataset_dir, manifest)
    log.info("published %s version %d: %d movies, %d rows", dataset_dir, manifest.version, len(refs), manifest.rows)
    if keep is not None:
        garbage_collect(dataset_dir, keep=keep)
    return manifest


def _write_version(dataset_dir: Path, manifest: DatasetManifest) -> None:
    """The version's copy in ``versions/``, then ``manifest.json`` (atomic each: readers see the
    previous version until the rename). Compact JSON: it is read by programs, and small."""
    data = manifest.to_dict()
    write_json_atomic(dataset_dir / VERSIONS_DIR / f"manifest-{manifest.version:06d}.json", data, indent=None)
    write_json_atomic(dataset_dir / MANIFEST_NAME, data, indent=None)


def migrate(dataset_dir: str | Path) -> tuple[int, int] | None:
    """Rewrite a single-level dataset (``format`` 1) as two-level; ``None`` when it already is.

    Publishes the same movies as a new version (``meta.migrated_from`` names the old one) whose
    entries point at the movies' existing ``movie.json``; no shard is touched and the old version
    stays readable in ``versions/``. Idempotent, atomic (``manifest.json`` is replaced last) and
    refused, not waited for, while another run holds the dataset's publish lock or a movie lock.
    Every listed movie's ``movie.json`` must list the same shards as the old manifest.

    Returns:
        ``(old_version, new_version)``, or ``None`` when there was nothing to do.

    Raises:
        BadInputError: no manifest, a movie folder without ``movie.json`` or disagreeing with it.
        DepthmineError: the dataset is locked by a running build or ingest.
    """
    from pipeline.errors import DepthmineError
    from pipeline.shards.locks import movie_locked

    dataset_dir = Path(dataset_dir)
    read_manifest(dataset_dir)  # no manifest: a clear error before the lock file is created
    with open(dataset_dir / LOCK_NAME, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DepthmineError(
                f"{dataset_dir}: the dataset is locked (a build or ingest is publishing); migrate it when that run ends"
            ) from None
        try:
            current = read_manifest(dataset_dir)
            if current.format >= FORMAT:
                return None
            busy = [mid for mid in current.movies if movie_locked(dataset_dir, mid)]
            if busy:
                raise DepthmineError(
                    f"{dataset_dir}: movie(s) {', '.join(busy)} are locked by a running ingest; "
                    "migrate the dataset when it ends"
                )
            refs: dict[str, MovieRef] = {}
            for mid, inline in current.movies.items():
                path = dataset_dir / inline.folder / MOVIE_MANIFEST_NAME
                ref = _ref_for(dataset_dir, inline, None)
                own = load_movie_manifest(path.parent)
                listed = lambda m: [(s.path, s.rows, s.sha256) for s in m.shards]  # noqa: E731
                if own is None or listed(own) != listed(inline):
                    raise BadInputError(path, "lists other shards than the dataset manifest", "run depthmine verify")
                refs[mid] = ref
            manifest = DatasetManifest(
                version=current.version + 1,
                movies=MovieIndex(str(dataset_dir), dict(sorted(refs.items()))),
                created=utc_now(),
                meta={**current.meta, "migrated_from": current.version},
                root=str(dataset_dir),
            )
            _write_version(dataset_dir, manifest)
            log.info(
                "migrated %s: version %d (single-level) -> %d (two-level)",
                dataset_dir,
                current.version,
                manifest.version,
            )
            return current.version, manifest.version
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def garbage_collect(dataset_dir: str | Path, keep: int = 1) -> list[Path]:
    """Remove movie folders and version files no longer referenced, and stale temporary files.

    Keeps every folder referenced by the current manifest and the ``keep - 1`` versions before it.
    Movies whose lock a run holds (:func:`pipeline.shards.locks.movie_locked`: an ingest is
    staging, committing or publishing them) are skipped entirely, so a folder being written or
    committed but not yet published is never removed. Returns the removed paths.
    """
    from pipeline.shards.locks import movie_locked

    dataset_dir = Path(dataset_dir)
    keep = max(1, int(keep))
    removed: list[Path] = []
    current = _read_local_manifest(dataset_dir)
    referenced: set[str] = set()
    vdir = dataset_dir / VERSIONS_DIR
    version_files = sorted(vdir.glob("manifest-*.json")) if vdir.is_dir() else []
    if current is not None:
        referenced.update(r.folder for r in current.refs.values())
        kept_versions = [v for v in version_files if _version_of(v) <= current.version][-keep:]
        for vf in kept_versions:
            with contextlib.suppress(Exception):
                referenced.update(r.folder for r in read_manifest(vf).refs.values())
        for vf in version_files:
            if vf not in kept_versions and _version_of(vf) < current.version:
                vf.unlink()
                removed.append(vf)
    locked: set[str] = set()
    base = dataset_dir / MOVIES_DIR
    if base.is_dir():
        for movie_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if movie_locked(dataset_dir, movie_dir.name):
                locked.add(movie_dir.name)
                continue
            for key_dir in sorted(p for p in movie_dir.iterdir() if p.is_dir()):
                if f"{MOVIES_DIR}/{movie_dir.name}/{key_dir.name}" not in referenced:
                    shutil.rmtree(key_dir)
                    removed.append(key_dir)
            with contextlib.suppress(OSError):
                movie_dir.rmdir()  # only if now empty
    for tmp in dataset_dir.rglob(".*.tmp"):
        rel = tmp.relative_to(dataset_dir).parts
        if len(rel) > 2 and rel[0] in (MOVIES_DIR, ".work") and (rel[1] in locked or movie_locked(dataset_dir, rel[1])):
            continue  # a run is writing it
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    if removed:
        log.info("garbage_collect %s: removed %d paths", dataset_dir, len(removed))
    return removed


def _version_of(path: Path) -> int:
    try:
        return int(path.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1
