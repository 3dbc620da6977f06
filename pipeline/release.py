"""Labels-only releases: publish a dataset mined from films without a single picture of the films.

The frames of a film are copyrighted; the labels computed from them (disparity, masks,
statistics) and where they came from are not pictures. A release holds, for every kept frame of
the chosen movies and splits, every shard column except the image ones (``image``,
``right_image``, ``image_codec``), plus what :mod:`pipeline.hydrate` needs to find the frame again
in someone else's copy of the film: the DCT hash of the stored picture (:mod:`pipeline.phash`, 64
bits) and which eye the picture was (``view``). Per movie, ``release.json`` holds a signature of
the cut: the shot boundaries (frames and seconds), duration, frame rate, frame count, the crop
box and stored size, and the hash sequence of the released frames in frame order. Rejected
frames (ids, reason, statistics) are released as they are.

Layout::

    RELEASE/
      release.json                  the manifest: format, version, movies, signatures, checksums
      README.md                     for the person who rebuilds: how to hydrate, the films and cuts
      movies/<movie_id>/labels.parquet     LABEL_SCHEMA rows, in frame order
      movies/<movie_id>/rejected.parquet   REJECTED_SCHEMA rows (no pictures either)

The label values are copied byte for byte from the dataset's shards (they are never decoded and
re-encoded), so a hydrated dataset carries exactly the published labels. Files are written
atomically, ``release.json`` last: a folder without it is an interrupted release.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.errors import BadInputError, ConfigError
from pipeline.phash import phash, to_hex
from pipeline.shards import FRAME_SCHEMA, REJECTED_SCHEMA, SPLITS, decode_image, read_manifest
from pipeline.shards.codec import join_bytes, split_bytes, unpack_mask
from pipeline.shards.manifest import MovieManifest, sha256_file, utc_now
from pipeline.shards.reader import open_shard
from pipeline.shards.schema import COLUMN_DOCS, current_names

__all__ = [
    "RELEASE_FORMAT",
    "RELEASE_VERSION",
    "RELEASE_MANIFEST",
    "IMAGE_COLUMNS",
    "LABEL_SCHEMA",
    "ReleaseConfig",
    "ReleasedMovie",
    "Release",
    "release_movie",
    "write_release_manifest",
    "make_release",
    "read_release",
    "movie_views",
    "plan_release",
]

log = logging.getLogger(__name__)

RELEASE_FORMAT = "depthmine-release"
RELEASE_VERSION = 2  # 2: packed disparity and uncertainty (label packing below)
RELEASE_MANIFEST = "release.json"
LABELS_NAME = "labels.parquet"
REJECTED_NAME = "rejected.parquet"

#: Shard columns a release never holds.
IMAGE_COLUMNS: tuple[str, ...] = ("image", "right_image", "image_codec")

_LABEL_DOCS = {
    "phash": "64-bit DCT hash of the stored picture's 32x32 grey thumbnail (pipeline.phash): finds the frame again",
    "view": "which eye of the film the stored picture is: left | right (right when the eyes were exchanged)",
    "disparity": (
        "the dataset's 16-bit disparity codes q (see the dataset's disparity column: disparity = "
        "disparity_offset + disparity_scale * q), packed (release label packing grad-zz8/1): 4 bytes "
        "little-endian n, then height*width bytes z, then n uint32 little-endian values that replace, in "
        "order, the bytes equal to 255; e = (z >> 1) ^ -(z & 1); q = cumsum(cumsum(e, rows), columns). With "
        "precision valid only valid pixels are meaningful. Codecs other than u16d/u16: the dataset's bytes"
    ),
    "uncertainty": (
        "the dataset's uncertainty codes (1/32 px, 65535 = NaN), packed: 2 bytes little-endian step, then "
        "as disparity's z (4-byte n, height*width bytes, n uint32); code = z * step (65535 stays 65535). "
        "With precision valid only valid pixels are meaningful"
    ),
}


def _label_schema() -> pa.Schema:
    fields = [
        f.with_metadata({b"doc": _LABEL_DOCS[f.name].encode()}) if f.name in _LABEL_DOCS else f
        for f in FRAME_SCHEMA
        if f.name not in IMAGE_COLUMNS
    ]
    fields += [
        pa.field("phash", pa.uint64(), nullable=False, metadata={b"doc": _LABEL_DOCS["phash"].encode()}),
        pa.field("view", pa.string(), nullable=False, metadata={b"doc": _LABEL_DOCS["view"].encode()}),
    ]
    docs = {k: v for k, v in COLUMN_DOCS.items() if k not in IMAGE_COLUMNS} | _LABEL_DOCS
    meta = {
        b"depthmine.release_version": str(RELEASE_VERSION).encode(),
        b"depthmine.kind": b"labels",
        b"depthmine.schema_version": FRAME_SCHEMA.metadata[b"depthmine.schema_version"],
        b"depthmine.columns": json.dumps(docs, sort_keys=True).encode(),
    }
    return pa.schema(fields, metadata=meta)


#: The released rows: the frame schema without its image columns, plus ``phash`` and ``view``.
LABEL_SCHEMA: pa.Schema = _label_schema()


# --------------------------------------------------------------------------- label packing
#
# The dataset's label blobs are made to be read fast by the trainer (byte planes of row deltas,
# zstd), not to be small. A release re-packs the two big ones losslessly on their 16-bit codes:
#
# * ``disparity``: the codes ``q`` minus the gradient prediction ``left + up - up_left`` (the
#   difference of neighbouring rows' row deltas), so decoding is two cumulative sums, no per-pixel
#   loop. Residuals are zigzag-mapped (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...) to one byte each; 255
#   escapes to a 32-bit value at the end of the blob. On film labels most residuals are a few
#   codes: one byte plane an entropy coder (the Parquet column's zstd or brotli) squeezes to 2-3
#   bits a pixel, where the dataset's two planes of row deltas take 3.5-4.
# * ``uncertainty``: the codes divided by the frame's greatest common step (8 when the labelling
#   resolution is the stored one: uncertainty is rounded to 1/4 px), one byte each, 255 escapes.
#
# The ``valid`` precision (default) releases these values only at valid pixels: an invalid pixel
# carries no label (the trainer masks it), yet its leftover value costs a quarter of the bytes. The
# encoder fills invalid pixels from their row's nearest valid pixel (cheap to code), hydration marks
# them not finite (code 65535, NaN when decoded). Valid pixels' disparity codes, both masks and every
# other column are the dataset's, exactly; the uncertainty is within 1/16 px (1/8 px steps, see
# UNCERTAINTY_RELEASE_STEP_PX; exact when the dataset's already is on that grid). The ``exact`` precision keeps every pixel: hydrated blobs are
# then byte for byte the dataset's. Other disparity codecs (``png16``) are kept as they are.

#: Release label precisions: ``valid`` (codes exact at valid pixels) and ``exact`` (every byte).
PRECISIONS: tuple[str, ...] = ("valid", "exact")
#: How the label blobs of a release are packed (the ``depthmine.label_packing`` file metadata).
PACKING = "grad-zz8/1"
_ESCAPE = 255
#: With the ``valid`` precision the uncertainty is released in steps of 1/8 px (4 codes of 1/32 px):
#: within 1/16 px of the dataset's. It is an error scale that ranks labels (labelling rounds it to
#: 1/4 px; a stored size half the labelling one makes that 1/8 px), and its finer digits, left by the
#: resize's averaging, cost as many bytes as the disparity itself.
UNCERTAINTY_RELEASE_STEP_PX = 1.0 / 8.0
_UNC_ROUND = 4
_NAN_CODE = 65535


def _bytes_to_escaped(values: np.ndarray) -> bytes:
    """Non-negative integers as one byte each, 255 escaping to a uint32 after the byte plane."""
    v = values.reshape(-1)
    esc = v >= _ESCAPE
    plane = np.where(esc, _ESCAPE, v).astype(np.uint8)
    extra = v[esc].astype("<u4")
    return np.uint32(extra.size).astype("<u4").tobytes() + plane.tobytes() + extra.tobytes()


def _escaped_to_values(blob: bytes | memoryview, n: int, what: str) -> np.ndarray:
    buf = np.frombuffer(blob, np.uint8)
    if buf.size < 4:
        raise ValueError(f"packed {what} is truncated")
    n_esc = int(buf[:4].view("<u4")[0])
    if buf.size != 4 + n + 4 * n_esc:
        raise ValueError(f"packed {what} has {buf.size} bytes, expected {4 + n + 4 * n_esc}")
    out = buf[4 : 4 + n].astype(np.int32)
    if n_esc:
        esc = np.flatnonzero(buf[4 : 4 + n] == _ESCAPE)
        if esc.size != n_esc:
            raise ValueError(f"packed {what}: {esc.size} escapes, header says {n_esc}")
        out[esc] = buf[4 + n :].view("<u4")
    return out


def _fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``x`` with each invalid pixel set to its row's nearest valid pixel to the left (else to the
    right); rows without a valid pixel copy the nearest row that has one. Only valid pixels matter
    to the decoder; this makes the others cost next to nothing."""
    h, w = x.shape
    if valid.all() or not valid.any():
        return x if valid.any() else np.zeros_like(x)
    cols = np.arange(w)
    left = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    right = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]
    idx = np.where(left >= 0, left, np.minimum(right, w - 1))
    out = np.take_along_axis(x, idx, axis=1)
    has = valid.any(axis=1)
    if not has.all():
        rows = np.arange(h)
        up = np.maximum.accumulate(np.where(has, rows, -1))
        down = np.minimum.accumulate(np.where(has, rows, h)[::-1])[::-1]
        src = np.where(up >= 0, up, down)
        out = out[src]
    return out


def disparity_codes(blob: bytes | memoryview, codec: str, height: int, width: int) -> np.ndarray:
    """A dataset disparity blob's 16-bit codes (``u16d`` or ``u16``), HxW uint16."""
    if codec == "u16d":
        return np.cumsum(join_bytes(blob, height, width), axis=1, dtype=np.uint16)
    if codec == "u16":
        return np.frombuffer(blob, "<u2").reshape(height, width)
    raise ValueError(f"disparity codec {codec!r} has no packed form")


def encode_disparity_codes(codes: np.ndarray, codec: str) -> bytes:
    """16-bit codes as a dataset blob of ``codec`` (``u16d``, ``u16``): :func:`encode_disparity`'s bytes."""
    if codec == "u16d":
        delta = np.empty_like(codes)
        delta[:, :1] = codes[:, :1]
        np.subtract(codes[:, 1:], codes[:, :-1], out=delta[:, 1:])
        return split_bytes(delta)
    if codec == "u16":
        return codes.astype("<u2", copy=False).tobytes()
    raise ValueError(f"disparity codec {codec!r} has no packed form")


def _class_order(valid: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """Pixel positions grouped sky, then other valid, then invalid (row-major within each): the
    residuals of a group are alike (sky: zero; invalid: filled), so the entropy coder's tables fit."""
    v, k = valid.reshape(-1), sky.reshape(-1)
    return np.concatenate([np.flatnonzero(k), np.flatnonzero(v & ~k), np.flatnonzero(~v & ~k)])


def pack_disparity(codes: np.ndarray, valid: np.ndarray, sky: np.ndarray, only_valid: bool = True) -> bytes:
    """Disparity codes (HxW uint16) as the release's packed blob (residuals in mask-class order);
    ``only_valid``: invalid pixels are filled first, their codes are not kept."""
    x = codes.astype(np.int32)
    if only_valid:
        x = _fill_invalid(x, valid)
    hd = np.diff(x, axis=1, prepend=0)
    e = np.diff(hd, axis=0, prepend=0).astype(np.int64).reshape(-1)
    return _bytes_to_escaped(((e << 1) ^ (e >> 63))[_class_order(valid, sky)])


def unpack_disparity(
    blob: bytes | memoryview, valid: np.ndarray, sky: np.ndarray, only_valid: bool = True
) -> np.ndarray:
    """Inverse of :func:`pack_disparity`: HxW uint16 codes; with ``only_valid`` 65535 at invalid pixels."""
    h, w = valid.shape
    z = np.empty(h * w, np.int32)
    # back from mask-class order (see _class_order) by boolean scatters: on a label's coherent
    # masks, half the time of building the permutation and scattering through it
    values = _escaped_to_values(blob, h * w, "disparity")
    fv, fk = valid.reshape(-1), sky.reshape(-1)
    rest = fv & ~fk
    a = int(np.count_nonzero(fk))
    b = a + int(np.count_nonzero(rest))
    z[fk] = values[:a]
    z[rest] = values[a:b]
    z[~(fv | fk)] = values[b:]
    # zigzag back to signed residuals, then the row deltas and the codes, in place and in 16-bit
    # arithmetic: it wraps, and the codes are 16-bit, so the sums are exact (the release file's
    # SHA-256 was checked: no range test per pixel needed)
    q = ((z >> 1) ^ -(z & 1)).astype(np.uint16).reshape(h, w)
    np.cumsum(q, axis=0, dtype=np.uint16, out=q)
    np.cumsum(q, axis=1, dtype=np.uint16, out=q)
    if only_valid:
        np.putmask(q, ~valid, _NAN_CODE)
    return q


def pack_uncertainty(codes: np.ndarray, valid: np.ndarray, only_valid: bool = True) -> bytes:
    """Uncertainty codes (HxW uint16, 1/32 px, 65535 = NaN) as the release's packed blob: the
    frame's step (the codes' greatest common divisor, NaN aside; 2 bytes), then the codes / step of
    every pixel, or (``only_valid``) of the valid pixels only, rounded to
    :data:`UNCERTAINTY_RELEASE_STEP_PX`, one byte each."""
    x = codes.astype(np.int64).reshape(-1)
    if only_valid:
        x = x[valid.reshape(-1)]
        q = _UNC_ROUND
        x = np.where(x == _NAN_CODE, _NAN_CODE, np.minimum(np.rint(x / q).astype(np.int64) * q, _NAN_CODE - q))
    finite = x != _NAN_CODE
    step = int(np.gcd.reduce(x[finite])) if finite.any() else 1
    step = step if 0 < step < _NAN_CODE else 1
    v = np.where(finite, x // step, _NAN_CODE)
    return np.uint16(step).astype("<u2").tobytes() + _bytes_to_escaped(v)


def unpack_uncertainty(blob: bytes | memoryview, valid: np.ndarray, only_valid: bool = True) -> np.ndarray:
    """Inverse of :func:`pack_uncertainty`: HxW uint16 codes; with ``only_valid`` 65535 at invalid pixels."""
    buf = memoryview(blob)
    step = int(np.frombuffer(buf[:2], "<u2")[0])
    m = valid.reshape(-1)
    v = _escaped_to_values(buf[2:], int(np.count_nonzero(m)) if only_valid else m.size, "uncertainty")
    q = v.astype(np.uint16) if step == 1 else np.where(v == _NAN_CODE, _NAN_CODE, v * step).astype(np.uint16)
    if not only_valid:
        return q.reshape(valid.shape)
    out = np.full(m.size, _NAN_CODE, np.uint16)
    out[m] = q
    return out.reshape(valid.shape)


_PACKED_CODECS = ("u16d", "u16")


def pack_labels(t: pa.Table, precision: str = "valid") -> pa.Table:
    """Rows with the dataset's label blobs -> rows with the release's packed ``disparity`` and
    ``uncertainty`` (see the label packing notes above); every other column unchanged."""
    only = precision == "valid"
    disp, unc = [], []
    cols = t.select(["disparity", "disparity_codec", "uncertainty", "valid", "sky", "height", "width"]).to_pydict()
    for d, codec, u, v, k, h, w in zip(*cols.values()):
        valid, sky = unpack_mask(v, h, w), unpack_mask(k, h, w)
        packed = codec in _PACKED_CODECS
        disp.append(pack_disparity(disparity_codes(d, codec, h, w), valid, sky, only) if packed else d)
        unc.append(None if u is None else pack_uncertainty(join_bytes(u, h, w), valid, only))
    t = _set(t, "disparity", pa.array(disp, pa.binary()))
    return _set(t, "uncertainty", pa.array(unc, pa.binary()))


def unpack_labels(t: pa.Table, labels: dict[str, Any]) -> pa.Table:
    """Inverse of :func:`pack_labels`: the dataset's blobs (``labels``: the movie's ``labels`` entry
    of ``release.json``; empty for a version-1 release, whose blobs are the dataset's already), and
    the columns under the current shard schema's names (a release of an older schema version).

    Hydration runs this on every released row while the copy decodes, so it reads the packed blobs
    in place and writes each column's output into one buffer (no per-row ``bytes`` copies, less
    time holding the GIL the decoding thread needs)."""
    t = current_names(t)
    if not labels.get("packing"):
        return t
    if labels["packing"] != PACKING:
        raise BadInputError(None, f"release label packing {labels['packing']!r} is unknown", "upgrade depthmine")
    only = labels.get("precision") == "valid"
    n_rows = t.num_rows
    heights = t.column("height").to_numpy(zero_copy_only=False).astype(np.int64)
    widths = t.column("width").to_numpy(zero_copy_only=False).astype(np.int64)
    codecs = t.column("disparity_codec").to_pylist()
    disp_in, unc_in = _blob_views(t.column("disparity")), _blob_views(t.column("uncertainty"))
    valid_in, sky_in = _blob_views(t.column("valid")), _blob_views(t.column("sky"))
    packed = [c in _PACKED_CODECS for c in codecs]
    disp_out = _BlobColumn([2 * h * w if p else len(d or b"") for h, w, p, d in zip(heights, widths, packed, disp_in)])
    unc_out = _BlobColumn([0 if u is None else 2 * h * w for h, w, u in zip(heights, widths, unc_in)])
    for r in range(n_rows):
        h, w = int(heights[r]), int(widths[r])
        valid, sky = unpack_mask(valid_in[r], h, w), unpack_mask(sky_in[r], h, w)
        if packed[r]:
            q = unpack_disparity(disp_in[r], valid, sky, only)
            if codecs[r] == "u16d":
                delta = np.empty_like(q)
                delta[:, :1] = q[:, :1]
                np.subtract(q[:, 1:], q[:, :-1], out=delta[:, 1:])
                disp_out.planes(r, delta)
            else:
                disp_out.words(r, q)
        else:
            disp_out.copy(r, disp_in[r])
        if unc_in[r] is not None:
            unc_out.planes(r, unpack_uncertainty(unc_in[r], valid, only))
    t = _set(t, "disparity", disp_out.array([d is None for d in disp_in]))
    return _set(t, "uncertainty", unc_out.array([u is None for u in unc_in]))


def _blob_views(col: pa.ChunkedArray) -> list[memoryview | None]:
    """Each row of a binary column as a memoryview of Arrow's buffer (no copy); None for nulls."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if len(arr) == 0:
        return []
    if arr.type == pa.large_binary():
        off_type = np.int64
    else:
        arr = arr.cast(pa.binary())
        off_type = np.int32
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, off_type)[arr.offset : arr.offset + len(arr) + 1]
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    return [
        None if nulls is not None and nulls[i] else data[int(offsets[i]) : int(offsets[i + 1])] for i in range(len(arr))
    ]


class _BlobColumn:
    """A binary column built in one buffer: row ``r`` gets ``sizes[r]`` bytes, written in place."""

    def __init__(self, sizes: list[int]):
        self.offsets = np.zeros(len(sizes) + 1, np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.data = np.empty(int(self.offsets[-1]), np.uint8)

    def _slot(self, r: int) -> np.ndarray:
        return self.data[self.offsets[r] : self.offsets[r + 1]]

    def planes(self, r: int, codes: np.ndarray) -> None:
        """:func:`pipeline.shards.codec.split_bytes` of ``codes`` (all low bytes, then all high)."""
        b = np.ascontiguousarray(codes, "<u2").reshape(-1).view(np.uint8)
        slot = self._slot(r).reshape(2, -1)
        slot[0] = b[0::2]
        slot[1] = b[1::2]

    def words(self, r: int, codes: np.ndarray) -> None:
        self._slot(r)[:] = np.ascontiguousarray(codes, "<u2").reshape(-1).view(np.uint8)

    def copy(self, r: int, blob: memoryview | None) -> None:
        if blob is not None:
            self._slot(r)[:] = np.frombuffer(blob, np.uint8)

    def array(self, null: list[bool]) -> pa.Array:
        big = self.offsets[-1] >= 2**31 - 1
        offsets = pa.py_buffer(self.offsets if big else self.offsets.astype(np.int32))
        validity = pa.array([not x for x in null], pa.bool_()).buffers()[1] if any(null) else None
        kind = pa.large_binary() if big else pa.binary()
        arr = pa.Array.from_buffers(kind, len(null), [validity, offsets, pa.py_buffer(self.data)], sum(null))
        return arr.cast(pa.binary()) if big else arr


def _set(t: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = t.schema.get_field_index(name)
    field_ = t.schema.field(name)
    return t.set_column(i, field_, values.cast(field_.type))


@dataclass
class ReleaseConfig:
    """What goes into a release.

    Attributes:
        splits: the splits to release (None: all).
        movies: the movie ids to release (None: every movie of the dataset).
        titles: a title per movie id for the README (default: the movie id).
        compression: Parquet compression of the label files: ``zstd`` (fast) or ``brotli`` (about
            15% smaller label files at level 11, and about ten times slower to write). The values
            are the same bytes whatever the choice.
        compression_level: the codec's level (None: zstd 19, brotli 11).
        precision: ``valid`` (default): disparity and uncertainty released at valid pixels only
            (disparity codes exact there, uncertainty within 1/16 px; invalid pixels, which carry
            no label, come back not finite), or ``exact``: every byte of every label, so hydrated
            label columns are the dataset's bytes (a third to a half larger).
    """

    splits: list[str] | None = None
    movies: list[str] | None = None
    titles: dict[str, str] = field(default_factory=dict)
    compression: str = "zstd"
    compression_level: int | None = None
    precision: str = "valid"

    def __post_init__(self) -> None:
        bad = [s for s in self.splits or [] if s not in SPLITS]
        if bad:
            raise ConfigError(f"unknown split(s) {bad}; valid: {', '.join(SPLITS)}")
        if self.splits is not None and not self.splits:
            raise ConfigError("no split to release (give at least one of train, val, test)")
        if self.compression not in ("zstd", "brotli"):
            raise ConfigError(f"release compression {self.compression!r}: expected zstd or brotli")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"release precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")

    @property
    def level(self) -> int:
        if self.compression_level is not None:
            return int(self.compression_level)
        return 11 if self.compression == "brotli" else 19


@dataclass
class ReleasedMovie:
    """One movie of a release, as listed in ``release.json``."""

    movie_id: str
    title: str
    key: str
    rows: int
    rejected_rows: int
    split_counts: dict[str, int]
    signature: dict[str, Any]
    geometry: dict[str, Any]
    shard_config: dict[str, Any]
    meta: dict[str, Any]
    files: dict[str, dict[str, Any]]
    dataset_bytes: int = 0
    labels: dict[str, Any] = field(default_factory=dict)  # {"packing", "precision"}; {} in version-1 releases

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReleasedMovie:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Release:
    """A release read back (:func:`read_release`): its folder and its movies."""

    root: Path
    movies: dict[str, ReleasedMovie]
    meta: dict[str, Any]

    def labels_path(self, movie_id: str) -> Path:
        return self.root / self.movies[movie_id].files["labels"]["path"]

    def rejected_path(self, movie_id: str) -> Path:
        return self.root / self.movies[movie_id].files["rejected"]["path"]

    def read_labels(self, movie_id: str, unpack: bool = False) -> pa.Table:
        """The movie's released rows (columns under their current names); ``unpack``: disparity and
        uncertainty as the dataset's blobs."""
        t = current_names(pq.read_table(self.labels_path(movie_id)))
        return unpack_labels(t, self.movies[movie_id].labels) if unpack else t

    def read_rejected(self, movie_id: str) -> pa.Table:
        return pq.read_table(self.rejected_path(movie_id)).cast(REJECTED_SCHEMA)


def movie_views(meta: dict[str, Any]) -> tuple[bool, set[int]]:
    """Which eye ingest stored: ``(right_by_default, shots_flipped)`` from a movie's ingest meta.

    The stored picture is the view its label belongs to: the right eye when the eyes were exchanged
    (``disparity.swap_eyes`` or ``swap_eyes: always``), and the other one in the shots that
    ``swap_eyes: auto`` relabelled.
    """
    cfg = meta.get("config") or {}
    base = bool((cfg.get("disparity") or {}).get("swap_eyes")) or cfg.get("swap_eyes") == "always"
    flipped = {int(s) for s in (meta.get("swapped_eyes") or {}).get("corrected_shots") or []}
    return base, flipped


def _signature(movie: MovieManifest, frames: pa.Table) -> dict[str, Any]:
    meta = movie.meta
    fps = float(meta.get("fps") or 0.0)
    shots = [[int(s["start_frame"]), int(s["end_frame"])] for s in meta.get("shots") or []]
    frame_count = shots[-1][1] if shots else int(meta.get("frame_count") or 0)
    order = np.argsort(frames.column("frame_index").to_numpy(), kind="stable")
    idx = frames.column("frame_index").to_numpy()[order]
    hashes = frames.column("phash").to_numpy()[order]
    return {
        "fps": fps,
        "frame_count": frame_count,
        "duration_s": round(frame_count / fps, 6) if fps else None,
        "shots": shots,
        "shot_start_s": [round(s / fps, 6) for s, _ in shots] if fps else [],
        "hashes": [[int(i), to_hex(int(h))] for i, h in zip(idx, hashes)],
    }


def _geometry(movie: MovieManifest, frames: pa.Table) -> dict[str, Any]:
    meta = movie.meta
    first = (
        {
            c: frames.column(c)[0].as_py()
            for c in ("crop_x", "crop_y", "crop_w", "crop_h", "source_width", "source_height", "width", "height")
        }
        if frames.num_rows
        else {}
    )
    for c in ("crop_x", "crop_y", "crop_w", "crop_h", "width", "height"):
        if frames.num_rows and len(pc.unique(frames.column(c))) > 1:
            raise BadInputError(
                movie.folder,
                f"rows of {movie.movie_id} have different {c} values",
                "a movie's rows share one crop box and stored size",
            )
    eye = meta.get("eye_size") or [first.get("source_width"), first.get("source_height")]
    return {
        "layout": meta.get("layout"),
        "eye_size": [int(eye[0] or 0), int(eye[1] or 0)],
        "crop": {k[5:]: int(first[k]) for k in ("crop_x", "crop_y", "crop_w", "crop_h")} if first else meta.get("crop"),
        "store_size": [int(first["width"]), int(first["height"])] if first else None,
    }


def _public_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The ingest meta minus where the film was on the publisher's disk (a file name is kept)."""
    out = {k: v for k, v in meta.items() if k not in ("source",)}
    src = meta.get("source") or {}
    if isinstance(src, dict):
        out["source"] = {"file": Path(str(src.get("path") or "")).name, "fingerprint": src.get("fingerprint")}
    return out


def release_movie(
    dataset_root: str, movie: MovieManifest, out: str | os.PathLike, config: ReleaseConfig, progress: Any = None
) -> ReleasedMovie | None:
    """Write one movie's label and rejected files into ``out/movies/<movie_id>/``.

    Reads the movie's shards one row group at a time, hashes each stored picture, drops the image
    columns and keeps every other value as is. Returns None when no row of the chosen splits is left.
    """
    splits = set(config.splits or SPLITS)
    right_default, flipped = movie_views(movie.meta)
    parts: list[pa.Table] = []
    for shard in movie.shards:
        pf = open_shard(f"{dataset_root.rstrip('/')}/{movie.folder}/{shard.path}")
        for g in range(pf.metadata.num_row_groups):
            t = current_names(pf.read_row_group(g))  # a shard of an older schema version: current names
            mask = pc.is_in(t.column("split"), pa.array(sorted(splits)))
            t = t.filter(mask)
            if not t.num_rows:
                continue
            hashes = [phash(decode_image(b.as_buffer())) for b in t.column("image")]
            views = [
                "right" if right_default != (int(s) in flipped) else "left" for s in t.column("shot_id").to_pylist()
            ]
            t = t.drop_columns(list(IMAGE_COLUMNS))
            t = t.append_column("phash", pa.array(hashes, pa.uint64())).append_column(
                "view", pa.array(views, pa.string())
            )
            parts.append(pack_labels(t.select(LABEL_SCHEMA.names).cast(LABEL_SCHEMA), config.precision))
            if progress is not None:
                progress(t.num_rows)
    if not parts:
        return None
    frames = pa.concat_tables(parts).combine_chunks()
    frames = frames.take(pc.sort_indices(frames, [("frame_index", "ascending")]))
    rejected = (
        pq.read_table(f"{dataset_root.rstrip('/')}/{movie.folder}/{movie.rejected.path}")
        if movie.rejected
        else REJECTED_SCHEMA.empty_table()
    )
    rejected = rejected.filter(pc.is_in(rejected.column("split"), pa.array(sorted(splits))))

    folder = Path(out) / "movies" / movie.movie_id
    folder.mkdir(parents=True, exist_ok=True)
    # no dictionary for the label blobs (all distinct: a dictionary page is only work); small row
    # groups, so hydration holds a few frames' labels in memory at a time. The column docs are in
    # release.json once, not in every file's footer (with the Arrow schema they were 12 kB a file:
    # more than a short movie's masks)
    opts = dict(compression=config.compression, compression_level=config.level, write_statistics=False)
    labels = {"packing": PACKING, "precision": config.precision}
    files = {}
    for name, table, kind in ((LABELS_NAME, frames, "labels"), (REJECTED_NAME, rejected, "rejected")):
        path = folder / name
        with atomic_path(path) as tmp:
            strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
            meta = {b"depthmine.release_version": str(RELEASE_VERSION).encode(), b"depthmine.kind": kind.encode()}
            if kind == "labels":
                meta |= {f"depthmine.label_{k}".encode(): v.encode() for k, v in labels.items()}
            plain = pa.schema([pa.field(f.name, f.type, f.nullable) for f in table.schema], metadata=meta)
            pq.write_table(
                table.cast(plain), tmp, row_group_size=32, use_dictionary=strings, store_schema=False, **opts
            )
        files[kind] = {
            "path": f"movies/{movie.movie_id}/{name}",
            "rows": table.num_rows,
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    counts: dict[str, int] = {}
    for s in frames.column("split").to_pylist():
        counts[s] = counts.get(s, 0) + 1
    return ReleasedMovie(
        movie_id=movie.movie_id,
        title=config.titles.get(movie.movie_id, movie.movie_id),
        key=movie.key,
        rows=frames.num_rows,
        rejected_rows=rejected.num_rows,
        split_counts=dict(sorted(counts.items())),
        signature=_signature(movie, frames),
        geometry=_geometry(movie, frames),
        shard_config=dict(movie.shard_config),
        meta=_public_meta(movie.meta),
        files=files,
        dataset_bytes=int(movie.bytes),
        labels=labels,
    )


def write_release_manifest(out: str | os.PathLike, movies: Sequence[ReleasedMovie], source: dict[str, Any]) -> Path:
    """Write ``README.md`` and then ``release.json`` (last: it makes the release complete)."""
    out = Path(out)
    data = {
        "format": RELEASE_FORMAT,
        "release_version": RELEASE_VERSION,
        "schema_version": int(FRAME_SCHEMA.metadata[b"depthmine.schema_version"]),
        "created": utc_now(),
        "source": source,
        "totals": {
            "movies": len(movies),
            "rows": sum(m.rows for m in movies),
            "bytes": sum(f["bytes"] for m in movies for f in m.files.values()),
            "dataset_bytes": sum(m.dataset_bytes for m in movies),
        },
        "movies": {m.movie_id: m.to_dict() for m in movies},
        "columns": json.loads(LABEL_SCHEMA.metadata[b"depthmine.columns"]),
    }
    with atomic_path(out / "README.md") as tmp:
        Path(tmp).write_text(_readme(movies), encoding="utf-8")
    return write_json_atomic(out / RELEASE_MANIFEST, data)


def _readme(movies: Sequence[ReleasedMovie]) -> str:
    lines = [
        "# A depthmine labels-only release",
        "",
        "This folder holds depth labels (disparity, validity and sky masks, statistics) mined from the films",
        "below, but no picture of them. To rebuild the full dataset you need your own copy of each film",
        "(any rip of the same cut: another resolution, codec, container or 3D layout is fine).",
        "",
        "## Rebuild (hydrate) the dataset",
        "",
        "```",
        "depthmine hydrate RELEASE --movie MOVIE_ID=/path/to/your/copy.mkv [--movie ...] --out DATASET",
        "depthmine verify DATASET",
        "```",
        "",
        "Separate eye files: `--movie MOVIE_ID=left.mkv,right.mkv`. Frames that cannot be found in your copy",
        "are listed with the reason and left out, never guessed; a copy of another film or another cut is",
        "refused. Not supported: PAL copies (25 fps speed-up of a 24 fps film) and other edits of the film.",
        "",
        "## Films",
        "",
        "| movie id | title | cut: duration | fps | frames | shots | released frames |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in movies:
        sig = m.signature
        dur = sig.get("duration_s") or 0.0
        hms = f"{int(dur // 3600)}:{int(dur % 3600 // 60):02d}:{dur % 60:06.3f}"
        lines.append(
            f"| {m.movie_id} | {m.title} | {hms} | {sig.get('fps', 0):g} | {sig.get('frame_count')} | "
            f"{len(sig.get('shots', []))} | {m.rows} |"
        )
    return "\n".join(lines) + "\n"


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: the release folder is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / RELEASE_MANIFEST).exists() and not (out / "movies").is_dir():
        raise ConfigError(f"{out}: folder is not empty and is not a release; give an empty or new folder")


def plan_release(dataset: str | os.PathLike, config: ReleaseConfig) -> tuple[str, Any, list[MovieManifest]]:
    """Read the dataset's manifest and pick the movies to release; fails before any work.

    Raises:
        BadInputError: no dataset manifest.
        ConfigError: an unknown movie id, or nothing to release.
    """
    manifest = read_manifest(dataset)
    root = manifest.root
    wanted = config.movies if config.movies is not None else list(manifest.movies)
    unknown = [m for m in wanted if m not in manifest.movies]
    if unknown:
        raise ConfigError(
            f"movie(s) {unknown} are not in {dataset}; its movies: {', '.join(manifest.movies) or 'none'}"
        )
    movies = [manifest.movies[m] for m in wanted]
    _refuse_clips(root, movies)
    splits = set(config.splits or SPLITS)
    movies = [m for m in movies if set(m.split_counts) & splits]
    if not movies:
        raise ConfigError(f"{dataset}: no frame of split(s) {sorted(splits)} in the chosen movies: nothing to release")
    return root, manifest, movies


def _refuse_clips(root: str, movies: list[MovieManifest]) -> None:
    """Clips-mode movies cannot be released yet: the release format carries one label per frame,
    so their clip columns and temporal flow would be lost and hydration would give single frames."""
    from pipeline.shards.clips import is_clip_dataset

    clips = [m.movie_id for m in movies if m.shards and is_clip_dataset(f"{root}/{m.folder}/{m.shards[0].path}")]
    if clips:
        raise ConfigError(
            f"movie(s) {', '.join(clips)} were ingested in clips mode (sampling.mode=clips): labels-only releases "
            "hold single frames and would lose their clips and temporal flow; release a frames-mode dataset"
        )


def make_release(
    dataset: str | os.PathLike, out: str | os.PathLike, config: ReleaseConfig | None = None
) -> dict[str, Any]:
    """Release ``dataset`` (labels only) into the folder ``out``; returns the ``release.json`` data."""
    config = config or ReleaseConfig()
    out = Path(out)
    _check_out(out)
    root, manifest, movies = plan_release(dataset, config)
    released = [r for m in movies if (r := release_movie(root, m, out, config)) is not None]
    write_release_manifest(
        out, released, {"dataset_version": manifest.version, "splits": config.splits or list(SPLITS)}
    )
    return json.loads((out / RELEASE_MANIFEST).read_text())


def read_release(path: str | os.PathLike, check: bool = True) -> Release:
    """Open a release folder (or its ``release.json``) and check its files against their checksums.

    Raises:
        BadInputError: not a release, a newer release version, or a missing or altered file.
    """
    p = Path(path)
    root = p.parent if p.name == RELEASE_MANIFEST else p
    mpath = root / RELEASE_MANIFEST
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(mpath, "no release manifest", "give the folder `depthmine release` wrote") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(mpath, f"release manifest is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != RELEASE_FORMAT:
        raise BadInputError(mpath, "not a depthmine release manifest")
    if int(data.get("release_version", 0)) > RELEASE_VERSION:
        raise BadInputError(
            mpath,
            f"release version {data['release_version']} is newer than this depthmine ({RELEASE_VERSION})",
            "upgrade depthmine",
        )
    movies = {mid: ReleasedMovie.from_dict(m) for mid, m in data.get("movies", {}).items()}
    if check:
        for m in movies.values():
            for f in m.files.values():
                fp = root / f["path"]
                if not fp.exists():
                    raise BadInputError(fp, "release file is missing", "download the release again")
                if fp.stat().st_size != int(f["bytes"]) or sha256_file(fp) != f["sha256"]:
                    raise BadInputError(fp, "release file does not match its checksum", "download the release again")
    return Release(root=root, movies=movies, meta={k: v for k, v in data.items() if k != "movies"})
