"""The one-pass reader on real encoded movies: eyes, crop, shots, samples, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.layouts import Layout
from pipeline.sampling import SamplingConfig, sample_frames
from pipeline.shots import ShotConfig
from pipeline.synthetic import render_movie_frame
from pipeline.video import SampledFrame, open_stereo, scan_movie

NO_CHAPTER_DROP = SamplingConfig(drop_first_chapters=0, drop_last_chapters=0)
# Codec error bound, PSNR in dB of each decoded eye against the generator's view (crf 18, yuv420p:
# the rich colour texture loses most to 4:2:0 chroma). Half layouts also lose half the resolution
# along one axis. Measured: full ~32 dB mean / 30.6 min, sbs-half 28.6 min, tab-half 26.8 min.
MIN_PSNR = {"sbs-full": 28.0, "tab-full": 28.0, "separate": 28.0, "sbs-half": 25.0, "tab-half": 24.0}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-9)))


def _open(movie, **kw):
    return open_stereo(movie.path, right_path=movie.right_path, **kw)


@pytest.mark.parametrize("layout", list(MIN_PSNR))
def test_each_eye_matches_the_generator(sample_movie, layout):
    movie = sample_movie(layout=layout, seconds=4.0)
    src = _open(movie)
    assert src.layout is Layout(layout)
    assert src.eye_size == (320, 180)
    assert src.crop == movie.crop
    frames = list(scan_movie(src, sampling=NO_CHAPTER_DROP, split="val"))
    assert len(frames) >= 3
    for f in frames:
        truth = render_movie_frame(movie, f.frame_index)
        want_l, want_r = src.crop.apply(truth.left), src.crop.apply(truth.right)
        assert f.left.shape == want_l.shape == (136, 320, 3) and f.left.dtype == np.uint8
        assert _psnr(f.left, want_l) > MIN_PSNR[layout], f"left eye of frame {f.frame_index}"
        assert _psnr(f.right, want_r) > MIN_PSNR[layout], f"right eye of frame {f.frame_index}"
        # and not the other eye: the two views differ by the disparity
        assert _psnr(f.left, want_r) < _psnr(f.left, want_l) - 3


@pytest.mark.parametrize("layout", ["sbs-full", "tab-half"])
def test_layout_from_content_without_metadata(sample_movie, layout):
    movie = sample_movie(layout=layout, seconds=4.0, stereo_metadata=False)
    src = _open(movie)
    assert src.info.stereo_mode is None
    assert src.layout is Layout(layout)
    assert "no stereo metadata" in src.layout_reason


def test_shots_within_one_frame_and_samples_follow_the_rules(sample_movie):
    movie = sample_movie(layout="sbs-half", seconds=10.0, seed=1, chapters=3)
    scan = scan_movie(_open(movie), split="train")
    yielded = [(f.frame_index, f.shot_id) for f in scan]
    truth = movie.shots
    assert len(scan.shots) == len(truth)
    for got, (start, end) in zip(scan.shots, truth):
        assert abs(got.start_frame - start) <= 1 and abs(got.end_frame - end) <= 1
    assert scan.frame_count == movie.frame_count
    assert scan.source.info.frame_count_exact and scan.source.info.frame_count == movie.frame_count
    assert [i for i, _ in yielded] == scan.samples
    assert scan.samples == sample_frames(scan.shots, movie.fps, "train", scan.source.info.chapters, SamplingConfig())
    assert scan.samples, "the middle chapter must give samples"
    for i, shot_id in yielded:
        shot = scan.shots[shot_id]
        assert shot.start_frame <= i < shot.end_frame


def test_scan_is_deterministic(sample_movie):
    movie = sample_movie(layout="sbs-half", seconds=4.0)
    a = list(scan_movie(_open(movie), sampling=NO_CHAPTER_DROP))
    b = list(scan_movie(_open(movie), sampling=NO_CHAPTER_DROP))
    assert [f.frame_index for f in a] == [f.frame_index for f in b]
    assert all(np.array_equal(x.left, y.left) and np.array_equal(x.right, y.right) for x, y in zip(a, b))


def test_a_scan_decodes_once(sample_movie):
    scan = scan_movie(_open(sample_movie(layout="sbs-half", seconds=4.0)), sampling=NO_CHAPTER_DROP).run()
    assert scan.done and scan.shots
    with pytest.raises(RuntimeError, match="once"):
        iter(scan)


def test_letterbox_found_when_most_shots_are_dark(sample_movie):
    movie = sample_movie(layout="sbs-full", seconds=4.0, dark_shots=(0, 1, 2))
    assert _open(movie).crop == movie.crop


def test_pts_and_shot_ids(sample_movie):
    movie = sample_movie(layout="separate", seconds=4.0)
    frames: list[SampledFrame] = list(scan_movie(_open(movie), sampling=NO_CHAPTER_DROP, split="train"))
    for f in frames:
        assert f.pts_seconds == pytest.approx(f.frame_index / 24.0, abs=1e-3)
    assert sorted({f.shot_id for f in frames}) == list(range(len(movie.shots)))


def test_content_detector_also_finds_the_cuts(sample_movie):
    movie = sample_movie(layout="sbs-half", seconds=10.0, seed=1, chapters=3)
    scan = scan_movie(_open(movie), shots=ShotConfig(detector="content"), sampling=NO_CHAPTER_DROP).run()
    assert [(s.start_frame, s.end_frame) for s in scan.shots] == [tuple(s) for s in movie.shots]


def test_stopping_early_stops_the_decoder_thread(sample_movie):
    import threading

    scan = scan_movie(_open(sample_movie(layout="sbs-half", seconds=4.0)), sampling=NO_CHAPTER_DROP)
    frames = iter(scan)
    next(frames)
    frames.close()
    assert not [t for t in threading.enumerate() if t.name == "depthmine-decode"]


def test_separate_files_paired_by_timestamp_despite_a_start_offset(sample_movie, tmp_path):
    import subprocess

    from pipeline.synthetic import ffmpeg_exe

    movie = sample_movie(layout="separate", seconds=4.0)
    shifted = tmp_path / "right-shifted.mkv"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(movie.right_path),
            "-c",
            "copy",
            "-output_ts_offset",
            "1.5",
            str(shifted),
        ],
        check=True,
    )
    a = list(scan_movie(open_stereo(movie.path, right_path=movie.right_path), sampling=NO_CHAPTER_DROP))
    b = list(scan_movie(open_stereo(movie.path, right_path=shifted), sampling=NO_CHAPTER_DROP))
    assert [f.frame_index for f in a] == [f.frame_index for f in b]
    assert all(np.array_equal(x.right, y.right) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "width, height, matrix",
    [(1280, 720, "bt709"), (640, 360, "bt601")],
    ids=["untagged-HD-is-BT709", "untagged-SD-is-BT601"],
)
def test_untagged_frames_use_the_broadcast_matrix(tmp_path, width, height, matrix):
    """Rips often drop the colour tags; HD then means BT.709 (FFmpeg's converter would assume BT.601)."""
    import subprocess

    import av

    from pipeline.synthetic import ffmpeg_exe
    from pipeline.video import frame_to_rgb

    colour = np.array([40, 170, 90], np.uint8)  # a saturated green: the matrices differ most there
    raw = np.broadcast_to(colour, (height, width, 3)).tobytes()
    out = tmp_path / "untagged.mkv"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{width}x{height}",
            "-i",
            "pipe:0",
            "-vf",
            f"scale=out_color_matrix={matrix}:out_range=tv,setparams=colorspace=unknown",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "0",
            "-pix_fmt",
            "yuv420p",
            str(out),
        ],
        input=raw,
        check=True,
    )
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
    assert int(frame.colorspace) == 2, "the test needs an untagged stream"
    got = frame_to_rgb(frame).reshape(-1, 3).mean(axis=0)
    assert np.abs(got - colour).max() < 3.0


def test_the_scan_corrects_the_frame_count_without_changing_the_probes_object(sample_movie):
    import dataclasses

    movie = sample_movie(layout="sbs-half", seconds=4.0)
    src = _open(movie)
    probed = src.info
    before = dataclasses.asdict(probed)
    assert not probed.frame_count_exact  # MKV stores no frame count: the probe estimates it
    scan = scan_movie(src, sampling=NO_CHAPTER_DROP)
    frames = list(scan)
    assert frames and dataclasses.asdict(probed) == before
    assert src.info is not probed and src.info.frame_count_exact
    assert src.info.frame_count == scan.frame_count == 96  # 4 s at 24 fps, counted by the decode
