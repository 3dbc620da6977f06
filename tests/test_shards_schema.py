"""Schema, codecs and records of the shard store: what goes into a row comes back out."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline.shards import FRAME_SCHEMA, REJECTED_SCHEMA, SCHEMA_VERSION, STATS_COLUMNS, FrameRecord, RejectedRecord
from pipeline.shards.codec import (
    DISPARITY_STEP_PX,
    decode_disparity,
    decode_image,
    decode_uncertainty,
    encode_disparity,
    encode_image,
    encode_uncertainty,
    pack_mask,
    unpack_mask,
)
from pipeline.shards.schema import check_schema, physical_columns
from tests.fixtures.datasets import make_frame_record

BOUND = DISPARITY_STEP_PX / 2 + 1e-4  # half a code step, plus float32 rounding at |d| ~ 1000 px


def _smooth(rng, h, w, lo, hi):
    base = rng.random((h // 8 + 2, w // 8 + 2))
    import cv2

    field = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    return (lo + (hi - lo) * (field - field.min()) / np.ptp(field)).astype(np.float32)


@pytest.mark.parametrize(
    "lo,hi",
    [
        pytest.param(-3.0, 3.0, id="small-range"),
        pytest.param(-40.0, 60.0, id="typical-movie"),
        pytest.param(100.0, 1100.0, id="large-values-beyond-float16"),
        pytest.param(-2000.0, 40.0, id="range-2040px"),
    ],
)
@pytest.mark.parametrize("codec", ["u16d", "u16", "png16"])
def test_disparity_round_trip_within_1_64_px(lo, hi, codec):
    rng = np.random.default_rng(1)
    d = _smooth(rng, 45, 70, lo, hi) + rng.normal(0, 0.3, (45, 70)).astype(np.float32)
    data, offset, scale = encode_disparity(d, codec)
    back = decode_disparity(data, offset, scale, codec, 45, 70)
    assert back.dtype == np.float32 and back.shape == d.shape
    assert scale == DISPARITY_STEP_PX
    assert np.abs(back - d).max() <= BOUND


def test_float16_would_not_meet_the_bound_at_large_disparity():
    d = np.linspace(100, 1100, 1000, dtype=np.float32).reshape(20, 50)
    assert np.abs(d.astype(np.float16).astype(np.float32) - d).max() > 1 / 32  # why float16 is not used


def test_disparity_wider_than_2048px_degrades_gracefully():
    d = np.linspace(-3000, 3000, 2000, dtype=np.float32).reshape(40, 50)
    data, offset, scale = encode_disparity(d)
    back = decode_disparity(data, offset, scale, "u16d", 40, 50)
    assert scale > DISPARITY_STEP_PX
    assert np.abs(back - d).max() <= scale / 2 + 1e-3


def test_disparity_non_finite_decodes_as_nan():
    d = np.full((8, 9), 5.25, np.float32)
    d[2, 3] = np.nan
    d[4, 4] = np.inf
    back = decode_disparity(*encode_disparity(d), "u16d", 8, 9)
    assert np.isnan(back[2, 3]) and np.isnan(back[4, 4])
    assert np.isfinite(back).sum() == d.size - 2
    assert np.abs(back[np.isfinite(back)] - 5.25).max() <= BOUND


@pytest.mark.parametrize("shape", [(37, 53), (1, 1), (64, 96)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_masks_round_trip_exactly(shape):
    m = np.random.default_rng(2).random(shape) > 0.5
    back = unpack_mask(pack_mask(m), *shape)
    assert back.dtype == bool and np.array_equal(back, m)


def test_uncertainty_round_trip_within_1_64_px():
    u = np.random.default_rng(3).random((10, 12)).astype(np.float32) * 8
    u[0, 0], u[0, 1], u[0, 2] = np.nan, 5000.0, -1.0
    back = decode_uncertainty(encode_uncertainty(u), 10, 12)
    assert back.dtype == np.float32
    assert np.abs(back - u).ravel()[3:].max() <= 1 / 64 + 1e-6
    assert np.isnan(back[0, 0]) and back[0, 1] == pytest.approx(2047.9375) and np.isnan(back[0, 2])


def test_png_image_is_lossless_and_jpeg_is_close():
    # a frame at a realistic size: tiny saturated test frames are JPEG's worst case (4:2:0 chroma)
    img = make_frame_record("m", 0, size=(470, 200))["image"]
    assert np.array_equal(decode_image(encode_image(img, "png")), img)
    psnr = {}
    for sub in ("420", "444"):
        jpeg = decode_image(encode_image(img, "jpeg", 95, sub))
        psnr[sub] = 10 * np.log10(255**2 / np.mean((jpeg.astype(np.float64) - img) ** 2))
    assert psnr["420"] > 32 and psnr["444"] > 38 and psnr["444"] > psnr["420"]
    webp = decode_image(encode_image(img, "webp", 101))  # quality > 100: lossless WebP
    assert np.array_equal(webp, img)


def test_unknown_image_codec_lists_valid_ones():
    with pytest.raises(ValueError, match="jpeg"):
        encode_image(np.zeros((4, 4, 3), np.uint8), "gif")


def test_schema_metadata_carries_version_and_column_docs():
    meta = FRAME_SCHEMA.metadata
    assert meta[b"depthmine.schema_version"] == str(SCHEMA_VERSION).encode()
    docs = json.loads(meta[b"depthmine.columns"])
    for name in FRAME_SCHEMA.names + REJECTED_SCHEMA.names:
        assert docs[name], name
    assert all(FRAME_SCHEMA.get_field_index(c) >= 0 for c in STATS_COLUMNS)


def test_check_schema_reports_drift():
    assert check_schema(FRAME_SCHEMA) == []
    fields = [pa.field("movie_id", pa.int64()) if f.name == "movie_id" else f for f in FRAME_SCHEMA if f.name != "sky"]
    drifted = pa.schema(fields + [pa.field("extra", pa.int8())], metadata=FRAME_SCHEMA.metadata)
    problems = check_schema(drifted)
    assert any("'sky'" in p for p in problems)
    assert any("'movie_id'" in p and "int64" in p for p in problems)
    assert any("extra" in p for p in problems)


def test_older_schema_versions_check_under_the_current_names_and_newer_ones_are_refused():
    from pipeline.shards.schema import current_names, stored_names
    from tests.fixtures.datasets import schema_v1

    old = schema_v1(FRAME_SCHEMA)
    assert "config_hash" in old.names and check_schema(old) == []
    assert current_names(old).names == FRAME_SCHEMA.names and current_names(FRAME_SCHEMA) is FRAME_SCHEMA
    assert stored_names(["ingest_key", "clip_id", "movie_id"], old.names) == ["config_hash", "movie_id"]
    newer = FRAME_SCHEMA.with_metadata({**FRAME_SCHEMA.metadata, b"depthmine.schema_version": b"3"})
    assert check_schema(newer) == ["schema version 3 (this reader knows 1 to 2)"]


def test_physical_columns_projection_and_unknown_names():
    cols = physical_columns(["disparity"])
    assert {"disparity", "disparity_scale", "disparity_offset", "movie_id", "split"} <= set(cols)
    assert "image" not in cols
    with pytest.raises(ValueError, match="valid columns"):
        physical_columns(["depth"])


def test_frame_record_requires_every_statistic():
    rec = make_frame_record("m", 0)
    del rec["stats"]["sky_fraction"]
    with pytest.raises(ValueError, match="sky_fraction"):
        FrameRecord.from_dict(rec)


def test_frame_record_rejects_mismatched_shapes_and_bad_split():
    rec = make_frame_record("m", 0)
    with pytest.raises(ValueError, match="valid"):
        FrameRecord.from_dict({**rec, "valid": rec["valid"][:-1]})
    with pytest.raises(ValueError, match="split"):
        FrameRecord.from_dict({**rec, "split": "training"})


def test_frame_record_accepts_a_crop_box_object():
    from types import SimpleNamespace

    rec = make_frame_record("m", 0)
    for k in ("crop_x", "crop_y", "crop_w", "crop_h"):
        rec.pop(k)
    r = FrameRecord.from_dict({**rec, "crop_box": SimpleNamespace(x=4, y=5, w=192, h=128)})
    assert r.crop_dict()["crop_y"] == 5 and r.crop_dict()["crop_w"] == 192


def test_rejected_record_fills_missing_stats_with_nan():
    r = RejectedRecord.from_dict(
        {
            "movie_id": "m",
            "shot_id": 0,
            "frame_index": 3,
            "pts_seconds": 0.1,
            "split": "val",
            "reason": "vertical",
            "stats": {},
        }
    )
    assert set(r.stats) == set(STATS_COLUMNS) and all(np.isnan(v) for v in r.stats.values())
