"""Labels-only releases and hydration from other rips of the same film, on real encoded sample movies.

One sample movie is ingested for real (Prefect flow, DIS flow), released, and then hydrated from
copies made here with ffmpeg that differ as users' rips do: codec and container, layout, resolution,
a black lead-in, a trimmed start, another timestamp origin, another letterbox crop. The ground truth
of the sample movie says which frame each hydrated picture must be.

PSNR floor (hydrated picture vs the ingested one): the difference is the copy's own coding loss
(the copies are second-generation encodes of the already-encoded movie), resampling (the 2/3-size
copy lost detail the original had) and a second JPEG q95 pass. Measured here: x264 crf 23 copies at
full resolution 35-38 dB, the MPEG-4 q 4 copy 28.5-31 dB, the 2/3-size top-and-bottom copy
26.8-28.5 dB; the ingested picture against itself shifted by one pixel scores at most 32 dB. So the
x264 floor, 33 dB, fails a picture taken one pixel off, and the floors of the lossier copies (27 and
25 dB) sit 1.5 dB under their worst measured frame. PSNR cannot prove the frame index on its own
(a pan moves little in a frame): the copy index (``i + offset``, known from how the copy was made)
and the ground truth (the picture is nearer to the render of frame ``i`` than of ``i +- 4``) do.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.errors import BadInputError
from pipeline.synthetic import ffmpeg_exe, render_movie_frame

pytestmark = pytest.mark.slow  # real ingest, ffmpeg copies, decode passes

LEAD_IN_S = 2.0
TRIM_FRAMES = 12
INGEST = [
    "chunk_frames=8",
    "store_width=192",
    "sampling.drop_first_chapters=0",
    "sampling.drop_last_chapters=0",
    "sampling.train_fps=8",
]
# dB; see the module docstring
PSNR_FLOOR = {"x264": 33.0, "mp4-mpeg4": 27.0, "tab-half-small": 25.0}
LABEL_COLUMNS = [
    "movie_id",
    "shot_id",
    "frame_index",
    "pts_seconds",
    "split",
    "width",
    "height",
    "disparity_codec",
    "disparity_scale",
    "disparity_offset",
    "valid",
    "sky",
    "crop_x",
    "crop_y",
    "crop_w",
    "crop_h",
    "source_width",
    "source_height",
    "valid_fraction",
    "disparity_p50",
    "flow_backend",
    "ingest_key",
    "source_fingerprint",
    "project_version",
]


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]


def make_copy(movie, kind: str, out: Path) -> tuple[str, str | None, int]:
    """A copy of the sample movie (sbs-half) as another rip: ``(path, right_path, offset in frames)``.

    Rescaled copies get ``setsar=1``: ffmpeg's scale filter would otherwise keep the display aspect
    through the pixel aspect, which no real rip does (and which tells half from full packing).
    """
    src = str(movie.path)
    p = out / f"{kind}.mkv"
    tag = ["-metadata:s:v:0", "stereo_mode=left_right"]
    if kind == "mp4-mpeg4":  # another codec, quality and container; no stereo tag: layout from content
        p = out / f"{kind}.mp4"
        ffmpeg("-i", src, "-an", "-c:v", "mpeg4", "-q:v", "4", str(p))
    elif kind == "lead-in-ts":  # 2 s of black before the film, MPEG-TS (timestamps start at 1.4 s)
        p = out / f"{kind}.ts"
        ffmpeg("-i", src, "-an", "-vf", f"tpad=start_duration={LEAD_IN_S}:color=black", *X264, str(p))
        return str(p), None, int(round(LEAD_IN_S * movie.fps))
    elif kind == "trimmed-offset-ts":  # trimmed start, timestamps starting at 10 s
        ffmpeg(
            "-i",
            src,
            "-an",
            "-vf",
            f"trim=start_frame={TRIM_FRAMES},setpts=PTS-STARTPTS",
            *X264,
            "-output_ts_offset",
            "10",
            *tag,
            str(p),
        )
        return str(p), None, -TRIM_FRAMES
    elif kind == "sbs-full":
        ffmpeg("-i", src, "-an", "-vf", "scale=iw*2:ih,setsar=1", *X264, *tag, str(p))
    elif kind == "tab-half-small":  # top-and-bottom at 2/3 of the resolution (256x144 per eye)
        ffmpeg(
            "-i",
            src,
            "-an",
            "-filter_complex",
            "[0:v]crop=iw/2:ih:0:0,scale=256:72[l];[0:v]crop=iw/2:ih:iw/2:0,scale=256:72[r];[l][r]vstack,setsar=1",
            *X264,
            "-metadata:s:v:0",
            "stereo_mode=top_bottom",
            str(p),
        )
    elif kind == "separate":
        right = out / f"{kind}-right.mkv"
        ffmpeg("-i", src, "-an", "-vf", "crop=iw/2:ih:0:0,scale=iw*2:ih,setsar=1", *X264, str(p))
        ffmpeg("-i", src, "-an", "-vf", "crop=iw/2:ih:iw/2:0,scale=iw*2:ih,setsar=1", *X264, str(right))
        return str(p), str(right), 0
    elif kind == "swapped-eyes":  # right eye in the left half, tagged left-right as if it were not
        ffmpeg(
            "-i",
            src,
            "-an",
            "-filter_complex",
            "[0:v]crop=iw/2:ih:0:0[l];[0:v]crop=iw/2:ih:iw/2:0[r];[r][l]hstack,setsar=1",
            *X264,
            *tag,
            str(p),
        )
    elif kind == "letterbox-cropped":  # the ripper cut most of the black bars away (16 of 26 rows each)
        ffmpeg("-i", src, "-an", "-vf", "crop=iw:ih-32:0:16", *X264, *tag, str(p))
    else:
        raise ValueError(kind)
    return str(p), None, 0


@pytest.fixture(scope="module")
def film(sample_movie):
    return sample_movie(layout="sbs-half", seconds=10.0, size=(384, 216), seed=3, shots=6)


@pytest.fixture(scope="module")
def released(prefect_harness, film, tmp_path_factory):
    """The film ingested (real flow), then released with the release flow."""
    from flows.ingest import ingest_movie
    from flows.release import release_dataset
    from flows.runners import RunnerSpec
    from pipeline.ingest import LabelSettings

    root = tmp_path_factory.mktemp("release")
    dataset = root / "dataset"
    ingest_movie(
        movie=str(film.path),
        out=str(dataset),
        movie_id="film",
        split="train",
        labelling=LabelSettings("dis-ultrafast", overrides=INGEST),
        runner=RunnerSpec(workers=2),
    )
    result = release_dataset(dataset=str(dataset), out=str(root / "release"), titles={"film": "Sample Film"})
    return dataset, root / "release", result


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    return tmp_path_factory.mktemp("copies")


def _table(path: Path):
    """Every frame row of a dataset (or of one movie folder), in frame order."""

    from pipeline.shards import list_shards

    files = sorted(Path(path).glob("part-*.parquet")) or [s.path for s in list_shards(path)]
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("frame_index")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def assert_same_labels(got, want, exact: bool = False) -> None:
    """The released labels: every column byte for byte; disparity and uncertainty too with an
    ``exact`` release, else disparity equal and uncertainty within 1/16 px at every valid pixel, both
    NaN (no label) at the others."""
    from pipeline.shards import decode_disparity
    from pipeline.shards.codec import decode_uncertainty, unpack_mask

    for col in LABEL_COLUMNS + (["disparity", "uncertainty"] if exact else []):
        assert got.column(col).to_pylist() == want.column(col).to_pylist(), col
    invalid = 0
    for a, b in zip(got.select(["disparity", "uncertainty"]).to_pylist(), want.to_pylist()):
        h, w = b["height"], b["width"]
        valid = unpack_mask(b["valid"], h, w)
        invalid += int((~valid).sum())
        args = (b["disparity_offset"], b["disparity_scale"], b["disparity_codec"], h, w)
        da, db = decode_disparity(a["disparity"], *args), decode_disparity(b["disparity"], *args)
        assert np.array_equal(da[valid], db[valid])
        ua, ub = decode_uncertainty(a["uncertainty"], h, w), decode_uncertainty(b["uncertainty"], h, w)
        assert (
            np.array_equal(ua[valid], ub[valid], equal_nan=True)
            if exact
            else np.nanmax(np.abs(ua[valid] - ub[valid])) <= 1 / 16
        )
        if not exact:
            assert np.isnan(da[~valid]).all() and np.isnan(ua[~valid]).all()
    assert invalid > 0  # the film's labels have invalid pixels: the comparison above means something


def _truth(film, index: int, size: tuple[int, int], eye: str = "left") -> np.ndarray:
    c = film.crop
    view = getattr(render_movie_frame(film, index), eye)[c.y : c.y + c.h, c.x : c.x + c.w]
    return cv2.resize(view, size, interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------------------- release


def test_release_holds_no_picture(released):
    """Every byte of the release, raw and as decoded Parquet values, is free of image signatures."""
    from pipeline.release import IMAGE_COLUMNS, LABEL_SCHEMA

    _, release, _ = released
    signatures = re.compile(rb"\xff\xd8\xff[\xc0-\xfe]|\x89PNG\r\n\x1a\n|RIFF.{4}WEBP", re.S)
    files = [p for p in release.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"release.json", "README.md", "labels.parquet", "rejected.parquet"}

    def pictures(data: bytes) -> list[int]:
        """Offsets where an image signature starts something an image decoder accepts. Compressed
        labels hold a 4-byte JPEG start now and then by chance; only a decodable picture counts."""
        found = []
        for m in signatures.finditer(data):
            img = cv2.imdecode(np.frombuffer(data[m.start() :], np.uint8), cv2.IMREAD_UNCHANGED)
            if img is not None and img.size:
                found.append(m.start())
        return found

    ok, jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert pictures(b"label bytes" + jpeg.tobytes() + b"more"), "the detector finds a real picture"
    for p in files:
        assert not pictures(p.read_bytes()), f"{p} holds image bytes"
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            assert not set(t.schema.names) & set(IMAGE_COLUMNS)
            for name in t.schema.names:
                if t.schema.field(name).type in ("binary", "string") or str(t.schema.field(name).type) in (
                    "binary",
                    "string",
                ):
                    for v in t.column(name).to_pylist():
                        if v is not None:
                            assert not pictures(v if isinstance(v, bytes) else v.encode()), f"{p}:{name}"
    assert not set(LABEL_SCHEMA.names) & set(IMAGE_COLUMNS)


def test_release_lists_labels_signature_and_readme(released, film):
    from pipeline.release import read_release

    dataset, release, result = released
    rel = read_release(release)
    m = rel.movies["film"]
    truth = film.load_truth()
    sig = m.signature
    assert sig["fps"] == film.fps and sig["frame_count"] == film.frame_count
    assert [tuple(s) for s in sig["shots"]] == truth.shots  # the detector found the sample's cuts
    assert sig["duration_s"] == pytest.approx(film.frame_count / film.fps)
    assert [h[0] for h in sig["hashes"]] == sorted(h[0] for h in sig["hashes"]) and len(sig["hashes"]) == m.rows
    labels = rel.read_labels("film", unpack=True)
    original = _table(dataset)
    assert labels.num_rows == original.num_rows == result["rows"] > 20
    assert_same_labels(labels, original)
    assert set(labels.column("view").to_pylist()) == {"left"}
    readme = (release / "README.md").read_text()
    assert "depthmine hydrate" in readme and "Sample Film" in readme and "0:00:10.000" in readme
    # a release is labels only: at most a third of the dataset it came from (see bench/RESULTS.md)
    assert result["bytes"] < result["dataset_bytes"] / 3


def test_release_refuses_a_changed_file(released, tmp_path):
    import shutil

    from pipeline.release import read_release

    _, release, _ = released
    copy = tmp_path / "rel"
    shutil.copytree(release, copy)
    labels = copy / "movies" / "film" / "labels.parquet"
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0xFF
    labels.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="checksum"):
        read_release(copy)


# ------------------------------------------------------------------------------------------- hydrate


@pytest.mark.parametrize(
    "kind",
    [
        "mp4-mpeg4",
        "lead-in-ts",
        "trimmed-offset-ts",
        "sbs-full",
        "tab-half-small",
        "separate",
        "letterbox-cropped",
        "swapped-eyes",
    ],
)
def test_hydrate_finds_every_frame_in_another_rip(released, film, copies, tmp_path, kind):
    from pipeline.hydrate import CopySpec, HydrateConfig, hydrate_movie
    from pipeline.release import read_release
    from pipeline.shards import decode_image

    dataset, release, _ = released
    path, right, offset = make_copy(film, kind, copies)
    rel = read_release(release)
    right_views = kind in ("sbs-full", "swapped-eyes")  # the other eye rebuilt as well
    config = HydrateConfig(right_views=right_views)
    result, manifest = hydrate_movie(rel, CopySpec("film", path, right), tmp_path / "out", config)
    # a copy with exchanged eyes and no tag saying so: seen, and the film's left eye taken anyway
    assert result.eyes_swapped == (kind == "swapped-eyes")
    original = _table(dataset)
    released_idx = original.column("frame_index").to_pylist()
    expect_missing = [i for i in released_idx if i + offset < 0]
    assert result.offset == offset
    assert [m.frame_index for m in result.missing] == expect_missing
    assert all("before the copy's first frame" in m.reason for m in result.missing)
    assert result.found == len(released_idx) - len(expect_missing)
    assert result.copy_index == {i: i + offset for i in released_idx if i not in expect_missing}

    hydrated = _table(tmp_path / "out" / manifest.folder)
    kept = [k for k, i in enumerate(released_idx) if i not in expect_missing]
    assert_same_labels(hydrated, original.take(kept))
    floor = PSNR_FLOOR.get(kind, PSNR_FLOOR["x264"])
    scores = []
    for row, k in enumerate(kept):
        i = released_idx[k]
        img = decode_image(hydrated.column("image")[row].as_py())
        ingested = decode_image(original.column("image")[k].as_py())
        size = (img.shape[1], img.shape[0])
        assert img.shape == ingested.shape
        scores.append(psnr(img, ingested))
        # the right frame: closer to the truth of frame i than to frames a sixth of a second away (the
        # camera pans slowly: the next frame is too alike to tell apart after two encodings)
        by_frame = {j: psnr(img, _truth(film, j, size)) for j in (i - 4, i, i + 4) if 0 <= j < film.frame_count}
        assert max(by_frame, key=by_frame.get) == i, (i, by_frame)
        # the left eye, not the right one (they differ by the parallax: ~2.5 dB on this film)
        assert psnr(img, _truth(film, i, size)) > psnr(img, _truth(film, i, size, "right")) + 1.0
        other = hydrated.column("right_image")[row].as_py()
        if right_views:
            other = decode_image(other)
            assert psnr(other, _truth(film, i, size, "right")) > psnr(other, _truth(film, i, size)) + 1.0
        else:
            assert other is None
    shifted = [
        psnr(
            decode_image(original.column("image")[k].as_py())[:, 1:],
            decode_image(original.column("image")[k].as_py())[:, :-1],
        )
        for k in kept
    ]
    print(
        f"{kind}: PSNR vs ingested min {min(scores):.1f} dB, median {np.median(scores):.1f} dB; "
        f"ingested vs itself one pixel to the side: max {max(shifted):.1f} dB"
    )
    assert min(scores) >= floor


def test_hydrate_refuses_another_film(released, sample_movie, tmp_path):
    from pipeline.hydrate import CopySpec, hydrate_movie
    from pipeline.release import read_release

    _, release, result = released
    other = sample_movie(layout="sbs-half", seconds=10.0, size=(384, 216), seed=4, shots=6)
    with pytest.raises(
        BadInputError, match=rf"matched only \d+ of {result['rows']} released frames.*not the same film"
    ):
        hydrate_movie(read_release(release), CopySpec("film", str(other.path)), tmp_path / "out")
    assert not (tmp_path / "out" / "movies").exists() or not any((tmp_path / "out" / "movies").rglob("*.parquet"))


def test_hydrate_refuses_a_pal_copy(released, film, tmp_path):
    from pipeline.hydrate import CopySpec, hydrate_movie
    from pipeline.release import read_release

    _, release, _ = released
    pal = tmp_path / "pal.mkv"
    ffmpeg(
        "-i",
        str(film.path),
        "-an",
        "-vf",
        "setpts=PTS*24/25",
        "-r",
        "25",
        *X264,
        "-metadata:s:v:0",
        "stereo_mode=left_right",
        str(pal),
    )
    with pytest.raises(BadInputError, match="PAL"):
        hydrate_movie(read_release(release), CopySpec("film", str(pal)), tmp_path / "out")


def test_hydrate_refuses_another_edit(released, film, tmp_path):
    """Half a second cut out of the middle of the film: later shots move, and hydration says so."""
    from pipeline.hydrate import CopySpec, hydrate_movie
    from pipeline.release import read_release

    _, release, _ = released
    s0, _ = film.shots[3]
    edit = tmp_path / "edit.mkv"
    ffmpeg(
        "-i",
        str(film.path),
        "-an",
        "-vf",
        f"select='not(between(n\\,{s0 + 2}\\,{s0 + 13}))',setpts=N/FRAME_RATE/TB",
        *X264,
        "-metadata:s:v:0",
        "stereo_mode=left_right",
        str(edit),
    )
    with pytest.raises(BadInputError, match="another edit"):
        hydrate_movie(read_release(release), CopySpec("film", str(edit)), tmp_path / "out")


# ------------------------------------------------------------------------------------------- flows + CLI


def test_cli_release_and_hydrate_make_a_dataset_the_trainer_reads(released, film, copies, tmp_path, capsys):
    from flows.cli import main
    from pipeline.shards import read_manifest, verify
    from training.datasets import ShardDataset

    dataset, _, _ = released
    release = tmp_path / "release"
    assert (
        main(
            [
                "release",
                str(dataset),
                "-o",
                str(release),
                "--split",
                "train",
                "--title",
                "film=Sample Film",
                "--smallest",
                "--exact",
            ]
        )
        == 0
    )
    assert "no pictures" in capsys.readouterr().out
    path, _, _ = make_copy(film, "lead-in-ts", copies)
    out = tmp_path / "hydrated"
    assert main(["hydrate", str(release), "--movie", f"film={path}", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"film: (\d+) of \1 frames", text), text
    assert verify(str(out)) == []
    m = read_manifest(out).movies["film"]
    assert m.meta["hydrated"]["offset"] == int(LEAD_IN_S * film.fps) and m.meta["hydrated"]["missing"] == []
    assert m.rejected_rows == read_manifest(dataset).movies["film"].rejected_rows
    train = _table(dataset).filter(pc.equal(_table(dataset).column("split"), "train"))
    assert_same_labels(_table(out), train, exact=True)  # an --exact release: every label byte
    sample = next(iter(ShardDataset(out, split="train", infinite=False, shuffle=False)))
    assert set(sample) >= {"image", "disparity", "mask"} or len(sample) >= 2
    # resume: a second run reuses the hydrated movie (same copy) and publishes the same rows
    assert main(["hydrate", str(release), "--movie", f"film={path}", "--out", str(out)]) == 0
    again = read_manifest(out).movies["film"]
    assert again.created == m.created and again.shards[0].sha256 == m.shards[0].sha256  # not rewritten


@pytest.mark.logs_errors  # the refused hydration is a failed Prefect run: Prefect logs it at ERROR
def test_cli_hydrate_with_another_film_fails_in_one_line_and_publishes_nothing(
    released, sample_movie, tmp_path, capsys
):
    from flows.cli import main

    _, release, _ = released
    other = sample_movie(layout="sbs-half", seconds=10.0, size=(384, 216), seed=4, shots=6)
    out = tmp_path / "hydrated"
    assert main(["hydrate", str(release), "--movie", f"film={other.path}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("depthmine: error:") and "matched only" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (out / "manifest.json").exists()
    # a user mistake fails before any work: an id the release does not hold
    assert main(["hydrate", str(release), "--movie", f"nope={other.path}", "--out", str(out)]) == 2
    assert "not in the release" in capsys.readouterr().err


def _two_movie_release(release: Path, out: Path) -> Path:
    """The fixture's release with its movie also released as ``film2`` (the same film under a second
    id, as a re-release of another version would list it): a release of two movies, checksums right."""
    import json
    import shutil

    from pipeline.shards.manifest import sha256_file

    shutil.copytree(release, out)
    data = json.loads((out / "release.json").read_text())
    entry = json.loads(json.dumps(data["movies"]["film"]))
    entry["movie_id"] = "film2"
    (out / "movies" / "film2").mkdir()
    for kind, name in (("labels", "labels.parquet"), ("rejected", "rejected.parquet")):
        t = pq.read_table(out / "movies" / "film" / name)
        t = t.set_column(t.schema.get_field_index("movie_id"), "movie_id", pa.array(["film2"] * t.num_rows))
        path = out / "movies" / "film2" / name
        pq.write_table(t, path)
        entry["files"][kind] = {
            "path": f"movies/film2/{name}",
            "rows": t.num_rows,
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    entry["labels"]["packing"] = data["movies"]["film"]["labels"]["packing"]
    data["movies"]["film2"] = entry
    (out / "release.json").write_text(json.dumps(data))
    return out


@pytest.mark.logs_errors  # the refused movie is a failed Prefect task and flow run: Prefect logs them at ERROR
def test_hydrate_resumes_per_movie_after_a_failed_movie(released, film, sample_movie, copies, tmp_path):
    """The second movie's copy is another film: the flow fails and publishes nothing, but the first
    movie stays committed; the re-run with the right copy reuses it (its files are not rewritten) and
    hydrates only the second. Asking for right views is another result: that re-run rebuilds."""
    from flows.hydrate import hydrate_dataset
    from pipeline.shards import read_manifest

    _, release, _ = released
    rel = _two_movie_release(release, tmp_path / "release2")
    good, _, _ = make_copy(film, "lead-in-ts", copies)
    other = sample_movie(layout="sbs-half", seconds=10.0, size=(384, 216), seed=4, shots=6)
    out = tmp_path / "hydrated"
    with pytest.raises(BadInputError, match="matched only"):
        hydrate_dataset(release=str(rel), out=str(out), movies={"film": good, "film2": str(other.path)})
    assert not (out / "manifest.json").exists()  # nothing published
    first = next((out / "movies" / "film").glob("*/movie.json"))
    before = {p.name: p.stat().st_mtime_ns for p in first.parent.iterdir()}
    assert not list((out / "movies" / "film2").glob("*/movie.json"))

    result = hydrate_dataset(release=str(rel), out=str(out), movies={"film": good, "film2": good})
    assert result["movies"]["film"]["reused"] and not result["movies"]["film2"]["reused"]
    assert {p.name: p.stat().st_mtime_ns for p in first.parent.iterdir()} == before  # not rewritten
    m = read_manifest(out)
    assert set(m.movies) == {"film", "film2"} and m.movies["film2"].rows == m.movies["film"].rows
    assert result["found"] == result["released"] == 2 * m.movies["film"].rows

    result = hydrate_dataset(
        release=str(rel), out=str(out), movies={"film": good, "film2": good}, config={"right_views": True}
    )
    assert not result["movies"]["film"]["reused"]
    rows = _table(out / read_manifest(out).movies["film"].folder)
    assert all(v is not None for v in rows.column("right_image").to_pylist())


# ------------------------------------------------------------------------------------------- schema version 1


@pytest.fixture(scope="module")
def old_dataset(released, tmp_path_factory):
    """The ingested film's dataset as shard schema version 1 wrote it (the ingest key's column named
    ``config_hash``): tests.fixtures.datasets.make_schema_v1 on a copy."""
    import shutil

    from tests.fixtures.datasets import make_schema_v1

    old = tmp_path_factory.mktemp("schema-v1") / "dataset"
    shutil.copytree(released[0], old)
    make_schema_v1(old)
    return old


def test_a_rebuild_keeps_an_old_datasets_movie_as_it_is(released, old_dataset, film, tmp_path):
    """The same movie and settings give the same key: the version-1 movie is found committed, not
    labelled again, and published again with its files untouched."""
    import shutil

    from pipeline.ingest import ingest_config
    from pipeline.movie_job import MovieJob, run_movie_job
    from pipeline.shards import read_manifest, verify

    old = tmp_path / "dataset"
    shutil.copytree(old_dataset, old)
    before = read_manifest(old).movies["film"]
    job = MovieJob(
        movie=str(film.path), out=str(old), movie_id="film", config=ingest_config(INGEST, flow="dis-ultrafast")
    )
    result = run_movie_job(MovieJob(**{**job.__dict__, "publish": True}))
    assert result["skipped"] and result["key"] == before.key == read_manifest(released[0]).movies["film"].key
    after = read_manifest(old).movies["film"]
    assert [s.sha256 for s in after.shards] == [s.sha256 for s in before.shards] and after.schema_version == 1
    assert verify(str(old)) == []


def test_an_old_ingested_dataset_releases_the_same_labels(released, old_dataset, tmp_path):
    from pipeline.release import make_release, read_release

    _, release, _ = released
    make_release(old_dataset, tmp_path / "release")
    got, want = read_release(tmp_path / "release"), read_release(release)
    assert got.read_labels("film").equals(want.read_labels("film"))
    assert "ingest_key" in pq.read_schema(got.labels_path("film")).names


def test_an_old_release_hydrates_to_the_current_schema(released, film, tmp_path):
    """A release made by version 1 (``config_hash`` in its label files) hydrates from a copy to shards
    of the current schema with the released labels."""
    import shutil

    from pipeline.hydrate import CopySpec, hydrate_movie
    from pipeline.release import read_release
    from pipeline.shards import FRAME_SCHEMA
    from tests.fixtures.datasets import make_release_v1

    dataset, release, _ = released
    old = tmp_path / "release"
    shutil.copytree(release, old)
    make_release_v1(old)
    result, manifest = hydrate_movie(read_release(old), CopySpec("film", str(film.path)), tmp_path / "out")
    assert result.offset == 0 and not result.missing
    hydrated = _table(tmp_path / "out" / manifest.folder)
    assert hydrated.schema.names == FRAME_SCHEMA.names
    assert_same_labels(hydrated, _table(dataset))  # ingest_key among them: the released values
