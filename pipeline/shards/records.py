"""What the writer takes: one kept frame (:class:`FrameRecord`) or one rejected frame.

Records are plain data so that the disparity engine, the ingest flow and tests can build them as
dicts; :meth:`FrameRecord.from_dict` accepts either the flat crop keys (``crop_x`` ...) or a
``crop_box`` with ``x, y, w, h`` attributes, and ``stats``/``provenance`` as dicts or dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from pipeline.shards.schema import CROP_COLUMNS, PROVENANCE_COLUMNS, RENAMED_COLUMNS, STATS_COLUMNS

__all__ = ["SPLITS", "FrameRecord", "RejectedRecord", "stats_dict", "provenance_dict"]

SPLITS: tuple[str, ...] = ("train", "val", "test")


def _as_mapping(obj: Any) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_")}


def stats_dict(stats: Any, *, allow_missing: bool = False) -> dict[str, float]:
    """The ten per-frame statistics as floats, from a dict or a ``FrameStats``-like object.

    Raises:
        ValueError: a statistic is missing (unless ``allow_missing``, which fills NaN).
    """
    src = _as_mapping(stats)
    missing = [k for k in STATS_COLUMNS if k not in src]
    if missing and not allow_missing:
        raise ValueError(f"frame stats lack {missing}; expected exactly {list(STATS_COLUMNS)}")
    return {k: float(src[k]) if src.get(k) is not None else math.nan for k in STATS_COLUMNS}


def provenance_dict(provenance: Any) -> dict[str, str]:
    """The four provenance strings; missing ones become ``""`` (a test record has none); a name of an
    older schema version (``config_hash``) counts as the current one."""
    src = {RENAMED_COLUMNS.get(k, k): v for k, v in _as_mapping(provenance).items()}
    return {k: str(src.get(k, "") or "") for k in PROVENANCE_COLUMNS}


def _check_splits(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return split


@dataclass
class FrameRecord:
    """One kept frame, decoded: what the disparity engine produced plus where it came from.

    Arrays: ``image`` HxWx3 uint8 RGB (left view); ``disparity`` HxW float32 (left-view disparity
    in pixels of ``image``); ``valid`` and ``sky`` HxW bool; ``uncertainty`` HxW float32 or None;
    ``right_image`` like ``image`` or None. The crop box is in source pixels of one full-resolution
    eye of size ``source_width`` x ``source_height``; ``image`` may be resized from the crop.

    Clips mode: ``clip_id`` / ``clip_pos`` place the frame in its clip (None in frames mode: the
    row then has the plain frame schema); ``clip_reason`` is the rejection reason of a clip frame
    kept without a label (``""`` when labelled); ``temporal_flow`` (HxWx2 float32, px) and
    ``temporal_flow_valid`` (HxW bool) the flow to the clip's next frame, or None.
    """

    movie_id: str
    shot_id: int
    frame_index: int
    pts_seconds: float
    split: str
    image: np.ndarray
    disparity: np.ndarray
    valid: np.ndarray
    sky: np.ndarray
    crop_x: int
    crop_y: int
    crop_w: int
    crop_h: int
    source_width: int
    source_height: int
    stats: dict[str, float]
    provenance: dict[str, str] = field(default_factory=dict)
    uncertainty: np.ndarray | None = None
    right_image: np.ndarray | None = None
    clip_id: int | None = None
    clip_pos: int | None = None
    clip_reason: str = ""
    temporal_flow: np.ndarray | None = None
    temporal_flow_valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_splits(self.split)
        if (self.clip_id is None) != (self.clip_pos is None):
            raise ValueError(f"frame {self.movie_id}/{self.frame_index}: clip_id and clip_pos go together")
        if self.clip_id is None and (self.clip_reason or self.temporal_flow is not None):
            raise ValueError(f"frame {self.movie_id}/{self.frame_index}: clip columns without a clip_id")
        if self.temporal_flow is not None and np.shape(self.temporal_flow) != (*np.shape(self.image)[:2], 2):
            raise ValueError(f"frame {self.movie_id}/{self.frame_index}: temporal_flow is not HxWx2 like the image")
        self.stats = stats_dict(self.stats)
        self.provenance = provenance_dict(self.provenance)
        h, w = np.shape(self.image)[:2]
        for name in ("disparity", "valid", "sky", "uncertainty"):
            arr = getattr(self, name)
            if arr is not None and np.shape(arr)[:2] != (h, w):
                raise ValueError(
                    f"frame {self.movie_id}/{self.frame_index}: {name} is {np.shape(arr)}, image is {h}x{w}"
                )
        if self.right_image is not None and np.shape(self.right_image) != np.shape(self.image):
            raise ValueError(f"frame {self.movie_id}/{self.frame_index}: right_image shape differs from image")

    @property
    def height(self) -> int:
        return int(np.shape(self.image)[0])

    @property
    def width(self) -> int:
        return int(np.shape(self.image)[1])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrameRecord:
        """Build from a dict with the field names (``crop_box`` may replace the crop keys)."""
        d = dict(data)
        box = d.pop("crop_box", None)
        if box is not None:
            b = _as_mapping(box)
            d.setdefault("crop_x", b["x"])
            d.setdefault("crop_y", b["y"])
            d.setdefault("crop_w", b["w"])
            d.setdefault("crop_h", b["h"])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown frame record key(s) {sorted(unknown)}; valid keys: {sorted(names)}")
        h, w = np.shape(d["image"])[:2]
        d.setdefault("crop_x", 0)
        d.setdefault("crop_y", 0)
        d.setdefault("crop_w", w)
        d.setdefault("crop_h", h)
        d.setdefault("source_width", d["crop_x"] + d["crop_w"])
        d.setdefault("source_height", d["crop_y"] + d["crop_h"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict with the field names (arrays by reference)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def crop_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in CROP_COLUMNS}


@dataclass
class RejectedRecord:
    """A frame the disparity engine dropped, and why (kept so a user can ask where data went)."""

    movie_id: str
    shot_id: int
    frame_index: int
    pts_seconds: float
    split: str
    reason: str
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_splits(self.split)
        self.stats = stats_dict(self.stats, allow_missing=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RejectedRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown rejected record key(s) {sorted(unknown)}; valid keys: {sorted(names)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
