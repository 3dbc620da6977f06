"""Encoding records into Arrow tables and writing a movie's shards atomically.

:func:`encode_records` is the expensive part (JPEG/PNG encoding) and a pure function, so the
ingest flow can run it in parallel workers and hand the tables to one
:class:`MovieShardWriter` (``write_table`` never re-encodes). :func:`write_chunk` /
:func:`read_chunk` stage such tables as Parquet files in a work folder so an interrupted ingest
resumes without recomputing.

The writer's output bytes depend only on the rows and the :class:`ShardConfig`: row-group and shard
boundaries are decided row by row from encoded sizes, and no timestamp goes into Parquet (the
creation time lives in ``movie.json``). A resumed run therefore writes an identical dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import __version__
from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.config import config_to_dict
from pipeline.errors import BadInputError, ConfigError, DepthmineError
from pipeline.shards.codec import (
    DISPARITY_CODECS,
    IMAGE_CODECS,
    JPEG_SUBSAMPLING,
    encode_disparity,
    encode_flow,
    encode_image,
    encode_uncertainty,
    pack_mask,
)
from pipeline.shards.manifest import (
    MOVIE_MANIFEST_NAME,
    MovieManifest,
    ShardEntry,
    footer_sha256,
    movie_folder,
    sha256_file,
    utc_now,
)
from pipeline.shards.records import FrameRecord, RejectedRecord
from pipeline.shards.schema import (
    BLOB_COLUMNS,
    CLIP_FRAME_SCHEMA,
    FRAME_SCHEMA,
    PROVENANCE_COLUMNS,
    REJECTED_SCHEMA,
    check_schema,
    current_names,
    frame_schema_for,
)

__all__ = [
    "ShardConfig",
    "encode_records",
    "encode_rejected",
    "write_chunk",
    "read_chunk",
    "MovieShardWriter",
    "REJECTED_NAME",
    "describe_shard",
    "write_movie_commit",
]

log = logging.getLogger(__name__)

REJECTED_NAME = "rejected.parquet"
_DICT_COLUMNS = ["movie_id", "split", "image_codec", "disparity_codec", *PROVENANCE_COLUMNS]


@dataclass
class ShardConfig:
    """How shards are written.

    Attributes:
        target_shard_bytes: a shard is closed once its file reaches this size (after a row group). Large shards
            keep file counts low on object storage; 256 MB streams well. Applies to
            :class:`MovieShardWriter` (hydrate, synthetic datasets); an ingest's shards are its
            staged chunks, renamed (``chunk_frames`` rows each, row groups cut as below).
        row_group_rows: rows per row group, the unit of random access (tens of rows).
        max_row_group_bytes: a row group is also cut at this size, so random access stays cheap
            even for huge frames.
        image_codec: ``jpeg`` (default), ``png`` (lossless) or ``webp``.
        jpeg_quality: quality for JPEG/WebP (>= 90 keeps training artefacts invisible).
        jpeg_subsampling: JPEG chroma subsampling, ``420`` (default) or ``444`` (sharper colour).
        disparity_codec: ``u16d`` (delta-coded 16-bit codes: smallest and fast, default), ``u16``
            (plain 16-bit codes) or ``png16`` (16-bit PNG as in the paper, ten times slower to decode);
            see :func:`pipeline.shards.codec.encode_disparity`.
        compression_level: zstd level of the Parquet columns (None: Arrow's default).
        compression: Parquet compression of the non-image columns (masks, floats, ids).
        store_right: also store the right view (for stereo-aware training or re-labelling).
    """

    target_shard_bytes: int = 256 * 1024 * 1024
    row_group_rows: int = 32
    max_row_group_bytes: int = 64 * 1024 * 1024
    image_codec: str = "jpeg"
    jpeg_quality: int = 95
    jpeg_subsampling: str = "420"
    disparity_codec: str = "u16d"
    compression: str = "zstd"
    compression_level: int | None = None
    store_right: bool = False

    def __post_init__(self) -> None:
        if self.image_codec not in IMAGE_CODECS:
            raise ConfigError(f"shards.image_codec {self.image_codec!r}: valid codecs are {sorted(IMAGE_CODECS)}")
        if not 1 <= int(self.jpeg_quality) <= 101:
            raise ConfigError(f"shards.jpeg_quality {self.jpeg_quality}: expected 1..100 (101 = lossless WebP)")
        if self.jpeg_subsampling not in JPEG_SUBSAMPLING:
            raise ConfigError(
                f"shards.jpeg_subsampling {self.jpeg_subsampling!r}: valid values are {sorted(JPEG_SUBSAMPLING)}"
            )
        if self.disparity_codec not in DISPARITY_CODECS:
            raise ConfigError(
                f"shards.disparity_codec {self.disparity_codec!r}: valid codecs are {list(DISPARITY_CODECS)}"
            )
        if self.row_group_rows < 1 or self.target_shard_bytes < 1 or self.max_row_group_bytes < 1:
            raise ConfigError("shards: row_group_rows, target_shard_bytes and max_row_group_bytes must be positive")
        if self.compression not in ("zstd", "snappy", "gzip", "lz4", "brotli", "none"):
            raise ConfigError(
                f"shards.compression {self.compression!r}: expected zstd, snappy, gzip, lz4, brotli or none"
            )


def _coerce_record(rec: Any) -> FrameRecord:
    if isinstance(rec, FrameRecord):
        return rec
    if isinstance(rec, Mapping):
        return FrameRecord.from_dict(rec)
    raise TypeError(f"expected a FrameRecord or dict, got {type(rec).__name__}")


def encode_records(records: Iterable[FrameRecord | Mapping[str, Any]], config: ShardConfig | None = None) -> pa.Table:
    """Encode frame records into a table with :data:`FRAME_SCHEMA` (pure; safe in worker processes).

    Records of clips (``clip_id`` set) give a :data:`CLIP_FRAME_SCHEMA` table; one table never mixes both.
    """
    config = config or ShardConfig()
    recs = [_coerce_record(raw) for raw in records]
    clips = bool(recs) and recs[0].clip_id is not None
    if any((r.clip_id is not None) != clips for r in recs):
        raise ValueError("records of clips and of single frames cannot share a table")
    schema = CLIP_FRAME_SCHEMA if clips else FRAME_SCHEMA
    cols: dict[str, list[Any]] = {name: [] for name in schema.names}
    for r in recs:
        disp, offset, scale = encode_disparity(r.disparity, config.disparity_codec)
        row: dict[str, Any] = {
            "movie_id": str(r.movie_id),
            "shot_id": int(r.shot_id),
            "frame_index": int(r.frame_index),
            "pts_seconds": float(r.pts_seconds),
            "split": r.split,
            "width": r.width,
            "height": r.height,
            "image": encode_image(r.image, config.image_codec, config.jpeg_quality, config.jpeg_subsampling),
            "image_codec": config.image_codec,
            "disparity": disp,
            "disparity_codec": config.disparity_codec,
            "disparity_scale": scale,
            "disparity_offset": offset,
            "valid": pack_mask(r.valid),
            "uncertainty": None if r.uncertainty is None else encode_uncertainty(r.uncertainty),
            "sky": pack_mask(r.sky),
            "right_image": (
                encode_image(r.right_image, config.image_codec, config.jpeg_quality, config.jpeg_subsampling)
                if config.store_right and r.right_image is not None
                else None
            ),
            **r.crop_dict(),
            **r.stats,
            **r.provenance,
        }
        if clips:
            row.update(_clip_values(r))
        for k, v in row.items():
            cols[k].append(v)
    return pa.Table.from_pydict(cols, schema=schema)


def _clip_values(r: FrameRecord) -> dict[str, Any]:
    """The clip columns of one record (the temporal flow encoded like disparity)."""
    flow: tuple[Any, ...] = (None,) * 5
    if r.temporal_flow is not None:
        flow = encode_flow(r.temporal_flow)
    valid = r.temporal_flow_valid
    if r.temporal_flow is not None and valid is None:
        valid = np.isfinite(np.asarray(r.temporal_flow)).all(axis=-1)
    return {
        "clip_id": int(r.clip_id),
        "clip_pos": int(r.clip_pos),
        "clip_reason": str(r.clip_reason or ""),
        "temporal_flow": flow[0],
        "temporal_flow_offset_x": flow[1],
        "temporal_flow_offset_y": flow[2],
        "temporal_flow_scale_x": flow[3],
        "temporal_flow_scale_y": flow[4],
        "temporal_flow_valid": None if r.temporal_flow is None else pack_mask(valid),
    }


def _coerce_rejected(rec: Any) -> RejectedRecord:
    if isinstance(rec, RejectedRecord):
        return rec
    if isinstance(rec, Mapping):
        return RejectedRecord.from_dict(rec)
    raise TypeError(f"expected a RejectedRecord or dict, got {type(rec).__name__}")


def encode_rejected(records: Iterable[RejectedRecord | Mapping[str, Any]]) -> pa.Table:
    """Rejected frames as a table with :data:`REJECTED_SCHEMA`."""
    cols: dict[str, list[Any]] = {name: [] for name in REJECTED_SCHEMA.names}
    for raw in records:
        r = _coerce_rejected(raw)
        row = {
            "movie_id": str(r.movie_id),
            "shot_id": int(r.shot_id),
            "frame_index": int(r.frame_index),
            "pts_seconds": float(r.pts_seconds),
            "split": r.split,
            "reason": str(r.reason),
            **r.stats,
        }
        for k, v in row.items():
            cols[k].append(v)
    return pa.Table.from_pydict(cols, schema=REJECTED_SCHEMA)


def _is_rejected(rec: Any) -> bool:
    return isinstance(rec, RejectedRecord) or (isinstance(rec, Mapping) and "reason" in rec and "image" not in rec)


def _parquet_options(schema: pa.Schema, config: ShardConfig) -> dict[str, Any]:
    codec = config.compression
    binary = {f.name for f in schema if pa.types.is_binary(f.type)}
    extra = (
        {} if config.compression_level is None or codec == "none" else {"compression_level": config.compression_level}
    )
    return {
        **extra,
        "compression": {n: ("none" if n in BLOB_COLUMNS else codec) for n in schema.names},
        "use_dictionary": [n for n in _DICT_COLUMNS if n in schema.names]
        + (["reason"] if "reason" in schema.names else []),
        # min/max of encoded blobs is useless and bloats the footer
        "write_statistics": [n for n in schema.names if n not in binary],
        # a CRC-32 per page, checked by every depthmine read (pipeline.shards.reader): a flipped
        # bit in any data or dictionary page is an error naming the shard, never a changed value
        "write_page_checksum": True,
    }


def _kind(table: pa.Table) -> str:
    return ((table.schema.metadata or {}).get(b"depthmine.kind") or b"frames").decode()


def _conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    table = current_names(table)  # a chunk staged or a table read under an older schema version
    problems = [p for p in check_schema(table.schema, schema) if "schema_version" not in p]
    if problems:
        raise BadInputError(where, "table does not match the shard schema: " + "; ".join(problems))
    return table.select(schema.names).cast(schema)


def write_chunk(
    path: str | Path,
    records: Iterable[Any] | pa.Table,
    config: ShardConfig | None = None,
) -> Path:
    """Stage rows as one Parquet file, atomically (for resumable ingest).

    ``records`` is a table from :func:`encode_records`/:func:`encode_rejected`, or records: frame
    records are encoded, rejected records (with a ``reason``) written as a rejected table. The chunk
    is an ordinary shard-schema file; :meth:`MovieShardWriter.write_table` takes it back as is.
    """
    config = config or ShardConfig()
    if isinstance(records, pa.Table):
        table = records
    else:
        items = list(records)
        if items and all(_is_rejected(r) for r in items):
            table = encode_rejected(items)
        else:
            table = encode_records(items, config)
    schema = REJECTED_SCHEMA if _kind(table) == "rejected" else frame_schema_for(table.schema)
    table = _conform(table, schema, str(path))
    with atomic_path(path) as tmp:
        if schema is REJECTED_SCHEMA or table.num_rows == 0:
            pq.write_table(table, tmp, row_group_size=max(1, table.num_rows), **_parquet_options(schema, config))
        else:
            # row groups cut as MovieShardWriter cuts them: a staged chunk is renamed into the
            # movie's folder as one of its shards at the commit (pipeline.ingest.commit_movie)
            with pq.ParquetWriter(tmp, schema, **_parquet_options(schema, config)) as pw:
                start = 0
                for rows in _row_group_sizes(table, config):
                    pw.write_table(table.slice(start, rows), row_group_size=rows)
                    start += rows
    return Path(path)


def _row_group_sizes(table: pa.Table, config: ShardConfig) -> list[int]:
    """Rows per row group: ``row_group_rows``, or fewer where ``max_row_group_bytes`` is reached;
    in clips mode moved to a clip boundary as :class:`MovieShardWriter` moves it."""
    sizes = np.cumsum(_row_bytes(table))
    out: list[int] = []
    start, n = 0, table.num_rows
    while start < n:
        base = sizes[start - 1] if start else 0
        over = np.nonzero(sizes[start:] - base >= config.max_row_group_bytes)[0]
        cut = min(start + config.row_group_rows, n)
        if over.size:
            cut = min(cut, start + int(over[0]) + 1)
        cut = _clip_boundary(table, start, cut, n, final=True)  # clips mode: whole clips per group
        out.append(cut - start)
        start = cut
    return out


def describe_shard(path: str | Path, name: str, movie_id: str) -> ShardEntry:
    """The manifest entry of a finished frame file (a staged chunk about to become a shard)."""
    path = Path(path)
    pf = pq.ParquetFile(path)
    md = pf.metadata
    splits: dict[str, int] = {}
    for split in pf.read(columns=["split"]).column("split").to_pylist():
        splits[split] = splits.get(split, 0) + 1
    return ShardEntry(
        path=name,
        rows=md.num_rows,
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        split_counts=dict(sorted(splits.items())),
        row_group_rows=[md.row_group(i).num_rows for i in range(md.num_row_groups)],
        movie_id=movie_id,
        footer_sha256=footer_sha256(path),
    )


def read_chunk(path: str | Path) -> pa.Table:
    """Read a staged chunk (frames or rejected) back as a table with the shard schema.

    Raises:
        BadInputError: the file is missing, not Parquet, or not a shard-schema table.
    """
    try:
        table = pq.read_table(path)
    except FileNotFoundError as exc:
        raise BadInputError(path, "staged chunk is missing") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInputError(path, f"staged chunk is not readable Parquet ({exc})", "delete it to recompute") from exc
    schema = REJECTED_SCHEMA if _kind(table) == "rejected" else frame_schema_for(table.schema)
    return _conform(table, schema, str(path))


def _row_bytes(table: pa.Table) -> np.ndarray:
    """Encoded size of each row (sum of its binary columns, before Parquet compression), to bound
    row groups (and so the memory a reader needs per row group)."""
    total = np.zeros(table.num_rows, dtype=np.int64)
    for f in table.schema:
        if pa.types.is_binary(f.type):
            total += pc.binary_length(table.column(f.name)).fill_null(0).to_numpy(zero_copy_only=False)
    return total + 256  # ids, floats, strings: roughly


def _clip_boundary(table: pa.Table, start: int, cut: int, n: int, final: bool) -> int | None:
    """Move a row-group cut to a clip boundary (clips mode), so a clip never spans row groups or
    shards: back to the start of the clip that ``cut`` falls in, or, when that clip started the
    group, forward to its end. None: the clip's end has not arrived yet (wait for more rows).
    Frames mode: ``cut`` unchanged."""
    if "clip_pos" not in table.column_names:
        return cut
    if cut >= n:  # whether the next rows continue this clip is known only once they arrive
        return cut if final else None
    pos = table.column("clip_pos")
    if int(pos[cut].as_py()) == 0:
        return cut
    back = cut
    while back > start and int(pos[back].as_py()) != 0:
        back -= 1
    if back > start:
        return back
    forward = cut
    while forward < n and int(pos[forward].as_py()) != 0:
        forward += 1
    if forward == n and not final:
        return None
    return forward


class MovieShardWriter:
    """Writes one movie's rows into ``DATASET/movies/<movie_id>/<key>/`` and commits it last.

    Use as a context manager::

        with MovieShardWriter(dataset, "movie-a", key, ShardConfig(), movie_meta) as w:
            for rec in records:
                w.write(rec)            # or w.write_table(encoded_table)
            w.reject(rejected_record)
            movie = w.finish()          # leaving the block without error also finishes

    Shards are written to a hidden temporary name and renamed when complete
    (``part-00000.parquet``, ``part-00001.parquet``, ...); ``rejected.parquet`` and then
    ``movie.json`` (the commit marker) are written last. An exception inside the block removes what
    this writer wrote; a killed process leaves only a folder without ``movie.json`` (plus a hidden
    ``.*.tmp``) that readers never list and :func:`~pipeline.shards.manifest.garbage_collect` removes.

    Raises:
        DepthmineError: the folder is already committed (keys are content hashes: reuse it).
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        movie_id: str,
        key: str,
        config: ShardConfig | None = None,
        movie_meta: dict[str, Any] | None = None,
    ):
        self.dataset_dir = Path(dataset_dir)
        self.movie_id = movie_id
        self.key = key
        self.config = config or ShardConfig()
        self.movie_meta = dict(movie_meta or {})
        self.folder = movie_folder(self.dataset_dir, movie_id, key)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._rejected: list[pa.Table] = []
        self._shards: list[ShardEntry] = []
        self._pw: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._shard_rows: list[int] = []
        self._shard_bytes = 0
        self._shard_splits: dict[str, int] = {}
        self._opened = False
        self._finished: MovieManifest | None = None
        self._schema: pa.Schema | None = None  # FRAME_SCHEMA or CLIP_FRAME_SCHEMA, from the first rows

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> MovieShardWriter:
        if self._opened:
            return self
        if (self.folder / MOVIE_MANIFEST_NAME).exists():
            raise DepthmineError(
                f"{self.folder}: already committed (movie.json exists); reuse it or remove the folder to rewrite"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in list(self.folder.glob("*.parquet")) + list(self.folder.glob(".*.tmp")):
            log.info("removing %s left by an interrupted write", leftover)
            leftover.unlink()
        self._opened = True
        return self

    def __enter__(self) -> MovieShardWriter:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._finished is None:
            self.finish()

    # -- rows ------------------------------------------------------------------------------
    def write(self, record: FrameRecord | Mapping[str, Any]) -> None:
        """Encode and append one frame record."""
        self.write_table(encode_records([record], self.config))

    def write_table(self, table: pa.Table) -> None:
        """Append pre-encoded rows (from :func:`encode_records` or :func:`read_chunk`) without re-encoding.

        A rejected-schema table (from :func:`encode_rejected`) goes to the rejected rows.
        """
        self._check_open()
        if _kind(table) == "rejected":
            self._rejected.append(_conform(table, REJECTED_SCHEMA, f"{self.folder} (rejected rows)"))
            return
        schema = frame_schema_for(table.schema)
        if self._schema is None:
            self._schema = schema
        elif schema is not self._schema:
            raise ValueError(f"{self.folder}: rows of clips and of single frames cannot share a movie")
        table = _conform(table, schema, str(self.folder))
        if table.num_rows == 0:
            return
        other = pc.unique(table.column("movie_id")).to_pylist()
        if other != [self.movie_id]:
            raise ValueError(f"rows for movie(s) {other} written to the writer of {self.movie_id!r}")
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._drain(final=False)

    def reject(self, record: RejectedRecord | Mapping[str, Any]) -> None:
        """Record a rejected frame (ids, reason, statistics)."""
        self._check_open()
        self._rejected.append(encode_rejected([record]))

    def _check_open(self) -> None:
        if self._finished is not None:
            raise RuntimeError(f"writer for {self.folder} is already finished")
        self.open()

    def _drain(self, final: bool) -> None:
        """Cut pending rows into row groups: ``row_group_rows`` rows or ``max_row_group_bytes``."""
        if not self._pending_rows:
            return
        pending = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        sizes = np.cumsum(_row_bytes(pending))
        start = 0
        n = pending.num_rows
        while start < n:
            base = sizes[start - 1] if start else 0
            over = np.nonzero(sizes[start:] - base >= self.config.max_row_group_bytes)[0]
            cut = start + self.config.row_group_rows
            if over.size:
                cut = min(cut, start + int(over[0]) + 1)
            if cut > n:
                if not final:
                    break
                cut = n
            cut = _clip_boundary(pending, start, cut, n, final)
            if cut is None:
                break
            self._write_row_group(pending.slice(start, cut - start))
            start = cut
        rest = pending.slice(start)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def _write_row_group(self, table: pa.Table) -> None:
        if self._pw is None:
            name = f"part-{len(self._shards):05d}.parquet"
            self._tmp = self.folder / f".{name}.tmp"
            schema = self._schema or FRAME_SCHEMA
            self._pw = pq.ParquetWriter(self._tmp, schema, **_parquet_options(schema, self.config))
            self._shard_rows, self._shard_bytes, self._shard_splits = [], 0, {}
        self._pw.write_table(table, row_group_size=table.num_rows)
        self._shard_rows.append(table.num_rows)
        # each write_table is a complete row group already in the file: its size is exact and
        # deterministic (same rows, same bytes), unlike an estimate before compression
        self._shard_bytes = os.path.getsize(self._tmp)
        for split in table.column("split").to_pylist():
            self._shard_splits[split] = self._shard_splits.get(split, 0) + 1
        if self._shard_bytes >= self.config.target_shard_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._pw is None or self._tmp is None:
            return
        self._pw.close()
        self._pw = None
        name = self._tmp.name[1 : -len(".tmp")]
        final = self.folder / name
        with open(self._tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, final)
        self._tmp = None
        self._shards.append(
            ShardEntry(
                path=name,
                rows=sum(self._shard_rows),
                bytes=final.stat().st_size,
                sha256=sha256_file(final),
                split_counts=dict(sorted(self._shard_splits.items())),
                row_group_rows=list(self._shard_rows),
                movie_id=self.movie_id,
                footer_sha256=footer_sha256(final),
            )
        )
        log.debug("closed shard %s (%d rows)", final, self._shards[-1].rows)

    # -- commit ----------------------------------------------------------------------------
    def finish(self) -> MovieManifest:
        """Flush the last row group and shard, write ``rejected.parquet``, then ``movie.json`` last."""
        if self._finished is not None:
            return self._finished
        self.open()
        self._drain(final=True)
        self._close_shard()
        rejected = pa.concat_tables(self._rejected) if self._rejected else REJECTED_SCHEMA.empty_table()
        self._finished = write_movie_commit(
            self.folder, self.movie_id, self.key, self._shards, rejected, self.config, self.movie_meta
        )
        return self._finished

    def abort(self) -> None:
        """Drop everything this writer wrote (the folder is left uncommitted and empty of shards)."""
        if self._pw is not None:
            with contextlib.suppress(Exception):
                self._pw.close()
            self._pw = None
        paths = [self._tmp] if self._tmp else []
        paths += [self.folder / s.path for s in self._shards]
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self._tmp = None
        self._shards = []
        self._pending, self._pending_rows, self._rejected = [], 0, []


def write_movie_commit(
    folder: str | Path,
    movie_id: str,
    key: str,
    shards: list[ShardEntry],
    rejected: pa.Table,
    config: ShardConfig,
    movie_meta: dict[str, Any],
) -> MovieManifest:
    """Commit a movie folder whose shards are in place: ``rejected.parquet``, then ``movie.json`` last.

    ``movie.json`` (written by an atomic rename) is the commit marker: until it exists readers never
    list the folder, so a crash anywhere before it leaves an uncommitted folder, never a half movie.
    """
    folder = Path(folder)
    rejected = _conform(rejected, REJECTED_SCHEMA, f"{folder} (rejected rows)")
    rpath = folder / REJECTED_NAME
    with atomic_path(rpath) as tmp:
        pq.write_table(
            rejected,
            tmp,
            row_group_size=max(1, rejected.num_rows),
            **_parquet_options(REJECTED_SCHEMA, config),
        )
    reasons: dict[str, int] = {}
    for reason in rejected.column("reason").to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    manifest = MovieManifest(
        movie_id=movie_id,
        key=key,
        shards=list(shards),
        rejected=ShardEntry(
            path=REJECTED_NAME,
            rows=rejected.num_rows,
            bytes=rpath.stat().st_size,
            sha256=sha256_file(rpath),
            split_counts={},
            row_group_rows=[],
            movie_id=movie_id,
            footer_sha256=footer_sha256(rpath),
        ),
        rejected_reasons=dict(sorted(reasons.items())),
        meta=config_to_dict(movie_meta),
        shard_config=dataclasses.asdict(config) | {"project_version": __version__},
        created=utc_now(),
    )
    write_json_atomic(folder / MOVIE_MANIFEST_NAME, manifest.to_dict())
    log.info(
        "committed %s: %d rows in %d shards, %d rejected", folder, manifest.rows, len(shards), manifest.rejected_rows
    )
    return manifest
