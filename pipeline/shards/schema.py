"""The shard schema: one Parquet row per kept frame, one per rejected frame, versioned.

The schema is the contract between the data side (ingest writes rows) and the training side
(datasets read them), so it lives in one place, carries its version and per-column documentation
in the Parquet metadata (any tool that opens a shard can read what each column means), and is
checked by :func:`check_schema` when a shard is verified.

Older versions stay readable as written, never rewritten: a column renamed since is listed in
:data:`RENAMED_COLUMNS`, and readers take a file's columns through :func:`current_names` (a table
or schema as read) and :func:`stored_names` (the columns to ask a file for), so every reader sees
the current names whichever version wrote the file.

Encoded columns (``image``, ``disparity``, masks, ``uncertainty``) are stored as binary blobs in
formats any language reads (JPEG/PNG/WebP, 16-bit codes or 16-bit PNG, bit-packed bytes);
:mod:`pipeline.shards.codec` holds the exact encodings.
"""

from __future__ import annotations

import json

import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION",
    "RENAMED_COLUMNS",
    "current_names",
    "stored_names",
    "STATS_COLUMNS",
    "PROVENANCE_COLUMNS",
    "CROP_COLUMNS",
    "ID_COLUMNS",
    "FRAME_SCHEMA",
    "CLIP_COLUMNS",
    "TEMPORAL_FLOW_COLUMNS",
    "CLIP_FRAME_SCHEMA",
    "frame_schema_for",
    "REJECTED_SCHEMA",
    "BLOB_COLUMNS",
    "ARRAY_COLUMNS",
    "COLUMN_DOCS",
    "physical_columns",
    "schema_metadata",
    "check_schema",
]

# Bump on any change a reader must know about; readers refuse a newer schema and read every older one.
# 2: config_hash renamed ingest_key (RENAMED_COLUMNS).
SCHEMA_VERSION = 2

#: Columns renamed since schema version 1: old name -> current name. Version 2 named the
#: ``config_hash`` column for what it holds, the ingest key (``pipeline.ingest.ingest_key`` of the
#: source fingerprint and the resolved configuration), not a hash of a configuration.
RENAMED_COLUMNS: dict[str, str] = {"config_hash": "ingest_key"}

ID_COLUMNS: tuple[str, ...] = ("movie_id", "shot_id", "frame_index", "pts_seconds", "split")

STATS_COLUMNS: tuple[str, ...] = (
    "valid_fraction",
    "lr_pass_fraction",
    "vertical_fail_fraction",
    "disparity_min",
    "disparity_max",
    "disparity_p05",
    "disparity_p50",
    "disparity_p95",
    "disparity_range_px",
    "sky_fraction",
)

PROVENANCE_COLUMNS: tuple[str, ...] = ("flow_backend", "ingest_key", "source_fingerprint", "project_version")

CROP_COLUMNS: tuple[str, ...] = ("crop_x", "crop_y", "crop_w", "crop_h", "source_width", "source_height")

COLUMN_DOCS: dict[str, str] = {
    "movie_id": "movie identifier (the catalog's id)",
    "shot_id": "0-based shot index within the movie",
    "frame_index": "0-based index of the decoded frame in presentation order",
    "pts_seconds": "presentation time of the frame in seconds",
    "split": "train | val | test",
    "width": "stored image width in pixels",
    "height": "stored image height in pixels",
    "image": "left view, encoded image bytes (JPEG by default; PNG or WebP), RGB when decoded",
    "image_codec": "codec of image/right_image: jpeg | png | webp",
    "disparity": (
        "left-view disparity in pixels of the stored image (Middlebury: left x matches right x - d), as "
        "16-bit codes q with disparity = disparity_offset + disparity_scale * q; q = 65535 marks a "
        "non-finite value (decoded as NaN). disparity_codec u16d: per row, q[0], q[1]-q[0], ... "
        "(modulo 65536) as byte planes, all low bytes then all high bytes; u16: height*width "
        "little-endian uint16, row-major; png16: a 16-bit grayscale PNG of q. disparity_scale = 1/32 px "
        "while the frame's range is below 2047.9 px, so the rounding error is at most 1/64 px"
    ),
    "disparity_codec": "u16d | u16 | png16 (see disparity)",
    "disparity_scale": "px per code (1/32 unless the frame's disparity range exceeds 2047.9 px)",
    "disparity_offset": "disparity in px of code 0 (the frame's minimum finite disparity)",
    "valid": "valid-disparity mask: numpy.packbits(mask.ravel()) (big bit order, row-major, height*width bits)",
    "uncertainty": (
        "per-pixel uncertainty in px (an error scale: left-right error, flow-matcher disagreement, nearness to edges and occlusions), null if absent: uint16 codes of 1/32 px "
        "(65535 = not finite) stored as byte planes, all low bytes then all high bytes, row-major"
    ),
    "sky": "sky mask, bit-packed like valid",
    "right_image": "right view, encoded like image; null unless the writer stored right views",
    "crop_x": "left edge of the crop box in source pixels of one full-resolution eye",
    "crop_y": "top edge of the crop box in source pixels of one full-resolution eye",
    "crop_w": "crop box width in source pixels (stored width / crop_w is the resize factor)",
    "crop_h": "crop box height in source pixels (stored height / crop_h is the resize factor)",
    "source_width": "width of one full-resolution eye of the source movie",
    "source_height": "height of one full-resolution eye of the source movie",
    "valid_fraction": "fraction of pixels with valid disparity",
    "lr_pass_fraction": "fraction of pixels passing the left-right consistency check",
    "vertical_fail_fraction": "share of the frame where the fitted rig model's |vertical flow| exceeds the threshold",
    "disparity_min": "minimum valid disparity (px)",
    "disparity_max": "maximum valid disparity (px)",
    "disparity_p05": "5th percentile of valid disparity (px)",
    "disparity_p50": "median valid disparity (px)",
    "disparity_p95": "95th percentile of valid disparity (px)",
    "disparity_range_px": "disparity range used by the rejection rule (px)",
    "sky_fraction": "fraction of pixels labelled sky",
    "flow_backend": "optical-flow backend that produced the disparity",
    "ingest_key": (
        "the ingest key: hash of the source fingerprint and the resolved ingest configuration, the name of "
        "the movie's folder (movies/<movie_id>/<ingest_key>); named config_hash before schema version 2"
    ),
    "source_fingerprint": "fingerprint of the source movie file",
    "project_version": "depthmine version that wrote the row",
    "reason": "why the frame was rejected",
    "clip_id": "clips mode: the frame's clip, 0-based within the movie (sampling rule 4c)",
    "clip_pos": "clips mode: the frame's position in its clip, 0-based",
    "clip_reason": (
        "clips mode: empty for a labelled frame; else why the per-frame checks rejected it. Such a row "
        "keeps its image (and its place in the clip) with an empty label: disparity all non-finite, "
        "valid and sky all false, no uncertainty"
    ),
    "temporal_flow": (
        "optical flow from this frame's left view to the next frame of its clip, in pixels of the stored "
        "image (x then y), each component as 16-bit codes like disparity (u16d planes: height*width*2 "
        "bytes for x, then as many for y; value = offset + scale * code, 65535 = not finite); null on a "
        "clip's last frame or when not stored (ingest store_temporal_flow)"
    ),
    "temporal_flow_offset_x": "px of code 0 of the flow's x component",
    "temporal_flow_offset_y": "px of code 0 of the flow's y component",
    "temporal_flow_scale_x": "px per code of the flow's x component (1/32 unless its range exceeds 2047.9 px)",
    "temporal_flow_scale_y": "px per code of the flow's y component",
    "temporal_flow_valid": "forward-backward consistent pixels of temporal_flow, bit-packed like valid; null with it",
}

_FRAME_FIELDS: list[tuple[str, pa.DataType, bool]] = [
    ("movie_id", pa.string(), False),
    ("shot_id", pa.int32(), False),
    ("frame_index", pa.int64(), False),
    ("pts_seconds", pa.float64(), False),
    ("split", pa.string(), False),
    ("width", pa.int32(), False),
    ("height", pa.int32(), False),
    ("image", pa.binary(), False),
    ("image_codec", pa.string(), False),
    ("disparity", pa.binary(), False),
    ("disparity_codec", pa.string(), False),
    ("disparity_scale", pa.float64(), False),
    ("disparity_offset", pa.float64(), False),
    ("valid", pa.binary(), False),
    ("uncertainty", pa.binary(), True),
    ("sky", pa.binary(), False),
    ("right_image", pa.binary(), True),
    *[(name, pa.int32(), False) for name in CROP_COLUMNS],
    *[(name, pa.float64(), False) for name in STATS_COLUMNS],
    *[(name, pa.string(), False) for name in PROVENANCE_COLUMNS],
]

_REJECTED_FIELDS: list[tuple[str, pa.DataType, bool]] = [
    ("movie_id", pa.string(), False),
    ("shot_id", pa.int32(), False),
    ("frame_index", pa.int64(), False),
    ("pts_seconds", pa.float64(), False),
    ("split", pa.string(), False),
    ("reason", pa.string(), False),
    *[(name, pa.float64(), True) for name in STATS_COLUMNS],
]


def schema_metadata(kind: str) -> dict[bytes, bytes]:
    """Key-value metadata stored in every file: version, kind and the column documentation."""
    return {
        b"depthmine.schema_version": str(SCHEMA_VERSION).encode(),
        b"depthmine.kind": kind.encode(),
        b"depthmine.columns": json.dumps(COLUMN_DOCS, sort_keys=True).encode(),
    }


def _schema(fields: list[tuple[str, pa.DataType, bool]], kind: str) -> pa.Schema:
    return pa.schema(
        [pa.field(n, t, nullable=nullable, metadata={b"doc": COLUMN_DOCS[n].encode()}) for n, t, nullable in fields],
        metadata=schema_metadata(kind),
    )


#: clips mode (sampling.mode=clips) adds these columns to the frame schema
CLIP_COLUMNS: tuple[str, ...] = ("clip_id", "clip_pos", "clip_reason")
TEMPORAL_FLOW_COLUMNS: tuple[str, ...] = (
    "temporal_flow",
    "temporal_flow_offset_x",
    "temporal_flow_offset_y",
    "temporal_flow_scale_x",
    "temporal_flow_scale_y",
    "temporal_flow_valid",
)
_CLIP_FIELDS: list[tuple[str, pa.DataType, bool]] = [
    ("clip_id", pa.int32(), False),
    ("clip_pos", pa.int32(), False),
    ("clip_reason", pa.string(), False),
    ("temporal_flow", pa.binary(), True),
    *[(name, pa.float64(), True) for name in TEMPORAL_FLOW_COLUMNS[1:5]],
    ("temporal_flow_valid", pa.binary(), True),
]

FRAME_SCHEMA: pa.Schema = _schema(_FRAME_FIELDS, "frames")
#: the frame schema of a clips-mode dataset: the frame columns, then the clip columns (the same
#: version: a frames-mode reader that selects its columns reads it unchanged)
CLIP_FRAME_SCHEMA: pa.Schema = _schema(_FRAME_FIELDS + _CLIP_FIELDS, "frames")
REJECTED_SCHEMA: pa.Schema = _schema(_REJECTED_FIELDS, "rejected")

# Already-compressed blobs: Parquet compression would only cost CPU on every read.
BLOB_COLUMNS: frozenset[str] = frozenset({"image", "right_image"})

# Logical (decoded) column -> the physical columns it needs.
ARRAY_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("image",),
    "right_image": ("right_image",),
    "disparity": ("disparity", "disparity_codec", "disparity_scale", "disparity_offset", "width", "height"),
    "valid": ("valid", "width", "height"),
    "uncertainty": ("uncertainty", "width", "height"),
    "sky": ("sky", "width", "height"),
    "temporal_flow": (*TEMPORAL_FLOW_COLUMNS[:5], "width", "height"),
    "temporal_flow_valid": ("temporal_flow_valid", "width", "height"),
}


def frame_schema_for(schema: pa.Schema) -> pa.Schema:
    """The frame schema a file or table follows: :data:`CLIP_FRAME_SCHEMA` when it has clip columns."""
    return CLIP_FRAME_SCHEMA if schema.get_field_index("clip_id") >= 0 else FRAME_SCHEMA


def _renamed(names: list[str]) -> list[str]:
    """``names`` with each old name of :data:`RENAMED_COLUMNS` replaced, unless the current one is there too."""
    present = set(names)
    return [RENAMED_COLUMNS[n] if n in RENAMED_COLUMNS and RENAMED_COLUMNS[n] not in present else n for n in names]


def current_names(data: pa.Table | pa.Schema) -> pa.Table | pa.Schema:
    """A table or schema as read from a shard of any version, its columns under their current names
    (:data:`RENAMED_COLUMNS`); the same object when nothing was renamed. Metadata is kept."""
    names = list(data.names) if isinstance(data, pa.Schema) else list(data.column_names)
    new = _renamed(names)
    if new == names:
        return data
    if isinstance(data, pa.Schema):
        return pa.schema([f.with_name(n) for f, n in zip(data, new)], metadata=data.metadata)
    return data.rename_columns(new).replace_schema_metadata(data.schema.metadata)


def stored_names(columns: list[str] | tuple[str, ...], file_names: list[str] | tuple[str, ...]) -> list[str]:
    """The columns to ask a file holding ``file_names`` for, to get ``columns`` (current names): a
    column the file holds under an older name is asked by that name, one it lacks is left out (a clip
    column of a frames-mode shard: its rows give None for it)."""
    present = set(file_names)
    older = {new: old for old, new in RENAMED_COLUMNS.items()}
    return [c if c in present else older[c] for c in columns if c in present or older.get(c) in present]


_INTERNAL = ("image_codec", "disparity_codec", "disparity_scale", "disparity_offset", *TEMPORAL_FLOW_COLUMNS[1:5])


def physical_columns(columns: list[str] | tuple[str, ...] | None) -> list[str]:
    """Physical Parquet columns to read for the requested logical columns (ids always included).

    Clip columns may be asked for on any dataset: a reader reads those a file has (see
    :func:`frame_schema_for`) and frames-mode rows give None for them.

    Raises:
        ValueError: an unknown column name (the message lists the valid ones).
    """
    if columns is None:
        return list(CLIP_FRAME_SCHEMA.names)
    valid = set(CLIP_FRAME_SCHEMA.names) - set(_INTERNAL)
    unknown = [c for c in columns if c not in valid]
    renamed = [f"{c} (now {RENAMED_COLUMNS[c]})" for c in unknown if c in RENAMED_COLUMNS]
    if renamed:
        raise ValueError(f"renamed shard column(s): {', '.join(renamed)}")
    if unknown:
        raise ValueError(f"unknown shard column(s) {unknown}; valid columns: {sorted(valid)}")
    wanted: list[str] = list(ID_COLUMNS)
    for c in columns:
        wanted.extend(ARRAY_COLUMNS.get(c, (c,)))
    seen: set[str] = set()
    return [c for c in CLIP_FRAME_SCHEMA.names if c in wanted and not (c in seen or seen.add(c))]


def check_schema(schema: pa.Schema, expected: pa.Schema = FRAME_SCHEMA) -> list[str]:
    """Differences between a file's schema and the expected one (empty list: it matches).

    A file with clip columns is checked against :data:`CLIP_FRAME_SCHEMA` when the frame schema is
    expected (clips-mode datasets). A file of an older schema version is checked under the current
    column names (:func:`current_names`): it reads as it is.
    """
    schema = current_names(schema)
    if expected is FRAME_SCHEMA:
        expected = frame_schema_for(schema)
    problems: list[str] = []
    meta = schema.metadata or {}
    version = meta.get(b"depthmine.schema_version")
    if version is None:
        problems.append("no depthmine.schema_version in the Parquet metadata")
    elif not version.isdigit() or not 1 <= int(version) <= SCHEMA_VERSION:
        problems.append(f"schema version {version.decode()} (this reader knows 1 to {SCHEMA_VERSION})")
    for field in expected:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            problems.append(f"missing column {field.name!r}")
        elif not schema.field(idx).type.equals(field.type):
            problems.append(f"column {field.name!r} has type {schema.field(idx).type}, expected {field.type}")
    extra = [n for n in schema.names if expected.get_field_index(n) < 0]
    if extra:
        problems.append(f"unexpected column(s) {extra}")
    return problems
