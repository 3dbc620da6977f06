"""Streaming and random access over shards: a shard file, a dataset folder, a manifest, or a URI.

The trainer splits :func:`list_shards` across ranks and workers and streams each shard with
:func:`iter_samples`, which reads one row group at a time and only the columns asked for (so a
depth-only loader never touches ``right_image``). Local paths are memory-mapped; any other
``scheme://`` goes through fsspec (``s3://``, ``gs://``, ``memory://``, ...), with the same code.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import BadInputError, DepthmineError
from pipeline.shards.codec import decode_disparity, decode_flow, decode_image, decode_uncertainty, unpack_mask
from pipeline.shards.manifest import DatasetManifest, footer_digest, manifest_location, read_manifest
from pipeline.shards.schema import ARRAY_COLUMNS, ID_COLUMNS, current_names, physical_columns, stored_names

__all__ = [
    "ShardInfo",
    "list_shards",
    "open_shard",
    "iter_samples",
    "read_row_group",
    "read_sample",
    "decode_rows",
    "iter_decoded",
]

_INTERNAL = {
    "image_codec",
    "disparity_codec",
    "disparity_scale",
    "disparity_offset",
    "temporal_flow_offset_x",
    "temporal_flow_offset_y",
    "temporal_flow_scale_x",
    "temporal_flow_scale_y",
}


@dataclass(frozen=True)
class ShardInfo:
    """A frame shard as the trainer sees it.

    Attributes:
        path: a local path or URI, directly openable by :func:`open_shard` / :func:`iter_samples`.
        rows: number of rows (frames).
        split_counts: rows per split, e.g. ``{"train": 120}``.
        movie_id: the movie the shard belongs to.
        row_groups: number of row groups (the unit of random access).
        row_group_rows: rows in each row group.
        bytes: file size (0 when unknown).
        sha256: checksum from the manifest ("" when read from a bare shard).
        footer_sha256: digest of the Parquet footer from the manifest, checked on open ("" when
            unknown: a bare shard or a dataset written before it existed).
    """

    path: str
    rows: int
    split_counts: dict[str, int] = field(default_factory=dict, hash=False)
    movie_id: str = ""
    row_groups: int = 0
    row_group_rows: tuple[int, ...] = ()
    bytes: int = 0
    sha256: str = ""
    footer_sha256: str = ""


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


_HINT = "run depthmine verify on the dataset; re-ingest the movie to rewrite it"


def open_shard(path: str | Path | ShardInfo, verify: bool = True) -> pq.ParquetFile:
    """Open a shard for reading (memory-mapped when local; fsspec for other URIs).

    With ``verify`` (the default) every page read is checked against its CRC-32 (written by
    :mod:`pipeline.shards.writer`), and a :class:`ShardInfo` from a manifest is checked when the
    shard opens: the footer's digest, the row count and the row groups must be the manifest's, so
    a truncated file, a changed footer or another shard copied under this name fail here.

    Raises:
        BadInputError: the file is missing, not Parquet, or not the shard the manifest lists.
    """
    info = path if isinstance(path, ShardInfo) else None
    p = info.path if info is not None else str(path)
    try:
        if _is_local(p):
            pf = pq.ParquetFile(_local(p), memory_map=True, page_checksum_verification=verify)
        else:
            fs, fpath = fsspec.core.url_to_fs(p)
            pf = pq.ParquetFile(fs.open(fpath, "rb"), page_checksum_verification=verify)
    except FileNotFoundError as exc:
        raise BadInputError(p, "shard file is missing", "run depthmine verify on the dataset") from exc
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadInputError(p, f"not a readable Parquet shard ({exc})", _HINT) from exc
    if verify and info is not None:
        try:
            _check_against_manifest(pf, info)
        except BadInputError:
            _close(pf)
            raise
    return pf


def _check_against_manifest(pf: pq.ParquetFile, info: ShardInfo) -> None:
    """The opened shard is the one the manifest lists: footer digest, rows, row groups."""
    if info.footer_sha256:
        try:
            if _is_local(info.path):
                with open(_local(info.path), "rb") as fh:
                    digest = footer_digest(fh)
            else:
                fs, fpath = fsspec.core.url_to_fs(info.path)
                with fs.open(fpath, "rb") as fh:
                    digest = footer_digest(fh)
        except (OSError, ValueError) as exc:
            raise BadInputError(info.path, f"shard footer cannot be read ({exc})", _HINT) from None
        if digest != info.footer_sha256:
            raise BadInputError(
                info.path, "shard footer differs from the manifest's (corrupt, truncated or another file)", _HINT
            )
    md = pf.metadata
    if info.rows and md.num_rows != info.rows:
        raise BadInputError(info.path, f"shard has {md.num_rows} rows, the manifest says {info.rows}", _HINT)
    groups = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
    if info.row_group_rows and groups != tuple(info.row_group_rows):
        raise BadInputError(
            info.path, f"shard has row groups {list(groups)}, the manifest says {list(info.row_group_rows)}", _HINT
        )


def _read_group(pf: pq.ParquetFile, shard: ShardInfo, index: int, columns: list[str] | None) -> pa.Table:
    """One row group, its pages checked, its columns under their current names (a shard of an older
    schema version reads as it is); a failure is an error naming the shard, and so is a row of
    another movie (a shard of one movie copied over another's)."""
    if columns is not None:  # clip columns asked of a frames-mode shard: rows give None for them
        columns = stored_names(columns, pf.schema_arrow.names)
    try:
        table = current_names(pf.read_row_group(index, columns=columns))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadInputError(shard.path, f"row group {index} is corrupt ({exc})", _HINT) from None
    if shard.movie_id and "movie_id" in table.column_names and table.num_rows:
        found = pc.unique(table.column("movie_id")).to_pylist()
        if found != [shard.movie_id]:
            raise BadInputError(shard.path, f"rows of movie(s) {found} in a shard of {shard.movie_id!r}", _HINT)
    return table


def _decoded(table: pa.Table, shard: ShardInfo, index: int, columns, split) -> Iterator[dict[str, Any]]:
    """:func:`iter_decoded`, a failure to decode being an error naming the shard."""
    rows = iter_decoded(table, columns, split)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except (DepthmineError, pa.ArrowException, ValueError, TypeError, IndexError, KeyError, cv2.error) as exc:
            raise BadInputError(
                shard.path, f"row group {index} cannot be decoded ({type(exc).__name__}: {exc})", _HINT
            ) from None
        yield row


def _close(pf: pq.ParquetFile) -> None:
    with contextlib.suppress(Exception):
        pf.close()


def _shard_from_file(path: str) -> ShardInfo:
    pf = open_shard(path)
    try:
        md = pf.metadata
        counts: dict[str, int] = {}
        movie = ""
        if md.num_rows:
            t = pf.read(columns=["split", "movie_id"])
            for s in t.column("split").to_pylist():
                counts[s] = counts.get(s, 0) + 1
            movie = t.column("movie_id")[0].as_py()
        rg = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
        return ShardInfo(path, md.num_rows, dict(sorted(counts.items())), movie, len(rg), rg, 0, "")
    finally:
        _close(pf)


def _join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}" if root not in ("", ".") else rel


def list_shards(
    path: str | Path | DatasetManifest,
    split: str | None = None,
    movie_ids: Sequence[str] | None = None,
) -> list[ShardInfo]:
    """Frame shards of a dataset folder, a ``manifest.json``, a manifest object or a single shard.

    Args:
        split: keep only shards holding rows of this split (rows of other splits in a mixed shard
            are filtered by :func:`iter_samples` when it is given the same ``split``).
        movie_ids: keep only shards of these movies.

    Raises:
        BadInputError: no manifest / shard at ``path``.
    """
    if isinstance(path, DatasetManifest):
        manifest, root = path, path.root
    else:
        p = str(path)
        if p.endswith(".parquet"):
            shards = [_shard_from_file(p)]
            manifest = None
        else:
            root, _ = manifest_location(p)
            manifest = read_manifest(p)
    if manifest is not None:
        # movie by movie: only the wanted movies' movie.json are read (and checked) in a two-level dataset
        wanted_ids = [m for m in manifest.refs if movie_ids is None or m in set(movie_ids)]
        shards = [
            ShardInfo(
                path=_join(root, f"{m.folder}/{s.path}"),
                rows=s.rows,
                split_counts=dict(s.split_counts),
                movie_id=m.movie_id,
                row_groups=s.row_groups,
                row_group_rows=tuple(s.row_group_rows),
                bytes=s.bytes,
                sha256=s.sha256,
                footer_sha256=s.footer_sha256,
            )
            for m in (manifest.movies[mid] for mid in wanted_ids)
            for s in m.shards
        ]
    if split is not None:
        shards = [s for s in shards if s.split_counts.get(split, 0) > 0]
    if movie_ids is not None:
        wanted = set(movie_ids)
        shards = [s for s in shards if s.movie_id in wanted]
    return shards


def _blob(arr: pa.Array, i: int):
    v = arr[i]
    return None if not v.is_valid else v.as_buffer()


def decode_rows(
    table: pa.Table, columns: Sequence[str] | None = None, split: str | None = None
) -> list[dict[str, Any]]:
    """Decode a table of shard rows into sample dicts (see :func:`iter_samples`)."""
    return list(iter_decoded(table, columns, split))


def iter_decoded(
    table: pa.Table, columns: Sequence[str] | None = None, split: str | None = None
) -> Iterator[dict[str, Any]]:
    """Decode rows one at a time, so only one decoded sample is in memory besides the table."""
    names = table.schema.names
    if columns is None:
        out_cols = [c for c in names if c not in _INTERNAL]
    else:
        out_cols = list(dict.fromkeys([*ID_COLUMNS, *columns]))
    arrays = {n: table.column(n).combine_chunks() for n in names}
    scalars = {n: arrays[n].to_pylist() for n in names if n not in ARRAY_COLUMNS or n in ("width", "height")}
    # masks need the size even when width/height were not asked for
    for i in range(table.num_rows):
        if split is not None and scalars["split"][i] != split:
            continue
        h = scalars["height"][i] if "height" in scalars else None
        w = scalars["width"][i] if "width" in scalars else None
        row: dict[str, Any] = {}
        for c in out_cols:
            if c == "image" or c == "right_image":
                buf = _blob(arrays[c], i)
                row[c] = None if buf is None else decode_image(buf)
            elif c == "disparity":
                row[c] = decode_disparity(
                    _blob(arrays[c], i),
                    scalars["disparity_offset"][i],
                    scalars["disparity_scale"][i],
                    scalars["disparity_codec"][i],
                    h,
                    w,
                )
            elif c in ("valid", "sky"):
                row[c] = unpack_mask(_blob(arrays[c], i), h, w)
            elif c == "uncertainty":
                buf = _blob(arrays[c], i)
                row[c] = None if buf is None else decode_uncertainty(buf, h, w)
            elif c not in arrays:
                row[c] = None  # a clip column of a frames-mode row
            elif c == "temporal_flow":
                buf = _blob(arrays[c], i)
                row[c] = (
                    None
                    if buf is None
                    else decode_flow(
                        buf,
                        scalars["temporal_flow_offset_x"][i],
                        scalars["temporal_flow_offset_y"][i],
                        scalars["temporal_flow_scale_x"][i],
                        scalars["temporal_flow_scale_y"][i],
                        h,
                        w,
                    )
                )
            elif c == "temporal_flow_valid":
                buf = _blob(arrays[c], i)
                row[c] = None if buf is None else unpack_mask(buf, h, w)
            else:
                row[c] = scalars[c][i]
        yield row


def _check_columns(columns: Sequence[str] | None) -> list[str]:
    try:
        return physical_columns(list(columns) if columns is not None else None)
    except ValueError as exc:
        raise BadInputError(None, str(exc)) from None


def iter_samples(
    path: str | Path | DatasetManifest | ShardInfo,
    columns: Sequence[str] | None = None,
    split: str | None = None,
    movie_ids: Sequence[str] | None = None,
    row_groups: Sequence[int] | None = None,
    prefetch: bool = True,
    verify: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield decoded samples, one row group read at a time.

    Each sample is a dict with ``image`` (HxWx3 uint8 RGB), ``disparity`` (HxW float32, px of the
    image; NaN where the source was not finite), ``valid`` and ``sky`` (HxW bool),
    ``uncertainty`` (HxW float32 or None), ``right_image`` (or None), the ids ``movie_id``,
    ``shot_id``, ``frame_index``, ``pts_seconds``, ``split``, and every other column of the row
    (size, crop box, statistics, provenance).

    Args:
        path: a shard file, dataset folder, ``manifest.json``, manifest object or :class:`ShardInfo`
            (local path or URI).
        columns: decode only these logical columns (ids are always included); ``None`` = all.
        split: only rows of this split. movie_ids: only rows of these movies.
        row_groups: only these row-group indices of each shard (random access).
        prefetch: read the next row group in a background thread while decoding this one.
        verify: check every page's CRC-32 and each shard against the manifest (footer digest,
            rows, row groups, movie id) before yielding its rows (default). ``False`` is for
            measuring what the checks cost (``bench/bench_integrity.py``), not for training.

    Raises:
        BadInputError: a shard is missing, damaged or not the one the manifest lists; the
            message names it. No row of a damaged row group is yielded.
    """
    phys = _check_columns(columns)
    shards = [path] if isinstance(path, ShardInfo) else list_shards(path, split=split, movie_ids=movie_ids)
    wanted = set(movie_ids) if movie_ids is not None else None
    # every shard is opened with its checks (open_shard); rows are yielded only from row groups
    # whose pages all passed their checksums
    # One background thread reads (and decompresses) the next row group while this one decodes:
    # Arrow and cv2 both release the GIL, and on object storage the read is mostly waiting.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-prefetch") as pool:
        for shard in shards:
            if wanted is not None and shard.movie_id and shard.movie_id not in wanted:
                continue
            pf = open_shard(shard, verify=verify)
            checked = shard if verify else ShardInfo(shard.path, shard.rows)  # unchecked: no movie id test
            pending: Future | None = None
            try:
                groups = [int(g) for g in (range(pf.num_row_groups) if row_groups is None else row_groups)]
                read = pool.submit if prefetch else _now
                if groups:
                    pending = read(_read_group, pf, checked, groups[0], phys)
                for k in range(len(groups)):
                    table = pending.result()
                    pending = read(_read_group, pf, checked, groups[k + 1], phys) if k + 1 < len(groups) else None
                    for row in _decoded(table, shard, groups[k], columns, split):
                        if wanted is None or row["movie_id"] in wanted:
                            yield row
            finally:
                if pending is not None:  # the consumer stopped early: let the read finish first
                    with contextlib.suppress(Exception):
                        pending.result()
                _close(pf)


def _now(fn, *args, **kwargs) -> Future:
    """``pool.submit`` without the pool: run now, return a finished future."""
    fut: Future = Future()
    fut.set_result(fn(*args, **kwargs))
    return fut


def read_row_group(
    shard: str | Path | ShardInfo, index: int, columns: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Decode row group ``index`` of one shard."""
    phys = _check_columns(columns)
    info = shard if isinstance(shard, ShardInfo) else ShardInfo(str(shard), 0)
    pf = open_shard(info)
    try:
        if not 0 <= index < pf.num_row_groups:
            raise IndexError(f"row group {index} out of range (shard has {pf.num_row_groups})")
        return list(_decoded(_read_group(pf, info, index, phys), info, index, columns, None))
    finally:
        _close(pf)


def read_sample(shard: str | Path | ShardInfo, row: int, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Decode row ``row`` (0-based within the shard), reading only its row group."""
    phys = _check_columns(columns)
    info = shard if isinstance(shard, ShardInfo) else ShardInfo(str(shard), 0)
    pf = open_shard(info)
    try:
        md = pf.metadata
        if not 0 <= row < md.num_rows:
            raise IndexError(f"row {row} out of range (shard has {md.num_rows} rows)")
        start = 0
        for g in range(md.num_row_groups):
            n = md.row_group(g).num_rows
            if row < start + n:
                table = _read_group(pf, info, g, phys).slice(row - start, 1)
                return next(_decoded(table, info, g, columns, None))
            start += n
        raise IndexError(row)  # unreachable: num_rows is the sum of the groups
    finally:
        _close(pf)
