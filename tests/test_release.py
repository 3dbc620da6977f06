"""The pieces of labels-only releases that need no movie: hashes, geometry, frame-rate checks, the release
of a written dataset. (End to end, with real rips of a real movie: tests/test_hydrate.py.)"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import BadInputError, ConfigError
from pipeline.layouts import CropBox
from pipeline.phash import DEFAULT_MAX_DISTANCE, from_hex, hamming, phash, to_hex
from pipeline.synthetic import render_stereo_frame


def _frame(t: float, shot: int = 0, seed: int = 5) -> np.ndarray:
    return render_stereo_frame(384, 216, t, seed, shot=shot, letterbox=False, shot_duration_s=4.0).left


def test_phash_survives_what_a_rip_does_and_tells_frames_apart():
    img = _frame(1.0)
    h = phash(img)
    ok, jpeg = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
    recoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]
    small = cv2.resize(img, (256, 144), interpolation=cv2.INTER_AREA)
    graded = np.clip(img.astype(np.float32) * 0.8 + 20, 0, 255).astype(np.uint8)
    for variant in (recoded, small, graded):
        assert hamming(h, phash(variant)) <= 6
    others = [phash(_frame(1.0, shot=s)) for s in (1, 2, 3)] + [phash(_frame(3.5, shot=0))]
    # other shots of the sample movie share its composition (sky on top, ground below): 18+ bits apart
    assert min(hamming(h, o) for o in others) > DEFAULT_MAX_DISTANCE + 4
    assert 0 <= h < 2**64 and from_hex(to_hex(h)) == h
    arr = np.array(others, np.uint64)
    assert list(hamming(arr, h)) == [hamming(o, h) for o in others]


def test_map_region_follows_the_copys_picture_area():
    from pipeline.hydrate import map_region

    crop = {"x": 0, "y": 26, "w": 384, "h": 164}
    # another resolution, same picture area: the copy's own detection is used
    assert map_region(crop, CropBox(0, 17, 256, 109), (256, 144)) == CropBox(0, 17, 256, 109)
    # a detection that took a bar for picture: the release's aspect, centred
    got = map_region(crop, CropBox(0, 0, 384, 216), (384, 216))
    assert (got.w, got.h, got.y) == (384, 164, 26)


def test_frame_rate_check_names_pal_and_accepts_ntsc_film():
    from pipeline.hydrate import check_frame_rate

    check_frame_rate("copy.mkv", 24000 / 1001, 24.0)  # 23.976 vs 24: same frames
    with pytest.raises(BadInputError, match="PAL"):
        check_frame_rate("copy.mkv", 25.0, 24.0)
    with pytest.raises(BadInputError, match="not the same cut"):
        check_frame_rate("copy.mkv", 30.0, 24.0)


def test_release_of_a_dataset_keeps_every_label_and_no_picture(tiny_dataset, tmp_path):
    from pipeline.release import IMAGE_COLUMNS, ReleaseConfig, make_release, read_release
    from pipeline.shards import decode_image, list_shards

    ds = tiny_dataset(n_movies=2, frames_per_movie=6, with_right=True)
    data = make_release(ds, tmp_path / "rel", ReleaseConfig(splits=["train"], precision="exact"))
    assert list(data["movies"]) == ["movie-00"]  # movie-01 is a val movie
    rel = read_release(tmp_path / "rel")
    labels = rel.read_labels("movie-00", unpack=True)
    original = pa.concat_tables([pq.read_table(s.path) for s in list_shards(ds, movie_ids=["movie-00"])])
    assert not set(labels.schema.names) & set(IMAGE_COLUMNS)
    for name in original.schema.names:
        if name not in IMAGE_COLUMNS:
            assert labels.column(name).to_pylist() == original.column(name).to_pylist(), name
    hashes = [phash(decode_image(b.as_py())) for b in original.column("image")]
    assert labels.column("phash").to_pylist() == hashes
    assert rel.read_rejected("movie-00").num_rows == 1
    with pytest.raises(ConfigError, match="not in"):
        make_release(ds, tmp_path / "rel2", ReleaseConfig(movies=["nope"]))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        make_release(ds, tmp_path / "busy")
    with pytest.raises(ConfigError, match="unknown split"):
        ReleaseConfig(splits=["training"])


def _label_arrays(seed: int, h: int = 37, w: int = 53):
    """Codes as a film's labels hold them: smooth with noise, invalid holes with leftover values,
    a sky region at one code, a NaN code, a jump wider than a byte, uncertainty up to the cap."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    q = (1000 + 7 * xx + 3 * yy + rng.integers(-3, 4, (h, w))).astype(np.uint16)
    q[:, w // 2 :] += 3000  # a depth edge: residuals that escape the byte
    sky = np.zeros((h, w), bool)
    sky[:5] = True
    q[sky] = 0
    valid = rng.random((h, w)) > 0.1
    valid[10:14] = False  # whole invalid rows (a frame's black bar)
    valid |= sky
    q[2, 3] = 65535
    unc = rng.integers(0, 320, (h, w)).astype(np.uint16)  # 1/32 px codes, as a resized label holds
    unc[0, :4] = 8160
    unc[1, 1] = 65535
    return q, unc, valid, sky


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_packing_is_lossless_where_it_promises(seed):
    from pipeline.release import pack_disparity, pack_uncertainty, unpack_disparity, unpack_uncertainty

    q, unc, valid, sky = _label_arrays(seed)
    # exact: every code back
    assert np.array_equal(unpack_disparity(pack_disparity(q, valid, sky, False), valid, sky, False), q)
    assert np.array_equal(unpack_uncertainty(pack_uncertainty(unc, valid, False), valid, False), unc)
    # valid: every valid pixel's code back, the others not finite (65535)
    got = unpack_disparity(pack_disparity(q, valid, sky), valid, sky)
    assert np.array_equal(got[valid], q[valid]) and (got[~valid] == 65535).all()
    got = unpack_uncertainty(pack_uncertainty(unc, valid), valid)
    finite = valid & (unc != 65535)
    assert np.abs(got[finite].astype(int) - unc[finite]).max() <= 2  # codes of 1/32 px: within 1/16 px
    assert (got[valid & ~finite] == 65535).all() and (got[~valid] == 65535).all()
    on_grid = (unc // 8 * 8).astype(np.uint16)  # 1/4 px steps (labels stored at their labelling size): exact
    assert np.array_equal(unpack_uncertainty(pack_uncertainty(on_grid, valid), valid)[valid], on_grid[valid])
    # and smaller than the dataset's blobs before any entropy coding (one byte a pixel, not two)
    assert len(pack_disparity(q, valid, sky)) < 0.6 * q.nbytes


@pytest.mark.parametrize("precision", ["exact", "valid"])
def test_unpack_labels_rebuilds_each_row_of_a_table(precision):
    """Table level: rows of both packed codecs, a ``png16`` row kept as it is, a row without
    uncertainty (null stays null), read from a slice (Arrow offsets not at zero)."""
    import pyarrow as pa

    from pipeline.release import encode_disparity_codes, pack_labels, unpack_disparity, unpack_labels
    from pipeline.shards.codec import pack_mask, split_bytes

    rows = []
    for seed, codec in enumerate(["u16d", "u16", "png16", "u16d"]):
        q, unc, valid, sky = _label_arrays(seed)
        h, w = q.shape
        rows.append(
            {
                "disparity": encode_disparity_codes(q, codec) if codec != "png16" else b"not-a-packed-codec",
                "disparity_codec": codec,
                "uncertainty": None if seed == 3 else split_bytes(unc),
                "valid": pack_mask(valid),
                "sky": pack_mask(sky),
                "height": h,
                "width": w,
            }
        )
    pad = dict(rows[0])
    t = pa.Table.from_pylist([pad] + rows).slice(1)
    packed = pack_labels(t, precision)
    got = unpack_labels(packed, {"packing": "grad-zz8/1", "precision": precision}).to_pylist()
    assert len(got) == 4
    assert got[2]["disparity"] == b"not-a-packed-codec" and got[3]["uncertainty"] is None
    for seed, (row, want) in enumerate(zip(got, rows)):
        q, unc, valid, sky = _label_arrays(seed)
        if want["disparity_codec"] != "png16":
            if precision == "exact":
                assert row["disparity"] == want["disparity"]
            else:
                only = unpack_disparity(pack_labels(t.slice(seed, 1), precision)["disparity"][0].as_py(), valid, sky)
                assert row["disparity"] == encode_disparity_codes(only, want["disparity_codec"])
        if want["uncertainty"] is not None and precision == "exact":
            assert row["uncertainty"] == want["uncertainty"]
    assert unpack_labels(packed.slice(0, 0), {"packing": "grad-zz8/1", "precision": precision}).num_rows == 0


def test_packed_release_hydrates_to_the_datasets_label_blobs(tiny_dataset, tmp_path):
    """Release rows unpacked = the dataset's rows: byte for byte with ``exact``; with ``valid`` the
    decoded disparity equal at valid pixels, the uncertainty within 1/16 px there, both NaN elsewhere;
    masks and every other column identical."""
    from pipeline.release import ReleaseConfig, make_release, read_release
    from pipeline.shards import decode_disparity, list_shards, unpack_mask
    from pipeline.shards.codec import decode_uncertainty

    ds = tiny_dataset(n_movies=1, frames_per_movie=6)
    original = pa.concat_tables([pq.read_table(s.path) for s in list_shards(ds)]).sort_by("frame_index")
    for precision in ("exact", "valid"):
        make_release(ds, tmp_path / precision, ReleaseConfig(precision=precision))
        rel = read_release(tmp_path / precision)
        mid = next(iter(rel.movies))
        assert rel.movies[mid].labels == {"packing": "grad-zz8/1", "precision": precision}
        packed, got = rel.read_labels(mid), rel.read_labels(mid, unpack=True)
        assert packed.column("disparity").to_pylist() != original.column("disparity").to_pylist()
        for name in got.schema.names:
            if name in ("phash", "view") or (precision == "valid" and name in ("disparity", "uncertainty")):
                continue
            assert got.column(name).to_pylist() == original.column(name).to_pylist(), (precision, name)
        if precision == "exact":
            continue
        for a, b in zip(got.to_pylist(), original.to_pylist()):
            h, w = b["height"], b["width"]
            valid = unpack_mask(b["valid"], h, w)
            args = (b["disparity_offset"], b["disparity_scale"], b["disparity_codec"], h, w)
            da, db = decode_disparity(a["disparity"], *args), decode_disparity(b["disparity"], *args)
            assert np.array_equal(da[valid], db[valid]) and np.isnan(da[~valid]).all()
            ua, ub = decode_uncertainty(a["uncertainty"], h, w), decode_uncertainty(b["uncertainty"], h, w)
            assert np.nanmax(np.abs(ua[valid] - ub[valid])) <= 1 / 16 and np.isnan(ua[~valid]).all()


def test_a_clips_mode_dataset_is_refused_before_anything_is_written(tmp_path):
    from pipeline.release import make_release
    from tests.test_clips import _clip_dataset

    dataset = _clip_dataset(tmp_path / "clips", movies=1, clips=2, frames=3)
    out = tmp_path / "release"
    with pytest.raises(ConfigError, match="clips mode"):
        make_release(dataset, out)
    assert not out.exists() or not any(out.iterdir())
