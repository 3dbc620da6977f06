"""Clips of a clips-mode dataset (``sampling.mode=clips``): consecutive frames, stacked.

A clips-mode shard keeps every clip whole inside one row group (the writer cuts row groups and
shards only where a clip starts), so :func:`iter_clips` groups consecutive rows of one
``(movie_id, clip_id)`` while streaming a shard one row group at a time, exactly like
:func:`pipeline.shards.iter_samples`. A stored clip of ``n`` frames gives ``n // clip_frames``
clips of ``clip_frames`` frames (non-overlapping, from its start); ``clip_frames=None`` yields the
stored clips as they are.

Frames the per-frame checks rejected stay in their clip without a label (``labelled`` False, the
reason in ``clip_reason``, ``valid`` all False); ``max_rejected`` drops clips with more of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from pipeline.errors import BadInputError

__all__ = ["CLIP_ARRAYS", "iter_clips", "count_clips", "is_clip_dataset", "stack_clip"]

#: logical columns stacked along a new first axis (T); flow and its mask have T - 1 entries
CLIP_ARRAYS = ("image", "disparity", "valid", "sky", "uncertainty", "right_image")
_DEFAULT_COLUMNS = ("image", "disparity", "valid")


def is_clip_dataset(shard: Any) -> bool:
    """Whether a shard (a :class:`~pipeline.shards.ShardInfo` or path) has the clip columns."""
    from pipeline.shards.reader import ShardInfo, _close, open_shard

    info = shard if isinstance(shard, ShardInfo) else ShardInfo(str(shard), 0)
    pf = open_shard(info, verify=False)
    try:
        return "clip_id" in pf.schema_arrow.names
    finally:
        _close(pf)


def _windows(n: int, clip_frames: int | None) -> list[tuple[int, int]]:
    if clip_frames is None:
        return [(0, n)]
    return [(k * clip_frames, (k + 1) * clip_frames) for k in range(n // clip_frames)]


def stack_clip(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the decoded rows of one clip (in clip order) into arrays with a leading T axis.

    Keys: every array column that was read (``image`` T x H x W x 3, ``disparity`` T x H x W ...),
    ``temporal_flow`` (T-1 x H x W x 2) and ``temporal_flow_valid`` (T-1 x H x W) when every frame
    but the last has them (else None), ``labelled`` (T bool), ``clip_reason``, ``frame_index``
    (T int), and the clip's ``movie_id``, ``shot_id``, ``clip_id``, ``split``.
    """
    first = rows[0]
    out: dict[str, Any] = {
        "movie_id": first["movie_id"],
        "shot_id": int(first["shot_id"]),
        "clip_id": int(first["clip_id"]),
        "split": first["split"],
        "frame_index": np.array([int(r["frame_index"]) for r in rows], np.int64),
        "clip_reason": [r.get("clip_reason") or "" for r in rows],
    }
    out["labelled"] = np.array([not reason for reason in out["clip_reason"]], bool)
    for c in CLIP_ARRAYS:
        if c in first:
            values = [r[c] for r in rows]
            out[c] = None if any(v is None for v in values) else np.stack(values)
    if "temporal_flow" in first:
        flows = [r["temporal_flow"] for r in rows[:-1]]
        masks = [r.get("temporal_flow_valid") for r in rows[:-1]]
        ok = flows and all(f is not None for f in flows) and all(m is not None for m in masks)
        out["temporal_flow"] = np.stack(flows) if ok else None
        out["temporal_flow_valid"] = np.stack(masks) if ok else None
    return out


def iter_clips(
    path: Any,
    clip_frames: int | None = None,
    split: str | None = None,
    columns: Sequence[str] | None = _DEFAULT_COLUMNS,
    movie_ids: Sequence[str] | None = None,
    max_rejected: int | None = None,
    temporal_flow: bool = True,
    verify: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield the clips of a clips-mode dataset as stacked arrays (see :func:`stack_clip`).

    Args:
        path: a dataset folder, ``manifest.json``, shard, :class:`~pipeline.shards.ShardInfo` or URI.
        clip_frames: frames per yielded clip (consecutive windows of the stored clips); None: as stored.
        split: only clips of this split. movie_ids: only these movies.
        columns: the per-frame array columns to decode (``image``, ``disparity``, ``valid``, ``sky``,
            ``uncertainty``, ``right_image``).
        max_rejected: skip clips with more frames without a label than this (None: keep all).
        temporal_flow: also decode the stored temporal flow and its mask.

    Raises:
        BadInputError: the dataset was not ingested in clips mode, or a shard is damaged.
    """
    from pipeline.shards.reader import ShardInfo, iter_samples, list_shards

    if clip_frames is not None and int(clip_frames) < 1:
        raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
    shards = [path] if isinstance(path, ShardInfo) else list_shards(path, split=split, movie_ids=movie_ids)
    cols = list(dict.fromkeys([*(columns or ()), "clip_id", "clip_pos", "clip_reason"]))
    if temporal_flow:
        cols += ["temporal_flow", "temporal_flow_valid"]
    for shard in shards:
        group: list[dict[str, Any]] = []
        key = None
        for row in iter_samples(shard, columns=cols, split=split, movie_ids=movie_ids, verify=verify):
            if row.get("clip_id") is None:
                where = shard.path if isinstance(shard, ShardInfo) else str(Path(str(shard)))
                raise BadInputError(
                    where, "has no clips (ingested in frames mode)", "ingest with --set sampling.mode=clips"
                )
            k = (row["movie_id"], int(row["clip_id"]))
            if group and k != key:
                yield from _split(group, clip_frames, max_rejected)
                group = []
            key = k
            group.append(row)
        if group:
            yield from _split(group, clip_frames, max_rejected)


def _split(rows: list[dict[str, Any]], clip_frames: int | None, max_rejected: int | None) -> Iterator[dict]:
    rows.sort(key=lambda r: int(r["clip_pos"]))
    for a, b in _windows(len(rows), clip_frames):
        part = rows[a:b]
        if max_rejected is not None and sum(1 for r in part if r.get("clip_reason")) > max_rejected:
            continue
        clip = stack_clip(part)
        clip["clip_start"] = a  # the window's position in the stored clip
        yield clip


def count_clips(
    shard: Any, clip_frames: int | None = None, split: str | None = None, max_rejected: int | None = None
) -> int:
    """How many clips :func:`iter_clips` yields from one shard (reads only the small clip columns)."""
    from pipeline.shards.reader import ShardInfo, _close, open_shard

    info = shard if isinstance(shard, ShardInfo) else ShardInfo(str(shard), 0)
    pf = open_shard(info)
    try:
        names = pf.schema_arrow.names
        if "clip_id" not in names:
            raise BadInputError(
                info.path, "has no clips (ingested in frames mode)", "ingest with --set sampling.mode=clips"
            )
        t = pf.read(columns=["movie_id", "split", "clip_id", "clip_reason"])
    finally:
        _close(pf)
    clips: dict[tuple[str, int], list[str]] = {}
    for movie, s, cid, reason in zip(
        t.column("movie_id").to_pylist(),
        t.column("split").to_pylist(),
        t.column("clip_id").to_pylist(),
        t.column("clip_reason").to_pylist(),
    ):
        if split is None or s == split:
            clips.setdefault((movie, cid), []).append(reason)
    n = 0
    for reasons in clips.values():
        # rows of a clip are stored in clip order, so the windows see the reasons in this order
        for a, b in _windows(len(reasons), clip_frames):
            if max_rejected is None or sum(1 for r in reasons[a:b] if r) <= max_rejected:
                n += 1
    return n
